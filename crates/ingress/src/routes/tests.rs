//! Kubernetes' Ingress matching semantics through `build` and `Table::route`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::*;

const CONTROLLER: &str = "kins.dev/ingress-controller";
const NS: &str = "default";

fn id() -> Identity {
    Identity {
        controller: CONTROLLER.into(),
        legacy_name: "kins".into(),
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("a valid object"))
}

fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
    let mut meta = json!({"name": name});
    if default {
        meta["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
    }
    obj(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": meta,
        "spec": {"controller": controller},
    }))
}

/// An Ingress of class `kins` (unless `spec` names another or `null`s it), created at
/// `created`, with `annotations`.
fn ingress_at(name: &str, created: &str, annotations: Value, spec: Value) -> Arc<Ingress> {
    let mut spec = spec;
    match spec.get("ingressClassName") {
        None => spec["ingressClassName"] = json!("kins"),
        Some(Value::Null) => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("ingressClassName");
            }
        }
        Some(_) => {}
    }
    obj(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": created,
            "annotations": annotations,
        },
        "spec": spec,
    }))
}

fn ingress(name: &str, spec: Value) -> Arc<Ingress> {
    ingress_at(name, "2024-01-01T00:00:00Z", json!({}), spec)
}

fn svc_backend(svc: &str) -> Value {
    json!({"service": {"name": svc, "port": {"number": 80}}})
}

fn path(p: &str, kind: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": kind, "backend": svc_backend(svc)})
}

fn rule(host: Option<&str>, paths: Vec<Value>) -> Value {
    let mut r = json!({"http": {"paths": paths}});
    if let Some(h) = host {
        r["host"] = json!(h);
    }
    r
}

fn service(name: &str, ports: Value) -> Arc<Service> {
    obj(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": ports},
    }))
}

fn slice(name: &str, svc: &str, ports: Value, endpoints: Value) -> Arc<EndpointSlice> {
    obj(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
}

fn secret(name: &str, type_: &str, data: &[(&str, &[u8])]) -> Arc<Secret> {
    let mut s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": type_,
    }))
    .expect("a valid Secret");
    s.data = Some(
        data.iter()
            .map(|(k, v)| ((*k).to_string(), ByteString(v.to_vec())))
            .collect::<BTreeMap<_, _>>(),
    );
    Arc::new(s)
}

/// A self-signed certificate for `names`: (cert PEM, key PEM).
fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn tls_secret(name: &str, names: &[&str]) -> Arc<Secret> {
    let (crt, key) = self_signed(names);
    secret(
        name,
        "kubernetes.io/tls",
        &[("tls.crt", crt.as_bytes()), ("tls.key", key.as_bytes())],
    )
}

struct World {
    ingresses: Vec<Arc<Ingress>>,
    classes: Vec<Arc<IngressClass>>,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    secrets: Vec<Arc<Secret>>,
}

impl World {
    fn new(ingresses: Vec<Arc<Ingress>>) -> World {
        World {
            ingresses,
            classes: vec![class("kins", CONTROLLER, false)],
            services: Vec::new(),
            slices: Vec::new(),
            secrets: Vec::new(),
        }
    }

    fn build(&self) -> Table {
        let registry = Registry::default();
        build(
            &Inputs {
                ingresses: &self.ingresses,
                classes: &self.classes,
                services: &self.services,
                slices: &self.slices,
                secrets: &self.secrets,
            },
            &id(),
            &registry,
            &crate::tls::parse_pem,
        )
    }
}

/// The Service the request goes to, or None for a 404.
fn to<'t>(t: &'t Table, host: &str, path: &str) -> Option<&'t str> {
    t.route(host, path).map(|r| r.backend.service.as_str())
}

fn all_reasons(t: &Table) -> Vec<&'static str> {
    t.problems.iter().map(|p| p.reason).collect()
}

/// The reasons of the problems but `BackendNotFound` (most tests route to Services that
/// do not exist: only the Service name matters to them).
fn reasons(t: &Table) -> Vec<&'static str> {
    all_reasons(t)
        .into_iter()
        .filter(|r| *r != "BackendNotFound")
        .collect()
}

