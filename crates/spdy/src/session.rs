//! The server side of a SPDY/3.1 session over any byte stream (an upgraded HTTP/1.1
//! connection, or WebSocket binary messages carrying SPDY as kubectl ≥ 1.31 tunnels it).
//!
//! Clients open streams (SYN_STREAM with odd IDs); every stream is answered with a
//! SYN_REPLY at once (spdystream drops data on a stream that has no reply) and handed
//! out as a [`Stream`]: a byte stream whose reads are what the peer sent and whose writes
//! go to the peer; shutting it down sends FIN. A peer's RST_STREAM ends both directions.
//! PINGs are answered; SETTINGS and WINDOW_UPDATE are read and ignored, as spdystream
//! does (it has no flow control: TCP's is what applies).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::frame::{rst, Decoder, Encoder, Frame, Headers};

/// The buffer between a stream and the code that reads or writes it.
const STREAM_BUFFER: usize = 256 * 1024;
/// The largest data frame sent.
const CHUNK: usize = 32 * 1024;
/// How long [`Session::close`] waits for streams to send what they were given.
const DRAIN: Duration = Duration::from_secs(2);
/// How long [`Session::close`] then leaves the client to close the connection.
const LINGER: Duration = Duration::from_secs(5);

/// One stream a client opened.
pub struct Stream {
    pub id: u32,
    /// Its SYN_STREAM headers (names lower case).
    pub headers: Headers,
    /// Reads: the peer's data until its FIN; writes: data frames; shutdown: FIN.
    pub io: DuplexStream,
}

impl Stream {
    /// Header `name` of the stream (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::frame::header(&self.headers, name)
    }
}

enum Out {
    Frame(Frame),
    Shutdown,
}

/// A server session: the streams clients open, and its closing.
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    pumps: Arc<Pumps>,
    last_stream: Arc<AtomicUsize>,
    gone: watch::Receiver<bool>,
}

/// Counts the streams still sending.
#[derive(Default)]
struct Pumps {
    live: AtomicUsize,
    done: Notify,
}

impl Session {
    /// Serves a session on `io` (in tasks of its own).
    pub fn serve<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel::<Out>(64);
        let (incoming_tx, incoming) = mpsc::channel(16);
        let pumps = Arc::new(Pumps::default());
        let last_stream = Arc::new(AtomicUsize::new(0));
        let (gone_tx, gone) = watch::channel(false);
        let (out_reader, pumps_reader, last_reader) =
            (out.clone(), pumps.clone(), last_stream.clone());
        tokio::spawn(write_frames(wr, out_rx));
        tokio::spawn(async move {
            read_frames(rd, out_reader, incoming_tx, pumps_reader, last_reader).await;
            let _ = gone_tx.send(true);
        });
        Session {
            incoming,
            out,
            pumps,
            last_stream,
            gone,
        }
    }

    /// Turns true when the peer's side of the connection has ended.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// The next stream a client opened; `None` once the connection is gone.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Refuses a stream (RST_STREAM with `status`, see [`crate::frame::rst`]).
    pub async fn reset(&self, stream: u32, status: u32) {
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream { stream, status }))
            .await;
    }

    /// Ends the session: what the streams still had to send (for a short while), GOAWAY,
    /// then the connection's end once the client closed it or after [`LINGER`].
    pub async fn close(self) {
        let drained = async {
            while self.pumps.live.load(Ordering::Acquire) > 0 {
                let notified = self.pumps.done.notified();
                if self.pumps.live.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(DRAIN, drained).await;
        let last_good = self.last_stream.load(Ordering::Relaxed) as u32;
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good,
                status: 0,
            }))
            .await;
        // spdystream discards frames still queued when the connection ends, so the
        // client is left to close it (it does once its streams are done), as the
        // kubelet's spdystream does; a client that does not is cut off after LINGER.
        let mut gone = self.gone.clone();
        let _ = tokio::time::timeout(LINGER, gone.wait_for(|g| *g)).await;
        let _ = self.out.send(Out::Shutdown).await;
    }
}

