//! Stage 2: the guest's inputs, found and checked once, before any VM
//! starts: the kernel, the initramfs (built from the agent when none is
//! given) and the root disk with its identity.

use vmbench_rootfs::DiskImage;

use super::backends::Backends;
use super::progress::Progress;
use super::{BootConfig, Error, Result};
use crate::backend::Launcher;
use crate::inputs::{self, CheckedFile, KernelFormat};
use crate::locate::{self, KernelInputs};
use crate::results::RootfsInfo;

/// Everything the VMs boot from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub kernel: CheckedFile<KernelFormat>,
    /// What the cached kernel was built from, when it says.
    pub kernel_inputs: Option<KernelInputs>,
    /// None with `--no-initramfs`.
    pub initramfs: Option<CheckedFile<()>>,
    /// `--rootfs`: the image every VM's overlay is made over.
    pub rootfs: Option<Rootfs>,
    /// `vmbench bench --suite vmexit`: the freestanding guest its VMs boot
    /// (with no Linux suite it is `kernel` too).
    pub vmexit_guest: Option<CheckedFile<KernelFormat>>,
}

/// A root disk image that passed validation (once for the run: its
/// overlays are made over this one), and its identity for results.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub image: DiskImage,
    pub info: RootfsInfo,
}

pub fn resolve(config: &BootConfig, progress: &Progress) -> Result<Inputs> {
    let vmexit_guest = match &config.bench {
        Some(plan) if plan.suites.contains(&crate::bench::catalog::Suite::Vmexit) => {
            let path = match &plan.vmexit_guest {
                Some(path) => path.clone(),
                None => locate::default_vmexit_guest()?,
            };
            Some(inputs::check_kernel(&path)?)
        }
        _ => None,
    };
    if let (Some(guest), Some(plan)) = (&vmexit_guest, &config.bench) {
        if !plan.needs_linux() {
            // Only the vmexit guest boots: it is the run's kernel, with no initramfs.
            return Ok(Inputs {
                kernel: guest.clone(),
                kernel_inputs: None,
                initramfs: None,
                rootfs: None,
                vmexit_guest,
            });
        }
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
            progress.warning(
                "the cached kernel was built from other config fragments than this vmbench's; rebuild with kernel-config/build.sh",
            );
        }
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
        Some(path) => {
            let image = vmbench_rootfs::validate_image(path).map_err(Error::Rootfs)?;
            Some(Rootfs {
                info: rootfs_info(&image, progress)?,
                image,
            })
        }
        None => None,
    };
    Ok(Inputs {
        kernel,
        kernel_inputs,
        initramfs,
        rootfs,
        vmexit_guest,
    })
}

/// What the validated root disk image is: its chain, and its base's
/// identity (the sidecar's hash when it still fits the file, else the
/// file's own).
fn rootfs_info(image: &DiskImage, progress: &Progress) -> Result<RootfsInfo> {
    let base = image
        .chain
        .last()
        .map_or(image.path.as_path(), |l| l.path.as_path());
    let base_bytes = std::fs::metadata(base).map(|m| m.len()).ok();
    let sidecar = image
        .base_info
        .as_ref()
        .filter(|info| Some(info.size_bytes) == base_bytes);
    let base_sha256 = match sidecar {
        Some(info) => info.sha256.clone(),
        None => {
            progress.line(&format!(
                "vmbench: hashing the root disk {} (no vmbench rootfs sidecar)",
                base.display()
            ));
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

/// Refuses a kernel the chosen backends cannot enter: an ELF vmlinux without
/// a PVH note boots only through our VMM's 64-bit Linux entry, not under
/// QEMU and not with `--entry pvh`.
pub fn check_entry(inputs: &Inputs, backends: &Backends, config: &BootConfig) -> Result<()> {
    let needs_pvh = if backends
        .launchers
        .iter()
        .any(|l| matches!(l, Launcher::Qemu(_)))
    {
        Some("QEMU")
    } else if config.entry.as_deref() == Some("pvh") {
        Some("--entry pvh")
    } else {
        None
    };
    if let Some(guest) = &inputs.vmexit_guest {
        guest.check_entry(needs_pvh)?;
    }
    Ok(inputs.kernel.check_entry(needs_pvh)?)
}
