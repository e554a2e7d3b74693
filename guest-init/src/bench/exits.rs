//! Instructions that leave the guest from userspace: `cpuid_user`,
//! `port_io_user` (a port the VMM answers in its userspace),
//! `port_io_kernel` (a port KVM answers in the kernel) and `mmio_user` (a
//! register of the VMM's first virtio-mmio device). The difference between
//! the two port reads is the trip to the VMM's userspace and back.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::timing::time_loop;
use super::{require_vm, Env, SetupError, Workload};

/// The port our VMM answers in userspace (`layout::BENCH_PORT`).
pub const USER_PORT: u16 = 0x0EE0;

/// The PIC's ELCR: KVM's in-kernel irqchip answers it. It is 2 bytes wide
/// there (0x4d0–0x4d1), so it is read a byte at a time, as kvm-unit-tests
/// does: a 4-byte read would not be KVM's and would go to userspace.
pub const KERNEL_PORT: u16 = 0x4d0;

/// What a virtio-mmio device's MagicValue register reads: "virt".
pub const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976;

/// CPUID leaf 0 (the vendor), registers as returned.
pub fn cpuid0() -> [u32; 4] {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU and only writes registers.
    let r = unsafe { std::arch::x86_64::__cpuid(0) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The CPU vendor string, from CPUID leaf 0.
pub fn vendor() -> String {
    let [_, ebx, ecx, edx] = cpuid0();
    let bytes: Vec<u8> = [ebx, edx, ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `cpuid_user`: CPUID leaf 0 from userspace; it always exits in a VM.
pub fn cpuid_user(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(Cpuid))
}

struct Cpuid;

impl Workload for Cpuid {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        Ok(time_loop(iterations, || {
            black_box(cpuid0());
        }))
    }
}

/// `port_io_user`: a 32-bit read (`inl`) of port 0x0EE0.
pub fn port_io_user(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    require_vm(env, "port 0x0EE0 is the VMM's")?;
    PortRead::open(USER_PORT, Width::Long)
}

/// `port_io_kernel`: an 8-bit read (`inb`) of port 0x4d0.
pub fn port_io_kernel(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    require_vm(env, "port 0x4d0 is the VM's interrupt controller")?;
    PortRead::open(KERNEL_PORT, Width::Byte)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    Byte,
    Long,
}

impl Width {
    fn bytes(self) -> u32 {
        match self {
            Width::Byte => 1,
            Width::Long => 4,
        }
    }
}

struct PortRead {
    port: u16,
    width: Width,
    /// What the first read gave (the VMM's answer).
    value: u32,
}

#[inline(always)]
fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller has these 4 ports through ioperm; a port read
    // changes no memory of ours.
    unsafe {
        std::arch::asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags));
    }
    value
}

#[inline(always)]
fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller has this port through ioperm; a port read changes
    // no memory of ours.
    unsafe {
        std::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    }
    value
}

