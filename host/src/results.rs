//! results.json: what a run measured and how. It is rewritten (atomically) each
//! time a VM reports or ends, so a run that is interrupted keeps what it had.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vmbench_proto::GuestMarks;

use crate::environment::HostCpu;
use crate::stats::Summary;
use crate::timeline::{HostMarks, Phases};

/// Bump when a field changes meaning or is removed. 2: `aggregate`'s
/// `initrd_ms` and `userspace_ms` are the host clock's only (they took the
/// guest's where the host had none), beside `guest_initrd_ms` and
/// `guest_userspace_ms`; `aggregate_by_backend`'s `vmbench_cpu_ms_per_vm`
/// divides the run's CPU by all its VMs. 3: what a guest fills is bounded
/// (`boot_markers`, and `exits` follows vmm.json 2). 4: `exits` follows
/// vmm.json 3, with benchmark windows; `vmbench bench` (`bench`,
/// `vms[].benchmarks`, …).
pub const SCHEMA_VERSION: u32 = 4;

/// Boot marks kept per VM: a real boot writes a handful (Cloud Hypervisor's
/// ranges hold 64 codes); a guest flooding the port cannot grow results.json.
pub const MAX_BOOT_MARKERS: usize = 1024;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    pub schema_version: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// False while the run is going on.
    pub finished: bool,
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run before all its
    /// VMs ended; the VMs it stopped or never started are `interrupted`.
    #[serde(default)]
    pub interrupted: bool,
    /// Which signal: `SIGINT`, `SIGTERM` or `SIGHUP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<String>,
    pub environment: Environment,
    pub vms: Vec<VmRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// With several backends (`--backend kvm,qemu`): the aggregate of each.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub aggregate_by_backend: Option<std::collections::BTreeMap<String, Aggregate>>,
    /// `vmbench bench`: what the run measured (each VM's results are in
    /// its `benchmarks`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bench: Option<crate::bench::BenchRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub backend: String,
    /// `tcg`, `kvm-native` or `kvm-emulated`.
    pub accel: String,
    /// What the KVM calibration found: `absent`, `emulated` or `native`, with detail.
    pub kvm: String,
    pub kvm_detail: String,
    pub host_cpu: String,
    pub host_cpu_info: HostCpu,
    pub host_kernel: String,
    pub guest_kernel: String,
    pub guest_kernel_sha256: String,
    pub guest_kernel_format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_kernel_source: Option<String>,
    pub initramfs: String,
    pub initramfs_sha256: String,
    pub vmbench_version: String,
    pub vmm_version: String,
    pub vhost_device_vsock_version: String,
    pub kernel_cmdline: String,
    /// `--rootfs`: the root disk every VM boots from (through its own overlay).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rootfs: Option<RootfsInfo>,
    /// TCG guests: the host's TSC frequency, measured, which their kernels
    /// get as `tsc_early_khz=` for a precise clock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host_tsc_khz: Option<u64>,
    /// The kvm backend on KVM that emulates guest code: what was done so
    /// Linux gets as far as it can there (its timings are the emulator's).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub emulated_kvm: Option<EmulatedKvmSetup>,
    pub mem_mib: u32,
    pub vcpus: u32,
    pub timeout_s: f64,
    /// Measured rounds (`--runs`) and warm-up rounds before them (`--warmup`).
    #[serde(default = "one")]
    pub runs: u32,
    #[serde(default)]
    pub warmup: u32,
}

fn one() -> u32 {
    1
}

/// What the kvm backend does on KVM that emulates guest code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmulatedKvmSetup {
    /// Added to each of its guests' kernel command lines.
    pub cmdline: String,
    /// The VMM completes the instructions KVM's emulator refuses
    /// (`vmbench vmm --emulated-kvm`); each VM's `exits.emulated_kvm` counts them.
    pub instruction_fallback: bool,
}

/// The root disk image of a run: which file, and which content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsInfo {
    pub path: String,
    /// `raw` or `qcow2`.
    pub format: String,
    pub virtual_size_bytes: u64,
    /// The files of its backing chain, the image first, its base last.
    pub chain: Vec<String>,
    /// SHA-256 of the base (the chain's last file): from its `vmbench
    /// rootfs` sidecar when the sizes match, else computed.
    pub base_sha256: String,
    /// How `vmbench rootfs` made the base (`plain`/`systemd` and its
    /// recipe), if it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub built_by: Option<serde_json::Value>,
}

