//! The cache plugin, for forwarded answers only (cluster answers must follow watch events
//! at once, so they are never cached). Positive answers live for the smallest TTL of their
//! records, negative ones (NXDOMAIN, NODATA) for the SOA's, both capped by `max_ttl` and
//! raised to `min_ttl`. TTLs handed out decrease with age. Time comes from the caller, so
//! tests use a fake clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, RData, RecordType};

use crate::answer::Response;
use crate::chain::in_zones;
use crate::corefile::Cache as CacheConfig;

/// A cache key: lower-cased name, type, class.
pub type Key = (LowerName, RecordType, DNSClass);

#[derive(Debug)]
struct Entry {
    response: Response,
    stored: Instant,
    ttl: u32,
}

/// Whether a lookup was answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A positive answer.
    Success,
    /// NXDOMAIN or NODATA.
    Denial,
}

/// A compiled cache plugin.
#[derive(Debug)]
pub struct Cache {
    zones: Vec<LowerName>,
    max_ttl: u32,
    min_ttl: u32,
    success_capacity: usize,
    denial_capacity: usize,
    success: Mutex<HashMap<Key, Entry>>,
    denial: Mutex<HashMap<Key, Entry>>,
}

impl Cache {
    /// Compiles the plugin; `block_zones` are used when it names none.
    pub fn new(config: &CacheConfig, block_zones: &[String]) -> Self {
        let zones = if config.zones.is_empty() {
            block_zones
        } else {
            &config.zones
        };
        Self {
            zones: zones
                .iter()
                .filter_map(|z| hickory_proto::rr::Name::from_ascii(z).ok())
                .map(|n| LowerName::from(&n))
                .collect(),
            max_ttl: config.max_ttl,
            min_ttl: config.min_ttl.min(config.max_ttl),
            success_capacity: config.success_capacity.max(1),
            denial_capacity: config.denial_capacity.max(1),
            success: Mutex::new(HashMap::new()),
            denial: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the cache serves `name`.
    pub fn covers(&self, name: &LowerName) -> bool {
        in_zones(&self.zones, name)
    }

    /// The cached response for `key` at `now`, TTLs decreased by its age.
    pub fn get(&self, key: &Key, now: Instant) -> Option<(Response, Kind)> {
        for (map, kind) in [(&self.success, Kind::Success), (&self.denial, Kind::Denial)] {
            let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
            let Some(entry) = map.get(key) else { continue };
            let age = u32::try_from(now.saturating_duration_since(entry.stored).as_secs())
                .unwrap_or(u32::MAX);
            if age >= entry.ttl {
                map.remove(key);
                return None;
            }
            let mut response = entry.response.clone();
            for section in [
                &mut response.answers,
                &mut response.authorities,
                &mut response.additionals,
            ] {
                if !section.is_empty() {
                    for r in section.to_mut() {
                        r.ttl = r.ttl.min(entry.ttl).saturating_sub(age);
                    }
                }
            }
            return Some((response, kind));
        }
        None
    }

    /// Stores a forwarded response received at `now` (not SERVFAIL or other errors).
    /// Returns the TTL it is cached for, which the caller applies to this reply too (as
    /// CoreDNS, so the first and the cached answers agree).
    pub fn insert(&self, key: Key, response: &Response, now: Instant) -> Option<u32> {
        let (kind, ttl) = match response.rcode {
            ResponseCode::NoError if !response.answers.is_empty() => {
                let ttl = response
                    .answers
                    .records()
                    .iter()
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0);
                (Kind::Success, ttl)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let soa = response
                    .authorities
                    .records()
                    .iter()
                    .find_map(|r| match &r.data {
                        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                        _ => None,
                    });
                let ttl = soa?;
                (Kind::Denial, ttl)
            }
            _ => return None,
        };
        let ttl = ttl.clamp(self.min_ttl, self.max_ttl);
        if ttl == 0 {
            return None;
        }
        let (map, capacity) = match kind {
            Kind::Success => (&self.success, self.success_capacity),
            Kind::Denial => (&self.denial, self.denial_capacity),
        };
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= capacity && !map.contains_key(&key) {
            // Evict the entry closest to expiry, else any.
            let victim = map
                .iter()
                .min_by_key(|(_, e)| e.stored + std::time::Duration::from_secs(u64::from(e.ttl)))
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                map.remove(&victim);
            }
        }
        map.insert(
            key,
            Entry {
                response: response.clone(),
                stored: now,
                ttl,
            },
        );
        Some(ttl)
    }

    /// Caps every record's TTL of `response` at `ttl`.
    pub fn cap(response: &mut Response, ttl: u32) {
        for section in [
            &mut response.answers,
            &mut response.authorities,
            &mut response.additionals,
        ] {
            if section.records().iter().any(|r| r.ttl > ttl) {
                for r in section.to_mut() {
                    r.ttl = r.ttl.min(ttl);
                }
            }
        }
    }

    /// Number of entries (success, denial).
    pub fn len(&self) -> (usize, usize) {
        let s = self.success.lock().unwrap_or_else(|e| e.into_inner()).len();
        let d = self.denial.lock().unwrap_or_else(|e| e.into_inner()).len();
        (s, d)
    }
}
