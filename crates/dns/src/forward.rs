//! The forward plugin: plain DNS to upstream servers.
//!
//! Each query goes out over a fresh connected UDP socket (a random source port) with a fresh
//! random ID, and is retried over TCP when the reply is truncated (`force_tcp` goes straight
//! to TCP). An upstream that does not answer within [`TIMEOUT`] is skipped for the next one
//! of the policy's order; when all fail the answer is SERVFAIL.
//!
//! Loopback upstreams read from a resolv.conf file (systemd-resolved's 127.0.0.53 stub)
//! would loop from inside a pod, so [`resolve_upstreams`] replaces them with the real
//! upstreams from `/run/systemd/resolve/resolv.conf`, or drops them with a warning.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::answer::{Response, Section};
use crate::chain::in_zones;
use crate::corefile::{Forward, ForwardPolicy, Upstream};
use crate::metrics::Metrics;
use crate::DnsError;

/// How long one upstream has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Where systemd-resolved writes the upstreams behind its stub.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The `nameserver` addresses of resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            (f.next()? == "nameserver").then_some(())?;
            f.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Replaces loopback nameservers read from a resolv.conf file by `systemd` (the nameservers
/// of systemd-resolved's upstream file, when it exists), or drops them. Returns the
/// upstreams (port 53, in order, without duplicates) and one warning per dropped address.
pub fn replace_loopback(
    file_servers: &[IpAddr],
    systemd: Option<&[IpAddr]>,
) -> (Vec<SocketAddr>, Vec<String>) {
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut warnings = Vec::new();
    let push = |ip: IpAddr, out: &mut Vec<SocketAddr>| {
        let addr = SocketAddr::new(ip, 53);
        if !out.contains(&addr) {
            out.push(addr);
        }
    };
    for ip in file_servers {
        if !ip.is_loopback() {
            push(*ip, &mut out);
            continue;
        }
        let real: Vec<IpAddr> = systemd
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|i| !i.is_loopback())
            .collect();
        if real.is_empty() {
            warnings.push(format!(
                "forward: dropping loopback nameserver {ip}: it would loop from a pod, and {SYSTEMD_RESOLV_CONF} lists no other"
            ));
        }
        for r in real {
            push(r, &mut out);
        }
    }
    (out, warnings)
}

