//! Where the VMM puts things in guest physical memory for a 64-bit Linux entry.
//! Everything below 1 MiB sits in low memory that Linux treats as reserved or
//! reclaims later; the kernel itself loads at 1 MiB.

/// The GDT: null, code, data, TSS descriptors.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the guest installs its own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x520;
/// Linux's boot parameters ("zero page"), passed in RSI.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The boot stack grows down from here.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Page tables: PML4, then one PDPT, then one PD of 2 MiB pages.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Where a vmlinux is loaded (its physical start).
pub const KERNEL_ADDR: u64 = 0x10_0000;
