//! Prometheus metrics per Ingress and backend: lock-free counters the request path bumps,
//! rendered in the text exposition format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::routes::Registry;

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counters of one (Ingress, backend).
#[derive(Debug, Default)]
pub struct Stats {
    /// Responses by class: 1xx … 5xx.
    pub responses: [AtomicU64; 5],
    /// Requests answered 503 because no endpoint was ready.
    pub no_endpoints: AtomicU64,
    /// Upstream connections that failed.
    pub upstream_errors: AtomicU64,
    pub buckets: [AtomicU64; BUCKETS.len()],
    /// Total latency in microseconds.
    pub sum_us: AtomicU64,
    pub count: AtomicU64,
}

impl Stats {
    /// Records one response.
    pub fn observe(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let s = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Controller-wide figures.
#[derive(Debug, Default)]
pub struct Global {
    pub reloads: AtomicU64,
    pub last_reload_us: AtomicU64,
    pub ingresses: AtomicU64,
    pub routes: AtomicU64,
    pub unrouted: AtomicU64,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The exposition text.
pub fn render(registry: &Registry, g: &Global) -> String {
    let mut out = String::new();
    let l = Ordering::Relaxed;
    let _ = writeln!(out, "# HELP kins_ingress_requests_total Responses by Ingress, backend Service and status class.\n# TYPE kins_ingress_requests_total counter");
    let all = registry.all();
    for ((ns, ing, svc, port), s) in &all {
        let labels = format!(
            "namespace=\"{}\",ingress=\"{}\",service=\"{}\",port=\"{}\"",
            esc(ns),
            esc(ing),
            esc(svc),
            esc(port)
        );
        for (i, c) in s.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "kins_ingress_requests_total{{{labels},status=\"{}xx\"}} {}",
                i + 1,
                c.load(l)
            );
        }
    }
    let _ = writeln!(out, "# HELP kins_ingress_no_endpoints_total Requests answered 503 at once: the backend had no ready endpoint.\n# TYPE kins_ingress_no_endpoints_total counter");
    for ((ns, ing, svc, port), s) in &all {
        let _ = writeln!(out, "kins_ingress_no_endpoints_total{{namespace=\"{}\",ingress=\"{}\",service=\"{}\",port=\"{}\"}} {}", esc(ns), esc(ing), esc(svc), esc(port), s.no_endpoints.load(l));
    }
    let _ = writeln!(out, "# HELP kins_ingress_upstream_errors_total Upstream connections or requests that failed.\n# TYPE kins_ingress_upstream_errors_total counter");
    for ((ns, ing, svc, port), s) in &all {
        let _ = writeln!(out, "kins_ingress_upstream_errors_total{{namespace=\"{}\",ingress=\"{}\",service=\"{}\",port=\"{}\"}} {}", esc(ns), esc(ing), esc(svc), esc(port), s.upstream_errors.load(l));
    }
    let _ = writeln!(out, "# HELP kins_ingress_request_duration_seconds Time from request to response headers.\n# TYPE kins_ingress_request_duration_seconds histogram");
    for ((ns, ing, svc, port), s) in &all {
        let labels = format!(
            "namespace=\"{}\",ingress=\"{}\",service=\"{}\",port=\"{}\"",
            esc(ns),
            esc(ing),
            esc(svc),
            esc(port)
        );
        let mut cum = 0;
        for (b, c) in BUCKETS.iter().zip(&s.buckets) {
            cum += c.load(l);
            let _ = writeln!(
                out,
                "kins_ingress_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cum}"
            );
        }
        let count = s.count.load(l);
        let _ = writeln!(
            out,
            "kins_ingress_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "kins_ingress_request_duration_seconds_sum{{{labels}}} {}",
            s.sum_us.load(l) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "kins_ingress_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    for (name, help, v) in [
        (
            "kins_ingress_config_reloads_total",
            "Routing tables built and swapped in.",
            g.reloads.load(l) as f64,
        ),
        (
            "kins_ingress_config_last_reload_seconds",
            "How long the last table took to build.",
            g.last_reload_us.load(l) as f64 / 1e6,
        ),
        (
            "kins_ingress_ingresses",
            "Ingresses served.",
            g.ingresses.load(l) as f64,
        ),
        (
            "kins_ingress_routes",
            "Host and path rules in the table.",
            g.routes.load(l) as f64,
        ),
        (
            "kins_ingress_unrouted_total",
            "Requests no rule matched (404).",
            g.unrouted.load(l) as f64,
        ),
    ] {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}
