//! The logical records: what a run is, as vmbench hands it to the store and
//! gets it back. They know nothing of tables; `write.rs` and `read.rs` map
//! them to the schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One run of vmbench (`vmbench boot`, `vmbench ab`, an import), with every
/// raw sample it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// A UUID in its canonical form (lowercase, hyphenated), made by the
    /// caller with [`RunRecord::new_id`]; a store refuses an id it has.
    pub id: String,
    /// When the run was set up: RFC 3339 in UTC (`2026-11-29T03:54:53Z`,
    /// fractions of a second allowed).
    pub started_at: String,
    /// `boot`, `ab`, `import`, …
    pub kind: String,
    /// The command line as typed.
    pub command: String,
    /// vmbench's version and the git revision it was built from.
    pub vmbench_version: String,
    /// `--tag key=value`: what the user says the run is (a kernel version,
    /// a commit); queries select runs by them.
    pub tags: BTreeMap<String, String>,
    /// The host and how VMs ran on it.
    pub environment: EnvironmentRecord,
    /// Tool name → version: `qemu`, `vhost-device-vsock`, `vmbench vmm`, …
    pub tool_versions: BTreeMap<String, String>,
    /// What was compared: one variant named `""` for a plain run, `A` and
    /// `B` for an A/B run. Every sample and attachment names one of them.
    pub variants: Vec<VariantRecord>,
    /// Every metric the samples use (and possibly some none reached).
    pub metrics: Vec<MetricDef>,
    /// The raw measurements.
    pub samples: Vec<SampleRecord>,
    /// Files kept with the run: serial logs, VMM accounts, kernel configs.
    pub attachments: Vec<AttachmentRecord>,
}

impl RunRecord {
    /// A fresh run id: a random (version 4) UUID.
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().hyphenated().to_string()
    }
}

/// The host a run was made on, and how its VMs ran. Runs on the same host
/// with the same set-up share one stored environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    /// `vendor_id` from `/proc/cpuinfo` (`GenuineIntel`, `AuthenticAMD`).
    pub cpu_vendor: String,
    /// `cpu family`.
    pub cpu_family: String,
    /// `model`.
    pub cpu_model: String,
    /// `model name`.
    pub cpu_model_name: String,
    /// The microarchitecture (`Ice Lake`, `Zen 3`), as the caller names it;
    /// may be empty.
    pub microarchitecture: String,
    pub logical_cpus: u32,
    /// `uname -r` and `uname -v`.
    pub host_kernel: String,
    /// Each backend's accelerator: `tcg`, `kvm-native`, `kvm-emulated`.
    pub accel: String,
    /// What the KVM calibration found: `absent`, `emulated`, `native`.
    pub kvm: String,
    /// Its measurement, or why KVM is absent. Kept with the run, not the
    /// shared environment, since it varies from run to run.
    pub kvm_detail: String,
    /// The backends: `kvm`, `qemu`, `kvm,qemu`.
    pub backend: String,
    /// Each backend's VMM and version.
    pub vmm_version: String,
}

/// One side of a comparison, and what it booted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRecord {
    /// `""` for a plain run's only variant, `A` and `B` for an A/B run.
    pub name: String,
    /// What sets it apart, as the user gave it (`--kernel new/vmlinux`).
    pub description: String,
    pub inputs: Vec<InputRecord>,
}

/// A file a variant booted. Identical inputs (same role, path, hash and
/// detail) are stored once across runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// `kernel`, `initramfs`, `agent`, `rootfs`, …
    pub role: String,
    pub path: String,
    pub sha256: String,
    /// What else is known of it: a kernel's format and source, a root
    /// disk's chain and `built_by`.
    pub detail: serde_json::Value,
}

/// Whether a smaller or a larger value of a metric is the better one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

impl Direction {
    /// The name stored in the `metrics` table (and used by serde).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::LowerIsBetter => "lower_is_better",
            Direction::HigherIsBetter => "higher_is_better",
        }
    }

    pub fn from_name(name: &str) -> Option<Direction> {
        match name {
            "lower_is_better" => Some(Direction::LowerIsBetter),
            "higher_is_better" => Some(Direction::HigherIsBetter),
            _ => None,
        }
    }
}

/// What a metric measures. A name means one thing in every run of a store:
/// recording it with another unit, clock or direction is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDef {
    /// `phase.total`, `systemd.userspace`, `memory.max_rss`, …
    pub name: String,
    /// `ms`, `KiB`, `count`, …
    pub unit: String,
    /// `host`, `guest`, or `""` for a quantity that is not a time.
    pub clock: String,
    pub direction: Direction,
    /// Names for one quantity measured two ways share a group (the host's
    /// `phase.userspace` and systemd's `systemd.userspace`: `userspace`).
    /// Once set it stays: a run that gives none leaves it, another one is
    /// refused.
    pub alias_group: Option<String>,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The variant's name.
    pub variant: String,
    /// The repetition, from 0.
    pub round: u32,
    /// The VM's id within its round.
    pub vm: u32,
    /// The metric's name, one of the run's `metrics`.
    pub metric: String,
    /// In the metric's unit; must be finite.
    pub value: f64,
    /// Taken during warm-up: kept, but not part of the statistics.
    pub warmup: bool,
}

/// A file kept with a run. Its contents are stored once across runs, by
/// SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The variant's name.
    pub variant: String,
    /// The VM it belongs to, or `None` for the variant as a whole.
    pub vm: Option<u32>,
    /// `serial.log`, `vmm.json`, `kernel.config`, `image.json`, …
    pub name: String,
    pub bytes: Vec<u8>,
}

impl AttachmentRecord {
    /// The hex SHA-256 of the contents: their key in the store
    /// ([`crate::Store::attachment`]).
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

/// Which runs [`crate::Store::runs`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Runs carrying every one of these tags.
    pub tags: Vec<(String, String)>,
    /// Runs of this kind only.
    pub kind: Option<String>,
    /// At most this many, the newest.
    pub last: Option<usize>,
}

/// A run as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub started_at: String,
    pub kind: String,
    pub command: String,
    pub vmbench_version: String,
    pub tags: BTreeMap<String, String>,
    /// The host CPU's model name.
    pub host_cpu: String,
    pub accel: String,
    pub backend: String,
    pub sample_count: u64,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_canonical_v4_uuids() {
        let id = RunRecord::new_id();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.hyphenated().to_string(), id);
        assert_ne!(id, RunRecord::new_id());
    }

    #[test]
    fn directions_have_stable_names() {
        for d in [Direction::LowerIsBetter, Direction::HigherIsBetter] {
            assert_eq!(Direction::from_name(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert_eq!(Direction::from_name("lower"), None);
    }

    #[test]
    fn attachments_are_keyed_by_sha256() {
        let a = AttachmentRecord {
            variant: String::new(),
            vm: None,
            name: "x".into(),
            bytes: b"abc".to_vec(),
        };
        assert_eq!(
            a.sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
