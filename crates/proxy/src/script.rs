//! `nft -f` scripts for a [`Desired`] table: the whole table in one transaction, or only
//! the element changes between two states.

use std::fmt::{Display, Write};

use crate::model::{
    pick_classes, Desired, Elements, NoValue, Shape, AFFINITY_MASK, CLASS_MASK, ID_MASK, MASQ_BIT,
};

/// The table kins owns in the node's network namespace.
pub const TABLE: &str = "kins_proxy";

/// Elements per `add element` statement (keeps lines and netlink batches reasonable).
const CHUNK: usize = 2000;

/// A script that replaces the table (chains, sets and every element) in one transaction:
/// traffic never sees a moment without rules.
pub fn full_script(d: &Desired) -> String {
    let mut s = String::with_capacity(256 + d.len() * 80);
    s.push_str(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n"));
    s.push_str(&table(&d.shape));
    each_map(d, &mut |name, m| {
        for chunk in m.chunks(CHUNK) {
            let _ = write!(
                s,
                "add element ip {TABLE} {name} {{\n\t{}\n}}\n",
                chunk.join(",\n\t")
            );
        }
    });
    s
}

/// A script with only the element deletions and additions that turn `old` into `new`, or
/// `None` when they are the same. A changed shape (CIDRs, affinity timeouts) needs new
/// rules, so then this is the [`full_script`] of `new`.
pub fn diff_script(old: &Desired, new: &Desired) -> Option<String> {
    if old.shape != new.shape {
        return Some(full_script(new));
    }
    let mut deletes = String::new();
    let mut adds = String::new();
    diff(
        &mut deletes,
        &mut adds,
        "service_ips",
        &old.service_ips,
        &new.service_ips,
    );
    diff(
        &mut deletes,
        &mut adds,
        "external_ips",
        &old.external_ips,
        &new.external_ips,
    );
    diff(
        &mut deletes,
        &mut adds,
        "node_ports",
        &old.node_ports,
        &new.node_ports,
    );
    diff(
        &mut deletes,
        &mut adds,
        "no_endpoints",
        &old.no_endpoints,
        &new.no_endpoints,
    );
    diff(
        &mut deletes,
        &mut adds,
        "no_endpoint_node_ports",
        &old.no_endpoint_node_ports,
        &new.no_endpoint_node_ports,
    );
    diff(
        &mut deletes,
        &mut adds,
        "backends",
        &old.backends,
        &new.backends,
    );
    diff(
        &mut deletes,
        &mut adds,
        "hairpin",
        &old.hairpin,
        &new.hairpin,
    );
    diff(
        &mut deletes,
        &mut adds,
        "lb_restricted",
        &old.lb_restricted,
        &new.lb_restricted,
    );
    diff(
        &mut deletes,
        &mut adds,
        "lb_allowed",
        &old.lb_allowed,
        &new.lb_allowed,
    );
    if deletes.is_empty() && adds.is_empty() {
        return None;
    }
    deletes.push_str(&adds);
    Some(deletes)
}

/// Renders the elements of every set and map, by name.
fn each_map(d: &Desired, f: &mut dyn FnMut(&str, Vec<String>)) {
    f("service_ips", render(&d.service_ips));
    f("external_ips", render(&d.external_ips));
    f("node_ports", render(&d.node_ports));
    f("no_endpoints", render(&d.no_endpoints));
    f("no_endpoint_node_ports", render(&d.no_endpoint_node_ports));
    f("backends", render(&d.backends));
    f("hairpin", render(&d.hairpin));
    f("lb_restricted", render(&d.lb_restricted));
    f("lb_allowed", render(&d.lb_allowed));
}

fn render<K: Display, V: Display + 'static>(m: &Elements<K, V>) -> Vec<String> {
    m.iter()
        .map(|(k, e)| element(k, &e.value, &e.comment))
        .collect()
}

fn element<K: Display, V: Display + 'static>(k: &K, v: &V, comment: &str) -> String {
    let comment = comment.replace('"', "'");
    if std::any::TypeId::of::<V>() == std::any::TypeId::of::<NoValue>() {
        format!("{k} comment \"{comment}\"")
    } else {
        format!("{k} comment \"{comment}\" : {v}")
    }
}

