//! `kins agnhost` as a program, on 127.0.0.1 only: serve-hostname over TCP, UDP and HTTP,
//! connect and probe against it and against a closed port, usage errors, the argv[0]
//! dispatch (`/agnhost` in the image), and SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn kins() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kins"))
}

fn agnhost(args: &[&str]) -> Output {
    Command::new(kins())
        .arg("agnhost")
        .args(args)
        .output()
        .expect("run kins agnhost")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback port free for both TCP and UDP (the kernel's choice).
fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

/// A running serve-hostname, killed on drop.
struct Server(Child);

impl Server {
    fn start(program: &Path, args: &[&str], port: u16) -> Server {
        let mut child = Command::new(program)
            .args(args)
            .args(["--port", &port.to_string(), "--bind-address", "127.0.0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start serve-hostname");
        // The line comes once the sockets listen.
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        let server = Server(child);
        assert_eq!(line, format!("Serving on port {port}.\n"));
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_hostname_tcp_udp_with_connect_and_probe() {
    let port = free_port();
    let closed = free_port();
    let _server = Server::start(
        &kins(),
        &[
            "agnhost",
            "serve-hostname",
            "--tcp",
            "--udp",
            "--http=false",
        ],
        port,
    );
    let host = hostname();
    let dest = format!("127.0.0.1:{port}");
    let shut = format!("127.0.0.1:{closed}");

    for proto in ["tcp", "udp"] {
        let out = agnhost(&[
            "connect",
            &dest,
            "--timeout=5s",
            &format!("--protocol={proto}"),
        ]);
        assert!(out.status.success(), "{proto}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "");
        let out = agnhost(&["connect", "--protocol", proto, "--timeout", "5s", &shut]);
        assert_eq!(out.status.code(), Some(1), "{proto}");
        assert_eq!(text(&out.stderr), "REFUSED\n", "{proto}");
    }
    let out = agnhost(&["connect", &dest, "--protocol=sctp"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "OTHER: sctp unsupported\n");

    // TCP: the server writes its hostname and closes; it also answers by name.
    let mut raw = String::new();
    TcpStream::connect(&dest)
        .expect("connect")
        .read_to_string(&mut raw)
        .expect("read");
    assert_eq!(raw, host);
    let targets = [
        format!("tcp:{dest}"),
        format!("udp:{dest}"),
        format!("tcp:{shut}"),
        format!("udp:{shut}"),
        format!("tcp:localhost:{port}"),
    ];
    let mut args = vec!["probe", "--timeout", "5s"];
    args.extend(targets.iter().map(String::as_str));
    let out = agnhost(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "tcp:{dest} OK {host}\nudp:{dest} OK {host}\ntcp:{shut} REFUSED\nudp:{shut} REFUSED\n\
             tcp:localhost:{port} OK {host}\n"
        )
    );

    // Many at once, each answered.
    let many: Vec<String> = (0..200)
        .map(|i| format!("{}:{dest}", if i % 2 == 0 { "tcp" } else { "udp" }))
        .collect();
    let mut args = vec!["probe", "--timeout=10s"];
    args.extend(many.iter().map(String::as_str));
    let out = agnhost(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: String = many.iter().map(|t| format!("{t} OK {host}\n")).collect();
    assert_eq!(text(&out.stdout), want);
}

#[test]
fn serve_hostname_http_answers_every_request_and_stops_on_sigterm() {
    let port = free_port();
    let mut server = Server::start(&kins(), &["agnhost", "serve-hostname"], port);
    let host = hostname();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Two requests on one connection (keep-alive), the second closing it.
    conn.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("read");
    assert_eq!(raw.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{raw}");
    assert!(raw.ends_with(&format!("\r\n\r\n{host}")), "{raw}");
    // A TCP probe of an HTTP server connects; the server sends nothing first.
    let out = agnhost(&["probe", "--timeout=1s", &format!("tcp:127.0.0.1:{port}")]);
    assert_eq!(text(&out.stdout), format!("tcp:127.0.0.1:{port} OK\n"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.0.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = server.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn run_as_agnhost_it_is_agnhost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("agnhost");
    std::os::unix::fs::symlink(kins(), &link).expect("symlink");
    let port = free_port();
    let _server = Server::start(&link, &["serve-hostname", "--udp", "--http=false"], port);
    let out = Command::new(&link)
        .args([
            "connect",
            &format!("127.0.0.1:{port}"),
            "--timeout=5s",
            "--protocol=udp",
        ])
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // No TCP listener with --udp alone.
    let out = Command::new(&link)
        .args(["connect", &format!("127.0.0.1:{port}"), "--timeout=5s"])
        .output()
        .expect("connect");
    assert_eq!(text(&out.stderr), "REFUSED\n");
    let out = Command::new(&link).output().expect("agnhost");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("agnhost: missing subcommand\nusage: agnhost"));
}

#[test]
fn usage_errors_exit_2() {
    const CASES: &[(&[&str], &str)] = &[
        (&["connect"], "connect takes one HOST:PORT, got 0 arguments"),
        (
            &["connect", "127.0.0.1"],
            "\"127.0.0.1\": missing port, want HOST:PORT",
        ),
        (
            &["connect", "127.0.0.1:1", "--protocol=icmp"],
            "unsupported protocol \"icmp\": want tcp, udp or sctp",
        ),
        (
            &["connect", "127.0.0.1:1", "--timeout=soon"],
            "invalid duration \"soon\" (want e.g. 1s, 500ms, 1m30s)",
        ),
        (
            &["serve-hostname", "--tcp"],
            "--http and --tcp cannot share a TCP port: add --http=false",
        ),
        (
            &["serve-hostname", "--port=x"],
            "invalid --port \"x\": want a port from 1 to 65535",
        ),
        (
            &["probe", "tcp:127.0.0.1"],
            "\"127.0.0.1\": missing port, want HOST:PORT",
        ),
        (&["probe"], "probe needs at least one PROTO:HOST:PORT"),
        (
            &["netexec"],
            "unknown subcommand \"netexec\" (kins' agnhost has serve-hostname, connect, probe)",
        ),
    ];
    for (args, message) in CASES {
        let out = agnhost(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("agnhost: {message}\n")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("usage: agnhost serve-hostname"),
            "{args:?}: {err}"
        );
    }
    let out = agnhost(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("usage: agnhost serve-hostname"));
}
