//! What the plugin prints, in the CNI specification's shapes: the result of ADD, the
//! answer to VERSION and the error object.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The result of a successful ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The configuration's `cniVersion`.
    pub cni_version: String,
    /// Interfaces created or used: the bridge, the host end, the pod's interface.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses given to interfaces.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the pod's namespace.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// DNS settings (none from this plugin: the agent writes resolv.conf).
    #[serde(default)]
    pub dns: Dns,
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU, when the configuration set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path, for interfaces inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"`: only results of versions before 1.0.0 carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix, `10.244.1.5/24`.
    pub address: Ipv4Net,
    /// The default gateway of that subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination, `0.0.0.0/0` for the default route.
    pub dst: Ipv4Net,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

/// DNS settings of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    /// The version the caller asked in, or the newest.
    pub cni_version: String,
    /// Every version this plugin speaks.
    pub supported_versions: Vec<String>,
}

/// The error object printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResult {
    /// The configuration's `cniVersion` (the newest when it could not be read).
    pub cni_version: String,
    /// 1-99 are the specification's codes, 100 and up this plugin's.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More context (the container, the namespace, the interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}
