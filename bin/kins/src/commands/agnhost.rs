//! `agnhost`: a small, real subset of Kubernetes' e2e test image of that name, so that
//! upstream-style tests (NetworkPolicy above all) run unchanged. The image
//! `registry.k8s.io/e2e-test-images/agnhost` (recipe `agnhost.json`) holds the kins binary
//! at `/agnhost`, and run under that name kins is this program; on the host it is the
//! hidden `kins agnhost ...`.
//!
//! - `serve-hostname [--tcp] [--udp] [--http=BOOL] [--port N] [--close] [--bind-address IP]`
//!   answers with the hostname: every HTTP request (`--http`, the default), every TCP
//!   connection (written, then closed), every UDP datagram; default port 9376.
//! - `connect HOST:PORT [--timeout D] [--protocol tcp|udp|sctp]`: exit 0 when the
//!   connection (TCP) or a reply (UDP) comes; else exit 1 and `TIMEOUT`, `REFUSED`,
//!   `DNS: ...` or `OTHER: ...` on stderr.
//! - `probe [--timeout D] PROTO:HOST:PORT...` (a kins extension): every target at once,
//!   one line per target in order: `T OK [reply]`, `T REFUSED`, `T TIMEOUT`, `T OTHER msg`.
//!
//! Flags are spelled as Go's flag and pflag packages accept them (`--port 80`,
//! `--port=80`, `-port 80`, `--http=false`), also after positional arguments; durations
//! as Go's (`1s`, `500ms`, `1m30s`). Bad arguments exit 2.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// `kins agnhost ARGS...` (everything after `agnhost` taken as it is).
#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

const USAGE: &str = "\
usage: agnhost serve-hostname [--tcp] [--udp] [--http=true|false] [--port N] [--close] [--bind-address IP]
       agnhost connect HOST:PORT [--timeout DURATION] [--protocol tcp|udp|sctp]
       agnhost probe [--timeout DURATION] PROTO:HOST:PORT...";