fn addrs(v: &[&str]) -> Vec<SocketAddr> {
    v.iter()
        .map(|a| a.parse().expect("a socket address"))
        .collect()
}

// ---- hosts ----

#[test]
fn host_exact_and_wildcard_of_one_label() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [
            rule(Some("foo.com"), vec![path("/", "Prefix", "exact")]),
            rule(Some("*.foo.com"), vec![path("/", "Prefix", "wild")]),
            rule(Some("special.foo.com"), vec![path("/", "Prefix", "special")]),
        ]}),
    )])
    .build();
    assert!(reasons(&t).is_empty(), "{:?}", t.problems);
    assert_eq!(to(&t, "foo.com", "/"), Some("exact"));
    assert_eq!(to(&t, "bar.foo.com", "/x"), Some("wild"));
    // An exact host beats the wildcard that also covers it.
    assert_eq!(to(&t, "special.foo.com", "/"), Some("special"));
    // Exactly one label.
    assert_eq!(to(&t, "baz.bar.foo.com", "/"), None);
    assert_eq!(to(&t, "xfoo.com", "/"), None);
    assert_eq!(to(&t, "other.com", "/"), None);

    // `*.foo.com` alone does not match the apex.
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("*.foo.com"), vec![path("/", "Prefix", "wild")])]}),
    )])
    .build();
    assert_eq!(to(&t, "foo.com", "/"), None);
    assert_eq!(to(&t, "a.foo.com", "/"), Some("wild"));
}

#[test]
fn host_case_insensitive_port_and_trailing_dot_dropped() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [
            rule(Some("Foo.Example.COM"), vec![path("/", "Prefix", "foo")]),
            rule(Some("*.Wild.com"), vec![path("/", "Prefix", "wild")]),
        ]}),
    )])
    .build();
    for h in [
        "foo.example.com",
        "FOO.EXAMPLE.COM",
        "foo.example.com:8080",
        "Foo.Example.Com:80",
        "foo.example.com.",
    ] {
        assert_eq!(to(&t, h, "/"), Some("foo"), "{h}");
    }
    assert_eq!(to(&t, "A.WILD.COM:443", "/"), Some("wild"));
    assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    assert_eq!(normalize_host("Example.com:8443"), "example.com");
    assert_eq!(normalize_host("example.com"), "example.com");
}

// ---- paths ----

#[test]
fn prefix_matches_by_element() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/foo", "Prefix", "foo")])]}),
    )])
    .build();
    for p in ["/foo", "/foo/", "/foo/bar", "/foo/bar/baz"] {
        assert_eq!(to(&t, "h", p), Some("foo"), "{p}");
    }
    for p in ["/foobar", "/fo", "/", "/bar/foo"] {
        assert_eq!(to(&t, "h", p), None, "{p}");
    }
    assert!(prefix_matches("/aaa/bbb", "/aaa/bbb/ccc"));
    assert!(!prefix_matches("/aaa/bbb", "/aaa/bbbxyz"));
}

#[test]
fn prefix_rule_with_trailing_slash_behaves_as_without() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/foo/", "Prefix", "foo")])]}),
    )])
    .build();
    for p in ["/foo", "/foo/", "/foo/bar"] {
        assert_eq!(to(&t, "h", p), Some("foo"), "{p}");
    }
    assert_eq!(to(&t, "h", "/foobar"), None);
}

#[test]
fn prefix_root_matches_everything() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/", "Prefix", "root")])]}),
    )])
    .build();
    for p in ["/", "/foo", "/foo/bar", "/x.html"] {
        assert_eq!(to(&t, "h", p), Some("root"), "{p}");
    }
}

#[test]
fn exact_is_byte_exact() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/foo", "Exact", "foo")])]}),
    )])
    .build();
    assert_eq!(to(&t, "h", "/foo"), Some("foo"));
    for p in ["/foo/", "/foo/bar", "/foobar", "/Foo", "/"] {
        assert_eq!(to(&t, "h", p), None, "{p}");
    }
}

