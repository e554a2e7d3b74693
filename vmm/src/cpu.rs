//! A vCPU's state at the kernel's entry. Two entries exist:
//! - the 64-bit Linux entry (the x86 boot protocol's "64-bit boot
//!   protocol"): long mode with paging on the identity tables, flat segments
//!   from our GDT, RSI pointing at the boot parameters, interrupts off;
//! - the PVH entry (Xen's HVM direct boot ABI, which Linux, QEMU, Firecracker
//!   and Cloud Hypervisor share): 32-bit protected mode without paging, flat
//!   32-bit segments, EBX pointing at the `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;

use crate::boot_tables::gdt;
use crate::layout;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

#[derive(Debug, thiserror::Error)]
#[error("Cannot {what} of vCPU {vcpu}: {source}")]
pub struct Error {
    pub what: &'static str,
    pub vcpu: u64,
    #[source]
    pub source: kvm_ioctls::Error,
}

/// The error of `what` on vCPU `vcpu`, for `map_err`.
fn failed(what: &'static str, vcpu: u64) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |source| Error { what, vcpu, source }
}

/// Special registers for the 64-bit entry, from the vCPU's reset state.
pub fn long_mode_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    flat_segments(&mut sregs, gdt::CODE_INDEX);
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 |= CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// Special registers for the PVH entry: protected mode, paging off, flat
/// 32-bit code and data segments.
pub fn pvh_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    flat_segments(&mut sregs, gdt::CODE32_INDEX);
    sregs.cr0 = (sregs.cr0 | CR0_PE | CR0_ET) & !CR0_PG;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// Both entries' segments: CS from GDT entry `code`, every data segment
/// flat, our TSS, and the GDT and (empty) IDT where [`layout`] puts them.
fn flat_segments(sregs: &mut kvm_sregs, code: u16) {
    let data = gdt::segment(gdt::DATA_INDEX);
    sregs.cs = gdt::segment(code);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(gdt::TSS_INDEX);
    sregs.gdt.base = layout::GDT_ADDR;
    sregs.gdt.limit = (gdt::TABLE.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT_ADDR;
    sregs.idt.limit = 7;
}

/// General registers for the PVH entry: EBX at the start info.
pub fn pvh_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rbx: layout::PVH_INFO_ADDR,
        rflags: 0x2,
        ..Default::default()
    }
}

/// General registers for the entry: RIP at the kernel's entry point, RSI at
/// the boot parameters, a small boot stack, only the reserved RFLAGS bit set.
pub fn entry_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: layout::ZERO_PAGE_ADDR,
        rsp: layout::BOOT_STACK_ADDR,
        rbp: layout::BOOT_STACK_ADDR,
        rflags: 0x2,
        ..Default::default()
    }
}

/// The FPU as after FNINIT, with SSE exceptions masked (MXCSR's reset value).
pub fn entry_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// MSRs at the entry: the syscall MSRs cleared (the kernel sets its own), the
/// TSC from zero, and fast string operations on, as firmware would leave them.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_TSC, 0),
        msr(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit Linux boot protocol at this address, paging on tables at `cr3`.
    Linux64 { rip: u64, cr3: u64 },
    /// PVH at this 32-bit address.
    Pvh { rip: u64 },
}

impl Entry {
    /// As the account names it: `pvh` or `linux64`.
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Pvh { .. } => "pvh",
            Entry::Linux64 { .. } => "linux64",
        }
    }
}

/// Puts vCPU `index` at `entry` in 64-bit mode with page tables at `cr3`.
pub fn enter_long_mode(vcpu: &VcpuFd, index: u64, entry: u64, cr3: u64) -> Result<(), Error> {
    enter(vcpu, index, Entry::Linux64 { rip: entry, cr3 })
}

