//! Unit tests: records and answers as tables (`check`), the chain (`check_chain`), the
//! plugins' pure parts, and loopback tests of the real server. Traffic goes to 127.0.0.1
//! only; upstreams are responders started here.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream as StdTcpStream, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::answer::{kubernetes, Outcome, Response, Section};
use crate::cache::{Cache, Kind};
use crate::chain::{Compiled, Env};
use crate::corefile::{Cache as CacheConfig, PodsMode};
use crate::forward::{parse_resolv_conf, replace_loopback, resolve_upstreams};
use crate::metrics::Metrics;
use crate::records::{Index, IndexConfig};
use crate::server::{serve, ServeOptions};

// ---------------------------------------------------------------- fixtures

/// An endpoint: address, hostname, ready, pod name.
type Ep<'a> = (&'a str, Option<&'a str>, Option<bool>, Option<&'a str>);

fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, &str, i32)]) -> Service {
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": if cluster_ip.is_empty() || cluster_ip == "None" { json!(null) } else { json!([cluster_ip]) }, "ports": ports},
    }))
    .expect("valid service")
}

fn external(ns: &str, name: &str, target: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ExternalName", "externalName": target},
    }))
    .expect("valid service")
}

/// Endpoints: (address, hostname, ready, pod name).
fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    endpoints: &[Ep<'_>],
    ports: &[(&str, &str, i32)],
) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(ip, host, ready, pod)| {
            let mut e = json!({"addresses": [ip]});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r});
            }
            if let Some(p) = pod {
                e["targetRef"] = json!({"kind": "Pod", "name": p, "namespace": ns});
            }
            e
        })
        .collect();
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    let family = if endpoints
        .iter()
        .any(|e| e["addresses"][0].as_str().is_some_and(|a| a.contains(':')))
    {
        "IPv6"
    } else {
        "IPv4"
    };
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }))
    .expect("valid slice")
}

fn pod(ns: &str, name: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .expect("valid pod")
}

fn cluster() -> Index {
    let mut index = Index::new(IndexConfig::default());
    index.apply_service(&service(
        "default",
        "web",
        "10.96.0.10",
        &[("http", "TCP", 80), ("dns", "UDP", 53)],
    ));
    index.apply_service(&service("default", "pending", "", &[]));
    index.apply_service(&service("default", "db", "None", &[("pg", "TCP", 5432)]));
    index.apply_slice(&slice(
        "default",
        "db-abc",
        "db",
        &[
            ("10.244.1.5", Some("db-0"), Some(true), Some("db-0")),
            ("10.244.1.6", None, None, Some("db-1")),
            ("10.244.1.7", None, Some(false), Some("db-2")),
        ],
        &[("pg", "TCP", 5433)],
    ));
    index.apply_service(&service("default", "empty", "None", &[]));
    index.apply_service(&external("other", "ext", "example.com"));
    index.apply_pod(&pod("default", "p1", "10.244.2.9"));
    index
}

fn query(text: &str) -> (LowerName, RecordType) {
    let (name, t) = text.split_once(' ').expect("NAME TYPE");
    (
        LowerName::from(Name::from_ascii(name).expect("valid name")),
        t.parse().expect("valid type"),
    )
}

/// The SOA serial is the time of the last change; tests hide it.
fn normalize(text: &str) -> String {
    let re = regex::Regex::new(r"(hostmaster\.\S+ )\d+").expect("valid regex");
    re.replace_all(text, "${1}SERIAL").into_owned()
}

fn check(index: &Index, pods: PodsMode, q: &str, expect: &str) {
    let (name, qtype) = query(q);
    let got = match kubernetes(index, pods, &name, qtype) {
        Outcome::Answer(r) => r.to_text(),
        Outcome::NxDomain(r) => r.to_text(),
        Outcome::NotMine => "NOT MINE".into(),
    };
    assert_eq!(normalize(&got), expect.trim(), "query {q}");
}

const SOA: &str = "authority: cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5";

// ---------------------------------------------------------------- records

