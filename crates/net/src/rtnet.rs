//! [`RtNet`]: [`Net`] on a real namespace, through one rtnetlink socket.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use crate::netlink::Conn;
use crate::netns::{current_netns_file, run_in_netns_file, same_netns};
use crate::{Error, Link, Mac, Net, Result, Route, RouteKind};

/// [`Net`] on one real network namespace.
///
/// Holds one rtnetlink socket opened inside the namespace; the socket stays bound to it
/// whichever thread uses it, so an `RtNet` for another namespace is used from anywhere
/// without entering that namespace again. Requests are serialized on the socket (a
/// mutex), each a single round trip to the kernel.
pub struct RtNet {
    conn: Mutex<Conn>,
    netns: Option<PathBuf>,
    /// The namespace, held open: sysctls are read and written from inside it.
    ns_file: File,
}

impl RtNet {
    /// Operates on the calling thread's network namespace (kept: the object goes on
    /// working on it from any thread).
    pub fn current() -> Result<RtNet> {
        Ok(RtNet {
            conn: Mutex::new(Conn::open("current netns".to_string())?),
            netns: None,
            ns_file: current_netns_file()?,
        })
    }

    /// Operates on the namespace mounted at `path` (the socket is opened by a thread that
    /// entered it).
    pub fn in_netns(path: &Path) -> Result<RtNet> {
        let label = format!("netns {}", path.display());
        let ns_file = File::open(path).map_err(|source| Error::Netns {
            path: path.to_path_buf(),
            op: "open",
            source,
        })?;
        let conn = run_in_netns_file(&ns_file, path, || Conn::open(label))??;
        Ok(RtNet {
            conn: Mutex::new(conn),
            netns: Some(path.to_path_buf()),
            ns_file,
        })
    }

    /// The namespace file, `None` for the current namespace.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the socket usable: replies to an
        // unfinished request are skipped by their sequence number.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn label(&self) -> String {
        self.conn().netns.clone()
    }

    fn get_link(&self, name: &str) -> Result<Option<LinkMessage>> {
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self
            .conn()
            .request("get link", name, RouteNetlinkMessage::GetLink(msg), 0)
        {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn index(&self, name: &str) -> Result<u32> {
        match self.get_link(name)? {
            Some(l) => Ok(l.header.index),
            None => Err(Error::NoSuchLink {
                name: name.to_string(),
                netns: self.label(),
            }),
        }
    }

    fn set_link(&self, op: &'static str, name: &str, msg: LinkMessage) -> Result<()> {
        self.conn()
            .request(op, name, RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
    }

    fn route_message(&self, route: &Route, for_delete: bool) -> Result<RouteMessage> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = route.dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = match route.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Blackhole => RouteType::BlackHole,
        };
        if for_delete {
            msg.header.protocol = RouteProtocol::Unspec;
            msg.header.scope = RouteScope::NoWhere;
        } else {
            msg.header.protocol = RouteProtocol::Boot;
            msg.header.scope = if route.via.is_none() && route.kind == RouteKind::Unicast {
                RouteScope::Link
            } else {
                RouteScope::Universe
            };
        }
        if route.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    route.dst.network(),
                )));
        }
        if let Some(gw) = route.via {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(dev) = &route.dev {
            msg.attributes.push(RouteAttribute::Oif(self.index(dev)?));
        }
        Ok(msg)
    }

    fn new_route(&self, op: &'static str, route: &Route, flags: u16) -> Result<()> {
        let msg = self.route_message(route, false)?;
        self.conn()
            .request(
                op,
                &route.to_string(),
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | flags,
            )
            .map(drop)
    }

    fn sysctl_file(&self, path: &str) -> Result<PathBuf> {
        let ok = !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !ok {
            return Err(Error::Invalid {
                what: "sysctl path",
                value: path.to_string(),
            });
        }
        Ok(Path::new("/proc/sys").join(path))
    }

    /// Runs `f` in this object's namespace (files under /proc/sys/net belong to the
    /// opener's namespace): directly when the calling thread is in it, else on a thread
    /// that enters it.
    fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        if current_netns_file().is_ok_and(|here| same_netns(&here, &self.ns_file)) {
            return Ok(f());
        }
        let path = self
            .netns
            .clone()
            .unwrap_or_else(|| PathBuf::from("(namespace of RtNet::current)"));
        run_in_netns_file(&self.ns_file, &path, f)
    }
}

fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "interface name",
            value: name.to_string(),
        })
    }
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        alias: None,
        kind: None,
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::IfAlias(n) => link.alias = Some(n.clone()),
            LinkAttribute::Address(b) => link.mac = Mac::from_bytes(b),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(i) => link.master = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn ipv4_of(a: &RouteAddress) -> Option<Ipv4Addr> {
    match a {
        RouteAddress::Inet(ip) => Some(*ip),
        _ => None,
    }
}