/// Puts vCPU `index` at the kernel's entry, as `entry` says.
pub fn enter(vcpu: &VcpuFd, index: u64, entry: Entry) -> Result<(), Error> {
    let sregs = vcpu
        .get_sregs()
        .map_err(failed("read the special registers", index))?;
    let (sregs, regs) = match entry {
        Entry::Linux64 { rip, cr3 } => (long_mode_sregs(sregs, cr3), entry_regs(rip)),
        Entry::Pvh { rip } => (pvh_sregs(sregs), pvh_regs(rip)),
    };
    vcpu.set_sregs(&sregs)
        .map_err(failed("set the special registers", index))?;
    vcpu.set_regs(&regs)
        .map_err(failed("set the registers", index))?;
    vcpu.set_fpu(&entry_fpu())
        .map_err(failed("set the FPU", index))?;
    set_boot_msrs(vcpu, index)
}

/// CPUID leaf 1 EBX bits 31:24: the initial APIC ID; bits 23:16: logical
/// processors per package. EDX bit 28: HTT (that count is valid).
const CPUID_APIC_ID_SHIFT: u32 = 24;
const CPUID_LOGICAL_COUNT_SHIFT: u32 = 16;
const CPUID_EDX_HTT: u32 = 1 << 28;

/// KVM's supported CPUID, made vCPU `index`'s own: its APIC ID (matching
/// the MP table's) in leaf 1 and in the x2APIC topology leaves 0xb and 0x1f.
pub fn cpuid_for(entries: &mut [kvm_bindings::kvm_cpuid_entry2], index: u32, count: u32) {
    for e in entries {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff)
                    | (index << CPUID_APIC_ID_SHIFT)
                    | (count.min(255) << CPUID_LOGICAL_COUNT_SHIFT);
                if count > 1 {
                    e.edx |= CPUID_EDX_HTT;
                }
            }
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
}

/// Local APIC registers LVT LINT0 and LINT1 and their delivery modes.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 4;
const APIC_MODE_EXTINT: u32 = 7;

/// LINT0 delivers the 8259's ExtINT and LINT1 the NMI, as firmware wires
/// them on a PC (the MP table's defaults assume it).
pub fn wire_lapic(vcpu: &VcpuFd, index: u64) -> Result<(), Error> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(failed("read the local APIC", index))?;
    for (reg, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            lapic.regs[reg + i] = b as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(failed("set the local APIC", index))
}

/// An application processor: FPU and MSRs as at reset plus ours; it waits
/// for the boot CPU's INIT/SIPI (KVM's in-kernel LAPIC holds it until then).
pub fn setup_ap(vcpu: &VcpuFd, index: u64) -> Result<(), Error> {
    vcpu.set_fpu(&entry_fpu())
        .map_err(failed("set the FPU", index))?;
    set_boot_msrs(vcpu, index)
}

