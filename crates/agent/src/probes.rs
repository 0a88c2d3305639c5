//! Container probes, kubelet's prober: per container run, optional startup, liveness and
//! readiness probes (httpGet, tcpSocket, exec; grpc is reported unsupported), each run by
//! a tokio task every `periodSeconds` after `initialDelaySeconds`. Consecutive results
//! are turned into the probe's result by thresholds (`Tracker`), the three probes into
//! the container's started / ready / must-be-restarted state (`RunProbes`, pure, no IO).
//! When that state changes the pod's key is sent on a channel so the pod loop syncs at
//! once; every failed probe leaves an `Unhealthy` event message to be posted.
//!
//! Invariants: liveness and readiness are not probed before the startup probe succeeded;
//! a run whose liveness (or startup) probe failed is not probed any more (it is to be
//! killed; its next attempt is a new run with new workers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// The pod to sync again when a probe result changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    /// The reference the pod controller's `reconcile_on` takes.
    pub fn object_ref(&self) -> kube::runtime::reflector::ObjectRef<Pod> {
        kube::runtime::reflector::ObjectRef::new(&self.name).within(&self.namespace)
    }
}

/// One run (attempt) of one container of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    pub uid: String,
    pub container: String,
    pub attempt: u32,
}

/// The event reason of probe failures.
pub const UNHEALTHY: &str = "Unhealthy";

/// Event messages kept per run until taken (older ones are dropped beyond this).
const MAX_PENDING_EVENTS: usize = 50;

/// What kubelet's exec prober keeps of a command's output.
const MAX_OUTPUT: usize = 10 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// How a probe checks the container.
#[derive(Debug, Clone, PartialEq)]
pub enum Handler {
    Http(HttpGet),
    Tcp {
        host: String,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    /// The probe cannot be run (a named port the container does not have): every try is
    /// an error, which changes no result (kubelet's "errored" probes).
    Invalid(String),
    /// A kind of probe kins does not implement (grpc): every try fails with this message.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpGet {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Starts with '/'.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    /// The URL as Go prints it in errors.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            host_port(&self.host, self.port),
            self.path
        )
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One probe of a container, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's terminationGracePeriodSeconds (liveness and startup), which overrides
    /// the pod's when the container is killed for failing it.
    pub termination_grace_seconds: Option<i64>,
}

/// kubelet's `ResolveContainerPort`: a number, a named port of the container, or a
/// number written as a string.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n: i64 = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match named {
                Some(n) => n,
                None => name
                    .parse()
                    .map_err(|_| format!("strconv.Atoi: parsing {name:?}: invalid syntax"))?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(match v {
        Some(n) if n > 0 => n as u64,
        _ => default,
    })
}

fn count(v: Option<i32>, default: u32) -> u32 {
    match v {
        Some(n) if n > 0 => n as u32,
        _ => default,
    }
}

/// One probe from the API object: defaults applied (period 10 s, timeout 1 s, success 1,
/// failure 3), the port resolved against the container's ports, the host defaulting to
/// the pod IP.
pub fn probe_spec(
    kind: ProbeKind,
    probe: &Probe,
    container: &Container,
    pod_ip: &str,
) -> ProbeSpec {
    let handler = if let Some(h) = &probe.http_get {
        match resolve_port(&h.port, container) {
            Ok(port) => {
                let path = h.path.clone().unwrap_or_default();
                Handler::Http(HttpGet {
                    https: h
                        .scheme
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
                    host: h
                        .host
                        .clone()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| pod_ip.to_string()),
                    port,
                    path: if path.starts_with('/') {
                        path
                    } else {
                        format!("/{path}")
                    },
                    headers: h
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                })
            }
            Err(e) => Handler::Invalid(e),
        }
    } else if let Some(t) = &probe.tcp_socket {
        match resolve_port(&t.port, container) {
            Ok(port) => Handler::Tcp {
                host: t
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| pod_ip.to_string()),
                port,
            },
            Err(e) => Handler::Invalid(e),
        }
    } else if let Some(e) = &probe.exec {
        Handler::Exec {
            command: e.command.clone().unwrap_or_default(),
        }
    } else if probe.grpc.is_some() {
        Handler::Unsupported("grpc probes are not supported by kins".into())
    } else {
        Handler::Invalid("missing probe handler".into())
    };
    let success = match kind {
        // Must be 1 for liveness and startup (validation says so).
        ProbeKind::Liveness | ProbeKind::Startup => 1,
        ProbeKind::Readiness => count(probe.success_threshold, 1),
    };
    ProbeSpec {
        kind,
        handler,
        initial_delay: match probe.initial_delay_seconds {
            Some(n) if n > 0 => Duration::from_secs(n as u64),
            _ => Duration::ZERO,
        },
        period: seconds(probe.period_seconds, 10),
        timeout: seconds(probe.timeout_seconds, 1),
        success_threshold: success,
        failure_threshold: count(probe.failure_threshold, 3),
        termination_grace_seconds: match kind {
            ProbeKind::Readiness => None,
            _ => probe.termination_grace_period_seconds,
        },
    }
}

