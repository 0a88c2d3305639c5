//! Table tests of the pure desired state: endpoints from pods, the legacy Endpoints,
//! mirroring, and the slice plans (applied to a fake API to count writes).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use serde_json::{json, Value};

use super::desired::{self, Group, Plan, Template};

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// The Service `web` in `default` selecting `app=web`, port http 80 -> 8080, changed by
/// `extra` (merged).
fn svc(extra: Value) -> Service {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"tier": "front"}},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("test service")
}

/// A pod `name` of `default` labelled `app=web`, with `ip` (none if empty), Running,
/// Ready as said, on node n1, changed by `extra` (merged).
fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    if !ip.is_empty() {
        v["status"]["podIP"] = json!(ip);
    }
    merge(&mut v, extra);
    serde_json::from_value(v).expect("test pod")
}

fn flag(b: Option<bool>, c: char) -> char {
    if b == Some(true) {
        c
    } else {
        '-'
    }
}

/// `ip/pod:RST` (ready, serving, terminating) or `ip:R` for mirrored endpoints.
fn show_endpoint(e: &Endpoint) -> String {
    let c = e.conditions.clone().unwrap_or_default();
    let pod = e
        .target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .map(|n| format!("/{n}"))
        .unwrap_or_default();
    let mut flags = String::from(flag(c.ready, 'R'));
    if c.serving.is_some() || c.terminating.is_some() {
        flags.push(flag(c.serving, 'S'));
        flags.push(flag(c.terminating, 'T'));
    }
    format!("{}{pod}:{flags}", e.addresses.join(","))
}

fn show_ports(ports: &[k8s_openapi::api::discovery::v1::EndpointPort]) -> String {
    ports
        .iter()
        .map(|p| {
            format!(
                "{}={}/{}{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or(""),
                p.app_protocol
                    .as_deref()
                    .map(|a| format!("({a})"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn show_group(g: &Group) -> String {
    let eps: Vec<String> = g.endpoints.iter().map(show_endpoint).collect();
    format!(
        "{} [{}] {}",
        g.address_type,
        show_ports(&g.ports),
        eps.join(" ")
    )
}

/// The one place the pod → endpoints function is exercised.
fn check(svc: &Service, pods: &[Pod], want: &[&str]) {
    let got: Vec<String> = desired::pod_groups(svc, pods)
        .iter()
        .map(show_group)
        .collect();
    assert_eq!(got, want, "service {:?}", svc.spec);
}

#[test]
fn endpoints_from_pods() {
    let deleting = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}});
    let cases: Vec<(&str, Service, Vec<Pod>, Vec<&str>)> = vec![
        ("no pods", svc(json!({})), vec![], vec![]),
        (
            "ready and not ready",
            svc(json!({})),
            vec![
                pod("p2", "10.0.0.2", false, json!({})),
                pod("p1", "10.0.0.1", true, json!({})),
            ],
            vec!["IPv4 [http=8080/TCP] 10.0.0.1/p1:RS- 10.0.0.2/p2:---"],
        ),
        (
            "terminating pods are kept, not ready",
            svc(json!({})),
            vec![
                pod("p1", "10.0.0.1", true, deleting.clone()),
                pod("p2", "10.0.0.2", false, deleting.clone()),
            ],
            vec!["IPv4 [http=8080/TCP] 10.0.0.1/p1:-ST 10.0.0.2/p2:--T"],
        ),
        (
            "publishNotReadyAddresses: always ready, serving as the pod is",
            svc(json!({"spec": {"publishNotReadyAddresses": true}})),
            vec![
                pod("p1", "10.0.0.1", false, json!({})),
                pod("p2", "10.0.0.2", true, deleting.clone()),
            ],
            vec!["IPv4 [http=8080/TCP] 10.0.0.1/p1:R-- 10.0.0.2/p2:RST"],
        ),
        (
            "skipped: no IP, other namespace, finished, not selected, IPv6 only",
            svc(json!({})),
            vec![
                pod("noip", "", true, json!({})),
                pod(
                    "other",
                    "10.0.0.3",
                    true,
                    json!({"metadata": {"namespace": "kube-system"}}),
                ),
                pod(
                    "done",
                    "10.0.0.4",
                    true,
                    json!({"status": {"phase": "Succeeded"}}),
                ),
                pod(
                    "failed",
                    "10.0.0.5",
                    true,
                    json!({"status": {"phase": "Failed"}}),
                ),
                pod(
                    "db",
                    "10.0.0.6",
                    true,
                    json!({"metadata": {"labels": {"app": "db"}}}),
                ),
                pod("v6", "fd00::1", true, json!({})),
                pod("ok", "10.0.0.7", true, json!({})),
            ],
            vec!["IPv4 [http=8080/TCP] 10.0.0.7/ok:RS-"],
        ),
        (
            "named targetPort resolved per pod: two port sets",
            svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}})),
            vec![
                pod(
                    "a",
                    "10.0.0.1",
                    true,
                    json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": 8080}]}]}}),
                ),
                pod(
                    "b",
                    "10.0.0.2",
                    true,
                    json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": 9090}]}]}}),
                ),
                pod(
                    "c",
                    "10.0.0.3",
                    true,
                    json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": 8080}]}]}}),
                ),
                // No port of that name: the endpoint has no ports.
                pod(
                    "d",
                    "10.0.0.4",
                    true,
                    json!({"spec": {"containers": [{"name": "c", "image": "x"}]}}),
                ),
            ],
            vec![
                "IPv4 [] 10.0.0.4/d:RS-",
                "IPv4 [http=8080/TCP] 10.0.0.1/a:RS- 10.0.0.3/c:RS-",
                "IPv4 [http=9090/TCP] 10.0.0.2/b:RS-",
            ],
        ),
        (
            "multiport, TCP and UDP on one port, appProtocol, default target",
            svc(json!({"spec": {"ports": [
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": 5353, "protocol": "TCP"},
                {"name": "metrics", "port": 9153, "appProtocol": "http"},
            ]}})),
            vec![pod("p1", "10.0.0.1", true, json!({}))],
            vec!["IPv4 [dns=5353/UDP,dns-tcp=5353/TCP,metrics=9153/TCP(http)] 10.0.0.1/p1:RS-"],
        ),
        (
            "no selector: none",
            svc(json!({"spec": {"selector": null}})),
            vec![pod("p1", "10.0.0.1", true, json!({}))],
            vec![],
        ),
        (
            "ExternalName: none",
            svc(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})),
            vec![pod("p1", "10.0.0.1", true, json!({}))],
            vec![],
        ),
    ];
    for (what, s, pods, want) in cases {
        eprintln!("case: {what}");
        check(&s, &pods, &want);
    }
}

