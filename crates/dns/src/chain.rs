//! A Corefile compiled into server blocks, and the plugin chain of a block.
//!
//! The chain runs in CoreDNS's fixed order, whatever the file order:
//! `log`/`errors` → `loadbalance` → `rewrite` → `hosts` → `kubernetes` → `cache` → `forward`.
//! One deliberate difference: `cache` sits after `kubernetes` and stores forwarded answers
//! only, so cluster names follow watch events at once.
//!
//! A block is picked by the longest zone that contains the query name among the blocks of
//! the port; no block → REFUSED; a block whose plugins all pass the query on → SERVFAIL (as
//! CoreDNS: "no next plugin found").

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, RecordType};

use crate::answer::{kubernetes, Outcome, Response, Section};
use crate::cache::Cache;
use crate::corefile::{Corefile, Plugin, PodsMode};
use crate::forward::{resolve_upstreams, Forwarder, SYSTEMD_RESOLV_CONF};
use crate::hosts::{HostsOutcome, HostsPlugin};
use crate::metrics::Metrics;
use crate::records::{Index, IndexConfig};
use crate::rewrite::{rewrite, Rule};
use crate::DnsError;

/// Whether `name` is in one of `zones`.
pub fn in_zones(zones: &[LowerName], name: &LowerName) -> bool {
    zones.iter().any(|z| z.zone_of(name))
}

fn lower_zone(zone: &str) -> Option<LowerName> {
    Name::from_ascii(zone).ok().map(|n| LowerName::from(&n))
}

/// A plugin's `fallthrough [ZONES...]`.
#[derive(Debug, Clone, Default)]
pub struct Fallthrough(Option<Vec<LowerName>>);

impl Fallthrough {
    /// `None`: never; `Some([])`: every zone; else those zones.
    pub fn new(zones: Option<&[String]>) -> Self {
        Self(zones.map(|z| z.iter().filter_map(|z| lower_zone(z)).collect()))
    }

    /// Whether a miss for `name` passes to the next plugin.
    pub fn covers(&self, name: &LowerName) -> bool {
        match &self.0 {
            None => false,
            Some(z) if z.is_empty() => true,
            Some(z) => in_zones(z, name),
        }
    }
}

/// Where the world is, for compiling (tests point it at temporary files).
#[derive(Debug, Clone)]
pub struct Env {
    /// systemd-resolved's upstream file, used to replace loopback nameservers.
    pub systemd_resolv_conf: PathBuf,
    /// How long one upstream has to answer.
    pub forward_timeout: std::time::Duration,
}

impl Default for Env {
    fn default() -> Self {
        Self {
            systemd_resolv_conf: PathBuf::from(SYSTEMD_RESOLV_CONF),
            forward_timeout: crate::forward::TIMEOUT,
        }
    }
}

/// What an HTTP address serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpRoutes {
    /// `GET /health`.
    pub health: bool,
    /// `GET /ready`.
    pub ready: bool,
    /// `GET /metrics`.
    pub metrics: bool,
}

#[derive(Debug)]
struct KubernetesPlugin {
    fallthrough: Fallthrough,
    pods: PodsMode,
}

/// One compiled server block.
#[derive(Debug)]
pub struct Block {
    /// The port.
    pub port: u16,
    zones: Vec<(LowerName, Arc<str>)>,
    server: Arc<str>,
    /// `log`: one line per query.
    pub log: bool,
    /// `errors`: failures are logged.
    pub errors: bool,
    loadbalance: bool,
    rules: Vec<Rule>,
    hosts: Option<HostsPlugin>,
    kubernetes: Option<KubernetesPlugin>,
    cache: Option<Cache>,
    forward: Option<Forwarder>,
}

/// A compiled Corefile.
#[derive(Debug)]
pub struct Compiled {
    /// The server blocks, in file order.
    pub blocks: Vec<Block>,
    /// What the record index is built for (the first kubernetes plugin).
    pub index_config: Option<IndexConfig>,
    /// The pods mode of that plugin (`verified` needs a Pod watch).
    pub pods: PodsMode,
    /// DNS ports.
    pub ports: BTreeSet<u16>,
    /// HTTP addresses and their routes.
    pub http: BTreeMap<SocketAddr, HttpRoutes>,
}

