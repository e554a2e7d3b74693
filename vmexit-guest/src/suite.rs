//! Running the selected benchmarks one after the other: each is prepared
//! (or unavailable), probed once under a catch (a fault there may mean
//! unavailable), then calibrated and sampled under a catch, with its window
//! marked around the samples; its line is printed before the next starts.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{compiler_fence, AtomicBool, Ordering};

use freestanding::machine::outb;
use vmexit_guest::config::Config;
use vmexit_guest::report::{Bench, Outcome, Timing};
use vmexit_guest::sampling::{self, Clock, Settings};
use vmexit_guest::{BENCHMARKS, MARKER_PORT, WINDOW_END, WINDOW_START};

use crate::benches;
use crate::traps::{self, Fault};
use crate::x86::{fenced_rdtsc, read_cr0, read_cr4};
use crate::{say, Machine};

/// Whether the running benchmark's window is open: a fault leaves the
/// closure that opened it at any instruction, so the flag lives where the
/// store cannot be put off.
static WINDOW_OPEN: AtomicBool = AtomicBool::new(false);

/// Calibration never goes past 2^32 iterations (the design's cap).
const MAX_ITERATIONS: u64 = 1 << 32;

/// The TSC, serialised, in cycles.
struct Tsc;

impl Clock for Tsc {
    fn now(&mut self) -> u64 {
        fenced_rdtsc()
    }

    fn ticks_to_unit_milli(&self, ticks: u64, iterations: u64) -> u64 {
        let milli = u128::from(ticks) * 1000 / u128::from(iterations.max(1));
        u64::try_from(milli).unwrap_or(u64::MAX)
    }
}

/// Runs every benchmark `config` selects, printing a line for each.
pub fn run(config: &Config, machine: &Machine) {
    let settings = Settings {
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
        let result = run_one(index, window, machine, &settings);
        benches::restore(cr0, cr4);
        if matches!(index, 9 | 10) && machine.features.tsc_deadline {
            benches::disarm_timer();
        }
        let outcome = match &result {
            Ended::Ok { timing, values } => Outcome::Ok(Timing {
                values,
                ..timing.clone()
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
    Ok {
        timing: Timing<'static>,
        values: Vec<u64>,
    },
    Unavailable(String),
    Failed(String),
}

fn run_one(index: usize, window: u16, machine: &Machine, settings: &Settings) -> Ended {
    let mut body = match benches::prepare(index, machine) {
        Ok(body) => body,
        Err(why) => return Ended::Unavailable(why),
    };
    match traps::catching(|| body.probe()) {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Ended::Unavailable(why),
        Err(fault) => {
            return match body.unavailable_on(&fault) {
                Some(why) => Ended::Unavailable(why),
                None => Ended::Failed(fault_text("the first operation", &fault)),
            }
        }
    }
    WINDOW_OPEN.store(false, Ordering::SeqCst);
    let sampled = traps::catching(|| {
        let mut clock = Tsc;
        let mut run = |n| body.run(n);
        let calibration = sampling::calibrate(&mut clock, settings, &mut benches::empty, &mut run);
        mark(WINDOW_START, window);
        WINDOW_OPEN.store(true, Ordering::SeqCst);
        compiler_fence(Ordering::SeqCst);
        let (values, stop) = sampling::sample(&mut clock, settings, &calibration, &mut run);
        mark(WINDOW_END, window);
        (calibration, values, stop)
    });
    match sampled {
        Ok((calibration, values, stop)) => Ended::Ok {
            timing: Timing {
                iterations: calibration.iterations,
                overhead_milli: calibration.overhead_milli,
                calibration_runs: calibration.calibration_runs,
                stop: stop.name(),
                window,
                ops_in_window: calibration.iterations * values.len() as u64,
                values: &[],
            },
            values,
        },
        Err(fault) => {
            if WINDOW_OPEN.load(Ordering::SeqCst) {
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
