//! NetworkPolicy checks after Kubernetes' test/e2e/network/netpol: namespaces x, y and z
//! (unique names per test, labelled `ns=x`, `ns=y`, `ns=z` so selectors stay stable) with
//! pods a, b and c each (labelled `pod=a` ...), spread over the nodes, each serving ports 80
//! and 81 over TCP and UDP (agnhost serve-hostname, one container per port and protocol,
//! with the named container ports `serve-80-tcp` ... as upstream names them).
//!
//! Three layers:
//! - [`World`]: a pure model of the NetworkPolicy specification (no code of the enforcer):
//!   pods, namespace labels and the policies as the JSON that is applied give the expected
//!   answer to "may `src` reach `dst` on port/protocol".
//! - [`parse_probe`], [`render`]: the output of `agnhost probe` and the readable table of
//!   expected against observed reachability.
//! - [`Matrix`]: the pods of one cluster, probed from every pod with one `kubectl exec` per
//!   source pod and round (all 36 targets in it, the 9 sources in parallel), and the wait
//!   until the observed table equals the model.
//!
//! Network safety: probes go only to addresses of the test's own cluster (pod IPs,
//! ClusterIPs, node IPs) and to names of the cluster zone written fully qualified, with the
//! final dot, so that neither a search path nor an upstream resolver is involved.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::pods::{get_json, kubectl, wait_for};
use crate::{kubectls, ok, Cluster};

