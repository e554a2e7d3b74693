//! Benchmark windows: what a stretch of the guest's run cost in exits, for
//! all vCPUs together, as the guest marks it.
//!
//! # The marks
//! The guest writes `0xB0 lo hi` to the boot-marker port to start window
//! `hi << 8 | lo` and `0xB1 lo hi` to end it ([`crate::devices::marker`]
//! tells them from boot marks). Each byte is a port-I/O exit the VMM
//! handles in userspace, under the port-I/O lock, so marks are taken in one
//! order whichever vCPU writes them. A window runs from the start mark's
//! last byte to the end mark's first: `start_ns` and `end_ns` are those
//! two exits' times on the VMM's clock ([`crate::clock`]).
//!
//! At those two bytes the vCPU thread that handles the mark takes a
//! [`Snapshot`] of every vCPU: its userspace exits so far, by kind (count
//! and handling time), and KVM's statistics. The window is the difference.
//!
//! # Userspace exits of every vCPU, from one vCPU's thread
//! Each vCPU thread accounts its exits in tables only it touches
//! ([`crate::exits`]). For windows it also adds each exit's kind and time
//! to its [`ExitCounters`]: atomics only its thread writes and any thread
//! reads, behind a sequence number (a seqlock), so that a reader gets a
//! count and a time that go together without the writer ever waiting.
//! The marking vCPU's own counters are exact: its thread is the one
//! reading them, between two exits. Another vCPU's are those at the
//! instant they are read: an exit it was handling then counts on the side
//! its handling ended. A reader that keeps finding a writer mid-update
//! (preempted there) takes the values as they are after [`READ_TRIES`]
//! tries rather than wait: off by that one exit at most. The exits that
//! write window marks are never added to the counters, so no window holds
//! a mark's own exit, whichever vCPU wrote it.
//!
//! (Rejected: each vCPU snapshotting itself at its next exit, which would
//! be exact for userspace exits, since it has none in between; but a vCPU
//! that does not exit, halted or spinning in the guest, would keep the
//! window from closing, and KVM's statistics go on counting meanwhile.)
//!
//! # KVM's statistics
//! Each vCPU's statistics fd is opened with the VM ([`Attribution::new`]);
//! a snapshot reads every vCPU's data block with one `pread` each (vCPU
//! threads may: their seccomp filter allows `pread64`) and sums them, for
//! the statistics that count events (cumulative ones and histograms;
//! levels and peaks are left out, their differences mean nothing), and
//! keeps those that changed (most do not: an absent one is 0). KVM has
//! counted an exit before userspace sees it, so the end snapshot, taken at
//! the end mark's first byte, holds that byte's exit: the VMM measures one
//! mark exit as the marking vCPU's statistics from the end mark's first
//! byte to its second (the same instruction, `out` to port 0x80) and
//! subtracts it. The start snapshot, at the start mark's last byte, holds
//! that byte's exit already, as it should. So `exits` and `io_exits` are
//! exact, unless an interrupt reaches the marking vCPU between the end
//! mark's first two bytes (it is subtracted too); if those two bytes come
//! from different vCPUs the window's statistics are an error saying so.
//!
//! # What a guest cannot do
//! A window costs the VMM nothing until it ends; at most [`MAX_WINDOWS`]
//! are kept and the rest counted. A start while a window is open records
//! the open one as never ended (`end_ns` null) and counts a restart; an
//! end whose id is not the open window's, or with none open, is ignored
//! and counted. A snapshot reads as many fds as there are vCPUs, on the
//! marking vCPU's own time.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::devices::bus::lock;
use crate::devices::marker::WindowStep;
use crate::exits::Kind;
use crate::kvm_stats::StatsFd;

/// Windows kept in the account; the rest are counted.
pub const MAX_WINDOWS: usize = 256;

/// Times a reader retries a vCPU's counters it found mid-update.
pub const READ_TRIES: u32 = 1000;

/// Exits of one kind: how many, and the time the VMM took for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitTotal {
    pub count: u64,
    pub total_ns: u64,
}

/// Exits by kind, indexed by [`Kind::index`].
pub type KindTotals = [ExitTotal; Kind::ALL.len()];

/// One vCPU's exits by kind, written by its thread only, read by any.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Odd while the writer updates the counters.
    seq: AtomicU64,
    /// (count, total ns) by kind.
    by_kind: [(AtomicU64, AtomicU64); Kind::ALL.len()],
}