/// The container's probes, startup first.
pub fn probe_specs(container: &Container, pod_ip: &str) -> Vec<ProbeSpec> {
    [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| p.as_ref().map(|p| probe_spec(kind, p, container, pod_ip)))
    .collect()
}

/// What one try of a probe gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The check failed; the message is the event's text after "... probe failed: ".
    Failure(String),
    /// The probe could not be run; the result is thrown away (kubelet).
    Error(String),
}

/// kubelet's worker: consecutive equal results are counted, and the probe's result
/// changes once the count reaches the threshold of that result.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
    result: Option<bool>,
}

impl Tracker {
    /// `initial`: the result before any try (readiness: not ready; liveness: alive;
    /// startup: unknown).
    pub fn new(success_threshold: u32, failure_threshold: u32, initial: Option<bool>) -> Tracker {
        Tracker {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            last: None,
            run: 0,
            result: initial,
        }
    }

    /// Feeds one try; returns the new result when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold || self.result == Some(ok) {
            return None;
        }
        self.result = Some(ok);
        Some(ok)
    }

    pub fn result(&self) -> Option<bool> {
        self.result
    }
}

/// The probe results of one container run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeStatus {
    /// The startup probe succeeded (true when there is none).
    pub started: bool,
    /// Started, and the readiness probe succeeded (started alone when there is none).
    pub ready: bool,
    /// Set once the liveness or the startup probe failed: the container must be killed
    /// (and restarted per restartPolicy). The message is kubelet's `Killing` event text,
    /// e.g. "Container web failed liveness probe, will be restarted".
    pub liveness_failed: Option<String>,
    /// The failed probe's terminationGracePeriodSeconds, which overrides the pod's.
    pub kill_grace_seconds: Option<i64>,
}

/// What a probe worker should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Probe,
    /// Not yet (liveness and readiness wait for the startup probe).
    Wait,
    /// Never again for this run.
    Stop,
}

/// The three probes of one run combined (pure: fed with outcomes, no IO, no clock).
#[derive(Debug, Clone, PartialEq)]
pub struct RunProbes {
    container: String,
    startup: Option<Tracker>,
    liveness: Option<Tracker>,
    readiness: Option<Tracker>,
    grace: HashMap<ProbeKind, i64>,
    failed: Option<String>,
    kill_grace: Option<i64>,
    events: Vec<(String, String)>,
}

impl RunProbes {
    pub fn new(container: &str, specs: &[ProbeSpec]) -> RunProbes {
        let tracker = |kind: ProbeKind, initial: Option<bool>| {
            specs
                .iter()
                .find(|s| s.kind == kind)
                .map(|s| Tracker::new(s.success_threshold, s.failure_threshold, initial))
        };
        RunProbes {
            container: container.to_string(),
            startup: tracker(ProbeKind::Startup, None),
            liveness: tracker(ProbeKind::Liveness, Some(true)),
            readiness: tracker(ProbeKind::Readiness, Some(false)),
            grace: specs
                .iter()
                .filter_map(|s| s.termination_grace_seconds.map(|g| (s.kind, g)))
                .collect(),
            failed: None,
            kill_grace: None,
            events: Vec::new(),
        }
    }

    fn started(&self) -> bool {
        self.startup
            .as_ref()
            .is_none_or(|t| t.result() == Some(true))
    }

    pub fn status(&self) -> ProbeStatus {
        let started = self.started();
        ProbeStatus {
            started,
            ready: started
                && self
                    .readiness
                    .as_ref()
                    .is_none_or(|t| t.result() == Some(true)),
            liveness_failed: self.failed.clone(),
            kill_grace_seconds: self.kill_grace,
        }
    }

