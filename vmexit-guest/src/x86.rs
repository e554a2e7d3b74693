//! The privileged instructions the guest uses outside its benchmark loops,
//! one small function each.

use core::arch::asm;

use vmexit_guest::cpuid::Leaf;

pub fn cpuid(leaf: u32, subleaf: u32) -> Leaf {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID only reads the CPU's identification; RBX, which LLVM
    // reserves, goes through a scratch register.
    unsafe {
        asm!("mov {keep}, rbx", "cpuid", "xchg {keep}, rbx", keep = out(reg) ebx,
             inout("eax") leaf => eax, inout("ecx") subleaf => ecx, out("edx") edx,
             options(nomem, nostack, preserves_flags));
    }
    Leaf {
        eax,
        ebx: ebx as u32,
        ecx,
        edx,
    }
}

/// RDMSR. The caller knows the MSR exists (or catches the #GP).
pub fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reading an MSR changes nothing; a missing one raises #GP,
    // which the IDT handles.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags));
    }
    u64::from(high) << 32 | u64::from(low)
}

/// WRMSR.
///
/// # Safety
/// The write must leave the CPU in a state the guest expects (the APIC
/// base, the TSC-deadline timer, its own value back).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// The TSC, serialised as kvm-unit-tests' `fenced_rdtsc`: MFENCE and LFENCE
/// before (earlier loads and stores done, earlier instructions finished),
/// LFENCE after (later instructions wait for it).
#[inline(always)]
pub fn fenced_rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: fences and a counter read; no memory is written.
    unsafe {
        asm!("mfence", "lfence", "rdtsc", "lfence", out("eax") low, out("edx") high, options(nostack, preserves_flags));
    }
    u64::from(high) << 32 | u64::from(low)
}

pub fn read_cr0() -> u64 {
    let value;
    // SAFETY: reading a control register changes nothing.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

pub fn read_cr4() -> u64 {
    let value;
    // SAFETY: as read_cr0.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

pub fn read_cr3() -> u64 {
    let value;
    // SAFETY: as read_cr0.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Interrupts off.
pub fn cli() {
    // SAFETY: only masks maskable interrupts on this CPU.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Interrupts on.
pub fn sti() {
    // SAFETY: every vector has a handler, on its own stack.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Halts forever with interrupts off: the end of a CPU that cannot go on.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stops this CPU only.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
