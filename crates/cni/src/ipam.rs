//! `kins-host-local`: addresses of one subnet handed out on one node, kept as files.
//!
//! Layout of a network's folder (`<dataDir>/<network>`):
//!
//! - `<ip>` (for example `10.244.1.5`): one file per allocated address, holding the
//!   container id and the interface name on two lines. Created with `O_EXCL`, so an
//!   address is never handed out twice, by concurrent plugins or across restarts.
//! - `by-id/<container id>:<ifname>`: a symbolic link to the address, so that a repeated
//!   ADD, a CHECK and a DEL find the address in one `readlink` instead of reading every
//!   file. It is written before the address file is created, so an address file of a
//!   container is always reachable from its link, even after a crash halfway.
//! - `last_reserved_ip`: the last address handed out; the next search starts after it
//!   (round robin, so a released address is not reused at once).
//! - `lock`: `flock`ed for the length of each operation.
//!
//! Files are not fsynced: allocations survive restarts of any process, not a power loss
//! (after which every pod is recreated anyway).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

const LAST_RESERVED: &str = "last_reserved_ip";
const LOCK: &str = "lock";
const BY_ID: &str = "by-id";

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: Ipv4Addr,
    /// The container it belongs to.
    pub container_id: String,
    /// The container's interface.
    pub ifname: String,
}

/// The allocations of one network on one node.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    network: String,
}

fn store_err(path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Store { path, source }
}

/// Overwrites the last reserved address in place, padded to a fixed width. Not
/// truncate-and-write: on ext4 that pattern forces the data out at close (`auto_da_alloc`),
/// measured at 2 ms against 1 µs in place.
fn write_last(path: &Path, ip: Ipv4Addr) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(store_err(path))?;
    file.write_all_at(format!("{:<15}\n", ip.to_string()).as_bytes(), 0)
        .map_err(store_err(path))
}

fn owner_line(container_id: &str, ifname: &str) -> String {
    format!("{container_id}\n{ifname}\n")
}

