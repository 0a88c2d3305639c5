//! The Kubernetes-compatible API server: REST verbs, discovery, OpenAPI, watch, patch,
//! authentication and the ClusterIP/NodePort allocators, on the `store` crate.
//!
//! Invariants: this crate is the only one that opens the store; it knows nothing about
//! the kernel; every error leaves as a Kubernetes Status.

pub mod alloc;
pub mod auth;
pub mod bootstrap;
pub mod discovery;
pub mod lifecycle;
pub mod objects;
pub mod pki;
mod podlogs;
mod podstream;
pub mod request;
pub mod satoken;
pub mod server;
pub mod serviceaccounts;
pub mod state;
pub mod status;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

pub use state::{Config, State};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("opening the store at {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: store::Error,
    },
    #[error("reading tokens from {path}: {source}")]
    Tokens {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] satoken::TokenError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("bootstrap: {0}")]
    Bootstrap(status::ApiError),
}

/// A started API server.
pub struct Running {
    pub state: Arc<State>,
    /// The addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops serving (used by in-process tests).
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Opens the store, makes the PKI, bootstraps default objects and starts serving.
pub async fn start(mut config: Config) -> Result<Running, StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = pki::Pki::load_or_create(&config.data_dir.join("pki"))?;
    // Bind first so that port 0 is resolved before the certificate and endpoints are made.
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in &config.bind {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| server::ServeError::Bind {
                addr: *addr,
                source,
            })?;
        let local = l.local_addr().map_err(|source| server::ServeError::Bind {
            addr: *addr,
            source,
        })?;
        addrs.push(local);
        listeners.push(l);
    }
    if config.advertise.port() == 0 {
        if let Some(first) = addrs.first() {
            config.advertise.set_port(first.port());
        }
    }
    let mut ips: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ips.push(IpAddr::V4(config.service_cidr.nth(1)));
    ips.extend(
        addrs
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified()),
    );
    ips.push(config.advertise.ip());
    ips.extend(config.extra_sans.iter().copied());
    ips.sort();
    ips.dedup();
    let d = &config.cluster_domain;
    let dns = vec![
        "localhost".to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{d}"),
    ];
    let serving = pki.serving(&ips, &dns)?;
    let tls = Arc::new(server::tls_config(
        &pki.ca_cert_pem,
        &serving.cert_pem,
        &serving.key_pem,
    )?);

    let db = config.data_dir.join("store.db");
    let store = store::Store::open(
        &db,
        store::Config {
            history: config.history,
            ..Default::default()
        },
    )
    .map_err(|source| StartError::Store {
        path: db.clone(),
        source,
    })?;
    let tokens_path = config.data_dir.join("tokens.csv");
    let tokens = auth::Tokens::load(&tokens_path).map_err(|source| StartError::Tokens {
        path: tokens_path,
        source,
    })?;
    let allocator = alloc::Allocator::new(config.service_cidr, config.node_port_range);
    allocator.load(&store).map_err(|source| StartError::Store {
        path: db.clone(),
        source,
    })?;
    let store: Arc<dyn store::Backend> = Arc::new(store);
    let sa_keys = satoken::TokenKeys::from_pkcs8_pem(
        &pki.service_account_key()?,
        &serviceaccounts::issuer(&config.cluster_domain),
    )?;
    let kubelet_cert = pki.client(podlogs::KUBELET_CLIENT_CN, &["system:masters"])?;
    let kubelet_client = podlogs::kubelet_client(&kubelet_cert.cert_pem, &kubelet_cert.key_pem)
        .map_err(server::ServeError::Tls)?;
    let state = Arc::new(State {
        config,
        store,
        alloc: allocator,
        tokens: RwLock::new(tokens),
        kubelet_client,
        sa_keys,
        ca_pem: pki.ca_cert_pem.clone(),
        key_locks: Default::default(),
    });
    bootstrap::bootstrap(&state)
        .await
        .map_err(StartError::Bootstrap)?;

    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(server::serve(l, tls.clone(), state.clone())));
    }
    tasks.push(tokio::spawn(lifecycle::run(state.clone())));
    tasks.push(tokio::spawn(compactor(state.clone())));
    Ok(Running {
        state,
        addrs,
        tasks,
    })
}

/// Keeps the watch history bounded.
async fn compactor(st: Arc<State>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        let keep = st.config.history;
        let store = st.store.clone();
        match tokio::task::spawn_blocking(move || store.compact(keep)).await {
            Ok(Ok(rev)) => tracing::debug!(revision = rev, "compacted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "compaction failed"),
            Err(e) => tracing::warn!(error = %e, "compaction task"),
        }
    }
}
