//! The `qemu` backend: one `qemu-system-x86_64 -M microvm,acpi=off` per VM,
//! with vsock through its own `vhost-device-vsock` process.
//!
//! - `acpi=off` makes microvm describe its virtio-mmio devices on the kernel
//!   command line (`virtio_mmio.device=`), which our minimal kernel needs.
//! - vhost-user needs guest memory QEMU can share: a memfd backend.
//! - `-no-reboot` turns the guest's reboot (`reboot=t`: triple fault) into
//!   QEMU's exit, which is how a guest without ACPI ends its VMM.
//! - The boot-marker port (0x80) is an `isa-debugcon` whose bytes go to a Unix
//!   socket vmbench listens on, so QEMU guests get a host-clock `init_start` too.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use super::{spawn_logged, Accel, VmSpec, GUEST_CID};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot create {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vhost-device-vsock exited ({status}) before creating its socket: {log_tail}")]
    VhostExited { status: String, log_tail: String },
    #[error("vhost-device-vsock did not create {socket} within {waited_ms} ms")]
    VhostNoSocket { socket: PathBuf, waited_ms: u128 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The QEMU backend's programs.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub qemu: PathBuf,
    pub vhost_device_vsock: PathBuf,
}

/// The socket QEMU and vhost-device-vsock share (vhost-user).
pub fn vhost_user_socket(spec: &VmSpec) -> PathBuf {
    spec.dir.join("vhost-vsock.sock")
}

/// QEMU's arguments for one VM.
pub fn qemu_args(spec: &VmSpec) -> Vec<String> {
    let mem = spec.mem_mib;
    let mut args: Vec<String> = vec![
        "-M".into(),
        "microvm,acpi=off,memory-backend=mem".into(),
        "-accel".into(),
        match spec.accel {
            Accel::Tcg => "tcg".into(),
            Accel::Kvm { .. } => "kvm".into(),
        },
    ];
    if let Accel::Kvm { .. } = spec.accel {
        args.extend(["-cpu".into(), "host".into()]);
    }
    args.extend([
        "-m".into(),
        format!("{mem}M"),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-serial".into(),
        format!("file:{}", spec.serial_log().display()),
    ]);
    for (index, disk) in spec.disks.iter().enumerate() {
        // QEMU's option syntax: a comma in a value is written twice.
        let file = disk.path.display().to_string().replace(',', ",,");
        // Stated, never probed: QEMU would refuse to probe a raw image for
        // writing, and a probe of what a guest wrote is how a forged qcow2
        // header would reach a host file.
        args.extend([
            "-drive".into(),
            format!(
                "file={file},format={},if=none,id=disk{index}",
                disk.format.as_str()
            ),
            "-device".into(),
            format!("virtio-blk-device,drive=disk{index}"),
        ]);
    }
    args.extend([
        "-chardev".into(),
        format!("socket,id=vsock,path={}", vhost_user_socket(spec).display()),
        "-device".into(),
        "vhost-user-vsock-device,chardev=vsock".into(),
        "-chardev".into(),
        format!("socket,id=marker,path={}", spec.marker_socket().display()),
        "-device".into(),
        format!(
            "isa-debugcon,iobase={:#x},chardev=marker",
            vmbench_proto::BOOT_MARKER_PORT
        ),
        "-kernel".into(),
        spec.kernel.display().to_string(),
        "-append".into(),
        spec.cmdline.clone(),
    ]);
    if let Some(initramfs) = &spec.initramfs {
        args.extend(["-initrd".into(), initramfs.display().to_string()]);
    }
    args
}

/// vhost-device-vsock's arguments for one VM.
pub fn vhost_args(spec: &VmSpec) -> Vec<String> {
    // uds-path is the base name: guest connections to port P arrive on "<base>_P".
    let uds_base = spec.dir.join(super::VSOCK_UDS_BASE);
    vec![
        "--vm".into(),
        format!(
            "guest-cid={GUEST_CID},socket={},uds-path={}",
            vhost_user_socket(spec).display(),
            uds_base.display()
        ),
    ]
}