impl ExitCounters {
    /// Adds one exit. Only the vCPU's own thread calls this, so a plain
    /// load and store (no read-modify-write) is enough.
    pub fn record(&self, kind: Kind, ns: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let (count, total) = &self.by_kind[kind.index()];
        count.store(
            count.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        total.store(
            total.load(Ordering::Relaxed).saturating_add(ns),
            Ordering::Relaxed,
        );
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn load(&self) -> KindTotals {
        let mut totals = KindTotals::default();
        for (total, (count, ns)) in totals.iter_mut().zip(&self.by_kind) {
            total.count = count.load(Ordering::Relaxed);
            total.total_ns = ns.load(Ordering::Relaxed);
        }
        totals
    }

    /// The counters as one update left them, or `None` if the writer was
    /// mid-update at each of [`READ_TRIES`] tries.
    pub fn read_consistent(&self) -> Option<KindTotals> {
        for _ in 0..READ_TRIES {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let totals = self.load();
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return Some(totals);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// The counters now, never waiting on the writer (see the module's
    /// primer).
    pub fn read(&self) -> KindTotals {
        self.read_consistent().unwrap_or_else(|| self.load())
    }
}

/// KVM's counting statistics at a mark, in [`Attribution`]'s order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmReading {
    /// Every vCPU's, summed.
    pub all: Vec<u64>,
    /// The marking vCPU's own.
    pub own: Vec<u64>,
}

/// Every vCPU at one mark, as the marking vCPU's thread saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Userspace exits of every vCPU so far (window marks' excluded), summed.
    pub exits: KindTotals,
    pub kvm: Result<KvmReading, String>,
}

/// Where snapshots come from: the VM's vCPUs ([`Attribution`]), or a test's.
pub trait Probe {
    /// Every vCPU now, taken on vCPU `vcpu`'s thread.
    fn snapshot(&self, vcpu: u32) -> Snapshot;
    /// vCPU `vcpu`'s own counting statistics now.
    fn own_stats(&self, vcpu: u32) -> Result<Vec<u64>, String>;
}

/// One window as vmm.json keeps it (`windows[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub id: u16,
    /// The start mark's last byte's exit (CLOCK_MONOTONIC ns), and the vCPU that wrote it.
    pub start_ns: u64,
    pub start_vcpu: u32,
    /// The end mark's first byte's exit, and its vCPU; null if the window never ended.
    pub end_ns: Option<u64>,
    pub end_vcpu: Option<u32>,
    /// Userspace exits of every vCPU within the window, by kind (those
    /// that happened; null if the window never ended).
    pub exits: Option<BTreeMap<Kind, ExitTotal>>,
    /// The increase of each of KVM's counting statistics over the window,
    /// every vCPU's summed, those that changed only (absent: 0), or why
    /// they could not be read (null if the window never ended).
    pub kvm_stats: Option<Result<BTreeMap<String, u64>, String>>,
}

/// What the account keeps of the windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows {
    /// The first [`MAX_WINDOWS`], in the order they started.
    pub kept: Vec<Window>,
    /// Windows after those, ended or not: counted only.
    pub not_kept: u64,
    /// Starts while a window was open (the open one is kept as never ended).
    pub restarted: u64,
    /// Ends that matched no open window (another id, or none open): ignored.
    pub ends_unmatched: u64,
}

#[derive(Debug)]
struct Open {
    id: u16,
    start_ns: u64,
    start_vcpu: u32,
    at_start: Snapshot,
}

/// The end mark's first byte, taken while a window was open.
#[derive(Debug)]
struct PendingEnd {
    at_ns: u64,
    vcpu: u32,
    snapshot: Snapshot,
    /// One mark exit's statistics on the marking vCPU, measured at the end
    /// mark's second byte.
    mark: Option<Result<Vec<u64>, String>>,
}

/// A window's end, in the compact form kept until the account is written.
#[derive(Debug)]
struct Ended {
    end_ns: u64,
    end_vcpu: u32,
    exits: KindTotals,
    kvm: Result<Vec<u64>, String>,
}

#[derive(Debug)]
struct Recorded {
    id: u16,
    start_ns: u64,
    start_vcpu: u32,
    end: Option<Ended>,
}