#[test]
fn cluster_records() {
    let index = cluster();
    let nx = format!("NXDOMAIN\n{SOA}");
    let nodata = format!("NOERROR\n{SOA}");
    let table: Vec<(&str, String)> = vec![
        ("dns-version.cluster.local. TXT", "NOERROR\nanswer: dns-version.cluster.local. 5 IN TXT 1.1.0".into()),
        ("cluster.local. SOA", format!("NOERROR\n{}", SOA.replace("authority", "answer"))),
        ("cluster.local. NS", "NOERROR\nanswer: cluster.local. 5 IN NS ns.dns.cluster.local.".into()),
        ("cluster.local. A", nodata.clone()),
        // ClusterIP service
        ("web.default.svc.cluster.local. A", "NOERROR\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.10".into()),
        ("web.default.svc.cluster.local. AAAA", nodata.clone()),
        ("_http._tcp.web.default.svc.cluster.local. SRV", "NOERROR\nanswer: _http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.".into()),
        ("_dns._udp.web.default.svc.cluster.local. SRV", "NOERROR\nanswer: _dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local.".into()),
        ("_http._udp.web.default.svc.cluster.local. SRV", nx.clone()),
        ("_tcp.web.default.svc.cluster.local. SRV", nodata.clone()),
        ("10.0.96.10.in-addr.arpa. PTR", "NOERROR\nanswer: 10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local.".into()),
        // empty non-terminals and missing names
        ("default.svc.cluster.local. A", nodata.clone()),
        ("svc.cluster.local. A", nodata.clone()),
        ("nope.svc.cluster.local. A", nx.clone()),
        ("nope.default.svc.cluster.local. A", nx.clone()),
        ("pending.default.svc.cluster.local. A", nx.clone()),
        ("web.nons.svc.cluster.local. A", nx.clone()),
        // headless: ready endpoints only (ready absent counts as ready)
        ("db.default.svc.cluster.local. A", "NOERROR\nanswer: db.default.svc.cluster.local. 5 IN A 10.244.1.5\nanswer: db.default.svc.cluster.local. 5 IN A 10.244.1.6".into()),
        ("db-0.db.default.svc.cluster.local. A", "NOERROR\nanswer: db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.5".into()),
        ("10-244-1-6.db.default.svc.cluster.local. A", "NOERROR\nanswer: 10-244-1-6.db.default.svc.cluster.local. 5 IN A 10.244.1.6".into()),
        ("10-244-1-7.db.default.svc.cluster.local. A", nx.clone()),
        ("db-1.db.default.svc.cluster.local. A", nx.clone()),
        ("_pg._tcp.db.default.svc.cluster.local. SRV", "NOERROR\nanswer: _pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5433 db-0.db.default.svc.cluster.local.\nanswer: _pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5433 10-244-1-6.db.default.svc.cluster.local.".into()),
        ("5.1.244.10.in-addr.arpa. PTR", "NOERROR\nanswer: 5.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local.".into()),
        ("empty.default.svc.cluster.local. A", nx.clone()),
        // ExternalName: the CNAME for every type
        ("ext.other.svc.cluster.local. A", "NOERROR\nanswer: ext.other.svc.cluster.local. 5 IN CNAME example.com.".into()),
        ("ext.other.svc.cluster.local. CNAME", "NOERROR\nanswer: ext.other.svc.cluster.local. 5 IN CNAME example.com.".into()),
        // reverse zone miss
        ("9.9.9.9.in-addr.arpa. PTR", "NXDOMAIN\nauthority: in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. SERIAL 7200 1800 86400 5".into()),
        ("example.com. A", "NOT MINE".into()),
    ];
    for (q, expect) in table {
        check(&index, PodsMode::Disabled, q, &expect);
    }
}

#[test]
fn case_insensitive_lookup() {
    // The lookup lower-cases; the server puts the question's case back (see the loopback test).
    let index = cluster();
    let (name, qtype) = query("WEB.Default.SVC.Cluster.Local. A");
    let Outcome::Answer(r) = kubernetes(&index, PodsMode::Disabled, &name, qtype) else {
        panic!("no answer")
    };
    assert_eq!(
        r.to_text(),
        "NOERROR\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.10"
    );
}

#[test]
fn pods_modes() {
    let index = cluster();
    let nx = format!("NXDOMAIN\n{SOA}");
    let a = "NOERROR\nanswer: 10-244-2-9.default.pod.cluster.local. 5 IN A 10.244.2.9";
    check(
        &index,
        PodsMode::Insecure,
        "10-244-2-9.default.pod.cluster.local. A",
        a,
    );
    check(
        &index,
        PodsMode::Insecure,
        "10-244-3-3.any.pod.cluster.local. A",
        "NOERROR\nanswer: 10-244-3-3.any.pod.cluster.local. 5 IN A 10.244.3.3",
    );
    check(
        &index,
        PodsMode::Insecure,
        "fd00--5.default.pod.cluster.local. AAAA",
        "NOERROR\nanswer: fd00--5.default.pod.cluster.local. 5 IN AAAA fd00::5",
    );
    check(
        &index,
        PodsMode::Insecure,
        "10-244-2-9.default.pod.cluster.local. AAAA",
        &format!("NOERROR\n{SOA}"),
    );
    check(
        &index,
        PodsMode::Insecure,
        "not-an-ip.default.pod.cluster.local. A",
        &nx,
    );
    check(
        &index,
        PodsMode::Verified,
        "10-244-2-9.default.pod.cluster.local. A",
        a,
    );
    check(
        &index,
        PodsMode::Verified,
        "10-244-2-9.other.pod.cluster.local. A",
        &nx,
    );
    check(
        &index,
        PodsMode::Verified,
        "10-244-2-8.default.pod.cluster.local. A",
        &nx,
    );
    check(
        &index,
        PodsMode::Disabled,
        "10-244-2-9.default.pod.cluster.local. A",
        &nx,
    );
    check(
        &index,
        PodsMode::Disabled,
        "pod.cluster.local. A",
        &format!("NOERROR\n{SOA}"),
    );
}

