//! Shared state of a running API server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::RwLock;

use crate::alloc::{Allocator, Cidr};
use crate::auth::Tokens;

/// How an API server is configured (`kins apiserver` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `store.db`, `pki/` and `tokens.csv`.
    pub data_dir: PathBuf,
    /// Addresses to listen on (HTTPS).
    pub bind: Vec<SocketAddr>,
    /// The address the `kubernetes` Endpoints point at.
    pub advertise: SocketAddr,
    /// Extra IP SANs for the serving certificate.
    pub extra_sans: Vec<IpAddr>,
    pub service_cidr: Cidr,
    pub node_port_range: (u16, u16),
    pub cluster_domain: String,
    /// Watch history kept, in revisions.
    pub history: usize,
    /// Whether the bootstrap creates the DNS add-on's objects (when missing).
    pub dns_addon: bool,
    /// Create the ingress add-on's objects when missing.
    pub ingress_addon: bool,
}

impl Config {
    /// Defaults for a data directory: 127.0.0.1:6443, 10.96.0.0/12, 30000-32767.
    pub fn new(data_dir: PathBuf) -> Config {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6443);
        Config {
            data_dir,
            bind: vec![addr],
            advertise: addr,
            extra_sans: Vec::new(),
            service_cidr: Cidr {
                base: Ipv4Addr::new(10, 96, 0, 0),
                prefix: 12,
            },
            node_port_range: (30000, 32767),
            cluster_domain: "cluster.local".into(),
            history: 10_000,
            dns_addon: false,
            ingress_addon: false,
        }
    }
}

pub struct State {
    pub config: Config,
    /// The store, behind its trait (SQLite today).
    pub store: std::sync::Arc<dyn store::Backend>,
    pub alloc: Allocator,
    pub tokens: RwLock<Tokens>,
    /// Talks to the agents' endpoints (pods/log, and the upgrades of exec, attach and
    /// portforward) with the kubelet client certificate, over HTTP/1.1.
    pub kubelet_client: reqwest::Client,
    /// Signs and checks service-account tokens.
    pub sa_keys: crate::satoken::TokenKeys,
    /// The cluster CA (PEM), published in every namespace as `kube-root-ca.crt`.
    pub ca_pem: String,
    /// Serialises read-modify-write requests (PATCH) on one object, so concurrent patches of
    /// a hot object queue instead of racing each other into conflicts.
    pub key_locks: KeyLocks,
}

/// A fixed set of async mutexes, picked by a hash of the object's key: same key, same lock.
pub struct KeyLocks(Vec<tokio::sync::Mutex<()>>);

impl Default for KeyLocks {
    fn default() -> KeyLocks {
        KeyLocks((0..64).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl KeyLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.0[(h.finish() % self.0.len() as u64) as usize]
            .lock()
            .await
    }
}