/// Runs agnhost with its arguments (without the program name) and gives its exit code.
pub fn main(args: &[String]) -> ExitCode {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agnhost: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if cmd == Cmd::Help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agnhost: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cmd {
        Cmd::Help => ExitCode::SUCCESS,
        Cmd::ServeHostname(s) => match rt.block_on(serve(s)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agnhost serve-hostname: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Connect(c) => {
            let outcome = rt.block_on(attempt(&c.target, c.timeout, false));
            match outcome {
                Outcome::Ok(_) => ExitCode::SUCCESS,
                other => {
                    eprintln!("{}", other.connect_text());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Probe(p) => {
            for line in rt.block_on(probe(p)) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// The hidden `kins agnhost ...`.
pub fn run(a: &Args) -> ExitCode {
    main(&a.args)
}

// ---- arguments (pure) ----

/// A bad command line (exit code 2).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Usage(String);

fn usage<T>(msg: impl Into<String>) -> Result<T, Usage> {
    Err(Usage(msg.into()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    Help,
    ServeHostname(Serve),
    Connect(Connect),
    Probe(Probe),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Serve {
    tcp: bool,
    udp: bool,
    http: bool,
    port: u16,
    close: bool,
    /// A kins extension; by default every address (IPv6 and IPv4, else IPv4 alone).
    bind: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Connect {
    target: Target,
    /// None: no deadline (upstream's default, `--timeout 0`).
    timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    timeout: Duration,
    targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

/// Where to connect, and the text it was given as (echoed by `probe`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    text: String,
    proto: Proto,
    host: String,
    port: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Flags and positional arguments, as Go's pflag parses them: `--name`, `-name`,
/// `--name=value`, `--name value` (not for booleans), interspersed with positional
/// arguments, `--` ending the flags; the last occurrence of a flag wins.
fn flags(
    args: &[String],
    spec: &[(&'static str, Kind)],
) -> Result<(BTreeMap<&'static str, String>, Vec<String>), Usage> {
    let mut set = BTreeMap::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            positional.extend(it.by_ref().cloned());
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            positional.push(arg.clone());
            continue;
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some((name, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            return usage(format!("unknown flag: --{name}"));
        };
        let value = match (kind, value) {
            (_, Some(v)) => v,
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Value, None) => match it.next() {
                Some(v) => v.clone(),
                None => return usage(format!("flag needs an argument: --{name}")),
            },
        };
        set.insert(*name, value);
    }
    Ok((set, positional))
}

/// Go's strconv.ParseBool.
fn parse_bool(flag: &str, v: &str) -> Result<bool, Usage> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => usage(format!(
            "invalid argument {v:?} for --{flag}: not a boolean"
        )),
    }
}

fn parse_port(what: &str, v: &str) -> Result<u16, Usage> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => usage(format!("invalid {what} {v:?}: want a port from 1 to 65535")),
    }
}

/// A Go duration (`time.ParseDuration`): `0`, or numbers with units ns, us (µs), ms, s,
/// m, h, as in `1s`, `1.5s`, `500ms`, `1m30s`; not negative.
fn parse_duration(v: &str) -> Result<Duration, Usage> {
    let bad = || {
        usage(format!(
            "invalid duration {v:?} (want e.g. 1s, 500ms, 1m30s)"
        ))
    };
    let s = v.strip_prefix('+').unwrap_or(v);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return bad();
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return bad();
        }
        let Ok(n) = num.parse::<f64>() else {
            return bad();
        };
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return bad(),
        };
        total += n * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).or_else(|_| bad())
}

fn parse_proto(v: &str) -> Result<Proto, Usage> {
    match v {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "sctp" => Ok(Proto::Sctp),
        _ => usage(format!("unsupported protocol {v:?}: want tcp, udp or sctp")),
    }
}

/// `HOST:PORT`, with `[v6]:PORT` for IPv6 addresses.
fn parse_host_port(v: &str) -> Result<(String, u16), Usage> {
    let Some((host, port)) = v.rsplit_once(':') else {
        return usage(format!("{v:?}: missing port, want HOST:PORT"));
    };
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(h) => h,
        None if host.contains(':') => {
            return usage(format!(
                "{v:?}: an IPv6 address goes in brackets, [ADDR]:PORT"
            ))
        }
        None => host,
    };
    if host.is_empty() {
        return usage(format!("{v:?}: missing host, want HOST:PORT"));
    }
    Ok((host.to_string(), parse_port("port", port)?))
}

fn parse(args: &[String]) -> Result<Cmd, Usage> {
    let Some((sub, rest)) = args.split_first() else {
        return usage("missing subcommand");
    };
    match sub.as_str() {
        "help" | "-h" | "--help" => Ok(Cmd::Help),
        "serve-hostname" => {
            let (f, pos) = flags(
                rest,
                &[
                    ("tcp", Kind::Bool),
                    ("udp", Kind::Bool),
                    ("http", Kind::Bool),
                    ("close", Kind::Bool),
                    ("port", Kind::Value),
                    ("bind-address", Kind::Value),
                ],
            )?;
            if let Some(p) = pos.first() {
                return usage(format!("serve-hostname takes no arguments, got {p:?}"));
            }
            let bool_flag = |name: &str, default: bool| {
                f.get(name).map_or(Ok(default), |v| parse_bool(name, v))
            };
            let s = Serve {
                tcp: bool_flag("tcp", false)?,
                udp: bool_flag("udp", false)?,
                http: bool_flag("http", true)?,
                close: bool_flag("close", false)?,
                port: f
                    .get("port")
                    .map_or(Ok(9376), |v| parse_port("--port", v))?,
                bind: match f.get("bind-address") {
                    None => None,
                    Some(v) => Some(v.parse().or_else(|_| {
                        usage(format!("invalid --bind-address {v:?}: want an IP address"))
                    })?),
                },
            };
            if s.http && s.tcp {
                return usage("--http and --tcp cannot share a TCP port: add --http=false");
            }
            if !(s.http || s.tcp || s.udp) {
                return usage("nothing to serve: want --tcp, --udp or --http");
            }
            Ok(Cmd::ServeHostname(s))
        }
        "connect" => {
            let (f, pos) = flags(rest, &[("timeout", Kind::Value), ("protocol", Kind::Value)])?;
            let [dest] = pos.as_slice() else {
                return usage(format!(
                    "connect takes one HOST:PORT, got {} arguments",
                    pos.len()
                ));
            };
            let proto = f.get("protocol").map_or(Ok(Proto::Tcp), |p| {
                if p.is_empty() {
                    Ok(Proto::Tcp)
                } else {
                    parse_proto(p)
                }
            })?;
            let timeout = f
                .get("timeout")
                .map(|t| parse_duration(t))
                .transpose()?
                .filter(|t| !t.is_zero());
            let (host, port) = parse_host_port(dest)?;
            Ok(Cmd::Connect(Connect {
                target: Target {
                    text: dest.clone(),
                    proto,
                    host,
                    port,
                },
                timeout,
            }))
        }
        "probe" => {
            let (f, pos) = flags(rest, &[("timeout", Kind::Value)])?;
            let timeout = f
                .get("timeout")
                .map_or(Ok(Duration::from_secs(1)), |t| parse_duration(t))?;
            if timeout.is_zero() {
                return usage("probe needs a --timeout above 0");
            }
            if pos.is_empty() {
                return usage("probe needs at least one PROTO:HOST:PORT");
            }
            let targets = pos
                .iter()
                .map(|t| {
                    let Some((proto, rest)) = t.split_once(':') else {
                        return usage(format!("{t:?}: want PROTO:HOST:PORT"));
                    };
                    let (host, port) = parse_host_port(rest)?;
                    Ok(Target {
                        text: t.clone(),
                        proto: parse_proto(proto)?,
                        host,
                        port,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Cmd::Probe(Probe { timeout, targets }))
        }
        other => usage(format!(
            "unknown subcommand {other:?} (kins' agnhost has serve-hostname, connect, probe)"
        )),
    }
}

// ---- serve-hostname ----

fn hostname() -> io::Result<String> {
    let h = nix::unistd::gethostname().map_err(io::Error::from)?;
    Ok(h.to_string_lossy().into_owned())
}

/// The listening addresses: the one asked for, else IPv6 and IPv4 (dual stack), else
/// IPv4 alone (a namespace without IPv6).
fn bind_addrs(bind: Option<IpAddr>, port: u16) -> Vec<SocketAddr> {
    match bind {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ],
    }
}

async fn bind_tcp(addrs: &[SocketAddr]) -> io::Result<TcpListener> {
    let mut last = io::Error::other("no address to listen on");
    for a in addrs {
        match TcpListener::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => last = io::Error::new(e.kind(), format!("listening on tcp {a}: {e}")),
        }
    }
    Err(last)
}

async fn bind_udp(addrs: &[SocketAddr]) -> io::Result<UdpSocket> {
    let mut last = io::Error::other("no address to listen on");
    for a in addrs {
        match UdpSocket::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => last = io::Error::new(e.kind(), format!("listening on udp {a}: {e}")),
        }
    }
    Err(last)
}

/// Serves until SIGTERM or SIGINT.
async fn serve(s: Serve) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let name: Arc<str> = hostname()?.into();
    let addrs = bind_addrs(s.bind, s.port);
    // Listen first, then say so: a client that saw the line can connect.
    let tcp = if s.tcp || s.http {
        Some(bind_tcp(&addrs).await?)
    } else {
        None
    };
    let udp = if s.udp {
        Some(bind_udp(&addrs).await?)
    } else {
        None
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = tcp {
        if s.http {
            tasks.spawn(serve_http(l, name.clone(), s.close));
        } else {
            tasks.spawn(serve_tcp(l, name.clone()));
        }
    }
    if let Some(u) = udp {
        tasks.spawn(serve_udp(u, name.clone()));
    }
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "Serving on port {}.", s.port)?;
        out.flush()?;
    }
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        Some(r) = tasks.join_next() => match r {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        },
    }
}

/// Accept errors that are about one connection, or a passing shortage (EMFILE): the
/// listener goes on after a pause.
async fn accept_pause(e: &io::Error) {
    eprintln!("agnhost serve-hostname: accept: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn serve_tcp(l: TcpListener, name: Arc<str>) -> io::Result<()> {
    loop {
        let mut conn = match l.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                accept_pause(&e).await;
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move {
            // The client may be gone already: nothing to tell anyone.
            let _ = conn.write_all(name.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

async fn serve_udp(u: UdpSocket, name: Arc<str>) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        match u.recv_from(&mut buf).await {
            Ok((_, peer)) => {
                // A reply that cannot go (the peer's ICMP error, a full buffer) is lost,
                // as a datagram may be.
                let _ = u.send_to(name.as_bytes(), peer).await;
            }
            // The ICMP error of an earlier reply, reported on this socket.
            Err(e) if is_refused(&e) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("udp: {e}"))),
        }
    }
}

async fn serve_http(l: TcpListener, name: Arc<str>, close: bool) -> io::Result<()> {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, Response};
    loop {
        let conn = match l.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                accept_pause(&e).await;
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let mut resp =
                    Response::builder().header("Content-Type", "text/plain; charset=utf-8");
                if close {
                    resp = resp.header("Connection", "close");
                }
                let resp = resp
                    .body(Full::new(Bytes::copy_from_slice(name.as_bytes())))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                async move { Ok::<_, Infallible>(resp) }
            });
            // A client's protocol error ends its connection only.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(!close)
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .await;
        });
    }
}