#[test]
fn incremental_updates() {
    let mut index = cluster();
    let names = index.name_count();
    index.apply_service(&service(
        "default",
        "web",
        "10.96.0.11",
        &[("http", "TCP", 8080)],
    ));
    check(
        &index,
        PodsMode::Disabled,
        "web.default.svc.cluster.local. A",
        "NOERROR\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.11",
    );
    check(&index, PodsMode::Disabled, "10.0.96.10.in-addr.arpa. PTR", "NXDOMAIN\nauthority: in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. SERIAL 7200 1800 86400 5");
    check(
        &index,
        PodsMode::Disabled,
        "_dns._udp.web.default.svc.cluster.local. SRV",
        &format!("NXDOMAIN\n{SOA}"),
    );
    // a slice changes readiness
    index.apply_slice(&slice(
        "default",
        "db-abc",
        "db",
        &[("10.244.1.7", None, Some(true), None)],
        &[("pg", "TCP", 5433)],
    ));
    check(
        &index,
        PodsMode::Disabled,
        "db.default.svc.cluster.local. A",
        "NOERROR\nanswer: db.default.svc.cluster.local. 5 IN A 10.244.1.7",
    );
    index.delete_slice("default", "db-abc");
    check(
        &index,
        PodsMode::Disabled,
        "db.default.svc.cluster.local. A",
        &format!("NXDOMAIN\n{SOA}"),
    );
    // deleting every service of a namespace removes its empty non-terminal
    index.delete_service("other", "ext");
    check(
        &index,
        PodsMode::Disabled,
        "other.svc.cluster.local. A",
        &format!("NXDOMAIN\n{SOA}"),
    );
    // back to the start: same number of names
    index.apply_service(&external("other", "ext", "example.com"));
    index.apply_service(&service(
        "default",
        "web",
        "10.96.0.10",
        &[("http", "TCP", 80), ("dns", "UDP", 53)],
    ));
    index.apply_slice(&slice(
        "default",
        "db-abc",
        "db",
        &[
            ("10.244.1.5", Some("db-0"), Some(true), Some("db-0")),
            ("10.244.1.6", None, None, Some("db-1")),
        ],
        &[("pg", "TCP", 5433)],
    ));
    assert_eq!(index.name_count(), names);
    // two services in one namespace: deleting one keeps the namespace
    index.delete_service("default", "web");
    check(
        &index,
        PodsMode::Disabled,
        "default.svc.cluster.local. A",
        &format!("NOERROR\n{SOA}"),
    );
}

#[test]
fn options_shape_records() {
    let mut index = cluster();
    index.set_config(IndexConfig {
        endpoint_pod_names: true,
        ttl: 30,
        ..IndexConfig::default()
    });
    check(
        &index,
        PodsMode::Disabled,
        "db-1.db.default.svc.cluster.local. A",
        "NOERROR\nanswer: db-1.db.default.svc.cluster.local. 30 IN A 10.244.1.6",
    );
    index.set_config(IndexConfig {
        namespaces: vec!["other".into()],
        ..IndexConfig::default()
    });
    check(
        &index,
        PodsMode::Disabled,
        "web.default.svc.cluster.local. A",
        &format!("NXDOMAIN\n{SOA}"),
    );
    check(
        &index,
        PodsMode::Insecure,
        "10-244-2-9.default.pod.cluster.local. A",
        &format!("NXDOMAIN\n{SOA}"),
    );
    check(
        &index,
        PodsMode::Disabled,
        "ext.other.svc.cluster.local. A",
        "NOERROR\nanswer: ext.other.svc.cluster.local. 5 IN CNAME example.com.",
    );
    index.set_config(IndexConfig {
        zones: vec!["kins.test.".into()],
        ..IndexConfig::default()
    });
    check(
        &index,
        PodsMode::Disabled,
        "web.default.svc.kins.test. A",
        "NOERROR\nanswer: web.default.svc.kins.test. 5 IN A 10.96.0.10",
    );
    check(
        &index,
        PodsMode::Disabled,
        "web.default.svc.cluster.local. A",
        "NOT MINE",
    );
}

