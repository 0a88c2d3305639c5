//! The data path: a hyper server (HTTP/1.1 and HTTP/2, TLS by SNI on the HTTPS listener)
//! whose every request is looked up in the current table and sent straight to one of the
//! backend's ready endpoint pod IPs over a pooled keep-alive connection (hyper-util's
//! client). Bodies stream both ways; WebSocket (any HTTP/1.1 upgrade) is spliced.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, LOCATION, UPGRADE};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Shared;

/// Bodies both ways.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The proxy: shared state and the upstream connection pool.
pub struct Proxy {
    shared: Arc<Shared>,
    client: Client<HttpConnector, Body>,
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n: Infallible| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty() -> Body {
    Empty::new().map_err(|n: Infallible| match n {}).boxed()
}

/// Whether the request asks for a protocol switch (WebSocket).
fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE)
        && h.get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Drops hop-by-hop headers and those the Connection header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Whether a request has no body (so it can be sent again to another endpoint).
fn bodyless(h: &HeaderMap) -> bool {
    !h.contains_key(hyper::header::TRANSFER_ENCODING)
        && h.get(hyper::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Arc<Proxy> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .build(http);
        Arc::new(Proxy { shared, client })
    }

    /// One request, from the client at `peer`, over TLS or not, received on the listener
    /// bound to `local_port` (what X-Forwarded-Port says).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        local_port: u16,
        tls: bool,
    ) -> Response<Body> {
        let start = Instant::now();
        let table = self.shared.table();
        // The target's authority (absolute form, HTTP/2's :authority) wins over Host
        // (RFC 9112 §3.2.2, RFC 9113 §8.3.1); userinfo is not part of the host.
        let authority = req
            .uri()
            .authority()
            .map(|a| {
                a.as_str()
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .filter(|a| !a.is_empty());
        let host = authority
            .clone()
            .or_else(|| {
                req.headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let Some(route) = table.route(&host, req.uri().path()) else {
            self.shared.global.unrouted.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::NOT_FOUND,
                "404 page not found: no Ingress rule matches this host and path\n".into(),
            );
        };
        let b = &route.backend;
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if route.redirect_https && !tls {
            let bare = crate::routes::normalize_host(&host);
            let mut r = text(
                StatusCode::PERMANENT_REDIRECT,
                format!("redirecting to https://{bare}{pq}\n"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("https://{bare}{pq}")) {
                r.headers_mut().insert(LOCATION, v);
            }
            b.stats.observe(308, start.elapsed());
            return r;
        }
        let Some(mut ep) = b.pick() else {
            b.stats.no_endpoints.fetch_add(1, Ordering::Relaxed);
            b.stats.observe(503, start.elapsed());
            let what = if b.service.is_empty() {
                "this backend is not a Service".to_string()
            } else {
                format!(
                    "no ready endpoints for service {}/{} port {}",
                    b.namespace, b.service, b.port
                )
            };
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("503 Service Unavailable: {what}\n"),
            );
        };
        let upgrade = is_upgrade(req.headers());
        let from_client = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Only a real upgrade (Connection names it) is passed on: a stray Upgrade header
        // is hop-by-hop like any other.
        let upgrade_to = parts.headers.get(UPGRADE).filter(|_| upgrade).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = upgrade_to {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(UPGRADE, u);
        }
        let h = &mut parts.headers;
        // Host is the authority the request was routed by: replaced by the target's when
        // it has one, added when missing.
        if authority.is_some() || !h.contains_key(HOST) {
            if let Ok(v) = HeaderValue::from_str(&host) {
                h.insert(HOST, v);
            }
        }
        let ip = peer.ip().to_string();
        // Several X-Forwarded-For lines are one list: keep them all.
        let prev: Vec<&str> = h
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let xff = if prev.is_empty() {
            ip.clone()
        } else {
            format!("{}, {ip}", prev.join(", "))
        };
        let proto = if tls { "https" } else { "http" };
        let port = local_port.to_string();
        for (name, value) in [
            ("x-forwarded-for", xff.as_str()),
            ("x-real-ip", ip.as_str()),
            ("x-forwarded-proto", proto),
            ("x-forwarded-host", host.as_str()),
            ("x-forwarded-port", port.as_str()),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        parts.version = Version::HTTP_11;
        // A request without a body can go to another endpoint if a connection fails. The
        // headers alone do not tell: an HTTP/2 body needs no Content-Length.
        let retry = (!upgrade && bodyless(&parts.headers) && body.is_end_stream())
            .then(|| (parts.method.clone(), parts.headers.clone()));
        parts.uri = upstream_uri(ep, &pq);
        let mut sent = self
            .client
            .request(Request::from_parts(parts, body.boxed()));
        let mut tries = 1;
        let result = loop {
            match sent.await {
                Err(e) if e.is_connect() && tries < b.endpoints.len().min(3) => {
                    b.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    let Some((method, headers)) = &retry else {
                        break Err(e);
                    };
                    tries += 1;
                    ep = b.pick().unwrap_or(ep);
                    let mut again = Request::new(empty());
                    *again.method_mut() = method.clone();
                    *again.headers_mut() = headers.clone();
                    *again.uri_mut() = upstream_uri(ep, &pq);
                    sent = self.client.request(again);
                }
                r => break r,
            }
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                b.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                b.stats.observe(502, start.elapsed());
                tracing::debug!(endpoint = %ep, error = %e, "upstream");
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "502 Bad Gateway: endpoint {ep} of service {}/{}: {e}\n",
                        b.namespace, b.service
                    ),
                );
            }
        };
        b.stats.observe(resp.status().as_u16(), start.elapsed());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(from_client) = from_client {
                let to_upstream = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (Ok(c), Ok(u)) = (from_client.await, to_upstream.await) else {
                        return;
                    };
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                });
                let (rparts, _) = resp.into_parts();
                return Response::from_parts(rparts, empty());
            }
        }
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        Response::from_parts(rparts, rbody.boxed())
    }
}

