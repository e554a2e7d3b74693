//! The agent's settings, read from the kernel command line (`vmbench.<key>=<value>`).
//! The last occurrence of a key wins, as it does for the kernel's own options,
//! so a user's appended option overrides the host's default.

use vmbench_proto::DEFAULT_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `vmbench.id=`: the VM's index in the run.
    pub vm_id: u32,
    /// `vmbench.port=`: the host's vsock port.
    pub port: u32,
    /// `vmbench.connect_timeout_ms=`: how long to keep trying to reach the host.
    pub connect_timeout_ms: u64,
    /// `vmbench.ack_timeout_ms=`: how long to wait for the host's Ack before powering off.
    pub ack_timeout_ms: u64,
    /// `vmbench.root=`: a root disk to switch to from the initramfs (e.g. `/dev/vda`).
    pub root: Option<String>,
    /// `vmbench.rootfstype=`: its file system.
    pub root_fstype: String,
    /// `vmbench.root_ro=1`: mount it read-only.
    pub root_ro: bool,
    /// `vmbench.root_wait_ms=`: how long to wait for its device node.
    pub root_wait_ms: u64,
    /// `vmbench.root_init=`: what to exec on a systemd root disk.
    pub root_init: String,
    /// `vmbench.bench=1`: after the report, wait for the host's benchmark
    /// orders until its `Ack`, however long that takes.
    pub bench: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            vm_id: 0,
            port: DEFAULT_PORT,
            connect_timeout_ms: 10_000,
            ack_timeout_ms: 3_000,
            root: None,
            root_fstype: "ext4".to_string(),
            root_ro: false,
            root_wait_ms: 10_000,
            root_init: "/sbin/init".to_string(),
            bench: false,
        }
    }
}

/// A setting that was present but not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: String,
}

/// Parses a kernel command line; unknown `vmbench.` keys and unreadable values
/// are returned as problems (the defaults stay in force for them).
pub fn parse(cmdline: &str) -> (Settings, Vec<Problem>) {
    let mut settings = Settings::default();
    let mut problems = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let Some(rest) = word.strip_prefix("vmbench.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        let ok = match key {
            "id" => value.parse().map(|v| settings.vm_id = v).is_ok(),
            "port" => value.parse().map(|v| settings.port = v).is_ok(),
            "connect_timeout_ms" => value
                .parse()
                .map(|v| settings.connect_timeout_ms = v)
                .is_ok(),
            "ack_timeout_ms" => value.parse().map(|v| settings.ack_timeout_ms = v).is_ok(),
            "root" if value.starts_with('/') => {
                settings.root = Some(value.to_string());
                true
            }
            "rootfstype" if !value.is_empty() => {
                settings.root_fstype = value.to_string();
                true
            }
            "root_ro" => flag(value).map(|v| settings.root_ro = v).is_some(),
            "bench" => flag(value).map(|v| settings.bench = v).is_some(),
            "root_wait_ms" => value.parse().map(|v| settings.root_wait_ms = v).is_ok(),
            "root_init" if value.starts_with('/') => {
                settings.root_init = value.to_string();
                true
            }
            _ => false,
        };
        if !ok {
            problems.push(Problem {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
    }
    (settings, problems)
}

/// `1` or `0`.
fn flag(value: &str) -> Option<bool> {
    match value {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmbench_keys_and_ignores_others() {
        let (s, problems) = parse(
            "console=ttyS0 vmbench.id=7 panic=-1 vmbench.port=5000 vmbench.connect_timeout_ms=50\n",
        );
        assert_eq!(
            s,
            Settings {
                vm_id: 7,
                port: 5000,
                connect_timeout_ms: 50,
                ..Settings::default()
            }
        );
        assert!(problems.is_empty());
    }

    #[test]
    fn root_disk_settings() {
        let (s, problems) =
            parse("vmbench.root=/dev/vda vmbench.rootfstype=ext2 vmbench.root_ro=1 vmbench.root_init=/lib/systemd/systemd");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.root.as_deref(), Some("/dev/vda"));
        assert_eq!((s.root_fstype.as_str(), s.root_ro), ("ext2", true));
        assert_eq!(s.root_init, "/lib/systemd/systemd");
        let (s, problems) = parse("vmbench.root=vda vmbench.root_ro=yes");
        assert_eq!(s.root, None, "a device is a path");
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn bench_mode() {
        assert!(!parse("console=ttyS0").0.bench);
        assert!(parse("vmbench.bench=1").0.bench);
        assert!(!parse("vmbench.bench=1 vmbench.bench=0").0.bench);
        let (s, problems) = parse("vmbench.bench=yes");
        assert!(!s.bench);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn last_occurrence_wins() {
        assert_eq!(parse("vmbench.port=1 vmbench.port=2").0.port, 2);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_problems_and_keep_defaults() {
        let (s, problems) = parse("vmbench.port=abc vmbench.colour=blue vmbench.id");
        assert_eq!(s, Settings::default());
        assert_eq!(
            problems,
            vec![
                Problem {
                    key: "port".into(),
                    value: "abc".into()
                },
                Problem {
                    key: "colour".into(),
                    value: "blue".into()
                },
                Problem {
                    key: "id".into(),
                    value: "".into()
                },
            ]
        );
    }
}
