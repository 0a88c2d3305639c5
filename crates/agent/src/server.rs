//! The agent's HTTPS endpoint, the kubelet's port 10250 for what kins serves of it:
//! `GET /containerLogs/{namespace}/{pod}/{container}?<PodLogOptions>` (the API server
//! proxies `pods/log` here), the streaming endpoints `/exec/...` and `/portforward/...`
//! (`stream`), and `GET /healthz`.
//!
//! The serving certificate is self-signed, made at start: the API server does not verify
//! it, as kube-apiserver does not when `--kubelet-certificate-authority` is unset (kubeadm's
//! default). Clients must present a certificate signed by the cluster CA (checked in the
//! TLS handshake); a request without one gets 401, and one whose subject is neither the
//! API server's kubelet client (CN `kube-apiserver-kubelet-client`) nor in the group
//! `system:masters` gets 403.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::logs::{self, LogError, LogOptions};
use crate::runtime::{read_state, ContainerState};
use crate::{io, state, AgentError, Config};

/// The client certificate CN of the API server (kube-apiserver's kubelet client).
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Where the endpoint listens and what it serves.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// PEM of the CA that signs client certificates (the cluster CA).
    pub ca_pem: String,
    /// Names put in the serving certificate (IPs or DNS names).
    pub sans: Vec<String>,
    /// Holds `logs/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`.
    pub data_dir: PathBuf,
    /// Holds `pods/<uid>/containers/<name>.<attempt>/` (whether a container still runs).
    pub run_dir: PathBuf,
    /// The kins binary (`kins exec` runs exec sessions).
    pub kins_exe: PathBuf,
}

/// A bound, not yet serving endpoint.
pub struct Endpoint {
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: Arc<Settings>,
}

/// Binds `<node_ip>:<kubelet_port>`.
pub async fn bind(cfg: &Config) -> Result<Endpoint, AgentError> {
    Endpoint::bind(Settings {
        addr: SocketAddr::new(cfg.node_ip.into(), cfg.kubelet_port),
        ca_pem: cfg.ca_pem.clone(),
        sans: vec![cfg.node_ip.to_string(), cfg.node_name.clone()],
        data_dir: cfg.data_dir.clone(),
        run_dir: cfg.run_dir.clone(),
        kins_exe: cfg.kins_exe.clone(),
    })
    .await
}

fn tls_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Other(format!("agent endpoint TLS: {e}"))
}

