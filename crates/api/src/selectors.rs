//! Label and field selectors, parsed and matched as Kubernetes does.
//!
//! Label selectors use the set-based string syntax of `?labelSelector=` (`k=v`, `k==v`,
//! `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, plus the numeric `k>1`, `k<1`; a comma
//! means AND) or the JSON `metav1.LabelSelector` of workload specs. Field selectors are the
//! `k=v`, `k==v`, `k!=v` terms of `?fieldSelector=`, over the few fields each kind exposes.
//!
//! Error messages are Kubernetes' own, so they can be returned as a 400 BadRequest Status
//! unchanged.

use std::fmt;

use serde_json::{Map, Value};

use crate::validation::{
    go_quote, go_string_slice, is_qualified_name, is_valid_label_value, FieldError, FieldErrorKind,
};
use crate::Resource;

/// Why a selector was rejected. Each message is the one Kubernetes returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector string does not follow the grammar.
    #[error("{0}")]
    Syntax(String),
    /// One requirement of a label selector string is malformed (bad key, value or operator).
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A requirement of a JSON label selector is invalid.
    #[error("{0}")]
    InvalidRequirement(String),
    /// A JSON label selector uses an operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.0))]
    InvalidOperator(String),
    /// A JSON label selector is not shaped as a `metav1.LabelSelector`.
    #[error("invalid label selector: {0}")]
    Malformed(String),
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax {
        /// The whole selector.
        selector: String,
        /// The term that could not be read.
        term: String,
    },
    /// A field selector value has a backslash before something other than `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value has an unescaped `,` or `=` (Kubernetes prints the code point).
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.0))]
    UnescapedRune(char),
    /// A field selector names a field the resource does not index.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
}

