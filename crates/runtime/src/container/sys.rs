//! The few system calls the launcher needs that have no safe wrapper: fork, signal
//! dispositions, capability sets, close_range and pidfd_open. The only module of the
//! crate allowed `unsafe`.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, Pid};

/// fork(2). Callers must be single-threaded: the shim is (it runs no async runtime and
/// starts no thread), so the child may allocate and take locks freely.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the shim process is single-threaded (see above), so no lock can be held by
    // another thread at the time of the fork and the child may run arbitrary Rust code.
    unsafe { nix::unistd::fork() }
}

/// Sets the disposition of `sig` to ignore or default.
pub fn set_ignored(sig: Signal, ignored: bool) -> nix::Result<()> {
    let handler = if ignored {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN and SIG_DFL install no Rust handler, so no code runs in signal
    // context.
    unsafe { nix::sys::signal::signal(sig, handler) }.map(|_| ())
}

/// Resets every catchable signal to its default disposition and unblocks all signals, as
/// a fresh process expects (ignored dispositions survive execve; Rust ignores SIGPIPE).
pub fn reset_signals() -> nix::Result<()> {
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        set_ignored(sig, false)?;
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// capset(2) of the calling thread: effective and permitted `set`, inheritable `inh`.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> nix::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| [v as u32, (v >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: header and data are valid repr(C) structures of the layout capset(2) expects
    // for version 3 (two data elements), alive for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(r).map(|_| ())
}

/// Whether `cap` is in the calling thread's bounding set (false for unknown caps).
pub fn capbset_has(cap: u32) -> bool {
    // SAFETY: PR_CAPBSET_READ takes an integer argument and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    r == 1
}

/// Drops `cap` from the bounding set.
pub fn capbset_drop(cap: u32) -> nix::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes an integer argument and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    Errno::result(r).map(|_| ())
}

/// Empties the ambient set.
pub fn ambient_clear() -> nix::Result<()> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments and touches no memory.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Errno::result(r).map(|_| ())
}

/// Marks every descriptor from `first` on close-on-exec (close_range(2) with
/// CLOSE_RANGE_CLOEXEC), so that they stay usable until execve.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags; no
    // memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(r).map(|_| ())
}

/// A pidfd for a child: readable when it exits.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(r)?;
    // SAFETY: a successful pidfd_open returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// _exit(2): ends a forked child without running the parent's exit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process immediately; nothing of the forked copy of the
    // parent's state is flushed or dropped, which is the point.
    unsafe { libc::_exit(code) }
}

/// Writes all of `buf` to a pipe (retrying on EINTR).
pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a pipe until its end (or an error); what came so far.
pub fn read_to_end(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(_) => return out,
        }
    }
}

/// setsid(2), then makes the terminal on descriptor 0 the controlling terminal of the new
/// session (ioctl TIOCSCTTY), as a shell started on a terminal expects.
pub fn take_controlling_tty() -> nix::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and touches no memory.
    let r = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    Errno::result(r).map(|_| ())
}

/// Sets a terminal's window size (ioctl TIOCSWINSZ).
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, cols: u16, rows: u16) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `ws` is a valid winsize alive for the call; TIOCSWINSZ only reads it.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    Errno::result(r).map(|_| ())
}