#[test]
fn endpoint_details() {
    let s = svc(json!({}));
    let p = pod(
        "p1",
        "10.0.0.1",
        true,
        json!({"spec": {"hostname": "h1", "subdomain": "web"}}),
    );
    let g = desired::pod_groups(&s, [&p]);
    let e = serde_json::to_value(&g[0].endpoints[0]).expect("json");
    assert_eq!(
        e,
        json!({
            "addresses": ["10.0.0.1"],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "hostname": "h1",
            "nodeName": "n1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": "p1", "uid": "uid-p1"},
        })
    );
    // Another subdomain: no hostname.
    let p = pod(
        "p1",
        "10.0.0.1",
        true,
        json!({"spec": {"hostname": "h1", "subdomain": "x"}}),
    );
    assert_eq!(desired::pod_groups(&s, [&p])[0].endpoints[0].hostname, None);
}

/// A fake API for slices: applies plans, names new slices `web-<n>`, counts writes.
#[derive(Default)]
struct FakeApi {
    slices: Vec<EndpointSlice>,
    next: u32,
    rv: u32,
    writes: Vec<String>,
}

impl FakeApi {
    fn apply(&mut self, plan: Plan) {
        for mut s in plan.create {
            self.next += 1;
            self.rv += 1;
            let name = format!(
                "{}{}",
                s.metadata.generate_name.clone().unwrap_or_default(),
                self.next
            );
            self.writes.push(format!("create {name}"));
            s.metadata.name = Some(name);
            s.metadata.resource_version = Some(self.rv.to_string());
            self.slices.push(s);
        }
        for mut s in plan.update {
            self.rv += 1;
            let name = s.metadata.name.clone().expect("updates have names");
            self.writes.push(format!("update {name}"));
            s.metadata.resource_version = Some(self.rv.to_string());
            let i = self
                .slices
                .iter()
                .position(|o| o.metadata.name.as_ref() == Some(&name))
                .expect("updated slice exists");
            self.slices[i] = s;
        }
        for name in plan.delete {
            self.writes.push(format!("delete {name}"));
            self.slices
                .retain(|s| s.metadata.name.as_ref() != Some(&name));
        }
    }