#[test]
fn dual_stack_and_ipv6_endpoints() {
    let mut index = Index::default();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "ds", "name": "both"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00:96::20"]},
    }))
    .expect("valid");
    index.apply_service(&svc);
    check(
        &index,
        PodsMode::Disabled,
        "both.ds.svc.cluster.local. AAAA",
        "NOERROR\nanswer: both.ds.svc.cluster.local. 5 IN AAAA fd00:96::20",
    );
    check(
        &index,
        PodsMode::Disabled,
        "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. PTR",
        "NOERROR\nanswer: 0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. 5 IN PTR both.ds.svc.cluster.local.",
    );
    index.apply_service(&service("ds", "h6", "None", &[]));
    index.apply_slice(&slice(
        "ds",
        "h6-1",
        "h6",
        &[("fd00::7", None, None, None)],
        &[],
    ));
    check(
        &index,
        PodsMode::Disabled,
        "fd00--7.h6.ds.svc.cluster.local. AAAA",
        "NOERROR\nanswer: fd00--7.h6.ds.svc.cluster.local. 5 IN AAAA fd00::7",
    );
}

// ---------------------------------------------------------------- the chain

fn env() -> Env {
    Env {
        systemd_resolv_conf: "/nonexistent/kins-dns-test".into(),
        forward_timeout: Duration::from_millis(300),
    }
}

async fn check_chain(compiled: &Compiled, index: &std::sync::RwLock<Index>, q: &str, expect: &str) {
    let (name, qtype) = query(q);
    let (block, _) = compiled.select(53, &name).expect("a block serves the name");
    let r = block
        .resolve(
            index,
            &Metrics::default(),
            &name,
            qtype,
            DNSClass::IN,
            Instant::now(),
        )
        .await;
    assert_eq!(normalize(&r.to_text()), expect.trim(), "query {q}");
}

fn compile(text: &str) -> (Compiled, std::sync::RwLock<Index>) {
    let compiled = Compiled::from_text(text, &env()).expect("valid corefile");
    let mut index = cluster();
    if let Some(c) = &compiled.index_config {
        index.set_config(c.clone());
    }
    (compiled, std::sync::RwLock::new(index))
}

#[tokio::test]
async fn hosts_then_kubernetes() {
    let (c, index) = compile(
        ".:53 {
            hosts {
                192.0.2.5 foo.example.com
                2001:db8::5 foo.example.com
                fallthrough
            }
            kubernetes cluster.local in-addr.arpa ip6.arpa
        }",
    );
    check_chain(
        &c,
        &index,
        "foo.example.com. A",
        "NOERROR\nanswer: foo.example.com. 3600 IN A 192.0.2.5",
    )
    .await;
    check_chain(
        &c,
        &index,
        "foo.example.com. AAAA",
        "NOERROR\nanswer: foo.example.com. 3600 IN AAAA 2001:db8::5",
    )
    .await;
    check_chain(&c, &index, "foo.example.com. MX", "NOERROR").await;
    check_chain(
        &c,
        &index,
        "5.2.0.192.in-addr.arpa. PTR",
        "NOERROR\nanswer: 5.2.0.192.in-addr.arpa. 3600 IN PTR foo.example.com.",
    )
    .await;
    // falls through to kubernetes
    check_chain(
        &c,
        &index,
        "web.default.svc.cluster.local. A",
        "NOERROR\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.10",
    )
    .await;
    // nothing after kubernetes for other names: SERVFAIL (CoreDNS: no next plugin)
    check_chain(&c, &index, "bar.example.com. A", "SERVFAIL").await;

    let (c, index) =
        compile(".:53 {\n hosts {\n 192.0.2.5 foo.example.com\n }\n kubernetes cluster.local\n}");
    check_chain(&c, &index, "web.default.svc.cluster.local. A", "SERVFAIL").await;
}

#[tokio::test]
async fn hosts_file_is_reread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hosts");
    std::fs::write(&path, "192.0.2.1 one.test\n").expect("write");
    let hosts = crate::corefile::Hosts {
        file: Some(path.clone()),
        zones: vec![".".into()],
        ..Default::default()
    };
    let plugin = crate::hosts::HostsPlugin::new(&hosts, &[".".into()]);
    let (name, _) = query("two.test. A");
    let t0 = Instant::now();
    let text = |o: crate::hosts::HostsOutcome| match o {
        crate::hosts::HostsOutcome::Answer(r) => r.to_text(),
        crate::hosts::HostsOutcome::Next => "NEXT".into(),
    };
    assert_eq!(text(plugin.lookup(&name, RecordType::A, t0)), "SERVFAIL");
    std::fs::write(&path, "192.0.2.1 one.test\n192.0.2.2 two.test\n").expect("write");
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .expect("mtime");
    assert_eq!(
        text(plugin.lookup(&name, RecordType::A, t0 + crate::hosts::FILE_CHECK)),
        "NOERROR\nanswer: two.test. 3600 IN A 192.0.2.2"
    );
}

