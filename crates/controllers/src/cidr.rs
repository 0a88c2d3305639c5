//! IPv4 CIDRs and the node CIDR allocator. Pure: no IO, no clock, so every rule is a unit
//! test.
//!
//! The allocator splits the cluster CIDR into blocks of the node mask size and hands them
//! out round-robin, like kube-controller-manager's `CidrSet`: a released block is reused
//! only after every other free block, so a route that still points at a deleted node's
//! range is unlikely to meet a new node at once. Blocks belong to an opaque owner (the
//! node controller uses the Node's uid), so "which blocks are free" can always be rebuilt
//! from the Nodes that exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The most blocks a cluster CIDR may be split into (the node mask may be at most 16 bits
/// longer than the cluster's, as in Kubernetes).
pub const MAX_MASK_DIFF: u8 = 16;

/// Why a CIDR or an allocator configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The text is not `a.b.c.d/n`.
    #[error("invalid CIDR {0:?}: want an IPv4 address and a prefix length, like 10.244.0.0/16")]
    Syntax(String),
    /// The node mask does not fit the cluster CIDR.
    #[error("node CIDR mask size /{mask} does not fit cluster CIDR {cluster}: it must be between /{} and /30, and at most {MAX_MASK_DIFF} bits longer", cluster.prefix())]
    Mask {
        /// The cluster CIDR.
        cluster: Ipv4Cidr,
        /// The requested node mask size.
        mask: u8,
    },
}

/// An IPv4 network: an address with its host bits cleared and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    net: u32,
    prefix: u8,
}

fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Ipv4Cidr {
    /// The network of `addr/prefix` (host bits are cleared, as Go's `net.ParseCIDR` does);
    /// `None` when the prefix is longer than 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        (prefix <= 32).then(|| Ipv4Cidr {
            net: u32::from(addr) & mask_of(prefix),
            prefix,
        })
    }

    /// Parses `a.b.c.d/n`.
    pub fn parse(s: &str) -> Result<Ipv4Cidr, CidrError> {
        let bad = || CidrError::Syntax(s.to_string());
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(bad)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The last address of the network.
    fn last(&self) -> u32 {
        self.net | !mask_of(self.prefix)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && other.net & mask_of(self.prefix) == self.net
    }

    /// Whether the two networks share at least one address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ipv4Cidr::parse(s)
    }
}

/// What [`CidrAllocator::occupy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupied {
    /// The blocks are now held by the owner (also when they already were).
    Held,
    /// The CIDR is not inside the cluster CIDR: nothing to track.
    OutsideCluster,
    /// At least one block belongs to another owner, which keeps it.
    Conflict {
        /// The owner that holds the block.
        holder: String,
    },
}

/// Hands out the node-sized blocks of a cluster CIDR, each to one owner at a time.
#[derive(Debug, Clone)]
pub struct CidrAllocator {
    cluster: Ipv4Cidr,
    mask: u8,
    /// Owner of every held block, by block index.
    holders: BTreeMap<u32, String>,
    /// Blocks of every owner.
    owned: HashMap<String, BTreeSet<u32>>,
    /// Where the round-robin search for a free block starts.
    next: u32,
}

impl CidrAllocator {
    /// An allocator of `/mask` blocks of `cluster`, all free.
    pub fn new(cluster: Ipv4Cidr, mask: u8) -> Result<CidrAllocator, CidrError> {
        if mask < cluster.prefix || mask > 30 || mask - cluster.prefix > MAX_MASK_DIFF {
            return Err(CidrError::Mask { cluster, mask });
        }
        Ok(CidrAllocator {
            cluster,
            mask,
            holders: BTreeMap::new(),
            owned: HashMap::new(),
            next: 0,
        })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> Ipv4Cidr {
        self.cluster
    }

    /// How many blocks there are in all.
    pub fn capacity(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix)
    }

    /// How many blocks are held.
    pub fn used(&self) -> usize {
        self.holders.len()
    }

