//! Network namespaces as files: a bind mount of a namespace's nsfs inode on a file, as
//! `ip netns` does, made without forking.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::{Error, Result};

fn netns_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Netns { path, op, source }
}

fn io_of(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Creates a new, empty network namespace (only `lo`, down) and mounts it on `path`.
///
/// `path`'s folder must exist. The namespace is made by a dedicated thread that unshares
/// its network namespace (`CLONE_NEWNET` affects only the calling thread, so this is safe
/// in a multi-threaded process), bind-mounts `/proc/thread-self/ns/net` onto the file,
/// and ends. Fails with [`Error::NetnsExists`] when a namespace is mounted there already.
pub fn create_netns(path: &Path) -> Result<()> {
    if netns_exists(path) {
        return Err(Error::NetnsExists(path.to_path_buf()));
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(netns_err(path, "create file"))?;
    let made = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("kins-netns-new".into())
            .spawn_scoped(s, || -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netns_err(path, "unshare")(io_of(e)))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| netns_err(path, "bind mount")(io_of(e)))
            })
            .map_err(netns_err(path, "spawn thread"))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Creates a pod's IPC and UTS namespaces (its containers join them) with `hostname`
/// set, mounted on `ipc` and `uts`, the way [`create_netns`] does: on a dedicated thread,
/// without forking. Existing mounts are kept (idempotent after an agent restart).
pub fn create_ipc_uts(ipc: &Path, uts: &Path, hostname: &str) -> Result<()> {
    if netns_exists(ipc) && netns_exists(uts) {
        return Ok(());
    }
    for p in [ipc, uts] {
        let _ = delete_netns(p);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map_err(netns_err(p, "create file"))?;
    }
    let made = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("kins-podns-new".into())
            .spawn_scoped(s, || -> Result<()> {
                unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
                    .map_err(|e| netns_err(uts, "unshare")(io_of(e)))?;
                nix::unistd::sethostname(hostname)
                    .map_err(|e| netns_err(uts, "sethostname")(io_of(e)))?;
                for (p, ns) in [(ipc, "ipc"), (uts, "uts")] {
                    mount(
                        Some(format!("/proc/thread-self/ns/{ns}").as_str()),
                        p,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| netns_err(p, "bind mount")(io_of(e)))?;
                }
                Ok(())
            })
            .map_err(netns_err(uts, "spawn thread"))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if made.is_err() {
        let _ = delete_netns(ipc);
        let _ = delete_netns(uts);
    }
    made
}

/// Unmounts and removes a namespace file. Idempotent: a missing or unmounted file is
/// fine. The namespace itself goes away when nothing else holds it (no process inside,
/// no other mount, no open file).
pub fn delete_netns(path: &Path) -> Result<()> {
    // Stacked mounts (a create raced with another) are all taken off.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(e) => return Err(netns_err(path, "unmount")(io_of(e))),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(netns_err(path, "remove file")(e)),
    }
}

/// Whether `path` is a mounted network namespace (or any namespace: nsfs).
pub fn netns_exists(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

fn open_netns_file(path: &Path) -> Result<File> {
    File::open(path).map_err(netns_err(path, "open"))
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`, and returns its
/// value. The thread ends afterwards, so no thread of the process is left in the other
/// namespace. Sockets opened by `f` stay in that namespace wherever they are used later.
/// A panic in `f` is resumed in the caller.
pub fn run_in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = open_netns_file(path)?;
    run_in_netns_file(&file, path, f)
}

/// [`run_in_netns`] with the namespace already open (`path` only names it in errors).
pub(crate) fn run_in_netns_file<T: Send>(
    file: &File,
    path: &Path,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("kins-netns".into())
            .spawn_scoped(s, move || -> Result<T> {
                setns(file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netns_err(path, "setns")(io_of(e)))?;
                Ok(f())
            })
            .map_err(netns_err(path, "spawn thread"))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The calling thread's network namespace, open (it stays alive while the file is).
pub(crate) fn current_netns_file() -> Result<File> {
    open_netns_file(Path::new("/proc/thread-self/ns/net"))
}

/// Whether two open namespace files are the same namespace.
pub(crate) fn same_netns(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Moves the calling thread into the namespace at `path`, for good.
///
/// Meant for the main thread of a process that is still single-threaded (for example
/// `kins agent --netns PATH` before its runtime starts): threads started afterwards
/// inherit the namespace. In a multi-threaded process the other threads stay where they
/// were; use [`run_in_netns`] there.
pub fn enter_netns(path: &Path) -> Result<()> {
    let file = open_netns_file(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(path, "setns")(io_of(e)))
}