#[tokio::test]
async fn kubernetes_namespaces_and_fallthrough() {
    let (c, index) = compile(
        ".:53 {
            kubernetes cluster.local {
                namespaces other
                fallthrough
            }
            hosts {
                192.0.2.9 web.default.svc.cluster.local
                fallthrough
            }
        }",
    );
    // hosts comes first in CoreDNS's order
    check_chain(
        &c,
        &index,
        "web.default.svc.cluster.local. A",
        "NOERROR\nanswer: web.default.svc.cluster.local. 3600 IN A 192.0.2.9",
    )
    .await;
    check_chain(
        &c,
        &index,
        "ext.other.svc.cluster.local. A",
        "NOERROR\nanswer: ext.other.svc.cluster.local. 5 IN CNAME example.com.",
    )
    .await;
    // NXDOMAIN in the cluster zone, covered by fallthrough: no next plugin answers → SERVFAIL
    check_chain(&c, &index, "db.default.svc.cluster.local. A", "SERVFAIL").await;
}

#[tokio::test]
async fn rewrite_rules() {
    let (c, index) = compile(
        ".:53 {
            rewrite name exact db.example.com. web.default.svc.cluster.local.
            rewrite name suffix .corp. .svc.cluster.local. answer auto
            rewrite continue name prefix x- web.
            rewrite name regex ^api-([a-z]+)\\.example\\.org$ web.{1}.svc.cluster.local
            kubernetes cluster.local in-addr.arpa ip6.arpa
        }",
    );
    check_chain(
        &c,
        &index,
        "db.example.com. A",
        "NOERROR\nanswer: db.example.com. 5 IN A 10.96.0.10",
    )
    .await;
    check_chain(
        &c,
        &index,
        "web.default.corp. A",
        "NOERROR\nanswer: web.default.corp. 5 IN A 10.96.0.10",
    )
    .await;
    // regex without answer auto: the answer keeps the rewritten name
    check_chain(
        &c,
        &index,
        "api-default.example.org. A",
        "NOERROR\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.10",
    )
    .await;
    check_chain(&c, &index, "nothing.example.org. A", "SERVFAIL").await;
}

// ---------------------------------------------------------------- cache

fn answer(name: &str, ttl: u32) -> Response {
    let record = Record::from_rdata(
        Name::from_ascii(name).expect("valid"),
        ttl,
        RData::A(A::new(192, 0, 2, 1)),
    );
    Response {
        answers: Section::Owned(vec![record]),
        ..Response::default()
    }
}

fn nxdomain(zone: &str, ttl: u32, minimum: u32) -> Response {
    let z = Name::from_ascii(zone).expect("valid");
    let soa = SOA::new(z.clone(), z.clone(), 1, 1, 1, 1, minimum);
    Response {
        rcode: ResponseCode::NXDomain,
        authorities: Section::Owned(vec![Record::from_rdata(z, ttl, RData::SOA(soa))]),
        ..Response::default()
    }
}

#[test]
fn cache_ttls() {
    let cache = Cache::new(
        &CacheConfig {
            max_ttl: 30,
            ..CacheConfig::default()
        },
        &[".".into()],
    );
    let key = |n: &str| (query(&format!("{n} A")).0, RecordType::A, DNSClass::IN);
    let t0 = Instant::now();
    let s = Duration::from_secs;
    // positive: TTL capped by max_ttl, decreasing with age, gone at expiry
    cache.insert(key("a.example."), &answer("a.example.", 300), t0);
    let (r, kind) = cache.get(&key("a.example."), t0 + s(10)).expect("cached");
    assert_eq!(
        (r.to_text(), kind),
        (
            "NOERROR\nanswer: a.example. 20 IN A 192.0.2.1".into(),
            Kind::Success
        )
    );
    assert!(cache.get(&key("a.example."), t0 + s(30)).is_none());
    // a TTL below min_ttl (5) is raised
    cache.insert(key("b.example."), &answer("b.example.", 1), t0);
    assert!(cache.get(&key("b.example."), t0 + s(4)).is_some());
    assert!(cache.get(&key("b.example."), t0 + s(5)).is_none());
    // negative: the SOA's min(ttl, minimum)
    cache.insert(key("c.example."), &nxdomain("example.", 60, 12), t0);
    let (r, kind) = cache.get(&key("c.example."), t0 + s(2)).expect("cached");
    assert_eq!(kind, Kind::Denial);
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert!(cache.get(&key("c.example."), t0 + s(12)).is_none());
    // no SOA, SERVFAIL: not cached
    cache.insert(
        key("d.example."),
        &Response::rcode(ResponseCode::NXDomain),
        t0,
    );
    cache.insert(
        key("e.example."),
        &Response::rcode(ResponseCode::ServFail),
        t0,
    );
    assert!(cache.get(&key("d.example."), t0).is_none());
    assert!(cache.get(&key("e.example."), t0).is_none());
    // capacity
    let small = Cache::new(
        &CacheConfig {
            success_capacity: 2,
            ..CacheConfig::default()
        },
        &[".".into()],
    );
    for n in ["1.example.", "2.example.", "3.example."] {
        small.insert(key(n), &answer(n, 60), t0);
    }
    assert_eq!(small.len(), (2, 0));
}

// ---------------------------------------------------------------- forward