/// A VM's own overlay of the root disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayUse {
    pub path: String,
    /// Creating it (before the VM started).
    pub create_ms: f64,
    /// Disk space it took once the VM had ended: what the guest wrote.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub disk_used_kib: Option<u64>,
    /// Still there after the run (`--keep`).
    pub kept: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    Running,
    Ok,
    Timeout,
    Failed,
    ProtocolError,
    /// The run was stopped (a signal) before this VM ended, or before it started.
    Interrupted,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Running => "running",
            VmStatus::Ok => "ok",
            VmStatus::Timeout => "timeout",
            VmStatus::Failed => "failed",
            VmStatus::ProtocolError => "protocol_error",
            VmStatus::Interrupted => "interrupted",
        }
    }
}

/// What the guest said about itself in `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestInfo {
    pub proto_version: u32,
    pub agent_version: String,
    pub kernel_release: String,
    pub cpus: u32,
    pub mem_total_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: u32,
    /// The round it was booted in (`--runs`, `--warmup`), from 0.
    #[serde(default)]
    pub round: u32,
    /// A warm-up round's VM: recorded, never in a statistic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
    /// `kvm` or `qemu`.
    #[serde(default)]
    pub backend: String,
    /// `tcg`, `kvm-native` or `kvm-emulated`.
    #[serde(default)]
    pub accel: String,
    pub status: VmStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    pub dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestInfo>,
    pub phases_ms: Phases,
    /// Raw host marks, CLOCK_MONOTONIC nanoseconds.
    pub host_ns: HostMarks,
    /// The guest's own marks, CLOCK_BOOTTIME nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_ns: Option<GuestMarks>,
    /// The boot-marker codes the host saw, with their host times
    /// (CLOCK_MONOTONIC ns): the first [`MAX_BOOT_MARKERS`].
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub boot_markers: Vec<BootMarker>,
    /// Boot-marker codes beyond the first [`MAX_BOOT_MARKERS`]: counted, not kept.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub boot_markers_dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmm_exit: Option<String>,
    /// The kvm backend's account of the VM: how it ended, every userspace
    /// exit per vCPU (kind, port or MMIO address, latency histogram), KVM's
    /// own statistics per vCPU, device counters.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exits: Option<crate::vmm_account::VmmAccount>,
    /// A systemd guest's own account: its phases as `systemd-analyze time`
    /// reads them, every unit's activation times, and the check of both
    /// against what `systemd-analyze time` printed in the guest.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub systemd: Option<crate::systemd::SystemdRecord>,
    /// `--rootfs`: this VM's overlay.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlay: Option<OverlayUse>,
    /// vmbench's own CPU time (user + system, not the VMMs') while this VM's
    /// round ran, over the round's VMs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vmbench_cpu_ms: Option<f64>,
    /// `vmbench bench`: the suite this VM ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub suite: Option<crate::bench::catalog::Suite>,
    /// `vmbench bench`: each benchmark this VM was to run, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub benchmarks: Vec<crate::bench::record::BenchmarkRecord>,
    /// The inter suite's peer VM: the VM whose benchmarks it served.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer_of: Option<u32>,
    /// The vmexit suite: what the guest said of itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vmexit_guest: Option<VmexitGuestInfo>,
}

/// The vmexit guest's `hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmexitGuestInfo {
    pub version: u32,
    /// vCPUs it found.
    pub cpus: u32,
    /// CPUID's vendor string.
    pub vendor: String,
    /// The TSC frequency it knew (0: none).
    pub tsc_khz: u64,
    /// CPUID 0x40000000's signature, as the guest said it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hypervisor: Option<String>,
    /// `x2apic`, `xapic` or `none`, as the guest said it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub apic: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootMarker {
    pub code: u8,
    pub host_ns: u64,
}

