//! Unit tests: inputs as Kubernetes JSON, outputs as the `nft` text they turn into.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use crate::*;

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "n1".into(),
        node_ip: "172.29.0.2".parse().expect("literal"),
        cluster_cidr: "10.244.0.0/16".into(),
        service_cidr: "10.96.0.0/12".into(),
    }
}

/// A Service `name` in `default` from the given spec (and status) fields.
fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// An EndpointSlice of service `name` with one port and `(ip, node, ready)` endpoints.
fn slice(name: &str, port: (&str, i32), eps: &[(&str, &str, bool)]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, node, ready)| {
            json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{name}-abc"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": name}},
           "addressType": "IPv4",
           "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}],
           "endpoints": endpoints})
}

fn parse(objects: &[Value]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for o in objects {
        if o["kind"] == "Service" {
            svcs.push(serde_json::from_value(o.clone()).expect("valid Service"));
        } else {
            slices.push(serde_json::from_value(o.clone()).expect("valid EndpointSlice"));
        }
    }
    (svcs, slices)
}

fn state(objects: &[Value]) -> Desired {
    let (svcs, slices) = parse(objects);
    desired(&svcs, &slices, &node())
}

/// The element part of the full script (the table definition is checked once, below),
/// with group ids replaced by `#<pick class>` so expectations do not depend on hashes.
fn elements(d: &Desired) -> String {
    let script = full_script(d);
    let body = script
        .split_once("\n}\n")
        .expect("the script defines the table")
        .1;
    let mut out = body.to_owned();
    let mut ids: Vec<u32> = d.backends.keys().map(|b| b.0 .0).collect();
    ids.dedup();
    for id in ids {
        let name = format!(
            "#{}{}",
            id & CLASS_MASK,
            if id & AFFINITY_MASK != 0 { "a" } else { "" }
        );
        out = out.replace(&format!("{:#010x}", id | MASQ_BIT), &format!("{name}+masq"));
        out = out.replace(&Mark(id).to_string(), &name);
    }
    out
}

fn check(objects: &[Value], expect: &str) {
    let got = elements(&state(objects));
    assert_eq!(got.trim(), expect.trim(), "\n--- got ---\n{got}");
}

#[test]
fn cluster_ip_with_two_endpoints() {
    check(
        &[
            svc(
                "web",
                json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}),
            ),
            slice(
                "web",
                ("http", 8080),
                &[
                    ("10.244.1.5", "n1", true),
                    ("10.244.2.7", "n2", true),
                    ("10.244.2.8", "n2", false),
                ],
            ),
        ],
        r#"
add element ip kins_proxy service_ips {
	10.96.0.10 . tcp . 80 comment "default/web:http" : #2
}
add element ip kins_proxy backends {
	#2 . 0 comment "default/web:http" : 10.244.1.5 . 8080,
	#2 . 1 comment "default/web:http" : 10.244.2.7 . 8080
}
add element ip kins_proxy hairpin {
	10.244.1.5 . 10.244.1.5 comment "local endpoint"
}
"#,
    );
}

