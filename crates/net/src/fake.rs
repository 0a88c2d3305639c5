//! [`FakeNet`]: [`Net`] in memory, recording every call as a line of text.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::Ipv4Net;
use nix::errno::Errno;

use crate::{Error, Link, Mac, Net, Result, Route};

#[derive(Clone)]
struct FakeLink {
    index: u32,
    kind: Option<String>,
    alias: Option<String>,
    mac: Mac,
    mtu: u32,
    up: bool,
    master: Option<String>,
    addrs: Vec<Ipv4Net>,
    /// For a veth: the namespace and name of the other end.
    peer: Option<(String, String)>,
}

#[derive(Default)]
struct Ns {
    links: BTreeMap<String, FakeLink>,
    routes: Vec<Route>,
    sysctls: HashMap<String, String>,
}

#[derive(Default)]
struct World {
    namespaces: HashMap<String, Ns>,
    log: Vec<String>,
    fail: Vec<String>,
    /// The last interface index given (1 is every namespace's `lo`).
    last_index: u32,
    /// The last MAC address given (`02:00:00:00:00:NN`).
    last_mac: u32,
}

impl World {
    fn ns(&mut self, name: &str) -> &mut Ns {
        if !self.namespaces.contains_key(name) {
            let mut ns = Ns::default();
            ns.sysctls
                .insert("net/ipv4/ip_forward".to_string(), "0".to_string());
            ns.links.insert(
                "lo".to_string(),
                FakeLink {
                    index: 1,
                    kind: None,
                    alias: None,
                    mac: Mac([0; 6]),
                    mtu: 65536,
                    up: false,
                    master: None,
                    addrs: vec![],
                    peer: None,
                },
            );
            self.namespaces.insert(name.to_string(), ns);
        }
        self.namespaces
            .get_mut(name)
            .expect("inserted just above when missing")
    }

    fn new_link(&mut self, kind: &str, mtu: Option<u32>, mac: Option<Mac>) -> FakeLink {
        self.last_index = self.last_index.max(1) + 1;
        let mac = mac.unwrap_or_else(|| {
            self.last_mac += 1;
            let m = self.last_mac.to_be_bytes();
            Mac([0x02, 0, m[0], m[1], m[2], m[3]])
        });
        FakeLink {
            index: self.last_index,
            kind: Some(kind.to_string()),
            alias: None,
            mac,
            mtu: mtu.unwrap_or(1500),
            up: false,
            master: None,
            addrs: vec![],
            peer: None,
        }
    }
}

/// A recording [`Net`]: keeps links, addresses, routes and sysctls in memory, as the
/// kernel would (a veth's peer appears in the other namespace, a connected route comes
/// with an address on an up link, a gateway must be reachable), and logs every call as
/// `<namespace>: <call>`. Namespaces opened with [`Net::open_netns`] share the log.
#[derive(Clone)]
pub struct FakeNet {
    world: Arc<Mutex<World>>,
    ns: String,
}

impl FakeNet {
    /// A fake namespace called `label` in the log (for example `node`).
    pub fn new(label: &str) -> FakeNet {
        let net = FakeNet {
            world: Arc::default(),
            ns: label.to_string(),
        };
        net.world().ns(label);
        net
    }

    /// The calls made so far, one line each, and forgets them.
    pub fn take_calls(&self) -> String {
        let mut w = self.world();
        let lines = std::mem::take(&mut w.log);
        lines.join("\n")
    }

    /// Makes every later call whose log line (without the namespace) starts with
    /// `prefix` fail with EIO, to test what happens on errors.
    pub fn fail_when(&self, prefix: &str) {
        self.world().fail.push(prefix.to_string());
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs the call and returns the world, or the injected failure.
    fn call(&self, line: String) -> Result<MutexGuard<'_, World>> {
        let mut w = self.world();
        w.log.push(format!("{}: {line}", self.ns));
        if w.fail.iter().any(|p| line.starts_with(p.as_str())) {
            return Err(self.err("injected failure", &line, Errno::EIO));
        }
        Ok(w)
    }

    fn err(&self, op: &'static str, object: &str, errno: Errno) -> Error {
        Error::Netlink {
            op,
            object: object.to_string(),
            netns: self.ns.clone(),
            errno,
            ext: None,
        }
    }

    fn no_link(&self, name: &str) -> Error {
        Error::NoSuchLink {
            name: name.to_string(),
            netns: self.ns.clone(),
        }
    }

