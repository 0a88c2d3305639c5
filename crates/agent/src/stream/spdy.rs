//! The SPDY/3.1 side of the streaming endpoints (what kubectl port-forward speaks, plain or
//! tunnelled through WebSocket, and what client-go falls back to for exec):
//!
//! - port-forward (`portforward.k8s.io`): for every connection the client opens an
//!   `error` stream, then a `data` stream, both with headers `port` and `requestID`; the
//!   pair is forwarded to the port inside the pod, and a failure is written on the error
//!   stream (the other connections go on).
//! - exec (`v4.channel.k8s.io`, `v5`): one stream per `streamType` (`error`, `stdin`,
//!   `stdout`, `stderr`, `resize`), as many as the request's options call for, opened
//!   within [`STREAM_WAIT`]; the outcome is a `Status` on the error stream.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{self, Reader, Writer};
use super::portforward::{self, Target};
use super::protocol::{self, ExecOptions, Outcome};

/// How long a client has to open the streams of an exec (the kubelet's 30 s).
pub const STREAM_WAIT: Duration = Duration::from_secs(30);

/// Which connection a port-forward stream belongs to: its `requestID`, or for clients
/// older than that header, the error stream's ID (a data stream follows its error stream,
/// two IDs later), as the kubelet pairs them.
pub fn request_id(kind: &str, stream: u32, header: Option<&str>) -> String {
    match header {
        Some(id) => id.to_string(),
        None if kind == "data" => stream.saturating_sub(2).to_string(),
        None => stream.to_string(),
    }
}

#[derive(Default)]
struct Pair {
    data: Option<spdy::Stream>,
    error: Option<spdy::Stream>,
}

/// Serves port-forward streams until the client goes or the pod does.
pub async fn portforward(mut session: spdy::Session, target: Target) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let gone = target.gone();
    tokio::pin!(gone);
    loop {
        let stream = tokio::select! {
            s = session.accept() => match s { Some(s) => s, None => break },
            _ = &mut gone => {
                tracing::debug!(pod = %target.name, "port-forward: the pod is gone");
                break;
            }
        };
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let port = stream.header("port").unwrap_or("").to_string();
        let Ok(port) =
            port.parse::<u16>()
                .map_err(drop)
                .and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
        else {
            refuse(&session, stream, format!("invalid port header \"{port}\"")).await;
            continue;
        };
        let id = request_id(&kind, stream.id, stream.header("requestid"));
        let pair = pending.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" if pair.data.is_none() => pair.data = Some(stream),
            "error" if pair.error.is_none() => pair.error = Some(stream),
            _ => {
                refuse(&session, stream, format!("invalid stream type \"{kind}\"")).await;
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            let Some(Pair {
                data: Some(data),
                error: Some(error),
            }) = pending.remove(&id)
            else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(
                async move { portforward::forward(&target, port, data.io, error.io).await },
            );
        }
    }
    session.close().await;
}

/// Resets a stream the client should not have opened.
async fn refuse(session: &spdy::Session, stream: spdy::Stream, why: String) {
    tracing::debug!(stream = stream.id, %why, "port-forward: stream refused");
    session
        .reset(stream.id, spdy::frame::rst::PROTOCOL_ERROR)
        .await;
}

/// Runs an exec over SPDY: collects the streams the options call for, runs the command,
/// writes its `Status` on the error stream and ends the session.
pub async fn exec(
    mut session: spdy::Session,
    verb: &exec::Verb,
    state_dir: &Path,
    opts: &ExecOptions,
) {
    let mut wanted = vec!["error"];
    for (on, kind) in [
        (opts.stdin, "stdin"),
        (opts.stdout, "stdout"),
        (opts.stderr && !opts.tty, "stderr"),
        (opts.tty, "resize"),
    ] {
        if on {
            wanted.push(kind);
        }
    }
    let mut streams: HashMap<String, spdy::Stream> = HashMap::new();
    let collect = async {
        while streams.len() < wanted.len() {
            let Some(s) = session.accept().await else {
                return false;
            };
            let kind = s.header("streamtype").unwrap_or("").to_ascii_lowercase();
            if !wanted.contains(&kind.as_str()) || streams.contains_key(&kind) {
                session.reset(s.id, spdy::frame::rst::PROTOCOL_ERROR).await;
                continue;
            }
            streams.insert(kind, s);
        }
        true
    };
    match tokio::time::timeout(STREAM_WAIT, collect).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            if let Some(mut e) = streams.remove("error") {
                let msg = Outcome::Failed("timed out waiting for client to create streams".into());
                let _ =
                    e.io.write_all(protocol::status(&msg).to_string().as_bytes())
                        .await;
                let _ = e.io.shutdown().await;
            }
            session.close().await;
            return;
        }
    }
    let resize = streams.remove("resize").map(|s| resizes(s.io));
    let boxed_r = |s: spdy::Stream| -> Reader { Box::new(s.io) };
    let boxed_w = |s: spdy::Stream| -> Writer { Box::new(s.io) };
    let sess = exec::Session {
        stdin: streams.remove("stdin").map(boxed_r),
        stdout: streams.remove("stdout").map(boxed_w),
        stderr: streams.remove("stderr").map(boxed_w),
        resize,
        gone: session.gone(),
    };
    let outcome = exec::serve(verb, state_dir, opts, sess).await;
    tracing::debug!(
        ?outcome,
        has_error = streams.contains_key("error"),
        "exec over SPDY ended"
    );
    if let Some(mut e) = streams.remove("error") {
        let _ =
            e.io.write_all(protocol::status(&outcome).to_string().as_bytes())
                .await;
        let _ = e.io.shutdown().await;
    }
    session.close().await;
}

/// The terminal sizes a resize stream carries: JSON objects one after another.
fn resizes(mut io: tokio::io::DuplexStream) -> mpsc::Receiver<(u16, u16)> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut it =
                serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
            let mut used = 0;
            while let Some(Ok(v)) = it.next() {
                used = it.byte_offset();
                if let Some(size) = protocol::parse_resize(v.to_string().as_bytes()) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
            buf.drain(..used);
            if buf.len() > 64 * 1024 {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_pair_by_request_id_or_by_stream_id() {
        assert_eq!(request_id("error", 1, Some("7")), "7");
        assert_eq!(request_id("data", 3, Some("7")), "7");
        // Without requestID: error stream 5 and data stream 7 are one connection.
        assert_eq!(request_id("error", 5, None), "5");
        assert_eq!(request_id("data", 7, None), "5");
    }

    #[tokio::test]
    async fn resize_messages_arrive_split_or_together() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut rx = resizes(server);
        client
            .write_all(b"{\"Width\":80,\"Height\":24}\n{\"Width\":10")
            .await
            .expect("writes");
        assert_eq!(rx.recv().await, Some((80, 24)));
        client
            .write_all(b"0,\"Height\":30}\n")
            .await
            .expect("writes");
        assert_eq!(rx.recv().await, Some((100, 30)));
        drop(client);
        assert_eq!(rx.recv().await, None);
    }
}
