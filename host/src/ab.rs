//! `vmbench ab`: two variants of a boot, A and B, measured in one run with
//! their rounds interleaved in ABBA order (A B, B A, A B, …), so that drift
//! on a noisy host — a neighbour's job, a CPU warming up — falls on both
//! alike (with benchmarks, `vmbench bench`'s batches are interleaved the
//! same way). Each variant is an ordinary `vmbench boot` run (its own inputs,
//! backends and results.json, in `<out>/A` and `<out>/B`); the comparison
//! of their samples is [`crate::compare`]'s.

use std::path::PathBuf;
use std::sync::Arc;

use crate::interrupt::Stop;
use crate::pipeline::{self, BootConfig, Outcome};

/// Both variants, each a whole boot configuration.
#[derive(Debug, Clone)]
pub struct AbConfig {
    pub a: BootConfig,
    pub b: BootConfig,
    /// How each differs from the common options, as the user wrote it.
    pub a_description: String,
    pub b_description: String,
    /// The run's directory: `A/` and `B/` go in it.
    pub out: PathBuf,
}

/// Both variants' finished runs.
pub struct AbOutcome {
    pub a: Outcome,
    pub b: Outcome,
}

impl AbOutcome {
    /// The signal that stopped the run: both variants are then final but
    /// partial (and their rounds no longer balanced), so no verdict is drawn.
    pub fn interrupted(&self) -> Option<i32> {
        self.a.interrupted.or(self.b.interrupted)
    }
}

/// The order of the two variants in round `round`: ABBA, repeated.
pub fn order(round: u32) -> [usize; 2] {
    if round % 2 == 0 {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// Whether two variants boot the same batches in a round: without
/// benchmarks a round is one batch; with them, one per suite and backend,
/// so both must run benchmarks of the same suites on the same backends.
fn same_batches(a: &BootConfig, b: &BootConfig) -> bool {
    match (&a.bench, &b.bench) {
        (None, None) => true,
        (Some(pa), Some(pb)) => pa.suites == pb.suites && a.backends == b.backends,
        _ => false,
    }
}

/// Sets both variants up (every check of both before any VM starts), then
/// boots their rounds interleaved.
pub fn run(config: &AbConfig, stop: Arc<Stop>) -> pipeline::Result<AbOutcome> {
    let mut a = config.a.clone();
    let mut b = config.b.clone();
    a.out = Some(config.out.join("A"));
    b.out = Some(config.out.join("B"));
    if a.runs != b.runs || a.warmup != b.warmup || !same_batches(&a, &b) {
        return Err(pipeline::Error::UnevenVariants);
    }
    let run_a = pipeline::set_up(&a, Some("A"), Arc::clone(&stop))?;
    let run_b = match pipeline::set_up(&b, Some("B"), stop) {
        Ok(run) => run,
        Err(e) => {
            // Nothing ran: A, already set up, leaves nothing behind either.
            run_a.abandon();
            return Err(e);
        }
    };
    // With benchmarks, a round is several batches: both variants must
    // have the same (a variant that changes the backends or suites does not).
    if run_a.rounds() != run_b.rounds() {
        run_a.abandon();
        run_b.abandon();
        return Err(pipeline::Error::UnevenVariants);
    }
    let mut runs = [run_a, run_b];
    let mut measured = [
        pipeline::aggregate::Measured::default(),
        pipeline::aggregate::Measured::default(),
    ];
    let rounds = runs[0].rounds();
    'rounds: for round in 0..rounds {
        for variant in order(round) {
            if runs[variant].stop.requested().is_some() {
                break 'rounds;
            }
            measured[variant].add(runs[variant].boot_round(round));
        }
    }
    let [run_a, run_b] = runs;
    Ok(AbOutcome {
        a: run_a.finish(measured[0])?,
        b: run_b.finish(measured[1])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_go_abba() {
        let sequence: Vec<usize> = (0..4).flat_map(order).collect();
        assert_eq!(sequence, [0, 1, 1, 0, 0, 1, 1, 0]);
    }
}
