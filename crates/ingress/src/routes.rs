//! Ingresses, Services, EndpointSlices and TLS Secrets compiled into one routing table
//! (pure: no IO, the clock and the certificate parser passed in).
//!
//! Kubernetes' matching rules: a request's host (port and trailing dot dropped, lower-cased)
//! is looked up exactly, then as a `*.suffix` wildcard of exactly one label, then among the
//! rules without a host; within a host the longest matching path wins, Exact before Prefix
//! at equal length. `Prefix` matches by `/`-separated elements (`/foo` matches `/foo` and
//! `/foo/bar`, not `/foobar`; a trailing `/` is ignored); `Exact` is byte-exact;
//! `ImplementationSpecific` is here a plain string prefix (`/foo` matches `/foobar`), as
//! Traefik does. A request no rule of its host matches falls through to the less specific
//! hosts, then to the default backend, then 404. Two Ingresses naming the same host, path
//! and type: the older one wins and the other is told (an event).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressBackend, IngressClass, IngressServiceBackend,
};

use crate::metrics::Stats;

/// The IngressClass annotation that makes a class the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy class annotation (before `spec.ingressClassName`).
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotations that turn the HTTP → HTTPS redirect of a TLS host off (`"false"`).
pub const SSL_REDIRECT_ANNOTATIONS: &[&str] = &[
    "kins.dev/ssl-redirect",
    "nginx.ingress.kubernetes.io/ssl-redirect",
];

/// Which Ingresses are ours.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `spec.controller` of the IngressClasses served (`kins.dev/ingress-controller`).
    pub controller: String,
    /// The class name the legacy annotation must carry (`kins`).
    pub legacy_name: String,
}

/// A parsed certificate and key, opaque to the routing table.
pub type Cert = Arc<rustls::sign::CertifiedKey>;

/// Everything the table is built from, as the watches hold it.
pub struct Inputs<'a> {
    pub ingresses: &'a [Arc<Ingress>],
    pub classes: &'a [Arc<IngressClass>],
    pub services: &'a [Arc<Service>],
    pub slices: &'a [Arc<EndpointSlice>],
    pub secrets: &'a [Arc<Secret>],
}

/// `namespace/name` of an object.
pub type Key = (String, String);

/// How a rule's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    Exact,
    Prefix,
    ImplementationSpecific,
}

impl PathKind {
    fn parse(s: Option<&str>) -> Option<PathKind> {
        match s {
            Some("Exact") => Some(PathKind::Exact),
            Some("Prefix") => Some(PathKind::Prefix),
            Some("ImplementationSpecific") => Some(PathKind::ImplementationSpecific),
            _ => None,
        }
    }
}

/// A backend Service port and what serves it now.
#[derive(Debug)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    /// The port as the Ingress names it (number or name).
    pub port: String,
    /// Ready endpoints (pod IP, target port), sorted.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
    pub stats: Arc<Stats>,
}

impl Backend {
    /// The next endpoint, round robin; None when nothing is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[i % self.endpoints.len()])
    }
}

/// One path of one rule.
#[derive(Debug)]
pub struct Route {
    pub ingress: Key,
    pub path: String,
    pub kind: PathKind,
    pub backend: Arc<Backend>,
    /// Plain HTTP is redirected to HTTPS (the Ingress has TLS for this host).
    pub redirect_https: bool,
}

/// The paths of one host.
#[derive(Debug, Default)]
struct Paths {
    exact: HashMap<String, Arc<Route>>,
    /// Prefix and ImplementationSpecific, longest first, Prefix first at equal length.
    prefixes: Vec<Arc<Route>>,
}

impl Paths {
    fn find(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        self.prefixes.iter().find(|r| match r.kind {
            PathKind::Prefix => prefix_matches(&r.path, path),
            _ => path.starts_with(r.path.as_str()),
        })
    }

    fn sort(&mut self) {
        self.prefixes
            .sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.kind.cmp(&b.kind)));
    }
}

