//! `kubectl exec`: the command runs under `kins exec` (a single-threaded helper that joins
//! the container's cgroup and namespaces and takes its user, capabilities and
//! environment), never in the agent's own context. Without a terminal its stdin, stdout
//! and stderr are pipes to the session's streams; with one, a pseudo-terminal whose master
//! the agent keeps (resizes go to it).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use super::protocol::{ExecOptions, Outcome};

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The client's side of one exec or attach, whatever the transport.
pub struct Session {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Resolves when the client is gone.
    pub gone: tokio::sync::watch::Receiver<bool>,
}

/// What a streaming session is joined to.
#[derive(Debug, Clone)]
pub enum Verb {
    /// A new command in the container (`kins exec`).
    Exec { kins_exe: PathBuf },
    /// The container's own process (its shim's attach socket).
    Attach,
}

/// Runs the session's verb against the container whose shim state is `state_dir`.
pub async fn serve(verb: &Verb, state_dir: &Path, opts: &ExecOptions, session: Session) -> Outcome {
    match verb {
        Verb::Exec { kins_exe } => run(kins_exe, state_dir, opts, session).await,
        Verb::Attach => super::attach::run(state_dir, opts, session).await,
    }
}

/// Copies `from` into `to` until EOF, then shuts `to` down.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = to.flush().await;
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Runs `opts.command` in the container whose shim state is `state_dir`, wiring it to
/// `session`; returns how it ended (the caller writes it on the error channel).
pub async fn run(
    kins_exe: &Path,
    state_dir: &Path,
    opts: &ExecOptions,
    mut session: Session,
) -> Outcome {
    if opts.command.is_empty() {
        return Outcome::Failed("you must specify at least one command for the container".into());
    }
    let error_file = tempfile_path(state_dir);
    let mut cmd = tokio::process::Command::new(kins_exe);
    cmd.arg("exec").arg("--state-dir").arg(state_dir);
    cmd.arg("--error-file").arg(&error_file);
    if opts.tty {
        cmd.arg("--tty");
    }
    cmd.arg("--").args(&opts.command).kill_on_drop(true);
    let mut pumps = Vec::new();
    let mut stdin_pump = None;
    let mut master_fd: Option<OwnedFd> = None;
    if opts.tty {
        let (master, slave) = match runtime::container::pty::open() {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e),
        };
        let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        match (dup(&slave), dup(&slave)) {
            (Ok(a), Ok(b)) => {
                cmd.stdin(Stdio::from(slave)).stdout(a).stderr(b);
            }
            (Err(e), _) | (_, Err(e)) => {
                return Outcome::Failed(format!("duplicating the terminal: {e}"))
            }
        }
        master_fd = Some(master);
    } else {
        let pipe_if = |b: bool| if b { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe_if(session.stdin.is_some()))
            .stdout(pipe_if(session.stdout.is_some()))
            .stderr(pipe_if(session.stderr.is_some()));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed(format!("running {}: {e}", kins_exe.display()));
        }
    };
    // The terminal's slave ends are the child's now; drop ours (cmd holds them).
    drop(cmd);
    if let Some(master) = master_fd {
        let file = |fd: &OwnedFd| fd.try_clone().map(|f| tokio::fs::File::from_std(f.into()));
        if let (Some(stdin), Ok(w)) = (session.stdin.take(), file(&master)) {
            stdin_pump = Some(tokio::spawn(pump(stdin, w)));
        }
        if let (Some(stdout), Ok(r)) = (session.stdout.take(), file(&master)) {
            pumps.push(tokio::spawn(pump(PtyReader(r), stdout)));
        }
        if let Some(mut sizes) = session.resize.take() {
            tokio::spawn(async move {
                while let Some((cols, rows)) = sizes.recv().await {
                    let _ = runtime::container::pty::resize(master.as_fd(), cols, rows);
                }
            });
        }
    } else {
        if let (Some(from), Some(to)) = (session.stdin.take(), child.stdin.take()) {
            stdin_pump = Some(tokio::spawn(pump(from, to)));
        }
        if let (Some(from), Some(to)) = (child.stdout.take(), session.stdout.take()) {
            pumps.push(tokio::spawn(pump(from, to)));
        }
        if let (Some(from), Some(to)) = (child.stderr.take(), session.stderr.take()) {
            pumps.push(tokio::spawn(pump(from, to)));
        }
    }
    let mut gone = session.gone.clone();
    let status = tokio::select! {
        s = child.wait() => s,
        _ = async { let _ = gone.wait_for(|g| *g).await; } => {
            // The client went away: the command goes with it.
            let _ = child.kill().await;
            child.wait().await
        }
    };
    // A terminal's output is drained once the command's side is closed (EIO); a pipe's
    // at EOF.
    // (A background process that keeps the output open is not waited for long.)
    let drained = futures::future::join_all(pumps);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
    // The client's stdin has nowhere to go now: its stream ends (so the session can).
    if let Some(p) = stdin_pump {
        p.abort();
    }
    let outcome = match status {
        Err(e) => Outcome::Failed(format!("waiting for the command: {e}")),
        Ok(s) => {
            let failed = std::fs::read_to_string(&error_file).ok();
            match failed {
                Some(message) if !message.is_empty() => {
                    Outcome::Failed(format!("error executing command in container: {message}"))
                }
                _ => Outcome::Exited(exit_code(s)),
            }
        }
    };
    let _ = std::fs::remove_file(&error_file);
    outcome
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// A fresh file name beside the container's state for `kins exec --error-file`.
fn tempfile_path(state_dir: &Path) -> PathBuf {
    state_dir.join(format!(".exec-{}.err", uuid::Uuid::new_v4().simple()))
}

/// The terminal's master for reading: EIO (every slave end closed, the command ended)
/// is the end of output. Blocking reads run on tokio's blocking pool (a terminal cannot
/// be registered with the reactor without unsafe code).
struct PtyReader(tokio::fs::File);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
