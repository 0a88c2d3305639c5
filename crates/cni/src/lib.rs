//! `cni`: the CNI plugin `kins-bridge` (with its built-in IPAM `kins-host-local`), in the
//! shape of the CNI specification 1.0: a network configuration on stdin, CNI_* variables
//! in the environment, a result or an error object on stdout.
//!
//! - [`config`]: the configuration ([`NetConf`]) and the environment ([`CniEnv`]).
//! - [`types`]: the result, VERSION answer and error object as serde types.
//! - [`ipam`]: host-local allocation, one file per address.
//! - [`plugin`]: ADD, DEL and CHECK over [`net::Net`], so that unit tests run them on
//!   [`net::FakeNet`] and compare the calls with expected text.
//! - [`run`]: one invocation, as `kins cni` makes it.
//! - [`runtime`]: the other side, what the agent does as the kubelet and containerd do
//!   through libcni: configuration lists, plugin chains, the result cache.
//!
//! It knows nothing about the Kubernetes API.

pub mod config;
mod error;
pub mod hostport;
pub mod ipam;
pub mod plugin;
pub mod runtime;
pub mod types;

pub use config::{CniEnv, NetConf};
pub use error::{Error, Result};
pub use plugin::{veth_alias, veth_name};

use net::Net;
use serde::Deserialize;

use crate::types::{ErrorResult, VersionResult};

/// The versions of the specification this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version, used when the caller's is unknown.
pub const CURRENT_VERSION: &str = "1.1.0";

/// What one invocation prints on stdout, and its exit code (0 on success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// JSON followed by a newline, or nothing (DEL and CHECK succeed silently).
    pub stdout: String,
    /// 0 on success, 1 with an error object on stdout.
    pub exit: u8,
}

/// Runs one invocation on the calling thread's network namespace (the node's):
/// `command` is CNI_COMMAND (`ADD`, `DEL`, `CHECK`, `VERSION`), `stdin` the network
/// configuration.
pub fn run(command: &str, env: &CniEnv, stdin: &[u8]) -> Output {
    if command == "VERSION" {
        return version(stdin);
    }
    if let Err(e) = check_command(command) {
        return failure(&version_of(stdin), &e, env);
    }
    match net::RtNet::current() {
        Ok(net) => run_with_nft(&net, &hostport::NftCommand, command, env, stdin),
        Err(e) => failure(&version_of(stdin), &Error::Net(e), env),
    }
}

/// [`run`] on a given [`Net`] (a [`net::FakeNet`] in unit tests), without nftables
/// (hostPort mappings fail).
pub fn run_with(net: &dyn Net, command: &str, env: &CniEnv, stdin: &[u8]) -> Output {
    run_with_nft(net, &hostport::NoNft, command, env, stdin)
}

/// [`run`] on a given [`Net`] and [`hostport::Nft`].
pub fn run_with_nft(
    net: &dyn Net,
    nft: &dyn hostport::Nft,
    command: &str,
    env: &CniEnv,
    stdin: &[u8],
) -> Output {
    if command == "VERSION" {
        return version(stdin);
    }
    if let Err(e) = check_command(command) {
        return failure(&version_of(stdin), &e, env);
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return failure(&version_of(stdin), &e, env),
    };
    let done = match command {
        "ADD" => plugin::add(net, nft, &conf, env).map(|r| json_line(&r)),
        "DEL" => plugin::del(net, nft, &conf, env).map(|()| String::new()),
        "CHECK" if conf.pre_1_0() && conf.cni_version != "0.4.0" => {
            Err(Error::IncompatibleVersion(conf.cni_version.clone()))
        }
        "CHECK" => plugin::check(net, &conf, env).map(|()| String::new()),
        "STATUS" | "GC" if !conf.at_least_1_1() => {
            Err(Error::IncompatibleVersion(conf.cni_version.clone()))
        }
        "STATUS" => plugin::status(&conf).map(|()| String::new()),
        "GC" => plugin::gc(net, nft, &conf, &valid_attachments(stdin)).map(|_| String::new()),
        other => check_command(other).map(|()| String::new()),
    };
    match done {
        Ok(stdout) => Output { stdout, exit: 0 },
        Err(e) => failure(&conf.cni_version, &e, env),
    }
}

fn check_command(command: &str) -> Result<()> {
    match command {
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" | "VERSION" => Ok(()),
        other => Err(Error::Env {
            name: "CNI_COMMAND",
            why: format!("{other:?}: expected ADD, DEL, CHECK, STATUS, GC or VERSION"),
        }),
    }
}

/// `cni.dev/valid-attachments` of a GC configuration: (container id, interface) pairs.
fn valid_attachments(stdin: &[u8]) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(stdin).unwrap_or_default();
    v["cni.dev/valid-attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a["containerID"].as_str()?.to_string(),
                a["ifname"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn json_line<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v)
        .unwrap_or_else(|e| format!(r#"{{"code":999,"msg":"encoding the output: {e}"}}"#));
    s.push('\n');
    s
}

/// The caller's `cniVersion` when it can be read at all, else the newest.
fn version_of(stdin: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<Versioned>(stdin)
        .ok()
        .and_then(|v| v.cni_version)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string())
}

fn version(stdin: &[u8]) -> Output {
    Output {
        stdout: json_line(&VersionResult {
            cni_version: version_of(stdin),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }),
        exit: 0,
    }
}

fn failure(cni_version: &str, e: &Error, env: &CniEnv) -> Output {
    let details = (!env.container_id.is_empty()).then(|| {
        format!(
            "container {}, netns {:?}, interface {:?}",
            env.container_id, env.netns, env.ifname
        )
    });
    Output {
        stdout: json_line(&ErrorResult {
            cni_version: cni_version.to_string(),
            code: e.code(),
            msg: e.to_string(),
            details,
        }),
        exit: 1,
    }
}

#[cfg(test)]
mod tests;
