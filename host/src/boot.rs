//! `vmbench boot`: N guests in parallel, each on its own thread and VMM, their
//! reports gathered into one results.json that is rewritten as they arrive.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::backend::kvm::KvmVmm;
use crate::backend::qemu::Qemu;
use crate::backend::{Accel, Launcher, VmSpec};
use crate::environment;
use crate::inputs::{self, KernelFormat};
use crate::locate;
use crate::report::stats::Summary;
use crate::results::{
    self, Aggregate, Environment, OverlayUse, RootfsInfo, RunResults, VmRecord, VmStatus,
};
use crate::vm::{self, Milestone};
use vmbench_vmm::probe::{self as kvm_probe, KvmVerdict};

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM where it runs guests natively, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// `kvm` where KVM runs guests natively, else `qemu`.
    Auto,
    Kvm,
    Qemu,
}

#[derive(Debug, Clone)]
pub struct BootConfig {
    /// VMs per backend.
    pub vms: u32,
    /// One or more backends; with several, each boots `vms` VMs, interleaved.
    pub backends: Vec<BackendChoice>,
    /// kvm backend: force the kernel entry (`pvh`, `linux64`).
    pub entry: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    /// With `rootfs`: no initramfs; the kernel mounts the root disk and runs its init.
    pub no_initramfs: bool,
    pub mem_mib: u32,
    pub vcpus: u32,
    pub accel: AccelChoice,
    pub timeout: Duration,
    /// A root disk image each VM boots from, through its own overlay.
    pub rootfs: Option<PathBuf>,
    /// Keep the overlays after the run.
    pub keep_overlays: bool,
    pub out: Option<PathBuf>,
    /// Extra kernel command-line words, after vmbench's own.
    pub append: Vec<String>,
    pub port: u32,
    /// Progress lines on stderr.
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Locate(#[from] locate::Error),
    #[error(transparent)]
    Input(#[from] inputs::Error),
    #[error("--vms must be at least 1")]
    NoVms,
    #[error("--mem-mib {0} is too small for a guest (at least 64)")]
    TooLittleMemory(u32),
    #[error("--vcpus must be between 1 and 64, not {0}")]
    BadVcpus(u32),
    #[error("--accel kvm: KVM cannot run guests here: {0}")]
    NoKvm(String),
    #[error("--backend kvm: KVM cannot run guests here: {0}")]
    NoKvmBackend(String),
    #[error("--backend names the same backend twice")]
    DuplicateBackend,
    #[error("Cannot find vmbench's own executable to run `vmbench vmm`: {0}")]
    SelfExe(std::io::Error),
    #[error("--out {0} already holds a results.json; choose another directory")]
    OutExists(PathBuf),
    #[error("Cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--rootfs: {0}")]
    Rootfs(vmbench_rootfs::Error),
    #[error("--no-initramfs needs --rootfs: without an initramfs the guest's init comes from the root disk")]
    NoInitramfsWithoutRootfs,
    #[error("Cannot create the overlay for vm-{id}: {source}")]
    Overlay {
        id: u32,
        source: vmbench_rootfs::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A finished run.
pub struct Outcome {
    pub results: RunResults,
    pub results_path: PathBuf,
}

impl Outcome {
    pub fn all_ok(&self) -> bool {
        self.results.vms.iter().all(|v| v.status == VmStatus::Ok)
    }
}

/// The kernel command line vmbench gives every guest (before `--append`).
pub fn base_cmdline(vm_id: u32, port: u32) -> String {
    // panic=-1 and reboot=t: a guest that panics or powers off ends its VMM
    // at once (triple fault; QEMU's -no-reboot makes that an exit).
    format!("console=ttyS0 panic=-1 reboot=t vmbench.id={vm_id} vmbench.port={port}")
}

/// The root disk, as the guest's first virtio-blk device: the agent in the
/// initramfs switches to it.
const ROOT_DISK_CMDLINE: &str = "vmbench.root=/dev/vda";

/// The same without an initramfs: the kernel mounts it and runs its init
/// (systemd, or the agent in a plain image).
const DIRECT_ROOT_CMDLINE: &str = "root=/dev/vda rw rootfstype=ext4";

/// Each VM's overlay of the root disk, in its directory.
const OVERLAY_NAME: &str = "rootfs.qcow2";

/// Checks the root disk image and says what it is: its chain, and its
/// base's identity (the sidecar's hash when it still fits the file, else
/// the file's own).
fn rootfs_info(path: &Path, progress_on: bool) -> Result<RootfsInfo> {
    let image = vmbench_rootfs::validate_image(path).map_err(Error::Rootfs)?;
    let base = image.chain.last().map_or(path, |l| l.path.as_path());
    let base_bytes = std::fs::metadata(base).map(|m| m.len()).ok();
    let sidecar = image
        .base_info
        .as_ref()
        .filter(|info| Some(info.size_bytes) == base_bytes);
    let base_sha256 = match sidecar {
        Some(info) => info.sha256.clone(),
        None => {
            progress(
                progress_on,
                &format!(
                    "vmbench: hashing the root disk {} (no vmbench rootfs sidecar)",
                    base.display()
                ),
            );
            vmbench_rootfs::provenance::sha256_file(base).map_err(Error::Rootfs)?
        }
    };
    Ok(RootfsInfo {
        path: image.path.display().to_string(),
        format: image.format.as_str().to_string(),
        virtual_size_bytes: image.virtual_size_bytes,
        chain: image
            .chain
            .iter()
            .map(|l| l.path.display().to_string())
            .collect(),
        base_sha256,
        built_by: sidecar.and_then(|info| serde_json::to_value(&info.provenance).ok()),
    })
}

/// One overlay per VM, made before any VM starts, so that a failure (a full
/// disk) stops the run with nothing booted; on failure the ones made are
/// removed.
fn create_overlays(base: &Path, dirs: &[PathBuf]) -> Result<Vec<OverlayUse>> {
    let mut made: Vec<OverlayUse> = Vec::new();
    for (id, dir) in dirs.iter().enumerate() {
        let path = dir.join(OVERLAY_NAME);
        let undo = |made: &[OverlayUse]| {
            for overlay in made {
                let _ = std::fs::remove_file(&overlay.path);
            }
        };
        if let Err(source) = std::fs::create_dir_all(dir) {
            undo(&made);
            return Err(Error::Write {
                path: dir.clone(),
                source,
            });
        }
        let start = std::time::Instant::now();
        let created = vmbench_rootfs::create_overlay(
            base,
            &path,
            vmbench_rootfs::overlay::Durability::Unsynced,
        );
        if let Err(source) = created {
            undo(&made);
            return Err(Error::Overlay {
                id: id as u32,
                source,
            });
        }
        made.push(OverlayUse {
            path: path.display().to_string(),
            create_ms: start.elapsed().as_secs_f64() * 1e3,
            disk_used_kib: None,
            kept: true,
        });
    }
    Ok(made)
}

/// After the VM: how much the overlay took, then remove it unless kept.
fn settle_overlay(overlay: &mut OverlayUse, keep: bool) {
    use std::os::unix::fs::MetadataExt;
    overlay.disk_used_kib = std::fs::metadata(&overlay.path)
        .ok()
        .map(|m| m.blocks() * 512 / 1024);
    if !keep && std::fs::remove_file(&overlay.path).is_ok() {
        overlay.kept = false;
    }
}

fn default_out_dir() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    PathBuf::from("vmbench-runs").join(stamp.trim_end_matches('Z').replace(':', "-"))
}

fn progress(enabled: bool, line: &str) {
    if enabled {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// The backends `choices` name, resolved against what KVM can do here.
pub fn choose_backends(choices: &[BackendChoice], verdict: &KvmVerdict) -> Result<Vec<Launcher>> {
    let mut resolved = Vec::new();
    for &choice in choices {
        let choice = match choice {
            BackendChoice::Auto if verdict.is_native() => BackendChoice::Kvm,
            BackendChoice::Auto => BackendChoice::Qemu,
            other => other,
        };
        if resolved.contains(&choice) {
            return Err(Error::DuplicateBackend);
        }
        resolved.push(choice);
    }
    resolved
        .into_iter()
        .map(|choice| match choice {
            BackendChoice::Kvm => {
                if let KvmVerdict::Absent { reason } = verdict {
                    return Err(Error::NoKvmBackend(reason.clone()));
                }
                Ok(Launcher::Kvm(KvmVmm {
                    vmbench: std::env::current_exe().map_err(Error::SelfExe)?,
                }))
            }
            _ => Ok(Launcher::Qemu(Qemu {
                qemu: locate::qemu()?,
                vhost_device_vsock: locate::vhost_device_vsock()?,
            })),
        })
        .collect()
}

/// Decides the accelerator and says why.
pub fn choose_accel(choice: AccelChoice, verdict: &KvmVerdict) -> Result<Accel> {
    match (choice, verdict) {
        (AccelChoice::Tcg, _) => Ok(Accel::Tcg),
        (AccelChoice::Kvm, KvmVerdict::Absent { reason }) => Err(Error::NoKvm(reason.clone())),
        (AccelChoice::Kvm, v) => Ok(Accel::Kvm {
            native: v.is_native(),
        }),
        (AccelChoice::Auto, v) if v.is_native() => Ok(Accel::Kvm { native: true }),
        (AccelChoice::Auto, _) => Ok(Accel::Tcg),
    }
}

pub fn run(config: &BootConfig) -> Result<Outcome> {
    if config.vms == 0 {
        return Err(Error::NoVms);
    }
    if config.mem_mib < 64 {
        return Err(Error::TooLittleMemory(config.mem_mib));
    }
    if !(1..=64).contains(&config.vcpus) {
        return Err(Error::BadVcpus(config.vcpus));
    }
    let cache = locate::cache_dir()?;

    let kernel_path = match &config.kernel {
        Some(path) => path.clone(),
        None => locate::default_kernel()?,
    };
    let kernel = inputs::check_kernel(&kernel_path)?;
    let kernel_inputs = locate::kernel_inputs(&kernel.path);
    if let Some(ki) = &kernel_inputs {
        if ki.fragments_sha256 != locate::FRAGMENTS_SHA256 && config.kernel.is_none() {
            progress(
                config.progress,
                "vmbench: warning: the cached kernel was built from other config fragments than this vmbench's; rebuild with kernel-config/build.sh",
            );
        }
    }
    if config.no_initramfs && config.rootfs.is_none() {
        return Err(Error::NoInitramfsWithoutRootfs);
    }
    let initramfs = if config.no_initramfs {
        None
    } else {
        let path = match &config.initramfs {
            Some(path) => path.clone(),
            None => {
                let agent = match &config.agent {
                    Some(path) => path.clone(),
                    None => locate::default_agent()?,
                };
                inputs::agent_initramfs(&agent, &cache)?
            }
        };
        Some(inputs::check_initramfs(&path)?)
    };

    let rootfs = match &config.rootfs {
        Some(path) => Some(rootfs_info(path, config.progress)?),
        None => None,
    };

    let calibration = kvm_probe::calibrate();
    let launchers = choose_backends(&config.backends, &calibration.verdict)?;
    let accel = choose_accel(config.accel, &calibration.verdict)?;
    let kvm_accel = Accel::Kvm {
        native: calibration.verdict.is_native(),
    };
    let accel_of = |l: &Launcher| match l {
        Launcher::Kvm(_) => kvm_accel,
        Launcher::Qemu(_) => accel,
    };
    let names: Vec<&str> = launchers.iter().map(|l| l.name()).collect();
    let accels: Vec<&str> = launchers.iter().map(|l| accel_of(l).label()).collect();
    let vmm_versions: Vec<String> = launchers
        .iter()
        .map(|l| match l {
            Launcher::Kvm(_) => format!("vmbench vmm {}", environment::vmbench_version()),
            Launcher::Qemu(q) => environment::program_version(&q.qemu),
        })
        .collect();
    let vhost_version = launchers
        .iter()
        .find_map(|l| match l {
            Launcher::Qemu(q) => Some(environment::program_version(&q.vhost_device_vsock)),
            Launcher::Kvm(_) => None,
        })
        .unwrap_or_else(|| "not used".into());
    let total_vms = config.vms * launchers.len() as u32;
    let kvm_detail = match &calibration.verdict {
        KvmVerdict::Absent { reason } => reason.clone(),
        KvmVerdict::Emulated { ns_per_iteration } | KvmVerdict::Native { ns_per_iteration } => {
            format!("{ns_per_iteration:.1} ns per calibration loop iteration")
        }
    };

    let out = config.out.clone().unwrap_or_else(default_out_dir);
    let results_path = out.join("results.json");
    if results_path.exists() {
        return Err(Error::OutExists(out));
    }
    std::fs::create_dir_all(&out).map_err(|source| Error::Write {
        path: out.clone(),
        source,
    })?;
    let out = out.canonicalize().map_err(|source| Error::Write {
        path: out.clone(),
        source,
    })?;
    let results_path = out.join("results.json");

    let append = config.append.join(" ");
    let cmdline_of = |id: u32| {
        let mut line = base_cmdline(id, config.port);
        if rootfs.is_some() {
            let root = if config.no_initramfs {
                DIRECT_ROOT_CMDLINE
            } else {
                ROOT_DISK_CMDLINE
            };
            line = format!("{line} {root}");
        }
        if !append.is_empty() {
            line = format!("{line} {append}");
        }
        line
    };
    let cpu = environment::host_cpu();
    let mut results = RunResults {
        schema_version: results::SCHEMA_VERSION,
        started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        finished: false,
        environment: Environment {
            backend: names.join(","),
            accel: accels.join(","),
            kvm: calibration.verdict.label().into(),
            kvm_detail,
            host_cpu: cpu.model_name.clone(),
            host_cpu_info: cpu,
            host_kernel: environment::host_kernel(),
            guest_kernel: kernel.path.display().to_string(),
            guest_kernel_sha256: kernel.sha256.clone(),
            guest_kernel_format: match kernel.kind {
                KernelFormat::ElfPvh => "elf-pvh".into(),
                KernelFormat::BzImage => "bzimage".into(),
            },
            guest_kernel_source: kernel_inputs.map(|ki| ki.source),
            initramfs: initramfs
                .as_ref()
                .map_or("none".to_string(), |i| i.path.display().to_string()),
            initramfs_sha256: initramfs
                .as_ref()
                .map_or(String::new(), |i| i.sha256.clone()),
            vmbench_version: environment::vmbench_version(),
            vmm_version: vmm_versions.join("; "),
            vhost_device_vsock_version: vhost_version,
            kernel_cmdline: cmdline_of(0),
            rootfs: rootfs.clone(),
            mem_mib: config.mem_mib,
            vcpus: config.vcpus,
            timeout_s: config.timeout.as_secs_f64(),
        },
        vms: (0..total_vms)
            .map(|id| VmRecord::new(id, &vm_dir(&out, id)))
            .collect(),
        aggregate: None,
        aggregate_by_backend: None,
    };
    let write = |results: &RunResults| {
        results::write_atomic(&results_path, results).map_err(|source| Error::Write {
            path: results_path.clone(),
            source,
        })
    };
    // Before the run is announced or results.json exists: a failure here
    // (a full disk) leaves nothing that looks like a run.
    let overlays: Vec<Option<OverlayUse>> = match &config.rootfs {
        Some(base) => {
            let dirs: Vec<PathBuf> = (0..total_vms).map(|id| vm_dir(&out, id)).collect();
            let made = create_overlays(base, &dirs)?;
            for (record, overlay) in results.vms.iter_mut().zip(&made) {
                record.overlay = Some(overlay.clone());
            }
            made.into_iter().map(Some).collect()
        }
        None => vec![None; total_vms as usize],
    };
    write(&results)?;
    progress(
        config.progress,
        &format!(
            "vmbench: booting {} VM{} ({} backend, {}, {} MiB, {} vCPU) into {}",
            total_vms,
            if total_vms == 1 { "" } else { "s" },
            names.join(" and "),
            accels.join(" and "),
            config.mem_mib,
            config.vcpus,
            out.display()
        ),
    );

    let cpu_before = self_cpu_ms();
    let wall_start = std::time::Instant::now();
    let (tx, rx) = mpsc::channel::<(VmRecord, Option<Milestone>)>();
    std::thread::scope(|scope| {
        // With several backends, VM ids alternate between them, and so does
        // the order they start in: neither backend always goes first.
        for id in 0..total_vms {
            let backend = &launchers[(id as usize) % launchers.len()];
            let spec = VmSpec {
                id,
                dir: vm_dir(&out, id),
                kernel: kernel.path.clone(),
                initramfs: initramfs.as_ref().map(|i| i.path.clone()),
                cmdline: cmdline_of(id),
                mem_mib: config.mem_mib,
                vcpus: config.vcpus,
                accel: accel_of(backend),
                port: config.port,
                timeout: config.timeout,
                entry: config.entry.clone(),
                disks: overlays[id as usize]
                    .iter()
                    .map(|o| PathBuf::from(&o.path))
                    .collect(),
            };
            let tx = tx.clone();
            let mut overlay = overlays[id as usize].clone();
            let keep = config.keep_overlays;
            scope.spawn(move || {
                let mut on_progress = |record: &VmRecord, milestone| {
                    let mut record = record.clone();
                    record.overlay = overlay.clone();
                    drop(tx.send((record, Some(milestone))))
                };
                let mut record = vm::run(&spec, backend, &mut on_progress);
                if let Some(overlay) = overlay.as_mut() {
                    settle_overlay(overlay, keep);
                }
                record.overlay = overlay;
                let _ = tx.send((record, None));
            });
        }
        drop(tx);
        let mut done = 0;
        let mut ready = 0;
        for (record, milestone) in rx {
            let id = record.id;
            match milestone {
                Some(Milestone::Hello) => {}
                Some(Milestone::Ready) => {
                    ready += 1;
                    progress(
                        config.progress,
                        &format!(
                            "  vm-{id} ({}) ready after {:.1} ms (guest kernel {:.1} ms) [{ready}/{} ready]",
                            record.backend,
                            record.phases_ms.total.unwrap_or(f64::NAN),
                            record.phases_ms.guest_kernel.unwrap_or(f64::NAN),
                            total_vms
                        ),
                    );
                }
                None => {
                    done += 1;
                    let detail = record
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    progress(
                        config.progress,
                        &format!(
                            "  vm-{id} ({}) {}{detail} [{done}/{} done]",
                            record.backend,
                            record.status.as_str(),
                            total_vms
                        ),
                    );
                }
            }
            results.vms[id as usize] = record;
            // Written as reports arrive, so an interrupted run keeps what it has.
            if let Err(e) = write(&results) {
                progress(config.progress, &format!("vmbench: warning: {e}"));
            }
        }
    });
    let cpu_ms = self_cpu_ms() - cpu_before;
    let wall_ms = wall_start.elapsed().as_secs_f64() * 1e3;
    let cpu = CpuMs {
        while_vms_ran: cpu_ms,
        total: self_cpu_ms(),
    };
    results.aggregate = Some(aggregate(&results.vms, cpu, wall_ms));
    if launchers.len() > 1 {
        results.aggregate_by_backend = Some(
            launchers
                .iter()
                .map(|l| {
                    let vms: Vec<VmRecord> = results
                        .vms
                        .iter()
                        .filter(|v| v.backend == l.name())
                        .cloned()
                        .collect();
                    (l.name().to_string(), aggregate(&vms, cpu, wall_ms))
                })
                .collect(),
        );
    }
    results.finished = true;
    write(&results)?;
    Ok(Outcome {
        results,
        results_path,
    })
}

fn vm_dir(out: &Path, id: u32) -> PathBuf {
    out.join(format!("vm-{id}"))
}

/// CPU time (user + system) this process has used, in ms; children excluded.
fn self_cpu_ms() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let tv =
                |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
            tv(usage.user_time()) + tv(usage.system_time())
        }
        Err(_) => f64::NAN,
    }
}

/// vmbench's own CPU time (children excluded).
#[derive(Debug, Clone, Copy)]
pub struct CpuMs {
    /// While the VMs ran.
    pub while_vms_ran: f64,
    /// The whole process, setup included.
    pub total: f64,
}

pub fn aggregate(vms: &[VmRecord], cpu: CpuMs, wall_ms: f64) -> Aggregate {
    let ok: Vec<&VmRecord> = vms.iter().filter(|v| v.status == VmStatus::Ok).collect();
    let first_spawn = vms.iter().filter_map(|v| v.host_ns.spawn).min();
    let last = |f: fn(&VmRecord) -> Option<u64>| vms.iter().map(f).collect::<Option<Vec<u64>>>();
    let since_first = |t: u64| first_spawn.map(|s| t.saturating_sub(s) as f64 / 1e6);
    let all_ready_ms = last(|v| v.host_ns.ready)
        .and_then(|r| r.into_iter().max())
        .and_then(since_first);
    let summary = |f: fn(&VmRecord) -> Option<f64>| Summary::of(ok.iter().filter_map(|v| f(v)));
    Aggregate {
        vms: vms.len(),
        ok: ok.len(),
        wall_ms,
        all_ready_ms,
        vmbench_cpu_ms_per_vm: cpu.while_vms_ran / vms.len().max(1) as f64,
        vmbench_cpu_ms_total: cpu.total,
        total_ms: summary(|v| v.phases_ms.total),
        vmm_ms: summary(|v| v.phases_ms.vmm),
        kernel_ms: summary(|v| v.phases_ms.kernel),
        guest_kernel_ms: summary(|v| v.phases_ms.guest_kernel),
        initrd_ms: summary(|v| v.phases_ms.initrd.or(v.phases_ms.guest_initrd)),
        userspace_ms: summary(|v| v.phases_ms.userspace_any()),
        shutdown_ms: summary(|v| v.phases_ms.shutdown),
        systemd_kernel_ms: summary(|v| v.systemd.as_ref()?.phases_ms.kernel),
        systemd_initrd_ms: summary(|v| v.systemd.as_ref()?.phases_ms.initrd),
        systemd_userspace_ms: summary(|v| v.systemd.as_ref()?.phases_ms.userspace),
        overlay_create_ms: Summary::of(
            vms.iter()
                .filter_map(|v| Some(v.overlay.as_ref()?.create_ms)),
        ),
        overlay_disk_used_kib: Summary::of(
            vms.iter()
                .filter_map(|v| Some(v.overlay.as_ref()?.disk_used_kib? as f64)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Phases;

    fn vm(
        id: u32,
        status: VmStatus,
        spawn: u64,
        ready: Option<u64>,
        total: Option<f64>,
    ) -> VmRecord {
        let mut r = VmRecord::new(id, Path::new("/x"));
        r.status = status;
        r.host_ns.spawn = Some(spawn);
        r.host_ns.ready = ready;
        r.host_ns.exit = ready.map(|t| t + 1_000_000);
        r.phases_ms = Phases {
            total,
            ..Phases::default()
        };
        r
    }

    #[test]
    fn aggregate_counts_only_ok_vms() {
        let vms = [
            vm(0, VmStatus::Ok, 0, Some(100_000_000), Some(100.0)),
            vm(1, VmStatus::Ok, 1_000_000, Some(301_000_000), Some(300.0)),
            vm(2, VmStatus::Timeout, 2_000_000, None, None),
        ];
        let agg = aggregate(
            &vms,
            CpuMs {
                while_vms_ran: 30.0,
                total: 130.0,
            },
            400.0,
        );
        assert_eq!((agg.vms, agg.ok), (3, 2));
        assert_eq!(agg.total_ms.unwrap().median, 200.0);
        assert_eq!(agg.all_ready_ms, None, "a VM never got ready");
        assert_eq!(agg.wall_ms, 400.0);
        assert_eq!(agg.vmbench_cpu_ms_per_vm, 10.0);
        assert_eq!(agg.vmbench_cpu_ms_total, 130.0);
    }

    #[test]
    fn all_ready_is_the_last_ready_since_the_first_spawn() {
        let vms = [
            vm(0, VmStatus::Ok, 0, Some(100_000_000), Some(100.0)),
            vm(1, VmStatus::Ok, 5, Some(250_000_000), Some(250.0)),
        ];
        assert_eq!(
            aggregate(
                &vms,
                CpuMs {
                    while_vms_ran: 0.0,
                    total: 0.0
                },
                0.0
            )
            .all_ready_ms,
            Some(250.0)
        );
    }

    #[test]
    fn backends_resolve_against_the_kvm_verdict() {
        let native = KvmVerdict::Native {
            ns_per_iteration: 1.0,
        };
        let absent = KvmVerdict::Absent {
            reason: "no /dev/kvm".into(),
        };
        let names = |choices: &[BackendChoice], v: &KvmVerdict| {
            choose_backends(choices, v).map(|ls| ls.iter().map(|l| l.name()).collect::<Vec<_>>())
        };
        assert_eq!(names(&[BackendChoice::Auto], &native).unwrap(), ["kvm"]);
        assert!(matches!(
            names(&[BackendChoice::Kvm], &absent),
            Err(Error::NoKvmBackend(reason)) if reason == "no /dev/kvm"
        ));
        assert!(matches!(
            names(&[BackendChoice::Kvm, BackendChoice::Auto], &native),
            Err(Error::DuplicateBackend)
        ));
        assert_eq!(
            Error::NoKvmBackend("no /dev/kvm".into()).to_string(),
            "--backend kvm: KVM cannot run guests here: no /dev/kvm"
        );
    }

    #[test]
    fn accel_auto_uses_kvm_only_when_native() {
        let native = KvmVerdict::Native {
            ns_per_iteration: 1.0,
        };
        let emulated = KvmVerdict::Emulated {
            ns_per_iteration: 1300.0,
        };
        let absent = KvmVerdict::Absent {
            reason: "no /dev/kvm".into(),
        };
        assert_eq!(
            choose_accel(AccelChoice::Auto, &native).unwrap(),
            Accel::Kvm { native: true }
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, &emulated).unwrap(),
            Accel::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, &absent).unwrap(),
            Accel::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Kvm, &emulated).unwrap(),
            Accel::Kvm { native: false }
        );
        assert!(choose_accel(AccelChoice::Kvm, &absent)
            .unwrap_err()
            .to_string()
            .contains("no /dev/kvm"));
    }

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
