//! The local APIC, in x2APIC mode (MSRs 0x800 on) where CPUID has it, else
//! in xAPIC mode (registers in the 4 KiB page at the APIC base, which the
//! boot page tables map uncached). The boot CPU picks the mode; vCPU 1
//! follows it.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::x86::{rdmsr, wrmsr};

const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// Register offsets in the xAPIC page; the x2APIC MSR is 0x800 + offset / 16.
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;
/// The divide configuration for 1: the timer counts at the bus rate.
const TIMER_DIVIDE_BY_1: u32 = 0b1011;
const X2APIC_SELF_IPI_MSR: u32 = 0x83f;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;
const ICR_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_FIXED: u32 = 0;
const ICR_INIT: u32 = 5 << 8;
const ICR_STARTUP: u32 = 6 << 8;
const ICR_SELF: u32 = 1 << 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    None = 0,
    XApic = 1,
    X2Apic = 2,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::XApic => "xapic",
            Mode::X2Apic => "x2apic",
        }
    }
}

static MODE: AtomicU8 = AtomicU8::new(Mode::None as u8);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0xfee0_0000);

pub fn mode() -> Mode {
    match MODE.load(Ordering::SeqCst) {
        1 => Mode::XApic,
        2 => Mode::X2Apic,
        _ => Mode::None,
    }
}

fn read(reg: u32) -> u32 {
    match mode() {
        Mode::X2Apic => rdmsr(0x800 + reg / 16) as u32,
        Mode::XApic => {
            let addr = XAPIC_BASE.load(Ordering::SeqCst) + u64::from(reg);
            // SAFETY: a register of this CPU's APIC page, mapped uncached.
            unsafe { (addr as *const u32).read_volatile() }
        }
        Mode::None => 0,
    }
}

fn write(reg: u32, value: u32) {
    match mode() {
        // SAFETY: the registers written here are the ones this module
        // manages (EOI, TPR, SVR, LVTs, ICR), with values it chose.
        Mode::X2Apic => unsafe { wrmsr(0x800 + reg / 16, u64::from(value)) },
        Mode::XApic => {
            let addr = XAPIC_BASE.load(Ordering::SeqCst) + u64::from(reg);
            // SAFETY: as above, in the APIC page mapped uncached.
            unsafe { (addr as *mut u32).write_volatile(value) }
        }
        Mode::None => {}
    }
}

/// The boot CPU's choice: x2APIC if `x2apic`, xAPIC if only `apic`.
pub fn choose(apic: bool, x2apic: bool) -> Mode {
    let mode = match (apic, x2apic) {
        (_, true) => Mode::X2Apic,
        (true, false) => Mode::XApic,
        (false, false) => Mode::None,
    };
    MODE.store(mode as u8, Ordering::SeqCst);
    if mode == Mode::XApic {
        XAPIC_BASE.store(rdmsr(MSR_APIC_BASE) & APIC_BASE_ADDR_MASK, Ordering::SeqCst);
    }
    mode
}

/// This CPU's APIC in the chosen mode, software-enabled, TPR 0, LINT0 (the
/// 8259's ExtINT) masked.
pub fn enable_here() {
    let extra = match mode() {
        Mode::None => return,
        Mode::XApic => APIC_BASE_ENABLE,
        Mode::X2Apic => APIC_BASE_ENABLE | APIC_BASE_X2APIC,
    };
    let base = rdmsr(MSR_APIC_BASE);
    if base & extra != extra {
        // SAFETY: enabling the APIC (and x2APIC mode, which CPUID offers)
        // at the base it already has.
        unsafe { wrmsr(MSR_APIC_BASE, base | extra) };
    }
    write(
        REG_SVR,
        SVR_ENABLE | u32::from(crate::traps::SPURIOUS_VECTOR),
    );
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
}

pub fn eoi() {
    write(REG_EOI, 0);
}

pub fn set_tpr(value: u32) {
    write(REG_TPR, value);
}

/// Sends `low` (vector, delivery mode, level) to APIC `dest`; in xAPIC mode
/// waits (a bounded number of reads) for the ICR to be idle again.
fn send(dest: u32, low: u32) {
    match mode() {
        Mode::X2Apic => {
            // SAFETY: an IPI this module composed.
            unsafe { wrmsr(0x830, u64::from(dest) << 32 | u64::from(low)) }
        }
        Mode::XApic => {
            write(REG_ICR_HIGH, dest << 24);
            write(REG_ICR_LOW, low);
            for _ in 0..1000 {
                if read(REG_ICR_LOW) & ICR_PENDING == 0 {
                    break;
                }
            }
        }
        Mode::None => {}
    }
}

/// A fixed IPI with `vector` to APIC `dest`.
#[inline(always)]
pub fn send_fixed(dest: u32, vector: u8) {
    send(dest, ICR_LEVEL_ASSERT | ICR_FIXED | u32::from(vector));
}

/// A fixed IPI with `vector` to this CPU: x2APIC's SELF IPI register, or
/// the ICR's self shorthand.
#[inline(always)]
pub fn self_ipi(vector: u8) {
    match mode() {
        // SAFETY: the SELF IPI register takes just a vector.
        Mode::X2Apic => unsafe { wrmsr(X2APIC_SELF_IPI_MSR, u64::from(vector)) },
        _ => send(
            0,
            ICR_SELF | ICR_LEVEL_ASSERT | ICR_FIXED | u32::from(vector),
        ),
    }
}

pub fn send_init(dest: u32) {
    send(dest, ICR_LEVEL_ASSERT | ICR_INIT);
}

/// A STARTUP IPI: the CPU starts in real mode at `page` × 4 KiB.
pub fn send_startup(dest: u32, page: u8) {
    send(dest, ICR_LEVEL_ASSERT | ICR_STARTUP | u32::from(page));
}

/// The timer in one-shot mode on `vector`, counting at the bus rate,
/// stopped.
pub fn timer_one_shot(vector: u8) {
    write(REG_TIMER_INITIAL, 0);
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    write(REG_LVT_TIMER, u32::from(vector));
}

/// Starts the one-shot timer from `count` (0 stops it).
pub fn timer_start(count: u32) {
    write(REG_TIMER_INITIAL, count);
}

/// The one-shot timer's count now.
pub fn timer_count() -> u32 {
    read(REG_TIMER_CURRENT)
}

/// The timer in TSC-deadline mode on `vector`, or masked.
pub fn timer_tsc_deadline(vector: Option<u8>) {
    match vector {
        Some(v) => write(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | u32::from(v)),
        None => write(REG_LVT_TIMER, LVT_MASKED),
    }
}
