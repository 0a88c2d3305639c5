//! The one error type of the crate; every variant names what it was about.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// A failed namespace, netlink or sysctl operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace operation (create, enter, delete) failed.
    #[error("netns {path}: {op}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system's error.
        source: io::Error,
    },

    /// A namespace file is already mounted.
    #[error("netns {0}: already exists")]
    NetnsExists(PathBuf),

    /// The kernel refused a netlink request.
    #[error("{op} {object} (in {netns}): {}{}", errno.desc(), ext.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Netlink {
        /// The request (`create veth`, `add route`, ...).
        op: &'static str,
        /// What it was about (an interface, a route).
        object: String,
        /// The namespace the socket lives in.
        netns: String,
        /// The kernel's error number.
        errno: Errno,
        /// The kernel's extended acknowledgement message, when it gave one.
        ext: Option<String>,
    },

    /// An interface does not exist.
    #[error("no interface {name} (in {netns})")]
    NoSuchLink {
        /// The interface name.
        name: String,
        /// The namespace looked in.
        netns: String,
    },

    /// Talking to the netlink socket failed (not a refusal by the kernel).
    #[error("netlink socket (in {netns}): {op}: {source}")]
    Socket {
        /// The namespace the socket lives in.
        netns: String,
        /// What was being done.
        op: &'static str,
        /// The system's error.
        source: io::Error,
    },

    /// A reply could not be decoded.
    #[error("netlink reply to {op} (in {netns}): {msg}")]
    Decode {
        /// The request answered.
        op: &'static str,
        /// The namespace the socket lives in.
        netns: String,
        /// What was wrong.
        msg: String,
    },

    /// A sysctl could not be read or written.
    #[error("sysctl {path} (in {netns}): {source}")]
    Sysctl {
        /// The file under /proc/sys.
        path: PathBuf,
        /// The namespace.
        netns: String,
        /// The system's error.
        source: io::Error,
    },

    /// A name or value was rejected before reaching the kernel.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// What kind of value (`interface name`, `sysctl path`).
        what: &'static str,
        /// The value.
        value: String,
    },
}

impl Error {
    /// The kernel's error number, for netlink refusals.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Netlink { errno, .. } => Some(*errno),
            Error::Netns { source, .. }
            | Error::Socket { source, .. }
            | Error::Sysctl { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// Whether the object already existed (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST) || matches!(self, Error::NetnsExists(_))
    }

    /// Whether the object did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NoSuchLink { .. })
            || matches!(
                self.errno(),
                Some(Errno::ENODEV) | Some(Errno::ENOENT) | Some(Errno::ESRCH)
            )
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
