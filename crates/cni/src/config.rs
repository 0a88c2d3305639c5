//! The network configuration read on stdin, and the CNI_* environment.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::{Error, Result};

/// The plugin's `type`.
pub const PLUGIN_TYPE: &str = "kins-bridge";
/// The IPAM `type` this plugin implements itself.
pub const IPAM_TYPE: &str = "kins-host-local";
/// The bridge used when the configuration names none.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Where allocations are kept when `ipam.dataDir` is not set (one folder per network).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The network configuration (one plugin's), for example:
///
/// ```json
/// {"cniVersion": "1.0.0", "name": "kins", "type": "kins-bridge", "bridge": "cni0",
///  "mtu": 1500, "ipam": {"type": "kins-host-local", "subnet": "10.244.1.0/24",
///  "dataDir": "/var/lib/kins/c1/cni"}}
/// ```
///
/// Fields this plugin does not use (`runtimeConfig`, `args`, ...) are accepted and
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The version of the specification the caller speaks.
    pub cni_version: String,
    /// The network's name (also the folder of its allocations).
    pub name: String,
    /// Must be `kins-bridge`.
    #[serde(rename = "type")]
    pub plugin: String,
    /// The node's bridge.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// MTU of the bridge and both veth ends; the kernel's default (1500) when unset.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Address management.
    pub ipam: IpamConf,
    /// The result of ADD, given back to CHECK and DEL.
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// Capability arguments from the runtime: `portMappings` (hostPort), when the
    /// configuration declares `"capabilities": {"portMappings": true}`.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

/// The `runtimeConfig` section this plugin reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<crate::hostport::PortMapping>,
}

/// The `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// Must be `kins-host-local`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The node's podCIDR, for example `10.244.1.0/24`.
    pub subnet: Ipv4Net,
    /// The gateway (the bridge's address); the subnet's first address when unset.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Folder of the allocation files; [`DEFAULT_DATA_DIR`] when unset.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}

/// Interface names: at most 15 bytes, no `/`, `:` or blanks.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Container ids and network names: letters, digits, `-`, `_`, `.`, starting with a
/// letter or digit (so that they are safe file names).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl NetConf {
    /// Parses and checks a configuration.
    pub fn parse(json: &[u8]) -> Result<NetConf> {
        let conf: NetConf = serde_json::from_slice(json)?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<()> {
        if !crate::SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(Error::IncompatibleVersion(self.cni_version.clone()));
        }
        let bad = |m: String| Err(Error::Config(m));
        if !valid_id(&self.name) {
            return bad(format!(
                "name {:?}: letters, digits, '-', '_' and '.' only",
                self.name
            ));
        }
        if self.plugin != PLUGIN_TYPE {
            return bad(format!(
                "type {:?}: this plugin is {PLUGIN_TYPE}",
                self.plugin
            ));
        }
        if !valid_ifname(&self.bridge) {
            return bad(format!("bridge {:?}: not an interface name", self.bridge));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return bad(format!("mtu {mtu}: must be within 68..65535"));
            }
        }
        if self.ipam.kind != IPAM_TYPE {
            return bad(format!(
                "ipam.type {:?}: only {IPAM_TYPE} is built in",
                self.ipam.kind
            ));
        }
        let subnet = self.subnet();
        if subnet.prefix_len() > 30 {
            return bad(format!("ipam.subnet {subnet}: too small (at most /30)"));
        }
        let gw = self.gateway();
        if !subnet.contains(&gw) || gw == subnet.network() || gw == subnet.broadcast() {
            return bad(format!("ipam.gateway {gw}: not a host address of {subnet}"));
        }
        Ok(())
    }

    /// The subnet, without host bits.
    pub fn subnet(&self) -> Ipv4Net {
        self.ipam.subnet.trunc()
    }

    /// The gateway: configured, or the subnet's first address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam
            .gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(self.subnet().network()).wrapping_add(1)))
    }

    /// The folder of this network's allocations: `<dataDir>/<name>`.
    pub fn store_dir(&self) -> PathBuf {
        self.ipam
            .data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR))
            .join(&self.name)
    }

    /// Whether results carry the pre-1.0 `version` field in `ips`.
    pub fn pre_1_0(&self) -> bool {
        self.cni_version.starts_with("0.")
    }

    /// Whether the caller speaks 1.1 (STATUS and GC).
    pub fn at_least_1_1(&self) -> bool {
        crate::runtime::version_tuple(&self.cni_version).is_some_and(|v| v >= (1, 1, 0))
    }
}

/// The CNI_* environment of one invocation (CNI_COMMAND is passed apart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniEnv {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS: the path of the container's network namespace.
    pub netns: String,
    /// CNI_IFNAME: the interface to create inside it.
    pub ifname: String,
    /// CNI_ARGS: `K=V;K2=V2` extra arguments (unused by this plugin).
    pub args: String,
    /// CNI_PATH: where other plugins are found (unused: IPAM is built in).
    pub path: String,
}