// ---- connect and probe ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Connected (TCP) or answered (UDP), with the first line of what came back.
    Ok(String),
    Refused,
    Timeout,
    Dns(String),
    Other(String),
}

impl Outcome {
    /// What upstream's `agnhost connect` prints on stderr.
    fn connect_text(&self) -> String {
        match self {
            Outcome::Ok(_) => String::new(),
            Outcome::Refused => "REFUSED".into(),
            Outcome::Timeout => "TIMEOUT".into(),
            Outcome::Dns(m) => format!("DNS: {m}"),
            Outcome::Other(m) => format!("OTHER: {m}"),
        }
    }

    /// One line of `probe`'s output.
    fn probe_line(&self, target: &str) -> String {
        match self {
            Outcome::Ok(r) if r.is_empty() => format!("{target} OK"),
            Outcome::Ok(r) => format!("{target} OK {r}"),
            Outcome::Refused => format!("{target} REFUSED"),
            Outcome::Timeout => format!("{target} TIMEOUT"),
            Outcome::Dns(m) => format!("{target} OTHER dns: {m}"),
            Outcome::Other(m) => format!("{target} OTHER {m}"),
        }
    }
}

/// Refusals: a TCP reset, or an ICMP unreachable (port, host, network, administratively
/// prohibited) reported by the kernel.
fn is_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH)
    )
}