    pub fn next(&self, kind: ProbeKind) -> Next {
        if self.failed.is_some() {
            return Next::Stop;
        }
        match kind {
            ProbeKind::Startup if self.started() => Next::Stop,
            ProbeKind::Startup => Next::Probe,
            _ if self.started() => Next::Probe,
            _ => Next::Wait,
        }
    }

    fn event(&mut self, message: String) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.remove(0);
        }
        self.events.push((UNHEALTHY.to_string(), message));
    }

    /// Feeds one try of a probe; returns whether the status changed. Tries a worker
    /// should not have made (see `next`) are ignored.
    pub fn observe(&mut self, kind: ProbeKind, outcome: &Outcome) -> bool {
        if self.next(kind) != Next::Probe {
            return false;
        }
        let ok = match outcome {
            Outcome::Success => true,
            Outcome::Failure(m) => {
                self.event(format!("{} probe failed: {m}", kind.title()));
                false
            }
            Outcome::Error(m) => {
                self.event(format!(
                    "{} probe errored and resulted in unknown state: {m}",
                    kind.title()
                ));
                return false;
            }
        };
        let before = self.status();
        let tracker = match kind {
            ProbeKind::Startup => &mut self.startup,
            ProbeKind::Liveness => &mut self.liveness,
            ProbeKind::Readiness => &mut self.readiness,
        };
        let Some(tracker) = tracker else {
            return false;
        };
        if tracker.record(ok) == Some(false) && kind != ProbeKind::Readiness {
            let what = if kind == ProbeKind::Liveness {
                "liveness"
            } else {
                "startup"
            };
            self.failed = Some(format!(
                "Container {} failed {what} probe, will be restarted",
                self.container
            ));
            self.kill_grace = self.grace.get(&kind).copied();
        }
        self.status() != before
    }

    /// The pending event messages (reason, message), oldest first.
    pub fn take_events(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.events)
    }
}

struct Run {
    probes: RunProbes,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Runs(HashMap<ContainerKey, Run>);

fn lock(m: &Mutex<Runs>) -> std::sync::MutexGuard<'_, Runs> {
    // A panicking worker cannot leave the map half-updated: every update is one insert,
    // remove or call of a `RunProbes` method.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent's prober: probe workers of every container run, and their results.
pub struct Prober {
    kins_exe: PathBuf,
    notify: UnboundedSender<PodKey>,
    runs: Arc<Mutex<Runs>>,
}

impl Prober {
    pub fn new(kins_exe: PathBuf, notify: UnboundedSender<PodKey>) -> Prober {
        Prober {
            kins_exe,
            notify,
            runs: Arc::new(Mutex::new(Runs::default())),
        }
    }

    /// Makes sure the probe workers of this run exist (idempotent: a known run is left
    /// alone). `state_dir` is the run's shim state directory (for exec probes),
    /// `started_at` when its process started (see `started_instant`). Must be called
    /// within a tokio runtime.
    pub fn ensure(
        &self,
        key: ContainerKey,
        pod: PodKey,
        pod_ip: &str,
        container: &Container,
        state_dir: PathBuf,
        started_at: Instant,
    ) {
        if lock(&self.runs).0.contains_key(&key) {
            return;
        }
        let specs = probe_specs(container, pod_ip);
        self.ensure_specs(key, pod, specs, state_dir, started_at);
    }

    /// `ensure` with the probes given.
    pub fn ensure_specs(
        &self,
        key: ContainerKey,
        pod: PodKey,
        specs: Vec<ProbeSpec>,
        state_dir: PathBuf,
        started_at: Instant,
    ) {
        let mut runs = lock(&self.runs);
        if runs.0.contains_key(&key) {
            return;
        }
        let probes = RunProbes::new(&key.container, &specs);
        let tasks = specs
            .into_iter()
            .map(|spec| {
                let w = Worker {
                    runs: self.runs.clone(),
                    key: key.clone(),
                    pod: pod.clone(),
                    notify: self.notify.clone(),
                    kins_exe: self.kins_exe.clone(),
                    state_dir: state_dir.clone(),
                };
                tokio::spawn(w.run(spec, started_at))
            })
            .collect();
        runs.0.insert(key, Run { probes, tasks });
    }