#[test]
fn loopback_nameservers_are_replaced() {
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    let sa = |s: &str| -> SocketAddr { s.parse().expect("addr") };
    let file = parse_resolv_conf("# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\nnameserver 192.0.2.10\nnameserver ::1\n");
    assert_eq!(file, vec![ip("127.0.0.53"), ip("192.0.2.10"), ip("::1")]);
    let (got, warnings) = replace_loopback(
        &file,
        Some(&[ip("192.0.2.20"), ip("127.0.0.1"), ip("2001:db8::1")]),
    );
    assert_eq!(
        got,
        vec![
            sa("192.0.2.20:53"),
            sa("[2001:db8::1]:53"),
            sa("192.0.2.10:53")
        ]
    );
    assert!(warnings.is_empty());
    let (got, warnings) = replace_loopback(&file, None);
    assert_eq!(got, vec![sa("192.0.2.10:53")]);
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].contains("127.0.0.53"), "{warnings:?}");
}

#[test]
fn upstream_files_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    let systemd = dir.path().join("systemd-resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.53\n").expect("write");
    std::fs::write(&systemd, "nameserver 192.0.2.30\n").expect("write");
    let corefile = crate::corefile::parse(&format!(
        ".:53 {{\n forward . {} 192.0.2.40\n}}",
        resolv.display()
    ))
    .expect("valid");
    let forward = corefile.servers[0].forward().expect("forward");
    let got = resolve_upstreams(forward, &systemd).expect("readable");
    assert_eq!(
        got,
        vec![
            "192.0.2.30:53".parse::<SocketAddr>().expect("addr"),
            "192.0.2.40:53".parse().expect("addr")
        ]
    );
    std::fs::remove_file(&systemd).expect("rm");
    let got = resolve_upstreams(forward, &systemd).expect("readable");
    assert_eq!(
        got,
        vec!["192.0.2.40:53".parse::<SocketAddr>().expect("addr")]
    );
}

/// A tiny upstream on 127.0.0.1: answers A with 192.0.2.77 TTL 60; `big.test.` is truncated
/// over UDP and whole over TCP; `nx.test.` is NXDOMAIN. Counts the UDP queries it saw.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<std::sync::atomic::AtomicUsize>,
}

fn upstream_reply(request: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(request).ok()?;
    let q = req.queries.first()?.clone();
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_available = true;
    resp.metadata.recursion_desired = true;
    resp.add_query(q.clone());
    let name = q.name().to_ascii();
    if name == "nx.test." {
        resp.metadata.response_code = ResponseCode::NXDomain;
        let z = Name::from_ascii("test.").ok()?;
        resp.add_authority(Record::from_rdata(
            z.clone(),
            300,
            RData::SOA(SOA::new(z.clone(), z, 1, 1, 1, 1, 20)),
        ));
    } else if name == "big.test." && !tcp {
        resp.metadata.truncation = true;
    } else {
        let count = if name == "big.test." { 100 } else { 1 };
        for i in 0..count {
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 77u8.wrapping_add(i))),
            ));
        }
    }
    resp.to_vec().ok()
}

async fn start_upstream() -> Upstream {
    // A UDP port the kernel picks may be taken for TCP by another test: pick again then.
    let (udp, addr, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = udp.local_addr().expect("addr");
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, addr, tcp),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("bind tcp: {e}"),
        }
    };
    let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(reply) = upstream_reply(&buf[..n], false) {
                let _ = udp.send_to(&reply, from).await;
            }
        }
    });
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = tcp.accept().await {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut buf).await.is_err() {
                continue;
            }
            if let Some(reply) = upstream_reply(&buf, true) {
                let mut out = u16::try_from(reply.len())
                    .expect("small")
                    .to_be_bytes()
                    .to_vec();
                out.extend(reply);
                let _ = s.write_all(&out).await;
            }
        }
    });
    Upstream { addr, queries }
}