impl Store {
    /// The store of `network` in `dir` (`<dataDir>/<network>`), handing out the host
    /// addresses of `subnet` except `gateway`.
    pub fn new(dir: PathBuf, network: &str, subnet: Ipv4Net, gateway: Ipv4Addr) -> Store {
        Store {
            dir,
            subnet: subnet.trunc(),
            gateway,
            network: network.to_string(),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Flock<File>> {
        let by_id = self.dir.join(BY_ID);
        fs::create_dir_all(&by_id).map_err(store_err(&by_id))?;
        lock_file(&self.dir.join(LOCK))
    }
}

/// An exclusive lock on `path` (made if missing), held until dropped.
pub fn lock_file(path: &Path) -> Result<Flock<File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(store_err(dir))?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(store_err(path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| store_err(path)(io::Error::from_raw_os_error(e as i32)))
}

impl Store {
    fn index_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(BY_ID)
            .join(format!("{container_id}:{ifname}"))
    }

    /// The address the link points at, if its file names this container.
    fn lookup_locked(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let index = self.index_path(container_id, ifname);
        let target = match fs::read_link(&index) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_err(&index)(e)),
        };
        let Some(ip) = target.to_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
            return Ok(None);
        };
        let file = self.dir.join(ip.to_string());
        match fs::read_to_string(&file) {
            Ok(owner) if owner == owner_line(container_id, ifname) => Ok(Some(ip)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_err(&file)(e)),
        }
    }

    fn point_index(&self, index: &Path, ip: Ipv4Addr) -> Result<()> {
        match fs::remove_file(index) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err(index)(e)),
        }
        std::os::unix::fs::symlink(ip.to_string(), index).map_err(store_err(index))
    }

    /// The host addresses of the subnet in allocation order, starting after `after`.
    fn candidates(&self, after: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let count = last - first + 1;
        let start = match after.map(u32::from) {
            Some(a) if (first..=last).contains(&a) => a - first + 1,
            _ => 0,
        };
        (0..count)
            .map(move |i| Ipv4Addr::from(first + (start + i) % count))
            .filter(move |ip| *ip != self.gateway)
    }

    /// The address of `(container_id, ifname)`: the one it has already (a repeated ADD
    /// gets the same address), else the next free one.
    pub fn allocate(&self, container_id: &str, ifname: &str) -> Result<Ipv4Addr> {
        let _lock = self.lock()?;
        if let Some(ip) = self.lookup_locked(container_id, ifname)? {
            return Ok(ip);
        }
        let last_path = self.dir.join(LAST_RESERVED);
        let last = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let index = self.index_path(container_id, ifname);
        let owner = owner_line(container_id, ifname);
        for ip in self.candidates(last) {
            let path = self.dir.join(ip.to_string());
            // The link first: a crash after the address file leaves it findable.
            self.point_index(&index, ip)?;
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes()).map_err(store_err(&path))?;
                    write_last(&last_path, ip)?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(store_err(&path)(e)),
            }
        }
        let _ = fs::remove_file(&index);
        Err(Error::Exhausted {
            subnet: self.subnet,
            network: self.network.clone(),
        })
    }

    /// The address of `(container_id, ifname)`, if it has one.
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        self.lookup_locked(container_id, ifname)
    }

    /// Gives back the address of `(container_id, ifname)`; `Ok(None)` when it had none.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        let found = self.lookup_locked(container_id, ifname)?;
        if let Some(ip) = found {
            let path = self.dir.join(ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(store_err(&path)(e)),
            }
        }
        let index = self.index_path(container_id, ifname);
        match fs::remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err(&index)(e)),
        }
        Ok(found)
    }

    /// Every allocation, in address order (for garbage collection against the pods that
    /// exist).
    pub fn allocations(&self) -> Result<Vec<Allocation>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(store_err(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(store_err(&self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let owner = match fs::read_to_string(&path) {
                Ok(o) => o,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(store_err(&path)(e)),
            };
            let mut lines = owner.lines();
            out.push(Allocation {
                ip,
                container_id: lines.next().unwrap_or_default().to_string(),
                ifname: lines.next().unwrap_or_default().to_string(),
            });
        }
        out.sort_by_key(|a| a.ip);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, subnet: &str) -> Store {
        let subnet: Ipv4Net = subnet.parse().expect("subnet");
        let gw = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        Store::new(dir.join("net"), "net", subnet, gw)
    }

    #[test]
    fn round_robin_same_address_again_and_exhaustion() {
        let tmp = tempfile::tempdir().expect("tmp");
        // A /29: .1 is the gateway, .2 to .6 are handed out.
        let s = store(tmp.path(), "10.9.0.0/29");
        let ip = |o: u8| Ipv4Addr::new(10, 9, 0, o);
        assert_eq!(s.allocate("a", "eth0").expect("a"), ip(2));
        assert_eq!(s.allocate("b", "eth0").expect("b"), ip(3));
        assert_eq!(s.allocate("a", "eth0").expect("a again"), ip(2));
        assert_eq!(s.allocate("a", "eth1").expect("second interface"), ip(4));
        assert_eq!(s.release("b", "eth0").expect("release"), Some(ip(3)));
        assert_eq!(s.release("b", "eth0").expect("release again"), None);
        // Round robin: .3 was freed but .5 comes first.
        assert_eq!(s.allocate("c", "eth0").expect("c"), ip(5));
        assert_eq!(s.allocate("d", "eth0").expect("d"), ip(6));
        assert_eq!(s.allocate("e", "eth0").expect("e wraps"), ip(3));
        let full = s.allocate("f", "eth0").expect_err("full");
        assert_eq!(
            full.to_string(),
            "no free address left in 10.9.0.0/29 (network net)"
        );
        assert_eq!(full.code(), 101);
        assert_eq!(
            fs::read_to_string(s.dir().join("10.9.0.2")).expect("file"),
            "a\neth0\n"
        );
        let all: Vec<String> = s
            .allocations()
            .expect("list")
            .iter()
            .map(|a| format!("{} {} {}", a.ip, a.container_id, a.ifname))
            .collect();
        assert_eq!(
            all,
            [
                "10.9.0.2 a eth0",
                "10.9.0.3 e eth0",
                "10.9.0.4 a eth1",
                "10.9.0.5 c eth0",
                "10.9.0.6 d eth0"
            ]
        );
    }

    #[test]
    fn state_survives_a_new_store_and_stale_links_are_ignored() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = store(tmp.path(), "10.9.1.0/24");
        assert_eq!(
            s.allocate("a", "eth0").expect("a"),
            Ipv4Addr::new(10, 9, 1, 2)
        );
        // A crash between the link and the address file: the link points at an address
        // that is not ours (here: taken by someone else).
        let again = store(tmp.path(), "10.9.1.0/24");
        fs::write(again.dir().join("10.9.1.3"), "other\neth0\n").expect("other");
        std::os::unix::fs::symlink("10.9.1.3", again.dir().join("by-id/b:eth0")).expect("link");
        assert_eq!(again.lookup("b", "eth0").expect("lookup"), None);
        assert_eq!(
            again.allocate("b", "eth0").expect("b"),
            Ipv4Addr::new(10, 9, 1, 4)
        );
        assert_eq!(
            again.release("b", "eth0").expect("b"),
            Some(Ipv4Addr::new(10, 9, 1, 4))
        );
        assert_eq!(
            fs::read_to_string(again.dir().join("10.9.1.3")).expect("kept"),
            "other\neth0\n"
        );
    }

    #[test]
    fn nothing_to_release_in_a_missing_store() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = store(tmp.path(), "10.9.2.0/24");
        assert_eq!(s.release("a", "eth0").expect("release"), None);
        assert!(!s.dir().exists(), "release creates nothing");
    }
}
