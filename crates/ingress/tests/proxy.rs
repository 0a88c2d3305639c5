//! The data path end to end, on loopback only: upstream servers on 127.0.0.1:0, a table
//! whose EndpointSlices point at them, the proxy on 127.0.0.1:0 and plain clients.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingress::proxy::{self, Proxy};
use ingress::routes::{self, Identity, Inputs};
use ingress::{tls, Shared};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(10);

// ---- objects ----

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("a valid object"))
}

fn id() -> Identity {
    Identity {
        controller: "kins.dev/ingress-controller".into(),
        legacy_name: "kins".into(),
    }
}

fn ingress(name: &str, spec: Value) -> Arc<Ingress> {
    let mut spec = spec;
    spec["ingressClassName"] = json!("kins");
    obj(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": spec,
    }))
}

fn rule(host: &str, svc: &str) -> Value {
    json!({"host": host, "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}},
    ]}})
}

/// A Service `name` (port 80, "http") and, with endpoints, its EndpointSlice.
fn service(name: &str, endpoints: &[SocketAddr]) -> (Arc<Service>, Vec<Arc<EndpointSlice>>) {
    let svc = obj(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }));
    // One slice per endpoint (the target port differs between them).
    let slices = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            obj(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{name}-{i}"),
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": e.port()}],
                "endpoints": [{"addresses": [e.ip().to_string()], "conditions": {"ready": true}}],
            }))
        })
        .collect();
    (svc, slices)
}

fn tls_secret(name: &str, crt: &str, key: &str) -> Arc<Secret> {
    let mut s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "kubernetes.io/tls",
    }))
    .expect("a valid Secret");
    s.data = Some(BTreeMap::from([
        ("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec())),
        ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
    ]));
    Arc::new(s)
}

#[derive(Default)]
struct World {
    ingresses: Vec<Arc<Ingress>>,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    secrets: Vec<Arc<Secret>>,
}

impl World {
    fn new(ingresses: Vec<Arc<Ingress>>) -> World {
        World {
            ingresses,
            ..World::default()
        }
    }

    fn service(&mut self, name: &str, endpoints: &[SocketAddr]) {
        let (s, sl) = service(name, endpoints);
        self.services.push(s);
        self.slices.extend(sl);
    }

    fn install(&self, shared: &Shared) {
        let classes: Vec<Arc<IngressClass>> = vec![obj(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "kins"},
            "spec": {"controller": "kins.dev/ingress-controller"},
        }))];
        let t = routes::build(
            &Inputs {
                ingresses: &self.ingresses,
                classes: &classes,
                services: &self.services,
                slices: &self.slices,
                secrets: &self.secrets,
            },
            &id(),
            &shared.registry,
            &tls::parse_pem,
        );
        shared.set_table(t);
    }
}

/// The proxy serving `world` on 127.0.0.1, plain HTTP.
async fn start_proxy(world: &World) -> (SocketAddr, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    world.install(&shared);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(proxy::serve(l, Proxy::new(shared.clone()), None));
    (addr, shared)
}

// ---- upstreams ----

