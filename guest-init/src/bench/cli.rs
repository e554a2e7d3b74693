//! `vmbench-init --bench NAME[,NAME…]|all [--rough] [--json] [--budget-ms N]
//! [--max-samples N]`: the micro benchmarks outside any VM, without a host,
//! for testing. Each runs as it would in the guest (in a process of its
//! own); those that need the VM's devices say they are unavailable. Text
//! (one line per benchmark, `name: median (min – max) ns`) or JSON Lines
//! (one `BenchResult` per line) on stdout.

use std::io::Write;
use std::process::ExitCode;

use vmbench_proto::{BenchOutcome, BenchRequest, BenchResult, MICRO_BENCHES};

use super::{run, Env};
use crate::settings::Settings;

const USAGE: &str = "usage: vmbench-init --bench NAME[,NAME...]|all [--rough] [--json] [--budget-ms N] [--max-samples N]";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    names: Vec<String>,
    rough: bool,
    json: bool,
    budget_ms: u32,
    max_samples: u32,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        names: Vec::new(),
        rough: false,
        json: false,
        budget_ms: 0,
        max_samples: 0,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--bench" => {
                let list = value("--bench")?;
                options.names = if list == "all" {
                    MICRO_BENCHES.iter().map(|b| b.name.to_string()).collect()
                } else {
                    list.split(',').map(str::to_string).collect()
                };
            }
            "--rough" => options.rough = true,
            "--json" => options.json = true,
            "--budget-ms" => {
                let text = value("--budget-ms")?;
                options.budget_ms = text
                    .parse()
                    .map_err(|_| format!("--budget-ms {text:?} is not a number of milliseconds"))?;
            }
            "--max-samples" => {
                let text = value("--max-samples")?;
                options.max_samples = text
                    .parse()
                    .map_err(|_| format!("--max-samples {text:?} is not a count"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.names.is_empty() || options.names.iter().any(String::is_empty) {
        return Err("--bench names no benchmark".to_string());
    }
    Ok(options)
}

/// One result as a line of text.
pub fn text_line(result: &BenchResult) -> String {
    match &result.outcome {
        BenchOutcome::Done(samples) => {
            let Some(s) = vmbench_sampling::summary(&samples.values) else {
                return format!("{}: no samples", result.name);
            };
            format!(
                "{}: {} ({} – {}) {} per op [{} samples of {} ops, stop: {}, clock {}]",
                result.name,
                milli(s.median),
                milli(s.min),
                milli(s.max),
                samples.unit,
                s.samples,
                samples.iterations,
                samples.stop,
                samples.clock
            )
        }
        BenchOutcome::Unavailable { why } => format!("{}: unavailable: {why}", result.name),
        BenchOutcome::Failed { why } => format!("{}: failed: {why}", result.name),
    }
}

/// Thousandths of the unit, as a decimal.
fn milli(value: u64) -> String {
    format!("{}.{:03}", value / 1000, value % 1000)
}

/// `args` are those after the program name. Exit 0 when every benchmark is
/// done or unavailable, 1 when one failed, 2 for a bad command line.
pub fn main(args: &[String]) -> ExitCode {
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("vmbench-init: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let env = Env {
        in_vm: false,
        settings: Settings::default(),
    };
    let mut failed = false;
    for name in &options.names {
        let request = BenchRequest {
            name: name.clone(),
            rough: options.rough,
            max_samples: options.max_samples,
            budget_ms: options.budget_ms,
            window: 0,
        };
        let result = BenchResult {
            name: name.clone(),
            outcome: run(&request, &env),
        };
        failed |= matches!(result.outcome, BenchOutcome::Failed { .. });
        let line = if options.json {
            serde_json::to_string(&result).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        } else {
            text_line(&result)
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::from(1);
        }
    }
    ExitCode::from(u8::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn options_are_read() {
        let o = parse(&args(
            "--bench fork,exec --rough --json --budget-ms 500 --max-samples 20",
        ))
        .unwrap();
        assert_eq!(o.names, ["fork", "exec"]);
        assert!(o.rough && o.json);
        assert_eq!((o.budget_ms, o.max_samples), (500, 20));
        assert_eq!(
            parse(&args("--bench all")).unwrap().names.len(),
            MICRO_BENCHES.len()
        );
    }

    #[test]
    fn bad_command_lines_say_why() {
        assert_eq!(
            parse(&args("--rough")).unwrap_err(),
            "--bench names no benchmark"
        );
        assert_eq!(
            parse(&args("--bench")).unwrap_err(),
            "--bench needs a value"
        );
        assert!(parse(&args("--bench fork --budget-ms soon"))
            .unwrap_err()
            .contains("soon"));
        assert!(parse(&args("--bench fork --fast"))
            .unwrap_err()
            .contains("--fast"));
        assert!(parse(&args("--bench fork,")).is_err());
    }

    #[test]
    fn a_result_on_one_line() {
        let done = BenchResult {
            name: "syscall".into(),
            outcome: BenchOutcome::Done(vmbench_proto::Samples {
                unit: "ns".into(),
                clock: "CLOCK_MONOTONIC_RAW/tsc".into(),
                iterations: 1024,
                values: vec![95_000, 100_500, 120_250],
                stop: "peaks".into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            text_line(&done),
            "syscall: 100.500 (95.000 – 120.250) ns per op [3 samples of 1024 ops, stop: peaks, clock CLOCK_MONOTONIC_RAW/tsc]"
        );
        let unavailable = BenchResult {
            name: "hypercall".into(),
            outcome: BenchOutcome::Unavailable { why: "no".into() },
        };
        assert_eq!(text_line(&unavailable), "hypercall: unavailable: no");
    }
}