    /// Plans and applies one round; returns the writes it made.
    fn round(&mut self, t: &Template, groups: Vec<Group>) -> Vec<String> {
        self.writes.clear();
        let refs: Vec<&EndpointSlice> = self.slices.iter().collect();
        let plan = desired::plan(t, groups, &refs);
        self.apply(plan);
        std::mem::take(&mut self.writes)
    }

    /// `name: [ports] endpoints` for every slice, by name.
    fn show(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .slices
            .iter()
            .map(|s| {
                let eps: Vec<String> = s.endpoints.iter().map(show_endpoint).collect();
                format!(
                    "{}: [{}] {}",
                    s.metadata.name.as_deref().unwrap_or(""),
                    show_ports(s.ports.as_deref().unwrap_or_default()),
                    eps.join(" ")
                )
                .trim_end()
                .to_string()
            })
            .collect();
        out.sort();
        out
    }
}

#[test]
fn slices_follow_pods_with_few_writes() {
    let s = svc(json!({}));
    let t = desired::service_template(&s);
    let p1 = pod("p1", "10.0.0.1", false, json!({}));
    let p1_ready = pod("p1", "10.0.0.1", true, json!({}));
    let p2 = pod("p2", "10.0.0.2", true, json!({}));
    let other_port = pod(
        "p3",
        "10.0.0.3",
        true,
        json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]}}),
    );
    let mut api = FakeApi::default();
    // (pods, writes, slices after)
    let steps: Vec<(Vec<&Pod>, Vec<&str>, Vec<&str>)> = vec![
        (vec![], vec!["create web-1"], vec!["web-1: []"]),
        (vec![], vec![], vec!["web-1: []"]),
        // The placeholder is reused for the first endpoints.
        (
            vec![&p1],
            vec!["update web-1"],
            vec!["web-1: [http=8080/TCP] 10.0.0.1/p1:---"],
        ),
        (
            vec![&p1],
            vec![],
            vec!["web-1: [http=8080/TCP] 10.0.0.1/p1:---"],
        ),
        (
            vec![&p1_ready],
            vec!["update web-1"],
            vec!["web-1: [http=8080/TCP] 10.0.0.1/p1:RS-"],
        ),
        (
            vec![&p1_ready, &p2],
            vec!["update web-1"],
            vec!["web-1: [http=8080/TCP] 10.0.0.1/p1:RS- 10.0.0.2/p2:RS-"],
        ),
        (
            vec![&p2, &p1_ready, &other_port],
            vec!["update web-1"],
            vec!["web-1: [http=8080/TCP] 10.0.0.1/p1:RS- 10.0.0.2/p2:RS- 10.0.0.3/p3:RS-"],
        ),
        (
            vec![&p1_ready],
            vec!["update web-1"],
            vec!["web-1: [http=8080/TCP] 10.0.0.1/p1:RS-"],
        ),
        (vec![], vec!["update web-1"], vec!["web-1: []"]),
        (vec![], vec![], vec!["web-1: []"]),
    ];
    for (i, (pods, writes, after)) in steps.into_iter().enumerate() {
        let got = api.round(&t, desired::pod_groups(&s, pods));
        assert_eq!(got, writes, "step {i}");
        assert_eq!(api.show(), after, "step {i}");
    }
    let web = &api.slices[0];
    let meta = serde_json::to_value(&web.metadata).expect("json");
    assert_eq!(
        meta,
        json!({
            "name": "web-1", "generateName": "web-", "namespace": "default", "resourceVersion": "7",
            "labels": {"tier": "front", "kubernetes.io/service-name": "web",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid",
                                 "controller": true, "blockOwnerDeletion": true}],
        })
    );
    assert_eq!(web.address_type, "IPv4");
}

