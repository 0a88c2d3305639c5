//! The data path end to end, on loopback only: upstream servers on 127.0.0.1:0, a table
//! whose EndpointSlices point at them, the proxy on 127.0.0.1:0 and plain clients.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
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

/// A request body's sender: each `Bytes` is one piece of the body, in order; dropping
/// it ends the body.
type Feeder = mpsc::UnboundedSender<Bytes>;

/// An HTTP/1.1 upstream whose response bodies the test writes: for each request it hands
/// the test a [`Feeder`] and answers 200 at once (headers `x-upstream: NAME`, no
/// Content-Length), then streams whatever the test feeds, as it comes.
async fn gated_upstream(name: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<Feeder>) {
    let (feeders_tx, feeders) = mpsc::unbounded_channel();
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let feeders_tx = feeders_tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let feeders_tx = feeders_tx.clone();
                    async move {
                        // The request body, if any, is read first.
                        let _ = req.into_body().collect().await;
                        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                        let _ = feeders_tx.send(tx);
                        let pieces = futures::stream::unfold(rx, |mut rx| async move {
                            let b = rx.recv().await?;
                            Some((Ok::<_, Infallible>(Frame::data(b)), rx))
                        });
                        let resp = Response::builder()
                            .header("x-upstream", name)
                            .body(StreamBody::new(pieces).boxed())
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
    (addr, feeders)
}

/// The byte at `offset` of the large bodies (a pattern that shows loss and reordering).
fn pattern(offset: usize) -> u8 {
    u8::try_from(offset % 251).expect("below 251")
}

/// `len` bytes of the pattern from `offset` on.
fn pattern_bytes(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(pattern).collect()
}

/// An HTTP/1.1 upstream that reads the request body frame by frame, checks it against
/// [`pattern`], sends the running byte count to `progress` after every frame and answers
/// `bytes=N intact=BOOL content-length=VALUE`.
async fn counting_upstream(progress: mpsc::UnboundedSender<usize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let progress = progress.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let progress = progress.clone();
                    async move {
                        let cl = req
                            .headers()
                            .get("content-length")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_string();
                        let mut body = req.into_body();
                        let (mut n, mut intact) = (0usize, true);
                        while let Some(f) = body.frame().await {
                            let Ok(f) = f else {
                                intact = false;
                                break;
                            };
                            if let Ok(d) = f.into_data() {
                                intact &= d.iter().enumerate().all(|(i, b)| *b == pattern(n + i));
                                n += d.len();
                                let _ = progress.send(n);
                            }
                        }
                        let out = format!("bytes={n} intact={intact} content-length={cl}");
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(out))))
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

    /// One chunk of a chunked body: its data, or None for the last (empty) chunk.
    async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let size = self.line().await;
        let size = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("a chunk size, got {size:?}"));
        let mut chunk = vec![0; size + 2];
        self.io.read_exact(&mut chunk).await.expect("a chunk");
        assert_eq!(&chunk[size..], b"\r\n", "a chunk's CRLF");
        chunk.truncate(size);
        (size > 0).then_some(chunk)
    }

    /// Exactly `n` more bytes of a chunked body (the proxy may split a piece across
    /// chunks, never merge beyond what was sent), in time.
    async fn read_body_bytes(&mut self, n: usize) -> Vec<u8> {
        let read = async {
            let mut out = Vec::new();
            while out.len() < n {
                let chunk = self
                    .read_chunk()
                    .await
                    .expect("more of the body, not its end");
                out.extend_from_slice(&chunk);
            }
            out
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("the body's next bytes in time")
    }

    /// The end of a chunked body (the last chunk, no trailers), in time.
    async fn read_body_end(&mut self) {
        let chunk = tokio::time::timeout(WAIT, self.read_chunk())
            .await
            .expect("the body's end in time");
        assert_eq!(chunk, None, "the body's end");
    }

    /// The head of a response, in time.
    async fn read_head_in_time(&mut self) -> (u16, Vec<(String, String)>) {
        tokio::time::timeout(WAIT, self.read_head())
            .await
            .expect("a response head in time")
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
             X-Forwarded-Port: 1234\r\n\
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
    // The port of the listener the request came in on, not the client's claim.
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        Some(addr.port().to_string())
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
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        Some(addr.port().to_string())
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
        assert_eq!(
            r.upstream_header("x-forwarded-port"),
            Some(addr.port().to_string())
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

// ---- the listener's port, the request target's authority ----

/// One proxy serving two listeners (as each worker serves :80 and :443): X-Forwarded-Port
/// is the port of the listener each request came in on.
#[tokio::test]
async fn forwarded_port_is_the_listeners() {
    let a = echo_upstream("a", None).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("a.test", "a")]}),
    )]);
    w.service("a", &[a]);
    let shared = Arc::new(Shared::default());
    w.install(&shared);
    let p = Proxy::new(shared.clone());
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(l.local_addr().expect("local addr"));
        tokio::spawn(proxy::serve(l, p.clone(), None));
    }
    assert_ne!(addrs[0].port(), addrs[1].port());
    for addr in addrs.iter().chain(addrs.iter()) {
        let mut c = connect(*addr).await;
        // Also with a port in Host: that is the client's idea, not the listener's.
        for host in ["a.test", "a.test:8443"] {
            let r = c.get(host, "/", "X-Forwarded-Port: 1\r\n").await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                r.upstream_header("x-forwarded-port"),
                Some(addr.port().to_string()),
                "{host} via {addr}"
            );
        }
    }
}

