//! The guest's command line: whitespace-separated `key=value` words, others
//! ignored, the last of a repeated key winning.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `vmexit.bench=NAME[,NAME...]` | every benchmark | run these (still in list order) |
//! | `vmexit.budget_ms=N` | 2000 | each benchmark's calibration and sampling stop after about N ms (1 to 600000) |
//! | `vmexit.rough=0\|1` | 0 | stop when any peak, not every peak, holds 10 samples |
//! | `vmexit.min_run_cycles=N` | 2^20 | a calibrated run lasts at least N TSC cycles (1 to 2^40) |
//! | `vmexit.max_samples=N` | 1000 | at most N samples per benchmark (10 to 2000) |
//! | `virtio_mmio.device=<size>@<base>:<irq>` | none | the first one is where `mmio_read` reads |
//! | `tsc_early_khz=N` | none | the TSC's rate, as Linux takes it, where CPUID does not state it |
//! | `vmexit.test_fault=NAME` | none | test aid: benchmark NAME touches unmapped memory (#PF) once its window is open |
//! | `vmexit.test_hang=NAME` | none | test aid: benchmark NAME spins for ever once its window is open (the watchdog ends it) |
//!
//! A bad value, or an unknown name in `vmexit.bench`, is an error: the guest
//! says which and runs nothing. Numbers are decimal or `0x` hex.

use core::fmt;

use freestanding::cmdline::{parse_device, parse_number, words, Printable};

use crate::{benchmark_index, BENCHMARKS};

pub const DEFAULT_BUDGET_MS: u32 = 2000;
pub const MAX_BUDGET_MS: u32 = 600_000;
/// kvm-unit-tests runs each loop for 2^30 cycles, sized for native speed;
/// under an emulating KVM every instruction costs about a thousand times
/// more, so the suite's default is 2^20.
pub const DEFAULT_MIN_RUN_TICKS: u64 = 1 << 20;
pub const MAX_MIN_RUN_TICKS: u64 = 1 << 40;
pub const DEFAULT_MAX_SAMPLES: u32 = 1000;
pub const MIN_MAX_SAMPLES: u32 = 10;
/// Keeps a report line (up to 20 digits and a comma per value) under 64 KiB.
pub const MAX_MAX_SAMPLES: u32 = 2000;
/// 100 GHz: well past any TSC.
pub const MAX_TSC_KHZ: u64 = 100_000_000;

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bit i: run `BENCHMARKS[i]`.
    pub selected: u32,
    pub budget_ms: u32,
    pub rough: bool,
    pub min_run_ticks: u64,
    pub max_samples: u32,
    /// The first `virtio_mmio.device=` window's base.
    pub mmio_base: Option<u64>,
    /// `tsc_early_khz=`.
    pub tsc_khz: Option<u64>,
    /// Test aids: the benchmark (index) that faults, or hangs, in its
    /// measured runs.
    pub test_fault: Option<usize>,
    pub test_hang: Option<usize>,
}

/// Every benchmark selected.
pub const ALL: u32 = (1 << BENCHMARKS.len()) - 1;

impl Default for Config {
    fn default() -> Config {
        Config {
            selected: ALL,
            budget_ms: DEFAULT_BUDGET_MS,
            rough: false,
            min_run_ticks: DEFAULT_MIN_RUN_TICKS,
            max_samples: DEFAULT_MAX_SAMPLES,
            mmio_base: None,
            tsc_khz: None,
            test_fault: None,
            test_hang: None,
        }
    }
}

impl Config {
    pub fn is_selected(&self, index: usize) -> bool {
        self.selected & (1 << index) != 0
    }
}

/// A word of the command line the guest refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<'a> {
    /// `key`'s value is not a number in range (or not 0/1).
    BadValue { key: &'static str, value: &'a [u8] },
    /// A name in `vmexit.bench` that is no benchmark.
    UnknownBenchmark { name: &'a [u8] },
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadValue { key, value } => {
                write!(f, "bad value {key}={}", Printable(value))
            }
            Error::UnknownBenchmark { name } => {
                write!(f, "vmexit.bench names no benchmark {}", Printable(name))
            }
        }
    }
}

pub fn parse(cmdline: &[u8]) -> Result<Config, Error<'_>> {
    let mut config = Config::default();
    for (key, value) in words(cmdline) {
        match key {
            b"vmexit.bench" => config.selected = parse_selection(value)?,
            b"vmexit.budget_ms" => {
                config.budget_ms =
                    in_range(value, "vmexit.budget_ms", 1, MAX_BUDGET_MS.into())? as u32;
            }
            b"vmexit.rough" => {
                config.rough = match value {
                    b"0" => false,
                    b"1" => true,
                    _ => {
                        return Err(Error::BadValue {
                            key: "vmexit.rough",
                            value,
                        })
                    }
                }
            }
            b"vmexit.min_run_cycles" => {
                config.min_run_ticks =
                    in_range(value, "vmexit.min_run_cycles", 1, MAX_MIN_RUN_TICKS)?;
            }
            b"vmexit.max_samples" => {
                config.max_samples = in_range(
                    value,
                    "vmexit.max_samples",
                    MIN_MAX_SAMPLES.into(),
                    MAX_MAX_SAMPLES.into(),
                )? as u32;
            }
            b"virtio_mmio.device" => {
                let device = parse_device(value).ok_or(Error::BadValue {
                    key: "virtio_mmio.device",
                    value,
                })?;
                config.mmio_base.get_or_insert(device.base);
            }
            b"vmexit.test_fault" => config.test_fault = Some(one_benchmark(value)?),
            b"vmexit.test_hang" => config.test_hang = Some(one_benchmark(value)?),
            b"tsc_early_khz" => {
                config.tsc_khz = Some(in_range(value, "tsc_early_khz", 1, MAX_TSC_KHZ)?);
            }
            _ => {}
        }
    }
    Ok(config)
}

