//! CoreDNS-compatible Prometheus counters, rendered as the text exposition format.
//!
//! Counters live as long as the [`crate::Dns`] (they survive reconfiguration). Each update
//! takes one uncontended mutex and a hash-map increment keyed without allocation.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::cache::Kind;

/// Transport of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

type Labels = (Arc<str>, Arc<str>);

#[derive(Debug)]
struct Counter<K>(Mutex<HashMap<K, u64>>);

impl<K> Default for Counter<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone + Ord> Counter<K> {
    fn inc(&self, key: K) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    fn sorted(&self) -> BTreeMap<K, u64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Counter<(Labels, Proto, u8, u16)>,
    responses: Counter<(Labels, u16)>,
    cache_hits: Counter<(Arc<str>, &'static str)>,
    cache_misses: Counter<Arc<str>>,
    forward_requests: Counter<SocketAddr>,
    forward_responses: Counter<(SocketAddr, u16)>,
}

impl Metrics {
    /// A request to `server` (`dns://:53`) in `zone`.
    pub fn request(
        &self,
        server: &Arc<str>,
        zone: &Arc<str>,
        proto: Proto,
        ipv6: bool,
        qtype: RecordType,
    ) {
        self.requests.inc((
            (server.clone(), zone.clone()),
            proto,
            if ipv6 { 2 } else { 1 },
            u16::from(qtype),
        ));
    }

    /// A response with `rcode`.
    pub fn response(&self, server: &Arc<str>, zone: &Arc<str>, rcode: ResponseCode) {
        self.responses
            .inc(((server.clone(), zone.clone()), u16::from(rcode)));
    }

    /// A cache hit.
    pub fn cache_hit(&self, server: &Arc<str>, kind: Kind) {
        let kind = match kind {
            Kind::Success => "success",
            Kind::Denial => "denial",
        };
        self.cache_hits.inc((server.clone(), kind));
    }

    /// A cache miss.
    pub fn cache_miss(&self, server: &Arc<str>) {
        self.cache_misses.inc(server.clone());
    }

    /// A query sent upstream.
    pub fn forward_request(&self, to: SocketAddr) {
        self.forward_requests.inc(to);
    }

    /// A reply from upstream.
    pub fn forward_response(&self, to: SocketAddr, rcode: ResponseCode) {
        self.forward_responses.inc((to, u16::from(rcode)));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rtype = |t: u16| RecordType::from(t).to_string();
        let rcode = |c: u16| crate::answer::rcode_name(ResponseCode::from_low((c & 0xf) as u8));
        out.push_str("# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n");
        out.push_str("# TYPE coredns_dns_requests_total counter\n");
        for (((server, zone), proto, family, t), n) in self.requests.sorted() {
            let proto = match proto {
                Proto::Udp => "udp",
                Proto::Tcp => "tcp",
            };
            let _ = writeln!(
                out,
                "coredns_dns_requests_total{{server=\"{server}\",zone=\"{zone}\",view=\"\",proto=\"{proto}\",family=\"{family}\",type=\"{}\"}} {n}",
                rtype(t)
            );
        }
        out.push_str("# HELP coredns_dns_responses_total Counter of response status codes.\n");
        out.push_str("# TYPE coredns_dns_responses_total counter\n");
        for (((server, zone), code), n) in self.responses.sorted() {
            let _ = writeln!(
                out,
                "coredns_dns_responses_total{{server=\"{server}\",zone=\"{zone}\",view=\"\",rcode=\"{}\",plugin=\"\"}} {n}",
                rcode(code)
            );
        }
        out.push_str("# HELP coredns_cache_hits_total The count of cache hits.\n");
        out.push_str("# TYPE coredns_cache_hits_total counter\n");
        for ((server, kind), n) in self.cache_hits.sorted() {
            let _ = writeln!(out, "coredns_cache_hits_total{{server=\"{server}\",type=\"{kind}\",view=\"\",zones=\".\"}} {n}");
        }
        out.push_str("# HELP coredns_cache_misses_total The count of cache misses.\n");
        out.push_str("# TYPE coredns_cache_misses_total counter\n");
        for (server, n) in self.cache_misses.sorted() {
            let _ = writeln!(
                out,
                "coredns_cache_misses_total{{server=\"{server}\",view=\"\",zones=\".\"}} {n}"
            );
        }
        out.push_str(
            "# HELP coredns_forward_requests_total Counter of requests made per upstream.\n",
        );
        out.push_str("# TYPE coredns_forward_requests_total counter\n");
        for (to, n) in self.forward_requests.sorted() {
            let _ = writeln!(out, "coredns_forward_requests_total{{to=\"{to}\"}} {n}");
        }
        out.push_str(
            "# HELP coredns_forward_responses_total Counter of responses received per upstream.\n",
        );
        out.push_str("# TYPE coredns_forward_responses_total counter\n");
        for ((to, code), n) in self.forward_responses.sorted() {
            let _ = writeln!(
                out,
                "coredns_forward_responses_total{{rcode=\"{}\",to=\"{to}\"}} {n}",
                rcode(code)
            );
        }
        out
    }
}