fn classify(e: &io::Error) -> Outcome {
    if is_refused(e) {
        Outcome::Refused
    } else if e.raw_os_error() == Some(Errno::ETIMEDOUT as i32)
        || e.kind() == io::ErrorKind::TimedOut
    {
        Outcome::Timeout
    } else {
        Outcome::Other(e.to_string())
    }
}

/// The first line of a reply, printable.
fn first_line(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.lines().next().unwrap_or("").trim().to_string()
}

/// One connection attempt; with a timeout, everything (name lookup included) must be done
/// within it. `read_reply`: after a TCP connection, read what the server sends until it
/// closes or the time is up (not required for OK).
async fn attempt(t: &Target, timeout: Option<Duration>, read_reply: bool) -> Outcome {
    let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
    let work = attempt_inner(t, read_reply, deadline);
    match deadline {
        Some(d) => tokio::time::timeout_at(d, work)
            .await
            .unwrap_or(Outcome::Timeout),
        None => work.await,
    }
}

async fn attempt_inner(
    t: &Target,
    read_reply: bool,
    deadline: Option<tokio::time::Instant>,
) -> Outcome {
    let addr = match resolve(&t.host, t.port).await {
        Ok(a) => a,
        Err(m) => return Outcome::Dns(m),
    };
    match t.proto {
        Proto::Sctp => Outcome::Other("sctp unsupported".into()),
        Proto::Tcp => {
            let mut conn = match TcpStream::connect(addr).await {
                Ok(c) => c,
                Err(e) => return classify(&e),
            };
            if !read_reply {
                return Outcome::Ok(String::new());
            }
            let mut buf = Vec::new();
            let read = async {
                // Up to one line of hostname: enough, and bounded.
                let mut chunk = [0u8; 1024];
                while buf.len() < 4096 && !buf.contains(&b'\n') {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, read).await;
                }
                None => read.await,
            }
            Outcome::Ok(first_line(&buf))
        }
        Proto::Udp => {
            let local = match addr {
                SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            };
            let sock = match UdpSocket::bind(local).await {
                Ok(s) => s,
                Err(e) => return Outcome::Other(format!("udp socket: {e}")),
            };
            if let Err(e) = sock.connect(addr).await {
                return classify(&e);
            }
            // What upstream's connect sends; serve-hostname answers anything.
            if let Err(e) = sock.send(b"echo hostname\n").await {
                return classify(&e);
            }
            let mut buf = vec![0u8; 65536];
            match sock.recv(&mut buf).await {
                Ok(0) => Outcome::Other("empty reply".into()),
                Ok(n) => Outcome::Ok(first_line(&buf[..n])),
                Err(e) => classify(&e),
            }
        }
    }
}

