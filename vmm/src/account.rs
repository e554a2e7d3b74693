//! The VMM's account of a VM, `<dir>/vmm.json`: how it ended, when its
//! first `KVM_RUN` was, the boot marks, every userspace exit per vCPU with
//! its latency, KVM's own statistics, device counters and memory use.
//!
//! This is the VMM's one output format, versioned by [`SCHEMA_VERSION`] and
//! described field by field in `docs/vmm-json.md`. Every `_ns` time is
//! CLOCK_MONOTONIC ([`crate::clock`]). It is written once, when the VM
//! ends (on a stop signal too), atomically: a reader sees the whole file
//! or none.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exits::ExitStats;
use crate::windows::Window;

/// Bump when a field changes meaning or is removed; adding one is not a change.
/// 2: the tables a guest fills are bounded (`boot_markers`, `unclaimed_*`,
/// `by_port`, `by_mmio_addr`), each with a count of the rest beside it.
/// 3: benchmark windows (`windows`, `windows_not_kept`, …); port 0x80's
/// window marks are no longer noise, port 0x0EE0 no longer unclaimed.
pub const SCHEMA_VERSION: u32 = 3;

/// Where the account of the VM in `dir` is.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(crate::vm_dir::ACCOUNT)
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum End {
    /// The guest reset the machine through the i8042 controller.
    Reset,
    /// A triple fault (`reboot=t`): KVM reports a shutdown.
    TripleFault,
    /// The VM could not go on; `detail` says why, with registers where KVM had them.
    Failed { detail: String },
    /// The VMM was told to stop (SIGTERM or SIGINT), e.g. by `vmbench boot` on a timeout.
    Stopped { signal: i32 },
}

/// What the VMM saw, written to `<dir>/vmm.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// [`SCHEMA_VERSION`] of the VMM that wrote it.
    pub schema_version: u32,
    pub end: End,
    /// The vCPU whose exit ended the VM (none when stopped from outside).
    pub ended_by_vcpu: Option<u32>,
    /// What the kernel said last about ending, from its console: a reboot, a
    /// power off and a panic all end in the same triple fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_said: Option<String>,
    /// `pvh` or `linux64`.
    pub entry: String,
    /// CLOCK_MONOTONIC ns of the boot vCPU's first KVM_RUN (`vmm_ready`) and of the end.
    pub first_run_ns: Option<u64>,
    pub end_ns: u64,
    pub vcpus: Vec<VcpuAccount>,
    /// Each virtio device's counters, by `<slot base>:<device type>`.
    pub devices: BTreeMap<String, BTreeMap<String, u64>>,
    /// Boot-marker codes with their host times: the first
    /// [`crate::devices::marker::MAX_MARKS`].
    pub boot_markers: Vec<(u8, u64)>,
    /// Marks written after those, counted only. (`default`: so that a file
    /// of another version is refused for its version, not a missing field.)
    #[serde(default)]
    pub boot_markers_not_kept: u64,
    /// Marks a reader of `marker.sock` was connected for but did not get:
    /// the VMM never waits for it, it drops what the socket cannot take.
    #[serde(default)]
    pub boot_markers_not_forwarded: u64,
    /// Console lines timestamped at the exit that ended them
    /// (CLOCK_MONOTONIC ns): `first_line`, and `run_init` for the kernel's
    /// `Run … as init process`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub console_marks: BTreeMap<String, u64>,
    /// Accesses no device answered, by port: the first
    /// [`crate::devices::bus::MAX_UNCLAIMED_PORTS`] ports; then all others'.
    pub unclaimed_ports: BTreeMap<u16, u64>,
    #[serde(default)]
    pub unclaimed_ports_other: u64,
    /// The same by MMIO address, the first
    /// [`crate::devices::bus::MAX_UNCLAIMED_MMIO_ADDRS`].
    pub unclaimed_mmio: BTreeMap<u64, u64>,
    #[serde(default)]
    pub unclaimed_mmio_other: u64,
    /// Driver accesses the virtio-mmio transports ignored, all slots together.
    pub virtio_bad_accesses: u64,
    /// Console output beyond serial.log's limit
    /// ([`crate::devices::serial::LOG_MAX_BYTES`]), not written.
    #[serde(default)]
    pub serial_log_bytes_dropped: u64,
    pub memory: MemoryUse,
    /// With the emulated-KVM fallback on (a test aid for hosts whose KVM
    /// emulates guest code): the instructions it completed, by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulated_kvm: Option<crate::emulated_kvm::Counts>,
    /// Whether every VMM thread ran under its seccomp filter (false with
    /// `--no-seccomp`, and in an account from before the filters).
    #[serde(default)]
    pub seccomp: bool,
    /// Benchmark windows the guest marked ([`crate::windows`]): the first
    /// [`crate::windows::MAX_WINDOWS`], in the order they started.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Windows after those, counted only.
    #[serde(default)]
    pub windows_not_kept: u64,
    /// Window starts while a window was open: the open one is kept as never ended.
    #[serde(default)]
    pub windows_restarted: u64,
    /// Window ends that matched no open window, ignored.
    #[serde(default)]
    pub window_ends_unmatched: u64,
}

/// The VMM's memory at the end: its peak resident set, how much of that is
/// guest memory the guest touched, and the rest, the VMM's own overhead.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct MemoryUse {
    pub max_rss_kib: u64,
    pub guest_resident_kib: u64,
    pub vmm_overhead_kib: u64,
}

/// One vCPU's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcpuAccount {
    pub index: u32,
    pub first_run_ns: Option<u64>,
    /// Exits handled in userspace, by kind and target, with latencies.
    pub exits: ExitStats,
    /// KVM's own statistics for the vCPU, or why they could not be read.
    pub kvm_stats: Result<BTreeMap<String, u64>, String>,
    /// Instructions the emulated-KVM fallback completed on this vCPU; not
    /// in the file: the account's `emulated_kvm` sums them.
    #[serde(skip)]
    pub recovered: crate::emulated_kvm::Counts,
}

/// Writes `account` to `<dir>/vmm.json` through a temporary file and a
/// rename, so a reader never sees half of it. (Not synced: the account
/// matters to a reader on this host, and an fsync would lengthen the
/// VMM's exit, which the orchestrator measures as shutdown.)
pub fn write(dir: &Path, account: &Account) -> std::io::Result<()> {
    let path = path_in(dir);
    let tmp = path.with_extension("json.tmp");
    // One write(2) per buffer, not per JSON token.
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer_pretty(&mut out, account)?;
    out.write_all(b"\n")?;
    out.flush()?;
    std::fs::rename(&tmp, &path)
}

/// Reads the account of the VM in `dir`; the error names the file and the problem.
pub fn read(dir: &Path) -> Result<Account, String> {
    let path = path_in(dir);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("Cannot read {}: {e}", path.display()))?;
    let account: Account =
        serde_json::from_str(&text).map_err(|e| format!("{} is malformed: {e}", path.display()))?;
    if account.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "{} has schema version {}, this vmbench reads {SCHEMA_VERSION}",
            path.display(),
            account.schema_version
        ));
    }
    Ok(account)
}
