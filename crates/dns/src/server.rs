//! The server: hickory-server's `Server` with our own `RequestHandler` (not the Catalog) on
//! one UDP socket and one TCP listener per Corefile port, and the live configuration.
//!
//! [`Dns`] holds the compiled Corefile behind a swap (`RwLock<Arc<Compiled>>`: a query
//! clones the `Arc` and never waits for a reconfiguration), the record index (shared with the
//! watchers), the metrics, and the listeners. [`Dns::reconfigure`] parses and compiles new
//! text, binds the listeners of new ports and HTTP addresses, then swaps; on any error the
//! previous configuration keeps serving. Listeners of ports no longer used are shut down.
//!
//! Replies: UDP answers are truncated (TC) beyond 512 bytes or the client's EDNS size (done
//! by hickory's encoder); TCP answers are whole. A message that does not parse gets FORMERR
//! from hickory; a query with other than one question gets FORMERR, an opcode other than
//! QUERY gets NOTIMP, a name no server block serves gets REFUSED.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Name;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::answer::Response;
use crate::chain::{Compiled, Env, HttpRoutes};
use crate::corefile::PodsMode;
use crate::metrics::{Metrics, Proto};
use crate::records::Index;
use crate::DnsError;

/// Idle TCP connections are closed after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest UDP answer we send when the client's EDNS allows more.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address the DNS listeners bind (the HTTP ones use the Corefile's addresses).
    pub listen_ip: IpAddr,
    /// Bind every port of the Corefile (DNS and HTTP) to a free ephemeral port instead, for
    /// tests and benchmarks; [`Dns::dns_addr`] and [`Dns::http_addr`] tell which.
    pub ephemeral_ports: bool,
    /// Files read while compiling.
    pub env: Env,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ephemeral_ports: false,
            env: Env::default(),
        }
    }
}

/// What the request handler reads.
#[derive(Debug)]
struct Core {
    config: RwLock<Arc<Compiled>>,
    index: Arc<RwLock<Index>>,
    metrics: Arc<Metrics>,
}

impl Core {
    fn config(&self) -> Arc<Compiled> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct DnsListener {
    server: Server<Handler>,
    addr: SocketAddr,
}

struct HttpListener {
    routes: HttpRoutes,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Listeners {
    dns: HashMap<u16, DnsListener>,
    http: HashMap<SocketAddr, HttpListener>,
}

/// A running DNS server. Cloning gives another handle to the same server.
#[derive(Clone)]
pub struct Dns {
    core: Arc<Core>,
    ready: Arc<AtomicBool>,
    opts: Arc<ServeOptions>,
    listeners: Arc<tokio::sync::Mutex<Listeners>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Serves `corefile` from `index` without a cluster (benchmarks, tests): binds, starts,
/// and reports ready at once.
pub async fn serve(corefile: &str, index: Index, opts: ServeOptions) -> Result<Dns, DnsError> {
    let dns = Dns::new(corefile, index, opts)?;
    dns.start().await?;
    dns.set_ready(true);
    Ok(dns)
}

impl Dns {
    /// Compiles `corefile` for `index` (whose configuration follows the kubernetes plugin);
    /// binds nothing yet.
    pub fn new(corefile: &str, mut index: Index, opts: ServeOptions) -> Result<Self, DnsError> {
        let compiled = Compiled::from_text(corefile, &opts.env)?;
        if let Some(config) = &compiled.index_config {
            index.set_config(config.clone());
        }
        Ok(Self {
            core: Arc::new(Core {
                config: RwLock::new(Arc::new(compiled)),
                index: Arc::new(RwLock::new(index)),
                metrics: Arc::new(Metrics::default()),
            }),
            ready: Arc::new(AtomicBool::new(false)),
            opts: Arc::new(opts),
            listeners: Arc::new(tokio::sync::Mutex::new(Listeners::default())),
        })
    }

    /// Binds the listeners of the current configuration.
    pub async fn start(&self) -> Result<(), DnsError> {
        let config = self.core.config();
        self.apply_listeners(&config).await
    }