impl Display for NoValue {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

fn diff<K: Ord + Display, V: PartialEq + Display + 'static>(
    deletes: &mut String,
    adds: &mut String,
    name: &str,
    old: &Elements<K, V>,
    new: &Elements<K, V>,
) {
    // One merge walk over both sorted maps.
    let mut gone = Vec::new();
    let mut added = Vec::new();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((ok, _)), None) => {
                gone.push(ok.to_string());
                o.next();
            }
            (None, Some((nk, ne))) => {
                added.push(element(nk, &ne.value, &ne.comment));
                n.next();
            }
            (Some((ok, oe)), Some((nk, ne))) => match ok.cmp(nk) {
                std::cmp::Ordering::Less => {
                    gone.push(ok.to_string());
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    added.push(element(nk, &ne.value, &ne.comment));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if oe != ne {
                        gone.push(ok.to_string());
                        added.push(element(nk, &ne.value, &ne.comment));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    for chunk in gone.chunks(CHUNK) {
        let _ = writeln!(
            deletes,
            "delete element ip {TABLE} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
    for chunk in added.chunks(CHUNK) {
        let _ = writeln!(
            adds,
            "add element ip {TABLE} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The table's sets, maps and chains: the same for every cluster size.
fn table(shape: &Shape) -> String {
    let mut t = String::new();
    let mut w = |line: &str| {
        t.push_str(line);
        t.push('\n');
    };
    w(&format!("table ip {TABLE} {{"));
    w("\tcomment \"kins service proxy: services and endpoints are elements, chains are fixed\"");
    w("\tmap service_ips {");
    w("\t\ttype ipv4_addr . inet_proto . inet_service : mark");
    w("\t\tcomment \"ClusterIP . protocol . port to endpoint group id\"");
    w("\t}");
    w("\tmap external_ips {");
    w("\t\ttype ipv4_addr . inet_proto . inet_service : mark");
    w("\t\tcomment \"LoadBalancer/external IP . protocol . port to group id (+ masquerade bit)\"");
    w("\t}");
    w("\tmap node_ports {");
    w("\t\ttype inet_proto . inet_service : mark");
    w("\t\tcomment \"NodePort on a local address to group id (+ masquerade bit)\"");
    w("\t}");
    w("\tmap no_endpoints {");
    w("\t\ttype ipv4_addr . inet_proto . inet_service : verdict");
    w("\t\tcomment \"frontends without endpoints\"");
    w("\t}");
    w("\tmap no_endpoint_node_ports {");
    w("\t\ttype inet_proto . inet_service : verdict");
    w("\t\tcomment \"NodePorts without endpoints\"");
    w("\t}");
    w("\tmap backends {");
    w("\t\ttypeof meta mark . numgen random mod 2 : ip daddr . th dport");
    w("\t\tcomment \"group id . bucket to endpoint\"");
    w("\t}");
    w("\tmap affinity {");
    w("\t\ttype ipv4_addr . mark : ipv4_addr . inet_service");
    w("\t\tsize 1048576");
    w("\t\tflags dynamic,timeout");
    w("\t\ttimeout 3h");
    w("\t\tcomment \"client . group id to the endpoint it was sent to (sessionAffinity ClientIP)\"");
    w("\t}");
    w("\tset hairpin {");
    w("\t\ttype ipv4_addr . ipv4_addr");
    w("\t\tcomment \"local endpoint . itself: a pod reaching itself through a service\"");
    w("\t}");
    w("\tset lb_restricted {");
    w("\t\ttype ipv4_addr . inet_proto . inet_service");
    w("\t\tcomment \"LoadBalancer frontends with loadBalancerSourceRanges\"");
    w("\t}");
    w("\tset lb_allowed {");
    w("\t\ttype ipv4_addr . inet_proto . inet_service . ipv4_addr");
    w("\t\tflags interval");
    w("\t\tcomment \"LoadBalancer frontend . allowed source range\"");
    w("\t}");
    w("\tmap pick {");
    w("\t\ttype mark : verdict");
    w("\t\tcomment \"pick class to the chain choosing among its buckets\"");
    let picks: Vec<String> = pick_classes()
        .map(|(class, n)| format!("{class} : goto pick_{n}"))
        .collect();
    w(&format!("\t\telements = {{ {} }}", picks.join(", ")));
    w("\t}");

    let key = "ip daddr . meta l4proto . th dport";
    let local = "fib daddr type local ip daddr != 127.0.0.0/8";
    let id = format!("(meta mark & {ID_MASK:#010x})");
    w("\tchain firewall {");
    w("\t\ttype filter hook prerouting priority dstnat - 10; policy accept;");
    w(&format!(
        "\t\t{key} @lb_restricted {key} . ip saddr != @lb_allowed drop"
    ));
    w("\t}");
    w("\tchain nat_prerouting {");
    w("\t\ttype nat hook prerouting priority dstnat; policy accept;");
    w("\t\tjump services");
    w("\t}");
    w("\tchain nat_output {");
    w("\t\ttype nat hook output priority -100; policy accept;");
    w("\t\tjump services");
    w("\t}");
    w("\tchain services {");
    if let Some(cidr) = shape.cluster_cidr {
        w(&format!(
            "\t\tip saddr != {cidr} meta mark set {key} map @service_ips meta mark set meta mark | {MASQ_BIT:#010x} goto endpoint"
        ));
    }
    w(&format!(
        "\t\tmeta mark set {key} map @service_ips goto endpoint"
    ));
    w(&format!(
        "\t\tmeta mark set {key} map @external_ips goto endpoint"
    ));
    w(&format!(
        "\t\t{local} meta mark set meta l4proto . th dport map @node_ports goto endpoint"
    ));
    w("\t}");
    w("\tchain endpoint {");
    w(&format!(
        "\t\tmeta l4proto {{ tcp, udp }} dnat ip to ip saddr . {id} map @affinity"
    ));
    w(&format!("\t\tmeta mark & {CLASS_MASK:#x} vmap @pick"));
    w("\t}");
    for (_, n) in pick_classes() {
        w(&format!("\tchain pick_{n} {{"));
        w(&format!(
            "\t\tmeta l4proto {{ tcp, udp }} dnat ip to {id} . numgen random mod {n} map @backends"
        ));
        w("\t}");
    }
    w("\tchain nat_postrouting {");
    w("\t\ttype nat hook postrouting priority srcnat; policy accept;");
    for (i, timeout) in shape.affinity_timeouts.iter().enumerate() {
        let class = (i as u32 + 1) << 7;
        w(&format!(
            "\t\tct status dnat meta mark & {AFFINITY_MASK:#x} == {class:#x} update @affinity {{ ip saddr . {id} timeout {timeout}s : ip daddr . th dport }}"
        ));
    }
    w(&format!(
        "\t\tct status dnat meta mark & {MASQ_BIT:#010x} == {MASQ_BIT:#010x} masquerade"
    ));
    w("\t\tct status dnat ip saddr . ip daddr @hairpin masquerade");
    w("\t}");
    w("\tchain filter_prerouting {");
    w("\t\ttype filter hook prerouting priority dstnat + 10; policy accept;");
    w("\t\tjump reject_checks");
    w("\t}");
    w("\tchain filter_output {");
    w("\t\ttype filter hook output priority -90; policy accept;");
    w("\t\tjump reject_checks");
    w("\t}");
    w("\tchain reject_checks {");
    w(&format!("\t\t{key} vmap @no_endpoints"));
    w(&format!(
        "\t\t{local} meta l4proto . th dport vmap @no_endpoint_node_ports"
    ));
    if let Some(cidr) = shape.service_cidr {
        w(&format!("\t\tip daddr {cidr} goto reject_packet"));
    }
    w("\t}");
    w("\tchain reject_packet {");
    w("\t\tmeta l4proto tcp reject with tcp reset");
    w("\t\treject with icmp type port-unreachable");
    w("\t}");
    w("}");
    t
}
