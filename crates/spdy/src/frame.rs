//! SPDY/3 frames on the wire (draft-mbelshe-httpbis-spdy-00, which SPDY/3.1 only extends
//! with session flow control that Kubernetes' spdystream never uses): the 8-byte frame
//! header, the control frames a server meets, and name/value header blocks compressed by
//! one zlib stream per direction that starts from the SPDY/3 dictionary. No IO here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The zlib preset dictionary of SPDY/3 header blocks (section 2.6.10.1 of the draft).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");
/// The largest frame payload the 24-bit length field can carry.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The largest decompressed header block accepted (a bound against zlib bombs).
const MAX_HEADERS: usize = 256 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes used here.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
}

/// Name/value pairs of a header block; names are lower case on the wire.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive), the first if there are several.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(v.as_str()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// SETTINGS and frame types this server has no use for (they are skipped).
    Ignored {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unsupported SPDY version {0} (this server speaks 3)")]
    Version(u16),
    #[error("malformed {kind} frame: {why}")]
    Malformed { kind: &'static str, why: String },
    #[error("header block: {0}")]
    Headers(String),
    #[error("frame payload of {0} bytes exceeds the 24-bit length")]
    TooLarge(usize),
}

fn malformed(kind: &'static str, why: impl Into<String>) -> Error {
    Error::Malformed {
        kind,
        why: why.into(),
    }
}

/// Reads frames out of received bytes; holds the peer's header decompression context.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// Takes one whole frame from the front of `buf`, or `None` until one has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let mut head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let fin = flags & FLAG_FIN != 0;
        let need = |name: &'static str, n: usize, body: &Bytes| {
            if body.len() < n {
                Err(malformed(
                    name,
                    format!("{} bytes, at least {n} expected", body.len()),
                ))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10, &body)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                let associated = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                let _slot = body.get_u8();
                Frame::SynStream {
                    stream,
                    associated,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers(&body)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need("SYN_REPLY", 4, &body)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need("RST_STREAM", 8, &body)?;
                Frame::RstStream {
                    stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            PING => {
                need("PING", 4, &body)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need("GOAWAY", 4, &body)?;
                let last_good = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8, &body)?;
                Frame::WindowUpdate {
                    stream: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Ignored { kind: other },
        }))
    }

    /// Inflates one compressed header block (the stream continues across blocks) and
    /// parses its name/value pairs.
    fn headers(&mut self, mut input: &[u8]) -> Result<Headers, Error> {
        let mut out = Vec::with_capacity(256);
        let mut chunk = [0u8; 4096];
        while !input.is_empty() {
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let r = self
                .inflate
                .decompress(input, &mut chunk, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = (self.inflate.total_out() - before_out) as usize;
            input = &input[used..];
            out.extend_from_slice(&chunk[..made]);
            if out.len() > MAX_HEADERS {
                return Err(Error::Headers(format!("larger than {MAX_HEADERS} bytes")));
            }
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) if used == 0 && made == 0 => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| Error::Headers(format!("dictionary: {e}")))?;
                }
                Err(e) => return Err(Error::Headers(e.to_string())),
            }
        }
        // Whatever the last call left buffered inside zlib.
        loop {
            let before_out = self.inflate.total_out();
            let r = self
                .inflate
                .decompress(&[], &mut chunk, FlushDecompress::Sync);
            let made = (self.inflate.total_out() - before_out) as usize;
            out.extend_from_slice(&chunk[..made]);
            if made == 0 || r.is_err() {
                break;
            }
        }
        parse_block(&out)
    }
}

fn parse_block(mut b: &[u8]) -> Result<Headers, Error> {
    let bad = |why: &str| Error::Headers(why.to_string());
    if b.len() < 4 {
        return Err(bad("shorter than its pair count"));
    }
    let n = b.get_u32() as usize;
    let mut out = Vec::with_capacity(n.min(64));
    let string = |b: &mut &[u8]| -> Result<String, Error> {
        if b.len() < 4 {
            return Err(bad("truncated length"));
        }
        let len = b.get_u32() as usize;
        if b.len() < len {
            return Err(bad("truncated string"));
        }
        let s = String::from_utf8_lossy(&b[..len]).into_owned();
        b.advance(len);
        Ok(s)
    };
    for _ in 0..n {
        let name = string(&mut b)?;
        let value = string(&mut b)?;
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// Writes frames; holds this side's header compression context.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh zlib stream accepts a preset dictionary; nothing can fail here.
        let _ = deflate.set_dictionary(DICTIONARY);
        Encoder { deflate }
    }
}