impl Compiled {
    /// Parses and compiles Corefile text.
    pub fn from_text(text: &str, env: &Env) -> Result<Self, DnsError> {
        Self::compile(&crate::corefile::parse(text)?, env)
    }

    /// Compiles a parsed Corefile: reads forward's resolv.conf files and hosts files.
    pub fn compile(corefile: &Corefile, env: &Env) -> Result<Self, DnsError> {
        let mut compiled = Compiled {
            blocks: Vec::new(),
            index_config: None,
            pods: PodsMode::Disabled,
            ports: BTreeSet::new(),
            http: BTreeMap::new(),
        };
        for sb in &corefile.servers {
            let mut block = Block {
                port: sb.port,
                zones: sb
                    .zones
                    .iter()
                    .filter_map(|z| Some((lower_zone(z)?, Arc::from(z.as_str()))))
                    .collect(),
                server: Arc::from(format!("dns://:{}", sb.port)),
                log: false,
                errors: false,
                loadbalance: false,
                rules: Vec::new(),
                hosts: None,
                kubernetes: None,
                cache: None,
                forward: None,
            };
            compiled.ports.insert(sb.port);
            for plugin in &sb.plugins {
                match plugin {
                    Plugin::Errors => block.errors = true,
                    Plugin::Log => block.log = true,
                    Plugin::LoadBalance => block.loadbalance = true,
                    Plugin::Health(h) => compiled.http.entry(h.addr).or_default().health = true,
                    Plugin::Ready(addr) => compiled.http.entry(*addr).or_default().ready = true,
                    Plugin::Prometheus(addr) => {
                        compiled.http.entry(*addr).or_default().metrics = true
                    }
                    Plugin::Rewrite(r) => block.rules.push(Rule::compile(r)?),
                    Plugin::Hosts(h) => {
                        if block.hosts.is_some() {
                            return Err(DnsError::Config(
                                "hosts: only one per server block".into(),
                            ));
                        }
                        block.hosts = Some(HostsPlugin::new(h, &sb.zones));
                    }
                    Plugin::Cache(c) => block.cache = Some(Cache::new(c, &sb.zones)),
                    Plugin::Forward(f) => {
                        let upstreams = resolve_upstreams(f, &env.systemd_resolv_conf)?;
                        if upstreams.is_empty() {
                            tracing::warn!(from = %f.from, "forward: no usable upstream; queries for it get SERVFAIL");
                        }
                        block.forward =
                            Some(Forwarder::new(f, upstreams).with_timeout(env.forward_timeout));
                    }
                    Plugin::Kubernetes(k) => {
                        let config = IndexConfig {
                            zones: k.zones.clone(),
                            ttl: k.ttl,
                            endpoint_pod_names: k.endpoint_pod_names,
                            namespaces: k.namespaces.clone(),
                            noendpoints: k.noendpoints,
                            ignore_empty_service: k.ignore_empty_service,
                        };
                        match &compiled.index_config {
                            None => {
                                compiled.index_config = Some(config);
                                compiled.pods = k.pods;
                            }
                            Some(first) if *first != config => {
                                tracing::warn!("kubernetes: several plugins with different options; the first one's records are served");
                            }
                            Some(_) => {}
                        }
                        block.kubernetes = Some(KubernetesPlugin {
                            fallthrough: Fallthrough::new(k.fallthrough.as_deref()),
                            pods: k.pods,
                        });
                    }
                    Plugin::Loop | Plugin::Reload(_) | Plugin::Whoami | Plugin::Debug => {}
                }
            }
            compiled.blocks.push(block);
        }
        Ok(compiled)
    }

    /// The block for `name` on `port` (longest zone) and the matched zone.
    pub fn select(&self, port: u16, name: &LowerName) -> Option<(&Block, &Arc<str>)> {
        self.blocks
            .iter()
            .filter(|b| b.port == port)
            .flat_map(|b| b.zones.iter().map(move |(z, text)| (b, z, text)))
            .filter(|(_, z, _)| z.zone_of(name))
            .max_by_key(|(_, z, _)| z.num_labels())
            .map(|(b, _, text)| (b, text))
    }
}

impl Block {
    /// The `server` label of metrics (`dns://:53`).
    pub fn server(&self) -> &Arc<str> {
        &self.server
    }