#[test]
fn longest_path_wins() {
    // Listed shortest first: the order of the rules must not matter.
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![
            path("/", "Prefix", "root"),
            path("/foo", "Prefix", "foo"),
            path("/foo/bar", "Prefix", "foobar"),
            path("/foo/bar/baz", "ImplementationSpecific", "is"),
        ])]}),
    )])
    .build();
    assert_eq!(to(&t, "h", "/"), Some("root"));
    assert_eq!(to(&t, "h", "/other"), Some("root"));
    assert_eq!(to(&t, "h", "/foo"), Some("foo"));
    assert_eq!(to(&t, "h", "/foo/x"), Some("foo"));
    assert_eq!(to(&t, "h", "/foo/bar"), Some("foobar"));
    assert_eq!(to(&t, "h", "/foo/bar/x"), Some("foobar"));
    assert_eq!(to(&t, "h", "/foo/bar/bazz"), Some("is"));
    assert_eq!(t.routes, 4);
}

#[test]
fn exact_beats_prefix_at_equal_length() {
    for order in [["Prefix", "Exact"], ["Exact", "Prefix"]] {
        let paths: Vec<Value> = order
            .iter()
            .map(|k| path("/foo", k, &k.to_ascii_lowercase()))
            .collect();
        let t = World::new(vec![ingress(
            "a",
            json!({"rules": [rule(Some("h"), paths)]}),
        )])
        .build();
        assert!(reasons(&t).is_empty(), "{:?}", t.problems);
        assert_eq!(to(&t, "h", "/foo"), Some("exact"), "{order:?}");
        assert_eq!(to(&t, "h", "/foo/bar"), Some("prefix"), "{order:?}");
    }
}

#[test]
fn implementation_specific_is_a_string_prefix() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/foo", "ImplementationSpecific", "is")])]}),
    )])
    .build();
    for p in ["/foo", "/foobar", "/foo/bar"] {
        assert_eq!(to(&t, "h", p), Some("is"), "{p}");
    }
    assert_eq!(to(&t, "h", "/fo"), None);

    // Prefix first at equal length.
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![
            path("/foo", "ImplementationSpecific", "is"),
            path("/foo", "Prefix", "prefix"),
        ])]}),
    )])
    .build();
    assert_eq!(to(&t, "h", "/foo/x"), Some("prefix"));
    assert_eq!(to(&t, "h", "/foobar"), Some("is"));
}

#[test]
fn falls_through_to_hostless_rules_then_default_backend_then_none() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [
            rule(Some("h"), vec![path("/app", "Prefix", "app")]),
            rule(Some("*.w.com"), vec![path("/wild", "Prefix", "wild")]),
            rule(None, vec![path("/any", "Prefix", "any")]),
        ]}),
    )])
    .build();
    assert_eq!(to(&t, "h", "/app"), Some("app"));
    assert_eq!(to(&t, "h", "/any/x"), Some("any"));
    assert_eq!(to(&t, "x.w.com", "/wild"), Some("wild"));
    assert_eq!(to(&t, "x.w.com", "/any"), Some("any"));
    assert_eq!(to(&t, "unknown", "/any"), Some("any"));
    assert_eq!(to(&t, "h", "/nothing"), None);
    assert_eq!(to(&t, "", "/any"), Some("any"));

    let t = World::new(vec![ingress(
        "a",
        json!({
            "defaultBackend": svc_backend("default"),
            "rules": [
                rule(Some("h"), vec![path("/app", "Prefix", "app")]),
                rule(None, vec![path("/any", "Prefix", "any")]),
            ],
        }),
    )])
    .build();
    assert_eq!(to(&t, "h", "/app"), Some("app"));
    assert_eq!(to(&t, "h", "/any"), Some("any"));
    assert_eq!(to(&t, "h", "/nothing"), Some("default"));
    assert_eq!(to(&t, "elsewhere", "/"), Some("default"));
}

