//! The vmexit guest's program (see lib.rs for what it does and in which
//! order): entry, descriptor tables, the machine's description, vCPU 1,
//! the suite, the end.

#![no_std]
#![no_main]

extern crate alloc;

mod apic;
mod benches;
mod smp;
mod suite;
mod traps;
mod watchdog;
mod x86;

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, Ordering};

use freestanding::boot;
use freestanding::clock::{tsc_ticks, Deadline};
use freestanding::machine::{end_vm, inb, outb};
use freestanding::serial::Serial;
use vmexit_guest::config::{self, Config};
use vmexit_guest::cpuid::{self, Features, Hypercall};
use vmexit_guest::heap::Heap;
use vmexit_guest::pit;
use vmexit_guest::report::{self, Hello};

freestanding::entry_points!(pvh = pvh_main, linux = linux_main);
freestanding::mem_functions!();

/// The samples' vectors and the report's texts: a few KiB per benchmark.
const HEAP_BYTES: usize = 1 << 20;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_BYTES]);

static mut ARENA: Arena = Arena([0; HEAP_BYTES]);

#[global_allocator]
static HEAP: Heap = Heap::empty();

/// The TSC rate budgets assume when nothing states it and the PIT does
/// not answer: 3 GHz.
const ASSUMED_TSC_KHZ: u64 = 3_000_000;
/// How long vCPU 1 has to come online after its STARTUP IPIs: about 1 s.
const AP_WAIT_MS: u64 = 1000;

/// What the guest found out about the machine it runs on.
pub struct Machine {
    vendor: ([u8; 12], usize),
    hypervisor: ([u8; 12], usize),
    pub features: Features,
    /// CPUID 1 EDX bit 13: global pages (CR4.PGE).
    pub pge: bool,
    pub hypercall: Hypercall,
    /// 0 when unknown.
    pub tsc_khz: u64,
    /// What stated it: `cpuid`, `tsc_early_khz`, `pit` or `none`.
    tsc_khz_from: &'static str,
    /// 1, or 2 once vCPU 1 is online.
    pub cpus: u32,
    pub mmio_base: Option<u64>,
}

impl Machine {
    fn probe(config: &Config) -> Machine {
        let leaf0 = x86::cpuid(cpuid::LEAF_VENDOR, 0);
        let leaf1 = x86::cpuid(cpuid::LEAF_FEATURES, 0);
        let features = Features::from_leaf1(leaf1);
        let vendor = cpuid::vendor(leaf0);
        let max_leaf = leaf0.eax;
        let leaf_if = |leaf: u32, max: u32| (max >= leaf).then(|| x86::cpuid(leaf, 0));
        let (hypervisor, timing) = if features.hypervisor {
            let top = x86::cpuid(cpuid::LEAF_HYPERVISOR, 0);
            (
                cpuid::hypervisor_signature(top),
                leaf_if(cpuid::LEAF_HYPERVISOR_TIMING, top.eax),
            )
        } else {
            (([0; 12], 0), None)
        };
        let stated = cpuid::tsc_khz(
            timing,
            leaf_if(cpuid::LEAF_TSC_CRYSTAL, max_leaf),
            leaf_if(cpuid::LEAF_FREQUENCY, max_leaf),
        );
        let (tsc_khz, tsc_khz_from) = match (stated, config.tsc_khz) {
            (Some(khz), _) => (khz, "cpuid"),
            (None, Some(khz)) => (khz, "tsc_early_khz"),
            (None, None) => match pit_tsc_khz() {
                Some(khz) => (khz, "pit"),
                None => (0, "none"),
            },
        };
        Machine {
            hypercall: Hypercall::for_vendor(&vendor.0[..vendor.1]),
            vendor,
            hypervisor,
            features,
            pge: leaf1.edx & 1 << 13 != 0,
            tsc_khz,
            tsc_khz_from,
            cpus: 1,
            mmio_base: config.mmio_base,
        }
    }

    /// TSC ticks in a millisecond, assumed where unknown.
    pub fn ticks_per_ms(&self) -> u64 {
        match self.tsc_khz {
            0 => ASSUMED_TSC_KHZ,
            khz => khz,
        }
    }
}

