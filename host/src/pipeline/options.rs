//! Stage 1: the numbers and combinations in the configuration make sense,
//! before anything is looked up or started.
//!
//! Every number has a range, the same one `vmbench boot`'s command line
//! enforces (`host/src/main.rs` builds its parsers from these constants);
//! this check is the one a [`BootConfig`] built by code (`vmbench ab`'s
//! variants, tests) passes too. The ranges and why:
//!
//! | option | range | why |
//! | --- | --- | --- |
//! | `--vms` | 1 to [`MAX_VMS`] | each VM at once is a VMM process with its guest memory, a watch thread and up to [`FILES_PER_VM`] open files in vmbench; 1024 is 32 times the concurrency the VMM is tested with |
//! | `--runs` | 1 to [`MAX_RUNS`] | |
//! | `--warmup` | 0 to [`MAX_WARMUP`] | |
//! | VMs in all | at most [`MAX_TOTAL_VMS`] | `--vms` × backends × (`--runs` + `--warmup`): every VM is a record results.json keeps and rewrites, about 20 KB for a kvm VM with its exit account: 10 000 make some 200 MB |
//! | `--mem-mib` | [`MIN_MEM_MIB`] to [`MAX_MEM_MIB`] | the agent's initramfs needs 64 MiB; 256 GiB of guest RAM plus the MMIO gap fits the 39-bit guest-physical space of the smallest current x86-64 hosts |
//! | `--vcpus` | 1 to [`MAX_VCPUS`] | |
//! | `--timeout-s` | [`MIN_TIMEOUT_S`] to [`MAX_TIMEOUT_S`] | a millisecond (less rounds to nothing) to a day (a boot that takes longer is not a boot to time) |
//! | `--port` | 1 to [`MAX_PORT`] | vsock's port 0xffffffff is VMADDR_PORT_ANY |
//!
//! VMs at once (`--vms` × backends) also need open files: vmbench raises
//! its soft `RLIMIT_NOFILE` as far as the round needs and the hard limit
//! allows, and refuses a round that would not fit.

use std::time::Duration;

use super::{BootConfig, Error, Result};

pub const MAX_VMS: u32 = 1024;
pub const MAX_RUNS: u32 = 10_000;
pub const MAX_WARMUP: u32 = 1_000;
/// VMs in a whole run, all rounds and backends.
pub const MAX_TOTAL_VMS: u64 = 10_000;
pub const MIN_MEM_MIB: u32 = 64;
pub const MAX_MEM_MIB: u32 = 256 * 1024;
pub const MAX_VCPUS: u32 = 64;
/// A millisecond: less would round to no time at all.
pub const MIN_TIMEOUT_S: f64 = 0.001;
pub const MAX_TIMEOUT_S: f64 = 86_400.0;
pub const MAX_PORT: u32 = u32::MAX - 1;
/// The most files one running VM holds open in vmbench: its two listening
/// sockets, up to 8 guest connections, the marker stream, the VMM's pidfd,
/// a helper's, and the log files a spawn opens.
pub const FILES_PER_VM: u64 = 16;
/// A `vmbench bench` VM's more: its benchmark endpoints' listener and
/// connections, and its share of a relay's.
pub const FILES_PER_BENCH_VM: u64 = 12;
/// Files vmbench itself holds besides its VMs' (stdio, the store, results.json).
const FILES_RESERVED: u64 = 64;

/// How long a VM may take when the configuration does not say: a systemd
/// guest under TCG takes about 40 s, so root disks get longer.
pub fn default_timeout_s(config: &BootConfig) -> f64 {
    if config.rootfs.is_some() {
        300.0
    } else {
        60.0
    }
}

/// `value` of `option` within `min..=max`, or the error that says so.
fn within(option: &'static str, value: u32, min: u32, max: u32) -> Result<()> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(Error::OutOfRange {
        option,
        value: value.to_string(),
        range: format!("from {min} to {max}"),
    })
}

/// Whether `--timeout-s` may be `seconds`; the error's wording for the
/// command line and for [`check`].
pub fn timeout_in_range(seconds: f64) -> std::result::Result<(), String> {
    if (MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&seconds) {
        Ok(())
    } else {
        Err(format!("from {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S} seconds"))
    }
}

/// Checks the configuration; returns the VMs' timeout. Raises this
/// process's open-file limit, if it must, for the VMs of a round.
pub fn check(config: &BootConfig) -> Result<Duration> {
    check_with(config, raise_open_files_limit)
}