#[tokio::test]
async fn forward_cache_and_failover() {
    let up = start_upstream().await;
    // a silent upstream first: sequential policy tries it, times out, then the real one
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let (c, index) = compile(&format!(
        ".:53 {{
            kubernetes cluster.local in-addr.arpa ip6.arpa {{
                fallthrough in-addr.arpa ip6.arpa
            }}
            forward . {silent_addr} {} {{
                policy sequential
            }}
            cache 30
        }}",
        up.addr
    ));
    check_chain(
        &c,
        &index,
        "www.example.org. A",
        "NOERROR\nanswer: www.example.org. 30 IN A 192.0.2.77",
    )
    .await;
    let seen = up.queries.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(seen, 1);
    // from the cache: no new upstream query, TTL capped by `cache 30`
    check_chain(
        &c,
        &index,
        "www.example.org. A",
        "NOERROR\nanswer: www.example.org. 30 IN A 192.0.2.77",
    )
    .await;
    assert_eq!(up.queries.load(std::sync::atomic::Ordering::SeqCst), 1);
    // truncated over UDP: retried over TCP, whole answer
    let (name, _) = query("big.test. A");
    let (block, _) = c.select(53, &name).expect("block");
    let r = block
        .resolve(
            &index,
            &Metrics::default(),
            &name,
            RecordType::A,
            DNSClass::IN,
            Instant::now(),
        )
        .await;
    assert_eq!(r.answers.records().len(), 100);
    // negative answers are cached with their SOA
    check_chain(
        &c,
        &index,
        "nx.test. A",
        "NXDOMAIN\nauthority: test. 20 IN SOA test. test. 1 1 1 1 20",
    )
    .await;
    // cluster names are not forwarded; reverse names outside the cluster fall through
    check_chain(
        &c,
        &index,
        "web.default.svc.cluster.local. A",
        "NOERROR\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.10",
    )
    .await;
    check_chain(
        &c,
        &index,
        "1.2.0.192.in-addr.arpa. A",
        "NOERROR\nanswer: 1.2.0.192.in-addr.arpa. 30 IN A 192.0.2.77",
    )
    .await;
    drop(silent);

    // every upstream silent: SERVFAIL
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (c, index) = compile(&format!(
        ".:53 {{\n forward . {}\n}}",
        silent.local_addr().expect("addr")
    ));
    check_chain(&c, &index, "www.example.org. A", "SERVFAIL").await;
}

// ---------------------------------------------------------------- the real server, on loopback

fn wire_query(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("valid"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encodes")
}

fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Message {
    let s = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.send_to(bytes, server).expect("send");
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).expect("a reply");
    Message::from_vec(&buf[..n]).expect("a valid reply")
}