/// The TSC's rate timed against PIT channel 0, or `None` when the PIT
/// does not count (none there) within about a second.
fn pit_tsc_khz() -> Option<u64> {
    outb(pit::COMMAND, pit::PROGRAM_CHANNEL0);
    outb(pit::CHANNEL0, 0);
    outb(pit::CHANNEL0, 0);
    let read = || {
        outb(pit::COMMAND, pit::LATCH_CHANNEL0);
        let low = inb(pit::CHANNEL0);
        u16::from_le_bytes([low, inb(pit::CHANNEL0)])
    };
    let give_up = Deadline::after(tsc_ticks(), ASSUMED_TSC_KHZ * 1000);
    let mut last = read();
    let start = tsc_ticks();
    let mut pit_ticks = 0;
    while pit_ticks < pit::CALIBRATION_PIT_TICKS {
        if give_up.passed(tsc_ticks()) {
            return None;
        }
        let now = read();
        pit_ticks += pit::elapsed(last, now);
        last = now;
    }
    pit::tsc_khz(tsc_ticks() - start, pit_ticks)
}

/// Masks every line of both 8259s: no interrupt comes through them.
fn mask_pics() {
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

/// Prints one report line.
pub fn say(args: fmt::Arguments) {
    let _ = writeln!(Serial, "{}{args}", report::PREFIX);
}

/// Set by the first fatal error: a second (a panic while reporting the
/// first) only ends the VM.
static FATAL: AtomicBool = AtomicBool::new(false);

/// Reports why the suite cannot go on and ends the VM.
pub fn fatal(args: fmt::Arguments) -> ! {
    if !FATAL.swap(true, Ordering::SeqCst) {
        say(format_args!("{}", report::Error(args)));
    }
    end_vm()
}

extern "C" fn pvh_main(start_info: u64) -> ! {
    // SAFETY: pvh_start passes EBX, the PVH start info's physical address, and
    // the boot page tables map the first 4 GiB one to one.
    start(unsafe { boot::pvh_cmdline(start_info) })
}

extern "C" fn linux_main(boot_params: u64) -> ! {
    // SAFETY: linux_start passes RSI, the zero page's physical address, and
    // the boot page tables map the first 4 GiB one to one.
    start(unsafe { boot::linux_cmdline(boot_params) })
}

fn start(cmdline: boot::Result<&'static [u8]>) -> ! {
    // SAFETY: the arena is this allocator's alone, handed over once,
    // before anything allocates.
    unsafe { HEAP.init((&raw mut ARENA).cast(), HEAP_BYTES) };
    traps::init_tables();
    traps::load(0);
    mask_pics();
    let cmdline = match cmdline {
        Ok(line) => line,
        Err(e) => fatal(format_args!("cannot read the command line: {e}")),
    };
    let config = match config::parse(cmdline) {
        Ok(config) => config,
        Err(e) => fatal(format_args!("{e}")),
    };
    let mut machine = Machine::probe(&config);
    let mode = apic::choose(machine.features.apic, machine.features.x2apic);
    apic::enable_here();
    let ticks_per_ms = machine.ticks_per_ms();
    // Without a counting APIC timer, benchmarks run unwatched.
    let _ = watchdog::calibrate(ticks_per_ms);
    if smp::start_ap(ticks_per_ms, AP_WAIT_MS * ticks_per_ms) {
        machine.cpus = 2;
    }
    say(format_args!(
        "{}",
        Hello {
            cpus: machine.cpus,
            vendor: &machine.vendor.0[..machine.vendor.1],
            tsc_khz: machine.tsc_khz,
            tsc_khz_from: machine.tsc_khz_from,
            hypervisor: match machine.hypervisor.1 {
                0 => b"none",
                len => &machine.hypervisor.0[..len],
            },
            apic: mode.name(),
        }
    ));
    suite::run(&config, &machine);
    say(format_args!("done"));
    end_vm()
}

/// What a landing pad of the precompiled `alloc` crate (built to unwind)
/// calls when a callee unwinds. Nothing here unwinds (`panic = "abort"`,
/// and the panic handler never returns), so it is never called; LTO
/// usually proves that and drops the reference, but not for every shape of
/// code, and the link needs the symbol either way.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    fatal(format_args!("_Unwind_Resume called: something unwound"))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let line = info.location().map_or(0, |l| l.line());
    if smp::on_ap() {
        x86::halt_forever()
    }
    if traps::catch_armed() {
        traps::escape(traps::Fault::Panic { line })
    }
    let file = info.location().map_or("?", |l| l.file());
    fatal(format_args!("the guest panicked at {file}:{line}"))
}