/// An IP address as it is, else a name through the system resolver (the pod's
/// /etc/resolv.conf); IPv4 preferred.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("lookup {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("lookup {host}: no addresses"))
}

/// Every target at once; the lines in the order given.
async fn probe(p: Probe) -> Vec<String> {
    let handles: Vec<_> = p
        .targets
        .into_iter()
        .map(|t| {
            tokio::spawn(async move {
                let o = attempt(&t, Some(p.timeout), true).await;
                o.probe_line(&t.text)
            })
        })
        .collect();
    let mut lines = Vec::with_capacity(handles.len());
    for h in handles {
        lines.push(match h.await {
            Ok(line) => line,
            Err(e) => format!("? OTHER {e}"),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    /// The one place tests parse a command line: `Ok` debug text or the usage error.
    fn check(cmdline: &str, expect: &str) {
        let got = match parse(&args(cmdline)) {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "{cmdline}");
    }

    fn serve(tcp: bool, udp: bool, http: bool, port: u16, close: bool) -> String {
        format!(
            "{:?}",
            Cmd::ServeHostname(Serve {
                tcp,
                udp,
                http,
                port,
                close,
                bind: None
            })
        )
    }

    #[test]
    fn serve_hostname_flags() {
        check("serve-hostname", &serve(false, false, true, 9376, false));
        check(
            "serve-hostname --tcp --http=false --port 80",
            &serve(true, false, false, 80, false),
        );
        check(
            "serve-hostname --udp --http=false --port=81",
            &serve(false, true, false, 81, false),
        );
        check(
            "serve-hostname -tcp -udp -http=0 -port 8080",
            &serve(true, true, false, 8080, false),
        );
        check(
            "serve-hostname --udp --close --port 80 --port 90",
            &serve(false, true, true, 90, true),
        );
        check(
            "serve-hostname --tcp --http=F --bind-address 127.0.0.1",
            "ServeHostname(Serve { tcp: true, udp: false, http: false, port: 9376, \
             close: false, bind: Some(127.0.0.1) })",
        );
    }

    #[test]
    fn serve_hostname_errors() {
        check(
            "serve-hostname --tcp",
            "error: --http and --tcp cannot share a TCP port: add --http=false",
        );
        check(
            "serve-hostname --http=false",
            "error: nothing to serve: want --tcp, --udp or --http",
        );
        check(
            "serve-hostname --http=maybe",
            "error: invalid argument \"maybe\" for --http: not a boolean",
        );
        check(
            "serve-hostname --port",
            "error: flag needs an argument: --port",
        );
        check(
            "serve-hostname --port 0",
            "error: invalid --port \"0\": want a port from 1 to 65535",
        );
        check(
            "serve-hostname --port 70000",
            "error: invalid --port \"70000\": want a port from 1 to 65535",
        );
        check("serve-hostname --sctp", "error: unknown flag: --sctp");
        check(
            "serve-hostname 80",
            "error: serve-hostname takes no arguments, got \"80\"",
        );
        check(
            "serve-hostname --bind-address x",
            "error: invalid --bind-address \"x\": want an IP address",
        );
    }

    fn connect(text: &str, proto: Proto, host: &str, port: u16, timeout: Option<u64>) -> String {
        format!(
            "{:?}",
            Cmd::Connect(Connect {
                target: Target {
                    text: text.into(),
                    proto,
                    host: host.into(),
                    port
                },
                timeout: timeout.map(Duration::from_millis),
            })
        )
    }

    #[test]
    fn connect_flags() {
        // As the upstream NetworkPolicy tests call it: flags after the destination.
        check(
            "connect s-x-a.x.svc.cluster.local:80 --timeout=1s --protocol=tcp",
            &connect(
                "s-x-a.x.svc.cluster.local:80",
                Proto::Tcp,
                "s-x-a.x.svc.cluster.local",
                80,
                Some(1000),
            ),
        );
        check(
            "connect --protocol udp --timeout 500ms 10.244.1.5:81",
            &connect("10.244.1.5:81", Proto::Udp, "10.244.1.5", 81, Some(500)),
        );
        check(
            "connect 10.0.0.1:80",
            &connect("10.0.0.1:80", Proto::Tcp, "10.0.0.1", 80, None),
        );
        check(
            "connect [fd00::1]:80 --timeout 0 --protocol=",
            &connect("[fd00::1]:80", Proto::Tcp, "fd00::1", 80, None),
        );
        check(
            "connect 10.0.0.1:80 --protocol sctp",
            &connect("10.0.0.1:80", Proto::Sctp, "10.0.0.1", 80, None),
        );
    }

    #[test]
    fn connect_errors() {
        check(
            "connect",
            "error: connect takes one HOST:PORT, got 0 arguments",
        );
        check(
            "connect a:1 b:2",
            "error: connect takes one HOST:PORT, got 2 arguments",
        );
        check(
            "connect 10.0.0.1",
            "error: \"10.0.0.1\": missing port, want HOST:PORT",
        );
        check(
            "connect :80",
            "error: \":80\": missing host, want HOST:PORT",
        );
        check(
            "connect fd00::1:80",
            "error: \"fd00::1:80\": an IPv6 address goes in brackets, [ADDR]:PORT",
        );
        check(
            "connect a:80 --protocol icmp",
            "error: unsupported protocol \"icmp\": want tcp, udp or sctp",
        );
        check(
            "connect a:80 --timeout 1",
            "error: invalid duration \"1\" (want e.g. 1s, 500ms, 1m30s)",
        );
        check(
            "connect a:http",
            "error: invalid port \"http\": want a port from 1 to 65535",
        );
    }

    #[test]
    fn probe_targets() {
        let t = |text: &str, proto, host: &str, port| Target {
            text: text.into(),
            proto,
            host: host.into(),
            port,
        };
        check(
            "probe --timeout 2s tcp:10.244.1.5:80 udp:s-x-a.x:81 -- tcp:[::1]:80",
            &format!(
                "{:?}",
                Cmd::Probe(Probe {
                    timeout: Duration::from_secs(2),
                    targets: vec![
                        t("tcp:10.244.1.5:80", Proto::Tcp, "10.244.1.5", 80),
                        t("udp:s-x-a.x:81", Proto::Udp, "s-x-a.x", 81),
                        t("tcp:[::1]:80", Proto::Tcp, "::1", 80),
                    ],
                })
            ),
        );
        check(
            "probe udp:a:1",
            &format!(
                "{:?}",
                Cmd::Probe(Probe {
                    timeout: Duration::from_secs(1),
                    targets: vec![t("udp:a:1", Proto::Udp, "a", 1)],
                })
            ),
        );
        check("probe", "error: probe needs at least one PROTO:HOST:PORT");
        check(
            "probe --timeout 0 tcp:a:1",
            "error: probe needs a --timeout above 0",
        );
        check(
            "probe 10.0.0.1",
            "error: \"10.0.0.1\": want PROTO:HOST:PORT",
        );
        check(
            "probe http:a:80",
            "error: unsupported protocol \"http\": want tcp, udp or sctp",
        );
        check(
            "probe --protocol tcp a:1",
            "error: unknown flag: --protocol",
        );
    }

    #[test]
    fn subcommands() {
        check("", "error: missing subcommand");
        check("--help", "Help");
        check(
            "netexec --http-port 8080",
            "error: unknown subcommand \"netexec\" (kins' agnhost has serve-hostname, connect, probe)",
        );
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str, ms: u64| {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        };
        ok("0", 0);
        ok("1s", 1000);
        ok("+2s", 2000);
        ok("500ms", 500);
        ok("1.5s", 1500);
        ok("1m30s", 90_000);
        ok("1h", 3_600_000);
        ok("250000us", 250);
        ok("250000µs", 250);
        ok("1000000ns", 1);
        for bad in ["", "1", "s", "-1s", "1x", "1..5s", "1s2", ".s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outcomes_print_as_upstream_and_probe_lines() {
        let refused = io::Error::from_raw_os_error(Errno::ECONNREFUSED as i32);
        let unreach = io::Error::from_raw_os_error(Errno::EHOSTUNREACH as i32);
        let net = io::Error::from_raw_os_error(Errno::ENETUNREACH as i32);
        let timed = io::Error::from_raw_os_error(Errno::ETIMEDOUT as i32);
        let perm = io::Error::from_raw_os_error(Errno::EPERM as i32);
        assert_eq!(classify(&refused), Outcome::Refused);
        assert_eq!(classify(&unreach), Outcome::Refused);
        assert_eq!(classify(&net), Outcome::Refused);
        assert_eq!(classify(&timed), Outcome::Timeout);
        assert_eq!(
            classify(&perm).connect_text(),
            "OTHER: Operation not permitted (os error 1)"
        );
        assert_eq!(Outcome::Refused.connect_text(), "REFUSED");
        assert_eq!(Outcome::Timeout.connect_text(), "TIMEOUT");
        assert_eq!(Outcome::Dns("x".into()).connect_text(), "DNS: x");
        let t = "tcp:10.0.0.1:80";
        assert_eq!(
            Outcome::Ok("pod-a".into()).probe_line(t),
            "tcp:10.0.0.1:80 OK pod-a"
        );
        assert_eq!(
            Outcome::Ok(String::new()).probe_line(t),
            "tcp:10.0.0.1:80 OK"
        );
        assert_eq!(Outcome::Refused.probe_line(t), "tcp:10.0.0.1:80 REFUSED");
        assert_eq!(Outcome::Timeout.probe_line(t), "tcp:10.0.0.1:80 TIMEOUT");
        assert_eq!(
            Outcome::Dns("lookup a: failed".into()).probe_line(t),
            "tcp:10.0.0.1:80 OTHER dns: lookup a: failed"
        );
        assert_eq!(first_line(b"pod-a\r\nmore"), "pod-a");
    }
}
