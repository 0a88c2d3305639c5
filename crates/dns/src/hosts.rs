//! The hosts plugin: inline entries plus an optional hosts file, re-read when its
//! modification time changes (checked at most every [`FILE_CHECK`]). A, AAAA, and PTR
//! (unless `no_reverse`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{self, A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::answer::{Response, Section};
use crate::chain::{in_zones, Fallthrough};
use crate::corefile::Hosts;

/// How often the hosts file's modification time is looked at.
pub const FILE_CHECK: Duration = Duration::from_secs(2);

/// Names and addresses of hosts entries.
#[derive(Debug, Default)]
pub struct Table {
    forward: HashMap<LowerName, (Name, Vec<IpAddr>)>,
    reverse: HashMap<LowerName, Vec<Name>>,
}

impl Table {
    /// A table from `(address, names)` entries (names with or without the final dot).
    pub fn new<'a>(entries: impl IntoIterator<Item = (IpAddr, &'a [String])>) -> Self {
        let mut table = Self::default();
        for (ip, names) in entries {
            for n in names {
                let text = if n.ends_with('.') {
                    n.clone()
                } else {
                    format!("{n}.")
                };
                let Ok(name) = Name::from_ascii(&text).map(|n| n.to_lowercase()) else {
                    continue;
                };
                let entry = table
                    .forward
                    .entry(LowerName::from(&name))
                    .or_insert_with(|| (name.clone(), Vec::new()));
                if !entry.1.contains(&ip) {
                    entry.1.push(ip);
                }
                let ptr = table
                    .reverse
                    .entry(LowerName::from(Name::from(ip)))
                    .or_default();
                if !ptr.contains(&name) {
                    ptr.push(name);
                }
            }
        }
        table
    }
}

/// Parses hosts-file text: `IP NAME...` lines, `#` comments.
pub fn parse_hosts(text: &str) -> Vec<(IpAddr, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let ip: IpAddr = fields.next()?.split('%').next()?.parse().ok()?;
            let names: Vec<String> = fields.map(|n| n.to_ascii_lowercase()).collect();
            (!names.is_empty()).then_some((ip, names))
        })
        .collect()
}

#[derive(Debug)]
struct FileState {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    table: Arc<Table>,
}

/// A compiled hosts plugin.
#[derive(Debug)]
pub struct HostsPlugin {
    zones: Vec<LowerName>,
    ttl: u32,
    no_reverse: bool,
    fallthrough: Fallthrough,
    inline: Vec<(IpAddr, Vec<String>)>,
    file: Option<PathBuf>,
    state: Mutex<FileState>,
}

/// What the hosts plugin does with a query.
#[derive(Debug)]
pub enum HostsOutcome {
    /// An answer.
    Answer(Response),
    /// Not found here; the next plugin answers.
    Next,
}

impl HostsPlugin {
    /// Compiles the plugin; `block_zones` are used when the plugin names none.
    pub fn new(hosts: &Hosts, block_zones: &[String]) -> Self {
        let zones = if hosts.zones.is_empty() {
            block_zones
        } else {
            &hosts.zones
        };
        let plugin = Self {
            zones: zones
                .iter()
                .filter_map(|z| Name::from_ascii(z).ok())
                .map(|n| LowerName::from(&n))
                .collect(),
            ttl: hosts.ttl,
            no_reverse: hosts.no_reverse,
            fallthrough: Fallthrough::new(hosts.fallthrough.as_deref()),
            inline: hosts.entries.clone(),
            file: hosts.file.clone(),
            state: Mutex::new(FileState {
                checked: None,
                modified: None,
                table: Arc::new(Table::default()),
            }),
        };
        plugin.table(Instant::now());
        plugin
    }

    /// The current table, re-reading the file when it changed.
    fn table(&self, now: Instant) -> Arc<Table> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .checked
            .is_none_or(|c| now.duration_since(c) >= FILE_CHECK);
        if !due {
            return state.table.clone();
        }
        state.checked = Some(now);
        let modified = self
            .file
            .as_deref()
            .and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        if modified != state.modified || state.table.forward.is_empty() && state.modified.is_none()
        {
            let from_file = self.file.as_deref().map(read_hosts).unwrap_or_default();
            let entries = self
                .inline
                .iter()
                .chain(from_file.iter())
                .map(|(ip, n)| (*ip, n.as_slice()));
            state.table = Arc::new(Table::new(entries));
            state.modified = modified;
        }
        state.table.clone()
    }

    /// Answers `qname`/`qtype` at `now` (for the file check).
    pub fn lookup(&self, qname: &LowerName, qtype: RecordType, now: Instant) -> HostsOutcome {
        let in_zone = in_zones(&self.zones, qname);
        let is_ptr_name =
            !self.no_reverse && (qtype == RecordType::PTR || qname.to_string().ends_with(".arpa."));
        if !in_zone && !is_ptr_name {
            return HostsOutcome::Next;
        }
        let table = self.table(now);
        let mut answers = Vec::new();
        let mut exists = false;
        if let Some((owner, ips)) = table.forward.get(qname) {
            exists = true;
            for ip in ips {
                match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => answers.push(
                        Record::from_rdata(owner.clone(), self.ttl, RData::A(A(*v4))),
                    ),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => answers.push(
                        Record::from_rdata(owner.clone(), self.ttl, RData::AAAA(AAAA(*v6))),
                    ),
                    _ => {}
                }
            }
        }
        if !self.no_reverse {
            if let Some(targets) = table.reverse.get(qname) {
                exists = true;
                if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    let owner = Name::from(qname.clone());
                    answers.extend(targets.iter().map(|t| {
                        Record::from_rdata(
                            owner.clone(),
                            self.ttl,
                            RData::PTR(rdata::PTR(t.clone())),
                        )
                    }));
                }
            }
        }
        if !exists {
            if self.fallthrough.covers(qname) || !in_zone {
                return HostsOutcome::Next;
            }
            // As CoreDNS: without a SOA it cannot say NXDOMAIN, so SERVFAIL.
            return HostsOutcome::Answer(Response::rcode(ResponseCode::ServFail));
        }
        HostsOutcome::Answer(Response {
            authoritative: true,
            answers: Section::Owned(answers),
            ..Response::default()
        })
    }
}

fn read_hosts(path: &Path) -> Vec<(IpAddr, Vec<String>)> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_hosts(&text),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "hosts: cannot read file");
            Vec::new()
        }
    }
}
