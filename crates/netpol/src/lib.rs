//! NetworkPolicy enforcement: the cluster's NetworkPolicies, for the pods of one node, as
//! the nftables table `inet kins_policy` in that node's network namespace.
//!
//! The table's chains hang off the `forward` hook, which sees pod traffic after the
//! service proxy's DNAT (so a Service is subject to the policies of the pod it reaches),
//! both routed traffic (between nodes, or with `--cni ptp`) and traffic bridged on `cni0`
//! (bridged IPv4 passes the IP hooks: `net.bridge.bridge-nf-call-iptables`, set by the
//! agent in the node's namespace). Traffic a node itself sends to its pods (probes) never
//! passes `forward` and is always allowed, as Kubernetes specifies.
//!
//! Shape: a chain per policy and direction, a rule per policy rule, and every pod, peer and
//! port an element of a set named after the policy (`ingress/NS/NAME/0/from`,
//! `.../0/ports` as `address . protocol . port`, named ports resolved per pod), so a pod
//! or label change only adds and deletes elements, in one transaction. The sets
//! `ingress_isolated` and `egress_isolated` hold the node's isolated pods, each with a
//! comment naming its policies; a refused flow is counted, recorded in `denied_ingress` or
//! `denied_egress` (10 minutes) and rejected (TCP with a reset, the rest with ICMP
//! admin-prohibited), so
//! `kins node exec NODE -- nft list table inet kins_policy` shows who was refused and by
//! which absence of an allowing rule.
//!
//! [`desired`] computes the table (pure), [`full_script`] and [`diff_script`] write
//! `nft -f` transactions, a [`proxy::Nft`] applies them, [`run`] follows the API.

mod model;
mod ranges;
mod run;
mod script;

pub use model::{
    desired, Desired, Elem, Proto, Set, SetKind, EGRESS, EGRESS_ISOLATED, INGRESS,
    INGRESS_ISOLATED, SELF,
};
pub use ranges::{normalize, subtract, IpRange};
pub use run::{run, Enforcer, DEBOUNCE};
pub use script::{diff_script, full_script, DENIED_EGRESS, DENIED_INGRESS, TABLE};

/// What can go wrong enforcing policies.
#[derive(Debug, thiserror::Error)]
pub enum NetpolError {
    /// nft refused or could not run the script.
    #[error("applying the policy table: {0}")]
    Apply(proxy::ProxyError),
    /// A watch ended.
    #[error("watching {resource}: {message}")]
    Watch {
        resource: &'static str,
        message: String,
    },
}

#[cfg(test)]
mod tests;