fn tcp_exchange(server: SocketAddr, bytes: &[u8]) -> Message {
    let mut s = StdTcpStream::connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = u16::try_from(bytes.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(bytes);
    s.write_all(&out).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).expect("body");
    Message::from_vec(&buf).expect("a valid reply")
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = StdTcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_server() {
    let mut index = cluster();
    index.apply_service(&service("default", "many", "None", &[]));
    let endpoints: Vec<String> = (0..60).map(|i| format!("10.245.0.{i}")).collect();
    let eps: Vec<Ep<'_>> = endpoints
        .iter()
        .map(|e| (e.as_str(), None, None, None))
        .collect();
    index.apply_slice(&slice("default", "many-1", "many", &eps, &[]));
    let corefile = ".:53 {
        errors
        health 127.0.0.1:8080
        ready 127.0.0.1:8181
        prometheus 127.0.0.1:9153
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
        }
    }
    example.net:53 {
        hosts {
            192.0.2.80 a.example.net
        }
    }";
    let opts = ServeOptions {
        listen_ip: "127.0.0.1".parse().expect("ip"),
        ephemeral_ports: true,
        env: env(),
    };
    let dns = serve(corefile, index, opts).await.expect("serves");
    let addr = dns.dns_addr(53).await.expect("bound");
    let health = dns
        .http_addr("127.0.0.1:8080".parse().expect("addr"))
        .await
        .expect("bound");
    let ready = dns
        .http_addr("127.0.0.1:8181".parse().expect("addr"))
        .await
        .expect("bound");
    let prom = dns
        .http_addr("127.0.0.1:9153".parse().expect("addr"))
        .await
        .expect("bound");
    let dns2 = dns.clone();

    tokio::task::spawn_blocking(move || {
        // the question's case comes back
        let r = udp_exchange(addr, &wire_query(1, "Web.DEFAULT.svc.Cluster.Local.", RecordType::A, None));
        assert_eq!(r.metadata.id, 1);
        assert!(r.metadata.authoritative);
        assert_eq!(r.queries[0].name().to_ascii(), "Web.DEFAULT.svc.Cluster.Local.");
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].to_string(), "Web.DEFAULT.svc.Cluster.Local. 5 IN A 10.96.0.10");

        // 60 endpoints do not fit 512 bytes: TC over UDP, all over TCP
        let q = wire_query(2, "many.default.svc.cluster.local.", RecordType::A, None);
        let r = udp_exchange(addr, &q);
        assert!(r.metadata.truncation, "TC expected");
        assert!(r.answers.len() < 60);
        let r = tcp_exchange(addr, &q);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        // with EDNS 4096 it fits over UDP
        let r = udp_exchange(addr, &wire_query(3, "many.default.svc.cluster.local.", RecordType::A, Some(4096)));
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);

        // NXDOMAIN with the SOA
        let r = udp_exchange(addr, &wire_query(4, "nope.default.svc.cluster.local.", RecordType::A, None));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1);

        // garbage: FORMERR, and the server keeps serving
        let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        garbage.extend([0x3f, 0xff, 0xfe, 0x01, 0x02]);
        let r = udp_exchange(addr, &garbage);
        assert_eq!((r.metadata.id, r.metadata.response_code), (0x1234, ResponseCode::FormErr));
        // two questions: FORMERR
        let mut m = Message::from_vec(&wire_query(5, "web.default.svc.cluster.local.", RecordType::A, None)).expect("parse");
        m.add_query(Query::query(Name::from_ascii("db.default.svc.cluster.local.").expect("valid"), RecordType::A));
        let r = udp_exchange(addr, &m.to_vec().expect("encodes"));
        assert_eq!((r.metadata.id, r.metadata.response_code), (5, ResponseCode::FormErr));
        // another opcode: NOTIMP
        let mut m = Message::from_vec(&wire_query(6, "web.default.svc.cluster.local.", RecordType::A, None)).expect("parse");
        m.metadata.op_code = OpCode::Status;
        let r = udp_exchange(addr, &m.to_vec().expect("encodes"));
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        // the second block (longest zone match)
        let r = tcp_exchange(addr, &wire_query(7, "a.example.net.", RecordType::A, None));
        assert_eq!(r.answers[0].to_string(), "a.example.net. 3600 IN A 192.0.2.80");
        // still serving
        let r = udp_exchange(addr, &wire_query(8, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV, None));
        assert_eq!(r.answers[0].to_string(), "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.");

        // HTTP
        assert!(http_get(health, "/health").starts_with("HTTP/1.1 200"));
        assert!(http_get(ready, "/ready").starts_with("HTTP/1.1 200"));
        let metrics = http_get(prom, "/metrics");
        assert!(
            metrics.contains(r#"coredns_dns_requests_total{server="dns://:53",zone=".",view="",proto="udp",family="1",type="A"}"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"rcode="NXDOMAIN""#), "{metrics}");
    })
    .await
    .expect("client");

    dns2.set_ready(false);
    let r = tokio::task::spawn_blocking(move || http_get(ready, "/ready"))
        .await
        .expect("client");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reconfiguration() {
    let opts = ServeOptions {
        listen_ip: "127.0.0.1".parse().expect("ip"),
        ephemeral_ports: true,
        env: env(),
    };
    let dns = serve(".:53 {\n kubernetes cluster.local\n}", cluster(), opts)
        .await
        .expect("serves");
    let addr = dns.dns_addr(53).await.expect("bound");
    let ask = move |name: &'static str| {
        tokio::task::spawn_blocking(move || {
            udp_exchange(addr, &wire_query(9, name, RecordType::A, None))
        })
    };
    let r = ask("web.default.svc.kins.test.").await.expect("client");
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);

    // an invalid Corefile is refused and the old one keeps serving
    let err = dns
        .reconfigure(".:53 {\n kubernetes cluster.local {\n bogus\n }\n}")
        .await
        .expect_err("invalid");
    assert!(!err.to_string().is_empty());
    let r = ask("web.default.svc.cluster.local.").await.expect("client");
    assert_eq!(r.answers.len(), 1);

    // a new zone and TTL: the index is rebuilt for it
    dns.reconfigure(".:53 {\n kubernetes kins.test {\n ttl 7\n }\n}")
        .await
        .expect("valid");
    let r = ask("web.default.svc.kins.test.").await.expect("client");
    assert_eq!(
        r.answers[0].to_string(),
        "web.default.svc.kins.test. 7 IN A 10.96.0.10"
    );
    let r = ask("web.default.svc.cluster.local.").await.expect("client");
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);

    // a watch event is visible to the next query
    dns.index()
        .write()
        .expect("lock")
        .apply_service(&service("default", "new", "10.96.0.99", &[]));
    let r = ask("new.default.svc.kins.test.").await.expect("client");
    assert_eq!(
        r.answers[0].to_string(),
        "new.default.svc.kins.test. 7 IN A 10.96.0.99"
    );
    dns.shutdown().await;
}

#[tokio::test]
async fn external_names_are_followed() {
    let (c, index) = compile(
        ".:53 {
            hosts {
                192.0.2.7 example.com
                fallthrough
            }
            kubernetes cluster.local
        }",
    );
    index.write().expect("lock").apply_service(&external(
        "default",
        "alias",
        "web.default.svc.cluster.local",
    ));
    // Outside the zone, through the rest of the chain (hosts here, forward in a cluster).
    check_chain(
        &c,
        &index,
        "ext.other.svc.cluster.local. A",
        "NOERROR\nanswer: ext.other.svc.cluster.local. 5 IN CNAME example.com.\nanswer: example.com. 3600 IN A 192.0.2.7",
    )
    .await;
    // Inside the zone, from the index.
    check_chain(
        &c,
        &index,
        "alias.default.svc.cluster.local. A",
        "NOERROR\nanswer: alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.\nanswer: web.default.svc.cluster.local. 5 IN A 10.96.0.10",
    )
    .await;
    // Asked for the CNAME itself: not followed.
    check_chain(
        &c,
        &index,
        "alias.default.svc.cluster.local. CNAME",
        "NOERROR\nanswer: alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
    )
    .await;
}