/// An HTTP/1.1 upstream on 127.0.0.1 whose response body is `upstream: NAME`, the
/// request line, the headers (one per line), a blank line and the request body. The
/// response carries hop-by-hop headers of its own. Each request body frame is also
/// sent to `frames`.
async fn echo_upstream(
    name: &'static str,
    frames: Option<mpsc::UnboundedSender<Bytes>>,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let frames = frames.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let frames = frames.clone();
                    async move {
                        let mut out = format!(
                            "upstream: {name}\n{} {} {:?}\n",
                            req.method(),
                            req.uri(),
                            req.version()
                        );
                        for (k, v) in req.headers() {
                            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                        }
                        out.push('\n');
                        let mut body = req.into_body();
                        while let Some(f) = body.frame().await {
                            let Ok(f) = f else { break };
                            if let Ok(d) = f.into_data() {
                                if let Some(tx) = &frames {
                                    let _ = tx.send(d.clone());
                                }
                                out.push_str(&String::from_utf8_lossy(&d));
                            }
                        }
                        let resp = Response::builder()
                            .header("x-upstream", name)
                            .header("keep-alive", "timeout=5")
                            .header("connection", "x-hop-resp")
                            .header("x-hop-resp", "secret")
                            .body(Full::new(Bytes::from(out)))
                            .expect("a response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A raw-TCP upstream that answers any request with 101 and then echoes bytes; the
/// request head it got is sent to `heads`.
async fn upgrade_upstream(heads: mpsc::UnboundedSender<String>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let _ = heads.send(head);
                let mut s = r.into_inner();
                if s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A loopback address nothing listens on (bound, then closed).
async fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("local addr")
}

// ---- a raw HTTP/1.1 client ----

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The request headers the echo upstream saw (lower-case names), in order.
    fn upstream_headers(&self) -> Vec<(String, String)> {
        let text = self.text();
        let head = text.split("\n\n").next().unwrap_or_default().to_string();
        head.lines()
            .skip(2)
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn upstream_header(&self, name: &str) -> Option<String> {
        self.upstream_headers()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The request line the upstream saw.
    fn upstream_request_line(&self) -> String {
        self.text().lines().nth(1).unwrap_or_default().to_string()
    }

    /// The request body the upstream saw.
    fn upstream_body(&self) -> String {
        self.text()
            .split_once("\n\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

struct Client<S> {
    io: BufReader<S>,
}

impl<S: tokio::io::AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, raw: &[u8]) {
        self.io.get_mut().write_all(raw).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        self.io.read_line(&mut l).await.expect("read");
        l
    }

    async fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line, got {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let l = self.line().await;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        (status, headers)
    }

    async fn read_response_inner(&mut self) -> Resp {
        let (status, headers) = self.read_head().await;
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if status == 101 || status == 204 || status == 304 {
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let size = self.line().await;
                let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
                let mut chunk = vec![0; size + 2];
                self.io.read_exact(&mut chunk).await.expect("a chunk");
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = get("content-length") {
            let n: usize = n.parse().expect("a content length");
            body.resize(n, 0);
            self.io.read_exact(&mut body).await.expect("the body");
        } else {
            self.io.read_to_end(&mut body).await.expect("the body");
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn read_response(&mut self) -> Resp {
        tokio::time::timeout(WAIT, self.read_response_inner())
            .await
            .expect("a response in time")
    }

    async fn get(&mut self, host: &str, target: &str, extra: &str) -> Resp {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        self.send(req.as_bytes()).await;
        self.read_response().await
    }
}

async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    Client {
        io: BufReader::new(s),
    }
}

// ---- tests ----

#[tokio::test]
async fn routes_by_host_and_keeps_the_connection_alive() {
    let a = echo_upstream("a", None).await;
    let b = echo_upstream("b", None).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("a.test", "a"), rule("b.test", "b")]}),
    )]);
    w.service("a", &[a]);
    w.service("b", &[b]);
    let (addr, shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    // Several requests, one client connection.
    for (host, want) in [
        ("a.test", "a"),
        ("b.test", "b"),
        ("A.TEST:8080", "a"),
        ("b.test", "b"),
    ] {
        let r = c.get(host, "/some/path?x=1&y=2", "").await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some(want), "{host}");
        assert_eq!(
            r.upstream_request_line(),
            "GET /some/path?x=1&y=2 HTTP/1.1",
            "{host}"
        );
        assert_eq!(r.upstream_header("host").as_deref(), Some(host), "{host}");
    }
    let metrics = ingress::metrics::render(&shared.registry, &shared.global);
    let a_2xx = r#"kins_ingress_requests_total{namespace="default",ingress="web",service="default/a",port="80",status="2xx"} 2"#;
    assert!(metrics.lines().any(|l| l == a_2xx), "{metrics}");
}

#[tokio::test]
async fn sets_forwarded_headers_and_drops_hop_by_hop() {
    let a = echo_upstream("a", None).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("a.test", "a")]}),
    )]);
    w.service("a", &[a]);
    let (addr, _shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    let r = c
        .get(
            "a.test",
            "/",
            "X-Forwarded-For: 203.0.113.7\r\n\
             X-Real-IP: 198.51.100.1\r\n\
             X-Forwarded-Proto: https\r\n\
             Connection: keep-alive, X-Custom-Hop\r\n\
             X-Custom-Hop: secret\r\n\
             Keep-Alive: timeout=5\r\n\
             TE: trailers\r\n\
             Trailer: X-Checksum\r\n\
             Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
             Proxy-Connection: keep-alive\r\n\
             Upgrade: h2c\r\n\
             X-End-To-End: kept\r\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(r.upstream_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("a.test")
    );
    assert_eq!(r.upstream_header("x-end-to-end").as_deref(), Some("kept"));
    let seen: Vec<String> = r.upstream_headers().into_iter().map(|(k, _)| k).collect();
    for hop in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(!seen.iter().any(|k| k == hop), "{hop} forwarded: {seen:?}");
    }
    // One value each, not appended copies.
    assert_eq!(
        seen.iter().filter(|k| *k == "x-forwarded-for").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|k| *k == "x-real-ip").count(),
        1,
        "{seen:?}"
    );
    // The upstream's own hop-by-hop headers do not reach the client.
    assert_eq!(r.header("x-hop-resp"), None, "{:?}", r.headers);
    assert_eq!(r.header("keep-alive"), None, "{:?}", r.headers);
    assert_eq!(r.header("x-upstream"), Some("a"));

    // X-Forwarded-For sent as several lines is one list (RFC 9110 §5.3): all of it is kept.
    let r = c
        .get(
            "a.test",
            "/",
            "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.9, 192.0.2.1\r\n",
        )
        .await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 198.51.100.9, 192.0.2.1, 127.0.0.1")
    );

    // Without a previous X-Forwarded-For the client's address is the whole value.
    let r = c.get("a.test", "/", "").await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn streams_the_request_body() {
    let (tx, mut frames) = mpsc::unbounded_channel();
    let a = echo_upstream("a", Some(tx)).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("a.test", "a")]}),
    )]);
    w.service("a", &[a]);
    let (addr, _shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await;
    // The first chunk reaches the upstream before the client has sent the rest.
    let first = tokio::time::timeout(WAIT, frames.recv())
        .await
        .expect("the first chunk upstream before the body ends")
        .expect("a frame");
    assert_eq!(&first[..], b"hello");
    c.send(b"6\r\n world\r\n0\r\n\r\n").await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_body(), "hello world");
    assert_eq!(r.upstream_request_line(), "POST /upload HTTP/1.1");

    // A Content-Length body, then another request on the same connection.
    c.send(b"PUT /put HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nfixed body!")
        .await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_body(), "fixed body!");
    assert_eq!(r.upstream_header("content-length").as_deref(), Some("11"));
    let r = c.get("a.test", "/after", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn errors_404_503_502() {
    let live = echo_upstream("live", None).await;
    let dead = refusing_addr().await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [
            rule("empty.test", "empty"),
            rule("dead.test", "dead"),
            rule("half.test", "half"),
        ]}),
    )]);
    w.service("empty", &[]);
    w.service("dead", &[dead]);
    w.service("half", &[dead, live]);
    let (addr, shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;

    let r = c.get("nothing.test", "/", "").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no Ingress rule"), "{}", r.text());

    let start = Instant::now();
    let r = c.get("empty.test", "/", "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(r.text().contains("no ready endpoints"), "{}", r.text());

    let r = c.get("dead.test", "/", "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains(&dead.to_string()), "{}", r.text());

    // One endpoint refusing, one alive: a bodyless request is retried on the other.
    for _ in 0..4 {
        let r = c.get("half.test", "/", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("live"));
    }
    // The connection survived all of it.
    let r = c.get("nothing.test", "/", "").await;
    assert_eq!(r.status, 404);

    let metrics = ingress::metrics::render(&shared.registry, &shared.global);
    for line in [
        "kins_ingress_unrouted_total 2",
        r#"kins_ingress_no_endpoints_total{namespace="default",ingress="web",service="default/empty",port="80"} 1"#,
        r#"kins_ingress_requests_total{namespace="default",ingress="web",service="default/dead",port="80",status="5xx"} 1"#,
        r#"kins_ingress_requests_total{namespace="default",ingress="web",service="default/half",port="80",status="2xx"} 4"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
}

fn self_signed(names: &[&str]) -> (String, String, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().to_vec(),
    )
}

fn tls_world(upstream: SocketAddr, crt: &str, key: &str) -> World {
    let mut w = World::new(vec![ingress(
        "web",
        json!({
            "tls": [{"hosts": ["secure.test"], "secretName": "certs"}],
            "rules": [rule("secure.test", "a"), rule("plain.test", "a")],
        }),
    )]);
    w.service("a", &[upstream]);
    w.secrets = vec![tls_secret("certs", crt, key)];
    w
}

#[tokio::test]
async fn redirects_a_tls_host_over_plain_http() {
    let a = echo_upstream("a", None).await;
    let (crt, key, _) = self_signed(&["secure.test"]);
    let (addr, _shared) = start_proxy(&tls_world(a, &crt, &key)).await;
    let mut c = connect(addr).await;
    let r = c.get("Secure.Test:8080", "/some/path?q=1&r=2", "").await;
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("https://secure.test/some/path?q=1&r=2")
    );
    let r = c.get("secure.test", "/", "").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://secure.test/"));
    // A host without TLS is proxied.
    let r = c.get("plain.test", "/", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn websocket_upgrade_is_spliced() {
    let (tx, mut heads) = mpsc::unbounded_channel();
    let up = upgrade_upstream(tx).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("ws.test", "ws")]}),
    )]);
    w.service("ws", &[up]);
    let (addr, _shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    c.send(
        b"GET /chat?room=1 HTTP/1.1\r\nHost: ws.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let (status, headers) = tokio::time::timeout(WAIT, c.read_head())
        .await
        .expect("a 101 in time");
    assert_eq!(status, 101, "{headers:?}");
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    assert_eq!(h("upgrade").as_deref(), Some("websocket"), "{headers:?}");
    assert!(
        h("connection").is_some_and(|v| v.contains("upgrade")),
        "{headers:?}"
    );
    let head = heads
        .recv()
        .await
        .expect("the upstream's request head")
        .to_ascii_lowercase();
    assert!(head.starts_with("get /chat?room=1 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"\x81\x05world", &[0u8; 3000][..]] {
        c.send(msg).await;
        let mut back = vec![0; msg.len()];
        tokio::time::timeout(WAIT, c.io.read_exact(&mut back))
            .await
            .expect("the echo in time")
            .expect("the echo");
        assert_eq!(back, msg);
    }
}

// ---- HTTPS ----

/// Accepts any server certificate (the test checks which one it got).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("a server name");
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("a TLS handshake")
}

fn peer_cert(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a peer certificate")
}

#[tokio::test]
async fn https_by_sni_over_http1_and_http2() {
    let a = echo_upstream("a", None).await;
    let (crt, key, der) = self_signed(&["secure.test"]);
    let shared = Arc::new(Shared::default());
    tls_world(a, &crt, &key).install(&shared);
    let default = tls::default_cert().expect("the default certificate");
    let default_der = default.cert[0].to_vec();
    let cfg = tls::server_config(tls::Resolver {
        shared: shared.clone(),
        default,
    })
    .expect("a server config");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(proxy::serve(
        l,
        Proxy::new(shared.clone()),
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
    ));

    // HTTP/1.1: the Ingress's certificate, no redirect, X-Forwarded-Proto https.
    let s = tls_connect(addr, "secure.test", b"http/1.1").await;
    assert_eq!(peer_cert(&s), der);
    let mut c = Client {
        io: BufReader::new(s),
    };
    let r = c.get("secure.test", "/tls?x=1", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_request_line(), "GET /tls?x=1 HTTP/1.1");
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    let r = c.get("secure.test", "/again", "").await;
    assert_eq!(r.status, 200);

    // Another name gets the default certificate.
    let s = tls_connect(addr, "plain.test", b"http/1.1").await;
    assert_eq!(peer_cert(&s), default_der);

    // HTTP/2 by ALPN: routed by :authority, sent upstream as HTTP/1.1 with a Host.
    let s = tls_connect(addr, "secure.test", b"h2").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("an h2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::builder()
            .method("POST")
            .uri(format!("https://secure.test/h2/{i}?q=1"))
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .expect("a request");
        let resp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .expect("an h2 response in time")
            .expect("an h2 response");
        assert_eq!(resp.status(), 200);
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        let r = Resp {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        assert_eq!(
            r.upstream_request_line(),
            format!("POST /h2/{i}?q=1 HTTP/1.1")
        );
        assert_eq!(r.upstream_header("host").as_deref(), Some("secure.test"));
        assert_eq!(
            r.upstream_header("x-forwarded-proto").as_deref(),
            Some("https")
        );
        assert_eq!(
            r.upstream_header("x-forwarded-host").as_deref(),
            Some("secure.test")
        );
        assert_eq!(r.upstream_body(), format!("body {i}"));
    }
}

/// An HTTP/2 request body of unknown length (no Content-Length: the client streams it)
/// through a backend whose first endpoint refuses connections: the body must reach
/// the upstream whole, never be dropped by a retry.
#[tokio::test]
async fn h2_streamed_body_survives_a_refused_endpoint() {
    let live = echo_upstream("live", None).await;
    let dead = refusing_addr().await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("half.test", "half")]}),
    )]);
    w.service("half", &[dead, live]);
    let (addr, _shared) = start_proxy(&w).await;
    // HTTP/2 with prior knowledge on the plain listener.
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("an h2 handshake");
    tokio::spawn(conn);
    // Round robin: of two requests, at least one tries the refusing endpoint first.
    for i in 0..2 {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = vec![
            Ok(hyper::body::Frame::data(Bytes::from(format!(
                "part one {i}, "
            )))),
            Ok(hyper::body::Frame::data(Bytes::from_static(b"part two"))),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks)).boxed();
        let req = Request::builder()
            .method("POST")
            .uri("http://half.test/upload")
            .body(body)
            .expect("a request");
        let resp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .expect("an h2 response in time")
            .expect("an h2 response");
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        let r = Resp {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        // A 502 would be acceptable (the body cannot be replayed); an empty body is not.
        if r.status == 200 {
            assert_eq!(
                r.upstream_body(),
                format!("part one {i}, part two"),
                "request {i}"
            );
        } else {
            assert_eq!(r.status, 502, "request {i}: {}", r.text());
        }
    }
    // Bodyless HTTP/2 requests are still retried on the other endpoint.
    for i in 0..4 {
        let req = Request::builder()
            .uri(format!("http://half.test/get/{i}"))
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|n| match n {})
                    .boxed(),
            )
            .expect("a request");
        let resp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .expect("an h2 response in time")
            .expect("an h2 response");
        assert_eq!(resp.status(), 200, "request {i}");
    }
}
