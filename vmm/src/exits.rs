//! Accounting for every exit the VMM handles in userspace: how many, and how
//! long the VMM took from KVM_RUN's return to the next KVM_RUN (the time the
//! vCPU stood still for userspace), by exit kind, I/O port and MMIO address —
//! the userspace half of what `perf kvm stat` reports.
//!
//! A guest chooses how many ports and addresses it touches, so the tables
//! by target are bounded ([`crate::bounded`]): each vCPU keeps its first
//! [`MAX_PORTS`] ports and [`MAX_MMIO_ADDRS`] MMIO addresses apart, and the
//! exits to any other go to one `_other` latency beside the table. Counts,
//! totals, extremes and histograms stay exact; the kinds are few and all kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bounded::entry_or_other;

/// Distinct I/O ports each vCPU's account keeps apart (Linux touches 8).
pub const MAX_PORTS: usize = 64;
/// Distinct MMIO addresses each vCPU's account keeps apart (Linux touches
/// about 20 per virtio device; 17 devices, the most a VM has, stay below).
pub const MAX_MMIO_ADDRS: usize = 512;

/// Buckets of the log2 histogram: bucket i holds latencies in [2^i, 2^(i+1)) ns
/// (bucket 0 also holds 0 ns); 2^40 ns is over 18 minutes.
pub const HISTOGRAM_BUCKETS: usize = 40;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Non-empty buckets only: (log2 of the bucket's lower bound, count).
    pub log2_histogram: Vec<(u32, u64)>,
    #[serde(skip, default = "empty_buckets")]
    buckets: [u64; HISTOGRAM_BUCKETS],
}

fn empty_buckets() -> [u64; HISTOGRAM_BUCKETS] {
    [0; HISTOGRAM_BUCKETS]
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            count: 0,
            total_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            log2_histogram: Vec::new(),
            buckets: [0; HISTOGRAM_BUCKETS],
        }
    }
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        let bucket = (u64::BITS - 1).saturating_sub(ns.leading_zeros()) as usize;
        self.buckets[bucket.min(HISTOGRAM_BUCKETS - 1)] += 1;
    }

    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ns as f64 / self.count as f64
        }
    }

    /// Fills the serialised histogram from the buckets.
    fn seal(&mut self) {
        self.log2_histogram = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (i as u32, n))
            .collect();
        if self.count == 0 {
            self.min_ns = 0;
        }
    }
}

/// A userspace exit's kind, as `perf kvm stat` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    /// An instruction KVM's emulator refused, completed by the VMM's
    /// emulated-KVM fallback.
    Emulation,
    Other,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; 6] = [
        Kind::IoIn,
        Kind::IoOut,
        Kind::MmioRead,
        Kind::MmioWrite,
        Kind::Emulation,
        Kind::Other,
    ];

    /// Its place in [`Kind::ALL`], for tables indexed by kind.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExitStats {
    pub by_kind: BTreeMap<Kind, Latency>,
    /// The first [`MAX_PORTS`] ports the vCPU touched.
    pub by_port: BTreeMap<u16, Latency>,
    /// Exits to every other port.
    pub by_port_other: Latency,
    /// The first [`MAX_MMIO_ADDRS`] addresses the vCPU touched.
    pub by_mmio_addr: BTreeMap<u64, Latency>,
    /// Exits to every other address.
    pub by_mmio_addr_other: Latency,
}

/// Where an exit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Port(u16),
    Mmio(u64),
    None,
}

