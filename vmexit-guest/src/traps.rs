//! Descriptor tables, the interrupt and exception handler, and catching a
//! benchmark's faults.
//!
//! Every vector's stub (16 bytes each from `vmexit_trap_stubs`) pushes a
//! zero where the CPU pushes no error code, then the vector, and joins
//! `vmexit_trap_common`, which saves the general registers and calls
//! [`trap`] with the frame. Every gate runs on an interrupt stack of the
//! CPU's own (see `descriptors`), which also tells the handler which CPU
//! it runs on.
//!
//! Catching: [`catching`] runs a closure through `vmexit_catch_call`, which
//! saves the callee-saved registers and the stack pointer in the CPU's
//! [`CatchSlot`] and arms it. An exception while armed is recorded as a
//! [`Fault`] and the handler's `iretq` returns to the slot's resume point
//! with the saved stack pointer, interrupts off: `catching` then returns
//! the fault, as if the closure had returned. [`escape`] (a bounded wait that
//! ran out, a panic) takes the same way without an exception. What the
//! closure had allocated stays allocated (the heap never frees) and it runs
//! no destructors: the closures caught here own nothing that needs one.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use vmexit_guest::descriptors::{
    self, exception_name, gdt, interrupt_gate, ist_for, tss_selector, Tss, GDT_ENTRIES, MAX_CPUS,
    SELECTOR_CODE64, SELECTOR_DATA,
};

use crate::{apic, watchdog};

/// The vector of every interrupt a benchmark causes: self-IPIs, the
/// TSC-deadline timer, cross-CPU IPIs (kvm-unit-tests' IPI_TEST_VECTOR).
pub const BENCH_VECTOR: u8 = 0xb0;
/// The local APIC's spurious-interrupt vector: no EOI.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// What stopped a caught closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Exception {
        vector: u8,
        error_code: u64,
        rip: u64,
    },
    /// A bounded wait ran out: for what.
    Timeout(&'static str),
    /// The watchdog bit: the benchmark ran this long without ending.
    Watchdog { ms: u64 },
    /// The guest's own code panicked, at this line.
    Panic { line: u32 },
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Fault::Exception {
                vector,
                error_code,
                rip,
            } => write!(
                f,
                "{} (vector {vector}, error code {error_code:#x}) at rip {rip:#x}",
                exception_name(vector)
            ),
            Fault::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Fault::Watchdog { ms } => write!(f, "still running after {ms} ms (the watchdog)"),
            Fault::Panic { line } => write!(f, "the guest panicked (vmexit-guest line {line})"),
        }
    }
}

/// A value each CPU reads and writes only in its own slot: written by the
/// handler while the CPU's own code is interrupted, read by that code
/// after it resumes; volatile so neither access is assumed away.
struct PerCpu<T: Copy>(UnsafeCell<[T; MAX_CPUS]>);

// SAFETY: each CPU touches only its own element, and a CPU's handler and
// code never run at once.
unsafe impl<T: Copy> Sync for PerCpu<T> {}

impl<T: Copy> PerCpu<T> {
    const fn new(value: T) -> PerCpu<T> {
        PerCpu(UnsafeCell::new([value; MAX_CPUS]))
    }

    fn get(&self, cpu: usize) -> T {
        // SAFETY: in bounds (cpu < MAX_CPUS, checked by the index), and only
        // this CPU writes it (see the Sync impl).
        unsafe { core::ptr::addr_of!((*self.0.get())[cpu]).read_volatile() }
    }

    fn set(&self, cpu: usize, value: T) {
        // SAFETY: as get.
        unsafe { core::ptr::addr_of_mut!((*self.0.get())[cpu]).write_volatile(value) }
    }
}

/// Where `vmexit_catch_call` left the way back; offsets fixed by the
/// assembly below.
#[repr(C)]
pub struct CatchSlot {
    saved_rsp: AtomicU64,
    resume: AtomicU64,
    armed: AtomicU64,
}

static CATCH: [CatchSlot; MAX_CPUS] = [const {
    CatchSlot {
        saved_rsp: AtomicU64::new(0),
        resume: AtomicU64::new(0),
        armed: AtomicU64::new(0),
    }
}; MAX_CPUS];

static FAULT: PerCpu<Option<Fault>> = PerCpu::new(None);

/// Interrupts on [`BENCH_VECTOR`] taken by each CPU.
pub static BENCH_IRQS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Other interrupts (none is expected: the 8259s are masked), per CPU.
pub static STRAY_IRQS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// vCPU 1's fault outside any catch, after which it halted for good.
static AP_FAULT: PerCpu<Option<Fault>> = PerCpu::new(None);

const IST_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_BYTES]);

/// Per CPU: IST 1, IST 2.
struct Tables {
    gdt: [u64; GDT_ENTRIES],
    tss: [Tss; MAX_CPUS],
    idt: [[u64; 2]; 256],
    ist: [[Stack; 2]; MAX_CPUS],
}

#[repr(C, align(4096))]
struct TablesCell(UnsafeCell<Tables>);