/// An absolute-form target (RFC 9112 §3.2.2): its authority routes the request and
/// replaces the client's Host upstream; origin-form requests keep their Host.
#[tokio::test]
async fn absolute_form_authority_wins_over_host() {
    let a = echo_upstream("a", None).await;
    let b = echo_upstream("b", None).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("a.example", "a"), rule("b.example", "b")]}),
    )]);
    w.service("a", &[a]);
    w.service("b", &[b]);
    let (addr, _shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    for (target, want_host) in [
        ("http://a.example/x?q=1", "a.example"),
        ("http://A.Example:8080/x?q=1", "A.Example:8080"),
        ("http://user:pw@a.example/x?q=1", "a.example"),
    ] {
        let r = c.get("b.example", target, "").await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some("a"), "{target}");
        assert_eq!(r.upstream_request_line(), "GET /x?q=1 HTTP/1.1", "{target}");
        let hosts: Vec<String> = r
            .upstream_headers()
            .into_iter()
            .filter(|(k, _)| k == "host")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(hosts, [want_host], "{target}");
        assert_eq!(
            r.upstream_header("x-forwarded-host").as_deref(),
            Some(want_host),
            "{target}"
        );
    }
    // Origin form on the same connection: Host routes and is forwarded as sent.
    let r = c.get("b.example", "/x", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("b"));
    assert_eq!(r.upstream_header("host").as_deref(), Some("b.example"));
}

// ---- configuration changes and streaming ----

/// A new table swapped in while a response streams: the request in flight keeps its
/// backend and completes intact; requests started after the swap see the new table, on
/// new connections and on the in-flight request's own (after it ends).
#[tokio::test]
async fn table_swaps_never_drop_requests_in_flight() {
    let (slow, mut feeders) = gated_upstream("slow").await;
    let other = echo_upstream("other", None).await;
    let world = |ingresses: Vec<Arc<Ingress>>| {
        let mut w = World::new(ingresses);
        w.service("slow", &[slow]);
        w.service("other", &[other]);
        w
    };
    let to = |svc: &str| ingress("web", json!({"rules": [rule("swap.test", svc)]}));
    let (addr, shared) = start_proxy(&world(vec![to("slow")])).await;

    let mut inflight = connect(addr).await;
    inflight
        .send(b"GET /stream HTTP/1.1\r\nHost: swap.test\r\n\r\n")
        .await;
    let feed = tokio::time::timeout(WAIT, feeders.recv())
        .await
        .expect("the request upstream in time")
        .expect("a feeder");
    let pieces: Vec<Vec<u8>> = (0..6)
        .map(|i| pattern_bytes(i * 10_000, 10_000 + i))
        .collect();
    feed.send(Bytes::from(pieces[0].clone())).expect("feed");
    let (status, headers) = inflight.read_head_in_time().await;
    assert_eq!(status, 200, "{headers:?}");
    assert!(
        headers.contains(&("x-upstream".into(), "slow".into())),
        "{headers:?}"
    );
    let mut got = inflight.read_body_bytes(pieces[0].len()).await;

    // The Ingress now points elsewhere: a new request goes there.
    world(vec![to("other")]).install(&shared);
    let mut after = connect(addr).await;
    let r = after.get("swap.test", "/new", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("other"));

    // The rest of the body, a piece every 50 ms; halfway through, the Ingress goes.
    for (i, piece) in pieces.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if i == 3 {
            world(Vec::new()).install(&shared);
            let r = after.get("swap.test", "/gone", "").await;
            assert_eq!(r.status, 404, "{}", r.text());
        }
        feed.send(Bytes::from(piece.clone())).expect("feed");
        got.extend(inflight.read_body_bytes(piece.len()).await);
    }
    drop(feed);
    inflight.read_body_end().await;
    assert_eq!(
        got,
        pieces.concat(),
        "the in-flight body, whole and in order"
    );

    // The in-flight request's connection lives on, with the table current now.
    let r = inflight.get("swap.test", "/next", "").await;
    assert_eq!(r.status, 404, "{}", r.text());
    world(vec![to("other")]).install(&shared);
    let r = inflight.get("swap.test", "/next", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("other"));
}