// ---- conflicts ----

#[test]
fn older_ingress_wins_a_conflict() {
    // The newer one is listed first: age, not order, decides.
    let newer = ingress_at(
        "newer",
        "2024-06-01T00:00:00Z",
        json!({}),
        json!({"rules": [rule(Some("h"), vec![
            path("/foo", "Prefix", "new"),
            path("/other", "Prefix", "new-other"),
            path("/foo", "Exact", "new-exact"),
        ])]}),
    );
    let older = ingress_at(
        "older",
        "2024-01-01T00:00:00Z",
        json!({}),
        json!({"rules": [rule(Some("h"), vec![path("/foo", "Prefix", "old")])]}),
    );
    let t = World::new(vec![newer, older]).build();
    assert_eq!(to(&t, "h", "/foo/x"), Some("old"));
    // What does not conflict is kept: another path, and the same path with another type.
    assert_eq!(to(&t, "h", "/other"), Some("new-other"));
    assert_eq!(to(&t, "h", "/foo"), Some("new-exact"));
    let conflicts: Vec<&Problem> = t
        .problems
        .iter()
        .filter(|p| p.reason == "Conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{:?}", t.problems);
    assert_eq!(conflicts[0].ingress, (NS.to_string(), "newer".to_string()));
    assert!(
        conflicts[0].message.contains("older"),
        "{}",
        conflicts[0].message
    );
    assert_eq!(t.served.len(), 2);
    // The same (host, path) in another host is no conflict.
    let t = World::new(vec![
        ingress(
            "a",
            json!({"rules": [rule(Some("a.com"), vec![path("/", "Prefix", "a")])]}),
        ),
        ingress(
            "b",
            json!({"rules": [rule(Some("b.com"), vec![path("/", "Prefix", "b")])]}),
        ),
    ])
    .build();
    assert!(!reasons(&t).contains(&"Conflict"), "{:?}", t.problems);
    assert_eq!(to(&t, "a.com", "/"), Some("a"));
    assert_eq!(to(&t, "b.com", "/"), Some("b"));
}

#[test]
fn older_default_backend_wins() {
    let t = World::new(vec![
        ingress_at(
            "newer",
            "2024-06-01T00:00:00Z",
            json!({}),
            json!({"defaultBackend": svc_backend("new")}),
        ),
        ingress_at(
            "older",
            "2024-01-01T00:00:00Z",
            json!({}),
            json!({"defaultBackend": svc_backend("old")}),
        ),
    ])
    .build();
    assert_eq!(to(&t, "any", "/"), Some("old"));
    assert!(t
        .problems
        .iter()
        .any(|p| p.reason == "Conflict" && p.ingress.1 == "newer"));
}

// ---- classes ----

