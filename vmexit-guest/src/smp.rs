//! Starting vCPU 1 and what it does: answer IPIs.
//!
//! The boot CPU copies a small real-mode trampoline to [`TRAMPOLINE_ADDR`]
//! (below 1 MiB, 4 KiB-aligned: a STARTUP IPI names its page) and sends
//! INIT, then STARTUP (twice if the first goes unanswered, as the MP
//! specification's sequence has it) to APIC ID 1. The trampoline loads the
//! guest's GDT, enters protected mode and jumps to `vmexit_ap_entry32`,
//! which turns on long mode with the boot CPU's page tables, takes its own
//! stack and calls [`ap_main`]: the CPU loads its TSS and the IDT, enables
//! its APIC, says it is online, and halts with interrupts on for good. Each
//! [`BENCH_VECTOR`](crate::traps::BENCH_VECTOR) IPI wakes it; the handler
//! counts it and the CPU halts again.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use freestanding::clock::{tsc_ticks, Deadline};
use vmexit_guest::descriptors::SELECTOR_CODE32;

use crate::{apic, traps, x86};

/// Where the trampoline runs: page 3, past the real-mode IVT and BIOS data,
/// below every boot structure our VMM and QEMU put in low memory that the
/// guest still reads (none, once its command line is parsed).
pub const TRAMPOLINE_ADDR: u64 = 0x3000;
const AP_APIC_ID: u32 = 1;
const AP_STACK_BYTES: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; AP_STACK_BYTES]);

static mut AP_STACK: Stack = Stack([0; AP_STACK_BYTES]);
/// Read by the 32-bit code: the page tables (the boot CPU's CR3, below 4 GiB).
static mut AP_CR3: u32 = 0;
/// Read by the 64-bit code: the top of [`AP_STACK`].
static mut AP_STACK_TOP: u64 = 0;
static AP_ONLINE: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .pushsection .text.vmexit_smp, "ax"
    .code16
    .globl vmexit_ap_trampoline
vmexit_ap_trampoline:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl vmexit_ap_gdtr - vmexit_ap_trampoline
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *(vmexit_ap_far - vmexit_ap_trampoline)
    .balign 8
    .globl vmexit_ap_gdtr
vmexit_ap_gdtr:
    .word 0
    .long 0
    .balign 8
    .globl vmexit_ap_far
vmexit_ap_far:
    .long 0
    .word 0
    .globl vmexit_ap_trampoline_end
vmexit_ap_trampoline_end:

    .code32
    .globl vmexit_ap_entry32
vmexit_ap_entry32:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr4, %eax
    orl $0x620, %eax            /* PAE, OSFXSR, OSXMMEXCPT, as the boot CPU */
    movl %eax, %cr4
    movl {cr3}, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $~0x4, %eax
    orl $0x80000002, %eax       /* PG, MP */
    movl %eax, %cr0
    ljmpl $0x08, $vmexit_ap_entry64

    .code64
vmexit_ap_entry64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq {stack_top}(%rip), %rsp
    call {ap_main}
1:
    cli
    hlt
    jmp 1b
    .popsection
    "#,
    cr3 = sym AP_CR3,
    stack_top = sym AP_STACK_TOP,
    ap_main = sym ap_main,
    options(att_syntax)
);

extern "C" {
    static vmexit_ap_trampoline: u8;
    static vmexit_ap_trampoline_end: u8;
    static vmexit_ap_gdtr: u8;
    static vmexit_ap_far: u8;
    static vmexit_ap_entry32: u8;
}

/// Starts vCPU 1 (APIC ID 1) and waits for it, at most `wait_ticks`.
/// Returns whether it came online.
pub fn start_ap(ticks_per_ms: u64, wait_ticks: u64) -> bool {
    if apic::mode() == apic::Mode::None {
        return false;
    }
    let addr = |s: &u8| s as *const u8 as u64;
    // SAFETY: the symbols are the trampoline's labels; only their addresses
    // are taken.
    let (start, end, gdtr, far, entry32) = unsafe {
        (
            addr(&vmexit_ap_trampoline),
            addr(&vmexit_ap_trampoline_end),
            addr(&vmexit_ap_gdtr),
            addr(&vmexit_ap_far),
            addr(&vmexit_ap_entry32),
        )
    };
    let len = (end - start) as usize;
    let (gdt_base, gdt_limit) = traps::gdt_pointer();
    let cr3 = x86::read_cr3();
    // SAFETY: low memory at TRAMPOLINE_ADDR is RAM nothing else uses any
    // more (the boot structures were read), identity-mapped; the copy and
    // its patched fields stay within its `len` bytes; AP_CR3 and
    // AP_STACK_TOP are written before the CPU that reads them starts.
    unsafe {
        let page = TRAMPOLINE_ADDR as *mut u8;
        core::ptr::copy_nonoverlapping(start as *const u8, page, len);
        let gdtr_at = page.add((gdtr - start) as usize);
        gdtr_at.cast::<u16>().write_unaligned(gdt_limit);
        gdtr_at
            .add(2)
            .cast::<u32>()
            .write_unaligned(gdt_base as u32);
        let far_at = page.add((far - start) as usize);
        far_at.cast::<u32>().write_unaligned(entry32 as u32);
        far_at.add(4).cast::<u16>().write_unaligned(SELECTOR_CODE32);
        AP_CR3 = cr3 as u32;
        let stack = &raw const AP_STACK;
        AP_STACK_TOP = stack as u64 + AP_STACK_BYTES as u64;
    }
    apic::send_init(AP_APIC_ID);
    spin_for(10 * ticks_per_ms);
    let page = (TRAMPOLINE_ADDR >> 12) as u8;
    apic::send_startup(AP_APIC_ID, page);
    spin_until(ticks_per_ms, online);
    if !online() {
        apic::send_startup(AP_APIC_ID, page);
    }
    spin_until(wait_ticks, online)
}

pub fn online() -> bool {
    AP_ONLINE.load(Ordering::SeqCst) == 1
}

fn spin_for(ticks: u64) {
    spin_until(ticks, || false);
}

/// Spins until `done` or `ticks` have passed; returns `done()`.
fn spin_until(ticks: u64, done: impl Fn() -> bool) -> bool {
    let deadline = Deadline::after(tsc_ticks(), ticks);
    while !done() && !deadline.passed(tsc_ticks()) {
        core::hint::spin_loop();
    }
    done()
}

/// Whether the code runs on vCPU 1's stack.
pub fn on_ap() -> bool {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let stack = &raw const AP_STACK as u64;
    (stack..stack + AP_STACK_BYTES as u64).contains(&rsp)
}

extern "C" fn ap_main() -> ! {
    traps::load(1);
    apic::enable_here();
    AP_ONLINE.store(1, Ordering::SeqCst);
    loop {
        // SAFETY: interrupts on and halt until one comes: the handler counts
        // it; nothing else runs on this CPU.
        unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
    }
}
