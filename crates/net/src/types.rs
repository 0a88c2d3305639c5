//! Plain values: links, routes, MAC addresses.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An Ethernet (MAC) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast address made from an IPv4 address: `0a:58:` and
    /// the address's four bytes (the convention OVN-Kubernetes uses for gateways). Stable
    /// for a given address, unique where the addresses are.
    pub fn from_ipv4(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x0a, 0x58, o[0], o[1], o[2], o[3]])
    }

    /// The address from netlink bytes, `None` unless there are exactly six.
    pub fn from_bytes(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index in its namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// The alias (`ip link set X alias A`), if any.
    pub alias: Option<String>,
    /// The link kind (`bridge`, `veth`, ...), `None` for physical or loopback devices.
    pub kind: Option<String>,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<Mac>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Whether the administrative state is up.
    pub up: bool,
    /// Index of the bridge (or other controller) this link is attached to.
    pub master: Option<u32>,
}

/// What a route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteKind {
    /// Forward, through a gateway or directly on a device.
    #[default]
    Unicast,
    /// Drop and answer "host unreachable" (kins uses it so that unallocated service and
    /// pod addresses go nowhere).
    Unreachable,
    /// Drop silently.
    Blackhole,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network; `0.0.0.0/0` is the default route.
    pub dst: Ipv4Net,
    /// Next hop, for routes through a gateway.
    pub via: Option<Ipv4Addr>,
    /// Output device.
    pub dev: Option<String>,
    /// Unicast, unreachable or blackhole.
    pub kind: RouteKind,
}

impl Route {
    /// `dst via gw`, optionally pinned to a device.
    pub fn via(dst: Ipv4Net, gw: Ipv4Addr, dev: Option<&str>) -> Route {
        Route {
            dst,
            via: Some(gw),
            dev: dev.map(str::to_string),
            kind: RouteKind::Unicast,
        }
    }

    /// `dst dev name`: directly connected on a device.
    pub fn dev(dst: Ipv4Net, dev: &str) -> Route {
        Route {
            dst,
            via: None,
            dev: Some(dev.to_string()),
            kind: RouteKind::Unicast,
        }
    }

    /// `unreachable dst`.
    pub fn unreachable(dst: Ipv4Net) -> Route {
        Route {
            dst,
            via: None,
            dev: None,
            kind: RouteKind::Unreachable,
        }
    }
}

impl fmt::Display for Route {
    /// The route as `ip route` prints it: `default via 10.244.1.1 dev eth0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Unreachable => write!(f, "unreachable ")?,
            RouteKind::Blackhole => write!(f, "blackhole ")?,
        }
        if self.dst.prefix_len() == 0 {
            write!(f, "default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_from_ipv4_is_local_unicast() {
        let m = Mac::from_ipv4(Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(m.to_string(), "0a:58:0a:f4:01:01");
        assert_eq!(m.0[0] & 0b11, 0b10, "locally administered, unicast");
    }

    #[test]
    fn routes_print_like_ip_route() {
        let check = |r: Route, expect: &str| assert_eq!(r.to_string(), expect);
        let net = |s: &str| s.parse::<Ipv4Net>().expect("test cidr");
        check(
            Route::via(net("0.0.0.0/0"), Ipv4Addr::new(10, 244, 1, 1), Some("eth0")),
            "default via 10.244.1.1 dev eth0",
        );
        check(
            Route::dev(net("10.244.1.0/24"), "cni0"),
            "10.244.1.0/24 dev cni0",
        );
        check(
            Route::unreachable(net("10.96.0.0/12")),
            "unreachable 10.96.0.0/12",
        );
    }
}
