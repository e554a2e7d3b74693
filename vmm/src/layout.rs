//! Where the VMM puts things: the boot structures of both entries (64-bit
//! Linux and PVH) in guest physical memory, guest RAM around the MMIO gap,
//! the virtio-mmio slots, and the legacy devices' ports. Everything below
//! 1 MiB sits in low memory that Linux treats as reserved or reclaims
//! later; the kernel itself loads at 1 MiB.

/// The GDT: null, 64-bit code, data, TSS and 32-bit code descriptors.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the guest installs its own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x520;
/// PVH's `hvm_start_info` (passed in EBX), followed by its module list
/// (the initramfs) and its memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// Linux's boot parameters ("zero page"), passed in RSI.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The boot stack grows down from here.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Page tables: PML4, then one PDPT, then four PDs of 2 MiB pages
/// (0xb000-0xefff), mapping the first 4 GiB.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Where a vmlinux is loaded (its physical start).
pub const KERNEL_ADDR: u64 = 0x10_0000;

/// Start of the Extended BIOS Data Area: RAM below it is usable, the MP
/// table lives here, and up to 1 MiB is left to (absent) firmware.
pub const EBDA_ADDR: u64 = 0x9fc00;

/// virtio-mmio devices: one 4 KiB slot each from here, interrupt lines
/// from [`VIRTIO_FIRST_IRQ`] (the serial port has 4).
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SLOT_BYTES: u64 = 0x1000;
pub const VIRTIO_FIRST_IRQ: u32 = 5;

/// Port I/O: COM1 (8 ports), the i8042 controller's command/status port,
/// the boot-marker port (Cloud Hypervisor's debug port), and the benchmark
/// port, a 4-byte register the VMM answers in userspace
/// ([`crate::devices::bench_port`]; kvm-unit-tests reads 0xe0 or 0x1234
/// for the same purpose; 0x0EE0 is free on a PC and in QEMU's microvm).
pub const SERIAL_BASE: u16 = 0x3f8;
pub const SERIAL_LAST: u16 = 0x3ff;
pub const I8042_COMMAND: u16 = 0x64;
pub const BOOT_MARKER_PORT: u16 = 0x80;
pub const BENCH_PORT: u16 = 0x0ee0;

/// 32-bit MMIO devices live in [`MMIO_GAP_START`, 4 GiB): no RAM there.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

/// Guest RAM for `mem_bytes` as (start, length) ranges, as the e820 map
/// shows it: low memory below the EBDA, then from 1 MiB, skipping the MMIO gap.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    let mut ranges = vec![(0, EBDA_ADDR.min(mem_bytes))];
    if mem_bytes > KERNEL_ADDR {
        let below_gap = mem_bytes.min(MMIO_GAP_START);
        ranges.push((KERNEL_ADDR, below_gap - KERNEL_ADDR));
        if mem_bytes > MMIO_GAP_START {
            ranges.push((MMIO_GAP_END, mem_bytes - MMIO_GAP_START));
        }
    }
    ranges
}

/// The host mappings behind guest RAM: like [`ram_ranges`] but with the low
/// 1 MiB in one piece (the EBDA and firmware area are memory too, just not
/// announced as usable RAM).
pub fn memory_regions(mem_bytes: u64) -> Vec<(u64, u64)> {
    let below_gap = mem_bytes.min(MMIO_GAP_START);
    let mut regions = vec![(0, below_gap)];
    if mem_bytes > MMIO_GAP_START {
        regions.push((MMIO_GAP_END, mem_bytes - MMIO_GAP_START));
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_ebda_and_the_mmio_gap() {
        assert_eq!(
            ram_ranges(256 << 20),
            vec![(0, EBDA_ADDR), (KERNEL_ADDR, (256 << 20) - KERNEL_ADDR)]
        );
        let four_gib: u64 = 4 << 30;
        assert_eq!(
            ram_ranges(four_gib),
            vec![
                (0, EBDA_ADDR),
                (KERNEL_ADDR, MMIO_GAP_START - KERNEL_ADDR),
                (MMIO_GAP_END, four_gib - MMIO_GAP_START)
            ]
        );
        assert_eq!(
            memory_regions(four_gib),
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, four_gib - MMIO_GAP_START)
            ]
        );
    }

    #[test]
    fn ram_and_regions_cover_the_same_bytes_above_1_mib() {
        for mem in [64u64 << 20, 3 << 30, 5 << 30] {
            let announced: u64 = ram_ranges(mem).iter().map(|r| r.1).sum();
            let mapped: u64 = memory_regions(mem).iter().map(|r| r.1).sum();
            assert_eq!(mapped, mem);
            assert_eq!(mapped - announced, KERNEL_ADDR - EBDA_ADDR);
        }
    }
}