/// Encodes frames in order, batching what is queued into one write.
async fn write_frames<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Out>) {
    tokio::pin!(wr);
    let mut enc = Encoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut shutdown = false;
        while let Some(o) = next.take() {
            match o {
                Out::Frame(f) => {
                    tracing::trace!(frame = ?f, "spdy: send");
                    if let Err(e) = enc.encode(&f, &mut buf) {
                        tracing::debug!(error = %e, "spdy: frame not sent");
                    }
                }
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            buf.clear();
        }
        if shutdown {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// A stream's state on the reading side.
struct Entry {
    /// Where the peer's data goes, until its FIN.
    inbound: Option<WriteHalf<DuplexStream>>,
    /// Stops the stream's sending pump (the peer reset it).
    cancel: Option<oneshot::Sender<()>>,
}

async fn read_frames<R: AsyncRead>(
    rd: R,
    out: mpsc::Sender<Out>,
    incoming: mpsc::Sender<Stream>,
    pumps: Arc<Pumps>,
    last_stream: Arc<AtomicUsize>,
) {
    tokio::pin!(rd);
    let mut dec = Decoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut streams: HashMap<u32, Entry> = HashMap::new();
    let mut going_away = false;
    'read: loop {
        loop {
            let frame = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy: session ends");
                    break 'read;
                }
            };
            tracing::trace!(?frame, "spdy: received");
            let send = |f: Frame| out.send(Out::Frame(f));
            match frame {
                Frame::SynStream {
                    stream,
                    fin,
                    headers,
                    ..
                } => {
                    if stream % 2 == 0 || streams.contains_key(&stream) {
                        let _ = send(Frame::RstStream {
                            stream,
                            status: rst::PROTOCOL_ERROR,
                        })
                        .await;
                        continue;
                    }
                    if going_away || incoming.is_closed() {
                        let _ = send(Frame::RstStream {
                            stream,
                            status: rst::REFUSED_STREAM,
                        })
                        .await;
                        continue;
                    }
                    last_stream.fetch_max(stream as usize, Ordering::Relaxed);
                    if send(Frame::SynReply {
                        stream,
                        fin: false,
                        headers: vec![],
                    })
                    .await
                    .is_err()
                    {
                        break 'read;
                    }
                    let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
                    let (pump_rd, mut inbound) = tokio::io::split(ours);
                    if fin {
                        let _ = inbound.shutdown().await;
                    }
                    let (cancel, cancelled) = oneshot::channel();
                    pumps.live.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(pump(stream, pump_rd, out.clone(), cancelled, pumps.clone()));
                    streams.insert(
                        stream,
                        Entry {
                            inbound: (!fin).then_some(inbound),
                            cancel: Some(cancel),
                        },
                    );
                    let s = Stream {
                        id: stream,
                        headers,
                        io: theirs,
                    };
                    if incoming.send(s).await.is_err() {
                        let _ = send(Frame::RstStream {
                            stream,
                            status: rst::REFUSED_STREAM,
                        })
                        .await;
                    }
                }
                Frame::Data { stream, fin, data } => {
                    let Some(e) = streams.get_mut(&stream) else {
                        continue;
                    };
                    if let Some(w) = e.inbound.as_mut() {
                        if !data.is_empty() && w.write_all(&data).await.is_err() {
                            // The stream's reader is gone: nothing more goes there.
                            e.inbound = None;
                        }
                    }
                    if fin {
                        if let Some(mut w) = e.inbound.take() {
                            let _ = w.shutdown().await;
                        }
                        // Both ways ended (its pump is gone too): forget it.
                        if e.cancel.as_ref().is_none_or(|c| c.is_closed()) {
                            streams.remove(&stream);
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    if let Some(mut e) = streams.remove(&stream) {
                        if let Some(c) = e.cancel.take() {
                            let _ = c.send(());
                        }
                    }
                }
                Frame::Ping { id } => {
                    // The client's pings have odd IDs; a server's own would be even.
                    if id % 2 == 1 {
                        let _ = send(Frame::Ping { id }).await;
                    }
                }
                Frame::GoAway { .. } => going_away = true,
                Frame::Headers { stream, fin, .. } if fin => {
                    if let Some(e) = streams.get_mut(&stream) {
                        if let Some(mut w) = e.inbound.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                }
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Ignored { .. } => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The connection is gone: every stream ends both ways.
    for (_, mut e) in streams.drain() {
        if let Some(c) = e.cancel.take() {
            let _ = c.send(());
        }
    }
}

/// Sends what is written to one stream as data frames, then FIN; stops at a reset.
async fn pump(
    stream: u32,
    mut rd: tokio::io::ReadHalf<DuplexStream>,
    out: mpsc::Sender<Out>,
    mut cancelled: oneshot::Receiver<()>,
    pumps: Arc<Pumps>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            _ = &mut cancelled => break,
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = out.send(Out::Frame(Frame::Data { stream, fin: true, data: Bytes::new() })).await;
                    break;
                }
                Ok(n) => {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    if out.send(Out::Frame(Frame::Data { stream, fin: false, data })).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    if pumps.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        pumps.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client end: frames written and read through the codec.
    struct Client {
        io: DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let mut b = BytesMut::new();
            self.enc.encode(&f, &mut b).expect("encodes");
            self.io.write_all(&b).await.expect("writes");
        }
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).expect("decodes") {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.expect("reads") == 0 {
                    return None;
                }
            }
        }
        async fn open(&mut self, stream: u32, kind: &str, fin: bool) {
            self.send(Frame::SynStream {
                stream,
                associated: 0,
                priority: 0,
                fin,
                unidirectional: false,
                headers: vec![("streamType".into(), kind.into())],
            })
            .await;
        }
    }

    fn pair() -> (Client, Session) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let client = Client {
            io: a,
            enc: Encoder::default(),
            dec: Decoder::default(),
            buf: BytesMut::new(),
        };
        (client, Session::serve(b))
    }

    #[tokio::test]
    async fn streams_are_replied_and_carry_data_both_ways() {
        let (mut c, mut s) = pair();
        c.open(1, "data", false).await;
        let mut st = s.accept().await.expect("a stream");
        assert_eq!((st.id, st.header("StreamType")), (1, Some("data")));
        assert!(matches!(
            c.recv().await,
            Some(Frame::SynReply { stream: 1, .. })
        ));
        c.send(Frame::Data {
            stream: 1,
            fin: true,
            data: Bytes::from_static(b"ping"),
        })
        .await;
        let mut got = String::new();
        st.io.read_to_string(&mut got).await.expect("reads");
        assert_eq!(got, "ping");
        st.io.write_all(b"pong").await.expect("writes");
        st.io.shutdown().await.expect("shuts down");
        assert_eq!(
            c.recv().await,
            Some(Frame::Data {
                stream: 1,
                fin: false,
                data: Bytes::from_static(b"pong")
            })
        );
        assert_eq!(
            c.recv().await,
            Some(Frame::Data {
                stream: 1,
                fin: true,
                data: Bytes::new()
            })
        );
        // Pings are answered.
        c.send(Frame::Ping { id: 7 }).await;
        assert_eq!(c.recv().await, Some(Frame::Ping { id: 7 }));
        // Closing: GOAWAY naming the last stream; once the client has closed its side,
        // the end of the connection.
        let closing = tokio::spawn(s.close());
        assert_eq!(
            c.recv().await,
            Some(Frame::GoAway {
                last_good: 1,
                status: 0
            })
        );
        c.io.shutdown().await.expect("client closes");
        assert_eq!(c.recv().await, None);
        closing.await.expect("closes");
    }

    #[tokio::test]
    async fn a_reset_ends_the_stream_and_bad_ids_are_refused() {
        let (mut c, mut s) = pair();
        c.open(3, "error", false).await;
        let mut st = s.accept().await.expect("a stream");
        assert!(matches!(
            c.recv().await,
            Some(Frame::SynReply { stream: 3, .. })
        ));
        c.send(Frame::RstStream {
            stream: 3,
            status: rst::CANCEL,
        })
        .await;
        let mut rest = Vec::new();
        st.io
            .read_to_end(&mut rest)
            .await
            .expect("EOF after a reset");
        assert!(rest.is_empty());
        // Even IDs are the server's own: a client may not open them; nor reuse one.
        c.open(4, "data", false).await;
        assert_eq!(
            c.recv().await,
            Some(Frame::RstStream {
                stream: 4,
                status: rst::PROTOCOL_ERROR
            })
        );
        c.open(5, "data", true).await;
        let mut st5 = s.accept().await.expect("stream 5");
        assert!(matches!(
            c.recv().await,
            Some(Frame::SynReply { stream: 5, .. })
        ));
        c.open(5, "data", false).await;
        assert_eq!(
            c.recv().await,
            Some(Frame::RstStream {
                stream: 5,
                status: rst::PROTOCOL_ERROR
            })
        );
        // A SYN_STREAM with FIN: nothing to read.
        let mut none = Vec::new();
        st5.io.read_to_end(&mut none).await.expect("reads");
        assert!(none.is_empty());
        // The client goes: accept ends.
        drop(c);
        assert!(s.accept().await.is_none());
    }
}
