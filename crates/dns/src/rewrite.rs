//! The rewrite plugin (`rewrite name ...`): the question's name is rewritten before the rest
//! of the chain; the answer's records owned by the rewritten name get the original name back
//! (`exact` always, the other match types with `answer auto`). The question of the response
//! is always the client's. No IO.

use hickory_proto::rr::{LowerName, Name};
use regex::Regex;

use crate::corefile::{NameMatch, Rewrite};
use crate::DnsError;

/// One compiled `rewrite name` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    continue_: bool,
    matcher: Matcher,
    /// Put the original name back on the answer.
    revert: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String, String),
    Prefix(String, String),
    Suffix(String, String),
    Substring(String, String),
    Regex(Regex, String),
}

impl Rule {
    /// Compiles a rule; fails on a bad regular expression.
    pub fn compile(rule: &Rewrite) -> Result<Self, DnsError> {
        let bare = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
        let matcher = match rule.match_type {
            NameMatch::Exact => Matcher::Exact(bare(&rule.from), bare(&rule.to)),
            NameMatch::Prefix => {
                Matcher::Prefix(rule.from.to_ascii_lowercase(), rule.to.to_ascii_lowercase())
            }
            NameMatch::Suffix => Matcher::Suffix(bare(&rule.from), bare(&rule.to)),
            NameMatch::Substring => {
                Matcher::Substring(rule.from.to_ascii_lowercase(), rule.to.to_ascii_lowercase())
            }
            NameMatch::Regex => {
                let re = Regex::new(&rule.from).map_err(|e| {
                    DnsError::Config(format!("rewrite: regex {:?}: {e}", rule.from))
                })?;
                // CoreDNS writes groups as {1}; the regex crate as ${1}.
                let to = Regex::new(r"\{(\d+)\}")
                    .map(|g| g.replace_all(&rule.to, "$${$1}").into_owned())
                    .unwrap_or_else(|_| rule.to.clone());
                Matcher::Regex(re, to)
            }
        };
        Ok(Self {
            continue_: rule.continue_,
            revert: rule.answer_auto || rule.match_type == NameMatch::Exact,
            matcher,
        })
    }

    /// The rewritten name (lower case, without the final dot), if the rule matches `name`
    /// (lower case, without the final dot).
    fn apply(&self, name: &str) -> Option<String> {
        match &self.matcher {
            Matcher::Exact(from, to) => (name == from).then(|| to.clone()),
            Matcher::Prefix(from, to) => name
                .strip_prefix(from.as_str())
                .map(|rest| format!("{to}{rest}")),
            Matcher::Suffix(from, to) => name
                .strip_suffix(from.as_str())
                .map(|rest| format!("{rest}{to}")),
            Matcher::Substring(from, to) => name
                .contains(from.as_str())
                .then(|| name.replace(from.as_str(), to)),
            Matcher::Regex(re, to) => {
                let dotted = format!("{name}.");
                let subject = if re.is_match(&dotted) && !re.is_match(name) {
                    dotted.as_str()
                } else {
                    name
                };
                re.is_match(subject)
                    .then(|| re.replace(subject, to.as_str()).into_owned())
            }
        }
    }
}

/// The result of the rules on one question name.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    /// The name the chain answers.
    pub name: Name,
    /// Whether the answer's names are put back to the question's.
    pub revert: bool,
}

/// Applies `rules` in order to `qname`: a matching rule rewrites and stops unless it says
/// `continue`. `None` when no rule matched.
pub fn rewrite(rules: &[Rule], qname: &LowerName) -> Option<Rewritten> {
    if rules.is_empty() {
        return None;
    }
    let mut name = qname.to_string().trim_end_matches('.').to_string();
    let mut matched = false;
    let mut revert = false;
    for rule in rules {
        if let Some(new) = rule.apply(&name) {
            name = new.trim_end_matches('.').to_string();
            matched = true;
            revert |= rule.revert;
            if !rule.continue_ {
                break;
            }
        }
    }
    if !matched {
        return None;
    }
    let name = Name::from_ascii(format!("{name}.")).ok()?.to_lowercase();
    Some(Rewritten { name, revert })
}
