//! What results.json keeps of the kvm backend's account of a VM (the VMM's
//! `vmm.json`, [`vmbench_vmm::account`]): the orchestrator's own types,
//! filled from the VMM's by [`VmmAccount::from_vmm`]. The fields and their
//! JSON shape are the VMM's, so a reader finds the same keys in both files,
//! but a change to the VMM's format reaches results.json only through this
//! one conversion (and results.json's own schema version).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vmbench_vmm::account as vmm;
use vmbench_vmm::exits as vmm_exits;

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VmmEnd {
    /// The guest reset the machine through the i8042 controller.
    Reset,
    /// A triple fault: how a guest with `reboot=t` reboots, powers off or panics.
    TripleFault,
    /// The VM could not go on; `detail` says why.
    Failed { detail: String },
    /// The VMM was stopped by a signal (vmbench's SIGTERM on a timeout).
    Stopped { signal: i32 },
}

impl VmmEnd {
    /// How the exits table names it.
    pub fn label(&self) -> String {
        match self {
            VmmEnd::Reset => "reset".into(),
            VmmEnd::TripleFault => "triple fault".into(),
            VmmEnd::Failed { .. } => "failed".into(),
            VmmEnd::Stopped { signal } => format!("stopped by signal {signal}"),
        }
    }
}

/// Exits of one kind or target: how many, and how long the VMM took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitLatency {
    pub count: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Non-empty buckets: (log2 of the bucket's lower bound in ns, count).
    pub log2_histogram: Vec<(u32, u64)>,
}

impl ExitLatency {
    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ns as f64 / self.count as f64
        }
    }

    /// Adds `other`'s exits to these (histograms are left as they are).
    pub fn merge(&mut self, other: &ExitLatency) {
        self.min_ns = if self.count == 0 {
            other.min_ns
        } else {
            self.min_ns.min(other.min_ns)
        };
        // vmm.json is the VMM's, whose numbers a guest drives: saturate.
        self.count = self.count.saturating_add(other.count);
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// One vCPU's userspace exits, by kind (`io_in`, `io_out`, `mmio_read`,
/// `mmio_write`, `other`), by I/O port and by MMIO address: the VMM keeps
/// the first ports and addresses apart and the exits to all others in
/// `by_port_other` and `by_mmio_addr_other`. (Those two are absent from
/// results.json files written before the VMM bounded its tables, hence
/// `default`.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VcpuExits {
    pub by_kind: BTreeMap<String, ExitLatency>,
    pub by_port: BTreeMap<u16, ExitLatency>,
    #[serde(default)]
    pub by_port_other: ExitLatency,
    pub by_mmio_addr: BTreeMap<u64, ExitLatency>,
    #[serde(default)]
    pub by_mmio_addr_other: ExitLatency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcpuAccount {
    pub index: u32,
    /// CLOCK_MONOTONIC ns of its first KVM_RUN.
    pub first_run_ns: Option<u64>,
    pub exits: VcpuExits,
    /// KVM's own statistics (`{"Ok": {name: value}}`), or why they could
    /// not be read (`{"Err": "…"}`).
    pub kvm_stats: Result<BTreeMap<String, u64>, String>,
}

/// The VMM's memory at the end of the VM.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct VmmMemory {
    pub max_rss_kib: u64,
    pub guest_resident_kib: u64,
    pub vmm_overhead_kib: u64,
}

