//! What runs a guest: `kvm` (vmbench's own VMM, [`kvm`]) or `qemu` (QEMU
//! microvm with vhost-device-vsock, [`qemu`]). Both put the guest's vsock
//! connections on `<vm-dir>/vsock.sock_<port>` and its boot-marker bytes on
//! `<vm-dir>/marker.sock`, so one collector serves both.

pub mod kvm;
pub mod qemu;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vmbench_vmm::vm_dir;

use crate::interrupt::Stop;

/// The accelerator a VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's software CPU emulation.
    Tcg,
    /// KVM; `native` says whether the calibration found guest code running natively.
    Kvm { native: bool },
}

impl Accel {
    /// The label results carry: `tcg`, `kvm-native` or `kvm-emulated`.
    pub fn label(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm { native: true } => "kvm-native",
            Accel::Kvm { native: false } => "kvm-emulated",
        }
    }
}

/// Everything one VM needs; the same for every backend.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: u32,
    /// The VM's own directory: serial.log, sockets, logs.
    pub dir: PathBuf,
    pub kernel: PathBuf,
    /// None: boot straight from the root disk (`--no-initramfs`).
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    /// The vsock port the guest connects to.
    pub port: u32,
    pub timeout: Duration,
    /// `kvm` backend: the kernel entry to force (`pvh`, `linux64`); none = the VMM's choice.
    pub entry: Option<String>,
    /// Disk images, opened read-write, in the order the guest finds them:
    /// the first is its `/dev/vda`.
    pub disks: Vec<VmDisk>,
}

/// A disk image a VM writes, with its format stated: both backends tell
/// the VMM the format, never let it probe the bytes the guest writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    pub path: PathBuf,
    pub format: vmbench_image::Format,
}

/// Which backend runs a VM.
#[derive(Debug, Clone)]
pub enum Launcher {
    Kvm(kvm::KvmVmm),
    Qemu(qemu::Qemu),
}

impl Launcher {
    pub fn name(&self) -> &'static str {
        match self {
            Launcher::Kvm(_) => "kvm",
            Launcher::Qemu(_) => "qemu",
        }
    }

    /// The VMM's name in messages.
    pub fn vmm_name(&self) -> &'static str {
        match self {
            Launcher::Kvm(_) => "vmbench vmm",
            Launcher::Qemu(_) => "QEMU",
        }
    }

    /// Processes the VMM needs first (QEMU's vhost-device-vsock).
    pub fn start_helper(&self, spec: &VmSpec) -> qemu::Result<Option<Child>> {
        match self {
            Launcher::Kvm(_) => Ok(None),
            Launcher::Qemu(q) => q.start_vsock(spec).map(Some),
        }
    }

    pub fn start_vmm(&self, spec: &VmSpec) -> qemu::Result<Child> {
        match self {
            Launcher::Kvm(k) => k.start_vmm(spec),
            Launcher::Qemu(q) => q.start_vmm(spec),
        }
    }

    /// Ends a VMM that is still running (timeout, protocol error).
    /// Asks the VMM to stop — SIGTERM: our VMM ends the VM and writes its
    /// account, QEMU quits — and kills it if it has not exited within the
    /// grace period (at once after a second Ctrl-C).
    pub fn stop(&self, vmm: &mut Child, stop: &Stop) -> std::io::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(vmm.id() as libc::pid_t, libc::SIGTERM) };
        let mut ended = None;
        stop.wait_grace(|| {
            ended = vmm.try_wait().ok().flatten();
            ended.is_some()
        });
        match ended {
            Some(status) => Ok(status),
            None => {
                vmm.kill()?;
                vmm.wait()
            }
        }
    }

    /// What the VMM printed, for a failed VM's error.
    pub fn vmm_message(&self, spec: &VmSpec) -> String {
        match self {
            Launcher::Kvm(_) => kvm::vmm_message(spec),
            Launcher::Qemu(_) => qemu::qemu_message(spec),
        }
    }

    /// Sockets to remove from the VM directory at the end.
    pub fn sockets(&self, spec: &VmSpec) -> Vec<PathBuf> {
        match self {
            Launcher::Kvm(_) => kvm::sockets(spec),
            Launcher::Qemu(_) => vec![
                qemu::vhost_user_socket(spec),
                // vhost-device-vsock's own listener for host-initiated connections.
                spec.dir.join(VSOCK_UDS_BASE),
            ],
        }
    }
}

impl VmSpec {
    /// Where the guest's vsock connections to `port` arrive (Firecracker's convention).
    pub fn vsock_uds(&self) -> PathBuf {
        self.dir.join(format!("{}_{}", VSOCK_UDS_BASE, self.port))
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join(vm_dir::SERIAL_LOG)
    }

    /// The socket the VMM connects its boot-marker port to.
    pub fn marker_socket(&self) -> PathBuf {
        self.dir.join(vm_dir::MARKER_SOCKET)
    }
}

#[cfg(test)]
impl VmSpec {
    /// VM `id` in `dir` for tests that build a VMM's command line or watch
    /// a fake VMM: TCG, 256 MiB, one vCPU, placeholder kernel and initramfs
    /// paths, a 5-second timeout; tests change what they look at.
    pub fn for_test(id: u32, dir: &Path) -> VmSpec {
        VmSpec {
            id,
            dir: dir.to_path_buf(),
            kernel: PathBuf::from("/k/vmlinux"),
            initramfs: Some(PathBuf::from("/k/initramfs.cpio.gz")),
            cmdline: format!("console=ttyS0 vmbench.id={id}"),
            mem_mib: 256,
            vcpus: 1,
            accel: Accel::Tcg,
            port: 1234,
            timeout: Duration::from_secs(5),
            entry: None,
            disks: Vec::new(),
        }
    }
}

/// Base name of the host Unix socket for guest-initiated vsock connections:
/// the name our VMM uses, which the qemu backend's vhost-device-vsock is
/// given too, so both backends' VM directories look the same.
pub const VSOCK_UDS_BASE: &str = vm_dir::VSOCK_SOCKET;

/// The guest's vsock CID. Each VM has its own vsock device (our VMM's, or
/// its own vhost-device-vsock), so every guest can have the same one.
pub const GUEST_CID: u32 = 3;

/// sun_path holds 108 bytes including the terminating NUL.
pub const UNIX_PATH_MAX_BYTES: usize = 107;

/// Children die with the thread that started them: no QEMU outlives
/// vmbench. They are in a process group of their own, so a Ctrl-C at the
/// terminal reaches vmbench alone, which stops them in order
/// ([`crate::interrupt`]) rather than each dying on its own.
fn die_with_parent(command: &mut Command) {
    command.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // prctl(PR_SET_PDEATHSIG), which is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts `program` with stdout and stderr in `log`; it dies with its parent.
pub(crate) fn spawn_logged(program: &Path, args: Vec<String>, log: &Path) -> qemu::Result<Child> {
    let io_err = |source| qemu::Error::Io {
        path: log.to_path_buf(),
        source,
    };
    let out = File::create(log).map_err(io_err)?;
    let err = out.try_clone().map_err(io_err)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    die_with_parent(&mut command);
    command.spawn().map_err(|source| qemu::Error::Spawn {
        program: program.to_path_buf(),
        source,
    })
}