    fn block(&self, index: u32) -> Ipv4Cidr {
        Ipv4Cidr {
            net: self.cluster.net + (index << (32 - u32::from(self.mask))),
            prefix: self.mask,
        }
    }

    /// Indices of the blocks a CIDR inside the cluster CIDR overlaps.
    fn blocks_of(&self, cidr: &Ipv4Cidr) -> Option<std::ops::RangeInclusive<u32>> {
        if !self.cluster.overlaps(cidr) {
            return None;
        }
        let shift = 32 - u32::from(self.mask);
        let first = cidr.net.max(self.cluster.net);
        let last = cidr.last().min(self.cluster.last());
        Some(((first - self.cluster.net) >> shift)..=((last - self.cluster.net) >> shift))
    }

    /// The blocks an owner holds.
    pub fn cidrs_of(&self, owner: &str) -> Vec<Ipv4Cidr> {
        self.owned
            .get(owner)
            .map(|s| s.iter().map(|i| self.block(*i)).collect())
            .unwrap_or_default()
    }

    /// Every owner that holds a block.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.owned.keys().map(String::as_str)
    }

    /// Marks the blocks `cidr` overlaps as the owner's (a node that already has a podCIDR
    /// keeps it). Blocks held by another owner stay theirs.
    pub fn occupy(&mut self, owner: &str, cidr: Ipv4Cidr) -> Occupied {
        let Some(range) = self.blocks_of(&cidr) else {
            return Occupied::OutsideCluster;
        };
        let mut result = Occupied::Held;
        for i in range {
            match self.holders.get(&i) {
                Some(h) if h == owner => {}
                Some(h) => {
                    result = Occupied::Conflict { holder: h.clone() };
                }
                None => {
                    self.holders.insert(i, owner.to_string());
                    self.owned.entry(owner.to_string()).or_default().insert(i);
                }
            }
        }
        result
    }

    /// A block for the owner: the one it holds already, else the next free one after the
    /// last handed out; `None` when every block is held.
    pub fn allocate(&mut self, owner: &str) -> Option<Ipv4Cidr> {
        if let Some(i) = self.owned.get(owner).and_then(|s| s.iter().next()) {
            return Some(self.block(*i));
        }
        let cap = self.capacity();
        for k in 0..cap {
            let i = (self.next + k) % cap;
            if let std::collections::btree_map::Entry::Vacant(e) = self.holders.entry(i) {
                e.insert(owner.to_string());
                self.owned.entry(owner.to_string()).or_default().insert(i);
                self.next = (i + 1) % cap;
                return Some(self.block(i));
            }
        }
        None
    }

    /// Makes the owner hold exactly the blocks `cidrs` overlap (what its Node says it has),
    /// freeing any other block it held; returns the conflicts with other owners.
    pub fn hold_exactly(&mut self, owner: &str, cidrs: &[Ipv4Cidr]) -> Vec<Occupied> {
        let want: BTreeSet<u32> = cidrs
            .iter()
            .filter_map(|c| self.blocks_of(c))
            .flatten()
            .collect();
        if self.owned.get(owner).is_some_and(|have| *have == want) {
            return Vec::new();
        }
        self.release(owner);
        cidrs
            .iter()
            .map(|c| self.occupy(owner, *c))
            .filter(|o| matches!(o, Occupied::Conflict { .. }))
            .collect()
    }

    /// Frees every block of the owner; returns them.
    pub fn release(&mut self, owner: &str) -> Vec<Ipv4Cidr> {
        let Some(set) = self.owned.remove(owner) else {
            return Vec::new();
        };
        for i in &set {
            self.holders.remove(i);
        }
        set.into_iter().map(|i| self.block(i)).collect()
    }

    /// Frees the blocks of every owner for which `keep` is false; returns the owners and
    /// blocks freed.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> Vec<(String, Vec<Ipv4Cidr>)> {
        let gone: Vec<String> = self.owned.keys().filter(|o| !keep(o)).cloned().collect();
        gone.into_iter()
            .map(|o| {
                let freed = self.release(&o);
                (o, freed)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).expect("test CIDR parses")
    }

    #[test]
    fn parse_and_display() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("10.244.0.0/16", Ok("10.244.0.0/16")),
            ("10.244.3.7/16", Ok("10.244.0.0/16")),
            (" 10.0.0.0/8 ", Ok("10.0.0.0/8")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("1.2.3.4/32", Ok("1.2.3.4/32")),
            ("1.2.3.4/33", Err(())),
            ("1.2.3.4", Err(())),
            ("1.2.3/24", Err(())),
            ("1.2.3.4/-1", Err(())),
            ("1.2.3.4/", Err(())),
            ("fd00::/64", Err(())),
        ];
        for (input, want) in cases {
            let got = Ipv4Cidr::parse(input)
                .map(|c| c.to_string())
                .map_err(|_| ());
            assert_eq!(got, want.map(str::to_string), "{input}");
        }
        assert_eq!(
            Ipv4Cidr::parse("x").map_err(|e| e.to_string()),
            Err(
                "invalid CIDR \"x\": want an IPv4 address and a prefix length, like 10.244.0.0/16"
                    .to_string()
            )
        );
    }

    #[test]
    fn containment() {
        let c = cidr("10.244.0.0/16");
        assert!(c.contains(&cidr("10.244.7.0/24")));
        assert!(c.contains(&c));
        assert!(!c.contains(&cidr("10.0.0.0/8")));
        assert!(!c.contains(&cidr("10.245.0.0/24")));
        assert!(c.overlaps(&cidr("10.0.0.0/8")));
        assert!(!c.overlaps(&cidr("10.245.0.0/16")));
    }

    #[test]
    fn mask_limits() {
        let c = cidr("10.244.0.0/16");
        for (mask, ok) in [
            (15, false),
            (16, true),
            (24, true),
            (30, true),
            (31, false),
            (33, false),
        ] {
            assert_eq!(CidrAllocator::new(c, mask).is_ok(), ok, "/{mask}");
        }
        assert!(CidrAllocator::new(cidr("10.0.0.0/8"), 24).is_ok());
        assert_eq!(
            CidrAllocator::new(cidr("10.0.0.0/8"), 25).map_err(|e| e.to_string()).err(),
            Some("node CIDR mask size /25 does not fit cluster CIDR 10.0.0.0/8: it must be between /8 and /30, and at most 16 bits longer".to_string())
        );
    }

    #[test]
    fn allocates_distinct_blocks_in_order() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).expect("valid");
        assert_eq!(a.capacity(), 256);
        let got: Vec<String> = ["n1", "n2", "n3"]
            .iter()
            .map(|o| a.allocate(o).expect("free block").to_string())
            .collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]);
        // Idempotent for an owner that holds a block.
        assert_eq!(a.allocate("n2"), Some(cidr("10.244.1.0/24")));
        assert_eq!(a.used(), 3);
    }

    #[test]
    fn other_mask_sizes() {
        let mut a = CidrAllocator::new(cidr("10.10.0.0/20"), 22).expect("valid");
        let got: Vec<String> = (0..4)
            .map(|i| a.allocate(&format!("n{i}")).expect("free").to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.10.0.0/22",
                "10.10.4.0/22",
                "10.10.8.0/22",
                "10.10.12.0/22"
            ]
        );
        assert_eq!(a.allocate("n4"), None);
    }

    #[test]
    fn exhaustion_and_release() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/23"), 24).expect("valid");
        assert_eq!(a.allocate("a"), Some(cidr("10.244.0.0/24")));
        assert_eq!(a.allocate("b"), Some(cidr("10.244.1.0/24")));
        assert_eq!(a.allocate("c"), None);
        assert_eq!(a.release("a"), vec![cidr("10.244.0.0/24")]);
        assert_eq!(a.release("a"), vec![]);
        assert_eq!(a.allocate("c"), Some(cidr("10.244.0.0/24")));
        assert_eq!(a.allocate("d"), None);
    }

    #[test]
    fn round_robin_after_release() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/22"), 24).expect("valid");
        a.allocate("a");
        a.allocate("b");
        a.release("a");
        // The freed first block comes back only after the untouched ones.
        assert_eq!(a.allocate("c"), Some(cidr("10.244.2.0/24")));
        assert_eq!(a.allocate("d"), Some(cidr("10.244.3.0/24")));
        assert_eq!(a.allocate("e"), Some(cidr("10.244.0.0/24")));
    }

    #[test]
    fn rebuilt_from_existing_cidrs() {
        // A restarted controller first occupies what the Nodes hold, then allocates.
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).expect("valid");
        assert_eq!(a.occupy("x", cidr("10.244.0.0/24")), Occupied::Held);
        assert_eq!(a.occupy("y", cidr("10.244.2.0/24")), Occupied::Held);
        assert_eq!(a.occupy("y", cidr("10.244.2.0/24")), Occupied::Held);
        assert_eq!(a.allocate("z"), Some(cidr("10.244.1.0/24")));
        assert_eq!(a.allocate("w"), Some(cidr("10.244.3.0/24")));
        assert_eq!(a.allocate("x"), Some(cidr("10.244.0.0/24")));
    }

    #[test]
    fn occupy_edge_cases() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).expect("valid");
        assert_eq!(
            a.occupy("x", cidr("192.168.0.0/24")),
            Occupied::OutsideCluster
        );
        assert_eq!(a.occupy("x", cidr("10.244.5.0/24")), Occupied::Held);
        assert_eq!(
            a.occupy("y", cidr("10.244.5.0/24")),
            Occupied::Conflict { holder: "x".into() }
        );
        // A smaller range holds the block it lies in; a larger one every block it covers.
        assert_eq!(a.occupy("s", cidr("10.244.9.128/25")), Occupied::Held);
        assert_eq!(a.cidrs_of("s"), vec![cidr("10.244.9.0/24")]);
        assert_eq!(a.occupy("l", cidr("10.244.12.0/22")), Occupied::Held);
        assert_eq!(a.cidrs_of("l").len(), 4);
        // A range wider than the cluster CIDR holds all of it.
        let mut b = CidrAllocator::new(cidr("10.244.0.0/23"), 24).expect("valid");
        assert_eq!(b.occupy("all", cidr("10.0.0.0/8")), Occupied::Held);
        assert_eq!(b.allocate("n"), None);
    }

    #[test]
    fn hold_exactly_follows_the_node() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).expect("valid");
        // Allocated, but the Node was given another CIDR by someone else: ours is freed.
        assert_eq!(a.allocate("n"), Some(cidr("10.244.0.0/24")));
        assert_eq!(a.hold_exactly("n", &[cidr("10.244.7.0/24")]), vec![]);
        assert_eq!(a.cidrs_of("n"), vec![cidr("10.244.7.0/24")]);
        assert_eq!(a.used(), 1);
        assert_eq!(a.hold_exactly("n", &[cidr("10.244.7.0/24")]), vec![]);
        assert_eq!(
            a.hold_exactly("m", &[cidr("10.244.7.0/24")]),
            vec![Occupied::Conflict { holder: "n".into() }]
        );
        // Outside the cluster CIDR: nothing held.
        assert_eq!(a.hold_exactly("n", &[cidr("192.168.1.0/24")]), vec![]);
        assert_eq!(a.cidrs_of("n"), vec![]);
    }

    #[test]
    fn retain_frees_gone_owners() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).expect("valid");
        a.allocate("keep");
        a.allocate("gone");
        let freed = a.retain(|o| o == "keep");
        assert_eq!(
            freed,
            vec![("gone".to_string(), vec![cidr("10.244.1.0/24")])]
        );
        assert_eq!(a.owners().collect::<Vec<_>>(), vec!["keep"]);
        assert_eq!(a.used(), 1);
    }
}
