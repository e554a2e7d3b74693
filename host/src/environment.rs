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
    fn version_names_the_git_revision() {
        assert!(vmbench_version().contains("(git "));
    }
}