/// The upstream addresses of a `forward` plugin: addresses as written, files read (with
/// loopback replacement through `systemd_resolv_conf`).
pub fn resolve_upstreams(
    forward: &Forward,
    systemd_resolv_conf: &Path,
) -> Result<Vec<SocketAddr>, DnsError> {
    let mut out = Vec::new();
    for upstream in &forward.to {
        match upstream {
            Upstream::Addr(addr) => out.push(*addr),
            Upstream::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| DnsError::Read {
                    path: path.clone(),
                    source,
                })?;
                let systemd = std::fs::read_to_string(systemd_resolv_conf)
                    .ok()
                    .map(|t| parse_resolv_conf(&t));
                let (addrs, warnings) =
                    replace_loopback(&parse_resolv_conf(&text), systemd.as_deref());
                for w in warnings {
                    tracing::warn!("{w}");
                }
                out.extend(addrs);
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// A compiled forward plugin.
#[derive(Debug)]
pub struct Forwarder {
    from: LowerName,
    except: Vec<LowerName>,
    upstreams: Vec<SocketAddr>,
    policy: ForwardPolicy,
    force_tcp: bool,
    limit: Option<Arc<Semaphore>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Forwarder {
    /// Compiles the plugin with its resolved upstreams.
    pub fn new(forward: &Forward, upstreams: Vec<SocketAddr>) -> Self {
        let zone = |z: &String| Name::from_ascii(z).ok().map(|n| LowerName::from(&n));
        Self {
            from: zone(&forward.from).unwrap_or_else(|| LowerName::from(Name::root())),
            except: forward.except.iter().filter_map(zone).collect(),
            upstreams,
            policy: forward.policy,
            force_tcp: forward.force_tcp,
            limit: forward
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            next: AtomicUsize::new(0),
            timeout: TIMEOUT,
        }
    }

    /// With another per-upstream timeout (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The upstreams.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Whether the plugin forwards `name`.
    pub fn covers(&self, name: &LowerName) -> bool {
        self.from.zone_of(name) && !in_zones(&self.except, name)
    }

    /// The upstreams in the order this query tries them.
    fn order(&self) -> Vec<SocketAddr> {
        let n = self.upstreams.len();
        if n == 0 {
            return Vec::new();
        }
        let start = match self.policy {
            ForwardPolicy::Sequential => 0,
            ForwardPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            ForwardPolicy::Random => rand::random::<usize>() % n,
        };
        (0..n).map(|i| self.upstreams[(start + i) % n]).collect()
    }

    /// Forwards one question; SERVFAIL when no upstream answers, REFUSED over `max_concurrent`.
    pub async fn forward(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        metrics: &Metrics,
    ) -> Response {
        let _permit = match &self.limit {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return Response::rcode(ResponseCode::Refused),
            },
            None => None,
        };
        for upstream in self.order() {
            metrics.forward_request(upstream);
            match exchange(upstream, name, qtype, qclass, self.force_tcp, self.timeout).await {
                Ok(msg) => {
                    metrics.forward_response(upstream, msg.metadata.response_code);
                    return Response {
                        rcode: msg.metadata.response_code,
                        authoritative: msg.metadata.authoritative,
                        recursion_available: msg.metadata.recursion_available,
                        answers: Section::Owned(msg.answers),
                        authorities: Section::Owned(msg.authorities),
                        additionals: Section::Owned(msg.additionals),
                    };
                }
                Err(error) => {
                    tracing::warn!(%upstream, %name, %qtype, %error, "forward: upstream failed");
                }
            }
        }
        Response::rcode(ResponseCode::ServFail)
    }
}

fn query_bytes(
    id: u16,
    name: &Name,
    qtype: RecordType,
    qclass: DNSClass,
) -> Result<Vec<u8>, String> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let mut q = Query::query(name.clone(), qtype);
    q.set_query_class(qclass);
    msg.add_query(q);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec().map_err(|e| e.to_string())
}

fn matches(msg: &Message, id: u16, name: &Name, qtype: RecordType) -> bool {
    msg.metadata.id == id
        && msg.metadata.message_type == MessageType::Response
        && msg
            .queries
            .first()
            .is_some_and(|q| q.name() == name && q.query_type() == qtype)
}

/// One exchange with one upstream: UDP, then TCP when truncated.
pub async fn exchange(
    upstream: SocketAddr,
    name: &Name,
    qtype: RecordType,
    qclass: DNSClass,
    force_tcp: bool,
    timeout: Duration,
) -> Result<Message, String> {
    let id: u16 = rand::random();
    let query = query_bytes(id, name, qtype, qclass)?;
    if !force_tcp {
        let msg = tokio::time::timeout(timeout, udp_exchange(upstream, &query, id, name, qtype))
            .await
            .map_err(|_| "timeout (udp)".to_string())??;
        if !msg.metadata.truncation {
            return Ok(msg);
        }
    }
    tokio::time::timeout(timeout, tcp_exchange(upstream, &query, id, name, qtype))
        .await
        .map_err(|_| "timeout (tcp)".to_string())?
}

async fn udp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    qtype: RecordType,
) -> Result<Message, String> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(upstream)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    socket.send(query).await.map_err(|e| format!("send: {e}"))?;
    // Queries advertise at most a few KiB (EDNS); a reply larger than this is cut and
    // fails to parse, as a too-large reply would. 8 KiB per query in flight, not 64.
    let mut buf = vec![0u8; 8192];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("recv: {e}"))?;
        // Anything that is not the answer to this query (spoofed, late) is ignored.
        if let Ok(msg) = Message::from_vec(&buf[..n]) {
            if matches(&msg, id, name, qtype) {
                return Ok(msg);
            }
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    qtype: RecordType,
) -> Result<Message, String> {
    let mut stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let len = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let msg = Message::from_vec(&buf).map_err(|e| format!("bad reply: {e}"))?;
    if !matches(&msg, id, name, qtype) {
        return Err("reply does not match the query".into());
    }
    Ok(msg)
}
