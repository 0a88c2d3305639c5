//! Benchmark server: 10,000 ClusterIP services in 10 namespaces, served from a
//! single-threaded runtime. `cargo run --release -p dns --example perf -- PORT QUERYFILE`
//! writes a dnsperf query file and serves on 127.0.0.1:PORT until killed.

use std::io::Write;

use dns::{serve, Index, IndexConfig, ServeOptions};
use k8s_openapi::api::core::v1::Service;

const SERVICES: usize = 10_000;
const NAMESPACES: usize = 10;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(5353);
    let queryfile = args
        .next()
        .unwrap_or_else(|| "/tmp/kins-dns-queries.txt".into());

    let mut index = Index::new(IndexConfig::default());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&queryfile)?);
    for i in 0..SERVICES {
        let ns = format!("ns-{}", i % NAMESPACES);
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": format!("svc-{i}")},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "protocol": "TCP", "port": 80}]},
        }))?;
        index.apply_service(&svc);
        writeln!(out, "svc-{i}.{ns}.svc.cluster.local A")?;
    }
    out.flush()?;
    eprintln!("{} names, query file {queryfile}", index.name_count());

    let corefile = format!(
        ".:{port} {{\n kubernetes cluster.local in-addr.arpa ip6.arpa {{\n pods insecure\n }}\n}}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let opts = ServeOptions {
            listen_ip: "127.0.0.1".parse()?,
            ..ServeOptions::default()
        };
        let _dns = serve(&corefile, index, opts).await?;
        eprintln!("serving on 127.0.0.1:{port}");
        std::future::pending::<()>().await;
        Ok(())
    })
}