/// The windows of one VM: the state machine the marks drive (under the
/// port-I/O lock) and what it recorded. Pure: the snapshots come from a
/// [`Probe`].
#[derive(Debug, Default)]
pub struct Recorder {
    open: Option<Open>,
    end: Option<PendingEnd>,
    recorded: Vec<Recorded>,
    not_kept: u64,
    restarted: u64,
    ends_unmatched: u64,
}

fn minus(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(a, b)| a.saturating_sub(*b)).collect()
}

impl Recorder {
    /// A window mark's byte, written by vCPU `vcpu` at `at_ns`.
    pub fn step(&mut self, step: WindowStep, vcpu: u32, at_ns: u64, probe: &impl Probe) {
        match step {
            WindowStep::StartCode | WindowStep::StartLow => {}
            WindowStep::Start(id) => {
                let at_start = probe.snapshot(vcpu);
                if let Some(open) = self.open.take() {
                    self.restarted += 1;
                    self.keep(open, None);
                }
                self.end = None;
                self.open = Some(Open {
                    id,
                    start_ns: at_ns,
                    start_vcpu: vcpu,
                    at_start,
                });
            }
            WindowStep::EndCode => {
                self.end = self.open.is_some().then(|| PendingEnd {
                    at_ns,
                    vcpu,
                    snapshot: probe.snapshot(vcpu),
                    mark: None,
                });
            }
            WindowStep::EndLow => {
                if let Some(pending) = &mut self.end {
                    pending.mark = Some(match &pending.snapshot.kvm {
                        Err(e) => Err(e.clone()),
                        Ok(_) if pending.vcpu != vcpu => Err(format!(
                            "the end mark's first two bytes came from vCPUs {} and {vcpu}: its own exit cannot be told apart",
                            pending.vcpu
                        )),
                        Ok(at_code) => probe
                            .own_stats(vcpu)
                            .map(|now| minus(&now, &at_code.own)),
                    });
                }
            }
            WindowStep::End(id) => match (self.open.take(), self.end.take()) {
                (Some(open), Some(pending)) if open.id == id => {
                    let ended = Self::ended(&open.at_start, pending);
                    self.keep(open, Some(ended));
                }
                (open, _) => {
                    self.open = open;
                    self.ends_unmatched += 1;
                }
            },
        }
    }

    fn ended(at_start: &Snapshot, pending: PendingEnd) -> Ended {
        let mut exits = KindTotals::default();
        for ((window, end), start) in exits
            .iter_mut()
            .zip(&pending.snapshot.exits)
            .zip(&at_start.exits)
        {
            window.count = end.count.saturating_sub(start.count);
            window.total_ns = end.total_ns.saturating_sub(start.total_ns);
        }
        let mark = pending
            .mark
            .unwrap_or_else(|| Err("the end mark's second byte never came".into()));
        let kvm = match (&at_start.kvm, &pending.snapshot.kvm, mark) {
            (Ok(start), Ok(end), Ok(mark)) => Ok(minus(&minus(&end.all, &start.all), &mark)),
            (Err(e), _, _) | (_, Err(e), _) => Err(e.clone()),
            (_, _, Err(e)) => Err(e),
        };
        Ended {
            end_ns: pending.at_ns,
            end_vcpu: pending.vcpu,
            exits,
            kvm,
        }
    }

    fn keep(&mut self, open: Open, end: Option<Ended>) {
        if self.recorded.len() < MAX_WINDOWS {
            self.recorded.push(Recorded {
                id: open.id,
                start_ns: open.start_ns,
                start_vcpu: open.start_vcpu,
                end,
            });
        } else {
            self.not_kept += 1;
        }
    }

