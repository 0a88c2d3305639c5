//! The service proxy: the cluster's Services and EndpointSlices as an nftables table in
//! the node's network namespace.
//!
//! kube-proxy's nftables mode makes a chain per service and per endpoint; at 10,000
//! services that costs seconds per load and a fifth of a second per change. Here the
//! table `ip kins_proxy` has a fixed set of chains and every service, endpoint and port is
//! an element of a set or map, so a change is a few element additions and deletions:
//!
//! - `services` (nat prerouting and output) looks the destination up in `service_ips`
//!   (`ip daddr . meta l4proto . th dport`), `external_ips` (LoadBalancer ingress IPs,
//!   externalIPs) and, for local addresses, `node_ports` (`meta l4proto . th dport`); the
//!   value, an endpoint group id with maybe the masquerade bit, goes into the packet mark.
//! - `endpoint` first tries the `affinity` map (client . id, a dynamic map with timeouts,
//!   filled in postrouting), then jumps by the id's pick class to `pick_<n>`, which does
//!   `dnat ip to id . numgen random mod n map @backends`. Groups of up to 64 endpoints
//!   have one bucket each (exactly uniform); larger ones 2^11..2^14 buckets filled round
//!   robin (within 1/16 of uniform).
//! - Filter chains after DNAT (prerouting and output) reject frontends without endpoints
//!   (`no_endpoints`, `no_endpoint_node_ports`: TCP reset or ICMP port unreachable, or a
//!   drop for externalTrafficPolicy Local) and any address of the service CIDR left
//!   untranslated; `firewall` drops LoadBalancer clients outside loadBalancerSourceRanges.
//! - `nat_postrouting` records affinity, masquerades marked traffic (NodePort and
//!   LoadBalancer unless externalTrafficPolicy Local, ClusterIP from outside the cluster
//!   CIDR) and hairpin traffic (a local endpoint reaching itself).
//!
//! [`desired`] computes the elements (pure), [`full_script`] and [`diff_script`] write
//! `nft -f` transactions, an [`Nft`] applies them and [`run`] keeps the table in step with
//! the API; after each change [`stale_udp`] names the UDP conntrack entries to delete.
//! The packet mark is scratch space of this table inside the node's namespace.

mod conntrack;
mod model;
mod nft;
mod run;
mod script;

pub use conntrack::{stale_udp, Conntrack, ConntrackCommand, Flush, RecordingConntrack};
pub use model::{
    buckets, desired, pick_classes, Bucket, Desired, Elem, Elements, Endpoint, Hairpin, IpPort,
    Mark, NoValue, NodeConfig, Proto, ProtoPort, Shape, SourceRange, Verdict, AFFINITY_MASK,
    CLASS_MASK, DEFAULT_AFFINITY_TIMEOUT, ID_MASK, MASQ_BIT,
};
pub use nft::{remove_table, Nft, NftCommand, RecordingNft};
pub use run::{run, Proxy, DEBOUNCE};
pub use script::{diff_script, full_script, TABLE};

/// What can go wrong applying the proxy's rules or watching the API.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The nft program could not be run or fed.
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// nft refused the script.
    #[error("nft failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
    /// conntrack could not delete stale entries.
    #[error("conntrack {args}: {stderr}")]
    Conntrack { args: String, stderr: String },
    /// A watch of Services or EndpointSlices ended.
    #[error("watching {resource}: {message}")]
    Watch {
        resource: &'static str,
        message: String,
    },
}

#[cfg(test)]
mod tests;