fn in_range<'a>(value: &'a [u8], key: &'static str, min: u64, max: u64) -> Result<u64, Error<'a>> {
    parse_number(value)
        .filter(|n| (min..=max).contains(n))
        .ok_or(Error::BadValue { key, value })
}

fn one_benchmark(name: &[u8]) -> Result<usize, Error<'_>> {
    benchmark_index(name).ok_or(Error::UnknownBenchmark { name })
}

fn parse_selection(value: &[u8]) -> Result<u32, Error<'_>> {
    if value.is_empty() {
        return Err(Error::BadValue {
            key: "vmexit.bench",
            value,
        });
    }
    value.split(|&b| b == b',').try_fold(0, |mask, name| {
        let index = benchmark_index(name).ok_or(Error::UnknownBenchmark { name })?;
        Ok(mask | 1 << index)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_everything() {
        let config = parse(b"console=ttyS0 reboot=t").unwrap();
        assert_eq!(config, Config::default());
        assert!((0..BENCHMARKS.len()).all(|i| config.is_selected(i)));
        assert!(!config.is_selected(BENCHMARKS.len()));
    }

    #[test]
    fn every_key() {
        let line = b"vmexit.bench=ipi_cross,cpuid vmexit.budget_ms=250 vmexit.rough=1 \
                     vmexit.min_run_cycles=0x1000 vmexit.max_samples=50 tsc_early_khz=2593906 \
                     virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6";
        let config = parse(line).unwrap();
        assert_eq!(config.selected, 1 << 12 | 1);
        assert_eq!(config.budget_ms, 250);
        assert!(config.rough);
        assert_eq!(config.min_run_ticks, 4096);
        assert_eq!(config.max_samples, 50);
        assert_eq!(config.mmio_base, Some(0xd000_0000), "the first device");
        assert_eq!(config.tsc_khz, Some(2_593_906));
        assert_eq!((config.test_fault, config.test_hang), (None, None));
        let config = parse(b"vmexit.test_fault=wbinvd vmexit.test_hang=cpuid").unwrap();
        assert_eq!((config.test_fault, config.test_hang), (Some(13), Some(0)));
    }

    #[test]
    fn the_last_word_wins() {
        let config =
            parse(b"vmexit.rough=1 vmexit.rough=0 vmexit.bench=wbinvd vmexit.bench=cpuid").unwrap();
        assert!(!config.rough);
        assert_eq!(config.selected, 1);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (line, key) in [
            (&b"vmexit.budget_ms=0"[..], "vmexit.budget_ms"),
            (b"vmexit.budget_ms=600001", "vmexit.budget_ms"),
            (b"vmexit.budget_ms=1s", "vmexit.budget_ms"),
            (b"vmexit.rough=yes", "vmexit.rough"),
            (b"vmexit.min_run_cycles=0", "vmexit.min_run_cycles"),
            (
                b"vmexit.min_run_cycles=0x10000000001",
                "vmexit.min_run_cycles",
            ),
            (b"vmexit.max_samples=9", "vmexit.max_samples"),
            (b"vmexit.max_samples=2001", "vmexit.max_samples"),
            (b"vmexit.bench=", "vmexit.bench"),
            (b"tsc_early_khz=0", "tsc_early_khz"),
            (b"tsc_early_khz=100000001", "tsc_early_khz"),
            (b"virtio_mmio.device=4K", "virtio_mmio.device"),
        ] {
            match parse(line) {
                Err(Error::BadValue { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
            }
        }
    }

    #[test]
    fn unknown_benchmarks_are_named() {
        let err = parse(b"vmexit.bench=cpuid,cpuid2").unwrap_err();
        assert_eq!(err, Error::UnknownBenchmark { name: b"cpuid2" });
        assert_eq!(err.to_string(), "vmexit.bench names no benchmark cpuid2");
        assert_eq!(
            parse(b"vmexit.test_hang=all").unwrap_err(),
            Error::UnknownBenchmark { name: b"all" }
        );
        let err = parse(b"vmexit.bench=cpuid,,wbinvd").unwrap_err();
        assert_eq!(err, Error::UnknownBenchmark { name: b"" });
        assert_eq!(
            parse(b"vmexit.rough=\x01").unwrap_err().to_string(),
            "bad value vmexit.rough=\\x01"
        );
    }
}