/// The image of the upstream suite (a recipe in kins).
pub const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
/// The short names of the namespaces (their `ns` label).
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods of every namespace (their `pod` label).
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves, over both protocols.
pub const PORTS: [u16; 2] = [80, 81];
/// How long a change may take to show in the observed table (a convergence wait, not a
/// timing assertion).
pub const CONVERGE: Duration = Duration::from_secs(45);

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const ALL: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    /// As the API spells it.
    pub fn api(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    /// As `agnhost probe` targets spell it.
    pub fn probe(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub proto: Proto,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ip: Ipv4Addr,
    /// The declared container ports that have a name.
    pub ports: Vec<NamedPort>,
    pub node: String,
}

/// One end of a connection: a pod, or an address that is no pod's (a node, the host).
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    Pod(&'a Pod),
    Ip(Ipv4Addr),
}

impl Peer<'_> {
    fn ip(&self) -> Ipv4Addr {
        match self {
            Peer::Pod(p) => p.ip,
            Peer::Ip(ip) => *ip,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn api(self) -> &'static str {
        match self {
            Dir::Ingress => "Ingress",
            Dir::Egress => "Egress",
        }
    }
    fn rules(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
    fn peers(self) -> &'static str {
        match self {
            Dir::Ingress => "from",
            Dir::Egress => "to",
        }
    }
}

/// A field that is present and not null.
fn field<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A label selector (matchLabels and matchExpressions: In, NotIn, Exists, DoesNotExist)
/// against labels; the empty selector matches everything.
pub fn selector_matches(sel: &Value, labels: &Labels) -> Result<bool> {
    if let Some(ml) = field(sel, "matchLabels") {
        for (k, v) in ml.as_object().context("matchLabels is not a map")? {
            let want = v.as_str().context("a matchLabels value is not a string")?;
            if labels.get(k).map(String::as_str) != Some(want) {
                return Ok(false);
            }
        }
    }
    let exprs = field(sel, "matchExpressions").and_then(Value::as_array);
    for e in exprs.into_iter().flatten() {
        let key = e["key"].as_str().context("an expression without key")?;
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        let matched = match e["operator"].as_str().unwrap_or("") {
            "In" => have.is_some_and(|v| values.contains(&v)),
            "NotIn" => !have.is_some_and(|v| values.contains(&v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => bail!("label selector operator {other:?} is not modelled"),
        };
        if !matched {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether an IPv4 CIDR contains `ip` (IPv6 blocks contain no IPv4 address).
pub fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> Result<bool> {
    if cidr.contains(':') {
        return Ok(false);
    }
    let (net, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr} is not a CIDR"))?;
    let net: Ipv4Addr = net.parse().with_context(|| format!("CIDR {cidr}"))?;
    let len: u32 = len.parse().with_context(|| format!("CIDR {cidr}"))?;
    ensure!(len <= 32, "CIDR {cidr}");
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok(u32::from(ip) & mask == u32::from(net) & mask)
}

/// The policy types of a policy's spec: as given, else Ingress, plus Egress when there
/// are egress rules.
fn policy_types(spec: &Value) -> Vec<String> {
    let given: Vec<String> = field(spec, "policyTypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if !given.is_empty() {
        return given;
    }
    let mut types = vec!["Ingress".to_string()];
    if field(spec, "egress")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty())
    {
        types.push("Egress".to_string());
    }
    types
}

/// A rule's ports against one connection: no ports means all; a number (with endPort a
/// range); a name resolved against the destination pod's container ports, name and
/// protocol both matching; protocol TCP when not given.
fn ports_match(ports: Option<&Value>, port: u16, proto: Proto, dst: Peer) -> Result<bool> {
    let list = match ports.and_then(Value::as_array) {
        Some(l) if !l.is_empty() => l,
        _ => return Ok(true),
    };
    for p in list {
        let p_proto = field(p, "protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        if p_proto != proto.api() {
            continue;
        }
        let matched = match field(p, "port") {
            None => true,
            Some(Value::Number(n)) => {
                let lo = n.as_u64().context("a port that is no port number")?;
                let hi = match field(p, "endPort") {
                    Some(e) => e.as_u64().context("an endPort that is no number")?,
                    None => lo,
                };
                (lo..=hi).contains(&u64::from(port))
            }
            Some(Value::String(name)) => match dst {
                Peer::Pod(d) => d
                    .ports
                    .iter()
                    .any(|np| np.name == *name && np.proto == proto && np.port == port),
                Peer::Ip(_) => false,
            },
            Some(other) => bail!("port {other} is not modelled"),
        };
        if matched {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The pods, the namespaces' labels: the inputs of the model besides the policies.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub pods: Vec<Pod>,
    pub namespaces: BTreeMap<String, Labels>,
}

impl World {
    /// Whether the specification allows `src` to reach `dst` on `port`/`proto` under
    /// `policies` (NetworkPolicy objects as applied, with metadata.namespace): allowed by
    /// the egress side of `src` and by the ingress side of `dst`; a pod always reaches
    /// itself.
    pub fn allowed(
        &self,
        policies: &[Value],
        src: Peer,
        dst: Peer,
        port: u16,
        proto: Proto,
    ) -> Result<bool> {
        if let (Peer::Pod(s), Peer::Pod(d)) = (src, dst) {
            if s.namespace == d.namespace && s.name == d.name {
                return Ok(true);
            }
        }
        let egress = match src {
            Peer::Pod(s) => self.side_allows(policies, Dir::Egress, s, dst, dst, port, proto)?,
            Peer::Ip(_) => true,
        };
        let ingress = match dst {
            Peer::Pod(d) => self.side_allows(policies, Dir::Ingress, d, src, dst, port, proto)?,
            Peer::Ip(_) => true,
        };
        Ok(egress && ingress)
    }

    /// One side: `subject` is the pod whose policies count (the source for egress, the
    /// destination for ingress), `other` the far end, `dst` the destination (named ports
    /// are the destination's). Not isolated in this direction: allowed; isolated: allowed
    /// when some rule of some policy selecting it allows the connection.
    #[allow(clippy::too_many_arguments)]
    fn side_allows(
        &self,
        policies: &[Value],
        dir: Dir,
        subject: &Pod,
        other: Peer,
        dst: Peer,
        port: u16,
        proto: Proto,
    ) -> Result<bool> {
        let mut isolated = false;
        for p in policies {
            let ns = p["metadata"]["namespace"]
                .as_str()
                .context("a policy without metadata.namespace")?;
            let spec = &p["spec"];
            let empty = json!({});
            let selector = field(spec, "podSelector").unwrap_or(&empty);
            if ns != subject.namespace || !selector_matches(selector, &subject.labels)? {
                continue;
            }
            if !policy_types(spec).iter().any(|t| t == dir.api()) {
                continue;
            }
            isolated = true;
            let rules = field(spec, dir.rules()).and_then(Value::as_array);
            for rule in rules.into_iter().flatten() {
                let peer_ok = match field(rule, dir.peers()).and_then(Value::as_array) {
                    Some(peers) if !peers.is_empty() => {
                        let mut any = false;
                        for peer in peers {
                            if self.peer_matches(peer, ns, other)? {
                                any = true;
                                break;
                            }
                        }
                        any
                    }
                    _ => true,
                };
                if peer_ok && ports_match(field(rule, "ports"), port, proto, dst)? {
                    return Ok(true);
                }
            }
        }
        Ok(!isolated)
    }

    /// One peer of a rule of a policy in `policy_ns`: ipBlock (cidr minus except) on the
    /// address; podSelector alone: pods of the policy's namespace; namespaceSelector alone:
    /// all pods of the matching namespaces; both: pods matching both. Selectors match
    /// pods only.
    fn peer_matches(&self, peer: &Value, policy_ns: &str, other: Peer) -> Result<bool> {
        if let Some(block) = field(peer, "ipBlock") {
            let ip = other.ip();
            let cidr = block["cidr"].as_str().context("an ipBlock without cidr")?;
            if !cidr_contains(cidr, ip)? {
                return Ok(false);
            }
            for e in block["except"].as_array().into_iter().flatten() {
                if cidr_contains(e.as_str().context("an except that is no string")?, ip)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let pod_sel = field(peer, "podSelector");
        let ns_sel = field(peer, "namespaceSelector");
        ensure!(
            pod_sel.is_some() || ns_sel.is_some(),
            "a peer with neither podSelector, namespaceSelector nor ipBlock: {peer}"
        );
        let Peer::Pod(pod) = other else {
            return Ok(false);
        };
        let ns_ok = match ns_sel {
            Some(sel) => {
                let labels = self
                    .namespaces
                    .get(&pod.namespace)
                    .with_context(|| format!("no labels of namespace {}", pod.namespace))?;
                selector_matches(sel, labels)?
            }
            None => pod.namespace == policy_ns,
        };
        let pod_ok = match pod_sel {
            Some(sel) => selector_matches(sel, &pod.labels)?,
            None => true,
        };
        Ok(ns_ok && pod_ok)
    }
}

/// What one probe of one target saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Refused,
    Timeout,
    Other(String),
}

impl Outcome {
    /// Only an answer counts as reached; refused and timed out are both "not reached".
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok(reply) => write!(f, "OK {reply}"),
            Outcome::Refused => write!(f, "REFUSED"),
            Outcome::Timeout => write!(f, "TIMEOUT"),
            Outcome::Other(m) => write!(f, "OTHER {m}"),
        }
    }
}

/// The output of `agnhost probe TARGET...`: one line per target, in order,
/// `<target> OK <reply>`, `<target> REFUSED`, `<target> TIMEOUT` or `<target> OTHER <message>`.
pub fn parse_probe(targets: &[String], out: &str) -> Result<Vec<Outcome>> {
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        lines.len() == targets.len(),
        "agnhost probe printed {} lines for {} targets:\n{out}",
        lines.len(),
        targets.len()
    );
    targets
        .iter()
        .zip(lines)
        .map(|(t, line)| {
            let rest = line
                .strip_prefix(t.as_str())
                .and_then(|r| r.strip_prefix(' '))
                .with_context(|| format!("probe line {line:?} is not about {t}"))?;
            let (word, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            Ok(match word {
                "OK" => Outcome::Ok(msg.trim().to_string()),
                "REFUSED" => Outcome::Refused,
                "TIMEOUT" => Outcome::Timeout,
                "OTHER" => Outcome::Other(msg.trim().to_string()),
                _ => bail!("probe line {line:?}: unknown result {word:?}"),
            })
        })
        .collect()
}

/// One cell of the matrix: indices into the matrix pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub src: usize,
    pub dst: usize,
    pub port: u16,
    pub proto: Proto,
}

/// A probe besides the matrix, from a matrix pod: a Service address or a DNS name that
/// leads to pod `dst` on `port`/`proto`; with `dns`, the name must first be resolved by
/// that pod (UDP 53), which the policies must allow too.
#[derive(Clone, Debug)]
pub struct Extra {
    pub src: usize,
    pub target: String,
    pub dst: usize,
    pub port: u16,
    pub proto: Proto,
    pub dns: Option<usize>,
}

/// A TCP connection from the host (the test process, root netns) to `addr` that reaches
/// pod `dst` on `port` seen from the address `seen_as` (a NodePort, masqueraded).
#[derive(Clone, Debug)]
pub struct HostProbe {
    pub addr: SocketAddrV4,
    pub seen_as: Ipv4Addr,
    pub dst: usize,
    pub port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub matrix: BTreeMap<Cell, bool>,
    pub extras: Vec<bool>,
    pub host: Vec<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub matrix: BTreeMap<Cell, Outcome>,
    pub extras: Vec<Outcome>,
    pub host: Vec<Outcome>,
}

/// The expected table: the matrix pods are `world.pods[..n]`.
pub fn expected(
    world: &World,
    n: usize,
    policies: &[Value],
    extras: &[Extra],
    host: &[HostProbe],
) -> Result<Expected> {
    let pod = |i: usize| -> Result<&Pod> { world.pods.get(i).context("no such pod") };
    let mut out = Expected::default();
    for src in 0..n {
        for dst in 0..n {
            for port in PORTS {
                for proto in Proto::ALL {
                    let ok = world.allowed(
                        policies,
                        Peer::Pod(pod(src)?),
                        Peer::Pod(pod(dst)?),
                        port,
                        proto,
                    )?;
                    out.matrix.insert(
                        Cell {
                            src,
                            dst,
                            port,
                            proto,
                        },
                        ok,
                    );
                }
            }
        }
    }
    for e in extras {
        let (s, d) = (Peer::Pod(pod(e.src)?), Peer::Pod(pod(e.dst)?));
        let dns_ok = match e.dns {
            Some(dns) => world.allowed(policies, s, Peer::Pod(pod(dns)?), 53, Proto::Udp)?,
            None => true,
        };
        out.extras
            .push(dns_ok && world.allowed(policies, s, d, e.port, e.proto)?);
    }
    for h in host {
        out.host.push(world.allowed(
            policies,
            Peer::Ip(h.seen_as),
            Peer::Pod(pod(h.dst)?),
            h.port,
            Proto::Tcp,
        )?);
    }
    Ok(out)
}

/// The number of differences between expected and observed (a missing observation is one).
pub fn mismatches(exp: &Expected, obs: &Observed) -> usize {
    let m = exp
        .matrix
        .iter()
        .filter(|(cell, want)| obs.matrix.get(cell).map(Outcome::reached) != Some(**want))
        .count();
    let list = |want: &[bool], got: &[Outcome]| {
        want.iter()
            .enumerate()
            .filter(|(i, w)| got.get(*i).map(Outcome::reached) != Some(**w))
            .count()
    };
    m + list(&exp.extras, &obs.extras) + list(&exp.host, &obs.host)
}

fn mark(want: bool, got: Option<&Outcome>) -> &'static str {
    match (want, got.map(Outcome::reached)) {
        (true, Some(true)) => ".",
        (false, Some(false)) => "-",
        (false, Some(true)) => "R!",
        (true, Some(false)) => "B!",
        (_, None) => "?",
    }
}

fn reach_word(b: bool) -> &'static str {
    if b {
        "reached"
    } else {
        "blocked"
    }
}

/// Expected against observed, readable: one grid per port and protocol (rows: from,
/// columns: to), then every mismatch with what the probe said, then the other probes.
/// `names` are the matrix pods' short names (`x/a` ...).
pub fn render(
    names: &[String],
    exp: &Expected,
    obs: &Observed,
    extras: &[Extra],
    host: &[HostProbe],
) -> String {
    let mut s = format!(
        "{} mismatches. Legend: . reached as expected, - blocked as expected, \
         R! reached but should be blocked, B! blocked but should be reached, ? no result\n",
        mismatches(exp, obs)
    );
    let w = names.iter().map(String::len).max().unwrap_or(3).max(3) + 2;
    let mut details = Vec::new();
    for port in PORTS {
        for proto in Proto::ALL {
            s.push_str(&format!(
                "\n{}/{port} (rows: from, columns: to)\n",
                proto.api()
            ));
            s.push_str(&format!("{:w$}", ""));
            for n in names {
                s.push_str(&format!("{n:w$}"));
            }
            s.push('\n');
            for (src, src_name) in names.iter().enumerate() {
                s.push_str(&format!("{src_name:w$}"));
                for (dst, dst_name) in names.iter().enumerate() {
                    let cell = Cell {
                        src,
                        dst,
                        port,
                        proto,
                    };
                    let want = exp.matrix.get(&cell).copied().unwrap_or(false);
                    let got = obs.matrix.get(&cell);
                    let m = mark(want, got);
                    if m.len() > 1 || m == "?" {
                        details.push(format!(
                            "  {src_name} -> {dst_name} {}/{port}: expected {}, probe said {}",
                            proto.api(),
                            reach_word(want),
                            got.map_or("nothing".to_string(), Outcome::to_string)
                        ));
                    }
                    s.push_str(&format!("{m:w$}"));
                }
                s.push('\n');
            }
        }
    }
    if !details.is_empty() {
        s.push_str("\nmismatches:\n");
        s.push_str(&details.join("\n"));
        s.push('\n');
    }
    let name = |i: usize| names.get(i).map_or("?", String::as_str);
    if !extras.is_empty() {
        s.push_str("\nthrough Services and names:\n");
        for (i, e) in extras.iter().enumerate() {
            let want = exp.extras.get(i).copied().unwrap_or(false);
            let got = obs.extras.get(i);
            s.push_str(&format!(
                "  {:2} {} -> {} (= {} {}/{}{}): expected {}, probe said {}\n",
                mark(want, got),
                name(e.src),
                e.target,
                name(e.dst),
                e.proto.api(),
                e.port,
                if e.dns.is_some() { ", after DNS" } else { "" },
                reach_word(want),
                got.map_or("nothing".to_string(), Outcome::to_string)
            ));
        }
    }
    if !host.is_empty() {
        s.push_str("\nfrom the host:\n");
        for (i, h) in host.iter().enumerate() {
            let want = exp.host.get(i).copied().unwrap_or(false);
            let got = obs.host.get(i);
            s.push_str(&format!(
                "  {:2} host -> {} (= {} TCP/{}, seen from {}): expected {}, observed {}\n",
                mark(want, got),
                h.addr,
                name(h.dst),
                h.port,
                h.seen_as,
                reach_word(want),
                got.map_or("nothing".to_string(), Outcome::to_string)
            ));
        }
    }
    s
}

/// A NetworkPolicy object.
pub fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// `{"matchLabels": {key: value}}`.
pub fn labels(key: &str, value: &str) -> Value {
    json!({"matchLabels": {key: value}})
}

/// The upstream suite's pod: four agnhost serve-hostname containers, one per port and
/// protocol, named as their container ports (`serve-80-tcp` ...).
pub fn agnhost_pod(namespace: &str, name: &str, node: &str) -> Value {
    let mut containers = Vec::new();
    for port in PORTS {
        for proto in Proto::ALL {
            let cname = format!("serve-{port}-{}", proto.probe());
            containers.push(json!({
                "name": cname, "image": AGNHOST,
                "command": ["/agnhost", "serve-hostname", format!("--{}", proto.probe()),
                            "--http=false", "--port", port.to_string()],
                "ports": [{"name": cname, "containerPort": port, "protocol": proto.api()}],
            }));
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"pod": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": containers},
    })
}

fn list(items: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// `kubectl apply -f -` of objects.
pub fn apply(c: &Cluster, items: &[Value]) -> Result<String> {
    ok(c.kubectl_stdin(&kubectls()[0], &["apply", "-f", "-"], Some(&list(items)))?)
}

fn labels_of(v: &Value) -> Labels {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// A running, ready pod object as the model sees it.
fn model_pod(p: &Value) -> Result<Pod> {
    let meta = &p["metadata"];
    let mut ports = Vec::new();
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        for cp in c["ports"].as_array().into_iter().flatten() {
            let Some(name) = cp["name"].as_str() else {
                continue;
            };
            let proto = match cp["protocol"].as_str().unwrap_or("TCP") {
                "UDP" => Proto::Udp,
                "TCP" => Proto::Tcp,
                _ => continue,
            };
            ports.push(NamedPort {
                name: name.to_string(),
                port: u16::try_from(cp["containerPort"].as_u64().context("containerPort")?)?,
                proto,
            });
        }
    }
    Ok(Pod {
        namespace: meta["namespace"].as_str().context("namespace")?.to_string(),
        name: meta["name"].as_str().context("name")?.to_string(),
        labels: labels_of(&meta["labels"]),
        ip: p["status"]["podIP"]
            .as_str()
            .context("podIP")?
            .parse()
            .context("podIP")?,
        ports,
        node: p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
    })
}

fn running_and_ready(p: &Value) -> bool {
    let ready = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|x| x["type"] == "Ready" && x["status"] == "True");
    p["status"]["phase"] == "Running" && ready && p["status"]["podIP"].is_string()
}

/// Waits until `count` pods of `namespace` matching `selector` (a `-l` value, or "")
/// run, are ready and have an IP; returns them.
pub fn wait_pods(c: &Cluster, namespace: &str, selector: &str, count: usize) -> Result<Vec<Value>> {
    wait_for(
        &format!("{count} pods of {namespace} ({selector}) to run"),
        240,
        || {
            let mut args = vec!["-n", namespace, "get", "pods"];
            if !selector.is_empty() {
                args.extend(["-l", selector]);
            }
            let v = get_json(c, &args)?;
            let pods: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
            Ok((pods.len() == count && pods.iter().all(running_and_ready)).then_some(pods))
        },
    )
}

/// A node's pod CIDR.
pub fn pod_cidr(c: &Cluster, node: &str) -> Result<String> {
    let n = get_json(c, &["get", "node", node])?;
    Ok(n["spec"]["podCIDR"]
        .as_str()
        .context("no podCIDR")?
        .to_string())
}

/// A TCP connection from the test process: OK with what the server wrote, or why not.
fn host_probe(addr: SocketAddrV4) -> Outcome {
    match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1)) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = Vec::new();
            let _ = Read::by_ref(&mut s).take(256).read_to_end(&mut buf);
            Outcome::Ok(String::from_utf8_lossy(&buf).trim().to_string())
        }
        Err(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Other(e.to_string()),
        },
    }
}