#[test]
fn port_sets_get_their_own_slices() {
    let s = svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}));
    let t = desired::service_template(&s);
    let on = |name: &str, ip: &str, port: i32| {
        pod(
            name,
            ip,
            true,
            json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": port}]}]}}),
        )
    };
    let a = on("a", "10.0.0.1", 8080);
    let b = on("b", "10.0.0.2", 9090);
    let b2 = on("b", "10.0.0.2", 8080);
    let mut api = FakeApi::default();
    assert_eq!(
        api.round(&t, desired::pod_groups(&s, [&a, &b])),
        ["create web-1", "create web-2"]
    );
    assert_eq!(
        api.show(),
        [
            "web-1: [http=8080/TCP] 10.0.0.1/a:RS-",
            "web-2: [http=9090/TCP] 10.0.0.2/b:RS-"
        ]
    );
    // b moves to 8080: it joins a's slice, and its old one goes.
    assert_eq!(
        api.round(&t, desired::pod_groups(&s, [&a, &b2])),
        ["update web-1", "delete web-2"]
    );
    assert_eq!(
        api.show(),
        ["web-1: [http=8080/TCP] 10.0.0.1/a:RS- 10.0.0.2/b:RS-"]
    );
    // The Service's port changes for everyone: the slice is rewritten, not replaced.
    let s2 = svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 7070}]}}));
    assert_eq!(
        api.round(&t, desired::pod_groups(&s2, [&a, &b2])),
        ["update web-1"]
    );
    assert_eq!(
        api.show(),
        ["web-1: [http=7070/TCP] 10.0.0.1/a:RS- 10.0.0.2/b:RS-"]
    );
}

#[test]
fn many_endpoints_split_into_slices() {
    let s = svc(json!({}));
    let t = desired::service_template(&s);
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                true,
                json!({}),
            )
        })
        .collect();
    let mut api = FakeApi::default();
    let writes = api.round(&t, desired::pod_groups(&s, &pods));
    assert_eq!(writes, ["create web-1", "create web-2", "create web-3"]);
    let sizes: Vec<usize> = api.slices.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    // Nothing changed: nothing written.
    assert!(api.round(&t, desired::pod_groups(&s, &pods)).is_empty());
    // One pod goes: only its slice is written.
    let gone = api.slices[1].endpoints[7]
        .target_ref
        .clone()
        .and_then(|r| r.name)
        .expect("name");
    let fewer: Vec<Pod> = pods
        .iter()
        .filter(|p| p.metadata.name.as_ref() != Some(&gone))
        .cloned()
        .collect();
    assert_eq!(
        api.round(&t, desired::pod_groups(&s, &fewer)),
        ["update web-2"]
    );
    // Two new pods fill the free room before any slice is made.
    let mut more = fewer.clone();
    more.push(pod("n1", "10.1.0.1", true, json!({})));
    more.push(pod("n2", "10.1.0.2", true, json!({})));
    assert_eq!(
        api.round(&t, desired::pod_groups(&s, &more)),
        ["update web-2", "update web-3"]
    );
    let sizes: Vec<usize> = api.slices.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 51]);
    // Every pod is in exactly one slice.
    let mut all: Vec<String> = api
        .slices
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.addresses[0].clone()))
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 251);
    // All gone: one placeholder stays.
    assert_eq!(
        api.round(&t, desired::pod_groups(&s, [])),
        ["update web-1", "delete web-2", "delete web-3"]
    );
    assert_eq!(api.show(), ["web-1: []"]);
}

#[test]
fn slices_of_others_changed_are_repaired() {
    let s = svc(json!({}));
    let t = desired::service_template(&s);
    let p1 = pod("p1", "10.0.0.1", true, json!({}));
    let mut api = FakeApi::default();
    api.round(&t, desired::pod_groups(&s, [&p1]));
    // Someone drops a label and adds an endpoint; a duplicate slice appears.
    api.slices[0]
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove("tier");
    let mut dup = api.slices[0].clone();
    dup.metadata.name = Some("web-x".into());
    api.slices.push(dup);
    assert_eq!(
        api.round(&t, desired::pod_groups(&s, [&p1])),
        ["update web-1", "delete web-x"]
    );
    assert_eq!(api.show(), ["web-1: [http=8080/TCP] 10.0.0.1/p1:RS-"]);
    assert!(api.round(&t, desired::pod_groups(&s, [&p1])).is_empty());
}

fn show_endpoints(e: &Endpoints) -> Vec<String> {
    e.subsets
        .iter()
        .flatten()
        .map(|s| {
            let ips = |a: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
                a.iter()
                    .flatten()
                    .map(|a| a.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}={}/{}",
                        p.name.as_deref().unwrap_or(""),
                        p.port,
                        p.protocol.as_deref().unwrap_or("")
                    )
                })
                .collect();
            format!(
                "[{}] ready={} notReady={}",
                ports.join(","),
                ips(&s.addresses),
                ips(&s.not_ready_addresses)
            )
        })
        .collect()
}