// SAFETY: written once by the boot CPU before any other CPU starts or any
// gate is used; read by the CPU itself from then on.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    gdt: [0; GDT_ENTRIES],
    tss: [Tss::ZERO; MAX_CPUS],
    idt: [[0; 2]; 256],
    ist: [const { [const { Stack([0; IST_BYTES]) }; 2] }; MAX_CPUS],
}));

extern "C" {
    static vmexit_trap_stubs: u8;
    fn vmexit_catch_call(f: extern "C" fn(*mut u8), arg: *mut u8, slot: *const CatchSlot) -> u64;
    fn vmexit_catch_escape(slot: *const CatchSlot) -> !;
}

/// The registers as `vmexit_trap_common` leaves them, then the CPU's frame.
#[repr(C)]
struct TrapFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

global_asm!(
    r#"
    .pushsection .text.vmexit_traps, "ax"
    .balign 16
    .globl vmexit_trap_stubs
vmexit_trap_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp vmexit_trap_common
    .set vector, vector + 1
    .endr

vmexit_trap_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rbx
    pushq %rbp
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call {trap}
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rbp
    popq %rbx
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq

    /* u64 vmexit_catch_call(fn, arg, slot): 0 when fn(arg) returned, 1 when
       a fault came back through the slot. */
    .globl vmexit_catch_call
vmexit_catch_call:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    movq %rsp, 0(%rdx)
    leaq 2f(%rip), %rax
    movq %rax, 8(%rdx)
    movq $1, 16(%rdx)
    movq %rdx, %rbx
    movq %rdi, %rax
    movq %rsi, %rdi
    call *%rax
    movq $0, 16(%rbx)
    xorl %eax, %eax
    jmp 3f
2:
    movl $1, %eax
3:
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

    /* vmexit_catch_escape(slot): back to the slot's resume point. */
    .globl vmexit_catch_escape
vmexit_catch_escape:
    cli
    movq $0, 16(%rdi)
    movq 0(%rdi), %rsp
    jmpq *8(%rdi)
    .popsection
    "#,
    trap = sym trap,
    options(att_syntax)
);

/// Fills the GDT, each CPU's TSS and the IDT. Once, on the boot CPU,
/// before [`load`].
pub fn init_tables() {
    let tables = TABLES.0.get();
    // SAFETY: nothing else uses the tables yet (init_tables runs first, on
    // the only CPU running); every pointer is into the one static.
    unsafe {
        for cpu in 0..MAX_CPUS {
            for ist in 0..2 {
                let stack = core::ptr::addr_of!((*tables).ist[cpu][ist]) as u64;
                (*tables).tss[cpu].ist[ist] = stack + IST_BYTES as u64;
            }
            (*tables).tss[cpu].iomap_base = descriptors::TSS_BYTES as u16;
        }
        let tss_addrs = core::array::from_fn(|cpu| core::ptr::addr_of!((*tables).tss[cpu]) as u64);
        (*tables).gdt = gdt(tss_addrs);
        let stubs = core::ptr::addr_of!(vmexit_trap_stubs) as u64;
        for vector in 0..=255u8 {
            (*tables).idt[usize::from(vector)] = interrupt_gate(
                stubs + 16 * u64::from(vector),
                SELECTOR_CODE64,
                ist_for(vector),
            );
        }
    }
}

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// The GDT's address and limit, for the application processor's trampoline.
pub fn gdt_pointer() -> (u64, u16) {
    let gdt = TABLES.0.get();
    // SAFETY: only the field's address is taken.
    let base = unsafe { core::ptr::addr_of!((*gdt).gdt) } as u64;
    (base, (GDT_ENTRIES * 8 - 1) as u16)
}

/// Loads the tables on CPU `cpu`: GDT (CS and the data segments reloaded),
/// its TSS, the IDT.
pub fn load(cpu: usize) {
    let tables = TABLES.0.get();
    let (gdt_base, gdt_limit) = gdt_pointer();
    let gdtr = Pointer {
        limit: gdt_limit,
        base: gdt_base,
    };
    let idtr = Pointer {
        limit: 256 * 16 - 1,
        // SAFETY: only the field's address is taken.
        base: unsafe { core::ptr::addr_of!((*tables).idt) } as u64,
    };
    // SAFETY: the tables were filled by init_tables; the GDT's code and data
    // selectors are the ones in use, so reloading them changes nothing but
    // the descriptor caches; the TSS selector is this CPU's own (each may be
    // loaded once: ltr marks it busy).
    unsafe {
        asm!(
            "lgdt [{gdtr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "mov fs, {data:x}",
            "mov gs, {data:x}",
            "ltr {tss:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            code = in(reg) u64::from(SELECTOR_CODE64),
            data = in(reg) u64::from(SELECTOR_DATA),
            tss = in(reg) u64::from(tss_selector(cpu)),
            tmp = out(reg) _,
        );
    }
}

