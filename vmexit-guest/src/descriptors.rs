//! The guest's GDT, TSS and IDT entries as the CPU reads them (64-bit mode).
//!
//! GDT: null, 0x08 64-bit code, 0x10 data (the boot GDT's selectors, so
//! loading it changes no segment), 0x18 32-bit code (the application
//! processor's way from real mode to long mode), then one 16-byte TSS
//! descriptor per CPU from 0x20. Each TSS names the CPU's interrupt stacks:
//! every IDT gate switches to IST 1 (IST 2 for NMI, #DF and #MC), so an
//! interrupt never writes below the interrupted code's stack pointer,
//! where Rust code keeps data (the x86-64 red zone; stable Rust cannot turn
//! it off for this target).

pub const CODE64: u64 = 0x00af_9a00_0000_ffff;
pub const DATA: u64 = 0x00cf_9200_0000_ffff;
pub const CODE32: u64 = 0x00cf_9a00_0000_ffff;

pub const SELECTOR_CODE64: u16 = 0x08;
pub const SELECTOR_DATA: u16 = 0x10;
pub const SELECTOR_CODE32: u16 = 0x18;

/// CPUs the guest runs on: the boot CPU and the one it starts.
pub const MAX_CPUS: usize = 2;
/// GDT entries (8 bytes each): four segments and a 2-entry TSS per CPU.
pub const GDT_ENTRIES: usize = 4 + 2 * MAX_CPUS;

/// CPU `cpu`'s TSS selector.
pub const fn tss_selector(cpu: usize) -> u16 {
    (0x20 + 16 * cpu) as u16
}

/// The whole GDT, given each CPU's TSS address.
pub fn gdt(tss_addrs: [u64; MAX_CPUS]) -> [u64; GDT_ENTRIES] {
    let mut gdt = [0, CODE64, DATA, CODE32, 0, 0, 0, 0];
    for (cpu, &addr) in tss_addrs.iter().enumerate() {
        let [low, high] = tss_descriptor(addr, TSS_BYTES as u32 - 1);
        gdt[4 + 2 * cpu] = low;
        gdt[5 + 2 * cpu] = high;
    }
    gdt
}

/// An available 64-bit TSS at `base`.
pub fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    let low = u64::from(limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | 0x89 << 40
        | u64::from(limit >> 16 & 0xf) << 48
        | (base >> 24 & 0xff) << 56;
    [low, base >> 32]
}

/// The 64-bit task-state segment: only the interrupt stacks matter here.
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy)]
pub struct Tss {
    reserved0: u32,
    pub rsp: [u64; 3],
    reserved1: u64,
    /// IST 1 to 7.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Past the limit: no I/O permission bitmap (CPL 0 needs none).
    pub iomap_base: u16,
}

pub const TSS_BYTES: usize = core::mem::size_of::<Tss>();

impl Tss {
    /// All zero (so a static of them lands in .bss); set `iomap_base` to
    /// [`TSS_BYTES`] before use.
    pub const ZERO: Tss = Tss {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        iomap_base: 0,
    };
}

/// Which IST an exception or interrupt vector runs on: 2 for NMI, #DF and
/// #MC (which may come while IST 1 is in use), 1 for every other.
pub fn ist_for(vector: u8) -> u8 {
    match vector {
        2 | 8 | 18 => 2,
        _ => 1,
    }
}

/// Whether the CPU pushes an error code for exception `vector`.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// A present, DPL 0, 64-bit interrupt gate (interrupts off in the handler).
pub fn interrupt_gate(handler: u64, selector: u16, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | u64::from(selector) << 16
        | u64::from(ist & 7) << 32
        | 0x8e << 40
        | (handler >> 16 & 0xffff) << 48;
    [low, handler >> 32]
}

/// An exception's usual name, for the report.
pub fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        32.. => "interrupt",
        _ => "reserved exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tss_is_104_bytes_with_ist1_at_0x24() {
        assert_eq!(TSS_BYTES, 104);
        let tss = Tss::ZERO;
        let base = &tss as *const Tss as usize;
        assert_eq!(core::ptr::addr_of!(tss.ist) as usize - base, 0x24);
        assert_eq!(core::ptr::addr_of!(tss.iomap_base) as usize - base, 0x66);
    }

    #[test]
    fn tss_descriptor_splits_its_base() {
        let [low, high] = tss_descriptor(0x1234_5678_9abc_def0, 103);
        assert_eq!(low & 0xffff, 103);
        assert_eq!(low >> 16 & 0xff_ffff, 0xbc_def0);
        assert_eq!(low >> 40 & 0xff, 0x89, "present, available 64-bit TSS");
        assert_eq!(low >> 56, 0x9a);
        assert_eq!(high, 0x1234_5678);
    }

    #[test]
    fn gdt_has_the_boot_selectors_and_a_tss_per_cpu() {
        let gdt = gdt([0x20_0000, 0x20_1000]);
        assert_eq!(gdt[usize::from(SELECTOR_CODE64 / 8)], CODE64);
        assert_eq!(gdt[usize::from(SELECTOR_DATA / 8)], DATA);
        assert_eq!(gdt[usize::from(SELECTOR_CODE32 / 8)], CODE32);
        assert_eq!(
            [
                gdt[usize::from(tss_selector(1) / 8)],
                gdt[usize::from(tss_selector(1) / 8) + 1]
            ],
            tss_descriptor(0x20_1000, 103)
        );
    }

    #[test]
    fn interrupt_gate_layout() {
        let [low, high] = interrupt_gate(0xffff_8000_0010_2030, 0x08, 1);
        assert_eq!(low & 0xffff, 0x2030);
        assert_eq!(low >> 16 & 0xffff, 0x08);
        assert_eq!(low >> 32 & 0x7, 1);
        assert_eq!(low >> 40 & 0xff, 0x8e);
        assert_eq!(low >> 48, 0x0010);
        assert_eq!(high, 0xffff_8000);
    }

    #[test]
    fn error_codes_and_stacks() {
        let with: Vec<u8> = (0..32).filter(|&v| has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
        assert_eq!(ist_for(8), 2);
        assert_eq!(ist_for(13), 1);
        assert_eq!(ist_for(0xb0), 1);
        assert_eq!(exception_name(6), "#UD");
        assert_eq!(exception_name(0xb0), "interrupt");
    }
}