#[test]
fn legacy_endpoints() {
    let deleting = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}});
    let named =
        svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}));
    let on = |name: &str, ip: &str, port: i32| {
        pod(
            name,
            ip,
            true,
            json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": port}]}]}}),
        )
    };
    let cases: Vec<(&str, Service, Vec<Pod>, Vec<&str>)> = vec![
        ("none", svc(json!({})), vec![], vec![]),
        (
            "ready, not ready, terminating left out",
            svc(json!({})),
            vec![
                pod("p3", "10.0.0.3", true, deleting.clone()),
                pod("p2", "10.0.0.2", false, json!({})),
                pod("p1", "10.0.0.1", true, json!({})),
                pod(
                    "p4",
                    "10.0.0.4",
                    true,
                    json!({"status": {"phase": "Failed"}}),
                ),
            ],
            vec!["[http=8080/TCP] ready=10.0.0.1 notReady=10.0.0.2"],
        ),
        (
            "publishNotReadyAddresses: all ready, terminating too",
            svc(json!({"spec": {"publishNotReadyAddresses": true}})),
            vec![
                pod("p2", "10.0.0.2", false, json!({})),
                pod("p3", "10.0.0.3", true, deleting.clone()),
            ],
            vec!["[http=8080/TCP] ready=10.0.0.2,10.0.0.3 notReady="],
        ),
        (
            "named ports: one subset per port set",
            named,
            vec![on("a", "10.0.0.1", 8080), on("b", "10.0.0.2", 9090)],
            vec![
                "[http=8080/TCP] ready=10.0.0.1 notReady=",
                "[http=9090/TCP] ready=10.0.0.2 notReady=",
            ],
        ),
        (
            "headless without ports: addresses only",
            svc(json!({"spec": {"clusterIP": "None", "ports": null}})),
            vec![pod("p1", "10.0.0.1", true, json!({}))],
            vec!["[] ready=10.0.0.1 notReady="],
        ),
        (
            "not headless without ports: nothing",
            svc(json!({"spec": {"ports": null}})),
            vec![pod("p1", "10.0.0.1", true, json!({}))],
            vec![],
        ),
    ];
    for (what, s, pods, want) in cases {
        let got = desired::legacy_endpoints(&s, &pods);
        assert_eq!(show_endpoints(&got), want, "{what}");
    }

    let s = svc(json!({"spec": {"clusterIP": "None"}}));
    let e = desired::legacy_endpoints(&s, [&pod("p1", "10.0.0.1", true, json!({}))]);
    assert_eq!(
        serde_json::to_value(&e).expect("json"),
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default", "labels": {
                "tier": "front", "service.kubernetes.io/headless": "",
                "endpoints.kubernetes.io/managed-by": "endpoint-controller"}},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.1", "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "p1", "uid": "uid-p1"}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }],
        })
    );
}

#[test]
fn legacy_endpoints_are_capped() {
    let s = svc(json!({}));
    let pods: Vec<Pod> = (0..1100)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                i % 2 == 0,
                json!({}),
            )
        })
        .collect();
    let e = desired::legacy_endpoints(&s, &pods);
    let subset = &e.subsets.as_ref().expect("subsets")[0];
    assert_eq!(subset.addresses.as_ref().map(Vec::len), Some(550));
    assert_eq!(subset.not_ready_addresses.as_ref().map(Vec::len), Some(450));
    assert_eq!(
        e.metadata.annotations,
        Some(BTreeMap::from([(
            desired::ANNOTATION_OVER_CAPACITY.to_string(),
            "truncated".to_string()
        )]))
    );
}

#[test]
fn legacy_endpoints_are_written_only_when_changed() {
    let s = svc(json!({}));
    let p1 = pod("p1", "10.0.0.1", true, json!({}));
    let want = desired::legacy_endpoints(&s, [&p1]);
    // Absent: created as is.
    assert_eq!(
        desired::endpoints_write(None, want.clone()),
        Some(want.clone())
    );
    // As stored (with server fields and a foreign annotation): unchanged.
    let mut stored = want.clone();
    stored.metadata.resource_version = Some("7".into());
    stored.metadata.uid = Some("u".into());
    stored.metadata.annotations = Some(BTreeMap::from([("note".to_string(), "x".to_string())]));
    assert_eq!(desired::endpoints_write(Some(&stored), want), None);
    // A pod turns not ready: written over the stored object, keeping its annotation.
    let p1 = pod("p1", "10.0.0.1", false, json!({}));
    let next = desired::endpoints_write(Some(&stored), desired::legacy_endpoints(&s, [&p1]))
        .expect("changed");
    assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(next.metadata.annotations, stored.metadata.annotations);
    assert_eq!(
        show_endpoints(&next),
        ["[http=8080/TCP] ready= notReady=10.0.0.1"]
    );
}

