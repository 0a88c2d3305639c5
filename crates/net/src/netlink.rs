//! A blocking rtnetlink socket: send one request, read its replies until the
//! acknowledgement (or the end of a dump). No runtime, no background task: a request costs
//! one `sendto` and one or a few `recv`s.

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use crate::{Error, Result};

/// Large enough for one datagram of a dump (the kernel fills at most 32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// `NLMSGERR_ATTR_MSG`: the extended acknowledgement's message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One rtnetlink socket, bound to the namespace it was opened in.
pub(crate) struct Conn {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    tx: Vec<u8>,
    /// The namespace, for error messages.
    pub netns: String,
}

impl Conn {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open(netns: String) -> Result<Conn> {
        let sock_err = |op: &'static str, netns: &str| {
            let netns = netns.to_string();
            move |source| Error::Socket { netns, op, source }
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("open", &netns))?;
        socket.bind_auto().map_err(sock_err("bind", &netns))?;
        // Errors carry the kernel's explanation; acknowledgements only the header.
        socket
            .set_ext_ack(true)
            .map_err(sock_err("set ext ack", &netns))?;
        socket
            .set_cap_ack(true)
            .map_err(sock_err("set cap ack", &netns))?;
        Ok(Conn {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
            tx: Vec::with_capacity(1024),
            netns,
        })
    }

    /// Sends a request that is acknowledged (create, change, delete, or a get of one
    /// object) and returns the messages that came before the acknowledgement.
    pub fn request(
        &mut self,
        op: &'static str,
        object: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(op, object, msg, NLM_F_REQUEST | NLM_F_ACK | flags)
    }

    /// Sends a dump request and returns every message of the dump.
    pub fn dump(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(op, "", msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn exchange(
        &mut self,
        op: &'static str,
        object: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        self.tx.clear();
        self.tx.resize(req.buffer_len(), 0);
        req.serialize(&mut self.tx);
        let kernel = SocketAddr::new(0, 0);
        self.socket
            .send_to(&self.tx, &kernel, 0)
            .map_err(|source| Error::Socket {
                netns: self.netns.clone(),
                op: "send",
                source,
            })?;

        let mut out = Vec::new();
        loop {
            self.buf.clear();
            let n = self
                .socket
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|source| Error::Socket {
                    netns: self.netns.clone(),
                    op: "recv",
                    source,
                })?;
            if n > self.buf.len() {
                return Err(self.decode_err(op, format!("datagram of {n} bytes truncated")));
            }
            let mut off = 0;
            while off < n {
                let data = &self.buf[off..n];
                let nb = NetlinkBuffer::new_checked(data)
                    .map_err(|e| self.decode_err(op, e.to_string()))?;
                let len = nb.length() as usize;
                let msg_seq = nb.sequence_number();
                let outer_flags = nb.flags();
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len])
                    .map_err(|e| self.decode_err(op, e.to_string()))?;
                off += (len + 3) & !3;
                if msg_seq != seq {
                    // A late reply to an earlier request that failed halfway.
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => {
                            return Err(Error::Netlink {
                                op,
                                object: object.to_string(),
                                netns: self.netns.clone(),
                                errno: Errno::from_raw(-code.get()),
                                ext: ext_ack_msg(outer_flags, &e.header),
                            })
                        }
                    },
                    NetlinkPayload::Done(d) => {
                        if d.code == 0 {
                            return Ok(out);
                        }
                        return Err(Error::Netlink {
                            op,
                            object: object.to_string(),
                            netns: self.netns.clone(),
                            errno: Errno::from_raw(-d.code),
                            ext: None,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn decode_err(&self, op: &'static str, msg: String) -> Error {
        Error::Decode {
            op,
            netns: self.netns.clone(),
            msg,
        }
    }
}

/// The message of an extended acknowledgement: after the error code come the request's
/// header (only the header when capped) and then attributes.
fn ext_ack_msg(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let mut tlvs = payload.get(skip..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let value = &tlvs[4..len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_message_is_found_after_the_capped_header() {
        let mut payload = vec![0u8; 16];
        let msg = b"Nexthop has invalid gateway\0";
        let len = (4 + msg.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(msg);
        assert_eq!(
            ext_ack_msg(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(ext_ack_msg(NLM_F_CAPPED, &payload), None);
    }
}