/// The kvm backend's account of one VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmAccount {
    pub end: VmmEnd,
    pub ended_by_vcpu: Option<u32>,
    /// The kernel's last console line about ending (reboot, power off, panic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_said: Option<String>,
    /// `pvh` or `linux64`.
    pub entry: String,
    /// CLOCK_MONOTONIC ns of the boot vCPU's first KVM_RUN, and of the end.
    pub first_run_ns: Option<u64>,
    pub end_ns: u64,
    pub vcpus: Vec<VcpuAccount>,
    /// Each virtio device's counters, by `<slot base>:<device type>`.
    pub devices: BTreeMap<String, BTreeMap<String, u64>>,
    /// (code, CLOCK_MONOTONIC ns) of each boot-marker write, taken at the
    /// exit: the VMM keeps the first 1024.
    pub boot_markers: Vec<(u8, u64)>,
    /// Marks after those, counted only. (The new counts are `default`:
    /// results.json files from before the VMM had them lack them.)
    #[serde(default)]
    pub boot_markers_not_kept: u64,
    /// Marks the VMM could not forward to vmbench's marker socket at once,
    /// dropped rather than stall the guest.
    #[serde(default)]
    pub boot_markers_not_forwarded: u64,
    /// Console lines timestamped by the VMM (CLOCK_MONOTONIC ns):
    /// `first_line`, `run_init`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub console_marks: BTreeMap<String, u64>,
    /// Accesses no device answered: the first ports and addresses apart,
    /// then all the others' together.
    pub unclaimed_ports: BTreeMap<u16, u64>,
    #[serde(default)]
    pub unclaimed_ports_other: u64,
    pub unclaimed_mmio: BTreeMap<u64, u64>,
    #[serde(default)]
    pub unclaimed_mmio_other: u64,
    pub virtio_bad_accesses: u64,
    /// Console output beyond the VMM's limit on serial.log, not written.
    #[serde(default)]
    pub serial_log_bytes_dropped: u64,
    pub memory: VmmMemory,
    /// The emulated-KVM fallback's completed instructions, by kind (`int3`,
    /// `ud2`, `clac`, `stac`, `popcnt`), when it was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulated_kvm: Option<EmulatedKvm>,
    /// Whether every VMM thread ran under its seccomp filter (false with
    /// `vmbench vmm --no-seccomp`).
    #[serde(default)]
    pub seccomp: bool,
    /// Benchmark windows the guest marked: the first 256, in the order they
    /// started. (The window fields are `default`: results.json files from
    /// before vmm.json version 3 lack them.)
    #[serde(default)]
    pub windows: Vec<VmmWindow>,
    /// Windows after those, counted only.
    #[serde(default)]
    pub windows_not_kept: u64,
    /// Starts while a window was open (the open one kept as never ended).
    #[serde(default)]
    pub windows_restarted: u64,
    /// Ends that matched no open window, ignored.
    #[serde(default)]
    pub window_ends_unmatched: u64,
}

/// Userspace exits of one kind within a window: how many, and the time
/// the VMM took for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowExits {
    pub count: u64,
    pub total_ns: u64,
}

impl WindowExits {
    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ns as f64 / self.count as f64
        }
    }
}

/// One benchmark window: what every vCPU did between the guest's start
/// and end marks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmWindow {
    pub id: u16,
    /// CLOCK_MONOTONIC ns of the start mark's last byte, and its vCPU.
    pub start_ns: u64,
    pub start_vcpu: u32,
    /// CLOCK_MONOTONIC ns of the end mark's first byte, and its vCPU; null
    /// when the window never ended.
    pub end_ns: Option<u64>,
    pub end_vcpu: Option<u32>,
    /// Userspace exits by kind (`io_in`, …; the marks' own left out); null
    /// when the window never ended.
    pub exits: Option<BTreeMap<String, WindowExits>>,
    /// The increase of KVM's counting statistics, every vCPU's summed
    /// (`{"Ok": {…}}`), or why they could not be read (`{"Err": "…"}`);
    /// null when the window never ended.
    pub kvm_stats: Option<Result<BTreeMap<String, u64>, String>>,
}

impl VmmWindow {
    /// Userspace exits of `kind` in the window (0 if none, or never ended).
    pub fn count(&self, kind: &str) -> u64 {
        self.exits
            .as_ref()
            .and_then(|e| e.get(kind))
            .map_or(0, |e| e.count)
    }
}

fn window(w: &vmbench_vmm::windows::Window) -> VmmWindow {
    VmmWindow {
        id: w.id,
        start_ns: w.start_ns,
        start_vcpu: w.start_vcpu,
        end_ns: w.end_ns,
        end_vcpu: w.end_vcpu,
        exits: w.exits.as_ref().map(|exits| {
            exits
                .iter()
                .map(|(kind, t)| {
                    let total = WindowExits {
                        count: t.count,
                        total_ns: t.total_ns,
                    };
                    (kind_name(*kind).to_string(), total)
                })
                .collect()
        }),
        kvm_stats: w.kvm_stats.clone(),
    }
}