/// Prefix matching by path elements: the rule's elements (trailing `/` ignored) are the
/// first elements of the request's path.
pub fn prefix_matches(rule: &str, path: &str) -> bool {
    let rule = rule.trim_end_matches('/');
    if rule.is_empty() {
        return true;
    }
    match path.strip_prefix(rule) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Something about an Ingress the learner should see (an event on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub ingress: Key,
    pub reason: &'static str,
    pub message: String,
}

/// The compiled table. Built whole on every change and swapped in; requests in flight
/// keep the table they started with.
#[derive(Debug, Default)]
pub struct Table {
    hosts: HashMap<String, Paths>,
    /// `*.suffix` rules by suffix.
    wildcards: HashMap<String, Paths>,
    any: Paths,
    default_backend: Option<Arc<Route>>,
    certs: HashMap<String, Cert>,
    wildcard_certs: HashMap<String, Cert>,
    /// The Ingresses this table serves (their status gets our address).
    pub served: Vec<Key>,
    pub problems: Vec<Problem>,
    /// Rules and paths, for metrics and logs.
    pub routes: usize,
}

/// A request's host as matched: port and trailing dot dropped, lower-case.
pub fn normalize_host(host: &str) -> String {
    let h = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|s| format!("{s}]"))
            .unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .map_or(host, |(h, p)| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    host
                }
            })
            .to_string()
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

impl Table {
    /// The route for `host` (as sent) and `path` (without the query).
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = normalize_host(host);
        let exact = self.hosts.get(&host).and_then(|p| p.find(path));
        exact
            .or_else(|| {
                let (_, suffix) = host.split_once('.')?;
                self.wildcards.get(suffix)?.find(path)
            })
            .or_else(|| self.any.find(path))
            .or(self.default_backend.as_ref())
    }

    /// The certificate for a TLS server name, if an Ingress has one for it.
    pub fn cert(&self, server_name: &str) -> Option<&Cert> {
        let name = normalize_host(server_name);
        self.certs.get(&name).or_else(|| {
            let (_, suffix) = name.split_once('.')?;
            self.wildcard_certs.get(suffix)
        })
    }

    /// Hosts with a certificate.
    pub fn tls_hosts(&self) -> usize {
        self.certs.len() + self.wildcard_certs.len()
    }
}

/// The labels of one counter set: namespace, Ingress, `namespace/service`, port.
pub type StatsKey = (String, String, String, String);

/// Keeps per-backend counters across rebuilds of the table.
#[derive(Debug, Default)]
pub struct Registry {
    stats: Mutex<HashMap<StatsKey, Arc<Stats>>>,
}

impl Registry {
    fn stats(&self, ingress: &Key, ns: &str, svc: &str, port: &str) -> Arc<Stats> {
        let key = (
            ingress.0.clone(),
            ingress.1.clone(),
            format!("{ns}/{svc}"),
            port.to_string(),
        );
        let mut m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key).or_default().clone()
    }

    /// Every counter with its labels: (namespace, ingress, service, port).
    pub fn all(&self) -> Vec<(StatsKey, Arc<Stats>)> {
        let m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Drops counters of Ingresses that are gone.
    pub fn retain(&self, served: &[Key]) {
        let mut m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|k, _| served.iter().any(|(ns, n)| *ns == k.0 && *n == k.1));
    }
}

/// Whether `ing` is ours: its class is an IngressClass of our controller, or the legacy
/// annotation names our class, or it names neither and one of our classes is the default.
pub fn is_ours(ing: &Ingress, classes: &[Arc<IngressClass>], id: &Identity) -> bool {
    let ours = |c: &IngressClass| {
        c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(id.controller.as_str())
    };
    let class_name = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let legacy = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
    match (class_name, legacy) {
        (Some(name), _) => classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name) && ours(c)),
        (None, Some(l)) => *l == id.legacy_name,
        (None, None) => classes.iter().any(|c| {
            ours(c)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
        }),
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Services and their ready endpoints, indexed once per build.
struct Endpoints<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    /// (namespace, service) → slices.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Endpoints<'a> {
    fn new(inputs: &'a Inputs<'a>) -> Self {
        let mut services = HashMap::new();
        for s in inputs.services {
            if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                services.insert((ns.as_str(), n.as_str()), s.as_ref());
            }
        }
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in inputs.slices {
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(ns), Some(svc)) = (&s.metadata.namespace, svc) {
                slices
                    .entry((ns.as_str(), svc.as_str()))
                    .or_default()
                    .push(s.as_ref());
            }
        }
        Endpoints { services, slices }
    }

    /// The ready endpoints of a Service port named as an Ingress backend names it, or
    /// why there are none to be had.
    fn resolve(&self, ns: &str, b: &IngressServiceBackend) -> Result<Vec<SocketAddr>, String> {
        let svc = self
            .services
            .get(&(ns, b.name.as_str()))
            .ok_or_else(|| format!("service \"{ns}/{}\" not found", b.name))?;
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(format!(
                "service \"{ns}/{}\" is of type ExternalName, which is not supported",
                b.name
            ));
        }
        let want = b.port.as_ref();
        let port = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .find(|p| match want {
                Some(w) => match (w.number, &w.name) {
                    (Some(n), _) => p.port == n,
                    (None, Some(name)) => p.name.as_deref() == Some(name.as_str()),
                    _ => false,
                },
                None => false,
            })
            .ok_or_else(|| format!("service \"{ns}/{}\" has no port {}", b.name, port_label(b)))?;
        let pname = port.name.clone().unwrap_or_default();
        let mut out = Vec::new();
        for s in self
            .slices
            .get(&(ns, b.name.as_str()))
            .into_iter()
            .flatten()
        {
            if s.address_type != "IPv4" && s.address_type != "IPv6" {
                continue;
            }
            let Some(number) = s
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == pname)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for e in &s.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        if let Ok(p) = u16::try_from(number) {
                            out.push(SocketAddr::new(ip, p));
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn port_label(b: &IngressServiceBackend) -> String {
    match b.port.as_ref() {
        Some(p) => match (p.number, &p.name) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.clone(),
            _ => "<none>".into(),
        },
        None => "<none>".into(),
    }
}