/// The upstream matrix in one cluster, the policies applied so far, and the probes.
pub struct Matrix<'c> {
    c: &'c Cluster,
    /// The matrix pods first (x/a, x/b, ... z/c), then other pods the model needs (DNS).
    pub world: World,
    /// The short names of the matrix pods, `x/a` ...
    pub names: Vec<String>,
    ns: BTreeMap<String, String>,
    policies: Vec<Value>,
    extras: Vec<Extra>,
    host: Vec<HostProbe>,
}

impl<'c> Matrix<'c> {
    /// Creates the namespaces `<prefix>-x` ... (labelled `ns=x` ...) and their pods, pod
    /// number i (x/a = 0 ... z/c = 8) on `nodes[i % nodes.len()]`; waits for them.
    pub fn setup(c: &'c Cluster, prefix: &str, nodes: &[&str]) -> Result<Matrix<'c>> {
        ensure!(!nodes.is_empty(), "no nodes");
        let ns: BTreeMap<String, String> = NAMESPACES
            .iter()
            .map(|s| (s.to_string(), format!("{prefix}-{s}")))
            .collect();
        let namespaces: Vec<Value> = NAMESPACES
            .iter()
            .map(|s| {
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": format!("{prefix}-{s}"), "labels": {"ns": s}}})
            })
            .collect();
        apply(c, &namespaces)?;
        let mut pods = Vec::new();
        for (i, s) in NAMESPACES.iter().enumerate() {
            for (j, p) in PODS.iter().enumerate() {
                let node = nodes[(i * PODS.len() + j) % nodes.len()];
                pods.push(agnhost_pod(&format!("{prefix}-{s}"), p, node));
            }
        }
        apply(c, &pods)?;
        let mut world = World::default();
        let mut names = Vec::new();
        for s in NAMESPACES {
            let full = &ns[s];
            let nsobj = get_json(c, &["get", "namespace", full])?;
            let nslabels = labels_of(&nsobj["metadata"]["labels"]);
            ensure!(
                nslabels.get("kubernetes.io/metadata.name") == Some(full),
                "namespace {full} lacks the label kubernetes.io/metadata.name: {nslabels:?}"
            );
            world.namespaces.insert(full.clone(), nslabels);
            let mut running = wait_pods(c, full, "", PODS.len())?;
            running.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
            for p in &running {
                let pod = model_pod(p)?;
                names.push(format!("{s}/{}", pod.name));
                world.pods.push(pod);
            }
        }
        for p in &world.pods {
            eprintln!("netpol: {}/{} {} on {}", p.namespace, p.name, p.ip, p.node);
        }
        Ok(Matrix {
            c,
            world,
            names,
            ns,
            policies: Vec::new(),
            extras: Vec::new(),
            host: Vec::new(),
        })
    }

    /// The full name of namespace `x`, `y` or `z`.
    pub fn ns(&self, short: &str) -> Result<String> {
        self.ns
            .get(short)
            .cloned()
            .with_context(|| format!("no namespace {short}"))
    }

    /// The index of matrix pod `ns/pod` (short namespace name).
    pub fn index(&self, short_ns: &str, pod: &str) -> Result<usize> {
        let want = format!("{short_ns}/{pod}");
        self.names
            .iter()
            .position(|n| *n == want)
            .with_context(|| format!("no pod {want}"))
    }

    pub fn pod(&self, short_ns: &str, pod: &str) -> Result<&Pod> {
        Ok(&self.world.pods[self.index(short_ns, pod)?])
    }

    /// Adds a pod outside the matrix to the model (e.g. the DNS server), with its
    /// namespace's labels; its index.
    pub fn add_pod(&mut self, pod: &Value) -> Result<usize> {
        let p = model_pod(pod)?;
        let nsobj = get_json(self.c, &["get", "namespace", &p.namespace])?;
        self.world
            .namespaces
            .insert(p.namespace.clone(), labels_of(&nsobj["metadata"]["labels"]));
        self.world.pods.push(p);
        Ok(self.world.pods.len() - 1)
    }

    pub fn add_extra(&mut self, extra: Extra) {
        self.extras.push(extra);
    }

    pub fn add_host_probe(&mut self, probe: HostProbe) {
        self.host.push(probe);
    }

    fn key(p: &Value) -> (String, String) {
        (
            p["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            p["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    }

    /// `kubectl apply` of policies (new ones or edited ones, by namespace and name).
    pub fn apply(&mut self, policies: &[Value]) -> Result<()> {
        apply(self.c, policies)?;
        for p in policies {
            let k = Self::key(p);
            self.policies.retain(|q| Self::key(q) != k);
            self.policies.push(p.clone());
        }
        Ok(())
    }

    /// `kubectl delete` of policies.
    pub fn delete(&mut self, policies: &[Value]) -> Result<()> {
        if policies.is_empty() {
            return Ok(());
        }
        ok(self.c.kubectl_stdin(
            &kubectls()[0],
            &["delete", "--ignore-not-found", "-f", "-"],
            Some(&list(policies)),
        )?)?;
        for p in policies {
            let k = Self::key(p);
            self.policies.retain(|q| Self::key(q) != k);
        }
        Ok(())
    }

    /// Deletes every policy applied so far.
    pub fn delete_all(&mut self) -> Result<()> {
        let all = self.policies.clone();
        self.delete(&all)
    }

    /// `kubectl label pod --overwrite` of a matrix pod, in the model too.
    pub fn label_pod(&mut self, short_ns: &str, pod: &str, key: &str, value: &str) -> Result<()> {
        let i = self.index(short_ns, pod)?;
        let ns = self.ns(short_ns)?;
        kubectl(
            self.c,
            &[
                "-n",
                &ns,
                "label",
                "pod",
                pod,
                "--overwrite",
                &format!("{key}={value}"),
            ],
        )?;
        self.world.pods[i]
            .labels
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// `kubectl label namespace --overwrite` of a matrix namespace, in the model too.
    pub fn label_namespace(&mut self, short_ns: &str, key: &str, value: &str) -> Result<()> {
        let ns = self.ns(short_ns)?;
        kubectl(
            self.c,
            &[
                "label",
                "namespace",
                &ns,
                "--overwrite",
                &format!("{key}={value}"),
            ],
        )?;
        self.world
            .namespaces
            .entry(ns)
            .or_default()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// The model's table for the current pods, labels and policies.
    pub fn expected(&self) -> Result<Expected> {
        expected(
            &self.world,
            self.names.len(),
            &self.policies,
            &self.extras,
            &self.host,
        )
    }

    /// One `agnhost probe` of `targets` from matrix pod `src`, with kubectl `k`.
    fn probe(&self, k: &Path, src: usize, targets: &[String]) -> Result<Vec<Outcome>> {
        let pod = &self.world.pods[src];
        let mut args = vec![
            "exec",
            "-n",
            &pod.namespace,
            &pod.name,
            "-c",
            "serve-80-tcp",
            "--",
            "/agnhost",
            "probe",
            "--timeout",
            "1s",
        ];
        args.extend(targets.iter().map(String::as_str));
        let out = ok(self.c.kubectl(k, &args)?)
            .with_context(|| format!("probing from {}", self.names[src]))?;
        parse_probe(targets, &out).with_context(|| format!("probing from {}", self.names[src]))
    }

    /// One round: every matrix pod probes every matrix pod on every port and protocol and
    /// its extra targets (one exec per source, all sources in parallel, the kubectls of
    /// $KINS_KUBECTLS taken in turn), and the host probes run.
    pub fn observe(&self) -> Result<Observed> {
        let ks = kubectls();
        let n = self.names.len();
        let mut jobs = Vec::new();
        for src in 0..n {
            let mut targets = Vec::new();
            let mut cells = Vec::new();
            for dst in 0..n {
                let ip = self.world.pods[dst].ip;
                for port in PORTS {
                    for proto in Proto::ALL {
                        targets.push(format!("{}:{ip}:{port}", proto.probe()));
                        cells.push(Some(Cell {
                            src,
                            dst,
                            port,
                            proto,
                        }));
                    }
                }
            }
            // (after the matrix, in the order of `extras`: matched up again below)
            for e in self.extras.iter().filter(|e| e.src == src) {
                targets.push(e.target.clone());
                cells.push(None);
            }
            jobs.push((src, targets, cells));
        }
        let (results, host) = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(src, targets, _)| {
                    let k = &ks[*src % ks.len()];
                    scope.spawn(move || self.probe(k, *src, targets))
                })
                .collect();
            let host = scope.spawn(|| {
                self.host
                    .iter()
                    .map(|h| host_probe(h.addr))
                    .collect::<Vec<_>>()
            });
            let results: Vec<Result<Vec<Outcome>>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow!("a probe thread panicked"))
                        .and_then(|r| r)
                })
                .collect();
            (
                results,
                host.join()
                    .map_err(|_| anyhow!("the host probe thread panicked")),
            )
        });
        let mut obs = Observed {
            host: host?,
            extras: vec![Outcome::Other("not probed".into()); self.extras.len()],
            ..Observed::default()
        };
        for ((src, _, cells), result) in jobs.iter().zip(results) {
            let outcomes = result?;
            let mut extra_slots = self
                .extras
                .iter()
                .enumerate()
                .filter(|(_, e)| e.src == *src)
                .map(|(i, _)| i);
            for (cell, outcome) in cells.iter().zip(outcomes) {
                match cell {
                    Some(cell) => {
                        obs.matrix.insert(*cell, outcome);
                    }
                    None => {
                        if let Some(i) = extra_slots.next() {
                            obs.extras[i] = outcome;
                        }
                    }
                }
            }
        }
        Ok(obs)
    }

    /// Probes until the observed table equals the model's, or fails after [`CONVERGE`]
    /// with the table of differences and the policies.
    pub fn expect(&self, scenario: &str) -> Result<()> {
        let exp = self.expected()?;
        let start = Instant::now();
        let mut rounds = 0;
        let mut last: Option<Observed> = None;
        let mut last_err: Option<anyhow::Error> = None;
        loop {
            rounds += 1;
            match self.observe() {
                Ok(obs) => {
                    if mismatches(&exp, &obs) == 0 {
                        eprintln!(
                            "netpol {scenario}: as the model says ({rounds} probe rounds, {:.1}s)",
                            start.elapsed().as_secs_f64()
                        );
                        return Ok(());
                    }
                    last = Some(obs);
                }
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() > CONVERGE {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let policies: Vec<String> = self.policies.iter().map(Value::to_string).collect();
        let errors = last_err.map_or(String::new(), |e| format!("\nlast probe error: {e:#}"));
        match last {
            Some(obs) => {
                let table = render(&self.names, &exp, &obs, &self.extras, &self.host);
                bail!(
                    "netpol {scenario}: the observed reachability still differs from the model \
                     after {rounds} probe rounds ({:.0}s):\n{table}\npolicies:\n{}{errors}",
                    start.elapsed().as_secs_f64(),
                    policies.join("\n")
                )
            }
            None => bail!("netpol {scenario}: no probe round succeeded{errors}"),
        }
    }

    /// A scenario: apply `policies`, wait for the model's table, delete them and wait for
    /// the table without them (also when the first wait failed).
    pub fn scenario(&mut self, name: &str, policies: &[Value]) -> Result<()> {
        self.apply(policies)?;
        let applied = self.expect(name);
        self.delete(policies)?;
        let back = self.expect(&format!("{name}: policies deleted"));
        applied.and(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, ip: &str) -> Result<Pod> {
        let mut ports = Vec::new();
        for port in PORTS {
            for proto in Proto::ALL {
                ports.push(NamedPort {
                    name: format!("serve-{port}-{}", proto.probe()),
                    port,
                    proto,
                });
            }
        }
        Ok(Pod {
            namespace: ns.to_string(),
            name: name.to_string(),
            labels: [("pod".to_string(), name.to_string())].into(),
            ip: ip.parse()?,
            ports,
            node: String::new(),
        })
    }

    /// x/a x/b y/a y/b, namespaces labelled ns=x and ns=y.
    fn world() -> Result<World> {
        let mut w = World::default();
        for (i, ns) in ["x", "y"].iter().enumerate() {
            w.namespaces.insert(
                ns.to_string(),
                [
                    ("ns".to_string(), ns.to_string()),
                    ("kubernetes.io/metadata.name".to_string(), ns.to_string()),
                ]
                .into(),
            );
            for (j, p) in ["a", "b"].iter().enumerate() {
                w.pods.push(pod(ns, p, &format!("10.244.{i}.{}", j + 10))?);
            }
        }
        Ok(w)
    }

    /// `src -> dst` (`x/a` ...) on port/proto.
    fn check(
        w: &World,
        pols: &[Value],
        src: &str,
        dst: &str,
        port: u16,
        proto: Proto,
    ) -> Result<bool> {
        let find = |n: &str| -> Result<&Pod> {
            w.pods
                .iter()
                .find(|p| format!("{}/{}", p.namespace, p.name) == n)
                .context("no pod")
        };
        w.allowed(
            pols,
            Peer::Pod(find(src)?),
            Peer::Pod(find(dst)?),
            port,
            proto,
        )
    }

    #[test]
    fn no_policies_allow_all_and_deny_isolates() -> Result<()> {
        let w = world()?;
        assert!(check(&w, &[], "y/a", "x/a", 80, Proto::Udp)?);
        let deny = [policy("x", "deny", json!({"podSelector": {}}))];
        assert!(!check(&w, &deny, "y/a", "x/a", 80, Proto::Tcp)?);
        assert!(!check(&w, &deny, "x/b", "x/a", 81, Proto::Udp)?);
        assert!(check(&w, &deny, "x/a", "x/a", 80, Proto::Tcp)?, "self");
        assert!(
            check(&w, &deny, "x/a", "y/a", 80, Proto::Tcp)?,
            "egress open"
        );
        // Egress only: ingress rules of the same policy do not count.
        let eg = [policy(
            "x",
            "eg",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": []}),
        )];
        assert!(!check(&w, &eg, "x/a", "y/a", 80, Proto::Tcp)?);
        assert!(check(&w, &eg, "y/a", "x/a", 80, Proto::Tcp)?);
        // Egress rules alone imply Egress (and Ingress) types.
        let implied = [policy(
            "x",
            "implied",
            json!({"podSelector": labels("pod", "a"), "egress": [{"to": [{"podSelector": {}}]}]}),
        )];
        assert!(!check(&w, &implied, "x/a", "y/a", 80, Proto::Tcp)?);
        assert!(check(&w, &implied, "x/a", "x/b", 80, Proto::Tcp)?);
        assert!(!check(&w, &implied, "x/b", "x/a", 80, Proto::Tcp)?);
        Ok(())
    }

    #[test]
    fn peers_and_selectors() -> Result<()> {
        let w = world()?;
        let and = [policy(
            "x",
            "and",
            json!({"podSelector": labels("pod", "a"), "ingress": [{"from": [
                {"namespaceSelector": labels("ns", "y"), "podSelector": labels("pod", "b")}]}]}),
        )];
        assert!(check(&w, &and, "y/b", "x/a", 80, Proto::Tcp)?);
        assert!(!check(&w, &and, "y/a", "x/a", 80, Proto::Tcp)?);
        assert!(!check(&w, &and, "x/b", "x/a", 80, Proto::Tcp)?);
        let or = [policy(
            "x",
            "or",
            json!({"podSelector": labels("pod", "a"), "ingress": [{"from": [
                {"namespaceSelector": labels("ns", "y")}, {"podSelector": labels("pod", "b")}]}]}),
        )];
        assert!(check(&w, &or, "y/a", "x/a", 80, Proto::Tcp)?);
        assert!(
            check(&w, &or, "x/b", "x/a", 80, Proto::Tcp)?,
            "own namespace"
        );
        let exprs = [policy(
            "x",
            "exprs",
            json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
                   "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                       {"key": "ns", "operator": "NotIn", "values": ["x"]},
                       {"key": "tier", "operator": "DoesNotExist"}]},
                     "podSelector": {"matchExpressions": [
                       {"key": "pod", "operator": "In", "values": ["a"]}]}}]}]}),
        )];
        assert!(check(&w, &exprs, "y/a", "x/b", 80, Proto::Tcp)?);
        assert!(!check(&w, &exprs, "y/b", "x/b", 80, Proto::Tcp)?);
        assert!(!check(&w, &exprs, "x/a", "x/b", 80, Proto::Tcp)?);
        Ok(())
    }

    #[test]
    fn ports_ip_blocks_and_both_sides() -> Result<()> {
        let w = world()?;
        let named = [policy(
            "x",
            "named",
            json!({"podSelector": {}, "ingress": [{"ports": [
                {"port": "serve-80-tcp"}, {"port": "serve-81-udp", "protocol": "UDP"},
                {"port": "serve-80-udp"}]}]}),
        )];
        assert!(check(&w, &named, "y/a", "x/a", 80, Proto::Tcp)?);
        assert!(check(&w, &named, "y/a", "x/a", 81, Proto::Udp)?);
        assert!(
            !check(&w, &named, "y/a", "x/a", 80, Proto::Udp)?,
            "name of UDP as TCP"
        );
        assert!(!check(&w, &named, "y/a", "x/a", 81, Proto::Tcp)?);
        let range = [policy(
            "x",
            "range",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}),
        )];
        assert!(check(&w, &range, "y/a", "x/a", 81, Proto::Tcp)?);
        assert!(!check(&w, &range, "y/a", "x/a", 81, Proto::Udp)?);
        let block = [policy(
            "x",
            "block",
            json!({"podSelector": {}, "ingress": [{"from": [
                {"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.10/32"]}}]}]}),
        )];
        assert!(!check(&w, &block, "y/a", "x/a", 80, Proto::Tcp)?, "except");
        assert!(check(&w, &block, "y/b", "x/a", 80, Proto::Tcp)?);
        assert!(!check(&w, &block, "x/b", "x/a", 80, Proto::Tcp)?);
        assert!(w.allowed(
            &block,
            Peer::Ip("10.244.1.99".parse()?),
            Peer::Pod(&w.pods[0]),
            80,
            Proto::Tcp
        )?);
        assert!(!w.allowed(
            &block,
            Peer::Ip("172.29.0.3".parse()?),
            Peer::Pod(&w.pods[0]),
            80,
            Proto::Tcp
        )?);
        // Both sides must allow: y/b may only send to z, x/a takes from y.
        let both = [
            policy(
                "y",
                "eg",
                json!({"podSelector": labels("pod", "b"), "policyTypes": ["Egress"],
                       "egress": [{"to": [{"namespaceSelector": labels("ns", "z")}]}]}),
            ),
            policy(
                "x",
                "in",
                json!({"podSelector": labels("pod", "a"),
                       "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
            ),
        ];
        assert!(check(&w, &both, "y/a", "x/a", 80, Proto::Tcp)?);
        assert!(!check(&w, &both, "y/b", "x/a", 80, Proto::Tcp)?);
        Ok(())
    }

    #[test]
    fn probe_output_and_the_table() -> Result<()> {
        let targets = vec![
            "tcp:10.0.0.1:80".to_string(),
            "udp:10.0.0.1:81".to_string(),
            "tcp:s.ns.svc.cluster.local.:80".to_string(),
        ];
        let out = "tcp:10.0.0.1:80 OK a\nudp:10.0.0.1:81 REFUSED\ntcp:s.ns.svc.cluster.local.:80 OTHER lookup failed\n";
        let got = parse_probe(&targets, out)?;
        assert_eq!(
            got,
            vec![
                Outcome::Ok("a".into()),
                Outcome::Refused,
                Outcome::Other("lookup failed".into())
            ]
        );
        assert!(parse_probe(&targets, "tcp:10.0.0.1:80 OK a\n").is_err());
        // One mismatch shows in its grid and in the list.
        let mut exp = Expected::default();
        let mut obs = Observed::default();
        for port in PORTS {
            for proto in Proto::ALL {
                let cell = Cell {
                    src: 0,
                    dst: 1,
                    port,
                    proto,
                };
                exp.matrix.insert(cell, true);
                obs.matrix.insert(cell, Outcome::Ok("b".into()));
            }
        }
        let cell = Cell {
            src: 0,
            dst: 1,
            port: 81,
            proto: Proto::Udp,
        };
        obs.matrix.insert(cell, Outcome::Timeout);
        assert_eq!(mismatches(&exp, &obs), 1);
        let names = vec!["x/a".to_string(), "x/b".to_string()];
        let t = render(&names, &exp, &obs, &[], &[]);
        assert!(
            t.contains("x/a -> x/b UDP/81: expected reached, probe said TIMEOUT"),
            "{t}"
        );
        assert!(t.contains("B!"), "{t}");
        Ok(())
    }
}
