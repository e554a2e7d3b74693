//! The `kvm` backend: vmbench's own VMM, one process per VM — the VMM's own
//! program `vmbench-vmm` beside this executable, or else `vmbench vmm` — so
//! a VM that crashes its VMM takes nothing else with it and each VM's
//! resident memory is its own (and only the VMM's).
//!
//! The VMM writes its account to `<vm-dir>/vmm.json` when the VM ends
//! (also when vmbench stops it with SIGTERM on a timeout): the first
//! `KVM_RUN`, how the VM ended, every userspace exit and KVM's statistics.

use std::path::{Path, PathBuf};
use std::process::Child;

use super::{spawn_logged, Accel, VmSpec, GUEST_CID, VSOCK_UDS_BASE};
use vmbench_vmm::account;
use vmbench_vmm::machine::DiskConfig;

use crate::vmm_account::VmmAccount;

/// What a Linux guest's command line needs on a host whose KVM emulates
/// guest code: no XSAVE, since KVM's emulator has no XRSTOR (and filtering
/// CPUID does not reach the guest on such hosts). The VMM completes the
/// few other instructions the emulator refuses (`vmbench vmm --emulated-kvm`).
pub const EMULATED_KVM_CMDLINE: &str = "noxsave";

/// Whether a VM with this accelerator runs on KVM that emulates guest code.
pub fn on_emulated_kvm(accel: Accel) -> bool {
    accel == Accel::Kvm { native: false }
}

#[derive(Debug, Clone)]
pub struct KvmVmm {
    /// The program that runs the VMM: `vmbench-vmm`, or `vmbench` itself.
    pub program: PathBuf,
    /// Whether `program` is `vmbench`, whose VMM is its `vmm` command.
    pub via_vmbench: bool,
}

impl KvmVmm {
    /// The VMM for this `vmbench` executable: `vmbench-vmm` where it is
    /// installed beside it (built with it: one `cargo build` makes both),
    /// else `vmbench vmm`.
    pub fn for_vmbench(vmbench: PathBuf) -> KvmVmm {
        match vmbench_vmm::cli::program_beside(&vmbench) {
            Some(program) => KvmVmm {
                program,
                via_vmbench: false,
            },
            None => KvmVmm {
                program: vmbench,
                via_vmbench: true,
            },
        }
    }
}

/// The VMM's arguments for one VM (`vmbench-vmm`'s, or `vmbench vmm`'s after `vmm`).
pub fn vmm_args(spec: &VmSpec) -> Vec<String> {
    let mut args = vec![
        "--kernel".to_string(),
        spec.kernel.display().to_string(),
        "--cmdline".into(),
        spec.cmdline.clone(),
        "--mem-mib".into(),
        spec.mem_mib.to_string(),
        "--vcpus".into(),
        spec.vcpus.to_string(),
        "--dir".into(),
        spec.dir.display().to_string(),
        "--vsock-cid".into(),
        GUEST_CID.to_string(),
    ];
    if let Some(initramfs) = &spec.initramfs {
        args.extend(["--initramfs".into(), initramfs.display().to_string()]);
    }
    if let Some(entry) = &spec.entry {
        args.extend(["--entry".into(), entry.clone()]);
    }
    if on_emulated_kvm(spec.accel) {
        args.push("--emulated-kvm".into());
    }
    for disk in &spec.disks {
        let disk = DiskConfig {
            path: disk.path.clone(),
            read_only: false,
            format: Some(disk.format),
        };
        args.extend(["--disk".into(), disk.arg()]);
    }
    args
}

pub fn vmm_log(spec: &VmSpec) -> PathBuf {
    spec.dir.join("vmm.log")
}

impl KvmVmm {
    /// Starts the VMM; its output goes to `vmm.log` in the VM directory.
    pub fn start_vmm(&self, spec: &VmSpec) -> super::qemu::Result<Child> {
        // An account left from an earlier run in this directory must not be read as this one's.
        let _ = std::fs::remove_file(account::path_in(&spec.dir));
        let mut args = vmm_args(spec);
        if self.via_vmbench {
            args.insert(0, "vmm".to_string());
        }
        spawn_logged(&self.program, args, &vmm_log(spec))
    }
}

/// The VMM's account of the VM, if it wrote one.
pub fn read_account(dir: &Path) -> Result<VmmAccount, String> {
    account::read(dir).map(|a| VmmAccount::from_vmm(&a))
}

/// What the VMM printed (its error, for a VM that failed).
pub fn vmm_message(spec: &VmSpec) -> String {
    crate::log_tail::last_bytes(&vmm_log(spec), 1600)
}

/// The line a VMM whose seccomp filter caught a forbidden system call
/// wrote before it ended (`seccomp: syscall 59 (execve) not allowed in the
/// vCPU thread`), if `log` (what it printed) holds one.
pub fn seccomp_violation(log: &str) -> Option<String> {
    log.lines()
        .find(|line| line.starts_with(vmbench_vmm::seccomp::REPORT_PREFIX))
        .map(|line| line.trim_end().to_string())
}

/// [`seccomp_violation`] in the VM's `vmm.log`.
pub fn seccomp_violation_of(spec: &VmSpec) -> Option<String> {
    let log = std::fs::read(vmm_log(spec)).ok()?;
    seccomp_violation(&String::from_utf8_lossy(&log))
}

/// Sockets this backend leaves in the VM directory.
pub fn sockets(spec: &VmSpec) -> Vec<PathBuf> {
    vec![spec.dir.join(VSOCK_UDS_BASE)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::VmDisk;
    use vmbench_image::Format;

    #[test]
    fn a_seccomp_report_is_found_in_the_vmms_output() {
        let log = "vmm: starting\nseccomp: syscall 59 (execve) not allowed in the vCPU thread\n";
        assert_eq!(
            seccomp_violation(log).as_deref(),
            Some("seccomp: syscall 59 (execve) not allowed in the vCPU thread")
        );
        assert_eq!(
            seccomp_violation("vmbench: error: the VM failed: x\n"),
            None
        );
        // Only at the start of a line: the VMM's own words, not a quote of them.
        assert_eq!(seccomp_violation("said \"seccomp: syscall 1\"\n"), None);
    }

    #[test]
    fn disks_become_disk_arguments_in_order() {
        let disk = |path: &str, format| VmDisk {
            path: path.into(),
            format,
        };
        let spec = VmSpec {
            accel: Accel::Kvm { native: true },
            disks: vec![
                disk("/vm/root.qcow2", Format::Qcow2),
                disk("/data/a,b.raw", Format::Raw),
            ],
            ..VmSpec::for_test(0, Path::new("/vm"))
        };
        let args = vmm_args(&spec);
        let disks: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--disk")
            .map(|w| w[1].as_str())
            .collect();
        // The formats are stated: the VMM never probes an overlay the guest writes.
        assert_eq!(
            disks,
            ["/vm/root.qcow2,format=qcow2", "/data/a,b.raw,format=raw,rw"]
        );
        for (arg, disk) in disks.iter().zip(&spec.disks) {
            let parsed: DiskConfig = arg.parse().unwrap();
            assert_eq!(
                (&parsed.path, parsed.read_only, parsed.format),
                (&disk.path, false, Some(disk.format))
            );
        }
    }
}
