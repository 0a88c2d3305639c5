//! `kubectl attach`: the shim listens on a unix socket `attach` in the container's state
//! directory and joins every client that connects to the container's stdin (a pipe, or the
//! terminal's master with `tty: true`) and output (copied to every client as well as to
//! the CRI log). The agent is the only client; it speaks the streaming protocols.
//!
//! The wire format, both ways: frames of `[kind: u8][length: u32 big-endian][payload]`.
//! - client → shim: `HELLO` (one payload byte, bit 0: the client brings stdin), `STDIN`
//!   (bytes for the container), `STDIN_EOF` (the client's stdin ended), `RESIZE`
//!   (columns and rows, u16 big-endian each).
//! - shim → client: `STDOUT` and `STDERR` (output; with a terminal all of it is `STDOUT`).
//!   The shim closes the connection once the container exited and its output is drained.
//!
//! `stdinOnce: true` closes the container's stdin when the first client that brought
//! stdin detaches or ends its stdin (a pipe is closed, so the command reads EOF; a
//! terminal gets its end-of-file character, ^D). Without it the stdin stays open for the
//! next attach. Output while nobody is attached is only logged, as with the kubelet.
//!
//! State directories are longer than a socket address allows (108 bytes), so both ends
//! name the socket through the directory's descriptor: `/proc/self/fd/N/attach`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::poll::PollFlags;

/// The socket's name in the state directory.
pub const SOCKET: &str = "attach";

/// Client → shim.
pub const HELLO: u8 = 0;
pub const STDIN: u8 = 1;
pub const STDIN_EOF: u8 = 2;
pub const RESIZE: u8 = 3;
/// Shim → client.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// The largest payload accepted.
pub const MAX_FRAME: usize = 1 << 20;
/// Output kept for a client that does not read it; beyond, the client is dropped (the
/// container must never wait for an attached terminal).
pub const MAX_BACKLOG: usize = 8 << 20;
/// The terminal's end-of-file character (VEOF, ^D).
const EOT: u8 = 0x04;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("attach frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
}

/// One frame on the wire.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A `RESIZE` frame.
pub fn resize(cols: u16, rows: u16) -> Vec<u8> {
    let mut p = cols.to_be_bytes().to_vec();
    p.extend_from_slice(&rows.to_be_bytes());
    encode(RESIZE, &p)
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// The socket's address through an open descriptor of the state directory.
pub fn socket_path(dir: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd()))
}

/// Opens the state directory for [`socket_path`].
pub fn open_dir(state_dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(state_dir)
}

/// Binds the socket in `state_dir` (owner-only).
pub fn listen(state_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let dir = open_dir(state_dir)?;
    let path = socket_path(dir.as_fd());
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(
        state_dir.join(SOCKET),
        std::fs::Permissions::from_mode(0o600),
    )?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// What a descriptor returned by [`Hub::interest`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Listener,
    Client(usize),
    Stdin,
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    /// Said in its HELLO that it brings stdin.
    stdin: bool,
}

/// The container's side of the container's stdin.
pub struct Stdin {
    /// The pipe's write end, or (a duplicate of) the terminal's master.
    pub fd: OwnedFd,
    pub tty: bool,
    pub once: bool,
}

/// The shim's attach server: a listener, its clients and the container's stdin.
pub struct Hub {
    listener: UnixListener,
    socket: PathBuf,
    clients: Vec<Client>,
    stdin: Option<OwnedFd>,
    tty: bool,
    once: bool,
    /// stdin bytes accepted but not written yet (clients are not read meanwhile).
    pending: Vec<u8>,
    /// Close the pipe once `pending` is written.
    close_after: bool,
    /// The terminal's master, for window sizes.
    master: Option<OwnedFd>,
}

impl Hub {
    /// `socket` is the listener's path, removed by [`Hub::finish`].
    pub fn new(
        listener: UnixListener,
        socket: PathBuf,
        stdin: Option<Stdin>,
        master: Option<OwnedFd>,
    ) -> Hub {
        let (fd, tty, once) = match stdin {
            Some(s) => {
                let _ = set_nonblocking(s.fd.as_fd());
                (Some(s.fd), s.tty, s.once)
            }
            None => (None, false, false),
        };
        Hub {
            listener,
            socket,
            clients: Vec::new(),
            stdin: fd,
            tty,
            once,
            pending: Vec::new(),
            close_after: false,
            master,
        }
    }