    /// The record index, for the watchers (write briefly: queries read it).
    pub fn index(&self) -> &Arc<RwLock<Index>> {
        &self.core.index
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// Marks the server ready (`GET /ready` → 200) once the first lists are in.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The pods mode of the current configuration.
    pub fn pods_mode(&self) -> PodsMode {
        self.core.config().pods
    }

    /// The bound address of the Corefile's DNS port `port` (UDP and TCP share it).
    pub async fn dns_addr(&self, port: u16) -> Option<SocketAddr> {
        self.listeners.lock().await.dns.get(&port).map(|l| l.addr)
    }

    /// The bound address of the Corefile's HTTP address `addr` (health, ready, prometheus).
    pub async fn http_addr(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.listeners.lock().await.http.get(&addr).map(|l| l.addr)
    }

    /// Parses and compiles `text`, binds what it adds, and switches to it. On error the
    /// previous configuration keeps serving and nothing changes.
    pub async fn reconfigure(&self, text: &str) -> Result<(), DnsError> {
        let compiled = Arc::new(Compiled::from_text(text, &self.opts.env)?);
        self.apply_listeners(&compiled).await?;
        if let Some(config) = &compiled.index_config {
            self.core
                .index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .set_config(config.clone());
        }
        *self.core.config.write().unwrap_or_else(|e| e.into_inner()) = compiled.clone();
        self.retire_listeners(&compiled).await;
        Ok(())
    }

    /// Stops every listener.
    pub async fn shutdown(&self) {
        let mut listeners = self.listeners.lock().await;
        for (_, mut l) in listeners.dns.drain() {
            let _ = l.server.shutdown_gracefully().await;
        }
        for (_, l) in listeners.http.drain() {
            l.task.abort();
        }
    }

    /// Binds listeners `compiled` needs and that are not bound yet (new ports, new or changed
    /// HTTP addresses). Nothing is bound when one fails.
    async fn apply_listeners(&self, compiled: &Compiled) -> Result<(), DnsError> {
        let mut listeners = self.listeners.lock().await;
        let mut new_dns = Vec::new();
        for port in &compiled.ports {
            if listeners.dns.contains_key(port) {
                continue;
            }
            let (udp, tcp) =
                bind_dns(self.opts.listen_ip, *port, self.opts.ephemeral_ports).await?;
            new_dns.push((*port, udp, tcp));
        }
        let mut new_http = Vec::new();
        for (addr, routes) in &compiled.http {
            if listeners
                .http
                .get(addr)
                .is_some_and(|l| l.routes == *routes)
            {
                continue;
            }
            let bind = if self.opts.ephemeral_ports {
                SocketAddr::new(addr.ip(), 0)
            } else {
                *addr
            };
            // A changed address is rebound: the old listener goes first.
            if let Some(old) = listeners.http.remove(addr) {
                old.task.abort();
                let _ = old.task.await;
            }
            let listener = TcpListener::bind(bind)
                .await
                .map_err(|source| DnsError::Bind { addr: bind, source })?;
            new_http.push((*addr, *routes, listener));
        }
        for (port, udp, tcp) in new_dns {
            let addr = udp.local_addr().map_err(|source| DnsError::Bind {
                addr: SocketAddr::new(self.opts.listen_ip, port),
                source,
            })?;
            let mut server = Server::new(Handler {
                core: self.core.clone(),
                port,
            });
            server.register_socket(udp);
            server.register_listener(tcp, TCP_TIMEOUT, 64);
            tracing::info!(%addr, "dns: listening (udp, tcp)");
            listeners.dns.insert(port, DnsListener { server, addr });
        }
        for (addr, routes, listener) in new_http {
            let bound = listener.local_addr().unwrap_or(addr);
            let router = crate::http::router(routes, self.core.metrics.clone(), self.ready.clone());
            let task = tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::warn!(%bound, %error, "dns: http listener stopped");
                }
            });
            tracing::info!(addr = %bound, ?routes, "dns: http listening");
            listeners.http.insert(
                addr,
                HttpListener {
                    routes,
                    addr: bound,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Stops the listeners `compiled` no longer uses.
    async fn retire_listeners(&self, compiled: &Compiled) {
        let mut listeners = self.listeners.lock().await;
        let gone: Vec<u16> = listeners
            .dns
            .keys()
            .filter(|p| !compiled.ports.contains(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(mut l) = listeners.dns.remove(&port) {
                tracing::info!(addr = %l.addr, "dns: port no longer configured, closing");
                let _ = l.server.shutdown_gracefully().await;
            }
        }
        let gone: Vec<SocketAddr> = listeners
            .http
            .keys()
            .filter(|a| !compiled.http.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(l) = listeners.http.remove(&addr) {
                l.task.abort();
            }
        }
    }
}

async fn bind_dns(
    ip: IpAddr,
    port: u16,
    ephemeral: bool,
) -> Result<(UdpSocket, TcpListener), DnsError> {
    if !ephemeral {
        let addr = SocketAddr::new(ip, port);
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..20 {
        let any = SocketAddr::new(ip, 0);
        let udp = UdpSocket::bind(any)
            .await
            .map_err(|source| DnsError::Bind { addr: any, source })?;
        let addr = udp
            .local_addr()
            .map_err(|source| DnsError::Bind { addr: any, source })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => last = Some(DnsError::Bind { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| DnsError::Config("no free port".into())))
}

/// The `RequestHandler` of one port.
struct Handler {
    core: Arc<Core>,
    port: u16,
}

fn response_edns(request: Option<&Edns>) -> Option<Edns> {
    let request = request?;
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    Some(edns)
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut responder: R,
    ) -> ResponseInfo {
        let start = Instant::now();
        let edns = response_edns(request.edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let config = self.core.config();
        let queries = request.queries.queries();
        let mut response = if request.metadata.op_code != OpCode::Query {
            Response::rcode(ResponseCode::NotImp)
        } else if queries.len() != 1 {
            Response::rcode(ResponseCode::FormErr)
        } else {
            Response::rcode(ResponseCode::Refused)
        };
        let mut log = None;
        if response.rcode == ResponseCode::Refused {
            let q = &queries[0];
            let proto = if request.protocol() == Protocol::Tcp {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            let ipv6 = request.src().is_ipv6();
            if let Some((block, zone)) = config.select(self.port, q.name()) {
                let metrics = &self.core.metrics;
                metrics.request(block.server(), zone, proto, ipv6, q.query_type());
                response = block
                    .resolve(
                        &self.core.index,
                        metrics,
                        q.name(),
                        q.query_type(),
                        q.query_class(),
                        start,
                    )
                    .await;
                let original = q.original().name();
                if !original.eq_case(q.name()) {
                    response.rename(&Name::from(q.name().clone()), original);
                }
                metrics.response(block.server(), zone, response.rcode);
                if block.log {
                    log = Some(q);
                }
            }
        }
        metadata.response_code = response.rcode;
        metadata.authoritative = response.authoritative;
        metadata.recursion_available = response.recursion_available;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let message = builder.build(
            metadata,
            response.answers.records(),
            response.authorities.records(),
            std::iter::empty(),
            response.additionals.records(),
        );
        let info = match responder.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "dns: cannot send response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        };
        if let Some(q) = log {
            // CoreDNS's log format.
            tracing::info!(
                target: "kins_dns::log",
                "{} - {} \"{} {} {} {} {} {}\" {} {} {:.6}s",
                request.src(),
                request.metadata.id,
                q.query_type(),
                q.query_class(),
                q.original().name(),
                request.protocol(),
                request.as_slice().len(),
                request.edns.as_ref().map_or(512, |e| e.max_payload()),
                crate::answer::rcode_name(info.response_code),
                info.flags(),
                start.elapsed().as_secs_f64(),
            );
        }
        info
    }
}