    /// Runs the chain for one question (`name` lower case). The records' owner names are
    /// lower case (the server puts back the question's case).
    pub async fn resolve(
        &self,
        index: &RwLock<Index>,
        metrics: &Metrics,
        name: &LowerName,
        qtype: RecordType,
        qclass: DNSClass,
        now: Instant,
    ) -> Response {
        let rewritten = rewrite(&self.rules, name);
        let target: LowerName = rewritten
            .as_ref()
            .map(|r| LowerName::from(&r.name))
            .unwrap_or_else(|| name.clone());
        let mut response = self.run(index, metrics, &target, qtype, qclass, now).await;
        // A CNAME answer (ExternalName) is followed through this server block, as CoreDNS
        // does: stub resolvers (glibc, musl) do not chase it themselves.
        for _ in 0..MAX_CNAME_HOPS {
            if matches!(qtype, RecordType::CNAME | RecordType::ANY)
                || response.rcode != ResponseCode::NoError
            {
                break;
            }
            let Some(next) = cname_to_follow(&response, qtype) else {
                break;
            };
            let more = self.run(index, metrics, &next, qtype, qclass, now).await;
            if more.answers.is_empty() {
                break;
            }
            let mut answers = response.answers.records().to_vec();
            answers.extend(more.answers.records().iter().cloned());
            response.answers = Section::Owned(answers);
        }
        if let Some(r) = &rewritten {
            if r.revert {
                response.rename(&r.name, &Name::from(name.clone()));
            }
        }
        if self.loadbalance {
            shuffle(&mut response);
        }
        response
    }

    async fn run(
        &self,
        index: &RwLock<Index>,
        metrics: &Metrics,
        name: &LowerName,
        qtype: RecordType,
        qclass: DNSClass,
        now: Instant,
    ) -> Response {
        if qclass == DNSClass::IN {
            if let Some(hosts) = &self.hosts {
                if let HostsOutcome::Answer(r) = hosts.lookup(name, qtype, now) {
                    return r;
                }
            }
            if let Some(k) = &self.kubernetes {
                let outcome = {
                    let index = index.read().unwrap_or_else(|e| e.into_inner());
                    kubernetes(&index, k.pods, name, qtype)
                };
                match outcome {
                    Outcome::Answer(r) => return r,
                    Outcome::NxDomain(r) if !k.fallthrough.covers(name) => return r,
                    Outcome::NxDomain(_) | Outcome::NotMine => {}
                }
            }
        }
        let key = (name.clone(), qtype, qclass);
        if let Some(cache) = self.cache.as_ref().filter(|c| c.covers(name)) {
            if let Some((r, kind)) = cache.get(&key, now) {
                metrics.cache_hit(&self.server, kind);
                return r;
            }
            metrics.cache_miss(&self.server);
        }
        if let Some(forward) = self.forward.as_ref().filter(|f| f.covers(name)) {
            let mut response = forward
                .forward(&Name::from(name.clone()), qtype, qclass, metrics)
                .await;
            if self.errors && response.rcode == ResponseCode::ServFail {
                tracing::error!("plugin/errors: 2 {name} {qtype}: forward: no upstream answered");
            }
            if let Some(cache) = self.cache.as_ref().filter(|c| c.covers(name)) {
                if let Some(ttl) = cache.insert(key, &response, now) {
                    Cache::cap(&mut response, ttl);
                }
            }
            return response;
        }
        Response::rcode(ResponseCode::ServFail)
    }
}

/// How many CNAMEs an answer follows (a loop stops there too).
const MAX_CNAME_HOPS: usize = 8;

/// The target of the answer's last record when it is a CNAME not answered yet for `qtype`.
fn cname_to_follow(response: &Response, qtype: RecordType) -> Option<LowerName> {
    let records = response.answers.records();
    let RData::CNAME(cname) = &records.last()?.data else {
        return None;
    };
    let target = LowerName::from(&cname.0);
    let answered = records
        .iter()
        .any(|r| LowerName::from(&r.name) == target && r.record_type() == qtype);
    (!answered).then_some(target)
}

/// `loadbalance`: rotates the address records of an answer by a random amount.
fn shuffle(response: &mut Response) {
    let records = response.answers.records();
    let addresses = records
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .count();
    if addresses < 2 || addresses != records.len() {
        return;
    }
    let n = rand::random::<usize>() % addresses;
    if n != 0 {
        response.answers.to_mut().rotate_left(n);
    }
}