    fn link_mut<'w>(&self, w: &'w mut World, name: &str) -> Result<&'w mut FakeLink> {
        w.ns(&self.ns)
            .links
            .get_mut(name)
            .ok_or_else(|| self.no_link(name))
    }

    fn connected(ns: &Ns) -> Vec<Route> {
        ns.links
            .iter()
            .filter(|(_, l)| l.up)
            .flat_map(|(name, l)| {
                l.addrs
                    .iter()
                    .map(move |a| Route::dev(a.trunc(), name.as_str()))
            })
            .collect()
    }

    fn to_link(ns: &Ns, name: &str, l: &FakeLink) -> Link {
        Link {
            index: l.index,
            name: name.to_string(),
            alias: l.alias.clone(),
            kind: l.kind.clone(),
            mac: Some(l.mac),
            mtu: l.mtu,
            up: l.up,
            master: l
                .master
                .as_ref()
                .and_then(|m| ns.links.get(m))
                .map(|m| m.index),
        }
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

impl Net for FakeNet {
    fn create_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<Mac>) -> Result<()> {
        let mut w = self.call(format!(
            "create_bridge {name} mtu={} mac={}",
            opt(mtu),
            opt(mac)
        ))?;
        if w.ns(&self.ns).links.contains_key(name) {
            return Err(self.err("create bridge", name, Errno::EEXIST));
        }
        let link = w.new_link("bridge", mtu, mac);
        w.ns(&self.ns).links.insert(name.to_string(), link);
        Ok(())
    }

    fn create_veth_into(
        &self,
        host: &str,
        peer: &str,
        peer_netns: &Path,
        mtu: Option<u32>,
    ) -> Result<()> {
        let peer_ns = peer_netns.display().to_string();
        let mut w = self.call(format!(
            "create_veth_into {host} {peer} {peer_ns} mtu={}",
            opt(mtu)
        ))?;
        if w.ns(&self.ns).links.contains_key(host) || w.ns(&peer_ns).links.contains_key(peer) {
            return Err(self.err("create veth", host, Errno::EEXIST));
        }
        let mut h = w.new_link("veth", mtu, None);
        h.peer = Some((peer_ns.clone(), peer.to_string()));
        let mut p = w.new_link("veth", mtu, None);
        p.peer = Some((self.ns.clone(), host.to_string()));
        w.ns(&self.ns).links.insert(host.to_string(), h);
        w.ns(&peer_ns).links.insert(peer.to_string(), p);
        Ok(())
    }

    fn set_hairpin(&self, ifname: &str) -> Result<()> {
        let mut w = self.call(format!("set_hairpin {ifname}"))?;
        self.link_mut(&mut w, ifname)?;
        Ok(())
    }

    fn set_master(&self, ifname: &str, bridge: &str) -> Result<()> {
        let mut w = self.call(format!("set_master {ifname} {bridge}"))?;
        if !w.ns(&self.ns).links.contains_key(bridge) {
            return Err(self.no_link(bridge));
        }
        self.link_mut(&mut w, ifname)?.master = Some(bridge.to_string());
        Ok(())
    }

    fn set_up(&self, ifname: &str) -> Result<()> {
        let mut w = self.call(format!("set_up {ifname}"))?;
        self.link_mut(&mut w, ifname)?.up = true;
        Ok(())
    }

    fn set_alias(&self, ifname: &str, alias: &str) -> Result<()> {
        let mut w = self.call(format!("set_alias {ifname} {alias}"))?;
        self.link_mut(&mut w, ifname)?.alias = Some(alias.to_string());
        Ok(())
    }

    fn set_addr(&self, ifname: &str, addr: Ipv4Net) -> Result<()> {
        let mut w = self.call(format!("set_addr {ifname} {addr}"))?;
        let l = self.link_mut(&mut w, ifname)?;
        if !l.addrs.contains(&addr) {
            l.addrs.push(addr);
        }
        Ok(())
    }

    fn addrs(&self, ifname: &str) -> Result<Vec<Ipv4Net>> {
        let mut w = self.call(format!("addrs {ifname}"))?;
        Ok(self.link_mut(&mut w, ifname)?.addrs.clone())
    }

    fn del_addr(&self, ifname: &str, addr: Ipv4Net) -> Result<bool> {
        let mut w = self.call(format!("del_addr {ifname} {addr}"))?;
        let l = self.link_mut(&mut w, ifname)?;
        let before = l.addrs.len();
        l.addrs.retain(|a| *a != addr);
        Ok(l.addrs.len() != before)
    }

    fn add_route(&self, route: &Route) -> Result<()> {
        let mut w = self.call(format!("add_route {route}"))?;
        let ns = w.ns(&self.ns);
        if let Some(dev) = &route.dev {
            if !ns.links.contains_key(dev) {
                return Err(self.no_link(dev));
            }
        }
        if let Some(gw) = route.via {
            if !Self::connected(ns).iter().any(|r| r.dst.contains(&gw)) {
                return Err(self.err("add route", &route.to_string(), Errno::ENETUNREACH));
            }
        }
        if ns.routes.iter().any(|r| r.dst == route.dst) {
            return Err(self.err("add route", &route.to_string(), Errno::EEXIST));
        }
        ns.routes.push(route.clone());
        Ok(())
    }

    fn replace_route(&self, route: &Route) -> Result<()> {
        let mut w = self.call(format!("replace_route {route}"))?;
        let ns = w.ns(&self.ns);
        ns.routes.retain(|r| r.dst != route.dst);
        ns.routes.push(route.clone());
        Ok(())
    }

    fn del_route(&self, route: &Route) -> Result<bool> {
        let mut w = self.call(format!("del_route {route}"))?;
        let ns = w.ns(&self.ns);
        let before = ns.routes.len();
        ns.routes.retain(|r| {
            !(r.dst == route.dst
                && r.kind == route.kind
                && (route.via.is_none() || r.via == route.via)
                && (route.dev.is_none() || r.dev == route.dev))
        });
        Ok(ns.routes.len() != before)
    }

    fn routes(&self) -> Result<Vec<Route>> {
        let mut w = self.call("routes".to_string())?;
        let ns = w.ns(&self.ns);
        let mut out = Self::connected(ns);
        out.extend(ns.routes.iter().cloned());
        Ok(out)
    }

    fn delete_link(&self, name: &str) -> Result<bool> {
        let mut w = self.call(format!("delete_link {name}"))?;
        let Some(l) = w.ns(&self.ns).links.remove(name) else {
            return Ok(false);
        };
        if let Some((ns, peer)) = l.peer {
            w.ns(&ns).links.remove(&peer);
            let gone = peer.clone();
            w.ns(&ns).routes.retain(|r| r.dev.as_deref() != Some(&gone));
        }
        w.ns(&self.ns)
            .routes
            .retain(|r| r.dev.as_deref() != Some(name));
        Ok(true)
    }

    fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut w = self.call(format!("link {name}"))?;
        let ns = w.ns(&self.ns);
        Ok(ns.links.get(name).map(|l| Self::to_link(ns, name, l)))
    }

    fn links(&self) -> Result<Vec<Link>> {
        let mut w = self.call("links".to_string())?;
        let ns = w.ns(&self.ns);
        let mut out: Vec<Link> = ns
            .links
            .iter()
            .map(|(name, l)| Self::to_link(ns, name, l))
            .collect();
        out.sort_by_key(|l| l.index);
        Ok(out)
    }

    fn sysctl(&self, path: &str) -> Result<String> {
        let mut w = self.call(format!("sysctl {path}"))?;
        w.ns(&self.ns)
            .sysctls
            .get(path)
            .cloned()
            .ok_or_else(|| Error::Sysctl {
                path: Path::new("/proc/sys").join(path),
                netns: self.ns.clone(),
                source: std::io::Error::from_raw_os_error(Errno::ENOENT as i32),
            })
    }

    fn set_sysctl(&self, path: &str, value: &str) -> Result<()> {
        let mut w = self.call(format!("set_sysctl {path} {value}"))?;
        w.ns(&self.ns)
            .sysctls
            .insert(path.to_string(), value.to_string());
        Ok(())
    }

    fn open_netns(&self, netns: &Path) -> Result<Box<dyn Net>> {
        let label = netns.display().to_string();
        let mut w = self.call(format!("open_netns {label}"))?;
        w.ns(&label);
        Ok(Box::new(FakeNet {
            world: self.world.clone(),
            ns: label,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test cidr")
    }

    #[test]
    fn records_calls_and_keeps_state_like_the_kernel() {
        let node = FakeNet::new("node");
        node.create_bridge(
            "cni0",
            None,
            Some(Mac::from_ipv4(Ipv4Addr::new(10, 244, 1, 1))),
        )
        .expect("bridge");
        node.create_veth_into("veth1", "eth0", Path::new("/pod"), Some(1400))
            .expect("veth");
        let pod = node.open_netns(Path::new("/pod")).expect("pod");
        let gw = Ipv4Addr::new(10, 244, 1, 1);
        let default = Route::via(crate::default_dst(), gw, Some("eth0"));
        let unreachable = pod.add_route(&default).expect_err("no address yet");
        assert_eq!(unreachable.errno(), Some(Errno::ENETUNREACH));
        pod.set_addr("eth0", net("10.244.1.5/24")).expect("addr");
        pod.set_up("eth0").expect("up");
        pod.add_route(&default).expect("route");
        assert_eq!(
            pod.routes()
                .expect("routes")
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            ["10.244.1.0/24 dev eth0", "default via 10.244.1.1 dev eth0"]
        );
        assert!(node.delete_link("veth1").expect("delete"));
        assert!(!pod.link_exists("eth0").expect("peer gone with it"));
        assert!(!node.delete_link("veth1").expect("delete again"));
        assert_eq!(
            node.take_calls(),
            "node: create_bridge cni0 mtu=- mac=0a:58:0a:f4:01:01
node: create_veth_into veth1 eth0 /pod mtu=1400
node: open_netns /pod
/pod: add_route default via 10.244.1.1 dev eth0
/pod: set_addr eth0 10.244.1.5/24
/pod: set_up eth0
/pod: add_route default via 10.244.1.1 dev eth0
/pod: routes
node: delete_link veth1
/pod: link eth0
node: delete_link veth1"
        );
    }

    #[test]
    fn injected_failures_are_logged_and_returned() {
        let node = FakeNet::new("node");
        node.fail_when("set_up");
        let err = node.set_up("lo").expect_err("injected");
        assert_eq!(err.errno(), Some(Errno::EIO));
        assert_eq!(node.take_calls(), "node: set_up lo");
    }
}
