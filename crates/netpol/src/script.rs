//! `nft -f` scripts for a [`Desired`] table: the whole table in one transaction, or the
//! changes between two states (element additions and deletions, and the chains whose
//! rules changed, rewritten).

use std::fmt::Write;

use crate::model::{
    Desired, Elem, Set, SetKind, EGRESS, EGRESS_ISOLATED, INGRESS, INGRESS_ISOLATED, SELF,
};

/// The table kins owns in the node's network namespace.
pub const TABLE: &str = "kins_policy";
/// Recently refused flows (source . destination . protocol . port), kept 10 minutes:
/// `nft list set inet kins_policy denied_ingress` shows what was refused and how often.
pub const DENIED_INGRESS: &str = "denied_ingress";
pub const DENIED_EGRESS: &str = "denied_egress";
/// How long a refused flow stays in the denied sets.
const DENIED_TIMEOUT: &str = "10m";
/// Elements per `add element` statement.
const CHUNK: usize = 2000;

fn set_type(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Addr => "type ipv4_addr; flags interval;",
        SetKind::AddrPort => "type ipv4_addr . inet_proto . inet_service; flags interval;",
        SetKind::Pair => "type ipv4_addr . ipv4_addr;",
    }
}

fn add_set(s: &mut String, name: &str, set: &Set) {
    let counter = if name == INGRESS_ISOLATED || name == EGRESS_ISOLATED {
        " counter;"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "add set inet {TABLE} {name} {{ {}{counter} }}",
        set_type(set.kind)
    );
}

fn elem_text(e: &Elem, comment: &str) -> String {
    if comment.is_empty() {
        e.to_string()
    } else {
        format!("{e} comment \"{comment}\"")
    }
}