    /// Number of attached clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The descriptors to poll and for what.
    pub fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Token)> {
        let mut v = vec![(self.listener.as_fd(), PollFlags::POLLIN, Token::Listener)];
        let reading = self.pending.is_empty();
        for (i, c) in self.clients.iter().enumerate() {
            let mut f = PollFlags::empty();
            if reading {
                f |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            // An empty set still reports hang-ups.
            v.push((c.stream.as_fd(), f, Token::Client(i)));
        }
        if let (Some(fd), false) = (&self.stdin, self.pending.is_empty()) {
            v.push((fd.as_fd(), PollFlags::POLLOUT, Token::Stdin));
        }
        v
    }

    /// Handles the readiness of the descriptors returned by the last `interest` (the
    /// tokens in that order).
    pub fn ready(&mut self, events: &[(Token, PollFlags)]) {
        let mut gone = Vec::new();
        for (token, ev) in events {
            match token {
                Token::Listener => self.accept(),
                Token::Stdin => self.write_stdin(),
                Token::Client(i) => {
                    if !self.client_ready(*i, *ev) {
                        gone.push(*i);
                    }
                }
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            let c = self.clients.remove(i);
            if c.stdin {
                self.client_stdin_ended();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream,
                            decoder: Decoder::default(),
                            out: Vec::new(),
                            stdin: false,
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads and writes what client `i` is ready for; false: it is gone.
    fn client_ready(&mut self, i: usize, ev: PollFlags) -> bool {
        if ev.contains(PollFlags::POLLOUT) && !flush(&mut self.clients[i]) {
            return false;
        }
        if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let mut buf = [0u8; 16 * 1024];
            match self.clients[i].stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.clients[i].decoder.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            loop {
                match self.clients[i].decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some((kind, payload))) => self.frame(i, kind, &payload),
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping an attach client");
                        return false;
                    }
                }
            }
        }
        true
    }

    fn frame(&mut self, i: usize, kind: u8, payload: &[u8]) {
        match kind {
            HELLO => self.clients[i].stdin = payload.first().is_some_and(|f| f & 1 != 0),
            STDIN if self.stdin.is_some() && !self.close_after => {
                self.pending.extend_from_slice(payload);
                self.write_stdin();
            }
            STDIN_EOF if self.clients[i].stdin => {
                self.clients[i].stdin = false;
                self.client_stdin_ended();
            }
            RESIZE if payload.len() == 4 => {
                if let Some(m) = &self.master {
                    let cols = u16::from_be_bytes([payload[0], payload[1]]);
                    let rows = u16::from_be_bytes([payload[2], payload[3]]);
                    let _ = super::pty::resize(m.as_fd(), cols, rows);
                }
            }
            _ => {}
        }
    }

    /// A client's stdin ended: with stdinOnce the container's stdin ends too.
    fn client_stdin_ended(&mut self) {
        if !self.once || self.stdin.is_none() || self.close_after {
            return;
        }
        if self.tty {
            self.pending.push(EOT);
        }
        self.close_after = true;
        self.write_stdin();
    }

    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    // The container closed its stdin or exited.
                    self.pending.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.close_after && !self.tty {
            self.stdin = None;
        }
    }

    /// Copies output to every client.
    pub fn output(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let frame = encode(kind, data);
        self.clients.retain_mut(|c| {
            c.out.extend_from_slice(&frame);
            if !flush(c) {
                return false;
            }
            if c.out.len() > MAX_BACKLOG {
                tracing::warn!("an attach client does not read its output: dropped");
                return false;
            }
            true
        });
    }

    /// The container is gone: stops listening, gives clients up to `grace` to take the
    /// output still queued for them, then closes them.
    pub fn finish(mut self, grace: std::time::Duration) {
        let _ = std::fs::remove_file(&self.socket);
        let deadline = std::time::Instant::now() + grace;
        for c in &mut self.clients {
            let _ = c.stream.set_nonblocking(false);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = c.stream.set_write_timeout(Some(left));
            let _ = c.stream.write_all(&c.out);
        }
    }
}