/// What the emulated-KVM fallback did: a test aid on hosts whose KVM
/// emulates guest code, whose timings are the emulator's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmulatedKvm {
    pub recovered: BTreeMap<String, u64>,
}

fn latency(l: &vmm_exits::Latency) -> ExitLatency {
    ExitLatency {
        count: l.count,
        total_ns: l.total_ns,
        min_ns: l.min_ns,
        max_ns: l.max_ns,
        log2_histogram: l.log2_histogram.clone(),
    }
}

fn kind_name(kind: vmm_exits::Kind) -> &'static str {
    match kind {
        vmm_exits::Kind::IoIn => "io_in",
        vmm_exits::Kind::IoOut => "io_out",
        vmm_exits::Kind::MmioRead => "mmio_read",
        vmm_exits::Kind::MmioWrite => "mmio_write",
        vmm_exits::Kind::Emulation => "emulation",
        vmm_exits::Kind::Other => "other",
    }
}

impl VmmAccount {
    pub fn from_vmm(account: &vmm::Account) -> VmmAccount {
        VmmAccount {
            end: match &account.end {
                vmm::End::Reset => VmmEnd::Reset,
                vmm::End::TripleFault => VmmEnd::TripleFault,
                vmm::End::Failed { detail } => VmmEnd::Failed {
                    detail: detail.clone(),
                },
                vmm::End::Stopped { signal } => VmmEnd::Stopped { signal: *signal },
            },
            ended_by_vcpu: account.ended_by_vcpu,
            guest_said: account.guest_said.clone(),
            entry: account.entry.clone(),
            first_run_ns: account.first_run_ns,
            end_ns: account.end_ns,
            vcpus: account
                .vcpus
                .iter()
                .map(|v| VcpuAccount {
                    index: v.index,
                    first_run_ns: v.first_run_ns,
                    exits: VcpuExits {
                        by_kind: v
                            .exits
                            .by_kind
                            .iter()
                            .map(|(k, l)| (kind_name(*k).to_string(), latency(l)))
                            .collect(),
                        by_port: v
                            .exits
                            .by_port
                            .iter()
                            .map(|(p, l)| (*p, latency(l)))
                            .collect(),
                        by_port_other: latency(&v.exits.by_port_other),
                        by_mmio_addr: v
                            .exits
                            .by_mmio_addr
                            .iter()
                            .map(|(a, l)| (*a, latency(l)))
                            .collect(),
                        by_mmio_addr_other: latency(&v.exits.by_mmio_addr_other),
                    },
                    kvm_stats: v.kvm_stats.clone(),
                })
                .collect(),
            devices: account.devices.clone(),
            boot_markers: account.boot_markers.clone(),
            boot_markers_not_kept: account.boot_markers_not_kept,
            boot_markers_not_forwarded: account.boot_markers_not_forwarded,
            console_marks: account.console_marks.clone(),
            unclaimed_ports: account.unclaimed_ports.clone(),
            unclaimed_ports_other: account.unclaimed_ports_other,
            unclaimed_mmio: account.unclaimed_mmio.clone(),
            unclaimed_mmio_other: account.unclaimed_mmio_other,
            virtio_bad_accesses: account.virtio_bad_accesses,
            serial_log_bytes_dropped: account.serial_log_bytes_dropped,
            memory: VmmMemory {
                max_rss_kib: account.memory.max_rss_kib,
                guest_resident_kib: account.memory.guest_resident_kib,
                vmm_overhead_kib: account.memory.vmm_overhead_kib,
            },
            emulated_kvm: account.emulated_kvm.as_ref().map(|c| EmulatedKvm {
                recovered: c
                    .recovered
                    .iter()
                    .map(|(kind, n)| (kind.name().to_string(), *n))
                    .collect(),
            }),
            seccomp: account.seccomp,
            windows: account.windows.iter().map(window).collect(),
            windows_not_kept: account.windows_not_kept,
            windows_restarted: account.windows_restarted,
            window_ends_unmatched: account.window_ends_unmatched,
        }
    }