impl VmRecord {
    pub fn new(id: u32, dir: &Path) -> Self {
        VmRecord {
            id,
            round: 0,
            warmup: false,
            backend: String::new(),
            accel: String::new(),
            status: VmStatus::Running,
            error: None,
            warnings: Vec::new(),
            dir: dir.display().to_string(),
            guest: None,
            phases_ms: Phases::default(),
            host_ns: HostMarks::default(),
            guest_ns: None,
            boot_markers: Vec::new(),
            boot_markers_dropped: 0,
            vmm_exit: None,
            exits: None,
            systemd: None,
            overlay: None,
            vmbench_cpu_ms: None,
            suite: None,
            benchmarks: Vec::new(),
            peer_of: None,
            vmexit_guest: None,
        }
    }
}

/// The run as a whole, over the VMs that ended `ok`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregate {
    pub vms: usize,
    pub ok: usize,
    /// From starting the first VM until the last one had ended.
    pub wall_ms: f64,
    /// From the first spawn until every VM was ready (absent if any was not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_ready_ms: Option<f64>,
    /// CPU time vmbench itself used (user + system, not its children), per VM.
    pub vmbench_cpu_ms_per_vm: f64,
    /// CPU time the whole vmbench process used, setup included (checking and
    /// hashing the inputs, the KVM calibration), children excluded.
    pub vmbench_cpu_ms_total: f64,
    pub total_ms: Option<Summary>,
    /// kvm backend: spawn → first KVM_RUN.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vmm_ms: Option<Summary>,
    /// kvm backend: first KVM_RUN → init_start, host clock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_ms: Option<Summary>,
    pub guest_kernel_ms: Option<Summary>,
    /// Root disks: the agent's initramfs until the switch to the disk, host clock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub initrd_ms: Option<Summary>,
    /// The same on the guest's clock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub guest_initrd_ms: Option<Summary>,
    /// PID 1 (or the root switch) until Ready, host clock.
    pub userspace_ms: Option<Summary>,
    /// The same on the guest's clock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub guest_userspace_ms: Option<Summary>,
    pub shutdown_ms: Option<Summary>,
    /// systemd guests: the phases as `systemd-analyze time` reads them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub systemd_kernel_ms: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub systemd_initrd_ms: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub systemd_userspace_ms: Option<Summary>,
    /// `--rootfs`, over every VM: creating its overlay, and the disk space
    /// the overlay took after the VM ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlay_create_ms: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlay_disk_used_kib: Option<Summary>,
    /// Every metric the ok VMs had ([`crate::metrics`]), by name: what it
    /// is and its summary.
    #[serde(default)]
    pub metrics: Vec<MetricSummary>,
}

/// One metric over a run's ok VMs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricSummary {
    pub name: String,
    pub unit: String,
    pub clock: String,
    pub direction: crate::metrics::Direction,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alias: Option<String>,
    pub summary: Summary,
}

/// Writes `results` to `path` atomically: readers see the old or the new file, never half of one.
pub fn write_atomic(path: &Path, results: &RunResults) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    // One write(2) per buffer, not per JSON token.
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer_pretty(&mut out, results)?;
    out.write_all(b"\n")?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Unit tests' fixture: a finished run (schema 4) with an empty qemu/tcg
/// environment and no VMs, for a test to fill in.
#[cfg(test)]
pub(crate) fn test_results() -> RunResults {
    serde_json::from_value(serde_json::json!({
        "schema_version": 4, "started_at": "2025-01-01T00:00:00Z", "finished": true,
        "environment": {
            "backend": "qemu", "accel": "tcg", "kvm": "", "kvm_detail": "",
            "host_cpu": "", "host_cpu_info": {"model_name": "", "vendor": "", "family": "", "model": "", "logical_cpus": 1},
            "host_kernel": "", "guest_kernel": "", "guest_kernel_sha256": "", "guest_kernel_format": "",
            "initramfs": "", "initramfs_sha256": "", "vmbench_version": "", "vmm_version": "",
            "vhost_device_vsock_version": "", "kernel_cmdline": "", "mem_mib": 1, "vcpus": 1, "timeout_s": 1.0
        },
        "vms": []
    }))
    .expect("the fixture parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&VmStatus::ProtocolError).unwrap(),
            "\"protocol_error\""
        );
        assert_eq!(VmStatus::ProtocolError.as_str(), "protocol_error");
    }
}
