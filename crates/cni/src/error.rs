//! The plugin's errors and their CNI error codes.

use std::io;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// A failed CNI operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    #[error("incompatible CNI version {0:?} (supported: {supported})", supported = crate::SUPPORTED_VERSIONS.join(", "))]
    IncompatibleVersion(String),

    /// A CNI_* variable is missing or malformed.
    #[error("invalid environment variable {name}: {why}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        why: String,
    },

    /// The configuration on stdin is not valid JSON of the expected shape.
    #[error("decoding the network configuration: {0}")]
    Decode(#[from] serde_json::Error),

    /// The configuration is well-formed but not acceptable.
    #[error("invalid network configuration: {0}")]
    Config(String),

    /// The IPAM store (files under dataDir) could not be read or written.
    #[error("IPAM store {path}: {source}")]
    Store {
        /// The file or folder.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },

    /// CNI_NETNS names no namespace (the container is gone or unknown).
    #[error("no network namespace at {0}")]
    NoSuchNetns(String),

    /// Every address of the subnet is taken.
    #[error("no free address left in {subnet} (network {network})")]
    Exhausted {
        /// The subnet.
        subnet: Ipv4Net,
        /// The network name.
        network: String,
    },

    /// The host end's name (derived from the container id) belongs to another container.
    #[error("interface {name} belongs to another container ({owner})")]
    NameTaken {
        /// The interface.
        name: String,
        /// Its alias, naming the owner.
        owner: String,
    },

    /// A kernel operation failed.
    #[error(transparent)]
    Net(#[from] net::Error),

    /// CHECK found the container's network not as ADD left it.
    #[error("the plugin cannot take ADDs: {0}")]
    Unavailable(String),
    #[error("check failed: {0}")]
    Check(String),
}

impl Error {
    /// The CNI error code: the specification's well-known codes where one fits
    /// (1 version, 3 unknown container, 4 environment, 5 I/O, 6 decoding,
    /// 7 configuration), else this
    /// plugin's: 101 IPAM, 102 interface setup, 103 CHECK.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) => 1,
            Error::NoSuchNetns(_) => 3,
            Error::Env { .. } => 4,
            Error::Store { .. } => 5,
            Error::Decode(_) => 6,
            Error::Config(_) => 7,
            Error::Exhausted { .. } => 101,
            Error::NameTaken { .. } | Error::Net(_) => 102,
            Error::Check(_) => 103,
            Error::Unavailable(_) => 50,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
