//! `net`: the kernel's networking, for kins. Network namespaces as files, and links,
//! addresses, routes and sysctls inside one namespace, through netlink.
//!
//! Only this crate and `cni` touch the kernel's networking. It knows nothing about
//! Kubernetes objects.
//!
//! - [`create_netns`], [`delete_netns`], [`netns_exists`], [`run_in_netns`] and
//!   [`enter_netns`]: a namespace is a bind mount of `/proc/thread-self/ns/net` on a file,
//!   made on a short-lived thread (never a fork, so it is safe in a multi-threaded
//!   process).
//! - [`Net`]: the operations on links, addresses, routes and sysctls of one namespace.
//!   [`RtNet`] is the real one (one netlink socket, opened inside the namespace, reused for
//!   every operation: no process per operation); [`FakeNet`] records the calls as text so
//!   that unit tests check what would be done without root.

mod error;
mod fake;
mod netlink;
mod netns;
mod rtnet;
mod types;

pub use error::{Error, Result};
pub use fake::FakeNet;
pub use ipnet::Ipv4Net;
pub use netns::{
    create_ipc_uts, create_netns, delete_netns, enter_netns, netns_exists, run_in_netns,
};
pub use rtnet::RtNet;
pub use types::{Link, Mac, Route, RouteKind};

use std::net::Ipv4Addr;
use std::path::Path;

/// Links, addresses, routes and sysctls of one network namespace.
///
/// Every method is idempotent where the kernel lets it be (see each one), so reconcilers
/// can call them again after a restart. Names are interface names (at most 15 bytes).
pub trait Net: Send + Sync {
    /// Creates a bridge, down, with an optional MTU and a fixed MAC address (a bridge
    /// without one takes the lowest MAC of its ports, which changes as pods come and go).
    fn create_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<Mac>) -> Result<()>;

    /// Creates a veth pair: `host` here and `peer` created directly inside the namespace
    /// mounted at `peer_netns` (never created here and moved: moving a link costs an RCU
    /// barrier, about 50 times the creation). Both ends start down.
    fn create_veth_into(
        &self,
        host: &str,
        peer: &str,
        peer_netns: &Path,
        mtu: Option<u32>,
    ) -> Result<()>;

    /// Attaches `ifname` to the bridge `bridge`.
    fn set_master(&self, ifname: &str, bridge: &str) -> Result<()>;

    /// Turns hairpin mode on for the bridge port `ifname`, so a frame can go back out
    /// the port it came in on (a pod reaching itself through a Service's DNAT).
    fn set_hairpin(&self, ifname: &str) -> Result<()>;

    /// Brings `ifname` up.
    fn set_up(&self, ifname: &str) -> Result<()>;

    /// Sets the alias of `ifname` (shown by `ip link`; kins records the owner there).
    fn set_alias(&self, ifname: &str, alias: &str) -> Result<()>;

    /// Ensures `ifname` has the address `addr` (with its prefix); present already is fine.
    fn set_addr(&self, ifname: &str, addr: Ipv4Net) -> Result<()>;

    /// The IPv4 addresses of `ifname`.
    fn addrs(&self, ifname: &str) -> Result<Vec<Ipv4Net>>;

    /// Removes the address `addr` (with its prefix) from `ifname`; false if it was not
    /// there.
    fn del_addr(&self, ifname: &str, addr: Ipv4Net) -> Result<bool>;

    /// Adds a route to the main table; fails if the same route exists.
    fn add_route(&self, route: &Route) -> Result<()>;

    /// Adds a route to the main table or replaces the one with the same destination.
    fn replace_route(&self, route: &Route) -> Result<()>;

    /// Deletes a route from the main table; `Ok(false)` when there was none.
    fn del_route(&self, route: &Route) -> Result<bool>;

    /// The IPv4 routes of the main table.
    fn routes(&self) -> Result<Vec<Route>>;

    /// Deletes a link (a veth takes its peer along); `Ok(false)` when there was none.
    fn delete_link(&self, name: &str) -> Result<bool>;

    /// One link by name, `None` when absent.
    fn link(&self, name: &str) -> Result<Option<Link>>;

    /// Whether a link named `name` exists.
    fn link_exists(&self, name: &str) -> Result<bool> {
        Ok(self.link(name)?.is_some())
    }

    /// Every link of the namespace.
    fn links(&self) -> Result<Vec<Link>>;

    /// Reads a sysctl of this namespace, `path` relative to /proc/sys
    /// (`net/ipv4/ip_forward`), without the trailing newline.
    fn sysctl(&self, path: &str) -> Result<String>;

    /// Writes a sysctl of this namespace, `path` relative to /proc/sys.
    fn set_sysctl(&self, path: &str, value: &str) -> Result<()>;

    /// The same operations inside another namespace (for example a pod's, seen from its
    /// node).
    fn open_netns(&self, netns: &Path) -> Result<Box<dyn Net>>;
}

/// The default route, `0.0.0.0/0`.
pub fn default_dst() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("a prefix of 0 is valid")
}