impl Qemu {
    /// Starts the VM's vhost-device-vsock and waits until its vhost-user socket
    /// exists (QEMU cannot start before it does).
    pub fn start_vsock(&self, spec: &VmSpec) -> Result<Child> {
        let log = spec.dir.join("vhost-device-vsock.log");
        let mut child = spawn_logged(&self.vhost_device_vsock, vhost_args(spec), &log)?;
        let socket = vhost_user_socket(spec);
        let start = Instant::now();
        let limit = Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::VhostExited {
                    status: status.to_string(),
                    log_tail: crate::log_tail::last_bytes(&log, 600),
                });
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::VhostNoSocket {
                    socket,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(child)
    }

    /// Starts QEMU; its stdout and stderr go to `qemu.log` in the VM directory.
    pub fn start_vmm(&self, spec: &VmSpec) -> Result<Child> {
        spawn_logged(&self.qemu, qemu_args(spec), &qemu_log(spec))
    }
}

pub fn qemu_log(spec: &VmSpec) -> PathBuf {
    spec.dir.join("qemu.log")
}

/// QEMU's own complaint, if it made one (for a VM that failed).
pub fn qemu_message(spec: &VmSpec) -> String {
    crate::log_tail::last_bytes(&qemu_log(spec), 800)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::VmDisk;

    fn spec() -> VmSpec {
        VmSpec {
            vcpus: 2,
            ..VmSpec::for_test(2, std::path::Path::new("/run/vm-2"))
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn qemu_line_has_what_the_guest_needs() {
        let args = qemu_args(&spec());
        assert_eq!(after(&args, "-M"), ["microvm,acpi=off,memory-backend=mem"]);
        assert_eq!(after(&args, "-accel"), ["tcg"]);
        assert_eq!(after(&args, "-m"), ["256M"]);
        assert_eq!(after(&args, "-smp"), ["2"]);
        assert_eq!(
            after(&args, "-object"),
            ["memory-backend-memfd,id=mem,size=256M,share=on"]
        );
        assert!(args.contains(&"-no-reboot".to_string()));
        assert_eq!(after(&args, "-serial"), ["file:/run/vm-2/serial.log"]);
        assert_eq!(
            after(&args, "-device"),
            [
                "vhost-user-vsock-device,chardev=vsock",
                "isa-debugcon,iobase=0x80,chardev=marker"
            ]
        );
        assert_eq!(after(&args, "-append"), ["console=ttyS0 vmbench.id=2"]);
        assert_eq!(after(&args, "-initrd"), ["/k/initramfs.cpio.gz"]);
        assert!(!args.contains(&"-cpu".to_string()));
        let mut direct = spec();
        direct.initramfs = None;
        assert!(!qemu_args(&direct).contains(&"-initrd".to_string()));
    }

    #[test]
    fn disks_are_virtio_blk_devices_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let qcow2 = dir.path().join("root,1.qcow2");
        // A raw image whose guest wrote a qcow2 signature: still raw, as stated.
        let raw = dir.path().join("data.raw");
        std::fs::write(&raw, b"QFI\xfb\0\0\0\x03").unwrap();
        let mut s = spec();
        s.disks = vec![
            VmDisk {
                path: qcow2.clone(),
                format: vmbench_image::Format::Qcow2,
            },
            VmDisk {
                path: raw.clone(),
                format: vmbench_image::Format::Raw,
            },
        ];
        let args = qemu_args(&s);
        assert_eq!(
            after(&args, "-drive"),
            [
                format!(
                    "file={},format=qcow2,if=none,id=disk0",
                    qcow2.display().to_string().replace(',', ",,")
                ),
                format!("file={},format=raw,if=none,id=disk1", raw.display()),
            ]
        );
        let devices = after(&args, "-device");
        assert_eq!(
            devices[..2],
            [
                "virtio-blk-device,drive=disk0",
                "virtio-blk-device,drive=disk1"
            ]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut s = spec();
        s.accel = Accel::Kvm { native: true };
        let args = qemu_args(&s);
        assert_eq!(after(&args, "-accel"), ["kvm"]);
        assert_eq!(after(&args, "-cpu"), ["host"]);
    }

    #[test]
    fn vhost_routes_guest_connections_to_the_vm_directory() {
        assert_eq!(
            vhost_args(&spec()),
            [
                "--vm",
                "guest-cid=3,socket=/run/vm-2/vhost-vsock.sock,uds-path=/run/vm-2/vsock.sock"
            ]
        );
        assert_eq!(
            spec().vsock_uds(),
            PathBuf::from("/run/vm-2/vsock.sock_1234")
        );
    }
}