    /// The windows when the VM has ended: one still open is kept as never
    /// ended. `names`: the counting statistics' names, in the snapshots' order.
    pub fn finish(&mut self, names: &[String]) -> Windows {
        if let Some(open) = self.open.take() {
            self.keep(open, None);
        }
        self.end = None;
        let kept = self
            .recorded
            .drain(..)
            .map(|r| {
                let end = r.end.map(|e| {
                    let exits: BTreeMap<Kind, ExitTotal> = Kind::ALL
                        .into_iter()
                        .zip(e.exits)
                        .filter(|(_, t)| t.count > 0)
                        .collect();
                    // Those that changed: most do not, and 256 windows of
                    // every statistic would take a MiB of the VMM's memory.
                    let kvm = e.kvm.map(|values| {
                        names
                            .iter()
                            .zip(values)
                            .filter(|(_, v)| *v > 0)
                            .map(|(name, v)| (name.clone(), v))
                            .collect()
                    });
                    (e.end_ns, e.end_vcpu, exits, kvm)
                });
                Window {
                    id: r.id,
                    start_ns: r.start_ns,
                    start_vcpu: r.start_vcpu,
                    end_ns: end.as_ref().map(|e| e.0),
                    end_vcpu: end.as_ref().map(|e| e.1),
                    exits: end.as_ref().map(|e| e.2.clone()),
                    kvm_stats: end.map(|e| e.3),
                }
            })
            .collect();
        Windows {
            kept,
            not_kept: self.not_kept,
            restarted: self.restarted,
            ends_unmatched: self.ends_unmatched,
        }
    }
}

/// KVM's statistics fds of every vCPU, opened with the VM.
#[derive(Debug)]
struct VcpuStats {
    fds: Vec<StatsFd>,
    /// Which of a fd's statistics count events, by their place in its layout.
    counting: Vec<usize>,
    names: Vec<String>,
}

impl VcpuStats {
    fn open(vcpus: &[impl AsRawFd]) -> Result<VcpuStats, String> {
        let fds = vcpus
            .iter()
            .map(StatsFd::open)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let Some(first) = fds.first() else {
            return Ok(VcpuStats {
                fds,
                counting: Vec::new(),
                names: Vec::new(),
            });
        };
        if fds.iter().any(|fd| fd.layout() != first.layout()) {
            return Err("the vCPUs' KVM statistics differ in layout".into());
        }
        let stats = &first.layout().stats;
        let counting: Vec<usize> = (0..stats.len())
            .filter(|&i| stats[i].kind.counts())
            .collect();
        let names = counting.iter().map(|&i| stats[i].name.clone()).collect();
        Ok(VcpuStats {
            fds,
            counting,
            names,
        })
    }

    fn own(&self, vcpu: u32) -> Result<Vec<u64>, String> {
        let fd = self
            .fds
            .get(vcpu as usize)
            .ok_or_else(|| format!("no vCPU {vcpu}"))?;
        let values = fd.values().map_err(|e| e.to_string())?;
        Ok(self.counting.iter().map(|&i| values[i]).collect())
    }
}

/// The VM's side of windows: every vCPU's counters and statistics fds, and
/// the recorder the marks drive.
#[derive(Debug)]
pub struct Attribution {
    counters: Vec<ExitCounters>,
    stats: Result<VcpuStats, String>,
    recorder: Mutex<Recorder>,
}

impl Attribution {
    /// For the VM's vCPUs, in index order: opens their statistics fds
    /// (during setup, before the seccomp filters). Statistics that cannot
    /// be had (a kernel before 5.14) make every window's an error.
    pub fn new(vcpus: &[impl AsRawFd]) -> Attribution {
        Attribution {
            counters: vcpus.iter().map(|_| ExitCounters::default()).collect(),
            stats: VcpuStats::open(vcpus),
            recorder: Mutex::default(),
        }
    }

    /// vCPU `vcpu`'s counters, for its thread to record into.
    pub fn counters(&self, vcpu: u32) -> Option<&ExitCounters> {
        self.counters.get(vcpu as usize)
    }

    /// A window mark's byte, on vCPU `vcpu`'s thread, at `at_ns`.
    pub fn on_step(&self, step: WindowStep, vcpu: u32, at_ns: u64) {
        lock(&self.recorder).step(step, vcpu, at_ns, self);
    }

    /// The windows, once the VM has ended.
    pub fn finish(&self) -> Windows {
        let names = self.stats.as_ref().map(|s| &s.names[..]).unwrap_or(&[]);
        lock(&self.recorder).finish(names)
    }
}

