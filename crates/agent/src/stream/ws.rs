//! WebSocket transports of the streaming endpoints: the channel protocol (each binary
//! message starts with its channel byte) split into one byte stream per channel.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message;

use super::protocol::{parse_resize, CLOSE, RESIZE};

/// The buffer between a channel and the code that reads or writes it.
const CHANNEL_BUFFER: usize = 256 * 1024;
/// The largest message sent.
const CHUNK: usize = 32 * 1024;

pub type Ws = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// The channels of one WebSocket connection.
pub struct Channels {
    /// One byte stream per channel asked for (the resize channel excepted): what the
    /// client sends on it is read from it, what is written to it goes to the client.
    /// Dropping (or shutting down) every stream ends the connection with a close frame.
    pub streams: HashMap<u8, DuplexStream>,
    /// Terminal sizes (cols, rows) from the resize channel, when it was asked for.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Resolves when the client is gone (closed the connection or it broke).
    pub gone: tokio::sync::watch::Receiver<bool>,
}

/// Splits `ws` into `channels`. With `v5`, `[255, ch]` from the client ends channel ch's
/// input. `prefix(ch)` is sent first on a channel (port-forward's port number).
pub fn channels(ws: Ws, wanted: &[u8], v5: bool, prefix: impl Fn(u8) -> Option<Bytes>) -> Channels {
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let mut inputs: HashMap<u8, WriteHalf<DuplexStream>> = HashMap::new();
    let mut streams = HashMap::new();
    let (gone_tx, gone) = tokio::sync::watch::channel(false);
    let mut resize = None;
    let mut resize_tx = None;
    for &ch in wanted {
        if ch == RESIZE {
            let (tx, rx) = mpsc::channel(8);
            resize = Some(rx);
            resize_tx = Some(tx);
            continue;
        }
        let (ours, theirs) = tokio::io::duplex(CHANNEL_BUFFER);
        let (mut rd, wr) = tokio::io::split(ours);
        inputs.insert(ch, wr);
        streams.insert(ch, theirs);
        let out = out_tx.clone();
        let first = prefix(ch);
        tokio::spawn(async move {
            if let Some(p) = first {
                if out.send(frame(ch, &p)).await.is_err() {
                    return;
                }
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if out.send(frame(ch, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(out_tx);
    // Writer: every channel's messages in order, then a normal close once all ended.
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        close_normally(sink).await;
    });
    // Reader: the client's messages to their channels.
    tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                // The Python client sends what it writes as str in text messages.
                Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_bytes()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&ch, rest)) = data.split_first() else {
                continue;
            };
            if ch == CLOSE && v5 {
                if let Some(c) = rest.first() {
                    if let Some(mut w) = inputs.remove(c) {
                        let _ = w.shutdown().await;
                    }
                }
                continue;
            }
            if ch == RESIZE {
                if let (Some(tx), Some(size)) = (&resize_tx, parse_resize(rest)) {
                    let _ = tx.send(size).await;
                }
                continue;
            }
            if let Some(w) = inputs.get_mut(&ch) {
                if w.write_all(rest).await.is_err() {
                    inputs.remove(&ch);
                }
            }
        }
        for (_, mut w) in inputs.drain() {
            let _ = w.shutdown().await;
        }
        let _ = gone_tx.send(true);
    });
    Channels {
        streams,
        resize,
        gone,
    }
}

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(ch);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

/// The binary messages of `ws` as one byte stream, as kubectl ≥ 1.31 tunnels SPDY
/// (`SPDY/3.1+portforward.k8s.io`): what arrives is read from the returned stream in
/// order, every write leaves as one binary message, and shutting it down sends a normal
/// close.
pub fn bytes(ws: Ws) -> DuplexStream {
    let (mut sink, mut source) = ws.split();
    let (ours, theirs) = tokio::io::duplex(CHANNEL_BUFFER);
    let (mut rd, mut wr) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
        close_normally(sink).await;
    });
    theirs
}

/// Sends a normal close frame and closes the sink.
async fn close_normally(mut sink: futures::stream::SplitSink<Ws, Message>) {
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}
