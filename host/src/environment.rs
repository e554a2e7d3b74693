//! How a result was produced: the host, the tools, the guest's inputs and the
//! accelerator. Every results.json carries one of these, so a number can always
//! be traced to the machine and software that measured it.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// vmbench's own version: the crate version and the git revision it was built from.
pub fn vmbench_version() -> String {
    format!(
        "{} (git {})",
        env!("CARGO_PKG_VERSION"),
        env!("VMBENCH_GIT_REV")
    )
}

/// The host CPU as /proc/cpuinfo names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    pub model_name: String,
    pub vendor: String,
    pub family: String,
    pub model: String,
    pub logical_cpus: usize,
}

pub fn host_cpu() -> HostCpu {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    parse_cpuinfo(&text)
}

fn parse_cpuinfo(text: &str) -> HostCpu {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    HostCpu {
        model_name: field("model name"),
        vendor: field("vendor_id"),
        family: field("cpu family"),
        model: field("model"),
        logical_cpus: text.lines().filter(|l| l.starts_with("processor")).count(),
    }
}

/// The host kernel: `uname -r` and `uname -v`.
pub fn host_kernel() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => format!(
            "{} {}",
            u.release().to_string_lossy(),
            u.version().to_string_lossy()
        ),
        Err(_) => "unknown".to_string(),
    }
}

/// The host's TSC frequency in kHz, measured: the TSC read beside
/// CLOCK_MONOTONIC_RAW over three 10 ms windows, the median taken. `None`
/// when the TSC does not tick at a constant rate through sleep states
/// (`/proc/cpuinfo` lacks `constant_tsc` or `nonstop_tsc`), so it is no clock.
///
/// QEMU's TCG guests read the host's TSC, but their kernels often fail to
/// calibrate it against the emulated PIT on a busy host and fall back to
/// the jiffies clocksource (4 ms steps); given this value as
/// `tsc_early_khz=` they use the TSC at once.
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    let mut windows: Vec<f64> = (0..3).filter_map(|_| tsc_khz_over(10)).collect();
    windows.sort_by(f64::total_cmp);
    windows.get(windows.len() / 2).map(|khz| khz.round() as u64)
}

/// TSC ticks per ms of CLOCK_MONOTONIC_RAW over a window of `ms`.
fn tsc_khz_over(ms: u64) -> Option<f64> {
    let raw_ns = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_RAW)
            .ok()
            .map(|t| t.tv_sec() as f64 * 1e9 + t.tv_nsec() as f64)
    };
    // SAFETY: RDTSC reads a counter; it touches no memory.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (raw_ns()?, tsc());
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let (c1, t1) = (tsc(), raw_ns()?);
    (t1 > t0).then(|| (c1.wrapping_sub(c0)) as f64 / ((t1 - t0) / 1e6))
}

/// The first line a program prints for `--version`, or why there is none.
pub fn program_version(program: &Path) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_fields_are_read() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7763\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n";
        let cpu = parse_cpuinfo(text);
        assert_eq!(cpu.model_name, "AMD EPYC 7763");
        assert_eq!(cpu.vendor, "AuthenticAMD");
        assert_eq!(cpu.family, "25");
        assert_eq!(cpu.model, "1");
        assert_eq!(cpu.logical_cpus, 2);
    }

    #[test]
    fn the_tsc_frequency_is_plausible_where_the_tsc_is_a_clock() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        match host_tsc_khz() {
            // Between 100 MHz and 10 GHz.
            Some(khz) => assert!((100_000..10_000_000).contains(&khz), "{khz} kHz"),
            None => assert!(!cpuinfo.contains("nonstop_tsc") || !cpuinfo.contains("constant_tsc")),
        }
    }

    #[test]
    fn version_names_the_git_revision() {
        assert!(vmbench_version().contains("(git "));
    }
}