impl Encoder {
    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Error> {
        match frame {
            Frame::Data { stream, fin, data } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(Error::TooLarge(data.len()));
                }
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u8(if *fin { FLAG_FIN } else { 0 });
                put_u24(out, data.len());
                out.put_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream,
                associated,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.block(headers)?;
                let mut flags = if *fin { FLAG_FIN } else { 0 };
                if *unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                control(out, SYN_STREAM, flags, 10 + block.len())?;
                out.put_u32(*stream);
                out.put_u32(*associated);
                out.put_u8(priority << 5);
                out.put_u8(0);
                out.put_slice(&block);
                Ok(())
            }
            Frame::SynReply {
                stream,
                fin,
                headers,
            }
            | Frame::Headers {
                stream,
                fin,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.block(headers)?;
                control(out, kind, if *fin { FLAG_FIN } else { 0 }, 4 + block.len())?;
                out.put_u32(*stream);
                out.put_slice(&block);
                Ok(())
            }
            Frame::RstStream { stream, status } => {
                control(out, RST_STREAM, 0, 8)?;
                out.put_u32(*stream);
                out.put_u32(*status);
                Ok(())
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4)?;
                out.put_u32(*id);
                Ok(())
            }
            Frame::GoAway { last_good, status } => {
                control(out, GOAWAY, 0, 8)?;
                out.put_u32(*last_good);
                out.put_u32(*status);
                Ok(())
            }
            Frame::WindowUpdate { stream, delta } => {
                control(out, WINDOW_UPDATE, 0, 8)?;
                out.put_u32(*stream);
                out.put_u32(*delta);
                Ok(())
            }
            Frame::Ignored { kind } => {
                control(out, *kind, 0, if *kind == SETTINGS { 4 } else { 0 })?;
                if *kind == SETTINGS {
                    out.put_u32(0);
                }
                Ok(())
            }
        }
    }

    /// One header block, compressed and sync-flushed so the peer can read it whole.
    fn block(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut plain = BytesMut::new();
        plain.put_u32(headers.len() as u32);
        for (n, v) in headers {
            let n = n.to_ascii_lowercase();
            plain.put_u32(n.len() as u32);
            plain.put_slice(n.as_bytes());
            plain.put_u32(v.len() as u32);
            plain.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input: &[u8] = &plain;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Headers(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done once all input is in and zlib left spare room (its flush is complete).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) -> Result<(), Error> {
    if len > MAX_PAYLOAD {
        return Err(Error::TooLarge(len));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    put_u24(out, len);
    Ok(())
}

fn put_u24(out: &mut BytesMut, n: usize) {
    out.put_u8((n >> 16) as u8);
    out.put_u8((n >> 8) as u8);
    out.put_u8(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Encodes `frames` with one encoder, decodes them with one decoder, in order.
    fn check(frames: &[Frame]) {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let mut wire = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut wire).expect("encodes");
        }
        // Fed a byte at a time, so that partial frames wait for the rest.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).expect("decodes") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_round_trip() {
        check(&[
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 7,
                fin: true,
                unidirectional: false,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream: 5,
                status: rst::CANCEL,
            },
            Frame::Ping { id: 1 },
            Frame::WindowUpdate {
                stream: 3,
                delta: 65536,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ]);
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let hs = h(&[("streamtype", "data"), ("port", "80\08081")]);
        assert_eq!(header(&hs, "streamType"), Some("data"));
        assert_eq!(header(&hs, "Port"), Some("80"));
        assert_eq!(header(&hs, "requestID"), None);
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // Its length and Adler-32 (the DICTID a SPDY/3 peer's zlib stream names).
        assert_eq!(DICTIONARY.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in DICTIONARY {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut dec = Decoder::default();
        // A control frame of version 2.
        let mut buf = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(dec.decode(&mut buf), Err(Error::Version(2)));
        // A PING with a 2-byte body.
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 2, 0, 1][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(Error::Malformed { kind: "PING", .. })
        ));
        // A SYN_STREAM whose header block is not zlib.
        let mut buf = BytesMut::from(
            &[
                0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
            ][..],
        );
        assert!(matches!(dec.decode(&mut buf), Err(Error::Headers(_))));
        // Too much data for one frame.
        let mut out = BytesMut::new();
        let data = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
        assert_eq!(
            Encoder::default().encode(
                &Frame::Data {
                    stream: 1,
                    fin: false,
                    data
                },
                &mut out
            ),
            Err(Error::TooLarge(MAX_PAYLOAD + 1))
        );
    }
}
