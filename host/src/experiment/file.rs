//! The experiment file as written: TOML, every table closed to unknown keys,
//! the values that have a range kept with their place in the file
//! ([`Spanned`]) so that a value out of range is reported at its line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// What the experiment is, for people (and the `experiment` tag).
    pub name: Option<String>,
    pub description: Option<String>,
    /// VMs per backend, per round (`--vms`).
    pub vms: Option<Spanned<u32>>,
    /// Measured rounds (`--runs`).
    pub runs: Option<Spanned<u32>>,
    /// Warm-up rounds (`--warmup`).
    pub warmup: Option<Spanned<u32>>,
    /// The run's directory (`--out`).
    pub out: Option<PathBuf>,
    /// No progress lines (`--quiet`).
    #[serde(default)]
    pub quiet: bool,
    /// Print results.json instead of the tables (`--json`).
    #[serde(default)]
    pub json: bool,
    /// The kvm backend's exit table (`--exits`).
    #[serde(default)]
    pub exits: bool,
    /// Profilers, by name (`--profile`).
    #[serde(default)]
    pub profilers: Vec<Spanned<String>>,
    /// Profiled rounds (`--profiled-rounds`).
    pub profiled_rounds: Option<Spanned<u32>>,
    /// Labels of the run in the store (`--tag KEY=VALUE`).
    #[serde(default)]
    pub tags: BTreeMap<Spanned<String>, String>,
    /// The results store (`--store`, `--no-store`).
    #[serde(default)]
    pub store: Store,
    /// The boot inputs every variant starts from.
    #[serde(default)]
    pub boot: Inputs,
    /// Benchmarks, as `vmbench bench` takes them.
    pub bench: Option<Bench>,
    /// How A/B verdicts are drawn and which gate the exit status.
    #[serde(default)]
    pub verdict: Verdict,
    /// The variants, in order: the first is the baseline.
    #[serde(default)]
    pub variant: Vec<Spanned<Inputs>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub path: Option<String>,
    #[serde(default)]
    pub disabled: bool,
}

/// A variant's boot inputs (`[boot]`, or one `[[variant]]` on top of it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// A variant's name (only in `[[variant]]`).
    pub name: Option<Spanned<String>>,
    /// How the variant differs, for people (stored with the run).
    pub description: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub no_initramfs: Option<Spanned<bool>>,
    pub keep: Option<Spanned<bool>>,
    pub backend: Option<Backends>,
    pub accel: Option<Accel>,
    pub entry: Option<Entry>,
    pub mem_mib: Option<Spanned<u32>>,
    pub vcpus: Option<Spanned<u32>>,
    pub timeout_s: Option<Spanned<f64>>,
    pub append: Option<Vec<String>>,
    pub port: Option<Spanned<u32>>,
}

/// `backend = "qemu"` or `backend = ["kvm", "qemu"]`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a backend (\"auto\", \"kvm\", \"qemu\") or a list of them"
)]
pub enum Backends {
    One(Backend),
    Several(Vec<Backend>),
}

impl Backends {
    pub fn list(&self) -> Vec<Backend> {
        match self {
            Backends::One(b) => vec![*b],
            Backends::Several(list) => list.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Auto,
    Kvm,
    Qemu,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    Auto,
    Pvh,
    Linux64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    All,
    Micro,
    Inter,
    Vmexit,
}

/// `[bench]`: `vmbench bench`'s plan options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bench {
    pub suite: Option<Suite>,
    pub names: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub rough: bool,
    pub budget_s: Option<Spanned<f64>>,
    pub vmexit_guest: Option<PathBuf>,
    /// Print each benchmark's peaks (`--distribution`).
    #[serde(default)]
    pub distribution: bool,
    /// Append every value to this CSV file (`--csv`).
    pub csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Table,
    Markdown,
    Json,
    Junit,
    Csv,
}

/// `[verdict]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub alpha: Option<Spanned<f64>>,
    /// Every metric's noise band (`--noise`).
    pub noise: Option<Spanned<f64>>,
    /// Bands of named metrics, over `noise`.
    #[serde(default)]
    pub noise_by_metric: BTreeMap<Spanned<String>, Spanned<f64>>,
    /// Metrics whose regression fails the run (exit status 4); `"all"`: any.
    #[serde(default)]
    pub gate: Vec<Spanned<String>>,
    #[serde(default)]
    pub format: Format,
}