impl CniEnv {
    /// Reads the variables through `get` (`std::env::var(..).ok()` in the binary).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> CniEnv {
        let v = |k: &str| get(k).unwrap_or_default();
        CniEnv {
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
            path: v("CNI_PATH"),
        }
    }

    /// Reads the process's environment.
    pub fn from_process() -> CniEnv {
        CniEnv::from_vars(|k| std::env::var(k).ok())
    }

    /// Checks the variables a command needs: the container id and interface always,
    /// the namespace unless `netns_optional` (DEL).
    pub(crate) fn validate(&self, netns_optional: bool) -> Result<()> {
        if !valid_id(&self.container_id) {
            return Err(Error::Env {
                name: "CNI_CONTAINERID",
                why: format!(
                    "{:?}: letters, digits, '-', '_' and '.' only",
                    self.container_id
                ),
            });
        }
        if !valid_ifname(&self.ifname) {
            return Err(Error::Env {
                name: "CNI_IFNAME",
                why: format!("{:?}: not an interface name", self.ifname),
            });
        }
        if !netns_optional && !self.netns.starts_with('/') {
            return Err(Error::Env {
                name: "CNI_NETNS",
                why: format!("{:?}: not an absolute path", self.netns),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expect: &str) {
        let got = match NetConf::parse(json.as_bytes()) {
            Ok(c) => format!(
                "ok bridge={} gw={} subnet={} dir={} mtu={:?}",
                c.bridge,
                c.gateway(),
                c.subnet(),
                c.store_dir().display(),
                c.mtu
            ),
            Err(e) => format!("error {}: {e}", e.code()),
        };
        assert_eq!(got, expect, "for {json}");
    }

    const IPAM: &str = r#""ipam": {"type": "kins-host-local", "subnet": "10.244.1.0/24"}"#;

    #[test]
    fn configurations() {
        check(
            &format!(r#"{{"cniVersion": "1.0.0", "name": "kins", "type": "kins-bridge", {IPAM}}}"#),
            "ok bridge=cni0 gw=10.244.1.1 subnet=10.244.1.0/24 dir=/var/lib/cni/networks/kins mtu=None",
        );
        check(
            r#"{"cniVersion": "0.4.0", "name": "n", "type": "kins-bridge", "bridge": "kbr", "mtu": 1400,
                "runtimeConfig": {}, "ipam": {"type": "kins-host-local", "subnet": "10.244.1.7/24",
                "gateway": "10.244.1.254", "dataDir": "/tmp/d"}}"#,
            "ok bridge=kbr gw=10.244.1.254 subnet=10.244.1.0/24 dir=/tmp/d/n mtu=Some(1400)",
        );
        check(
            &format!(r#"{{"cniVersion": "2.0.0", "name": "kins", "type": "kins-bridge", {IPAM}}}"#),
            "error 1: incompatible CNI version \"2.0.0\" (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)",
        );
        check(
            &format!(r#"{{"cniVersion": "1.0.0", "name": "kins", "type": "bridge", {IPAM}}}"#),
            "error 7: invalid network configuration: type \"bridge\": this plugin is kins-bridge",
        );
        check(
            &format!(r#"{{"cniVersion": "1.0.0", "name": "../x", "type": "kins-bridge", {IPAM}}}"#),
            "error 7: invalid network configuration: name \"../x\": letters, digits, '-', '_' and '.' only",
        );
        check(
            r#"{"cniVersion": "1.0.0", "name": "k", "type": "kins-bridge",
                "ipam": {"type": "kins-host-local", "subnet": "10.244.1.0/24", "gateway": "10.244.2.1"}}"#,
            "error 7: invalid network configuration: ipam.gateway 10.244.2.1: not a host address of 10.244.1.0/24",
        );
        check(
            r#"{"cniVersion": "1.0.0", "name": "k", "type": "kins-bridge",
                "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}}"#,
            "error 7: invalid network configuration: ipam.type \"host-local\": only kins-host-local is built in",
        );
        check(
            r#"{"cniVersion": "1.0.0", "name": "k", "type": "kins-bridge",
                "ipam": {"type": "kins-host-local", "subnet": "10.244.1.0/31"}}"#,
            "error 7: invalid network configuration: ipam.subnet 10.244.1.0/31: too small (at most /30)",
        );
        check(
            r#"{"cniVersion": "1.0.0", "name": "k", "type": "kins-bridge", "bridge": "a-very-long-bridge"}"#,
            "error 6: decoding the network configuration: missing field `ipam` at line 1 column 91",
        );
    }

    #[test]
    fn environment() {
        let env = |id: &str, ifname: &str, netns: &str| CniEnv {
            container_id: id.into(),
            ifname: ifname.into(),
            netns: netns.into(),
            ..CniEnv::default()
        };
        assert!(env("abc123", "eth0", "/run/netns/p")
            .validate(false)
            .is_ok());
        assert!(env("abc123", "eth0", "").validate(true).is_ok());
        let msg =
            |e: CniEnv, optional: bool| e.validate(optional).expect_err("invalid").to_string();
        assert_eq!(
            msg(env("", "eth0", "/p"), false),
            "invalid environment variable CNI_CONTAINERID: \"\": letters, digits, '-', '_' and '.' only"
        );
        assert_eq!(
            msg(env("a/b", "eth0", "/p"), false),
            "invalid environment variable CNI_CONTAINERID: \"a/b\": letters, digits, '-', '_' and '.' only"
        );
        assert_eq!(
            msg(env("a", "eth0:1", "/p"), false),
            "invalid environment variable CNI_IFNAME: \"eth0:1\": not an interface name"
        );
        assert_eq!(
            msg(env("a", "eth0", ""), false),
            "invalid environment variable CNI_NETNS: \"\": not an absolute path"
        );
    }
}