/// Parses a `kubernetes.io/tls` Secret into a certificate (a `Result` with the reason).
pub type ParseCert<'p> = &'p dyn Fn(&[u8], &[u8]) -> Result<Cert, String>;

/// Builds the table from the watched objects.
pub fn build(
    inputs: &Inputs<'_>,
    id: &Identity,
    registry: &Registry,
    parse: ParseCert<'_>,
) -> Table {
    let eps = Endpoints::new(inputs);
    let secrets: HashMap<(&str, &str), &Secret> = inputs
        .secrets
        .iter()
        .filter_map(|s| {
            Some((
                (
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                ),
                s.as_ref(),
            ))
        })
        .collect();
    // Oldest first, so the older Ingress wins a conflict.
    let mut ours: Vec<&Ingress> = inputs
        .ingresses
        .iter()
        .map(|i| i.as_ref())
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| is_ours(i, inputs.classes, id))
        .collect();
    ours.sort_by(|a, b| {
        let t = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| key_of(&a.metadata).cmp(&key_of(&b.metadata)))
    });
    let mut t = Table::default();
    // (host, kind, path) → the Ingress that has it.
    let mut taken: BTreeMap<(String, PathKind, String), Key> = BTreeMap::new();
    let mut cert_cache: HashMap<(String, String), Result<Cert, String>> = HashMap::new();
    for ing in ours {
        let key = key_of(&ing.metadata);
        t.served.push(key.clone());
        let Some(spec) = ing.spec.as_ref() else {
            continue;
        };
        let problem = |t: &mut Table, reason: &'static str, message: String| {
            t.problems.push(Problem {
                ingress: key.clone(),
                reason,
                message,
            });
        };
        let annotations = ing.metadata.annotations.clone().unwrap_or_default();
        let redirect_on = !SSL_REDIRECT_ANNOTATIONS
            .iter()
            .any(|a| annotations.get(*a).is_some_and(|v| v == "false"));
        // TLS: certificates per host, and which hosts redirect.
        let mut tls_hosts: Vec<String> = Vec::new();
        for tls in spec.tls.iter().flatten() {
            let hosts: Vec<String> = tls
                .hosts
                .iter()
                .flatten()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            tls_hosts.extend(hosts.iter().cloned());
            let Some(secret_name) = tls.secret_name.as_deref() else {
                continue;
            };
            let cert = cert_cache
                .entry((key.0.clone(), secret_name.to_string()))
                .or_insert_with(|| match secrets.get(&(key.0.as_str(), secret_name)) {
                    None => Err(format!(
                        "secret \"{}/{secret_name}\" not found; serving the default certificate",
                        key.0
                    )),
                    Some(s) => secret_cert(s, parse).map_err(|e| {
                        format!(
                            "secret \"{}/{secret_name}\" {e}; serving the default certificate",
                            key.0
                        )
                    }),
                })
                .clone();
            match cert {
                Ok(c) => {
                    for h in &hosts {
                        let (map, name) = match h.strip_prefix("*.") {
                            Some(suffix) => (&mut t.wildcard_certs, suffix.to_string()),
                            None => (&mut t.certs, h.clone()),
                        };
                        map.entry(name).or_insert_with(|| c.clone());
                    }
                }
                Err(m) => problem(&mut t, "TLSSecretInvalid", m),
            }
        }
        let backend = |t: &mut Table, b: &IngressBackend| -> Option<Arc<Backend>> {
            if let Some(r) = &b.resource {
                problem(
                    t,
                    "ResourceBackendUnsupported",
                    format!(
                        "resource backend {}/{} is not supported by the kins ingress controller; requests to it get 503",
                        r.kind, r.name
                    ),
                );
            }
            let (svc, port, endpoints) = match &b.service {
                Some(s) => {
                    let endpoints = match eps.resolve(&key.0, s) {
                        Ok(e) => e,
                        Err(m) => {
                            problem(t, "BackendNotFound", m);
                            Vec::new()
                        }
                    };
                    (s.name.clone(), port_label(s), endpoints)
                }
                None => (String::new(), String::new(), Vec::new()),
            };
            let stats = registry.stats(&key, &key.0, &svc, &port);
            Some(Arc::new(Backend {
                namespace: key.0.clone(),
                service: svc,
                port,
                endpoints,
                next: AtomicUsize::new(0),
                stats,
            }))
        };
        if let Some(db) = &spec.default_backend {
            if let Some(b) = backend(&mut t, db) {
                if let Some(existing) = &t.default_backend {
                    let m = format!(
                        "the default backend of Ingress {}/{} (older) is used, not this one's",
                        existing.ingress.0, existing.ingress.1
                    );
                    problem(&mut t, "Conflict", m);
                } else {
                    t.default_backend = Some(Arc::new(Route {
                        ingress: key.clone(),
                        path: String::new(),
                        kind: PathKind::Prefix,
                        backend: b,
                        redirect_https: false,
                    }));
                }
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            let redirect = redirect_on
                && !host.is_empty()
                && tls_hosts.iter().any(|h| {
                    *h == host
                        || h.strip_prefix("*.")
                            .is_some_and(|s| host.split_once('.').map(|(_, r)| r) == Some(s))
                });
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let Some(kind) = PathKind::parse(Some(p.path_type.as_str())) else {
                    continue;
                };
                let path = p.path.clone().unwrap_or_else(|| "/".into());
                let slot = (host.clone(), kind, path.clone());
                if let Some(owner) = taken.get(&slot) {
                    if *owner != key {
                        let m = format!(
                            "host {:?} path {path:?} ({kind:?}) is already routed by Ingress {}/{} (older); this rule is ignored",
                            if host.is_empty() { "*" } else { &host },
                            owner.0,
                            owner.1
                        );
                        problem(&mut t, "Conflict", m);
                    }
                    continue;
                }
                let Some(b) = backend(&mut t, &p.backend) else {
                    continue;
                };
                taken.insert(slot, key.clone());
                let route = Arc::new(Route {
                    ingress: key.clone(),
                    path: path.clone(),
                    kind,
                    backend: b,
                    redirect_https: redirect,
                });
                let paths = if host.is_empty() {
                    &mut t.any
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    t.wildcards.entry(suffix.to_string()).or_default()
                } else {
                    t.hosts.entry(host.clone()).or_default()
                };
                if kind == PathKind::Exact {
                    paths.exact.insert(path, route);
                } else {
                    paths.prefixes.push(route);
                }
                t.routes += 1;
            }
        }
    }
    for p in t.hosts.values_mut().chain(t.wildcards.values_mut()) {
        p.sort();
    }
    t.any.sort();
    t.problems.dedup();
    t
}

fn secret_cert(s: &Secret, parse: ParseCert<'_>) -> Result<Cert, String> {
    let type_ = s.type_.as_deref().unwrap_or("Opaque");
    if type_ != "kubernetes.io/tls" {
        return Err(format!("is of type {type_}, not kubernetes.io/tls"));
    }
    let data = s.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    match (get("tls.crt"), get("tls.key")) {
        (Some(c), Some(k)) => parse(c, k).map_err(|e| format!("is malformed: {e}")),
        _ => Err("has no tls.crt and tls.key (want a kubernetes.io/tls Secret)".into()),
    }
}

#[cfg(test)]
mod tests;