fn upstream_uri(ep: SocketAddr, pq: &str) -> Uri {
    format!("http://{ep}{pq}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("http://0.0.0.0/"))
}

/// A listener bound with SO_REUSEPORT, so each worker thread has its own accept queue.
fn reuseport_listener(addr: SocketAddr) -> Result<TcpListener, crate::IngressError> {
    let err = |source| crate::IngressError::Listen { addr, source };
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.set_reuseport(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(1024).map_err(err)
}

/// The data path as nginx runs it: `workers` threads, each with its own single-threaded
/// runtime, its own SO_REUSEPORT listeners on `http` and `https` and its own upstream
/// pool, so a request never crosses threads (a multi-threaded runtime spent as much time
/// waking its other worker as proxying). Returns once every worker listens.
pub fn spawn_workers(
    workers: usize,
    http: SocketAddr,
    https: SocketAddr,
    shared: Arc<Shared>,
    tls: TlsAcceptor,
) -> Result<(), crate::IngressError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for i in 0..workers.max(1) {
        let (shared, tls, ready) = (shared.clone(), tls.clone(), ready_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ingress-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(crate::IngressError::Listen {
                            addr: http,
                            source: e,
                        }));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listeners =
                        reuseport_listener(http).and_then(|h| Ok((h, reuseport_listener(https)?)));
                    let (h, s) = match listeners {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let proxy = Proxy::new(shared);
                    tokio::join!(serve(h, proxy.clone(), None), serve(s, proxy, Some(tls)));
                });
            });
        if let Err(e) = spawned {
            return Err(crate::IngressError::Listen {
                addr: http,
                source: e,
            });
        }
    }
    drop(ready_tx);
    // Each worker says once whether it listens (its sender lives as long as it does).
    for _ in 0..workers.max(1) {
        match ready_rx.recv() {
            Ok(r) => r?,
            Err(_) => break,
        }
    }
    Ok(())
}

/// Accepts connections on `listener` forever; with `tls`, each is a TLS handshake first.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, tls: Option<TlsAcceptor>) {
    // The port requests arrive on, for X-Forwarded-Port (the scheme's default should the
    // socket not say).
    let local_port = listener
        .local_addr()
        .map_or(if tls.is_some() { 443 } else { 80 }, |a| a.port());
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let proxy = proxy.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(sock, peer, local_port, false, proxy).await,
                Some(acceptor) => match acceptor.accept(sock).await {
                    Ok(s) => serve_conn(s, peer, local_port, true, proxy).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "tls handshake"),
                },
            }
        });
    }
}

async fn serve_conn<I>(io: I, peer: SocketAddr, local_port: u16, tls: bool, proxy: Arc<Proxy>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let p = proxy.clone();
        async move { Ok::<_, Infallible>(p.handle(req, peer, local_port, tls).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection");
    }
}