#[test]
fn class_selection() {
    let id = id();
    let with = |spec: Value, annotations: Value| {
        ingress_at("a", "2024-01-01T00:00:00Z", annotations, spec)
    };
    let ours_class = class("kins", CONTROLLER, false);
    let other_class = class("nginx", "k8s.io/ingress-nginx", false);
    let classes = vec![ours_class.clone(), other_class.clone()];

    // ingressClassName of a class of ours.
    assert!(is_ours(
        &with(json!({"ingressClassName": "kins"}), json!({})),
        &classes,
        &id
    ));
    // A class of another controller, and a class that does not exist.
    assert!(!is_ours(
        &with(json!({"ingressClassName": "nginx"}), json!({})),
        &classes,
        &id
    ));
    assert!(!is_ours(
        &with(json!({"ingressClassName": "missing"}), json!({})),
        &classes,
        &id
    ));
    // The legacy annotation.
    let no_class = json!({"ingressClassName": null});
    assert!(is_ours(
        &with(no_class.clone(), json!({LEGACY_CLASS_ANNOTATION: "kins"})),
        &classes,
        &id
    ));
    assert!(!is_ours(
        &with(no_class.clone(), json!({LEGACY_CLASS_ANNOTATION: "nginx"})),
        &classes,
        &id
    ));
    // No class at all: ours only when one of our classes is the default.
    assert!(!is_ours(&with(no_class.clone(), json!({})), &classes, &id));
    let default_ours = vec![class("kins", CONTROLLER, true), other_class.clone()];
    assert!(is_ours(
        &with(no_class.clone(), json!({})),
        &default_ours,
        &id
    ));
    let default_other = vec![ours_class, class("nginx", "k8s.io/ingress-nginx", true)];
    assert!(!is_ours(
        &with(no_class.clone(), json!({})),
        &default_other,
        &id
    ));

    // Through build: only ours are served and routed.
    let mut w = World::new(vec![
        ingress_at(
            "mine",
            "2024-01-01T00:00:00Z",
            json!({}),
            json!({"rules": [rule(Some("mine"), vec![path("/", "Prefix", "mine")])]}),
        ),
        ingress_at(
            "theirs",
            "2024-01-01T00:00:00Z",
            json!({}),
            json!({"ingressClassName": "nginx", "rules": [rule(Some("theirs"), vec![path("/", "Prefix", "theirs")])]}),
        ),
        ingress_at(
            "unclassed",
            "2024-01-01T00:00:00Z",
            json!({}),
            json!({"ingressClassName": null, "rules": [rule(Some("unclassed"), vec![path("/", "Prefix", "unclassed")])]}),
        ),
    ]);
    w.classes = classes;
    let t = w.build();
    assert_eq!(t.served, vec![(NS.to_string(), "mine".to_string())]);
    assert_eq!(to(&t, "mine", "/"), Some("mine"));
    assert_eq!(to(&t, "theirs", "/"), None);
    assert_eq!(to(&t, "unclassed", "/"), None);
    w.classes = default_ours;
    let t = w.build();
    assert_eq!(t.served.len(), 2);
    assert_eq!(to(&t, "unclassed", "/"), Some("unclassed"));
}

// ---- backends and endpoints ----

fn web_service() -> Arc<Service> {
    service(
        "web",
        json!([
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "admin", "port": 9000, "targetPort": 9090},
        ]),
    )
}

fn web_slices() -> Vec<Arc<EndpointSlice>> {
    vec![
        slice(
            "web-1",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]),
            json!([
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.4"], "conditions": {}},
            ]),
        ),
        slice(
            "web-2",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]),
            json!([{"addresses": ["10.0.1.1"], "conditions": {"ready": true}}]),
        ),
        // Another Service's slice.
        slice(
            "api-1",
            "api",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["10.9.9.9"]}]),
        ),
    ]
}

#[test]
fn backends_by_port_number_and_name_with_ready_endpoints() {
    let mut w = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![
            json!({"path": "/num", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}),
            json!({"path": "/name", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "admin"}}}}),
        ])]}),
    )]);
    w.services = vec![web_service()];
    w.slices = web_slices();
    let t = w.build();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let num = &t.route("h", "/num").expect("a route").backend;
    assert_eq!(num.namespace, NS);
    assert_eq!(num.service, "web");
    assert_eq!(num.port, "80");
    // Ready, or ready unset (counts as ready); never ready: false; across slices; sorted.
    assert_eq!(
        num.endpoints,
        addrs(&[
            "10.0.0.1:8080",
            "10.0.0.2:8080",
            "10.0.0.4:8080",
            "10.0.1.1:8080"
        ])
    );
    let name = &t.route("h", "/name").expect("a route").backend;
    assert_eq!(name.port, "admin");
    assert_eq!(
        name.endpoints,
        addrs(&[
            "10.0.0.1:9090",
            "10.0.0.2:9090",
            "10.0.0.4:9090",
            "10.0.1.1:9090"
        ])
    );
}