/// A request body of several MB streams through: the upstream sees the start of it
/// before the client has sent the end, and gets every byte in order (Content-Length
/// and chunked, one client connection).
#[tokio::test]
async fn streams_a_large_request_body() {
    const LEN: usize = 8 << 20;
    const HALF: usize = LEN / 2;
    let (tx, mut progress) = mpsc::unbounded_channel();
    let up = counting_upstream(tx).await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("big.test", "big")]}),
    )]);
    w.service("big", &[up]);
    let (addr, _shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    let body = pattern_bytes(0, LEN);

    // Waits until the upstream has counted at least `n` bytes of the current body.
    async fn upstream_reaches(progress: &mut mpsc::UnboundedReceiver<usize>, n: usize) {
        let wait = async { while progress.recv().await.expect("progress") < n {} };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{n} bytes upstream before the client sent the rest"));
    }

    // Content-Length: half the body, then the upstream must have part of it.
    c.send(
        format!("PUT /big HTTP/1.1\r\nHost: big.test\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
    )
    .await;
    c.send(&body[..HALF]).await;
    upstream_reaches(&mut progress, 1 << 20).await;
    c.send(&body[HALF..]).await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("bytes={LEN} intact=true content-length={LEN}")
    );
    while progress.try_recv().is_ok() {}

    // Chunked, 64 KiB a chunk, on the same connection.
    c.send(b"POST /big HTTP/1.1\r\nHost: big.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for (i, chunk) in body.chunks(64 << 10).enumerate() {
        if i * (64 << 10) == HALF {
            upstream_reaches(&mut progress, 1 << 20).await;
        }
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        c.send(&frame).await;
    }
    c.send(b"0\r\n\r\n").await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("bytes={LEN} intact=true content-length=none")
    );
}

/// A response body the upstream streams arrives piece by piece: the head before any of
/// the body, each piece before the upstream has been given the next, so the client has
/// the first before the upstream sends the last.
#[tokio::test]
async fn streams_the_response_body_chunk_by_chunk() {
    let (up, mut feeders) = gated_upstream("gated").await;
    let mut w = World::new(vec![ingress(
        "web",
        json!({"rules": [rule("chunks.test", "gated")]}),
    )]);
    w.service("gated", &[up]);
    let (addr, _shared) = start_proxy(&w).await;
    let mut c = connect(addr).await;
    // Small pieces and one of 1 MiB.
    let sizes = [5, 1, 4096, 1 << 20, 17];
    let mut offset = 0;
    for round in 0..2 {
        c.send(b"GET /chunks HTTP/1.1\r\nHost: chunks.test\r\n\r\n")
            .await;
        let feed = tokio::time::timeout(WAIT, feeders.recv())
            .await
            .expect("the request upstream in time")
            .expect("a feeder");
        let (status, headers) = c.read_head_in_time().await;
        assert_eq!(status, 200, "{headers:?}");
        assert!(
            headers.contains(&("transfer-encoding".into(), "chunked".into())),
            "round {round}: {headers:?}"
        );
        let mut got = Vec::new();
        let mut sent = Vec::new();
        for size in sizes {
            let piece = pattern_bytes(offset, size);
            offset += size;
            feed.send(Bytes::from(piece.clone())).expect("feed");
            // Read through the proxy before the upstream has the next piece to send.
            let back = c.read_body_bytes(size).await;
            assert_eq!(back, piece, "round {round}: a piece of {size} bytes");
            got.extend(back);
            sent.extend(piece);
        }
        drop(feed);
        c.read_body_end().await;
        assert_eq!(got, sent);
    }
}
