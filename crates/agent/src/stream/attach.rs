//! `kubectl attach`: joins the session to the container's stdin and output through the
//! shim's attach socket (see `runtime::container::attach`). The container's own process
//! is attached to, nothing is started; when the container ends (the shim closes the
//! socket) the session ends with Success, as the kubelet's does. A client that goes away
//! only detaches (with `stdinOnce` the shim then closes the container's stdin).

use std::os::fd::AsFd;
use std::path::Path;

use runtime::container::attach as wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::Session;
use super::protocol::{ExecOptions, Outcome};

/// Attaches `session` to the container whose shim state is `state_dir`.
pub async fn run(state_dir: &Path, opts: &ExecOptions, mut session: Session) -> Outcome {
    let sock = match connect(state_dir).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("error attaching to container: {e}")),
    };
    let (mut from_shim, mut to_shim) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if to_shim.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let with_stdin = opts.stdin && session.stdin.is_some();
    let _ = tx
        .send(wire::encode(wire::HELLO, &[u8::from(with_stdin)]))
        .await;
    let mut tasks = Vec::new();
    if let Some(mut stdin) = session.stdin.take() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(wire::encode(wire::STDIN, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(wire::encode(wire::STDIN_EOF, b"")).await;
        }));
    }
    if let Some(mut sizes) = session.resize.take() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((cols, rows)) = sizes.recv().await {
                if tx.send(wire::resize(cols, rows)).await.is_err() {
                    return;
                }
            }
        }));
    }
    // `tx` lives to the end: the writer dropping its half would shut the socket's write
    // side, which the shim takes for a detach.
    let mut stdout = session.stdout.take();
    let mut stderr = session.stderr.take();
    let mut gone = session.gone.clone();
    let copy = async {
        let mut decoder = wire::Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_shim.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => decoder.push(&buf[..n]),
            }
            while let Ok(Some((kind, data))) = decoder.next_frame() {
                // With a terminal all output is stdout; without stderr it is dropped.
                let to = match kind {
                    wire::STDERR => stderr.as_mut(),
                    _ => stdout.as_mut(),
                };
                if let Some(w) = to {
                    if w.write_all(&data).await.is_err() {
                        return;
                    }
                    let _ = w.flush().await;
                }
            }
        }
    };
    tokio::select! {
        _ = copy => {}
        _ = async { let _ = gone.wait_for(|g| *g).await; } => {}
    }
    for t in tasks {
        t.abort();
    }
    drop(tx);
    writer.abort();
    for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = w.shutdown().await;
    }
    Outcome::Exited(0)
}

async fn connect(state_dir: &Path) -> std::io::Result<tokio::net::UnixStream> {
    let dir = wire::open_dir(state_dir)?;
    let path = wire::socket_path(dir.as_fd());
    let s = tokio::net::UnixStream::connect(&path).await;
    drop(dir);
    s
}
