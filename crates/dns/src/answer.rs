//! Query → response for the cluster zones (the kubernetes plugin), without IO.
//!
//! The response type [`Response`] is shared by every plugin; its sections hold either the
//! index's prebuilt record sets (an `Arc` clone, the hot path) or records built for the query.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::corefile::PodsMode;
use crate::records::{undashed, Index};

/// One section of a response.
#[derive(Debug, Clone, Default)]
pub enum Section {
    /// No records.
    #[default]
    Empty,
    /// A prebuilt record set of the index.
    Shared(Arc<[Record]>),
    /// Records built for this query.
    Owned(Vec<Record>),
}

impl Section {
    /// The records.
    pub fn records(&self) -> &[Record] {
        match self {
            Self::Empty => &[],
            Self::Shared(r) => r,
            Self::Owned(r) => r,
        }
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.records().is_empty()
    }

    /// The records, owned (copies them when shared).
    pub fn to_mut(&mut self) -> &mut Vec<Record> {
        if !matches!(self, Self::Owned(_)) {
            *self = Self::Owned(self.records().to_vec());
        }
        match self {
            Self::Owned(v) => v,
            _ => unreachable!("just made owned"),
        }
    }
}

/// A response, before the header and question are added by the server.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The response code.
    pub rcode: ResponseCode,
    /// Authoritative answer (cluster zones, hosts).
    pub authoritative: bool,
    /// Recursion available (forwarded answers).
    pub recursion_available: bool,
    /// Answer section.
    pub answers: Section,
    /// Authority section.
    pub authorities: Section,
    /// Additional section.
    pub additionals: Section,
}

impl Response {
    /// An empty response with `rcode`.
    pub fn rcode(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            ..Self::default()
        }
    }

    /// The response as text, one line per record, for tests and logs:
    /// `NOERROR` then `answer: <record>`, `authority: <record>` lines.
    pub fn to_text(&self) -> String {
        let mut out = rcode_name(self.rcode).to_string();
        for (label, section) in [
            ("answer", &self.answers),
            ("authority", &self.authorities),
            ("additional", &self.additionals),
        ] {
            for r in section.records() {
                let _ = write!(out, "\n{label}: {r}");
            }
        }
        out
    }

    /// Replaces the owner name `from` (any case) by `to` in every section (question case,
    /// rewrite's answer names).
    pub fn rename(&mut self, from: &Name, to: &Name) {
        for section in [
            &mut self.answers,
            &mut self.authorities,
            &mut self.additionals,
        ] {
            if section
                .records()
                .iter()
                .any(|r| r.name == *from && !r.name.eq_case(to))
            {
                for r in section.to_mut() {
                    if r.name == *from {
                        r.name = to.clone();
                    }
                }
            }
        }
    }
}

/// The name dig prints for a response code (`NOERROR`, `NXDOMAIN`, ...).
pub fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::BADVERS => "BADVERS",
        _ => "RCODE",
    }
}

/// What the kubernetes plugin does with a query.
#[derive(Debug)]
pub enum Outcome {
    /// An answer (records, or NOERROR without data).
    Answer(Response),
    /// The name does not exist in the zone (the response carries the SOA); `fallthrough` may
    /// pass the query on instead.
    NxDomain(Response),
    /// The name is not in the plugin's zones.
    NotMine,
}

/// Answers `qname`/`qtype` from the index (the kubernetes plugin).
///
/// `qname` is lower case; the server puts back the question's case. Cost: one hash-map
/// lookup plus `Arc` clones; pod names parse the first label instead.
pub fn kubernetes(index: &Index, pods: PodsMode, qname: &LowerName, qtype: RecordType) -> Outcome {
    let Some((zone, soa)) = index.soa_for(qname) else {
        return Outcome::NotMine;
    };
    let nodata = || Response {
        authoritative: true,
        authorities: Section::Shared(soa.clone()),
        ..Response::default()
    };
    if let Some(node) = index.lookup(qname) {
        let answers = if qtype == RecordType::ANY {
            let all: Vec<Record> = node.all().cloned().collect();
            if all.is_empty() {
                None
            } else {
                Some(Section::Owned(all))
            }
        } else {
            node.get(RecordType::CNAME)
                .or_else(|| node.get(qtype))
                .map(|r| Section::Shared(r.clone()))
        };
        return Outcome::Answer(match answers {
            Some(answers) => Response {
                authoritative: true,
                answers,
                ..Response::default()
            },
            None => nodata(),
        });
    }
    let nxdomain = || {
        Outcome::NxDomain(Response {
            rcode: ResponseCode::NXDomain,
            ..nodata()
        })
    };
    // `<a-b-c-d>.<namespace>.pod.<zone>`
    if qname.num_labels() != zone.num_labels() + 3 {
        return nxdomain();
    }
    let labels: Vec<&[u8]> = qname.iter().take(3).collect();
    let (Ok(ip_label), Ok(namespace)) = (
        std::str::from_utf8(labels[0]),
        std::str::from_utf8(labels[1]),
    ) else {
        return nxdomain();
    };
    if labels[2] != b"pod" || pods == PodsMode::Disabled || !index.exposes(namespace) {
        return nxdomain();
    }
    let Some(ip) = undashed(ip_label) else {
        return nxdomain();
    };
    if pods == PodsMode::Verified && !index.pod_exists(namespace, ip) {
        return nxdomain();
    }
    let ttl = index.config().ttl;
    let owner = Name::from(qname.clone());
    let record = match ip {
        IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => {
            Some(Record::from_rdata(owner, ttl, RData::A(A(v4))))
        }
        IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
            Some(Record::from_rdata(owner, ttl, RData::AAAA(AAAA(v6))))
        }
        _ => None,
    };
    Outcome::Answer(match record {
        Some(r) => Response {
            authoritative: true,
            answers: Section::Owned(vec![r]),
            ..Response::default()
        },
        None => nodata(),
    })
}