#[test]
fn slice_port_is_matched_by_the_service_port_name() {
    // The slice lists the ports in another order and with other numbers than the
    // Service's targetPort (a named targetPort): the name decides.
    let mut w = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/", "Prefix", "web")])]}),
    )]);
    w.services = vec![web_service()];
    w.slices = vec![slice(
        "web-1",
        "web",
        json!([{"name": "admin", "port": 7000}, {"name": "http", "port": 7001}]),
        json!([{"addresses": ["10.0.0.1"]}]),
    )];
    let t = w.build();
    let b = &t.route("h", "/").expect("a route").backend;
    assert_eq!(b.endpoints, addrs(&["10.0.0.1:7001"]));

    // A single unnamed port.
    let mut w = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/", "Prefix", "solo")])]}),
    )]);
    w.services = vec![service("solo", json!([{"port": 80, "targetPort": 8080}]))];
    w.slices = vec![slice(
        "solo-1",
        "solo",
        json!([{"port": 8080}]),
        json!([{"addresses": ["10.0.0.7"]}]),
    )];
    let t = w.build();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let b = &t.route("h", "/").expect("a route").backend;
    assert_eq!(b.endpoints, addrs(&["10.0.0.7:8080"]));
}

#[test]
fn missing_service_or_port_is_backend_not_found() {
    let mut w = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![
            path("/gone", "Prefix", "gone"),
            json!({"path": "/badport", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 81}}}}),
        ])]}),
    )]);
    w.services = vec![web_service()];
    w.slices = web_slices();
    let t = w.build();
    assert_eq!(all_reasons(&t), vec!["BackendNotFound", "BackendNotFound"]);
    assert!(t.problems[0].message.contains("gone"), "{:?}", t.problems);
    assert_eq!(t.problems[0].ingress, (NS.to_string(), "a".to_string()));
    // Still routed (to a 503), with no endpoints.
    let b = &t.route("h", "/gone").expect("a route").backend;
    assert!(b.endpoints.is_empty());
    assert_eq!(b.pick(), None);
    assert!(t
        .route("h", "/badport")
        .expect("a route")
        .backend
        .endpoints
        .is_empty());
}

#[test]
fn resource_backend_is_unsupported() {
    let t = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![json!({
            "path": "/",
            "pathType": "Prefix",
            "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "assets"}},
        })])]}),
    )])
    .build();
    assert_eq!(all_reasons(&t), vec!["ResourceBackendUnsupported"]);
    let b = &t.route("h", "/").expect("a route").backend;
    assert!(b.endpoints.is_empty());
    assert_eq!(b.service, "");
}

#[test]
fn pick_is_round_robin() {
    let mut w = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/", "Prefix", "web")])]}),
    )]);
    w.services = vec![web_service()];
    w.slices = web_slices();
    let t = w.build();
    let b = &t.route("h", "/").expect("a route").backend;
    let n = b.endpoints.len();
    let picked: Vec<SocketAddr> = (0..2 * n).filter_map(|_| b.pick()).collect();
    assert_eq!(picked.len(), 2 * n);
    assert_eq!(&picked[..n], b.endpoints.as_slice());
    assert_eq!(&picked[n..], b.endpoints.as_slice());
}

// ---- TLS ----

fn tls_ingress(name: &str, annotations: Value, secret: &str) -> Arc<Ingress> {
    ingress_at(
        name,
        "2024-01-01T00:00:00Z",
        annotations,
        json!({
            "tls": [{"hosts": ["secure.com", "*.wild.com"], "secretName": secret}],
            "rules": [
                rule(Some("secure.com"), vec![path("/", "Prefix", "secure")]),
                rule(Some("*.wild.com"), vec![path("/", "Prefix", "wild")]),
                rule(Some("a.wild.com"), vec![path("/", "Prefix", "a-wild")]),
                rule(Some("plain.com"), vec![path("/", "Prefix", "plain")]),
            ],
        }),
    )
}