fn add_elements<'a>(
    s: &mut String,
    name: &str,
    elems: impl Iterator<Item = (&'a Elem, &'a String)>,
) {
    let texts: Vec<String> = elems.map(|(e, c)| elem_text(e, c)).collect();
    for chunk in texts.chunks(CHUNK) {
        let _ = writeln!(
            s,
            "add element inet {TABLE} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
}

fn delete_elements<'a>(s: &mut String, name: &str, elems: impl Iterator<Item = &'a Elem>) {
    let texts: Vec<String> = elems.map(Elem::to_string).collect();
    for chunk in texts.chunks(CHUNK) {
        let _ = writeln!(
            s,
            "delete element inet {TABLE} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The rules of a dispatch chain: a jump to each policy chain, then the refusal, which
/// first records the flow in the denied set.
fn dispatch_rules(s: &mut String, chain: &str, jumps: &[String]) {
    let (denied, what) = if chain == INGRESS {
        (DENIED_INGRESS, "ingress")
    } else {
        (DENIED_EGRESS, "egress")
    };
    for j in jumps {
        let _ = writeln!(s, "add rule inet {TABLE} {chain} jump {j}");
    }
    let _ = writeln!(
        s,
        "add rule inet {TABLE} {chain} meta l4proto {{ tcp, udp, sctp }} update @{denied} {{ ip saddr . ip daddr . meta l4proto . th dport }}"
    );
    // TCP gets a reset (ICMP errors are rate-limited per peer, so a burst of refused
    // connections would partly time out); the rest ICMP admin-prohibited.
    let _ = writeln!(
        s,
        "add rule inet {TABLE} {chain} meta l4proto tcp counter reject with tcp reset comment \"no NetworkPolicy allows this {what}\"\n\
         add rule inet {TABLE} {chain} counter reject with icmpx admin-prohibited comment \"no NetworkPolicy allows this {what}\""
    );
}

fn chain_rules(s: &mut String, chain: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(s, "add rule inet {TABLE} {chain} {r}");
    }
}

/// A script that replaces the whole table in one transaction.
///
/// The fixed part: `forward` (filter, after the proxy's DNAT) accepts established flows
/// and a pod reaching itself, sends traffic of egress-isolated pods to `egress`, the rest
/// to `ingress_check`; `egress` jumps to each policy's egress chain, whose allowing rules
/// `goto ingress_check`; `ingress_check` sends traffic to ingress-isolated pods to
/// `ingress`, whose policy chains accept; both dispatch chains end in a refusal.
pub fn full_script(d: &Desired) -> String {
    let mut s = String::with_capacity(1024 + d.len() * 40);
    let _ = writeln!(
        s,
        "table inet {TABLE}\ndelete table inet {TABLE}\nadd table inet {TABLE}"
    );
    for (name, set) in &d.sets {
        add_set(&mut s, name, set);
    }
    for denied in [DENIED_INGRESS, DENIED_EGRESS] {
        let _ = writeln!(
            s,
            "add set inet {TABLE} {denied} {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; timeout {DENIED_TIMEOUT}; size 65536; counter; }}"
        );
    }
    let _ = writeln!(
        s,
        "add chain inet {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}"
    );
    for chain in ["ingress_check", INGRESS, EGRESS] {
        let _ = writeln!(s, "add chain inet {TABLE} {chain}");
    }
    for name in d.chains.keys() {
        let _ = writeln!(s, "add chain inet {TABLE} {name}");
    }
    for (name, set) in &d.sets {
        add_elements(&mut s, name, set.elems.iter());
    }
    for (name, rules) in &d.chains {
        chain_rules(&mut s, name, rules);
    }
    dispatch_rules(&mut s, INGRESS, &d.ingress_jumps);
    dispatch_rules(&mut s, EGRESS, &d.egress_jumps);
    let _ = writeln!(
        s,
        "add rule inet {TABLE} ingress_check ip daddr @{INGRESS_ISOLATED} goto {INGRESS}\n\
         add rule inet {TABLE} ingress_check accept\n\
         add rule inet {TABLE} forward ct state established,related accept\n\
         add rule inet {TABLE} forward ip saddr . ip daddr @{SELF} accept comment \"a pod may always reach itself\"\n\
         add rule inet {TABLE} forward ip saddr @{EGRESS_ISOLATED} goto {EGRESS}\n\
         add rule inet {TABLE} forward goto ingress_check"
    );
    s
}

/// The changes that turn `old` into `new`, or `None` when there are none. A set whose
/// kind changed (never, by its name) falls back to the [`full_script`].
pub fn diff_script(old: &Desired, new: &Desired) -> Option<String> {
    if new
        .sets
        .iter()
        .any(|(n, s)| old.sets.get(n).is_some_and(|o| o.kind != s.kind))
    {
        return Some(full_script(new));
    }
    let mut s = String::new();
    // New sets and chains first, so the rules written below can name them.
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) {
            add_set(&mut s, name, set);
            add_elements(&mut s, name, set.elems.iter());
        }
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(s, "add chain inet {TABLE} {name}");
        }
    }
    // Element changes of the sets both have: deletions before additions (an element whose
    // comment changed is deleted and added again).
    for (name, set) in &new.sets {
        let Some(was) = old.sets.get(name) else {
            continue;
        };
        let gone = was
            .elems
            .iter()
            .filter(|(e, c)| set.elems.get(*e) != Some(*c))
            .map(|(e, _)| e);
        delete_elements(&mut s, name, gone);
        let added = set
            .elems
            .iter()
            .filter(|(e, c)| was.elems.get(*e) != Some(*c));
        add_elements(&mut s, name, added);
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(was) if was == rules => {}
            Some(_) => {
                let _ = writeln!(s, "flush chain inet {TABLE} {name}");
                chain_rules(&mut s, name, rules);
            }
            None => chain_rules(&mut s, name, rules),
        }
    }
    for (chain, was, now) in [
        (INGRESS, &old.ingress_jumps, &new.ingress_jumps),
        (EGRESS, &old.egress_jumps, &new.egress_jumps),
    ] {
        if was != now {
            let _ = writeln!(s, "flush chain inet {TABLE} {chain}");
            dispatch_rules(&mut s, chain, now);
        }
    }
    // What is gone, after nothing jumps to it or names it any more.
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(
                s,
                "flush chain inet {TABLE} {name}\ndelete chain inet {TABLE} {name}"
            );
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(s, "delete set inet {TABLE} {name}");
        }
    }
    (!s.is_empty()).then_some(s)
}
