//! `kubectl port-forward`: every forwarded connection is a TCP connection to
//! `127.0.0.1:<port>` opened from inside the pod's network namespace (as containerd does),
//! copied both ways. Over the WebSocket channel protocol (the Python client, kube-rs)
//! channels 2i and 2i+1 carry the data and errors of the i-th port of `ports=`, each
//! starting with the port as two little-endian bytes; over SPDY (kubectl) see
//! [`super::spdy`]. The forward ends when the pod's network namespace goes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ws::{self, Ws};

/// The pod a port-forward goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's network namespace file.
    pub netns: PathBuf,
}

impl Target {
    /// Resolves once the pod's network namespace is gone (the pod was deleted).
    pub async fn gone(&self) {
        while tokio::fs::try_exists(&self.netns).await.unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn error(&self, port: u16, e: &std::io::Error) -> String {
        format!(
            "error forwarding port {port} to pod {}/{}, uid {}: dial tcp4 127.0.0.1:{port}: connect: {}",
            self.namespace,
            self.name,
            self.uid,
            runtime::container::io_text(e)
        )
    }
}

/// A TCP connection to `127.0.0.1:port` made inside the network namespace `netns`.
pub async fn connect(netns: &Path, port: u16) -> std::io::Result<TcpStream> {
    let path = netns.to_path_buf();
    let std_stream = tokio::task::spawn_blocking(move || {
        net::run_in_netns(&path, move || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            Ok::<_, std::io::Error>(s)
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    TcpStream::from_std(std_stream)
}

/// Copies both ways; once one direction has ended, the other gets a second to finish
/// (as containerd does: a client that never half-closes, like the Python client's socket,
/// still sees the end of the pod's answer).
async fn splice(a: impl AsyncRead + AsyncWrite + Unpin, mut conn: TcpStream) {
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut cr, mut cw) = conn.split();
    let up = async {
        let _ = tokio::io::copy(&mut ar, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut cr, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::pin!(up, down);
    let rest = tokio::select! {
        _ = &mut up => futures::future::Either::Left(down),
        _ = &mut down => futures::future::Either::Right(up),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), rest).await;
}

/// Forwards one connection: `data` to `port` in the pod, a failure written on `error`.
pub async fn forward(
    target: &Target,
    port: u16,
    data: impl AsyncRead + AsyncWrite + Unpin,
    mut error: impl AsyncWrite + Unpin,
) {
    match connect(&target.netns, port).await {
        Ok(conn) => splice(data, conn).await,
        Err(e) => {
            let msg = target.error(port, &e);
            tracing::debug!(%msg, "port-forward");
            let _ = error.write_all(msg.as_bytes()).await;
        }
    }
    let _ = error.shutdown().await;
}

/// Port-forward over the WebSocket channel protocol, for the ports of the request, until
/// the client goes or the pod does.
pub async fn serve_channels(ws: Ws, v5: bool, target: Target, ports: Vec<u16>) {
    let wanted: Vec<u8> = (0..ports.len() as u8)
        .flat_map(|i| [2 * i, 2 * i + 1])
        .collect();
    let by_channel = ports.clone();
    let mut chans = ws::channels(ws, &wanted, v5, move |ch| {
        let port = by_channel.get(usize::from(ch / 2))?;
        Some(Bytes::copy_from_slice(&port.to_le_bytes()))
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, port) in ports.into_iter().enumerate() {
        let data = chans.streams.remove(&(2 * i as u8));
        let error = chans.streams.remove(&(2 * i as u8 + 1));
        let (Some(data), Some(error)) = (data, error) else {
            continue;
        };
        let target = target.clone();
        tasks.spawn(async move { forward(&target, port, data, error).await });
    }
    let gone = target.gone();
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        // Dropping the tasks ends their channels: the connection closes.
        _ = gone => tracing::debug!(pod = %target.name, "port-forward: the pod is gone"),
    }
}