    /// Exits of `kind` (`io_out`, …) over every vCPU.
    pub fn count(&self, kind: &str) -> u64 {
        self.vcpus
            .iter()
            .filter_map(|v| v.exits.by_kind.get(kind))
            .map(|l| l.count)
            .fold(0, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use vmbench_vmm::windows::{ExitTotal, Window};

    #[test]
    fn the_vmms_account_keeps_its_json_shape() {
        let mut exits = vmm_exits::ExitStats::default();
        exits.record(vmm_exits::Kind::IoOut, vmm_exits::Target::Port(0x3f8), 700);
        exits.record(
            vmm_exits::Kind::MmioRead,
            vmm_exits::Target::Mmio(0xd000_0000),
            900,
        );
        // Beyond the VMM's table: the rest lands in `by_mmio_addr_other`.
        for addr in 0..vmm_exits::MAX_MMIO_ADDRS as u64 + 3 {
            exits.record(
                vmm_exits::Kind::MmioWrite,
                vmm_exits::Target::Mmio(0xc000_0000 + addr),
                50 + addr,
            );
        }
        let account = vmm::Account {
            schema_version: vmm::SCHEMA_VERSION,
            end: vmm::End::Failed { detail: "x".into() },
            ended_by_vcpu: Some(0),
            guest_said: None,
            entry: "pvh".into(),
            first_run_ns: Some(5),
            end_ns: 9,
            vcpus: vec![vmm::VcpuAccount {
                index: 0,
                first_run_ns: Some(5),
                exits: exits.sealed(),
                kvm_stats: Err("no stats".into()),
                recovered: Default::default(),
            }],
            devices: BTreeMap::new(),
            boot_markers: vec![(0x60, 7)],
            boot_markers_not_kept: 3,
            boot_markers_not_forwarded: 2,
            console_marks: BTreeMap::from([("run_init".to_string(), 6)]),
            unclaimed_ports: BTreeMap::new(),
            unclaimed_ports_other: 4,
            unclaimed_mmio: BTreeMap::new(),
            unclaimed_mmio_other: 5,
            virtio_bad_accesses: 0,
            serial_log_bytes_dropped: 6,
            memory: vmm::MemoryUse::default(),
            emulated_kvm: Some(vmbench_vmm::emulated_kvm::Counts::default()),
            seccomp: true,
            windows: vec![
                Window {
                    id: 7,
                    start_ns: 10,
                    start_vcpu: 0,
                    end_ns: Some(20),
                    end_vcpu: Some(1),
                    exits: Some(BTreeMap::from([(
                        vmm_exits::Kind::IoIn,
                        ExitTotal {
                            count: 3,
                            total_ns: 900,
                        },
                    )])),
                    kvm_stats: Some(Ok(BTreeMap::from([("io_exits".to_string(), 3)]))),
                },
                Window {
                    id: 8,
                    start_ns: 30,
                    start_vcpu: 0,
                    end_ns: None,
                    end_vcpu: None,
                    exits: None,
                    kvm_stats: None,
                },
            ],
            windows_not_kept: 44,
            windows_restarted: 1,
            window_ends_unmatched: 2,
        };
        let ours = serde_json::to_value(VmmAccount::from_vmm(&account)).unwrap();
        let mut theirs = serde_json::to_value(&account).unwrap();
        theirs.as_object_mut().unwrap().remove("schema_version");
        assert_eq!(ours, theirs);
        let copy = VmmAccount::from_vmm(&account);
        assert_eq!(copy.count("io_out"), 1);
        assert_eq!(
            copy.vcpus[0].exits.by_mmio_addr_other.count, 4,
            "0xd0000000 and 511 more kept"
        );
        assert_eq!(copy.windows[0].count("io_in"), 3);
        assert_eq!(
            copy.windows[0].exits.as_ref().unwrap()["io_in"].mean_ns(),
            300.0
        );
        assert_eq!(copy.windows[1].count("io_in"), 0);
    }
}