/// The CPU whose interrupt stacks hold `addr` (the frame's address).
fn cpu_of_frame(addr: u64) -> usize {
    let tables = TABLES.0.get();
    (0..MAX_CPUS)
        .find(|&cpu| {
            // SAFETY: only the field's address is taken.
            let start = unsafe { core::ptr::addr_of!((*tables).ist[cpu]) } as u64;
            (start..start + 2 * IST_BYTES as u64).contains(&addr)
        })
        .unwrap_or(0)
}

/// Every interrupt and exception, on the CPU's interrupt stack with
/// interrupts off.
extern "C" fn trap(frame: *mut TrapFrame) {
    let cpu = cpu_of_frame(frame as u64);
    // SAFETY: vmexit_trap_common passes its own stack frame, ours until we
    // return.
    let frame = unsafe { &mut *frame };
    let vector = frame.vector as u8;
    match vector {
        BENCH_VECTOR => {
            BENCH_IRQS[cpu].fetch_add(1, Ordering::SeqCst);
            apic::eoi();
        }
        SPURIOUS_VECTOR => {}
        watchdog::WATCHDOG_VECTOR => {
            apic::eoi();
            if cpu == 0 && watchdog::bites() {
                let fault = Fault::Watchdog {
                    ms: watchdog::armed_ms(),
                };
                // Nothing caught: the watchdog was left armed; ignore it.
                let _ = resume_caught(cpu, frame, fault);
            }
        }
        32..=254 => {
            STRAY_IRQS[cpu].fetch_add(1, Ordering::SeqCst);
            apic::eoi();
        }
        _ => {
            let fault = Fault::Exception {
                vector,
                error_code: frame.error_code,
                rip: frame.rip,
            };
            if !resume_caught(cpu, frame, fault) {
                uncaught(cpu, fault)
            }
        }
    }
}

/// If a catch is armed on `cpu`: records `fault` and makes the handler's
/// return go to the catch's resume point, interrupts off.
fn resume_caught(cpu: usize, frame: &mut TrapFrame, fault: Fault) -> bool {
    let slot = &CATCH[cpu];
    if slot.armed.swap(0, Ordering::SeqCst) != 1 {
        return false;
    }
    FAULT.set(cpu, Some(fault));
    frame.rip = slot.resume.load(Ordering::SeqCst);
    frame.rsp = slot.saved_rsp.load(Ordering::SeqCst);
    frame.cs = u64::from(SELECTOR_CODE64);
    frame.rflags = 0x2;
    true
}

/// A fault nothing catches: the boot CPU reports it and ends the VM; vCPU 1
/// records it (ipi_cross then says so) and halts.
fn uncaught(cpu: usize, fault: Fault) -> ! {
    if cpu == 0 {
        crate::fatal(format_args!("uncaught {fault}"))
    }
    AP_FAULT.set(cpu, Some(fault));
    crate::x86::halt_forever()
}

/// vCPU 1's uncaught fault, if it had one.
pub fn ap_fault() -> Option<Fault> {
    AP_FAULT.get(1)
}

/// Runs `f` on the boot CPU, returning its result or the fault that
/// stopped it (see the module's primer). Not nested.
pub fn catching<F: FnOnce() -> R, R>(f: F) -> Result<R, Fault> {
    struct Call<F, R> {
        f: Option<F>,
        result: Option<R>,
    }
    extern "C" fn call<F: FnOnce() -> R, R>(arg: *mut u8) {
        // SAFETY: arg is `state` below, alive for the whole catch call.
        let call = unsafe { &mut *arg.cast::<Call<F, R>>() };
        if let Some(f) = call.f.take() {
            call.result = Some(f());
        }
    }
    let mut state = Call {
        f: Some(f),
        result: None,
    };
    FAULT.set(0, None);
    // SAFETY: the slot is the boot CPU's own and not armed (no nesting);
    // `call` outlives the call; a fault returns here with the registers the
    // ABI preserves restored from the stack frame vmexit_catch_call saved.
    let faulted = unsafe { vmexit_catch_call(call::<F, R>, (&raw mut state).cast(), &CATCH[0]) };
    match (faulted, state.result) {
        (0, Some(result)) => Ok(result),
        // A fault always records itself before coming back; the default is
        // for a handler that broke that rule.
        _ => Err(FAULT
            .get(0)
            .unwrap_or(Fault::Timeout("a fault record that never came"))),
    }
}

/// Leaves the closure [`catching`] runs, with `fault`; a fatal error when
/// nothing catches.
pub fn escape(fault: Fault) -> ! {
    let slot = &CATCH[0];
    if slot.armed.load(Ordering::SeqCst) == 1 {
        FAULT.set(0, Some(fault));
        // SAFETY: the slot is armed: its stack pointer and resume point are
        // those of the vmexit_catch_call frame still below us on this stack.
        unsafe { vmexit_catch_escape(slot) }
    }
    uncaught(0, fault)
}

/// Whether a catch is armed on the boot CPU (the panic handler asks).
pub fn catch_armed() -> bool {
    CATCH[0].armed.load(Ordering::SeqCst) == 1
}

// The TSS the gates rely on is the architectural 104 bytes.
const _: () = assert!(descriptors::TSS_BYTES == 104);