impl PortRead {
    fn open(port: u16, width: Width) -> Result<Box<dyn Workload>, SetupError> {
        let bytes = libc::c_ulong::from(width.bytes());
        // SAFETY: ioperm changes only this process's I/O permission bitmap.
        if unsafe { libc::ioperm(libc::c_ulong::from(port), bytes, 1) } != 0 {
            return Err(SetupError::Unavailable(format!(
                "ioperm for port {port:#x}: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut read = PortRead {
            port,
            width,
            value: 0,
        };
        read.value = read.read();
        Ok(Box::new(read))
    }

    #[inline(always)]
    fn read(&self) -> u32 {
        match self.width {
            Width::Byte => u32::from(inb(self.port)),
            Width::Long => inl(self.port),
        }
    }
}

impl Workload for PortRead {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let port = self.port;
        Ok(match self.width {
            Width::Byte => time_loop(iterations, || {
                black_box(inb(port));
            }),
            Width::Long => time_loop(iterations, || {
                black_box(inl(port));
            }),
        })
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![
            ("port".to_string(), u64::from(self.port)),
            ("width_bytes".to_string(), u64::from(self.width.bytes())),
            ("value".to_string(), u64::from(self.value)),
        ]
    }
}

/// `mmio_user`: a 32-bit read of the first virtio-mmio device's MagicValue
/// register, mapped from /dev/mem.
pub fn mmio_user(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    require_vm(env, "the virtio-mmio registers are the VMM's")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let iomem = std::fs::read_to_string("/proc/iomem").unwrap_or_default();
    let base = first_virtio_mmio(&cmdline, &iomem).ok_or_else(|| {
        SetupError::Unavailable(
            "no virtio-mmio device: none on the kernel command line or in /proc/iomem".into(),
        )
    })?;
    MmioRead::map(base)
}

/// The base address of the first virtio-mmio device: the first
/// `virtio_mmio.device=<size>@<base>:<irq>` on the kernel command line (how
/// vmbench's VMM and QEMU microvm describe them), else the first
/// `virtio-mmio` range in /proc/iomem.
pub fn first_virtio_mmio(cmdline: &str, iomem: &str) -> Option<u64> {
    let from_cmdline = cmdline.split_ascii_whitespace().find_map(|word| {
        let spec = word.strip_prefix("virtio_mmio.device=")?;
        let (_size, rest) = spec.split_once('@')?;
        let base = rest.split(':').next()?;
        parse_number(base)
    });
    from_cmdline.or_else(|| {
        iomem.lines().find_map(|line| {
            let (range, name) = line.trim().split_once(" : ")?;
            if !name.starts_with("virtio-mmio") && !name.starts_with("virtio_mmio") {
                return None;
            }
            u64::from_str_radix(range.split('-').next()?, 16).ok()
        })
    })
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

struct MmioRead {
    page: NonNull<u8>,
    register: *const u32,
    base: u64,
}

const PAGE_BYTES: u64 = 4096;

impl MmioRead {
    fn map(base: u64) -> Result<Box<dyn Workload>, SetupError> {
        if base % 4 != 0 {
            return Err(SetupError::Failed(format!(
                "virtio-mmio base {base:#x} is not 4-byte aligned"
            )));
        }
        let mem = match std::fs::OpenOptions::new()
            .read(true)
            // Uncached: this is device memory.
            .custom_flags(libc::O_SYNC)
            .open("/dev/mem")
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SetupError::Unavailable(
                    "/dev/mem is missing: the guest kernel lacks CONFIG_DEVMEM".into(),
                ))
            }
            Err(e) => return Err(SetupError::Failed(format!("open /dev/mem: {e}"))),
        };
        let page_base = base & !(PAGE_BYTES - 1);
        let offset = i64::try_from(page_base)
            .map_err(|_| SetupError::Failed(format!("address {base:#x} out of range")))?;
        // SAFETY: a new shared read-only mapping of one page of device
        // memory at an address the kernel picks; no Rust object lives there.
        let page = unsafe {
            mmap(
                None,
                NonZeroUsize::new(PAGE_BYTES as usize).expect("non-zero"),
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                &mem,
                offset,
            )
        }
        .map_err(|e| {
            SetupError::Unavailable(format!(
                "/dev/mem refuses to map {page_base:#x}: {} (CONFIG_STRICT_DEVMEM?)",
                e.desc()
            ))
        })?;
        let page: NonNull<u8> = page.cast();
        // SAFETY: base - page_base < PAGE_BYTES: inside the mapped page.
        let register = unsafe { page.as_ptr().add((base - page_base) as usize) }.cast::<u32>();
        let read = MmioRead {
            page,
            register,
            base,
        };
        let magic = read.read();
        if magic != VIRTIO_MMIO_MAGIC {
            return Err(SetupError::Failed(format!(
                "{base:#x} reads {magic:#010x}, not the virtio-mmio magic {VIRTIO_MMIO_MAGIC:#010x}"
            )));
        }
        Ok(Box::new(read))
    }

    #[inline(always)]
    fn read(&self) -> u32 {
        // SAFETY: `register` is 4-byte aligned inside the page mapped in
        // `map`, which stays mapped as long as self; a volatile read is one
        // 32-bit load, what the device expects.
        unsafe { self.register.read_volatile() }
    }
}

impl Workload for MmioRead {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        Ok(time_loop(iterations, || {
            black_box(self.read());
        }))
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![("address".to_string(), self.base)]
    }
}

impl Drop for MmioRead {
    fn drop(&mut self) {
        // SAFETY: the page is ours and nothing refers to it any more.
        let _ = unsafe { munmap(self.page.cast(), PAGE_BYTES as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_device_on_the_command_line_wins() {
        let cmdline =
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6";
        assert_eq!(first_virtio_mmio(cmdline, ""), Some(0xd000_0000));
        let qemu = "virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11";
        assert_eq!(first_virtio_mmio(qemu, ""), Some(0xfeb0_0e00));
    }

    #[test]
    fn else_the_first_range_in_iomem() {
        let iomem = "00000000-00000fff : Reserved\n\
                     feb00e00-feb00fff : virtio-mmio.0\n\
                     feb00c00-feb00dff : virtio-mmio.1\n";
        assert_eq!(first_virtio_mmio("console=ttyS0", iomem), Some(0xfeb0_0e00));
        assert_eq!(
            first_virtio_mmio("virtio_mmio.device=junk", "nothing"),
            None
        );
    }

    #[test]
    fn the_vendor_is_twelve_letters() {
        assert_eq!(vendor().len(), 12);
    }

    #[test]
    fn cpuid_runs_anywhere() {
        let mut cpuid = cpuid_user(&Env {
            in_vm: false,
            settings: crate::settings::Settings::default(),
        })
        .unwrap();
        assert!(cpuid.run(10).unwrap() > 0);
    }
}