#[test]
fn parse_pem_accepts_a_matching_pair_only() {
    let (crt, key) = self_signed(&["x.com"]);
    assert!(crate::tls::parse_pem(crt.as_bytes(), key.as_bytes()).is_ok());
    let (_, other_key) = self_signed(&["x.com"]);
    assert!(crate::tls::parse_pem(crt.as_bytes(), other_key.as_bytes()).is_err());
    assert!(crate::tls::parse_pem(b"garbage", key.as_bytes()).is_err());
    assert!(crate::tls::parse_pem(crt.as_bytes(), b"garbage").is_err());
    assert!(crate::tls::parse_pem(key.as_bytes(), crt.as_bytes()).is_err());
    let bad_der = b"-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    assert!(crate::tls::parse_pem(bad_der, key.as_bytes()).is_err());
}

#[test]
fn tls_secret_gives_certs_and_redirects() {
    let mut w = World::new(vec![tls_ingress("a", json!({}), "certs")]);
    w.secrets = vec![tls_secret("certs", &["secure.com", "*.wild.com"])];
    let t = w.build();
    assert!(reasons(&t).is_empty(), "{:?}", t.problems);
    assert!(t.cert("secure.com").is_some());
    assert!(t.cert("SECURE.com:443").is_some());
    assert!(t.cert("a.wild.com").is_some());
    assert!(t.cert("b.wild.com").is_some());
    assert!(t.cert("wild.com").is_none());
    assert!(t.cert("x.a.wild.com").is_none());
    assert!(t.cert("plain.com").is_none());
    assert_eq!(t.tls_hosts(), 2);
    let redirect = |h: &str| t.route(h, "/").expect("a route").redirect_https;
    assert!(redirect("secure.com"));
    assert!(redirect("b.wild.com"));
    assert!(redirect("a.wild.com"));
    assert!(!redirect("plain.com"));
}

#[test]
fn ssl_redirect_annotations_turn_the_redirect_off() {
    for a in SSL_REDIRECT_ANNOTATIONS {
        let mut w = World::new(vec![tls_ingress("a", json!({*a: "false"}), "certs")]);
        w.secrets = vec![tls_secret("certs", &["secure.com", "*.wild.com"])];
        let t = w.build();
        assert!(t.cert("secure.com").is_some(), "{a}");
        for h in ["secure.com", "a.wild.com", "b.wild.com"] {
            assert!(!t.route(h, "/").expect("a route").redirect_https, "{a} {h}");
        }
        // "true" leaves it on.
        let mut w = World::new(vec![tls_ingress("a", json!({*a: "true"}), "certs")]);
        w.secrets = vec![tls_secret("certs", &["secure.com", "*.wild.com"])];
        assert!(
            w.build()
                .route("secure.com", "/")
                .expect("a route")
                .redirect_https,
            "{a}"
        );
    }
}

#[test]
fn invalid_tls_secrets_are_problems_and_no_cert() {
    let (crt, key) = self_signed(&["secure.com"]);
    let (_, other_key) = self_signed(&["secure.com"]);
    let cases: Vec<(&str, Vec<Arc<Secret>>)> = vec![
        ("missing", vec![]),
        (
            "opaque",
            vec![secret(
                "certs",
                "Opaque",
                &[("tls.crt", crt.as_bytes()), ("tls.key", key.as_bytes())],
            )],
        ),
        (
            "garbage",
            vec![secret(
                "certs",
                "kubernetes.io/tls",
                &[("tls.crt", b"not a certificate"), ("tls.key", b"not a key")],
            )],
        ),
        (
            "mismatched key",
            vec![secret(
                "certs",
                "kubernetes.io/tls",
                &[
                    ("tls.crt", crt.as_bytes()),
                    ("tls.key", other_key.as_bytes()),
                ],
            )],
        ),
        (
            "no key",
            vec![secret(
                "certs",
                "kubernetes.io/tls",
                &[("tls.crt", crt.as_bytes())],
            )],
        ),
    ];
    for (what, secrets) in cases {
        let mut w = World::new(vec![tls_ingress("a", json!({}), "certs")]);
        w.secrets = secrets;
        let t = w.build();
        assert_eq!(
            reasons(&t),
            vec!["TLSSecretInvalid"],
            "{what}: {:?}",
            t.problems
        );
        assert_eq!(
            t.problems[0].ingress,
            (NS.to_string(), "a".to_string()),
            "{what}"
        );
        assert!(
            t.problems[0].message.contains("certs"),
            "{what}: {}",
            t.problems[0].message
        );
        assert!(t.cert("secure.com").is_none(), "{what}");
        assert!(t.cert("a.wild.com").is_none(), "{what}");
        assert_eq!(t.tls_hosts(), 0, "{what}");
        // Routing is unaffected.
        assert_eq!(to(&t, "secure.com", "/"), Some("secure"), "{what}");
    }
    // A Secret in another namespace is not found.
    let mut w = World::new(vec![tls_ingress("a", json!({}), "certs")]);
    let mut s = (*tls_secret("certs", &["secure.com"])).clone();
    s.metadata.namespace = Some("elsewhere".into());
    w.secrets = vec![Arc::new(s)];
    let t = w.build();
    assert_eq!(reasons(&t), vec!["TLSSecretInvalid"]);
    assert!(t.cert("secure.com").is_none());
}