/// [`check`], with `open_files(n)` making room for `n` open files if it can
/// and returning the limit then in force.
pub fn check_with(config: &BootConfig, open_files: impl FnOnce(u64) -> u64) -> Result<Duration> {
    within("--vms", config.vms, 1, MAX_VMS)?;
    within("--runs", config.runs, 1, MAX_RUNS)?;
    within("--warmup", config.warmup, 0, MAX_WARMUP)?;
    within("--mem-mib", config.mem_mib, MIN_MEM_MIB, MAX_MEM_MIB)?;
    within("--vcpus", config.vcpus, 1, MAX_VCPUS)?;
    within("--port", config.port, 1, MAX_PORT)?;
    if config.bench.is_some() {
        within("--port", config.port, 1, MAX_PORT - 1).map_err(|e| match e {
            Error::OutOfRange {
                option,
                value,
                range,
            } => Error::OutOfRange {
                option,
                value,
                range: format!("{range} (vmbench bench serves its benchmarks on the next port)"),
            },
            e => e,
        })?;
    }
    // In u64: three u32 factors cannot wrap there (a u32 product could,
    // to 0 VMs, and the run would "succeed" with nothing).
    let backends = config.backends.len().max(1);
    let at_once = config.vms_at_once(backends);
    let rounds = u64::from(config.runs) + u64::from(config.warmup);
    let total = config.vms_per_round(backends) * rounds;
    if total > MAX_TOTAL_VMS {
        return Err(Error::TooManyVmsInAll {
            vms: config.vms,
            backends,
            rounds,
            total,
        });
    }
    let per_vm = if config.bench.is_some() {
        FILES_PER_VM + FILES_PER_BENCH_VM
    } else {
        FILES_PER_VM
    };
    let needed = at_once * per_vm + FILES_RESERVED;
    let limit = open_files(needed);
    if needed > limit {
        return Err(Error::TooFewFiles {
            vms: at_once,
            needed,
            limit,
        });
    }
    if config.bench.is_some() && config.rootfs.is_some() {
        return Err(Error::BenchWithRootfs);
    }
    if config.no_initramfs && config.rootfs.is_none() {
        return Err(Error::NoInitramfsWithoutRootfs);
    }
    let timeout_s = config
        .timeout_s
        .unwrap_or_else(|| default_timeout_s(config));
    timeout_in_range(timeout_s).map_err(|range| Error::OutOfRange {
        option: "--timeout-s",
        value: timeout_s.to_string(),
        range,
    })?;
    Ok(Duration::from_secs_f64(timeout_s))
}

/// Raises the soft limit on open files to `needed`, or as near as the hard
/// limit lets it (the soft default, 1024, is kept low for programs that use
/// select(2), which vmbench does not; only as far as needed, since the VMMs
/// inherit it); returns the limit now in force.
fn raise_open_files_limit(needed: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    let wanted = needed.min(hard);
    if soft < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        return wanted;
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{AccelChoice, BackendChoice};

    fn config() -> BootConfig {
        BootConfig {
            vms: 1,
            runs: 1,
            warmup: 0,
            backends: vec![BackendChoice::Auto],
            entry: None,
            kernel: None,
            initramfs: None,
            agent: None,
            no_initramfs: false,
            mem_mib: 256,
            vcpus: 1,
            accel: AccelChoice::Auto,
            timeout_s: None,
            rootfs: None,
            keep_overlays: false,
            out: None,
            append: vec![],
            port: 1234,
            progress: false,
            bench: None,
        }
    }

    #[test]
    fn bad_numbers_are_refused_by_name() {
        assert_eq!(check(&config()).unwrap(), Duration::from_secs(60));
        let with = |f: fn(&mut BootConfig)| {
            let mut c = config();
            f(&mut c);
            check_with(&c, |_| 1024).unwrap_err().to_string()
        };
        assert_eq!(with(|c| c.vms = 0), "--vms 0: must be from 1 to 1024");
        assert_eq!(with(|c| c.vms = 1025), "--vms 1025: must be from 1 to 1024");
        assert_eq!(with(|c| c.runs = 0), "--runs 0: must be from 1 to 10000");
        assert_eq!(
            with(|c| c.warmup = 1001),
            "--warmup 1001: must be from 0 to 1000"
        );
        assert_eq!(
            with(|c| c.mem_mib = 32),
            "--mem-mib 32: must be from 64 to 262144"
        );
        assert_eq!(with(|c| c.vcpus = 65), "--vcpus 65: must be from 1 to 64");
        assert_eq!(
            with(|c| c.port = 0),
            "--port 0: must be from 1 to 4294967294"
        );
        assert!(with(|c| c.no_initramfs = true).starts_with("--no-initramfs needs --rootfs"));
        for (bad, said) in [
            (-1.0, "-1"),
            (0.0, "0"),
            (0.0009, "0.0009"),
            (1e19, "10000000000000000000"),
            (1e20, "100000000000000000000"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ] {
            let mut c = config();
            c.timeout_s = Some(bad);
            assert_eq!(
                check_with(&c, |_| 1024).unwrap_err().to_string(),
                format!("--timeout-s {said}: must be from 0.001 to 86400 seconds")
            );
        }
        let mut rootfs = config();
        rootfs.rootfs = Some("/x.img".into());
        assert_eq!(check(&rootfs).unwrap(), Duration::from_secs(300));
    }

    /// Products of the counts are taken in u64: no combination wraps round
    /// to a run of no VMs that "succeeds".
    #[test]
    fn the_run_as_a_whole_is_bounded() {
        let mut c = config();
        c.vms = 1024;
        c.runs = 10_000;
        c.warmup = 1_000;
        c.backends = vec![BackendChoice::Kvm, BackendChoice::Qemu];
        assert_eq!(
            check_with(&c, |_| u64::MAX).unwrap_err().to_string(),
            "--vms 1024 on 2 backend(s) for 11000 round(s) (--runs + --warmup) is 22528000 VMs in all, more than the 10000 a run may have"
        );
        c.runs = 4;
        c.warmup = 0;
        assert!(check_with(&c, |_| u64::MAX).is_ok());
        c.runs = 5;
        assert!(check_with(&c, |_| u64::MAX).is_err(), "10240 VMs");
    }

    #[test]
    fn a_round_must_fit_in_the_open_file_limit() {
        let mut c = config();
        c.vms = 60;
        assert!(check_with(&c, |_| 1024).is_ok(), "60 × 16 + 64 = 1024");
        c.vms = 61;
        assert_eq!(
            check_with(&c, |_| 1024).unwrap_err().to_string(),
            "61 VMs at once need up to 1040 open files, more than the 1024 this process may open (raise `ulimit -n`, or boot fewer --vms)"
        );
    }
}
