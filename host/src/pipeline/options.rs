//! Stage 1: the numbers and combinations in the configuration make sense,
//! before anything is looked up or started.

use std::time::Duration;

use super::{BootConfig, Error, Result};

/// How long a VM may take when the configuration does not say: a systemd
/// guest under TCG takes about 40 s, so root disks get longer.
pub fn default_timeout_s(config: &BootConfig) -> f64 {
    if config.rootfs.is_some() {
        300.0
    } else {
        60.0
    }
}

/// Checks the configuration; returns the VMs' timeout.
pub fn check(config: &BootConfig) -> Result<Duration> {
    if config.vms == 0 {
        return Err(Error::NoVms);
    }
    if config.runs == 0 {
        return Err(Error::NoRuns);
    }
    if config.mem_mib < 64 {
        return Err(Error::TooLittleMemory(config.mem_mib));
    }
    if !(1..=64).contains(&config.vcpus) {
        return Err(Error::BadVcpus(config.vcpus));
    }
    if config.no_initramfs && config.rootfs.is_none() {
        return Err(Error::NoInitramfsWithoutRootfs);
    }
    let timeout_s = config
        .timeout_s
        .unwrap_or_else(|| default_timeout_s(config));
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(Error::BadTimeout(timeout_s));
    }
    Ok(Duration::from_secs_f64(timeout_s))
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
        }
    }

    #[test]
    fn bad_numbers_are_refused_by_name() {
        assert_eq!(check(&config()).unwrap(), Duration::from_secs(60));
        let with = |f: fn(&mut BootConfig)| {
            let mut c = config();
            f(&mut c);
            check(&c).unwrap_err().to_string()
        };
        assert_eq!(with(|c| c.vms = 0), "--vms must be at least 1");
        assert_eq!(with(|c| c.runs = 0), "--runs must be at least 1");
        assert!(with(|c| c.mem_mib = 32).contains("--mem-mib 32"));
        assert!(with(|c| c.vcpus = 65).contains("not 65"));
        assert!(with(|c| c.no_initramfs = true).starts_with("--no-initramfs needs --rootfs"));
        assert_eq!(
            with(|c| c.timeout_s = Some(-1.0)),
            "--timeout-s must be a positive number of seconds, not -1"
        );
        let mut rootfs = config();
        rootfs.rootfs = Some("/x.img".into());
        assert_eq!(check(&rootfs).unwrap(), Duration::from_secs(300));
    }
}