/// Writes what is queued for `c`; false: the client is gone.
fn flush(c: &mut Client) -> bool {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = encode(STDIN, b"hello");
        wire.extend(resize(100, 30));
        wire.extend(encode(STDIN_EOF, b""));
        let mut d = Decoder::default();
        for b in &wire {
            d.push(std::slice::from_ref(b));
        }
        assert_eq!(d.next_frame(), Ok(Some((STDIN, b"hello".to_vec()))));
        assert_eq!(d.next_frame(), Ok(Some((RESIZE, vec![0, 100, 0, 30]))));
        assert_eq!(d.next_frame(), Ok(Some((STDIN_EOF, vec![]))));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[STDIN, 0xff, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
    }

    /// Polls the hub once (what the shim's loop does with its descriptors).
    fn step(hub: &mut Hub) {
        let interest = hub.interest();
        let mut fds: Vec<nix::poll::PollFd> = interest
            .iter()
            .map(|(fd, f, _)| nix::poll::PollFd::new(*fd, *f))
            .collect();
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)).expect("poll");
        let events: Vec<(Token, PollFlags)> = fds
            .iter()
            .zip(interest.iter())
            .filter_map(|(p, (_, _, t))| p.revents().filter(|r| !r.is_empty()).map(|r| (*t, r)))
            .collect();
        drop(fds);
        drop(interest);
        hub.ready(&events);
    }

    fn hub(once: bool) -> (tempfile::TempDir, Hub, std::fs::File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = listen(dir.path()).expect("listen");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let stdin = Stdin {
            fd: w,
            tty: false,
            once,
        };
        let h = Hub::new(listener, dir.path().join(SOCKET), Some(stdin), None);
        (dir, h, std::fs::File::from(r))
    }

    fn connect(dir: &Path, with_stdin: bool) -> UnixStream {
        let d = open_dir(dir).expect("open dir");
        let s = UnixStream::connect(socket_path(d.as_fd())).expect("connect");
        let mut s2 = s.try_clone().expect("clone");
        s2.write_all(&encode(HELLO, &[u8::from(with_stdin)]))
            .expect("hello");
        s
    }

    #[test]
    fn clients_share_stdin_and_output_and_stdin_once_closes_the_pipe() {
        let (dir, mut hub, mut container_stdin) = hub(true);
        let mut watcher = connect(dir.path(), false);
        let mut typist = connect(dir.path(), true);
        while hub.clients() < 2 {
            step(&mut hub);
        }
        typist
            .write_all(&encode(STDIN, b"echo hi\n"))
            .expect("write");
        step(&mut hub);
        step(&mut hub);
        let mut got = [0u8; 8];
        container_stdin.read_exact(&mut got).expect("read stdin");
        assert_eq!(&got, b"echo hi\n");

        hub.output(STDOUT, b"hi\n");
        for c in [&mut watcher, &mut typist] {
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut d = Decoder::default();
            let mut buf = [0u8; 64];
            let frame = loop {
                if let Some(f) = d.next_frame().expect("frame") {
                    break f;
                }
                let n = c.read(&mut buf).expect("read output");
                assert!(n > 0, "closed early");
                d.push(&buf[..n]);
            };
            assert_eq!(frame, (STDOUT, b"hi\n".to_vec()));
        }

        // The output-only client leaving does not end stdin; the typist leaving does.
        drop(watcher);
        while hub.clients() > 1 {
            step(&mut hub);
        }
        assert!(hub.stdin.is_some());
        drop(typist);
        while hub.clients() > 0 {
            step(&mut hub);
        }
        let mut rest = Vec::new();
        container_stdin.read_to_end(&mut rest).expect("EOF");
        assert!(rest.is_empty());
        hub.finish(Duration::from_millis(10));
        assert!(!dir.path().join(SOCKET).exists());
    }

    #[test]
    fn without_stdin_once_stdin_stays_open_for_the_next_client() {
        let (dir, mut hub, _r) = hub(false);
        let mut a = connect(dir.path(), true);
        while hub.clients() < 1 {
            step(&mut hub);
        }
        a.write_all(&encode(STDIN_EOF, b"")).expect("eof");
        drop(a);
        while hub.clients() > 0 {
            step(&mut hub);
        }
        assert!(hub.stdin.is_some());
    }
}