impl Net for RtNet {
    fn create_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<Mac>) -> Result<()> {
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.conn()
            .request(
                "create bridge",
                name,
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
    }

    fn create_veth_into(
        &self,
        host: &str,
        peer: &str,
        peer_netns: &Path,
        mtu: Option<u32>,
    ) -> Result<()> {
        check_ifname(host)?;
        check_ifname(peer)?;
        // Kept open until the kernel has answered: the request carries its number.
        let ns = File::open(peer_netns).map_err(|source| Error::Netns {
            path: peer_netns.to_path_buf(),
            op: "open",
            source,
        })?;
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        let object = format!("{host} (peer {peer} in {})", peer_netns.display());
        let res = self.conn().request(
            "create veth",
            &object,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        drop(ns);
        res.map(drop)
    }

    fn set_master(&self, ifname: &str, bridge: &str) -> Result<()> {
        check_ifname(ifname)?;
        let master = self.index(bridge)?;
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_string()));
        msg.attributes.push(LinkAttribute::Controller(master));
        self.set_link("set master", ifname, msg)
    }

    fn set_hairpin(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        let mut msg = LinkMessage::default();
        msg.header.index = self.index(ifname)?;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                true,
            )])),
        ]));
        // Bridge-port settings go through RTM_NEWLINK (the kernel applies a port's
        // slave data there, as `ip link set X type bridge_slave hairpin on` does).
        self.conn()
            .request("set hairpin", ifname, RouteNetlinkMessage::NewLink(msg), 0)
            .map(drop)
    }

    fn set_up(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_string()));
        self.set_link("set up", ifname, msg)
    }

    fn set_alias(&self, ifname: &str, alias: &str) -> Result<()> {
        check_ifname(ifname)?;
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_string()));
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link("set alias", ifname, msg)
    }

    fn set_addr(&self, ifname: &str, addr: Ipv4Net) -> Result<()> {
        let index = self.index(ifname)?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = addr.prefix_len();
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        let ip = IpAddr::V4(addr.addr());
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        if addr.prefix_len() < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(addr.broadcast()));
        }
        self.conn()
            .request(
                "add address",
                &format!("{addr} on {ifname}"),
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map(drop)
    }

    fn addrs(&self, ifname: &str) -> Result<Vec<Ipv4Net>> {
        let index = self.index(ifname)?;
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self
            .conn()
            .dump("list addresses", RouteNetlinkMessage::GetAddress(req))?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index || a.header.family != AddressFamily::Inet {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                if let Ok(net) = Ipv4Net::new(ip, a.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    fn del_addr(&self, ifname: &str, addr: Ipv4Net) -> Result<bool> {
        let index = match self.index(ifname) {
            Ok(i) => i,
            Err(Error::NoSuchLink { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        let ip = IpAddr::V4(addr.addr());
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        match self.conn().request(
            "delete address",
            &format!("{addr} on {ifname}"),
            RouteNetlinkMessage::DelAddress(msg),
            0,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn add_route(&self, route: &Route) -> Result<()> {
        self.new_route("add route", route, NLM_F_EXCL)
    }

    fn replace_route(&self, route: &Route) -> Result<()> {
        self.new_route("replace route", route, NLM_F_REPLACE)
    }

    fn del_route(&self, route: &Route) -> Result<bool> {
        let msg = match self.route_message(route, true) {
            Ok(m) => m,
            // The device is gone, and its routes with it.
            Err(Error::NoSuchLink { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.conn().request(
            "delete route",
            &route.to_string(),
            RouteNetlinkMessage::DelRoute(msg),
            0,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn routes(&self) -> Result<Vec<Route>> {
        let names: HashMap<u32, String> = self
            .links()?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let replies = self
            .conn()
            .dump("list routes", RouteNetlinkMessage::GetRoute(req))?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            let mut table = u32::from(r.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut via = None;
            let mut dev = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(d) => {
                        dst = ipv4_of(d).unwrap_or(Ipv4Addr::UNSPECIFIED)
                    }
                    RouteAttribute::Gateway(g) => via = ipv4_of(g),
                    RouteAttribute::Oif(i) => dev = names.get(i).cloned(),
                    _ => {}
                }
            }
            let kind = match r.header.kind {
                RouteType::Unicast => RouteKind::Unicast,
                RouteType::Unreachable => RouteKind::Unreachable,
                RouteType::BlackHole => RouteKind::Blackhole,
                _ => continue,
            };
            if table != u32::from(RouteHeader::RT_TABLE_MAIN)
                || r.header.address_family != AddressFamily::Inet
            {
                continue;
            }
            let Ok(dst) = Ipv4Net::new(dst, r.header.destination_prefix_length) else {
                continue;
            };
            out.push(Route {
                dst,
                via,
                dev,
                kind,
            });
        }
        Ok(out)
    }

    fn delete_link(&self, name: &str) -> Result<bool> {
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self
            .conn()
            .request("delete link", name, RouteNetlinkMessage::DelLink(msg), 0)
        {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.get_link(name)?.as_ref().map(parse_link))
    }

    fn links(&self) -> Result<Vec<Link>> {
        let mut req = LinkMessage::default();
        req.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self
            .conn()
            .dump("list links", RouteNetlinkMessage::GetLink(req))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    fn sysctl(&self, path: &str) -> Result<String> {
        let file = self.sysctl_file(path)?;
        let read = self.in_ns(|| std::fs::read_to_string(&file))?;
        read.map(|s| s.trim_end_matches('\n').to_string())
            .map_err(|source| Error::Sysctl {
                path: file.clone(),
                netns: self.label(),
                source,
            })
    }

    fn set_sysctl(&self, path: &str, value: &str) -> Result<()> {
        let file = self.sysctl_file(path)?;
        let written = self.in_ns(|| std::fs::write(&file, value))?;
        written.map_err(|source| Error::Sysctl {
            path: file.clone(),
            netns: self.label(),
            source,
        })
    }

    fn open_netns(&self, netns: &Path) -> Result<Box<dyn Net>> {
        Ok(Box::new(RtNet::in_netns(netns)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_before_the_kernel() {
        for ok in ["eth0", "cni0", "veth0123abcd", "kins-abc-node1", "a.b_c-d"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a:b", "a b", "sixteen-chars-xx", ".", ".."] {
            let err = check_ifname(bad).expect_err(bad);
            assert_eq!(err.to_string(), format!("invalid interface name: {bad:?}"));
        }
    }
}