impl ExitStats {
    pub fn record(&mut self, kind: Kind, target: Target, ns: u64) {
        self.by_kind.entry(kind).or_default().record(ns);
        match target {
            Target::Port(port) => {
                entry_or_other(&mut self.by_port, &mut self.by_port_other, MAX_PORTS, port)
                    .record(ns)
            }
            Target::Mmio(addr) => entry_or_other(
                &mut self.by_mmio_addr,
                &mut self.by_mmio_addr_other,
                MAX_MMIO_ADDRS,
                addr,
            )
            .record(ns),
            Target::None => {}
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.by_kind.get(&kind).map_or(0, |l| l.count)
    }

    /// Ready to serialise: histograms filled in.
    pub fn sealed(mut self) -> Self {
        for l in self
            .by_kind
            .values_mut()
            .chain(self.by_port.values_mut())
            .chain(self.by_mmio_addr.values_mut())
            .chain([&mut self.by_port_other, &mut self.by_mmio_addr_other])
        {
            l.seal();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_their_table() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn latency_summary_and_log2_buckets() {
        let mut l = Latency::default();
        for ns in [0, 1, 3, 1000, 1023, 1024] {
            l.record(ns);
        }
        l.seal();
        assert_eq!(
            (l.count, l.min_ns, l.max_ns, l.total_ns),
            (6, 0, 1024, 3051)
        );
        assert!((l.mean_ns() - 508.5).abs() < 1e-9);
        // 0 and 1 → bucket 0; 3 → 1; 1000 and 1023 → 9; 1024 → 10.
        assert_eq!(l.log2_histogram, vec![(0, 2), (1, 1), (9, 2), (10, 1)]);
    }

    #[test]
    fn huge_latency_lands_in_the_last_bucket() {
        let mut l = Latency::default();
        l.record(u64::MAX);
        l.seal();
        assert_eq!(l.log2_histogram, vec![(HISTOGRAM_BUCKETS as u32 - 1, 1)]);
    }

    #[test]
    fn exits_are_counted_by_kind_and_target() {
        let mut s = ExitStats::default();
        s.record(Kind::IoOut, Target::Port(0x3f8), 500);
        s.record(Kind::IoOut, Target::Port(0x3f8), 700);
        s.record(Kind::MmioWrite, Target::Mmio(0xd000_0000), 900);
        let s = s.sealed();
        assert_eq!(s.count(Kind::IoOut), 2);
        assert_eq!(s.by_port[&0x3f8].max_ns, 700);
        assert_eq!(s.by_mmio_addr[&0xd000_0000].count, 1);
        assert_eq!(s.by_mmio_addr_other.count, 0);
        let empty = ExitStats::default().sealed();
        assert_eq!(empty.count(Kind::IoIn), 0);
        assert_eq!(empty.by_port_other.min_ns, 0);
    }

    #[test]
    fn targets_beyond_the_limits_go_to_other_with_exact_totals() {
        let mut s = ExitStats::default();
        let addrs = MAX_MMIO_ADDRS as u64 + 1000;
        for addr in 0..addrs {
            s.record(Kind::MmioRead, Target::Mmio(0xc000_0000 + addr), addr + 1);
        }
        // A kept address comes back: still its own.
        s.record(Kind::MmioWrite, Target::Mmio(0xc000_0000), 7);
        for port in 0..MAX_PORTS as u16 * 2 {
            s.record(Kind::IoIn, Target::Port(0x1000 + port), 10);
        }
        let s = s.sealed();
        assert_eq!(s.by_mmio_addr.len(), MAX_MMIO_ADDRS);
        assert_eq!(s.by_mmio_addr[&0xc000_0000].count, 2);
        let other = &s.by_mmio_addr_other;
        assert_eq!(other.count, 1000);
        assert_eq!(
            (other.min_ns, other.max_ns),
            (MAX_MMIO_ADDRS as u64 + 1, addrs)
        );
        let kept_ns: u64 = s.by_mmio_addr.values().map(|l| l.total_ns).sum();
        assert_eq!(kept_ns + other.total_ns, addrs * (addrs + 1) / 2 + 7);
        let in_histogram: u64 = other.log2_histogram.iter().map(|(_, n)| n).sum();
        assert_eq!(in_histogram, 1000);
        assert_eq!(s.count(Kind::MmioRead), addrs, "by kind: every exit");
        assert_eq!(s.by_port.len(), MAX_PORTS);
        assert_eq!(s.by_port_other.count, MAX_PORTS as u64);
        assert_eq!(s.count(Kind::IoIn), 2 * MAX_PORTS as u64);
    }
}
