//! IPv4 address ranges: peers as disjoint intervals (an ipBlock minus its exceptions,
//! pod addresses), the form an nftables interval set wants.

use std::fmt;
use std::net::Ipv4Addr;

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    pub start: u32,
    pub end: u32,
}

impl IpRange {
    /// One address.
    pub fn one(ip: Ipv4Addr) -> IpRange {
        let v = u32::from(ip);
        IpRange { start: v, end: v }
    }

    /// Every IPv4 address.
    pub const ALL: IpRange = IpRange {
        start: 0,
        end: u32::MAX,
    };

    /// A CIDR such as `10.0.0.0/8` (host bits are ignored, as Kubernetes' ipBlock
    /// tolerates them); `None` when it does not parse.
    pub fn cidr(s: &str) -> Option<IpRange> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let start = u32::from(ip) & mask;
        Some(IpRange {
            start,
            end: start | !mask,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        self.start <= v && v <= self.end
    }
}

/// nft syntax: an address, a prefix when the range is one, else `a-b`.
impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (Ipv4Addr::from(self.start), Ipv4Addr::from(self.end));
        if self.start == self.end {
            return write!(f, "{a}");
        }
        let size = u64::from(self.end - self.start) + 1;
        if size.is_power_of_two() && u64::from(self.start) % size == 0 {
            let len = 32 - size.trailing_zeros();
            return write!(f, "{a}/{len}");
        }
        write!(f, "{a}-{b}")
    }
}

/// The union of `ranges` as sorted, disjoint, non-adjacent ranges.
pub fn normalize(mut ranges: Vec<IpRange>) -> Vec<IpRange> {
    ranges.sort();
    let mut out: Vec<IpRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u64::from(r.start) <= u64::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

/// `base` without the addresses of `holes`, as disjoint ranges.
pub fn subtract(base: IpRange, holes: &[IpRange]) -> Vec<IpRange> {
    let mut out = Vec::new();
    let mut next = u64::from(base.start);
    for h in normalize(holes.to_vec()) {
        if u64::from(h.end) < next || h.start > base.end {
            continue;
        }
        if u64::from(h.start) > next {
            out.push(IpRange {
                start: next as u32,
                end: h.start - 1,
            });
        }
        next = u64::from(h.end) + 1;
    }
    if next <= u64::from(base.end) {
        out.push(IpRange {
            start: next as u32,
            end: base.end,
        });
    }
    out
}