fn endpoints(v: Value) -> Endpoints {
    let mut base = json!({"metadata": {"name": "ext", "namespace": "default", "uid": "ep-uid"}});
    merge(&mut base, v);
    serde_json::from_value(base).expect("test endpoints")
}

#[test]
fn mirroring() {
    let ep = endpoints(json!({
        "metadata": {"labels": {"team": "a"}, "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{}", "note": "x"}},
        "subsets": [
            {"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2", "nodeName": "n1"}],
             "notReadyAddresses": [{"ip": "192.0.2.3"}],
             "ports": [{"name": "http", "port": 80}]},
            {"addresses": [{"ip": "192.0.2.9"}, {"ip": "not-an-ip"}, {"ip": "2001:db8::1"}],
             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            {"addresses": [{"ip": "192.0.2.1"}], "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
        ],
    }));
    let got: Vec<String> = desired::mirror_groups(&ep).iter().map(show_group).collect();
    assert_eq!(
        got,
        [
            "IPv4 [dns=53/UDP] 192.0.2.1:R",
            "IPv4 [http=80/TCP] 192.0.2.1:R 192.0.2.2:R 192.0.2.3:- 192.0.2.9:R",
            "IPv6 [http=80/TCP] 2001:db8::1:R",
        ]
    );
    let t = desired::mirror_template(&ep);
    let mut api = FakeApi::default();
    assert_eq!(api.round(&t, desired::mirror_groups(&ep)).len(), 3);
    assert!(api.round(&t, desired::mirror_groups(&ep)).is_empty());
    let meta = serde_json::to_value(&api.slices[0].metadata).expect("json");
    assert_eq!(
        meta["labels"],
        json!({"team": "a", "kubernetes.io/service-name": "ext",
        "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"})
    );
    assert_eq!(meta["annotations"], json!({"note": "x"}));
    assert_eq!(
        meta["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Endpoints", "name": "ext",
        "uid": "ep-uid", "controller": true, "blockOwnerDeletion": true}])
    );
    // No addresses: no slices at all (no placeholder when mirroring).
    let empty = endpoints(json!({}));
    assert_eq!(
        api.round(&t, desired::mirror_groups(&empty)),
        ["delete ext-1", "delete ext-2", "delete ext-3"]
    );

    // Whether to mirror at all.
    let selectorless = svc(json!({"metadata": {"name": "ext"}, "spec": {"selector": null}}));
    let selecting = svc(json!({"metadata": {"name": "ext"}}));
    let skip = endpoints(
        json!({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}}),
    );
    assert!(desired::should_mirror(Some(&selectorless), &ep));
    assert!(!desired::should_mirror(Some(&selecting), &ep));
    assert!(!desired::should_mirror(None, &ep));
    assert!(!desired::should_mirror(Some(&selectorless), &skip));
}

#[test]
fn mirroring_is_capped() {
    let addrs: Vec<Value> = (0..1200)
        .map(|i| json!({"ip": format!("10.1.{}.{}", i / 250, i % 250 + 1)}))
        .collect();
    let ep = endpoints(json!({"subsets": [{"addresses": addrs, "ports": [{"port": 80}]}]}));
    let groups = desired::mirror_groups(&ep);
    assert_eq!(groups[0].endpoints.len(), desired::MAX_ENDPOINTS_ADDRESSES);
    let mut api = FakeApi::default();
    assert_eq!(api.round(&desired::mirror_template(&ep), groups).len(), 10);
}

#[test]
fn long_names_are_cut_for_generate_name() {
    let name = "a".repeat(63);
    let s = svc(json!({"metadata": {"name": name}}));
    assert_eq!(desired::service_template(&s).prefix.len(), 58);
    assert_eq!(desired::service_template(&svc(json!({}))).prefix, "web-");
}
