//! What runs a guest. Today: `qemu` (QEMU microvm with vhost-device-vsock);
//! the `kvm` backend (vmbench's own VMM) comes next and plugs in here.

pub mod qemu;

use std::path::PathBuf;
use std::time::Duration;

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
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub mem_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    /// The vsock port the guest connects to.
    pub port: u32,
    pub timeout: Duration,
}

impl VmSpec {
    /// Where the guest's vsock connections to `port` arrive (Firecracker's convention).
    pub fn vsock_uds(&self) -> PathBuf {
        self.dir.join(format!("{}_{}", VSOCK_UDS_BASE, self.port))
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// The socket the VMM connects its boot-marker port to.
    pub fn marker_socket(&self) -> PathBuf {
        self.dir.join("marker.sock")
    }
}

/// Base name of the host Unix socket for guest-initiated vsock connections.
pub const VSOCK_UDS_BASE: &str = "vsock.sock";

/// sun_path holds 108 bytes including the terminating NUL.
pub const UNIX_PATH_MAX_BYTES: usize = 107;
