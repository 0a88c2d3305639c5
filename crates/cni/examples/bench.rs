//! Pod network setup cost: ADD then DEL for N pods (default 100) on one node namespace,
//! the plugin called in-process from inside the node's namespace as the agent will.
//! Prints p50/p99 of each step. Needs root; everything lives under a temporary folder
//! (`kins-cni-bench-*`) and is removed at the end, also on failure.
//!
//! `cargo run --release -p cni --example bench [-- N]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cni::CniEnv;
use net::{create_netns, delete_netns, run_in_netns};

struct Guard(Vec<PathBuf>);

impl Drop for Guard {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = delete_netns(p);
        }
    }
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn report(name: &str, samples: &mut [Duration]) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let total: Duration = samples.iter().sum();
    println!(
        "{name:<26} p50 {:>8.0} µs   p99 {:>8.0} µs   mean {:>8.0} µs",
        us(pct(samples, 0.50)),
        us(pct(samples, 0.99)),
        us(total / samples.len() as u32),
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N: a number of pods"))
        .unwrap_or(100);
    let dir = tempfile::Builder::new()
        .prefix("kins-cni-bench-")
        .tempdir()
        .expect("temp dir");
    let mut guard = Guard(vec![]);
    let node = dir.path().join("node");
    guard.0.push(node.clone());
    create_netns(&node).expect("node netns");
    let conf = format!(
        r#"{{"cniVersion": "1.0.0", "name": "bench", "type": "kins-bridge",
            "ipam": {{"type": "kins-host-local", "subnet": "10.244.0.0/16", "dataDir": "{}"}}}}"#,
        dir.path().join("ipam").display()
    );

    let mut create = Vec::with_capacity(n);
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let p = dir.path().join(format!("pod{i}"));
        guard.0.push(p.clone());
        let t = Instant::now();
        create_netns(&p).expect("pod netns");
        create.push(t.elapsed());
        pods.push(p);
    }

    let env = |i: usize, pod: &Path| CniEnv {
        container_id: format!("{i:064x}"),
        netns: pod.display().to_string(),
        ifname: "eth0".to_string(),
        ..CniEnv::default()
    };
    let (mut add, mut del) = run_in_netns(&node, || {
        let mut add = Vec::with_capacity(n);
        for (i, pod) in pods.iter().enumerate() {
            let t = Instant::now();
            let out = cni::run("ADD", &env(i, pod), conf.as_bytes());
            add.push(t.elapsed());
            assert_eq!(out.exit, 0, "ADD {i}: {}", out.stdout);
        }
        let mut del = Vec::with_capacity(n);
        for (i, pod) in pods.iter().enumerate() {
            let t = Instant::now();
            let out = cni::run("DEL", &env(i, pod), conf.as_bytes());
            del.push(t.elapsed());
            assert_eq!(out.exit, 0, "DEL {i}: {}", out.stdout);
        }
        (add, del)
    })
    .expect("in node netns");

    // The same pods again, deleted by 8 threads at once: unregistering a link ends in an
    // rcu_barrier (most of a DEL), and concurrent ones overlap.
    let threads = 8.min(n);
    let parallel = run_in_netns(&node, || {
        for (i, pod) in pods.iter().enumerate() {
            let out = cni::run("ADD", &env(i, pod), conf.as_bytes());
            assert_eq!(out.exit, 0, "ADD {i}: {}", out.stdout);
        }
        let t = Instant::now();
        std::thread::scope(|s| {
            for k in 0..threads {
                let (pods, conf, env) = (&pods, &conf, &env);
                s.spawn(move || {
                    for (i, pod) in pods.iter().enumerate().skip(k).step_by(threads) {
                        let out = cni::run("DEL", &env(i, pod), conf.as_bytes());
                        assert_eq!(out.exit, 0, "DEL {i}: {}", out.stdout);
                    }
                });
            }
        });
        t.elapsed()
    })
    .expect("in node netns");

    let mut remove = Vec::with_capacity(n);
    for p in &pods {
        let t = Instant::now();
        delete_netns(p).expect("delete pod netns");
        remove.push(t.elapsed());
    }

    let mut setup: Vec<Duration> = create.iter().zip(&add).map(|(c, a)| *c + *a).collect();
    println!("{n} pods on one node namespace (first ADD creates the bridge)");
    report("create_netns", &mut create);
    report("ADD", &mut add);
    report("netns + ADD (pod setup)", &mut setup);
    report("DEL", &mut del);
    println!(
        "{:<26} {:>8.0} µs per pod ({threads} threads, wall time / {n})",
        "DEL in parallel",
        parallel.as_secs_f64() * 1e6 / n as f64
    );
    report("delete_netns", &mut remove);
}
