//! Running the selected benchmarks one after the other: each is prepared
//! (or unavailable), probed once under a catch (a fault there may mean
//! unavailable), then measured by `vmbench-sampling` under a catch, with
//! its window marked around the samples; its line is printed before the
//! next starts.

use alloc::string::{String, ToString};
use core::convert::Infallible;
use core::sync::atomic::{compiler_fence, AtomicBool, Ordering};

use freestanding::machine::outb;
use vmbench_sampling::{measure, Bench as Sampled, Config as Sampling, Measurement};
use vmexit_guest::config::Config;
use vmexit_guest::report::{Bench, Outcome, Timing};
use vmexit_guest::{BENCHMARKS, MARKER_PORT, WINDOW_END, WINDOW_START};

use crate::benches::{self, Body};
use crate::traps::{self, Fault};
use crate::x86::{fenced_rdtsc, read_cr0, read_cr4, sti};
use crate::{say, watchdog, Machine};

/// Runs of 2 operations before calibration.
const WARM_UP_RUNS: u32 = 3;
/// How long a benchmark's first operation may take before the watchdog
/// ends it.
const PROBE_WATCHDOG_MS: u64 = 2000;
/// How long a measurement may run past three times its budget before the
/// watchdog ends it (calibration's last run and the first sample may each
/// take about as long as all the budget).
const MEASURE_WATCHDOG_MS: u64 = 2000;

/// Calibration never goes past 2^32 operations per run (the design's cap).
const MAX_ITERATIONS: u64 = 1 << 32;

/// Whether the running benchmark's window is open: a fault leaves the
/// measurement at any instruction, so the flag lives where a store cannot
/// be put off.
static WINDOW_OPEN: AtomicBool = AtomicBool::new(false);

/// A test aid's way of going wrong once the window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inject {
    Fault,
    Hang,
}

/// Canonical and far past the identity-mapped 4 GiB: reading it faults.
const UNMAPPED_ADDR: u64 = 0x20_0000_0000;

/// A benchmark as the sampler sees it: runs timed with the serialised TSC.
struct Timed<'a> {
    body: &'a Body,
    window: u16,
    inject: Option<Inject>,
}

impl Sampled for Timed<'_> {
    /// Faults do not come back this way: they leave through the catch.
    type Error = Infallible;

    fn run(&mut self, iterations: u64) -> Result<u64, Infallible> {
        let start = fenced_rdtsc();
        self.body.run(iterations);
        Ok(fenced_rdtsc().saturating_sub(start))
    }

    fn now(&mut self) -> u64 {
        fenced_rdtsc()
    }

    fn window_start(&mut self) {
        mark(WINDOW_START, self.window);
        WINDOW_OPEN.store(true, Ordering::SeqCst);
        compiler_fence(Ordering::SeqCst);
        match self.inject {
            // SAFETY: deliberately faulting (a page fault, caught by the
            // suite): the address is mapped by nothing.
            Some(Inject::Fault) => unsafe {
                (UNMAPPED_ADDR as *const u64).read_volatile();
            },
            Some(Inject::Hang) => loop {
                core::hint::spin_loop();
            },
            None => {}
        }
    }

    fn window_end(&mut self) {
        mark(WINDOW_END, self.window);
        WINDOW_OPEN.store(false, Ordering::SeqCst);
    }
}

