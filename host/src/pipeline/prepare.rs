//! Stage 4: everything the run needs before its first VM starts: the output
//! directory, each VM's spec and kernel command line, the overlays of the
//! root disk, and the results.json skeleton that records how the run was
//! set up (written before any VM starts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::backends::Backends;
use super::inputs::Inputs;
use super::{overlays, BootConfig, Error, Result};
use crate::backend::{kvm, VmDisk, VmSpec};
use crate::environment;
use crate::inputs::KernelFormat;
use crate::interrupt::Stop;
use crate::results::{self, EmulatedKvmSetup, Environment, OverlayUse, RunResults, VmRecord};

/// The root disk, as the guest's first virtio-blk device: the agent in the
/// initramfs switches to it.
const ROOT_DISK_CMDLINE: &str = "vmbench.root=/dev/vda";

/// The same without an initramfs: the kernel mounts it and runs its init
/// (systemd, or the agent in a plain image).
const DIRECT_ROOT_CMDLINE: &str = "root=/dev/vda rw rootfstype=ext4";

/// A run ready to launch.
pub struct Prepared {
    /// The output directory, absolute.
    pub out: PathBuf,
    pub results_path: PathBuf,
    /// The skeleton: the environment, and every VM `running`.
    pub results: RunResults,
    pub vms: Vec<PreparedVm>,
}

/// One VM ready to launch.
pub struct PreparedVm {
    pub spec: VmSpec,
    /// Index into the run's backends.
    pub backend: usize,
    pub overlay: Option<OverlayUse>,
    /// The round it boots in, and whether that is a warm-up round.
    pub round: u32,
    pub warmup: bool,
}

/// The kernel command line vmbench gives every guest (before `--append`).
pub fn base_cmdline(vm_id: u32, port: u32) -> String {
    // panic=-1 and reboot=t: a guest that panics or powers off ends its VMM
    // at once (triple fault; QEMU's -no-reboot makes that an exit).
    format!("console=ttyS0 panic=-1 reboot=t vmbench.id={vm_id} vmbench.port={port}")
}

/// VM `id`'s whole command line: vmbench's settings, the root disk's, what
/// its backend needs (a clock, or `noxsave`), then `--append`.
fn cmdline(config: &BootConfig, with_rootfs: bool, extra: Option<String>, id: u32) -> String {
    let mut line = base_cmdline(id, config.port);
    if with_rootfs {
        let root = if config.no_initramfs {
            DIRECT_ROOT_CMDLINE
        } else {
            ROOT_DISK_CMDLINE
        };
        line = format!("{line} {root}");
    }
    if let Some(extra) = extra {
        line = format!("{line} {extra}");
    }
    let append = config.append.join(" ");
    if !append.is_empty() {
        line = format!("{line} {append}");
    }
    line
}

pub fn vm_dir(out: &Path, id: u32) -> PathBuf {
    out.join(format!("vm-{id}"))
}

/// `vmbench-runs/<UTC time>`, for a run given no `--out`.
pub fn default_out_dir() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    PathBuf::from("vmbench-runs").join(stamp.trim_end_matches('Z').replace(':', "-"))
}

/// The output directory, made and made absolute; refused if it holds a run.
fn out_dir(config: &BootConfig) -> Result<PathBuf> {
    let out = config.out.clone().unwrap_or_else(default_out_dir);
    if out.join("results.json").exists() {
        return Err(Error::OutExists(out));
    }
    let write_err = |source| Error::Write {
        path: out.clone(),
        source,
    };
    std::fs::create_dir_all(&out).map_err(write_err)?;
    out.canonicalize().map_err(write_err)
}