#[test]
fn no_endpoints_are_rejected_and_ignored_services_skipped() {
    check(
        &[
            svc(
                "empty",
                json!({"clusterIP": "10.96.0.11", "ports": [{"port": 53, "protocol": "UDP"}, {"port": 9, "protocol": "SCTP"}]}),
            ),
            svc(
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
            svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
            {
                let mut s = svc(
                    "other",
                    json!({"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}),
                );
                s["metadata"]["labels"] = json!({"service.kubernetes.io/service-proxy-name": "x"});
                s
            },
            {
                let mut s = svc(
                    "hl",
                    json!({"clusterIP": "10.96.0.13", "ports": [{"port": 80}]}),
                );
                s["metadata"]["labels"] = json!({"service.kubernetes.io/headless": ""});
                s
            },
        ],
        r#"
add element ip kins_proxy no_endpoints {
	10.96.0.11 . udp . 53 comment "default/empty" : goto reject_packet
}
"#,
    );
}

#[test]
fn node_port_is_masqueraded() {
    check(
        &[
            svc(
                "web",
                json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            ),
            slice("web", ("http", 8080), &[("10.244.2.7", "n2", true)]),
            svc(
                "gone",
                json!({"type": "NodePort", "clusterIP": "10.96.0.14", "ports": [{"port": 81, "nodePort": 30081}]}),
            ),
        ],
        r#"
add element ip kins_proxy service_ips {
	10.96.0.10 . tcp . 80 comment "default/web:http" : #1
}
add element ip kins_proxy node_ports {
	tcp . 30080 comment "default/web:http" : #1+masq
}
add element ip kins_proxy no_endpoints {
	10.96.0.14 . tcp . 81 comment "default/gone" : goto reject_packet
}
add element ip kins_proxy no_endpoint_node_ports {
	tcp . 30081 comment "default/gone" : goto reject_packet
}
add element ip kins_proxy backends {
	#1 . 0 comment "default/web:http" : 10.244.2.7 . 8080
}
"#,
    );
}

#[test]
fn external_traffic_policy_local_keeps_the_client_ip_and_uses_local_endpoints() {
    let d = state(&[
        svc(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
                          "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        ),
        slice(
            "web",
            ("http", 8080),
            &[("10.244.1.5", "n1", true), ("10.244.2.7", "n2", true)],
        ),
        svc(
            "far",
            json!({"type": "NodePort", "clusterIP": "10.96.0.15", "externalTrafficPolicy": "Local",
                          "ports": [{"name": "http", "port": 80, "nodePort": 30085}]}),
        ),
        slice("far", ("http", 8080), &[("10.244.2.9", "n2", true)]),
    ]);
    let node_port = d.node_ports[&ProtoPort(Proto::Tcp, 30080)].value;
    assert_eq!(node_port.0 & MASQ_BIT, 0, "eTP Local is not masqueraded");
    let cluster = d.service_ips[&IpPort("10.96.0.10".parse().expect("ip"), Proto::Tcp, 80)].value;
    assert_ne!(cluster, node_port, "cluster traffic uses all endpoints");
    let local: Vec<_> = d
        .backends
        .iter()
        .filter(|(b, _)| b.0 == node_port)
        .map(|(_, e)| e.value.to_string())
        .collect();
    assert_eq!(local, ["10.244.1.5 . 8080"]);
    assert_eq!(
        &*d.backends[&Bucket(node_port, 0)].comment,
        "default/web:http (local)"
    );
    // No local endpoint: NodePort traffic is dropped, ClusterIP traffic still works.
    assert_eq!(
        d.no_endpoint_node_ports[&ProtoPort(Proto::Tcp, 30085)].value,
        Verdict::Drop
    );
    assert!(d
        .service_ips
        .contains_key(&IpPort("10.96.0.15".parse().expect("ip"), Proto::Tcp, 80)));
}

#[test]
fn internal_traffic_policy_local() {
    check(
        &[
            svc(
                "web",
                json!({"clusterIP": "10.96.0.10", "internalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 80}]}),
            ),
            slice(
                "web",
                ("http", 8080),
                &[("10.244.1.5", "n1", true), ("10.244.2.7", "n2", true)],
            ),
        ],
        r#"
add element ip kins_proxy service_ips {
	10.96.0.10 . tcp . 80 comment "default/web:http" : #1
}
add element ip kins_proxy backends {
	#1 . 0 comment "default/web:http (local)" : 10.244.1.5 . 8080
}
add element ip kins_proxy hairpin {
	10.244.1.5 . 10.244.1.5 comment "local endpoint"
}
"#,
    );
}

#[test]
fn load_balancer_with_source_ranges() {
    check(
        &[
            {
                let mut s = svc(
                    "lb",
                    json!({"type": "LoadBalancer", "clusterIP": "10.96.0.20",
                    "loadBalancerSourceRanges": ["192.168.0.0/16", " 10.0.0.0/8"],
                    "ports": [{"name": "https", "port": 443, "nodePort": 30443}]}),
                );
                s["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}});
                s
            },
            slice("lb", ("https", 8443), &[("10.244.2.7", "n2", true)]),
        ],
        r#"
add element ip kins_proxy service_ips {
	10.96.0.20 . tcp . 443 comment "default/lb:https" : #1
}
add element ip kins_proxy external_ips {
	203.0.113.7 . tcp . 443 comment "default/lb:https" : #1+masq
}
add element ip kins_proxy node_ports {
	tcp . 30443 comment "default/lb:https" : #1+masq
}
add element ip kins_proxy backends {
	#1 . 0 comment "default/lb:https" : 10.244.2.7 . 8443
}
add element ip kins_proxy lb_restricted {
	203.0.113.7 . tcp . 443 comment "default/lb:https"
}
add element ip kins_proxy lb_allowed {
	203.0.113.7 . tcp . 443 . 10.0.0.0/8 comment "default/lb:https",
	203.0.113.7 . tcp . 443 . 192.168.0.0/16 comment "default/lb:https"
}
"#,
    );
}

#[test]
fn session_affinity_gets_a_timeout_class() {
    let objects = [
        svc(
            "a",
            json!({"clusterIP": "10.96.0.30", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
        ),
        svc(
            "b",
            json!({"clusterIP": "10.96.0.31", "sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}),
        ),
        slice("a", ("", 8080), &[("10.244.2.7", "n2", true)]),
        slice("b", ("", 8080), &[("10.244.2.8", "n2", true)]),
    ];
    let d = state(&objects);
    assert_eq!(d.shape.affinity_timeouts, [60, 10800]);
    let class = |ip: &str| {
        d.service_ips[&IpPort(ip.parse().expect("ip"), Proto::Tcp, 80)]
            .value
            .0
            & AFFINITY_MASK
    };
    assert_eq!((class("10.96.0.31"), class("10.96.0.30")), (1 << 7, 2 << 7));
    let script = full_script(&d);
    assert!(script.contains("ct status dnat meta mark & 0x380 == 0x80 update @affinity { ip saddr . (meta mark & 0x0fffffff) timeout 60s : ip daddr . th dport }"), "{script}");
    assert!(script.contains(
        "== 0x100 update @affinity { ip saddr . (meta mark & 0x0fffffff) timeout 10800s"
    ));
}

#[test]
fn big_groups_use_power_of_two_buckets() {
    assert_eq!(buckets(1), (1, 1));
    assert_eq!(buckets(64), (64, 64));
    assert_eq!(buckets(65), (2048, 65));
    assert_eq!(buckets(300), (8192, 67));
    assert_eq!(buckets(100_000), (16384, 68));
    let eps: Vec<(String, &str, bool)> = (0..100)
        .map(|i| (format!("10.244.3.{i}"), "n2", true))
        .collect();
    let eps: Vec<(&str, &str, bool)> = eps.iter().map(|(a, n, r)| (a.as_str(), *n, *r)).collect();
    let d = state(&[
        svc(
            "big",
            json!({"clusterIP": "10.96.0.40", "ports": [{"port": 80}]}),
        ),
        slice("big", ("", 8080), &eps),
    ]);
    assert_eq!(d.backends.len(), 2048);
    let mut per: std::collections::BTreeMap<String, usize> = Default::default();
    for e in d.backends.values() {
        *per.entry(e.value.to_string()).or_default() += 1;
    }
    let (min, max) = (per.values().min(), per.values().max());
    assert_eq!((per.len(), min, max), (100, Some(&20), Some(&21)));
}

#[test]
fn ids_are_stable_when_other_services_change() {
    let mut objects: Vec<Value> = (0..50)
        .flat_map(|i| {
            let name = format!("s{i}");
            [
                svc(
                    &name,
                    json!({"clusterIP": format!("10.96.1.{i}"), "ports": [{"port": 80}]}),
                ),
                slice(&name, ("", 8080), &[("10.244.2.7", "n2", true)]),
            ]
        })
        .collect();
    let before = state(&objects);
    objects.push(svc(
        "new",
        json!({"clusterIP": "10.96.2.1", "ports": [{"port": 80}]}),
    ));
    objects.push(slice(
        "new",
        ("", 8080),
        &[("10.244.2.9", "n2", true), ("10.244.2.10", "n2", true)],
    ));
    let after = state(&objects);
    let diff = diff_script(&before, &after).expect("something changed");
    let id = after.service_ips[&IpPort("10.96.2.1".parse().expect("ip"), Proto::Tcp, 80)].value;
    assert_eq!(
        diff,
        format!(
            "add element ip kins_proxy service_ips {{ 10.96.2.1 . tcp . 80 comment \"default/new\" : {id} }}\n\
             add element ip kins_proxy backends {{ {id} . 0 comment \"default/new\" : 10.244.2.9 . 8080, {id} . 1 comment \"default/new\" : 10.244.2.10 . 8080 }}\n"
        )
    );
    assert_eq!(diff_script(&after, &after), None);
}

#[test]
fn diff_removes_an_endpoint() {
    let web = svc(
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}),
    );
    let before = state(&[
        web.clone(),
        slice(
            "web",
            ("http", 8080),
            &[("10.244.2.7", "n2", true), ("10.244.2.8", "n2", true)],
        ),
    ]);
    let after = state(&[
        web,
        slice("web", ("http", 8080), &[("10.244.2.7", "n2", true)]),
    ]);
    let old = before.service_ips.values().next().expect("one").value;
    let new = after.service_ips.values().next().expect("one").value;
    // The id's pick class is the endpoint count, so the group id changes with it.
    assert_eq!(
        diff_script(&before, &after).expect("changed"),
        format!(
            "delete element ip kins_proxy service_ips {{ 10.96.0.10 . tcp . 80 }}\n\
             delete element ip kins_proxy backends {{ {old} . 0, {old} . 1 }}\n\
             add element ip kins_proxy service_ips {{ 10.96.0.10 . tcp . 80 comment \"default/web:http\" : {new} }}\n\
             add element ip kins_proxy backends {{ {new} . 0 comment \"default/web:http\" : 10.244.2.7 . 8080 }}\n"
        )
    );
}

#[test]
fn a_changed_shape_rewrites_the_table() {
    let a = state(&[]);
    let mut b = a.clone();
    b.shape.affinity_timeouts = vec![60];
    let script = diff_script(&a, &b).expect("changed");
    assert!(script
        .starts_with("table ip kins_proxy\ndelete table ip kins_proxy\ntable ip kins_proxy {"));
}

#[test]
fn the_table_has_a_fixed_set_of_chains() {
    let script = full_script(&state(&[]));
    let chains: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .collect();
    assert_eq!(chains.len(), 10 + 68, "{chains:?}");
    for line in [
        "\t\tip saddr != 10.244.0.0/16 meta mark set ip daddr . meta l4proto . th dport map @service_ips meta mark set meta mark | 0x40000000 goto endpoint",
        "\t\tfib daddr type local ip daddr != 127.0.0.0/8 meta mark set meta l4proto . th dport map @node_ports goto endpoint",
        "\t\tmeta l4proto { tcp, udp } dnat ip to (meta mark & 0x0fffffff) . numgen random mod 5 map @backends",
        "\t\tip daddr 10.96.0.0/12 goto reject_packet",
    ] {
        assert!(script.lines().any(|l| l == line), "missing {line:?} in\n{script}");
    }
}

#[test]
fn the_first_sync_is_full_then_diffs_and_full_again_after_a_failure() {
    let nft = Arc::new(RecordingNft::default());
    let mut proxy = run::Proxy::new(nft.clone(), Arc::new(RecordingConntrack::default()));
    let web = svc(
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
    );
    let one = state(&[
        web.clone(),
        slice("web", ("", 8080), &[("10.244.2.7", "n2", true)]),
    ]);
    let two = state(&[web, slice("web", ("", 8080), &[("10.244.2.8", "n2", true)])]);
    assert!(proxy.sync(one.clone()).expect("applies"));
    assert!(!proxy.sync(one.clone()).expect("nothing to do"));
    nft.fail_next(1);
    assert!(proxy.sync(two.clone()).is_err());
    assert!(proxy.sync(two.clone()).expect("applies"));
    let kinds: Vec<bool> = nft
        .scripts()
        .iter()
        .map(|s| s.starts_with("table ip kins_proxy\n"))
        .collect();
    assert_eq!(kinds, [true, false, true], "full, diff (failed), full");
    assert_eq!(proxy.applied(), Some(&two));
    remove_table(nft.as_ref()).expect("records");
    assert_eq!(
        nft.scripts().last().map(String::as_str),
        Some("table ip kins_proxy\ndelete table ip kins_proxy\n")
    );
}

/// A UDP slice: `slice` with its port's protocol switched.
fn udp(mut slice: Value) -> Value {
    slice["ports"][0]["protocol"] = json!("UDP");
    slice
}

fn check_stale(old: &[Value], new: &[Value], expect: &[Flush]) {
    assert_eq!(stale_udp(&state(old), &state(new)), expect);
}

#[test]
fn stale_udp_flows_are_those_of_removed_endpoints_and_of_frontends_that_had_none() {
    let dns = |name: &str, ip: &str, nodeport: bool| {
        let mut spec = json!({"clusterIP": ip, "ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}]});
        if nodeport {
            spec["type"] = json!("NodePort");
            spec["ports"][0]["nodePort"] = json!(30053);
        }
        svc(name, spec)
    };
    let eps = |name: &str, ips: &[&'static str]| {
        let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (*ip, "n2", true)).collect();
        udp(slice(name, ("", 5353), &eps))
    };
    let a = "10.244.2.7";
    let b = "10.244.2.8";
    let ip = |s: &str| s.parse().expect("literal");
    let cip = Some(ip("10.96.0.10"));
    let gone = |dst, endpoint: &str| Flush::Translated {
        dst,
        port: 53,
        endpoint: ip(endpoint),
    };
    // An endpoint goes: its flows through the service go.
    check_stale(
        &[dns("dns", "10.96.0.10", false), eps("dns", &[a, b])],
        &[dns("dns", "10.96.0.10", false), eps("dns", &[a])],
        &[gone(cip, b)],
    );
    // Nothing removed: nothing flushed.
    check_stale(
        &[dns("dns", "10.96.0.10", false), eps("dns", &[a])],
        &[dns("dns", "10.96.0.10", false), eps("dns", &[a, b])],
        &[],
    );
    // The endpoint leaves one service but stays behind another: only the first's flows go.
    let other = || [dns("dns2", "10.96.0.11", false), eps("dns2", &[a])];
    let mut before = vec![dns("dns", "10.96.0.10", false), eps("dns", &[a])];
    before.extend(other());
    let mut after = vec![dns("dns", "10.96.0.10", false), eps("dns", &[])];
    after.extend(other());
    check_stale(&before, &after, &[gone(cip, a)]);
    // A NodePort's flows go with its endpoint too (on any local address).
    check_stale(
        &[dns("dns", "10.96.0.10", true), eps("dns", &[a, b])],
        &[dns("dns", "10.96.0.10", true), eps("dns", &[b])],
        &[
            Flush::Translated {
                dst: None,
                port: 30053,
                endpoint: ip(a),
            },
            gone(cip, a),
        ],
    );
    // The service had none: the flows made while it refused go.
    check_stale(
        &[dns("dns", "10.96.0.10", true), eps("dns", &[])],
        &[dns("dns", "10.96.0.10", true), eps("dns", &[a])],
        &[
            Flush::Untranslated {
                dst: None,
                port: 30053,
            },
            Flush::Untranslated { dst: cip, port: 53 },
        ],
    );
    // The service goes with its endpoints.
    check_stale(
        &[dns("dns", "10.96.0.10", false), eps("dns", &[a])],
        &[],
        &[gone(cip, a)],
    );
    // TCP endpoints are left to TCP.
    let web = svc(
        "web",
        json!({"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}),
    );
    check_stale(
        &[web.clone(), slice("web", ("", 8080), &[(a, "n2", true)])],
        &[web, slice("web", ("", 8080), &[])],
        &[],
    );
}

#[test]
fn a_sync_flushes_what_the_change_left_stale() {
    let nft = Arc::new(RecordingNft::default());
    let ct = Arc::new(RecordingConntrack::default());
    let mut proxy = run::Proxy::new(nft, ct.clone());
    let dns = svc(
        "dns",
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}),
    );
    let one = state(&[
        dns.clone(),
        udp(slice("dns", ("", 53), &[("10.244.2.7", "n2", true)])),
    ]);
    let two = state(&[
        dns,
        udp(slice("dns", ("", 53), &[("10.244.2.8", "n2", true)])),
    ]);
    proxy.sync(one).expect("applies");
    assert_eq!(
        ct.flushed(),
        [],
        "the first sync has nothing to compare with"
    );
    proxy.sync(two).expect("applies");
    let gone = Flush::Translated {
        dst: Some("10.96.0.10".parse().expect("literal")),
        port: 53,
        endpoint: "10.244.2.7".parse().expect("literal"),
    };
    assert_eq!(ct.flushed(), [gone]);
    assert_eq!(
        gone.args().join(" "),
        "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.2.7"
    );
    assert_eq!(
        Flush::Untranslated {
            dst: None,
            port: 30053
        }
        .args()
        .join(" "),
        "-D -p udp --orig-port-dst 30053"
    );
}
