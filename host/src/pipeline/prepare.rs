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
use crate::bench::catalog::Suite;
use crate::bench::plan::{Pair, Plan, VmBench};
use crate::bench::relay::Relay;
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
    /// The VMs of one batch boot at once: a round's (`vmbench boot`), or
    /// one suite on one backend of a round (`vmbench bench`).
    pub batch: u32,
    /// `vmbench bench`: what the VM runs.
    pub bench: Option<VmBench>,
}

/// Where a VM goes in the run, before it has a spec.
struct Slot {
    round: u32,
    batch: u32,
    backend: usize,
    bench: Option<VmBench>,
}

/// Every VM's slot: `vmbench boot`'s rounds, each a batch whose ids
/// alternate between the backends; or `vmbench bench`'s, each round a
/// batch per suite and backend (a suite that cannot run on a backend is
/// left out, and said so in `not_run`).
fn slots(config: &BootConfig, backends: &Backends, not_run: &mut Vec<SuiteNotRun>) -> Vec<Slot> {
    let rounds = config.warmup + config.runs;
    let Some(plan) = &config.bench else {
        let per_round = config.vms * backends.launchers.len() as u32;
        return (0..rounds * per_round)
            .map(|id| Slot {
                round: id / per_round,
                batch: id / per_round,
                backend: backends.of_vm(id),
                bench: None,
            })
            .collect();
    };
    let runnable = |suite: Suite, backend: usize| {
        if suite.runs_linux() && backends.on_emulated_kvm(backend) {
            Err(format!(
                "this host's KVM emulates guest code, and Linux userspace (the agent) cannot run under it: the {} suite needs native KVM for the kvm backend (see README, \"Linux on a host whose KVM emulates guest code\")",
                suite.name()
            ))
        } else {
            Ok(())
        }
    };
    for suite in &plan.suites {
        for backend in 0..backends.launchers.len() {
            if let Err(why) = runnable(*suite, backend) {
                not_run.push(SuiteNotRun {
                    suite: *suite,
                    backend: backends.names()[backend].to_string(),
                    why,
                });
            }
        }
    }
    let endpoint_port = config.port + 1;
    let mut slots = Vec::new();
    let mut batch = 0;
    for round in 0..rounds {
        for suite in &plan.suites {
            // Which backend goes first alternates by round.
            let mut order: Vec<usize> = (0..backends.launchers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for backend in order {
                if runnable(*suite, backend).is_err() {
                    continue;
                }
                let first_id = slots.len() as u32;
                let count = Plan::vms_per_batch(*suite, config.vms);
                let relays: Vec<_> = (0..count / 2).map(|_| Relay::new()).collect();
                for k in 0..count {
                    let pair = (*suite == Suite::Inter).then(|| Pair {
                        other_vm: first_id + (k ^ 1),
                        is_peer: k % 2 == 1,
                        relay: std::sync::Arc::clone(&relays[(k / 2) as usize]),
                    });
                    let is_peer = pair.as_ref().is_some_and(|p| p.is_peer);
                    slots.push(Slot {
                        round,
                        batch,
                        backend,
                        bench: Some(VmBench {
                            suite: *suite,
                            orders: plan.orders(*suite, is_peer),
                            pair,
                            endpoint_port,
                        }),
                    });
                }
                batch += 1;
            }
        }
    }
    slots
}

/// A suite a backend cannot run here, and why (results.json `bench.not_run`).
pub use crate::bench::SuiteNotRun;

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
    let mut not_run = Vec::new();
    let slots = slots(config, backends, &mut not_run);
    let total_vms = slots.len() as u32;
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
        vms: slots
            .iter()
            .enumerate()
            .map(|(id, slot)| {
                let id = id as u32;
                let mut record = VmRecord::new(id, &vm_dir(&out, id));
                record.round = slot.round;
                record.warmup = slot.round < config.warmup;
                if let Some(bench) = &slot.bench {
                    crate::bench::prepare_record(&mut record, bench);
                }
                record
            })
            .collect(),
        aggregate: None,
        aggregate_by_backend: None,
        interrupted: false,
        interrupted_by: None,
        bench: config
            .bench
            .as_ref()
            .map(|plan| crate::bench::run_record(plan, inputs, not_run)),
    };
    // Before results.json exists: a failure here (a full disk) leaves
    // nothing that looks like a run.
    let overlays = overlays_for(inputs, &out, total_vms, stop)?;
    let mut vms = Vec::with_capacity(slots.len());
    for ((id, overlay), slot) in overlays.into_iter().enumerate().zip(slots) {
        let id = id as u32;
        let backend = slot.backend;
        results.vms[id as usize].overlay.clone_from(&overlay);
        // vmbench made the overlay: a qcow2 image.
        let mut disks: Vec<VmDisk> = overlay
            .iter()
            .map(|o| VmDisk {
                path: PathBuf::from(&o.path),
                format: vmbench_image::Format::Qcow2,
            })
            .collect();
        let mut spec = VmSpec {
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
            disks: Vec::new(),
        };
        if let (Some(bench), Some(plan)) = (&slot.bench, &config.bench) {
            crate::bench::prepare_spec(&mut spec, &mut disks, bench, plan, inputs).map_err(
                |source| Error::Write {
                    path: spec.dir.clone(),
                    source,
                },
            )?;
        }
        spec.disks = disks;
        vms.push(PreparedVm {
            spec,
            backend,
            overlay,
            round: slot.round,
            warmup: slot.round < config.warmup,
            batch: slot.batch,
            bench: slot.bench,
        });
    }
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