// ---- metrics ----

#[test]
fn metrics_render_counts_observations() {
    let mut w = World::new(vec![ingress(
        "a",
        json!({"rules": [rule(Some("h"), vec![path("/", "Prefix", "web")])]}),
    )]);
    w.services = vec![web_service()];
    w.slices = web_slices();
    let registry = Registry::default();
    let t = build(
        &Inputs {
            ingresses: &w.ingresses,
            classes: &w.classes,
            services: &w.services,
            slices: &w.slices,
            secrets: &w.secrets,
        },
        &id(),
        &registry,
        &crate::tls::parse_pem,
    );
    let stats = &t.route("h", "/").expect("a route").backend.stats;
    stats.observe(200, std::time::Duration::from_micros(300));
    stats.observe(204, std::time::Duration::from_millis(3));
    stats.observe(503, std::time::Duration::from_secs(10));
    stats.no_endpoints.fetch_add(1, Ordering::Relaxed);
    stats.upstream_errors.fetch_add(2, Ordering::Relaxed);
    let global = crate::metrics::Global::default();
    global.unrouted.fetch_add(7, Ordering::Relaxed);
    global.reloads.fetch_add(1, Ordering::Relaxed);
    let out = crate::metrics::render(&registry, &global);
    let labels = r#"namespace="default",ingress="a",service="default/web",port="80""#;
    for line in [
        format!("kins_ingress_requests_total{{{labels},status=\"2xx\"}} 2"),
        format!("kins_ingress_requests_total{{{labels},status=\"5xx\"}} 1"),
        format!("kins_ingress_requests_total{{{labels},status=\"4xx\"}} 0"),
        format!("kins_ingress_no_endpoints_total{{{labels}}} 1"),
        format!("kins_ingress_upstream_errors_total{{{labels}}} 2"),
        format!("kins_ingress_request_duration_seconds_bucket{{{labels},le=\"0.0005\"}} 1"),
        format!("kins_ingress_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 2"),
        format!("kins_ingress_request_duration_seconds_bucket{{{labels},le=\"5\"}} 2"),
        format!("kins_ingress_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
        format!("kins_ingress_request_duration_seconds_count{{{labels}}} 3"),
        "kins_ingress_unrouted_total 7".to_string(),
        "kins_ingress_config_reloads_total 1".to_string(),
        "# TYPE kins_ingress_requests_total counter".to_string(),
        "# TYPE kins_ingress_request_duration_seconds histogram".to_string(),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    let sum = format!("kins_ingress_request_duration_seconds_sum{{{labels}}} ");
    let v: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix(sum.as_str()))
        .expect("a sum line")
        .parse()
        .expect("a number");
    assert!((v - 10.0033).abs() < 1e-6, "{v}");
    // The counters of an Ingress no longer served go.
    registry.retain(&[]);
    let out = crate::metrics::render(&registry, &global);
    assert!(!out.contains("ingress=\"a\""), "{out}");
}