/// The TLS configuration: a fresh self-signed serving certificate, client certificates
/// verified against `ca_pem` when presented.
fn tls_config(ca_pem: &str, sans: &[String]) -> Result<rustls::ServerConfig, AgentError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(tls_err)?).map_err(tls_err)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    // Answered with 401 rather than a failed handshake.
    .allow_unauthenticated()
    .build()
    .map_err(tls_err)?;
    let serving = rcgen::generate_simple_self_signed(sans.to_vec()).map_err(tls_err)?;
    let key = PrivateKeyDer::from_pem_slice(serving.signing_key.serialize_pem().as_bytes())
        .map_err(tls_err)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![serving.cert.der().clone()], key)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Endpoint {
    pub async fn bind(settings: Settings) -> Result<Endpoint, AgentError> {
        let tls = tls_config(&settings.ca_pem, &settings.sans)?;
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .map_err(io(format!("listening on {}", settings.addr)))?;
        Ok(Endpoint {
            listener,
            tls: Arc::new(tls),
            settings: Arc::new(settings),
        })
    }

    /// The address bound (port 0 resolved).
    pub fn local_addr(&self) -> Result<SocketAddr, AgentError> {
        self.listener
            .local_addr()
            .map_err(io("reading the endpoint's address"))
    }

    /// Accepts connections forever.
    pub async fn serve(self) {
        tracing::info!(addr = ?self.listener.local_addr().ok(), "agent endpoint serving");
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let settings = self.settings.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "tls handshake");
                        return;
                    }
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(subject);
                let svc = hyper::service::service_fn(move |req| {
                    let settings = settings.clone();
                    let client = client.clone();
                    async move { Ok::<_, Infallible>(handle(&settings, client.as_ref(), req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    }
}

/// CN and O of a client certificate.
#[derive(Debug, Clone)]
struct Subject {
    cn: String,
    orgs: Vec<String>,
}

fn subject(cert: &CertificateDer<'_>) -> Option<Subject> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let s = parsed.subject();
    let cn = s
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let orgs = s
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Subject { cn, orgs })
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn handle<B: Send + 'static>(
    settings: &Settings,
    client: Option<&Subject>,
    req: Request<B>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    let Some(client) = client else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    if client.cn != APISERVER_CLIENT_CN && !client.orgs.iter().any(|o| o == "system:masters") {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb=get, resource=nodes, subresource=proxy)",
                client.cn
            ),
        );
    }
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    match segs.as_slice() {
        [root, ns, pod, container] if root == "containerLogs" => {
            if req.method() != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            match container_logs(settings, ns, pod, container, req.uri().query()) {
                Ok(r) => r,
                Err(LogError::BadRequest(m)) => text(StatusCode::BAD_REQUEST, m),
                Err(LogError::NotFound(m)) => text(StatusCode::NOT_FOUND, m),
            }
        }
        [root, ..] if root == "exec" || root == "attach" || root == "portforward" => {
            let ctx = crate::stream::Context {
                run_dir: settings.run_dir.clone(),
                kins_exe: settings.kins_exe.clone(),
            };
            crate::stream::handle(&ctx, &segs, req)
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// The UID of pod `ns/name` among the log directories: the one whose pod state exists if
/// several, else the newest.
fn find_pod(settings: &Settings, ns: &str, name: &str) -> Option<String> {
    let logs = settings.data_dir.join("logs");
    let prefix = format!("{ns}_{name}_");
    let mut uids: Vec<(bool, std::time::SystemTime, String)> = logs::read_dir_names(&logs)
        .into_iter()
        .filter_map(|d| d.strip_prefix(&prefix).map(str::to_string))
        .filter(|uid| !uid.is_empty())
        .map(|uid| {
            let live = state::pod_dir(&settings.run_dir, &uid).exists();
            let mtime = std::fs::metadata(logs.join(format!("{prefix}{uid}")))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (live, mtime, uid)
        })
        .collect();
    uids.sort();
    uids.pop().map(|(_, _, uid)| uid)
}

/// Whether run `attempt` of a container is still going (its shim has not recorded an end).
fn running(run_dir: &Path, uid: &str, container: &str, attempt: u32) -> bool {
    let dir = state::container_dir(run_dir, uid, container, attempt);
    dir.exists()
        && matches!(
            read_state(&dir),
            ContainerState::Running { .. } | ContainerState::Starting
        )
}

fn container_logs(
    settings: &Settings,
    ns: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Result<Response<Body>, LogError> {
    let opts = LogOptions::from_query(query.unwrap_or(""))?;
    let uid = find_pod(settings, ns, pod).ok_or_else(|| {
        LogError::NotFound(format!(
            "pod \"{pod}\" in namespace \"{ns}\" has no logs on this node"
        ))
    })?;
    let dir = state::pod_log_dir(&settings.data_dir, ns, pod, &uid).join(container);
    if !dir.is_dir() {
        return Err(LogError::NotFound(format!(
            "container \"{container}\" not found in pod \"{pod}\""
        )));
    }
    let sel = logs::select(&logs::read_dir_names(&dir), opts.previous).ok_or_else(|| {
        if opts.previous {
            LogError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ))
        } else {
            LogError::NotFound(format!(
                "container \"{container}\" in pod \"{pod}\" has no logs yet"
            ))
        }
    })?;
    tracing::debug!(
        namespace = ns,
        pod,
        container,
        restart_count = sel.restart_count,
        ?opts,
        "serving logs"
    );
    let run_dir = settings.run_dir.clone();
    let (c, attempt) = (container.to_string(), sel.restart_count + 1);
    let is_running = move || running(&run_dir, &uid, &c, attempt);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(logs::stream(dir, sel, opts, is_running, tx));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}
