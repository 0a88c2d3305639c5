//! Measures durable creates per second with concurrent writers.
//!
//! `cargo run --release -p store --example bench -- [writers] [creates] [dir]`
//! (defaults: 32 writers, 20000 creates, a temporary directory). Each create is acknowledged
//! only after its commit is fsynced; concurrent creates share commits (group commit).

use std::sync::Arc;
use std::time::Instant;

use store::{Config, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let creates: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let dir = match args.next() {
        Some(dir) => tempfile::TempDir::new_in(dir)?,
        None => tempfile::TempDir::new()?,
    };
    let store = Store::open(&dir.path().join("bench.db"), Config::default())?;
    // A value the size of a small pod object.
    let value = Arc::new(vec![b'x'; 1024]);

    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let value = Arc::clone(&value);
            tokio::spawn(async move {
                let mut i = w;
                while i < creates {
                    store
                        .create(&format!("/core/pods/bench/pod-{i}"), value.to_vec())
                        .await?;
                    i += writers;
                }
                Ok::<_, store::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{creates} durable creates from {writers} writers in {:.2?}: {:.0} creates/s (revision {})",
        elapsed,
        creates as f64 / elapsed.as_secs_f64(),
        store.current_revision()
    );
    Ok(())
}