impl Probe for Attribution {
    fn snapshot(&self, vcpu: u32) -> Snapshot {
        let mut exits = KindTotals::default();
        for counters in &self.counters {
            for (sum, one) in exits.iter_mut().zip(counters.read()) {
                sum.count = sum.count.saturating_add(one.count);
                sum.total_ns = sum.total_ns.saturating_add(one.total_ns);
            }
        }
        let kvm = self.stats.clone_err().and_then(|stats| {
            let mut all = vec![0u64; stats.counting.len()];
            let mut own = Vec::new();
            for index in 0..stats.fds.len() as u32 {
                let values = stats.own(index)?;
                for (sum, value) in all.iter_mut().zip(&values) {
                    *sum = sum.saturating_add(*value);
                }
                if index == vcpu {
                    own = values;
                }
            }
            Ok(KvmReading { all, own })
        });
        Snapshot { exits, kvm }
    }

    fn own_stats(&self, vcpu: u32) -> Result<Vec<u64>, String> {
        self.stats.clone_err()?.own(vcpu)
    }
}

/// `Result<&T, String>` from `&Result<T, String>`.
trait CloneErr<T> {
    fn clone_err(&self) -> Result<&T, String>;
}

impl<T> CloneErr<T> for Result<T, String> {
    fn clone_err(&self) -> Result<&T, String> {
        self.as_ref().map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::*;
    use WindowStep::*;

    /// vCPUs whose exits and statistics a test sets: statistics are
    /// (`exits`, `io_exits`, `hypercalls`) per vCPU; no test makes a hypercall.
    struct FakeVcpus {
        exits: RefCell<Vec<KindTotals>>,
        stats: RefCell<Vec<Vec<u64>>>,
    }

    impl FakeVcpus {
        fn new(vcpus: usize) -> FakeVcpus {
            FakeVcpus {
                exits: RefCell::new(vec![KindTotals::default(); vcpus]),
                stats: RefCell::new(vec![vec![0, 0, 0]; vcpus]),
            }
        }

        /// vCPU `vcpu` makes `n` userspace exits of `kind`, 100 ns each,
        /// each also an exit and an I/O exit to KVM.
        fn exit(&self, vcpu: usize, kind: Kind, n: u64) {
            let total = &mut self.exits.borrow_mut()[vcpu][kind.index()];
            total.count += n;
            total.total_ns += 100 * n;
            self.kvm_exit(vcpu, n, n);
        }

        /// vCPU `vcpu` makes exits KVM handles itself.
        fn kvm_exit(&self, vcpu: usize, exits: u64, io_exits: u64) {
            let stats = &mut self.stats.borrow_mut()[vcpu];
            stats[0] += exits;
            stats[1] += io_exits;
        }

        /// A window mark's byte from vCPU `vcpu`: KVM counts its exit
        /// before the VMM sees it; the VMM's counters never do.
        fn mark(&self, r: &mut Recorder, step: WindowStep, vcpu: usize, at_ns: u64) {
            self.kvm_exit(vcpu, 1, 1);
            r.step(step, vcpu as u32, at_ns, self);
        }

        fn marks(&self, r: &mut Recorder, steps: [WindowStep; 3], vcpu: usize, at_ns: u64) {
            for (i, step) in steps.into_iter().enumerate() {
                self.mark(r, step, vcpu, at_ns + i as u64);
            }
        }
    }

    impl Probe for FakeVcpus {
        fn snapshot(&self, vcpu: u32) -> Snapshot {
            let mut exits = KindTotals::default();
            for one in self.exits.borrow().iter() {
                for (sum, e) in exits.iter_mut().zip(one) {
                    sum.count += e.count;
                    sum.total_ns += e.total_ns;
                }
            }
            let stats = self.stats.borrow();
            let all = (0..3).map(|i| stats.iter().map(|s| s[i]).sum()).collect();
            Snapshot {
                exits,
                kvm: Ok(KvmReading {
                    all,
                    own: stats[vcpu as usize].clone(),
                }),
            }
        }

        fn own_stats(&self, vcpu: u32) -> Result<Vec<u64>, String> {
            Ok(self.stats.borrow()[vcpu as usize].clone())
        }
    }

    fn names() -> Vec<String> {
        vec!["exits".into(), "io_exits".into(), "hypercalls".into()]
    }

    fn start(id: u16) -> [WindowStep; 3] {
        [StartCode, StartLow, Start(id)]
    }

    fn end(id: u16) -> [WindowStep; 3] {
        [EndCode, EndLow, End(id)]
    }

    /// Exits on two vCPUs, before, within and after the window: the window
    /// holds exactly those within, userspace and KVM's, not the marks'.
    #[test]
    fn a_window_is_what_every_vcpu_did_between_its_marks() {
        let vcpus = FakeVcpus::new(2);
        let mut r = Recorder::default();
        vcpus.exit(0, Kind::IoOut, 5);
        vcpus.exit(1, Kind::MmioRead, 3);
        vcpus.marks(&mut r, start(7), 0, 1000);
        vcpus.exit(0, Kind::IoIn, 10);
        vcpus.exit(1, Kind::MmioRead, 2);
        vcpus.kvm_exit(1, 40, 0);
        vcpus.marks(&mut r, end(7), 0, 2000);
        vcpus.exit(0, Kind::IoIn, 99);
        let w = r.finish(&names());
        assert_eq!((w.not_kept, w.restarted, w.ends_unmatched), (0, 0, 0));
        let [window] = &w.kept[..] else {
            panic!("one window: {w:?}")
        };
        assert_eq!(
            (window.id, window.start_ns, window.end_ns),
            (7, 1002, Some(2000))
        );
        assert_eq!((window.start_vcpu, window.end_vcpu), (0, Some(0)));
        let exits = window.exits.as_ref().unwrap();
        assert_eq!(
            exits,
            &BTreeMap::from([
                (
                    Kind::IoIn,
                    ExitTotal {
                        count: 10,
                        total_ns: 1000
                    }
                ),
                (
                    Kind::MmioRead,
                    ExitTotal {
                        count: 2,
                        total_ns: 200
                    }
                ),
            ])
        );
        let kvm = window.kvm_stats.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(kvm["exits"], 10 + 2 + 40, "the marks' own exits left out");
        assert_eq!(kvm["io_exits"], 12);
    }

    #[test]
    fn a_second_start_keeps_the_first_window_unended() {
        let vcpus = FakeVcpus::new(1);
        let mut r = Recorder::default();
        vcpus.marks(&mut r, start(1), 0, 10);
        vcpus.marks(&mut r, start(2), 0, 20);
        vcpus.exit(0, Kind::IoIn, 4);
        vcpus.kvm_exit(0, 2, 0);
        vcpus.marks(&mut r, end(2), 0, 30);
        let w = r.finish(&names());
        assert_eq!(w.restarted, 1);
        assert_eq!(w.kept.len(), 2);
        let (first, second) = (&w.kept[0], &w.kept[1]);
        assert_eq!((first.id, first.end_ns, &first.exits), (1, None, &None));
        assert_eq!(first.kvm_stats, None);
        assert_eq!((second.id, second.end_ns), (2, Some(30)));
        assert_eq!(second.exits.as_ref().unwrap()[&Kind::IoIn].count, 4);
        // KVM's statistics that did not change are left out.
        let kvm = second.kvm_stats.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(
            kvm,
            &BTreeMap::from([("exits".into(), 6), ("io_exits".into(), 4)])
        );
    }

    /// An end with another id, or with no window open, changes nothing but
    /// its count: the open window goes on to its own end.
    #[test]
    fn an_end_that_matches_no_open_window_is_ignored_and_counted() {
        let vcpus = FakeVcpus::new(1);
        let mut r = Recorder::default();
        vcpus.marks(&mut r, end(3), 0, 5);
        vcpus.marks(&mut r, start(3), 0, 10);
        vcpus.exit(0, Kind::IoIn, 1);
        vcpus.marks(&mut r, end(4), 0, 20);
        vcpus.exit(0, Kind::IoIn, 1);
        vcpus.marks(&mut r, end(3), 0, 30);
        let w = r.finish(&names());
        assert_eq!(w.ends_unmatched, 2);
        let [window] = &w.kept[..] else {
            panic!("{w:?}")
        };
        assert_eq!((window.id, window.end_ns), (3, Some(30)));
        assert_eq!(window.exits.as_ref().unwrap()[&Kind::IoIn].count, 2);
        // The unmatched end's marks are no one's: KVM's count less them.
        let kvm = window.kvm_stats.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(
            kvm["exits"],
            2 + 3,
            "the stray end's three bytes are in the window"
        );
    }

    #[test]
    fn a_window_open_at_the_end_is_kept_unended_and_a_cut_end_ends_nothing() {
        let vcpus = FakeVcpus::new(1);
        let mut r = Recorder::default();
        vcpus.marks(&mut r, start(9), 0, 10);
        vcpus.mark(&mut r, EndCode, 0, 20);
        vcpus.mark(&mut r, EndLow, 0, 21);
        let w = r.finish(&names());
        let [window] = &w.kept[..] else {
            panic!("{w:?}")
        };
        assert_eq!((window.id, window.end_ns, window.end_vcpu), (9, None, None));
        assert_eq!(w.ends_unmatched, 0);
    }

    #[test]
    fn the_first_windows_are_kept_and_the_rest_counted() {
        let vcpus = FakeVcpus::new(1);
        let mut r = Recorder::default();
        for id in 0..300u16 {
            vcpus.marks(&mut r, start(id), 0, u64::from(id) * 10);
            vcpus.marks(&mut r, end(id), 0, u64::from(id) * 10 + 5);
        }
        // And one never ended, beyond the limit too.
        vcpus.marks(&mut r, start(300), 0, 5000);
        let w = r.finish(&names());
        assert_eq!(w.kept.len(), MAX_WINDOWS);
        assert_eq!(w.not_kept, 300 + 1 - MAX_WINDOWS as u64);
        assert!(w.kept.iter().enumerate().all(|(i, w)| w.id == i as u16));
    }

    /// The end mark's first two bytes from two vCPUs (the guest's thread
    /// moved between them): the mark's own exit cannot be measured, and
    /// the window says so rather than count it.
    #[test]
    fn an_end_mark_split_over_two_vcpus_makes_the_statistics_an_error() {
        let vcpus = FakeVcpus::new(2);
        let mut r = Recorder::default();
        vcpus.marks(&mut r, start(1), 0, 10);
        vcpus.exit(1, Kind::IoIn, 3);
        vcpus.mark(&mut r, EndCode, 0, 20);
        vcpus.mark(&mut r, EndLow, 1, 21);
        vcpus.mark(&mut r, End(1), 1, 22);
        let w = r.finish(&names());
        let window = &w.kept[0];
        assert_eq!(window.end_vcpu, Some(0));
        assert_eq!(window.exits.as_ref().unwrap()[&Kind::IoIn].count, 3);
        let err = window.kvm_stats.clone().unwrap().unwrap_err();
        assert!(err.contains("vCPUs 0 and 1"), "{err}");
    }

    /// Snapshots of statistics that could not be read make the window's an
    /// error with the reason; its userspace exits are still there.
    #[test]
    fn statistics_that_cannot_be_read_are_an_error_in_the_window() {
        struct NoStats;
        impl Probe for NoStats {
            fn snapshot(&self, _: u32) -> Snapshot {
                Snapshot {
                    exits: KindTotals::default(),
                    kvm: Err("KVM_GET_STATS_FD failed".into()),
                }
            }
            fn own_stats(&self, _: u32) -> Result<Vec<u64>, String> {
                unreachable!("not asked once a snapshot failed")
            }
        }
        let mut r = Recorder::default();
        for step in start(1).into_iter().chain(end(1)) {
            r.step(step, 0, 1, &NoStats);
        }
        let w = r.finish(&names());
        assert_eq!(
            w.kept[0].kvm_stats,
            Some(Err("KVM_GET_STATS_FD failed".into()))
        );
        assert_eq!(w.kept[0].exits, Some(BTreeMap::new()));
    }

    /// A writer thread records exits of 1 ns each while this thread reads:
    /// every consistent read has as many nanoseconds as exits.
    #[test]
    fn counters_read_from_another_thread_are_consistent() {
        let counters = Arc::new(ExitCounters::default());
        let writer = {
            let counters = counters.clone();
            std::thread::spawn(move || {
                for i in 0..200_000u64 {
                    let kind = Kind::ALL[(i % 2) as usize];
                    counters.record(kind, 1);
                }
            })
        };
        while !writer.is_finished() {
            if let Some(totals) = counters.read_consistent() {
                for t in totals {
                    assert_eq!(t.count, t.total_ns, "{totals:?}");
                }
            }
        }
        writer.join().unwrap();
        let totals = counters.read();
        assert_eq!(totals[Kind::IoIn.index()].count, 100_000);
        assert_eq!(totals[Kind::IoOut.index()].total_ns, 100_000);
    }
}