    /// Stops the workers of a run and forgets its results.
    pub fn forget_run(&self, key: &ContainerKey) {
        if let Some(run) = lock(&self.runs).0.remove(key) {
            run.tasks.iter().for_each(JoinHandle::abort);
        }
    }

    /// Stops and forgets every run of a pod.
    pub fn forget_pod(&self, uid: &str) {
        lock(&self.runs).0.retain(|k, run| {
            let keep = k.uid != uid;
            if !keep {
                run.tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
    }

    /// Forgets the runs of `uid` other than those listed (older attempts, containers
    /// gone).
    pub fn retain_runs(&self, uid: &str, current: &[ContainerKey]) {
        lock(&self.runs).0.retain(|k, run| {
            let keep = k.uid != uid || current.contains(k);
            if !keep {
                run.tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
    }

    /// The current results of a run; an unknown run is one without probes (started,
    /// ready).
    pub fn status(&self, key: &ContainerKey) -> ProbeStatus {
        match lock(&self.runs).0.get(key) {
            Some(run) => run.probes.status(),
            None => ProbeStatus {
                started: true,
                ready: true,
                ..Default::default()
            },
        }
    }

    /// The pending `Unhealthy` event messages of a run: (reason, message).
    pub fn take_events(&self, key: &ContainerKey) -> Vec<(String, String)> {
        lock(&self.runs)
            .0
            .get_mut(key)
            .map(|r| r.probes.take_events())
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for run in lock(&self.runs).0.values() {
            run.tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

/// `started_at` of a run from the shim's `started` file (`%Y-%m-%dT%H:%M:%SZ`): now minus
/// the time since; now when it cannot be read.
pub fn started_instant(started_at: &str) -> Instant {
    let now = Instant::now();
    chrono::DateTime::parse_from_rfc3339(started_at)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .and_then(|ago| now.checked_sub(ago))
        .unwrap_or(now)
}

struct Worker {
    runs: Arc<Mutex<Runs>>,
    key: ContainerKey,
    pod: PodKey,
    notify: UnboundedSender<PodKey>,
    kins_exe: PathBuf,
    state_dir: PathBuf,
}

impl Worker {
    async fn run(self, spec: ProbeSpec, started_at: Instant) {
        let first = tokio::time::Instant::from_std(started_at + spec.initial_delay);
        tokio::time::sleep_until(first).await;
        loop {
            let next = lock(&self.runs)
                .0
                .get(&self.key)
                .map_or(Next::Stop, |r| r.probes.next(spec.kind));
            match next {
                Next::Stop => return,
                Next::Wait => {}
                Next::Probe => {
                    let outcome = run_handler(&spec.handler, spec.timeout, &self).await;
                    tracing::debug!(pod = %self.pod.name, container = %self.key.container,
                        kind = ?spec.kind, ?outcome, "probe");
                    let changed = match lock(&self.runs).0.get_mut(&self.key) {
                        Some(run) => run.probes.observe(spec.kind, &outcome),
                        None => return,
                    };
                    if changed {
                        let _ = self.notify.send(self.pod.clone());
                    }
                }
            }
            tokio::time::sleep(spec.period).await;
        }
    }
}

async fn run_handler(handler: &Handler, timeout: Duration, w: &Worker) -> Outcome {
    match handler {
        Handler::Http(h) => http_probe(h, timeout).await,
        Handler::Tcp { host, port } => tcp_probe(host, *port, timeout).await,
        Handler::Exec { command } => exec_probe(&w.kins_exe, &w.state_dir, command, timeout).await,
        Handler::Invalid(m) => Outcome::Error(m.clone()),
        Handler::Unsupported(m) => Outcome::Failure(m.clone()),
    }
}

/// Go's wording of a failed dial: "dial tcp 10.244.1.5:8080: connect: connection refused".
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut => format!("dial tcp {addr}: i/o timeout"),
        _ if e.raw_os_error().is_some() => {
            format!(
                "dial tcp {addr}: connect: {}",
                runtime::container::io_text(e)
            )
        }
        _ => format!("dial tcp {addr}: {e}"),
    }
}

async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let addr = host_port(host, port);
    tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| dial_error(&addr, &e))
}

/// tcpSocket: a connection within the timeout.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, connect(host, port)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(m)) => Outcome::Failure(m),
        Err(_) => Outcome::Failure(format!("dial tcp {}: i/o timeout", host_port(host, port))),
    }
}

/// kubelet's classification of an HTTP status: 200..=399 is a success.
pub fn http_status_outcome(status: u16) -> Outcome {
    if (200..400).contains(&status) {
        Outcome::Success
    } else {
        Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// The request kubelet sends: its User-Agent and Accept unless the probe sets them.
pub fn http_request(h: &HttpGet) -> String {
    let has = |name: &str| h.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = format!("GET {} HTTP/1.1\r\n", h.path);
    if !has("Host") {
        req.push_str(&format!("Host: {}\r\n", host_port(&h.host, h.port)));
    }
    if !has("User-Agent") {
        req.push_str("User-Agent: kube-probe/1.34\r\n");
    }
    if !has("Accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (n, v) in &h.headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// The status code of a response's first line ("HTTP/1.1 200 OK").
pub fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    h: &HttpGet,
) -> Result<u16, String> {
    let url = h.url();
    s.write_all(http_request(h).as_bytes())
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < 8192 {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get {url:?}: read: {}", runtime::container::io_text(&e)))?;
        if n == 0 {
            return Err(format!("Get {url:?}: EOF"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or("");
    parse_status_line(line).ok_or_else(|| format!("Get {url:?}: malformed HTTP response {line:?}"))
}

async fn http_get(h: &HttpGet) -> Result<u16, String> {
    let url = h.url();
    let mut tcp = connect(&h.host, h.port)
        .await
        .map_err(|m| format!("Get {url:?}: {m}"))?;
    if !h.https {
        return exchange(&mut tcp, h).await;
    }
    let name = match h.host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(h.host.clone())
            .map_err(|e| format!("Get {url:?}: {e}"))?,
    };
    let mut tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    exchange(&mut tls, h).await
}

/// httpGet: a status of 200..=399 within the timeout.
pub async fn http_probe(h: &HttpGet, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, http_get(h)).await {
        Ok(Ok(status)) => http_status_outcome(status),
        Ok(Err(m)) => Outcome::Failure(m),
        Err(_) => Outcome::Failure(format!(
            "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            h.url()
        )),
    }
}

/// exec: `kins exec` in the container; exit code 0 is a success, the output (stdout then
/// stderr, at most 10 KiB) the failure's message.
pub async fn exec_probe(
    kins_exe: &std::path::Path,
    state_dir: &std::path::Path,
    command: &[String],
    timeout: Duration,
) -> Outcome {
    if command.is_empty() {
        return Outcome::Error("exec probe without a command".into());
    }
    let mut cmd = tokio::process::Command::new(kins_exe);
    cmd.arg("exec")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--timeout-ms")
        .arg(timeout.as_millis().to_string())
        .arg("--")
        .args(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let t0 = Instant::now();
    // The helper kills the command at the timeout; this bound is for a helper that hangs.
    let out = match tokio::time::timeout(timeout + Duration::from_secs(5), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Outcome::Error(format!("running {}: {e}", kins_exe.display()));
        }
        Err(_) => return Outcome::Failure(format!("command {:?} timed out", command.join(" "))),
    };
    if out.status.success() {
        return Outcome::Success;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if t0.elapsed() >= timeout && stderr.starts_with("command timed out") {
        return Outcome::Failure(format!("command {:?} timed out", command.join(" ")));
    }
    let mut output = out.stdout;
    output.extend_from_slice(&out.stderr);
    output.truncate(MAX_OUTPUT);
    Outcome::Failure(String::from_utf8_lossy(&output).into_owned())
}

/// HTTPS probes do not verify the server's certificate (kubelet's InsecureSkipVerify).
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, TCPSocketAction};

    fn spec(kind: ProbeKind, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            kind,
            handler: Handler::Exec {
                command: vec!["true".into()],
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
            termination_grace_seconds: None,
        }
    }

    fn fail(m: &str) -> Outcome {
        Outcome::Failure(m.into())
    }

    /// One try and what must follow: (kind, outcome, changed, (started, ready, failed)).
    type Step = (ProbeKind, Outcome, bool, (bool, bool, bool));

    /// Feeds outcomes and checks (changed, started, ready, failed) after each.
    fn check(specs: &[ProbeSpec], steps: &[Step]) -> RunProbes {
        let mut r = RunProbes::new("web", specs);
        for (i, (kind, outcome, changed, (started, ready, failed))) in steps.iter().enumerate() {
            let got = r.observe(*kind, outcome);
            let s = r.status();
            assert_eq!(
                (got, s.started, s.ready, s.liveness_failed.is_some()),
                (*changed, *started, *ready, *failed),
                "step {i}: {kind:?} {outcome:?}"
            );
        }
        r
    }

    #[test]
    fn readiness_thresholds() {
        use ProbeKind::Readiness as R;
        let ok = Outcome::Success;
        let r = check(
            &[spec(R, 2, 3)],
            &[
                (R, ok.clone(), false, (true, false, false)),
                (R, fail("x"), false, (true, false, false)),
                (R, ok.clone(), false, (true, false, false)),
                (R, ok.clone(), true, (true, true, false)),
                (R, ok.clone(), false, (true, true, false)),
                (R, fail("a"), false, (true, true, false)),
                (R, fail("b"), false, (true, true, false)),
                (R, fail("c"), true, (true, false, false)),
                (R, fail("d"), false, (true, false, false)),
                (R, ok.clone(), false, (true, false, false)),
                (R, ok, true, (true, true, false)),
            ],
        );
        let mut r = r;
        let events = r.take_events();
        assert_eq!(events.len(), 5);
        assert_eq!(
            events[1],
            (
                "Unhealthy".to_string(),
                "Readiness probe failed: a".to_string()
            )
        );
        assert!(r.take_events().is_empty());
    }

    #[test]
    fn no_probes_means_started_and_ready() {
        let r = RunProbes::new("web", &[]);
        assert_eq!(
            r.status(),
            ProbeStatus {
                started: true,
                ready: true,
                liveness_failed: None,
                kill_grace_seconds: None
            }
        );
        assert_eq!(r.next(ProbeKind::Liveness), Next::Probe);
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        use ProbeKind::{Liveness as L, Readiness as R, Startup as S};
        let ok = Outcome::Success;
        let specs = [spec(S, 1, 2), spec(L, 1, 1), spec(R, 1, 3)];
        let mut r = RunProbes::new("web", &specs);
        assert_eq!(
            (r.next(S), r.next(L), r.next(R)),
            (Next::Probe, Next::Wait, Next::Wait)
        );
        // Tries of gated probes are ignored.
        assert!(!r.observe(L, &fail("early")));
        assert!(!r.observe(R, &ok));
        assert!(r.take_events().is_empty());
        let r = check(
            &specs,
            &[
                (S, fail("slow"), false, (false, false, false)),
                (S, ok.clone(), true, (true, false, false)),
                (R, ok.clone(), true, (true, true, false)),
                (L, fail("dead"), true, (true, true, true)),
                // Once failed, nothing is probed any more.
                (L, fail("dead"), false, (true, true, true)),
                (R, fail("x"), false, (true, true, true)),
            ],
        );
        assert_eq!(
            (r.next(S), r.next(L), r.next(R)),
            (Next::Stop, Next::Stop, Next::Stop)
        );
        assert_eq!(
            r.status().liveness_failed.as_deref(),
            Some("Container web failed liveness probe, will be restarted")
        );
    }

    #[test]
    fn startup_failure_restarts_and_liveness_fails_once() {
        use ProbeKind::{Liveness as L, Startup as S};
        let mut s = spec(S, 1, 2);
        s.termination_grace_seconds = Some(5);
        let mut r = check(
            &[s],
            &[
                (S, fail("refused"), false, (false, false, false)),
                (S, fail("refused"), true, (false, false, true)),
                (S, fail("refused"), false, (false, false, true)),
            ],
        );
        let st = r.status();
        assert_eq!(
            st.liveness_failed.as_deref(),
            Some("Container web failed startup probe, will be restarted")
        );
        assert_eq!(st.kill_grace_seconds, Some(5));
        assert_eq!(
            r.take_events(),
            vec![
                (
                    "Unhealthy".to_string(),
                    "Startup probe failed: refused".to_string()
                ),
                (
                    "Unhealthy".to_string(),
                    "Startup probe failed: refused".to_string()
                ),
            ]
        );
        // Liveness: alive until failureThreshold failures in a row, then reported once.
        check(
            &[spec(L, 1, 3)],
            &[
                (L, fail("1"), false, (true, true, false)),
                (L, fail("2"), false, (true, true, false)),
                (L, Outcome::Success, false, (true, true, false)),
                (L, fail("1"), false, (true, true, false)),
                (L, fail("2"), false, (true, true, false)),
                (L, fail("3"), true, (true, true, true)),
                (L, fail("4"), false, (true, true, true)),
            ],
        );
    }

    #[test]
    fn errored_probes_change_nothing() {
        use ProbeKind::Readiness as R;
        let mut r = check(
            &[spec(R, 1, 1)],
            &[(
                R,
                Outcome::Error("port http not found".into()),
                false,
                (true, false, false),
            )],
        );
        assert_eq!(
            r.take_events()[0].1,
            "Readiness probe errored and resulted in unknown state: port http not found"
        );
    }

    fn container(ports: &[(&str, i32)]) -> Container {
        Container {
            name: "web".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ContainerPort {
                        name: Some(n.to_string()),
                        container_port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn ports() {
        let c = container(&[("http", 8080), ("metrics", 9090)]);
        let check = |p: IntOrString, expect: Result<u16, &str>| {
            assert_eq!(resolve_port(&p, &c), expect.map_err(String::from), "{p:?}");
        };
        check(IntOrString::Int(80), Ok(80));
        check(IntOrString::String("http".into()), Ok(8080));
        check(IntOrString::String("metrics".into()), Ok(9090));
        check(IntOrString::String("8081".into()), Ok(8081));
        check(
            IntOrString::String("grpc".into()),
            Err("strconv.Atoi: parsing \"grpc\": invalid syntax"),
        );
        check(IntOrString::Int(0), Err("invalid port number: 0"));
        check(IntOrString::Int(70000), Err("invalid port number: 70000"));
    }

    #[test]
    fn specs_from_the_api() {
        let mut c = container(&[("http", 8080)]);
        c.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("healthz".into()),
                ..Default::default()
            }),
            success_threshold: Some(2),
            ..Default::default()
        });
        c.liveness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("nope".into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            success_threshold: Some(3),
            termination_grace_period_seconds: Some(7),
            ..Default::default()
        });
        let specs = probe_specs(&c, "10.244.1.5");
        assert_eq!(specs.len(), 2);
        let live = &specs[0];
        assert_eq!(
            (
                live.kind,
                live.initial_delay,
                live.success_threshold,
                live.failure_threshold
            ),
            (ProbeKind::Liveness, Duration::from_secs(5), 1, 3)
        );
        assert_eq!(live.termination_grace_seconds, Some(7));
        assert!(matches!(live.handler, Handler::Invalid(_)));
        let ready = &specs[1];
        assert_eq!(
            (ready.period, ready.timeout, ready.success_threshold),
            (Duration::from_secs(10), Duration::from_secs(1), 2)
        );
        let Handler::Http(h) = &ready.handler else {
            panic!("not http: {:?}", ready.handler)
        };
        assert_eq!(h.url(), "http://10.244.1.5:8080/healthz");
        assert_eq!(
            http_request(h),
            "GET /healthz HTTP/1.1\r\nHost: 10.244.1.5:8080\r\nUser-Agent: kube-probe/1.34\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        let mut h = h.clone();
        h.headers = vec![("Host".into(), "example.com".into())];
        assert!(http_request(&h).contains("\r\nHost: example.com\r\n"));
        assert!(!http_request(&h).contains("10.244.1.5"));
    }

    #[test]
    fn http_statuses() {
        for (code, ok) in [
            (200, true),
            (204, true),
            (302, true),
            (399, true),
            (400, false),
            (500, false),
            (199, false),
        ] {
            assert_eq!(http_status_outcome(code) == Outcome::Success, ok, "{code}");
        }
        assert_eq!(
            http_status_outcome(500),
            fail("HTTP probe failed with statuscode: 500")
        );
        assert_eq!(
            parse_status_line("HTTP/1.1 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("HTTP/1.0 200"), Some(200));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 2000 x"), None);
    }

    #[test]
    fn started_instants() {
        let now = Instant::now();
        let t = (chrono::Utc::now() - chrono::Duration::seconds(30))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let ago = now.saturating_duration_since(started_instant(&t));
        assert!(
            ago >= Duration::from_secs(29) && ago <= Duration::from_secs(32),
            "{ago:?}"
        );
        assert!(started_instant("garbage") >= now);
    }

    /// Answers each connection with the next status of `statuses` (the last one repeats).
    async fn server(statuses: Vec<u16>) -> (u16, JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut i = 0;
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let status = statuses[i.min(statuses.len() - 1)];
                i += 1;
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (port, task)
    }

    fn http(port: u16) -> HttpGet {
        HttpGet {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            headers: vec![],
        }
    }

    async fn recv(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<PodKey>,
    ) -> Result<Option<PodKey>, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
    }

    #[tokio::test]
    async fn readiness_flips_with_a_live_server() {
        let (port, server) = server(vec![200, 200, 500]).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let prober = Prober::new(PathBuf::from("/nonexistent/kins"), tx);
        let key = ContainerKey {
            uid: "u1".into(),
            container: "web".into(),
            attempt: 1,
        };
        let pod = PodKey {
            namespace: "default".into(),
            name: "p".into(),
        };
        let mut s = spec(ProbeKind::Readiness, 1, 2);
        s.handler = Handler::Http(http(port));
        s.period = Duration::from_millis(50);
        prober.ensure_specs(
            key.clone(),
            pod.clone(),
            vec![s],
            PathBuf::new(),
            Instant::now(),
        );
        assert!(!prober.status(&key).ready);
        assert_eq!(
            recv(&mut rx).await.expect("ready in time"),
            Some(pod.clone())
        );
        assert!(prober.status(&key).ready);
        assert_eq!(
            recv(&mut rx).await.expect("not ready in time"),
            Some(pod.clone())
        );
        let st = prober.status(&key);
        assert!(
            !st.ready && st.started && st.liveness_failed.is_none(),
            "{st:?}"
        );
        let events = prober.take_events(&key);
        assert!(events.len() >= 2, "{events:?}");
        assert_eq!(
            events[0],
            (
                "Unhealthy".to_string(),
                "Readiness probe failed: HTTP probe failed with statuscode: 500".to_string()
            )
        );
        prober.forget_pod("u1");
        assert!(prober.status(&key).ready, "forgotten runs have no probes");
        server.abort();
    }

    #[tokio::test]
    async fn tcp_probes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = l.local_addr().expect("addr").port();
        assert_eq!(
            tcp_probe("127.0.0.1", open, Duration::from_secs(1)).await,
            Outcome::Success
        );
        // A port nothing listens on (bound then closed).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        assert_eq!(
            tcp_probe("127.0.0.1", closed, Duration::from_secs(1)).await,
            fail(&format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        assert_eq!(
            http_probe(&http(closed), Duration::from_secs(1)).await,
            fail(&format!(
                "Get \"http://127.0.0.1:{closed}/healthz\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn exec_probes_run_kins_exec() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let fake = |name: &str, script: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            p
        };
        let cmd = vec!["cat".to_string(), "/ready".to_string()];
        let state = PathBuf::from("/run/x/c.1");
        let t = Duration::from_millis(300);
        let ok = fake("ok", "exit 0");
        assert_eq!(exec_probe(&ok, &state, &cmd, t).await, Outcome::Success);
        let echo = fake("echo", "echo \"$@\"; echo oops >&2; exit 1");
        assert_eq!(
            exec_probe(&echo, &state, &cmd, t).await,
            fail("exec --state-dir /run/x/c.1 --timeout-ms 300 -- cat /ready\noops\n")
        );
        let slow = fake(
            "slow",
            "sleep 0.4; echo 'command timed out after 300ms' >&2; exit 137",
        );
        assert_eq!(
            exec_probe(&slow, &state, &cmd, t).await,
            fail("command \"cat /ready\" timed out")
        );
        let missing = d.path().join("missing");
        assert!(matches!(
            exec_probe(&missing, &state, &cmd, t).await,
            Outcome::Error(_)
        ));
    }

    #[tokio::test]
    async fn http_timeout() {
        // Accepts and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        assert_eq!(
            http_probe(&http(port), Duration::from_millis(200)).await,
            fail(&format!(
                "Get \"http://127.0.0.1:{port}/healthz\": context deadline exceeded \
                 (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        hold.abort();
    }
}
