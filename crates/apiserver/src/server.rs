//! HTTPS serving: TLS with optional client certificates, authentication, and the one
//! dispatcher that routes every Kubernetes path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tower::ServiceExt;

use crate::auth::{is_public, user_from_cert, PeerIdentity};
use crate::objects::{self, json_response, Req, MAX_BODY};
use crate::request::{flag, parse_query, parse_target};
use crate::state::State;
use crate::status::ApiError;
use crate::{discovery, watch};

/// Request counters served at /metrics.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub watches: AtomicU64,
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A rustls server configuration: our serving certificate, client certificates optional
/// but verified against the cluster CA when presented.
pub fn tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, ServeError> {
    let tls = |e: &dyn std::fmt::Display| ServeError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts TLS connections on `listener` forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    st: Arc<State>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = axum::Router::new().fallback(dispatch).with_state(st);
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "tls handshake");
                    return;
                }
            };
            let ident = PeerIdentity(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(user_from_cert),
            );
            let svc = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ident.clone());
                req.map(Body::new)
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn authenticated(req: &Request, st: &State) -> bool {
    crate::auth::authenticate(st, req.extensions().get::<PeerIdentity>(), req.headers()).is_some()
}

async fn dispatch(
    axum::extract::State(st): axum::extract::State<Arc<State>>,
    req: Request,
) -> Response {
    METRICS.requests.fetch_add(1, Ordering::Relaxed);
    let resp = match route(st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if resp.status().as_u16() >= 400 {
        METRICS.errors.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

fn json_ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v, &[])
}

async fn route(st: Arc<State>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return Ok(text(StatusCode::OK, "ok")),
        "/version" => return Ok(json_ok(&discovery::version())),
        _ => {}
    }
    if let Some(doc) = crate::serviceaccounts::discovery_document(&st, &path) {
        return Ok(json_ok(&doc));
    }
    if is_public(&path) {
        return Ok(text(StatusCode::OK, "ok"));
    }
    if !authenticated(&req, &st) {
        return Err(ApiError::unauthorized());
    }
    let method = req.method().clone();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query = parse_query(req.uri().query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let advertise = st.config.advertise.to_string();
    match segs.as_slice() {
        ["metrics"] => return Ok(metrics(&st)),
        ["api"] if method == Method::GET => {
            if discovery::wants_aggregated(&accept) {
                return Ok(aggregated(true));
            }
            return Ok(json_ok(&discovery::api_versions(&advertise)));
        }
        ["apis"] if method == Method::GET => {
            if discovery::wants_aggregated(&accept) {
                return Ok(aggregated(false));
            }
            return Ok(json_ok(&discovery::api_group_list()));
        }
        ["api", "v1"] if method == Method::GET => {
            return discovery::resource_list("", "v1")
                .map(|v| json_ok(&v))
                .ok_or_else(ApiError::path_not_found)
        }
        ["apis", g] if method == Method::GET => {
            return discovery::api_group_doc(g)
                .map(|v| json_ok(&v))
                .ok_or_else(ApiError::path_not_found)
        }
        ["apis", g, v] if method == Method::GET => {
            return discovery::resource_list(g, v)
                .map(|v| json_ok(&v))
                .ok_or_else(ApiError::path_not_found)
        }
        ["openapi", "v2"] => {
            if accept.contains(api::openapi::V2_PROTOBUF_MEDIA_TYPE) {
                return Ok(raw(
                    api::openapi::v2_document_protobuf(),
                    api::openapi::V2_PROTOBUF_CONTENT_TYPE,
                ));
            }
            return Ok(raw(
                api::openapi::v2_document_json().as_bytes(),
                "application/json",
            ));
        }
        ["openapi", "v3"] => return Ok(json_ok(&api::openapi::v3_index())),
        ["openapi", "v3", ..] => {
            let rest = path.trim_start_matches("/openapi/v3/");
            let (g, v) = api::openapi::v3_group_version_of_path(rest)
                .ok_or_else(ApiError::path_not_found)?;
            let doc =
                api::openapi::v3_group_version_json(g, v).ok_or_else(ApiError::path_not_found)?;
            return Ok(raw(doc.as_bytes(), "application/json"));
        }
        _ => {}
    }
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] => parse_target("", "v1", rest)?,
        ["apis", g, v, rest @ ..] => parse_target(g, v, rest)?,
        _ => return Err(ApiError::path_not_found()),
    };
    if crate::podstream::is_stream(&target) {
        return crate::podstream::serve(&st, &target, req).await;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY + 1)
        .await
        .map_err(|_| ApiError::too_large("Request entity too large: limit is 3145728"))?;
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(
            "Request entity too large: limit is 3145728",
        ));
    }
    let is_watch = target.watch_path || flag(&query, "watch");
    let collection = target.name.is_none();
    let r = Req {
        target,
        query,
        headers: parts.headers,
        body,
    };
    tracing::debug!(method = %method, path = %path, "request");
    match method {
        Method::GET if is_watch => {
            METRICS.watches.fetch_add(1, Ordering::Relaxed);
            watch::watch(&st, r).await
        }
        Method::GET if collection => objects::list(&st, r).await,
        Method::GET => objects::get(&st, r).await,
        Method::POST => objects::create(&st, r).await,
        Method::PUT if !collection => objects::update(&st, r).await,
        Method::PATCH if !collection => objects::patch(&st, r).await,
        Method::DELETE if collection => {
            if !discovery::verbs(r.res()).contains(&"deletecollection") {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            objects::delete_collection(&st, r).await
        }
        Method::DELETE => {
            admit_delete(&r)?;
            objects::delete(&st, r).await
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {method}"
        ))),
    }
}

/// The namespaces Kubernetes' NamespaceLifecycle admission keeps from deletion.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// Refuses deletes Kubernetes' admission refuses: the namespaces the cluster needs.
fn admit_delete(r: &Req) -> Result<(), ApiError> {
    let res = r.res();
    if res.group.is_empty()
        && res.kind == "Namespace"
        && r.target.subresource.is_none()
        && IMMORTAL_NAMESPACES.contains(&r.name())
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{}\" is forbidden: this namespace may not be deleted",
            r.name()
        ))
        .with_details(serde_json::json!({"name": r.name(), "kind": "namespaces"})));
    }
    Ok(())
}

fn raw(body: &'static [u8], content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn aggregated(core: bool) -> Response {
    let mut r = json_ok(&discovery::aggregated(core));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    r
}

fn metrics(st: &State) -> Response {
    let m = &*METRICS;
    let body = format!(
        "# TYPE apiserver_request_total counter\napiserver_request_total {}\n# TYPE apiserver_request_errors_total counter\napiserver_request_errors_total {}\n# TYPE apiserver_watch_total counter\napiserver_watch_total {}\n# TYPE kins_store_revision gauge\nkins_store_revision {}\n",
        m.requests.load(Ordering::Relaxed),
        m.errors.load(Ordering::Relaxed),
        m.watches.load(Ordering::Relaxed),
        st.store.current_revision(),
    );
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