fn set_boot_msrs(vcpu: &VcpuFd, index: u64) -> Result<(), Error> {
    let wanted = boot_msrs();
    let err = failed("set the MSRs", index);
    let invalid = || err(kvm_ioctls::Error::new(libc::EINVAL));
    let msrs = Msrs::from_entries(&wanted).map_err(|_| invalid())?;
    // KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set.
    let written = vcpu.set_msrs(&msrs).map_err(&err)?;
    if written != wanted.len() {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{Kvm, VcpuExit};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    use super::*;
    use crate::boot_tables::paging;

    #[test]
    fn sregs_enable_long_mode_with_our_tables() {
        let s = long_mode_sregs(kvm_sregs::default(), layout::PML4_ADDR);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, layout::PML4_ADDR);
        assert_eq!((s.cs.selector, s.cs.l), (8, 1));
        assert_eq!((s.ss.selector, s.tr.selector), (16, 24));
        assert_eq!((s.gdt.base, s.gdt.limit), (layout::GDT_ADDR, 39));
    }

    #[test]
    fn pvh_sregs_are_flat_protected_mode_without_paging() {
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        let s = pvh_sregs(reset);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!((s.cs.selector, s.cs.db, s.cs.l), (32, 1, 0));
        assert_eq!(s.ds.limit, 0xffff_ffff);
        let r = pvh_regs(0x10_0040);
        assert_eq!(
            (r.rip, r.rbx, r.rflags),
            (0x10_0040, layout::PVH_INFO_ADDR, 2)
        );
    }

    #[test]
    fn each_vcpu_gets_its_apic_id_in_cpuid() {
        use kvm_bindings::kvm_cpuid_entry2;
        let leaf = |function, ebx, edx| kvm_cpuid_entry2 {
            function,
            ebx,
            edx,
            ..Default::default()
        };
        let mut entries = [leaf(1, 0xff00_0800, 0), leaf(0xb, 0, 7), leaf(2, 5, 5)];
        cpuid_for(&mut entries, 3, 4);
        assert_eq!(entries[0].ebx, 0x0304_0800);
        assert_eq!(entries[0].edx, CPUID_EDX_HTT);
        assert_eq!(entries[1].edx, 3);
        assert_eq!((entries[2].ebx, entries[2].edx), (5, 5));
    }

    #[test]
    fn boot_msrs_clear_syscalls_and_enable_fast_strings() {
        let msrs = boot_msrs();
        assert_eq!(msrs.len(), 10);
        let misc = msrs
            .iter()
            .find(|m| m.index == MSR_IA32_MISC_ENABLE)
            .unwrap();
        assert_eq!(misc.data, MISC_ENABLE_FAST_STRING);
        assert!(msrs
            .iter()
            .filter(|m| m.index != MSR_IA32_MISC_ENABLE)
            .all(|m| m.data == 0));
    }

    #[test]
    fn entry_registers_follow_the_boot_protocol() {
        let r = entry_regs(0x100_0000);
        assert_eq!(
            (r.rip, r.rsi, r.rflags),
            (0x100_0000, layout::ZERO_PAGE_ADDR, 2)
        );
    }

    /// 64-bit code: 'K' to the serial port, then the top byte of a 64-bit
    /// immediate to the boot-marker port (only right if the CPU really is in
    /// long mode: in 32-bit mode REX.W is `dec eax`), then hlt.
    const LONG_MODE_GUEST: &[u8] = &[
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'K', // mov al, 'K'
        0xee, // out dx, al
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
        0x11, // mov rax, 0x1122334455667788
        0x48, 0xc1, 0xe8, 0x38, // shr rax, 56
        0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
        0xee, // out dx, al
        0xf4, // hlt
    ];

    #[test]
    fn tiny_guest_runs_through_our_exact_entry_setup() {
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                println!("SKIPPED: tiny_guest_runs_through_our_exact_entry_setup: cannot open /dev/kvm: {e}");
                return;
            }
        };
        let mem_bytes = 4 << 20;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_bytes)]).unwrap();
        gdt::write(&mem, layout::GDT_ADDR, layout::IDT_ADDR).unwrap();
        let cr3 =
            paging::write(&mem, layout::PML4_ADDR, layout::PDPT_ADDR, layout::PD_ADDR).unwrap();
        mem.write_slice(LONG_MODE_GUEST, GuestAddress(layout::KERNEL_ADDR))
            .unwrap();
        let vm = kvm.create_vm().unwrap();
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_bytes as u64,
            userspace_addr: mem.get_host_address(GuestAddress(0)).unwrap() as u64,
        };
        // SAFETY: the region is `mem`'s own mapping of `mem_bytes`, and `mem`
        // is declared before `vm`, so it is unmapped only after the VM is gone.
        unsafe { vm.set_user_memory_region(region) }.unwrap();
        let mut vcpu = vm.create_vcpu(0).unwrap();
        enter_long_mode(&vcpu, 0, layout::KERNEL_ADDR, cr3).unwrap();

        let mut outs = Vec::new();
        for _ in 0..10 {
            match vcpu.run().unwrap() {
                VcpuExit::IoOut(port, data) => outs.push((port, data.to_vec())),
                VcpuExit::Hlt => break,
                other => panic!("unexpected exit {other:?}"),
            }
        }
        assert_eq!(outs, vec![(0x3f8, vec![b'K']), (0x80, vec![0x11])]);
        let sregs = vcpu.get_sregs().unwrap();
        assert_eq!(
            sregs.efer & EFER_LMA,
            EFER_LMA,
            "the guest ran in long mode"
        );
    }
}