pub fn prepare(
    config: &BootConfig,
    timeout: Duration,
    inputs: &Inputs,
    backends: &Backends,
    stop: &Stop,
) -> Result<Prepared> {
    let out = out_dir(config)?;
    let per_round = config.vms * backends.launchers.len() as u32;
    let total_vms = per_round * (config.warmup + config.runs);
    // VM ids run on across rounds: round r boots ids r·per_round and on.
    let round_of = |id: u32| id / per_round;
    let with_rootfs = inputs.rootfs.is_some();
    let mut results = RunResults {
        schema_version: results::SCHEMA_VERSION,
        started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        finished: false,
        environment: environment_of(
            config,
            inputs,
            backends,
            timeout,
            cmdline(config, with_rootfs, backends.cmdline_extra(0), 0),
        ),
        vms: (0..total_vms)
            .map(|id| {
                let mut record = VmRecord::new(id, &vm_dir(&out, id));
                record.round = round_of(id);
                record.warmup = round_of(id) < config.warmup;
                record
            })
            .collect(),
        aggregate: None,
        aggregate_by_backend: None,
        interrupted: false,
        interrupted_by: None,
    };
    // Before results.json exists: a failure here (a full disk) leaves
    // nothing that looks like a run.
    let overlays = overlays_for(inputs, &out, total_vms, stop)?;
    let vms = overlays
        .into_iter()
        .enumerate()
        .map(|(id, overlay)| {
            let id = id as u32;
            let backend = backends.of_vm(id);
            results.vms[id as usize].overlay.clone_from(&overlay);
            PreparedVm {
                spec: VmSpec {
                    id,
                    dir: vm_dir(&out, id),
                    kernel: inputs.kernel.path.clone(),
                    initramfs: inputs.initramfs.as_ref().map(|i| i.path.clone()),
                    cmdline: cmdline(config, with_rootfs, backends.cmdline_extra(backend), id),
                    mem_mib: config.mem_mib,
                    vcpus: config.vcpus,
                    accel: backends.accels[backend],
                    port: config.port,
                    timeout,
                    entry: config.entry.clone(),
                    // vmbench made the overlay: a qcow2 image.
                    disks: overlay
                        .iter()
                        .map(|o| VmDisk {
                            path: PathBuf::from(&o.path),
                            format: vmbench_image::Format::Qcow2,
                        })
                        .collect(),
                },
                backend,
                overlay,
                round: round_of(id),
                warmup: round_of(id) < config.warmup,
            }
        })
        .collect();
    Ok(Prepared {
        results_path: out.join("results.json"),
        out,
        results,
        vms,
    })
}

/// Each VM's overlay of the root disk (`--rootfs`), or none.
fn overlays_for(
    inputs: &Inputs,
    out: &Path,
    total_vms: u32,
    stop: &Stop,
) -> Result<Vec<Option<OverlayUse>>> {
    Ok(match &inputs.rootfs {
        Some(rootfs) => {
            let dirs: Vec<PathBuf> = (0..total_vms).map(|id| vm_dir(out, id)).collect();
            overlays::create(&rootfs.image, &dirs, stop)?
                .into_iter()
                .map(Some)
                .collect()
        }
        None => vec![None; total_vms as usize],
    })
}

/// How the run is produced: the host, the backends, the guest's inputs.
fn environment_of(
    config: &BootConfig,
    inputs: &Inputs,
    backends: &Backends,
    timeout: Duration,
    kernel_cmdline: String,
) -> Environment {
    let cpu = environment::host_cpu();
    let kernel = &inputs.kernel;
    Environment {
        backend: backends.names().join(","),
        accel: backends.accel_labels().join(","),
        kvm: backends.kvm.label().into(),
        kvm_detail: backends.kvm_detail(),
        host_cpu: cpu.model_name.clone(),
        host_cpu_info: cpu,
        host_kernel: environment::host_kernel(),
        guest_kernel: kernel.path.display().to_string(),
        guest_kernel_sha256: kernel.sha256.clone(),
        guest_kernel_format: match kernel.kind {
            KernelFormat::ElfPvh => "elf-pvh".into(),
            KernelFormat::Elf => "elf".into(),
            KernelFormat::BzImage => "bzimage".into(),
        },
        guest_kernel_source: inputs.kernel_inputs.as_ref().map(|ki| ki.source.clone()),
        initramfs: inputs
            .initramfs
            .as_ref()
            .map_or("none".to_string(), |i| i.path.display().to_string()),
        initramfs_sha256: inputs
            .initramfs
            .as_ref()
            .map_or(String::new(), |i| i.sha256.clone()),
        vmbench_version: environment::vmbench_version(),
        vmm_version: backends.vmm_versions().join("; "),
        vhost_device_vsock_version: backends.vhost_device_vsock_version(),
        kernel_cmdline,
        rootfs: inputs.rootfs.as_ref().map(|r| r.info.clone()),
        host_tsc_khz: backends.host_tsc_khz,
        emulated_kvm: (0..backends.launchers.len())
            .any(|b| backends.on_emulated_kvm(b))
            .then(|| EmulatedKvmSetup {
                cmdline: kvm::EMULATED_KVM_CMDLINE.to_string(),
                instruction_fallback: true,
            }),
        mem_mib: config.mem_mib,
        vcpus: config.vcpus,
        timeout_s: timeout.as_secs_f64(),
        runs: config.runs,
        warmup: config.warmup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_cmdline_has_the_agent_settings() {
        let line = base_cmdline(3, 1234);
        assert!(
            line.contains("vmbench.id=3")
                && line.contains("vmbench.port=1234")
                && line.contains("reboot=t")
        );
    }
}