/// How a label requirement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One clause of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking it as Kubernetes' `NewRequirement` does. `values` is
    /// `None` for a JSON selector that gave no values (printed as `[]string(nil)`).
    fn new(key: &str, op: Operator, values: Option<Vec<String>>) -> Result<Self, String> {
        let shown = go_string_slice(values.as_deref());
        let values = values.unwrap_or_default();
        let mut errs: Vec<FieldError> = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(FieldError {
                kind: FieldErrorKind::Invalid,
                field: "key".into(),
                value: Some(go_quote(key)),
                detail: key_errs.join("; "),
            });
        }
        let count_err = |detail: &str| FieldError {
            kind: FieldErrorKind::Invalid,
            field: "values".into(),
            value: Some(shown.clone()),
            detail: detail.into(),
        };
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push(count_err(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(count_err(
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(count_err(
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(count_err(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(FieldError {
                            kind: FieldErrorKind::Invalid,
                            field: format!("values[{i}]"),
                            value: Some(go_quote(v)),
                            detail: "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                        });
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = is_valid_label_value(v);
            if !msgs.is_empty() {
                errs.push(FieldError {
                    kind: FieldErrorKind::Invalid,
                    field: format!("values[{i}][{key}]"),
                    value: Some(go_quote(v)),
                    detail: msgs.join("; "),
                });
            }
        }
        if errs.is_empty() {
            Ok(Self {
                key: key.to_string(),
                op,
                values,
            })
        } else {
            Err(crate::validation::aggregate_message(&errs))
        }
    }

    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key));
        let text = value.and_then(Value::as_str);
        match self.op {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                text.is_some_and(|t| self.values.iter().any(|v| v == t))
            }
            Operator::NotIn | Operator::NotEquals => match value {
                None => true,
                Some(_) => !text.is_some_and(|t| self.values.iter().any(|v| v == t)),
            },
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    text.and_then(|t| t.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let mut values = self.values.clone();
        values.sort();
        if matches!(self.op, Operator::In | Operator::NotIn) {
            write!(f, "({})", values.join(","))
        } else {
            f.write_str(&values.join(","))
        }
    }
}

/// A parsed label selector. An empty selector matches everything; the selector of a JSON
/// `null` matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Parses the string syntax of `?labelSelector=`: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k`, `!k`, `k>1`, `k<1`, joined by commas (AND); whitespace between
    /// tokens is ignored. Keys and values are checked as label keys and values.
    ///
    /// # Errors
    /// The grammar or requirement error Kubernetes reports, e.g.
    /// `unable to parse requirement: found '', expected: in, notin, =, ==, !=, gt, lt`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Parser::new(s).parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Builds a selector from a `metav1.LabelSelector` (`{matchLabels, matchExpressions}`).
    /// `null` selects nothing; `{}` selects everything.
    ///
    /// # Errors
    /// A malformed shape, an unknown operator, or an invalid key, value or value count.
    pub fn from_json(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => {
                return Ok(Self {
                    requirements: Vec::new(),
                    nothing: true,
                })
            }
            Value::Object(o) => o,
            other => {
                return Err(SelectorError::Malformed(format!(
                    "expected an object, got {other}"
                )))
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let v = v.as_str().ok_or_else(|| {
                        SelectorError::Malformed(format!("matchLabels[{k}] must be a string"))
                    })?;
                    let r = Requirement::new(k, Operator::Equals, Some(vec![v.to_string()]))
                        .map_err(SelectorError::InvalidRequirement)?;
                    requirements.push(r);
                }
            }
            Some(_) => {
                return Err(SelectorError::Malformed(
                    "matchLabels must be an object".into(),
                ))
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, x) in exprs.iter().enumerate() {
                    let field = |name: &str| x.get(name).and_then(Value::as_str).unwrap_or("");
                    let op = match field("operator") {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        other => return Err(SelectorError::InvalidOperator(other.to_string())),
                    };
                    let values = match x.get("values") {
                        None | Some(Value::Null) => None,
                        Some(Value::Array(vs)) if vs.is_empty() => None,
                        Some(Value::Array(vs)) => Some(
                            vs.iter()
                                .map(|s| s.as_str().map(str::to_string))
                                .collect::<Option<Vec<String>>>()
                                .ok_or_else(|| {
                                    SelectorError::Malformed(format!(
                                        "matchExpressions[{i}].values must be strings"
                                    ))
                                })?,
                        ),
                        Some(_) => {
                            return Err(SelectorError::Malformed(format!(
                                "matchExpressions[{i}].values must be a list"
                            )))
                        }
                    };
                    let r = Requirement::new(field("key"), op, values)
                        .map_err(SelectorError::InvalidRequirement)?;
                    requirements.push(r);
                }
            }
            Some(_) => {
                return Err(SelectorError::Malformed(
                    "matchExpressions must be a list".into(),
                ))
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these labels (`None`: no labels) is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything (and so matches everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form, as Kubernetes prints a selector (`a=b,c in (d,e)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Tokens of the label selector grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens the way Kubernetes' lexer does: operators greedily, any
/// other run of bytes up to whitespace or an operator is an identifier.
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        let start = pos;
        if is_special(b[pos]) {
            let mut best: Option<(Token, usize)> = None;
            let mut end = pos;
            while end < b.len() && is_special(b[end]) {
                end += 1;
                match keyword(&s[start..end]) {
                    Some(t) => best = Some((t, end)),
                    None if best.is_some() => break,
                    None => {}
                }
            }
            // Every single operator byte is a token, so `best` is always set here.
            let (tok, stop) = best.unwrap_or((Token::Identifier, end));
            out.push((tok, s[start..stop].to_string()));
            pos = stop;
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let word = &s[start..pos];
            let tok = match keyword(word) {
                Some(t @ (Token::In | Token::NotIn)) => t,
                _ => Token::Identifier,
            };
            out.push((tok, word.to_string()));
        }
    }
}

/// Whether `in`/`notin` are read as keywords (after a key) or as plain identifiers.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Self {
        Self {
            items: lex(s),
            pos: 0,
        }
    }

    fn peek(&self, ctx: Context) -> (Token, String) {
        let (t, lit) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        (adjust(t, ctx), lit)
    }

    fn next(&mut self, ctx: Context) -> (Token, String) {
        let item = self.peek(ctx);
        self.pos += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.peek(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    reqs.push(r);
                    let (t, l) = self.next(Context::Values);
                    match t {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.peek(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::Syntax(format!(
                                "found '{l}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::End => return Ok(reqs),
                _ => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return Requirement::new(&key, op, Some(Vec::new()));
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, Some(values))
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.next(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.next(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = is_qualified_name(&lit);
        if !errs.is_empty() {
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(&lit),
                errs.join("; ")
            ));
        }
        let (next, _) = self.peek(Context::Values);
        if (next == Token::End || next == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.next(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        })
    }

    /// `(a,b,...)`: a sorted set of values, where empty entries are the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.next(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(Context::Values);
        let mut set = match tok {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.next(Context::Values);
                if t != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                s
            }
            Token::ClosedPar => {
                self.next(Context::Values);
                vec![String::new()]
            }
            _ => return Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        };
        set.sort();
        set.dedup();
        Ok(set)
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.next(Context::Values);
            match tok {
                Token::Identifier => {
                    s.push(lit);
                    let (t2, l2) = self.peek(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (t2, _) = self.peek(Context::Values);
                    if t2 == Token::ClosedPar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if t2 == Token::Comma {
                        s.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.peek(Context::Values);
        if tok == Token::End || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.next(Context::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// In a values context the keywords `in` and `notin` are ordinary identifiers.
fn adjust(t: Token, ctx: Context) -> Token {
    match (t, ctx) {
        (Token::In | Token::NotIn, Context::Values) => Token::Identifier,
        _ => t,
    }
}

/// How a field requirement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

/// A parsed field selector: terms `field=value` or `field!=value`, all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// How a selectable field's value is printed when it is missing: Kubernetes formats the Go
/// zero value, so a missing bool is `false` and a missing number `0`.
#[derive(Clone, Copy)]
enum FieldType {
    Str,
    Bool,
    Int,
}

/// A selectable field: its selector name, its JSON path, its type.
type SelectableField = (&'static str, &'static str, FieldType);

const COMMON_FIELDS: &[SelectableField] = &[
    ("metadata.name", "metadata.name", FieldType::Str),
    ("metadata.namespace", "metadata.namespace", FieldType::Str),
];

const POD_FIELDS: &[SelectableField] = &[
    ("spec.nodeName", "spec.nodeName", FieldType::Str),
    ("spec.restartPolicy", "spec.restartPolicy", FieldType::Str),
    ("spec.schedulerName", "spec.schedulerName", FieldType::Str),
    (
        "spec.serviceAccountName",
        "spec.serviceAccountName",
        FieldType::Str,
    ),
    ("spec.hostNetwork", "spec.hostNetwork", FieldType::Bool),
    ("status.phase", "status.phase", FieldType::Str),
    ("status.podIP", "status.podIP", FieldType::Str),
    (
        "status.nominatedNodeName",
        "status.nominatedNodeName",
        FieldType::Str,
    ),
];

const EVENT_FIELDS: &[SelectableField] = &[
    ("involvedObject.kind", "involvedObject.kind", FieldType::Str),
    (
        "involvedObject.namespace",
        "involvedObject.namespace",
        FieldType::Str,
    ),
    ("involvedObject.name", "involvedObject.name", FieldType::Str),
    ("involvedObject.uid", "involvedObject.uid", FieldType::Str),
    (
        "involvedObject.apiVersion",
        "involvedObject.apiVersion",
        FieldType::Str,
    ),
    (
        "involvedObject.resourceVersion",
        "involvedObject.resourceVersion",
        FieldType::Str,
    ),
    (
        "involvedObject.fieldPath",
        "involvedObject.fieldPath",
        FieldType::Str,
    ),
    ("reason", "reason", FieldType::Str),
    ("reportingComponent", "reportingComponent", FieldType::Str),
    ("source", "source.component", FieldType::Str),
    ("type", "type", FieldType::Str),
];

const SECRET_FIELDS: &[SelectableField] = &[("type", "type", FieldType::Str)];
const NODE_FIELDS: &[SelectableField] =
    &[("spec.unschedulable", "spec.unschedulable", FieldType::Bool)];
const NAMESPACE_FIELDS: &[SelectableField] = &[("status.phase", "status.phase", FieldType::Str)];
const REPLICASET_FIELDS: &[SelectableField] =
    &[("status.replicas", "status.replicas", FieldType::Int)];

/// The fields beyond `metadata.name` and `metadata.namespace` a resource can be selected by.
fn kind_fields(resource: &Resource) -> &'static [SelectableField] {
    match (resource.group, resource.kind) {
        ("", "Pod") => POD_FIELDS,
        ("", "Event") => EVENT_FIELDS,
        ("", "Secret") => SECRET_FIELDS,
        ("", "Node") => NODE_FIELDS,
        ("", "Namespace") => NAMESPACE_FIELDS,
        ("apps", "ReplicaSet") => REPLICASET_FIELDS,
        _ => &[],
    }
}

fn selectable(resource: &Resource, field: &str) -> Option<SelectableField> {
    COMMON_FIELDS
        .iter()
        .chain(kind_fields(resource).iter())
        .find(|(name, _, _)| *name == field)
        .copied()
}

/// The value of a dotted JSON path as a field selector compares it.
fn field_value(obj: &Value, path: &str, ty: FieldType) -> String {
    let v = path.split('.').try_fold(obj, |v, k| v.get(k));
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => match ty {
            FieldType::Str => String::new(),
            FieldType::Bool => "false".to_string(),
            FieldType::Int => "0".to_string(),
        },
    }
}

impl FieldSelector {
    /// Parses `?fieldSelector=`: terms `f=v`, `f==v` or `f!=v` joined by commas. In values a
    /// backslash escapes `\`, `,` and `=`; an unescaped `,` or `=` in a value is an error.
    ///
    /// # Errors
    /// The Kubernetes message for a term without operator or a bad escape.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(SelectorError::FieldSyntax {
                    selector: s.to_string(),
                    term: part.to_string(),
                });
            };
            let value = unescape_value(rhs)?;
            if field.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(Self { terms })
    }

    /// Checks that every field named is one the resource can be selected by: `metadata.name`
    /// and `metadata.namespace` everywhere, plus the fields Kubernetes indexes for Pods,
    /// Events, Secrets, Nodes, Namespaces and ReplicaSets.
    ///
    /// # Errors
    /// `field label not supported: <field>` for the first field that is not.
    pub fn check_supported(&self, resource: &Resource) -> Result<(), SelectorError> {
        match self
            .terms
            .iter()
            .find(|t| selectable(resource, &t.field).is_none())
        {
            Some(t) => Err(SelectorError::FieldLabelNotSupported(t.field.clone())),
            None => Ok(()),
        }
    }

    /// Whether `obj` satisfies every term. A missing field compares as its zero value: `""`
    /// for strings (so `spec.nodeName=` selects unscheduled pods), `false`, `0`.
    pub fn matches(&self, resource: &Resource, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let (path, ty) = match selectable(resource, &t.field) {
                Some((_, path, ty)) => (path, ty),
                None => (t.field.as_str(), FieldType::Str),
            };
            let have = field_value(obj, path, ty);
            match t.op {
                FieldOp::Equals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            }
        })
    }

    /// The value of a `metadata.name=X` term if there is one (turns a watch or list of one
    /// object into a get).
    pub fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "metadata.name" && t.op == FieldOp::Equals)
            .map(|t| t.value.as_str())
    }

    /// True when the selector has no terms (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string form, values escaped (`a=b,c!=d\,e`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = if t.op == FieldOp::Equals { "=" } else { "!=" };
                format!("{}{op}{}", t.field, escape_value(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Escapes `\`, `,` and `=` in a field selector value.
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits at commas that are not escaped; the escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, rhs));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedRune(c)),
            c => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape("\\".to_string()));
    }
    Ok(out)
}

/// Whether a typed `metav1.LabelSelector` (as controllers and agents hold it) matches
/// `labels`: an empty selector matches everything, as Kubernetes' LabelSelectorAsSelector
/// does (callers for which an empty selector means nothing check that first); an unknown
/// operator matches nothing.
pub fn labels_match(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn res(kind: &str) -> &'static Resource {
        crate::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("kind is served")
    }

    /// Parses a label selector: `Ok` holds its canonical form, `Err` the error message.
    fn check_parse(input: &str, expect: Result<&str, &str>) {
        let got = LabelSelector::parse(input)
            .map(|s| s.to_string())
            .map_err(|e| e.to_string());
        assert_eq!(
            got,
            expect.map(str::to_string).map_err(str::to_string),
            "parse {input:?}"
        );
    }

    /// Matches a label selector string against labels given as a JSON object (or null).
    fn check_match(selector: &str, labels: Value, expect: bool) {
        let sel = LabelSelector::parse(selector).expect("the selector parses");
        assert_eq!(
            sel.matches(labels.as_object()),
            expect,
            "{selector:?} on {labels}"
        );
    }

    /// Builds a selector from JSON: `Ok` holds its canonical form, `Err` the error message.
    fn check_json(input: Value, expect: Result<&str, &str>) {
        let got = LabelSelector::from_json(&input)
            .map(|s| s.to_string())
            .map_err(|e| e.to_string());
        assert_eq!(
            got,
            expect.map(str::to_string).map_err(str::to_string),
            "from_json {input}"
        );
    }

    /// Parses a field selector: `Ok` holds its canonical form, `Err` the error message.
    fn check_field_parse(input: &str, expect: Result<&str, &str>) {
        let got = FieldSelector::parse(input)
            .map(|s| s.to_string())
            .map_err(|e| e.to_string());
        assert_eq!(
            got,
            expect.map(str::to_string).map_err(str::to_string),
            "parse {input:?}"
        );
    }

    fn check_supported(kind: &str, selector: &str, expect: Result<(), &str>) {
        let sel = FieldSelector::parse(selector).expect("the selector parses");
        let got = sel.check_supported(res(kind)).map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_string), "{kind} {selector:?}");
    }

    fn check_field_match(kind: &str, selector: &str, obj: Value, expect: bool) {
        let sel = FieldSelector::parse(selector).expect("the selector parses");
        assert_eq!(
            sel.matches(res(kind), &obj),
            expect,
            "{kind} {selector:?} on {obj}"
        );
    }

    const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn label_parse() {
        check_parse("", Ok(""));
        check_parse("a=b", Ok("a=b"));
        check_parse("a==b", Ok("a==b"));
        check_parse("a!=b", Ok("a!=b"));
        check_parse("  a in ( y , x )  ", Ok("a in (x,y)"));
        check_parse("a notin (y,x,y)", Ok("a notin (x,y)"));
        check_parse("a", Ok("a"));
        check_parse("!a", Ok("!a"));
        check_parse("b=1, a", Ok("a,b=1"));
        check_parse("a>1,b<2", Ok("a>1,b<2"));
        check_parse("a in ()", Ok("a in ()"));
        check_parse("a in (,x)", Ok("a in (,x)"));
        check_parse("a=", Ok("a="));
        check_parse("a=,b", Ok("a=,b"));
        check_parse("in in (in)", Ok("in in (in)"));
        check_parse("example.com/app=web", Ok("example.com/app=web"));
        check_parse("a=b,", Err("found '', expected: identifier after ','"));
        check_parse(
            ",a",
            Err("found ',', expected: !, identifier, or 'end of string'"),
        );
        check_parse("a=b c", Err("found 'c', expected: ',' or 'end of string'"));
        check_parse("a=b=c", Err("found '=', expected: ',' or 'end of string'"));
        check_parse(
            "a ~ b",
            Err("unable to parse requirement: found '~', expected: in, notin, =, ==, !=, gt, lt"),
        );
        check_parse(
            "a in b",
            Err("unable to parse requirement: found 'b' expected: '('"),
        );
        check_parse(
            "a in (b",
            Err("unable to parse requirement: found '', expected: ',' or ')'"),
        );
        check_parse(
            "a in (b c)",
            Err("unable to parse requirement: found 'c', expected: ',' or ')'"),
        );
        check_parse(
            "a in (=)",
            Err("unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        );
        check_parse(
            "a in (b,=)",
            Err("unable to parse requirement: found '=', expected: ',', or identifier"),
        );
        check_parse(
            "a=(",
            Err("unable to parse requirement: found '(', expected: identifier"),
        );
        check_parse(
            "! =a",
            Err("unable to parse requirement: found '=', expected: identifier"),
        );
        check_parse(
            "Key_@=v",
            Err("unable to parse requirement: <nil>: Invalid value: \"Key_@\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
        );
        check_parse(
            "app=foo@",
            Err(&format!("unable to parse requirement: values[0][app]: Invalid value: \"foo@\": {LABEL_VALUE_MSG}")),
        );
        check_parse(
            "app in (@,#)",
            Err(&format!(
                "unable to parse requirement: [values[0][app]: Invalid value: \"#\": {LABEL_VALUE_MSG}, values[1][app]: Invalid value: \"@\": {LABEL_VALUE_MSG}]"
            )),
        );
        check_parse(
            "a>b",
            Err("unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"),
        );
    }

    #[test]
    fn label_match() {
        check_match("", json!(null), true);
        check_match("", json!({"a": "b"}), true);
        check_match("a=b", json!({"a": "b"}), true);
        check_match("a==b", json!({"a": "c"}), false);
        check_match("a=b", json!(null), false);
        check_match("a=", json!({"a": ""}), true);
        check_match("a!=b", json!({}), true);
        check_match("a!=b", json!({"a": "b"}), false);
        check_match("a!=b", json!({"a": "c"}), true);
        check_match("a in (x,y)", json!({"a": "y"}), true);
        check_match("a in (x,y)", json!({}), false);
        check_match("a notin (x)", json!({}), true);
        check_match("a notin (x)", json!({"a": "x"}), false);
        check_match("a", json!({"a": ""}), true);
        check_match("a", json!({}), false);
        check_match("!a", json!({}), true);
        check_match("!a", json!({"a": "1"}), false);
        check_match("a>5", json!({"a": "7"}), true);
        check_match("a>5", json!({"a": "3"}), false);
        check_match("a>5", json!({"a": "x"}), false);
        check_match("a<5", json!({"a": "3"}), true);
        check_match("a<5", json!({}), false);
        check_match("a=b,c", json!({"a": "b", "c": "d"}), true);
        check_match("a=b,c", json!({"a": "b"}), false);
    }

    #[test]
    fn label_json() {
        check_json(json!({}), Ok(""));
        check_json(
            json!({"matchLabels": {"tier": "web", "app": "x"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                    {"key": "z", "operator": "DoesNotExist"}, {"key": "y", "operator": "Exists"},
                    {"key": "w", "operator": "NotIn", "values": ["a"]}]}),
            Ok("app=x,env in (dev,prod),tier=web,w notin (a),y,!z"),
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            Err("\"Gt\" is not a valid label selector operator"),
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            Err("values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"),
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]}),
            Err("values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"),
        );
        check_json(
            json!({"matchLabels": {"a/b/c": "x"}}),
            Err("key: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
        );
        check_json(
            json!({"matchLabels": {"a": "x y"}}),
            Err(&format!(
                "values[0][a]: Invalid value: \"x y\": {LABEL_VALUE_MSG}"
            )),
        );
        check_json(
            json!("a=b"),
            Err("invalid label selector: expected an object, got \"a=b\""),
        );
        check_json(
            json!({"matchLabels": {"a": 1}}),
            Err("invalid label selector: matchLabels[a] must be a string"),
        );

        let nothing = LabelSelector::from_json(&json!(null)).expect("null is a selector");
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(None));
        let everything =
            LabelSelector::from_json(&json!({"matchLabels": {}})).expect("empty is a selector");
        assert!(everything.is_empty());
        assert!(everything.matches(None));
        let sel = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}))
            .expect("valid selector");
        assert!(sel.matches(json!({"app": "web"}).as_object()));
        assert!(!sel.matches(json!({"app": "web", "env": "prod"}).as_object()));
        assert!(LabelSelector::parse("").expect("empty parses").is_empty());
        assert!(!LabelSelector::parse("a").expect("parses").is_empty());
    }

    #[test]
    fn field_parse() {
        check_field_parse("", Ok(""));
        check_field_parse("metadata.name=foo", Ok("metadata.name=foo"));
        check_field_parse("metadata.name==foo", Ok("metadata.name=foo"));
        check_field_parse("b=1,a!=2", Ok("a!=2,b=1"));
        check_field_parse("a=", Ok("a="));
        check_field_parse("=", Ok(""));
        check_field_parse(",a=1,", Ok("a=1"));
        check_field_parse("a=x\\,y", Ok("a=x\\,y"));
        check_field_parse("a=x\\=y\\\\", Ok("a=x\\=y\\\\"));
        check_field_parse(
            "a=x\\y",
            Err("invalid field selector: invalid escape sequence: \\y"),
        );
        check_field_parse(
            "a=x\\",
            Err("invalid field selector: invalid escape sequence: \\"),
        );
        check_field_parse(
            "a=b=c",
            Err("invalid field selector: unescaped character in value: 61"),
        );
        check_field_parse(
            "foo",
            Err("invalid selector: 'foo'; can't understand 'foo'"),
        );
        check_field_parse(
            "z=b,foo",
            Err("invalid selector: 'z=b,foo'; can't understand 'foo'"),
        );

        let name = |s: &str| {
            FieldSelector::parse(s)
                .expect("parses")
                .exact_name()
                .map(str::to_string)
        };
        assert_eq!(name("metadata.name=web"), Some("web".into()));
        assert_eq!(
            name("metadata.namespace=x,metadata.name==web"),
            Some("web".into())
        );
        assert_eq!(name("metadata.name!=web"), None);
        assert_eq!(name("spec.nodeName=web"), None);
        assert!(FieldSelector::parse("").expect("parses").is_empty());
        assert!(!FieldSelector::parse("a=b").expect("parses").is_empty());
    }

    #[test]
    fn field_supported() {
        check_supported("ConfigMap", "metadata.name=a,metadata.namespace=b", Ok(()));
        check_supported("Node", "metadata.namespace=", Ok(()));
        check_supported(
            "Pod",
            "spec.nodeName=,spec.restartPolicy=Always,spec.schedulerName=s,spec.serviceAccountName=d,spec.hostNetwork=true,status.phase=Running,status.podIP=1.2.3.4,status.nominatedNodeName=n",
            Ok(()),
        );
        check_supported(
            "Pod",
            "spec.foo=x",
            Err("field label not supported: spec.foo"),
        );
        check_supported(
            "Service",
            "spec.nodeName=x",
            Err("field label not supported: spec.nodeName"),
        );
        check_supported(
            "Event",
            "involvedObject.kind=Pod,involvedObject.namespace=a,involvedObject.name=b,involvedObject.uid=c,involvedObject.apiVersion=v1,involvedObject.resourceVersion=1,involvedObject.fieldPath=f,reason=r,reportingComponent=k,source=kubelet,type=Normal",
            Ok(()),
        );
        check_supported(
            "Event",
            "message=x",
            Err("field label not supported: message"),
        );
        check_supported("Secret", "type=Opaque", Ok(()));
        check_supported("Node", "spec.unschedulable=false", Ok(()));
        check_supported("Namespace", "status.phase=Active", Ok(()));
        check_supported("ReplicaSet", "status.replicas=0", Ok(()));
        check_supported(
            "Deployment",
            "status.replicas=0",
            Err("field label not supported: status.replicas"),
        );
    }

    #[test]
    fn field_match() {
        let pending = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {}});
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        check_field_match("Pod", "spec.nodeName=", pending.clone(), true);
        check_field_match("Pod", "spec.nodeName=", bound.clone(), false);
        check_field_match("Pod", "spec.nodeName!=", bound.clone(), true);
        check_field_match(
            "Pod",
            "spec.nodeName=n1,status.phase=Running",
            bound.clone(),
            true,
        );
        check_field_match("Pod", "spec.hostNetwork=false", pending.clone(), true);
        check_field_match("Pod", "spec.hostNetwork=true", bound, true);
        check_field_match(
            "Pod",
            "metadata.namespace=default,metadata.name=p",
            pending.clone(),
            true,
        );
        check_field_match("Pod", "metadata.name=q", pending, false);
        check_field_match(
            "Node",
            "spec.unschedulable=false",
            json!({"spec": {}}),
            true,
        );
        check_field_match(
            "Node",
            "spec.unschedulable=true",
            json!({"spec": {"unschedulable": true}}),
            true,
        );
        check_field_match("ReplicaSet", "status.replicas=0", json!({}), true);
        check_field_match(
            "ReplicaSet",
            "status.replicas=3",
            json!({"status": {"replicas": 3}}),
            true,
        );
        let event = json!({"involvedObject": {"kind": "Pod", "name": "web"}, "source": {"component": "kubelet"}, "type": "Normal"});
        check_field_match(
            "Event",
            "source=kubelet,involvedObject.kind=Pod,involvedObject.name=web",
            event.clone(),
            true,
        );
        check_field_match("Event", "type!=Normal", event, false);
        check_field_match("Secret", "type=Opaque", json!({"type": "Opaque"}), true);
        check_field_match(
            "Namespace",
            "status.phase=Active",
            json!({"status": {"phase": "Terminating"}}),
            false,
        );
        check_field_match("ConfigMap", "", json!({}), true);
    }
    #[test]
    fn typed_selectors_match_like_kubernetes() {
        use std::collections::BTreeMap;
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let sel = |v: Value| -> k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            serde_json::from_value(v).expect("a valid selector")
        };
        let m = |v: Value| labels_match(&sel(v), &labels);
        assert!(m(json!({})), "empty matches everything");
        assert!(m(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]})
        ));
        assert!(!m(
            json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]})
        ));
        assert!(m(
            json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["1"]}]})
        ));
        assert!(m(
            json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]})
        ));
        assert!(!m(
            json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]})
        ));
        assert!(!m(
            json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
        ));
        assert!(!m(json!({"matchLabels": {"a": "2"}})));
        assert!(m(
            json!({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]})
        ));
    }
}