/// Runs every benchmark `config` selects, printing a line for each.
pub fn run(config: &Config, machine: &Machine) {
    let sampling = Sampling {
        min_run_ticks: config.min_run_ticks,
        max_iterations: MAX_ITERATIONS,
        max_samples: config.max_samples,
        budget_ticks: u64::from(config.budget_ms).saturating_mul(machine.ticks_per_ms()),
        rough: config.rough,
    };
    let (cr0, cr4) = (read_cr0(), read_cr4());
    for (index, benchmark) in BENCHMARKS.iter().enumerate() {
        if !config.is_selected(index) {
            continue;
        }
        let window = index as u16;
        let inject = match (config.test_fault, config.test_hang) {
            (Some(i), _) if i == index => Some(Inject::Fault),
            (_, Some(i)) if i == index => Some(Inject::Hang),
            _ => None,
        };
        let ended = run_one(index, window, machine, &sampling, inject);
        benches::restore(cr0, cr4);
        let outcome = match &ended {
            Ended::Ok(m) => Outcome::Ok(Timing {
                iterations: m.calibration.iterations,
                overhead_milli: m.calibration.overhead_ticks.saturating_mul(1000),
                calibration_runs: m.calibration.runs,
                stop: m.stop.as_str(),
                window,
                ops_in_window: m.ops(),
                values: &m.values,
            }),
            Ended::Unavailable(why) => Outcome::Unavailable(why),
            Ended::Failed(why) => Outcome::Failed(why),
        };
        say(format_args!(
            "{}",
            Bench {
                name: benchmark.name,
                outcome
            }
        ));
    }
}

enum Ended {
    Ok(Measurement),
    Unavailable(String),
    Failed(String),
}

fn run_one(
    index: usize,
    window: u16,
    machine: &Machine,
    sampling: &Sampling,
    inject: Option<Inject>,
) -> Ended {
    let mut body = match benches::prepare(index, machine) {
        Ok(body) => body,
        Err(why) => return Ended::Unavailable(why),
    };
    let ended = measure_body(&mut body, window, machine, sampling, inject);
    if body.uses_timer() {
        benches::disarm_timer();
    }
    ended
}

fn measure_body(
    body: &mut Body,
    window: u16,
    machine: &Machine,
    sampling: &Sampling,
    inject: Option<Inject>,
) -> Ended {
    let ticks_per_ms = machine.ticks_per_ms();
    let watched = !body.uses_timer();
    if watched {
        watchdog::arm(PROBE_WATCHDOG_MS, ticks_per_ms);
    }
    // The first operations also warm up, through the very code the samples
    // run: QEMU's TCG translates code on its first run, and a calibration
    // run slowed by that would end calibration early.
    let probed = traps::catching(|| {
        sti();
        body.probe()?;
        let mut timed = Timed {
            body,
            window,
            inject: None,
        };
        for _ in 0..WARM_UP_RUNS {
            let Ok(_) = timed.run(2);
        }
        Ok(())
    });
    watchdog::disarm();
    match probed {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Ended::Unavailable(why),
        Err(fault) => {
            let unavailable = match fault {
                Fault::Watchdog { ms } => body.unavailable_on_hang(ms),
                _ => body.unavailable_on(&fault),
            };
            return match unavailable {
                Some(why) => Ended::Unavailable(why),
                None => Ended::Failed(fault_text("its first operation", &fault)),
            };
        }
    }
    WINDOW_OPEN.store(false, Ordering::SeqCst);
    if watched {
        let budget_ms = sampling.budget_ticks / ticks_per_ms;
        watchdog::arm(
            budget_ms
                .saturating_mul(3)
                .saturating_add(MEASURE_WATCHDOG_MS),
            ticks_per_ms,
        );
    }
    let measured = traps::catching(|| {
        sti();
        let mut timed = Timed {
            body,
            window,
            inject,
        };
        let Ok(measurement) = measure(&mut timed, sampling);
        measurement
    });
    watchdog::disarm();
    match measured {
        Ok(measurement) => Ended::Ok(measurement),
        Err(fault) => {
            if WINDOW_OPEN.swap(false, Ordering::SeqCst) {
                mark(WINDOW_END, window);
            }
            Ended::Failed(fault_text("a measured run", &fault))
        }
    }
}

fn fault_text(during: &str, fault: &Fault) -> String {
    let mut text = during.to_string();
    text.push_str(": ");
    text.push_str(&fault.to_string());
    text
}

/// A window mark: the mark byte and the window id, low byte first.
fn mark(byte: u8, window: u16) {
    let [low, high] = window.to_le_bytes();
    outb(MARKER_PORT, byte);
    outb(MARKER_PORT, low);
    outb(MARKER_PORT, high);
}
