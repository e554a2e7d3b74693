//! `vmbench run EXPERIMENT.toml`: an experiment described in a file rather
//! than on a command line (the SPICE benchmark script's YAML file, in
//! TOML). The file is mapped onto the configurations `vmbench boot`,
//! `vmbench bench` and `vmbench ab` build from their options — a
//! [`BootConfig`] per variant, an [`AbConfig`] for two, a [`Judge`] — and
//! run by the same code; there is no second pipeline.
//!
//! One variant is a boot run (a bench run with `[bench]`); two are an A/B
//! run, the first variant A; more are each judged against the first, one
//! A/B run per other variant (the first is booted again in each, so every
//! comparison has its own interleaved rounds).
//!
//! Every value is checked with the ranges the command line uses
//! ([`crate::pipeline::options`]), and every error is one line naming the
//! file, the line and the key.

mod file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::ab::AbConfig;
use crate::compare::Judge;
use crate::pipeline::{options, AccelChoice, BackendChoice, BootConfig};
use crate::render::verdicts::Format;

/// The profilers an experiment may name (issue 14's design): the cheap
/// ones may run in every round, the others only in profiled rounds.
pub const PROFILERS: [&str; 6] = [
    "exits",
    "kvm-stats",
    "host",
    "perf-kvm",
    "initcalls",
    "guest-stat",
];

/// A metric name in `gate` that gates on every metric.
pub const GATE_ALL: &str = "all";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: cannot read it: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: {key}: {message}")]
    At {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Whole { file: String, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One variant: its name, how it differs, its whole configuration.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub description: String,
    pub config: BootConfig,
}

/// Where the run is recorded.
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    pub path: Option<String>,
    pub disabled: bool,
    pub tags: BTreeMap<String, String>,
}

/// How the verdicts are drawn, printed, and which gate the exit status.
#[derive(Debug, Clone)]
pub struct VerdictSettings {
    pub judge: Judge,
    pub format: Format,
    /// Metric names; [`GATE_ALL`] for any. Empty: verdicts never fail the run.
    pub gate: Vec<String>,
}

impl VerdictSettings {
    /// Whether a gated metric regressed.
    pub fn gate_fails(&self, verdicts: &crate::compare::Verdicts) -> bool {
        verdicts.rows.iter().any(|row| {
            row.comparison.verdict == vmbench_stats::Verdict::Regression
                && self
                    .gate
                    .iter()
                    .any(|g| g == GATE_ALL || *g == row.comparison.name)
        })
    }
}

/// What the output shows, as `--json`, `--exits`, `--distribution`, `--csv`.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    pub json: bool,
    pub exits: bool,
    pub distribution: bool,
    pub csv: Option<PathBuf>,
}

/// A checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: Option<String>,
    pub description: Option<String>,
    pub variants: Vec<Variant>,
    /// The run's directory (each A/B pair in a subdirectory when more than two).
    pub out: PathBuf,
    pub store: StoreSettings,
    pub verdict: VerdictSettings,
    pub shown: Shown,
    /// Validated names of [`PROFILERS`]; passed on as `--profile` would be
    /// once the orchestrator has profilers.
    pub profilers: Vec<String>,
    pub profiled_rounds: Option<u32>,
}

/// What the experiment runs.
pub enum Shape<'a> {
    /// One variant: `vmbench boot` (or `vmbench bench` with benchmarks).
    Single(&'a Variant),
    /// Each variant after the first against the first, as `vmbench ab`.
    Pairs(Vec<AbConfig>),
}

impl Experiment {
    pub fn shape(&self) -> Shape<'_> {
        if let [only] = self.variants.as_slice() {
            return Shape::Single(only);
        }
        let first = &self.variants[0];
        let pairs = self.variants.len() > 2;
        let pairs = self.variants[1..]
            .iter()
            .map(|other| AbConfig {
                a: first.config.clone(),
                b: other.config.clone(),
                a_description: label(first),
                b_description: label(other),
                out: if pairs {
                    self.out.join(format!("{}-vs-{}", first.name, other.name))
                } else {
                    self.out.clone()
                },
            })
            .collect();
        Shape::Pairs(pairs)
    }
}

/// A variant as the store and the A/B tables describe it.
fn label(variant: &Variant) -> String {
    if variant.description.is_empty() {
        variant.name.clone()
    } else {
        format!("{}: {}", variant.name, variant.description)
    }
}

/// Reads and checks an experiment file.
pub fn load(path: &Path) -> Result<Experiment> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
        file: shown.clone(),
        reason: crate::error_line::one_line(&e),
    })?;
    parse(&shown, &text)
}

/// Checks an experiment file's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Experiment> {
    let at = Locator { file, text };
    let raw: file::File = toml::from_str(text).map_err(|e| at.toml_error(&e))?;
    build(&at, raw)
}

/// Turns byte offsets into `file:line: key:` errors.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    /// An error about `key`, whose value is at `span`.
    fn error(&self, span: std::ops::Range<usize>, key: &str, message: String) -> Error {
        Error::At {
            file: self.file.to_string(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message,
        }
    }

    fn spanned<T>(&self, value: &Spanned<T>, key: &str, message: String) -> Error {
        self.error(value.span(), key, message)
    }

    /// A parse or type error of the toml crate, on one line, with the key
    /// found from its span: the dotted key before `=` on that line (under
    /// the table header above it), or the spanned text itself (an unknown
    /// key), or the table's header (a missing key).
    fn toml_error(&self, error: &toml::de::Error) -> Error {
        let message = error
            .message()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let Some(span) = error.span() else {
            return Error::Whole {
                file: self.file.to_string(),
                message,
            };
        };
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = &self.text[line_start..line_end];
        let header = self.text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        let trimmed = line.trim();
        let key = if trimmed.starts_with('[') {
            trimmed
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string()
        } else {
            let local = match line.split_once('=') {
                Some((key, _)) if line_start + key.len() <= start => key.trim().to_string(),
                _ => self.text[start..span.end.min(self.text.len()).max(start)]
                    .trim()
                    .to_string(),
            };
            match header {
                Some(h) if !local.is_empty() => format!("{h}.{local}"),
                Some(h) => h,
                None => local,
            }
        };
        let key = if key.is_empty() { "(file)".into() } else { key };
        self.error(span, &key, message)
    }
}

/// `value` of `key` within `min..=max`, in clap's words.
fn within(at: &Locator<'_>, key: &str, value: &Spanned<u32>, min: u32, max: u32) -> Result<u32> {
    let v = *value.get_ref();
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(at.spanned(value, key, format!("{v} is not in {min}..={max}")))
    }
}

fn build(at: &Locator<'_>, raw: file::File) -> Result<Experiment> {
    let vms = match &raw.vms {
        Some(v) => within(at, "vms", v, 1, options::MAX_VMS)?,
        None => 1,
    };
    let runs = match &raw.runs {
        Some(v) => within(at, "runs", v, 1, options::MAX_RUNS)?,
        None => 1,
    };
    let warmup = match &raw.warmup {
        Some(v) => within(at, "warmup", v, 0, options::MAX_WARMUP)?,
        None => 0,
    };
    let mut profilers = Vec::new();
    for name in &raw.profilers {
        if !PROFILERS.contains(&name.get_ref().as_str()) {
            return Err(at.spanned(
                name,
                "profilers",
                format!(
                    "no profiler {:?}: the profilers are {}",
                    name.get_ref(),
                    PROFILERS.join(", ")
                ),
            ));
        }
        if profilers.contains(name.get_ref()) {
            return Err(at.spanned(
                name,
                "profilers",
                format!("{:?} named twice", name.get_ref()),
            ));
        }
        profilers.push(name.get_ref().clone());
    }
    let profiled_rounds = match &raw.profiled_rounds {
        Some(v) => Some(within(at, "profiled_rounds", v, 0, options::MAX_RUNS)?),
        None => None,
    };
    let mut tags = BTreeMap::new();
    for (key, value) in &raw.tags {
        if key.get_ref().is_empty() || key.get_ref().contains('=') {
            return Err(at.spanned(
                key,
                "tags",
                format!("{:?} is not a tag name", key.get_ref()),
            ));
        }
        tags.insert(key.get_ref().clone(), value.clone());
    }
    if let Some(name) = &raw.name {
        tags.entry("experiment".to_string())
            .or_insert_with(|| name.clone());
    }
    if raw.store.disabled && raw.store.path.is_some() {
        return Err(Error::Whole {
            file: at.file.to_string(),
            message: "store: path and disabled = true together: say one".into(),
        });
    }
    let plan = match &raw.bench {
        Some(bench) => Some(plan(at, bench)?),
        None => None,
    };
    if raw.boot.name.is_some() {
        let name = raw
            .boot
            .name
            .as_ref()
            .map(Spanned::span)
            .unwrap_or_default();
        return Err(at.error(name, "boot.name", "only a [[variant]] has a name".into()));
    }
    if raw.variant.is_empty() {
        return Err(Error::Whole {
            file: at.file.to_string(),
            message: "no [[variant]]: an experiment needs at least one".into(),
        });
    }
    let mut variants: Vec<Variant> = Vec::new();
    for (index, spanned) in raw.variant.iter().enumerate() {
        let variant = spanned.get_ref();
        let name = match &variant.name {
            Some(name) => {
                let text = name.get_ref().trim();
                if text.is_empty() || text.contains('/') || text.starts_with('.') {
                    return Err(at.spanned(
                        name,
                        "variant.name",
                        format!("{:?}: a variant's name is a directory name: not empty, no '/', not starting with '.'", name.get_ref()),
                    ));
                }
                if variants.iter().any(|v| v.name == text) {
                    return Err(at.spanned(
                        name,
                        "variant.name",
                        format!("{text:?}: another variant has this name"),
                    ));
                }
                text.to_string()
            }
            None if raw.variant.len() == 1 => String::new(),
            None => {
                return Err(at.error(
                    spanned.span(),
                    "variant.name",
                    format!(
                        "variant {} has no name: with several, each needs one",
                        index + 1
                    ),
                ))
            }
        };
        let mut config = boot_config(at, &raw.boot, variant, plan.is_some())?;
        config.vms = vms;
        config.runs = runs;
        config.warmup = warmup;
        config.progress = !raw.quiet;
        config.bench.clone_from(&plan);
        variants.push(Variant {
            name,
            description: variant.description.clone().unwrap_or_default(),
            config,
        });
    }
    let out = raw
        .out
        .clone()
        .unwrap_or_else(crate::pipeline::prepare::default_out_dir);
    for variant in &mut variants {
        variant.config.out = Some(out.clone());
    }
    Ok(Experiment {
        name: raw.name,
        description: raw.description,
        variants,
        out,
        store: StoreSettings {
            path: raw.store.path,
            disabled: raw.store.disabled,
            tags,
        },
        verdict: verdict(at, &raw.verdict)?,
        shown: Shown {
            json: raw.json,
            exits: raw.exits,
            distribution: raw.bench.as_ref().is_some_and(|b| b.distribution),
            csv: raw.bench.as_ref().and_then(|b| b.csv.clone()),
        },
        profilers,
        profiled_rounds,
    })
}

/// `[bench]` as `vmbench bench`'s `PlanArgs::plan` makes it.
fn plan(at: &Locator<'_>, bench: &file::Bench) -> Result<crate::bench::plan::Plan> {
    use crate::bench::catalog::Suite;
    use crate::bench::plan::{Plan, MAX_BUDGET_MS, MIN_BUDGET_MS};
    let suite = match bench.suite {
        None | Some(file::Suite::All) => None,
        Some(file::Suite::Micro) => Some(Suite::Micro),
        Some(file::Suite::Inter) => Some(Suite::Inter),
        Some(file::Suite::Vmexit) => Some(Suite::Vmexit),
    };
    let names = bench
        .names
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_default();
    let mut chosen = Plan::choose(suite, &names).map_err(|e| {
        let span = bench.names.as_ref().map(Spanned::span).unwrap_or_default();
        at.error(span, "bench.names", crate::error_line::one_line(&e))
    })?;
    chosen.rough = bench.rough;
    if let Some(budget) = &bench.budget_s {
        let seconds = *budget.get_ref();
        let (min, max) = (
            f64::from(MIN_BUDGET_MS) / 1e3,
            f64::from(MAX_BUDGET_MS) / 1e3,
        );
        if !(min..=max).contains(&seconds) {
            return Err(at.spanned(
                budget,
                "bench.budget_s",
                format!("{seconds}: must be from {min} to {max} seconds"),
            ));
        }
        chosen.budget_ms = Some((seconds * 1e3).round() as u32);
    }
    chosen.vmexit_guest.clone_from(&bench.vmexit_guest);
    Ok(chosen)
}

/// A variant's configuration: `[boot]`, then the variant's own keys over it.
fn boot_config(
    at: &Locator<'_>,
    common: &file::Inputs,
    own: &file::Inputs,
    bench: bool,
) -> Result<BootConfig> {
    macro_rules! pick {
        ($field:ident) => {
            own.$field.as_ref().or(common.$field.as_ref())
        };
    }
    // The key as the file has it: the variant's own, or [boot]'s.
    macro_rules! key {
        ($field:ident) => {
            if own.$field.is_some() {
                concat!("variant.", stringify!($field))
            } else {
                concat!("boot.", stringify!($field))
            }
        };
    }
    let mem_mib = match pick!(mem_mib) {
        Some(v) => within(
            at,
            key!(mem_mib),
            v,
            options::MIN_MEM_MIB,
            options::MAX_MEM_MIB,
        )?,
        None => 256,
    };
    let vcpus = match pick!(vcpus) {
        Some(v) => within(at, key!(vcpus), v, 1, options::MAX_VCPUS)?,
        None => 1,
    };
    // A bench run's endpoints are on the port after the report port.
    let max_port = if bench {
        options::MAX_PORT - 1
    } else {
        options::MAX_PORT
    };
    let port = match pick!(port) {
        Some(v) => within(at, key!(port), v, 1, max_port)?,
        None => vmbench_proto::DEFAULT_PORT,
    };
    let timeout_s = match pick!(timeout_s) {
        Some(v) => {
            let seconds = *v.get_ref();
            options::timeout_in_range(seconds).map_err(|range| {
                at.spanned(v, key!(timeout_s), format!("{seconds}: must be {range}"))
            })?;
            Some(seconds)
        }
        None => None,
    };
    let backends: Vec<BackendChoice> = pick!(backend)
        .map(file::Backends::list)
        .unwrap_or_else(|| vec![file::Backend::Auto])
        .into_iter()
        .map(|b| match b {
            file::Backend::Auto => BackendChoice::Auto,
            file::Backend::Kvm => BackendChoice::Kvm,
            file::Backend::Qemu => BackendChoice::Qemu,
        })
        .collect();
    let rootfs = pick!(rootfs).cloned();
    let initramfs = pick!(initramfs).cloned();
    let agent = pick!(agent).cloned();
    let no_initramfs = pick!(no_initramfs);
    let keep = pick!(keep);
    // The combinations clap refuses on the command line.
    if let Some(flag) = no_initramfs.filter(|f| *f.get_ref()) {
        if rootfs.is_none() {
            return Err(at.spanned(flag, key!(no_initramfs), "needs a rootfs".into()));
        }
        if initramfs.is_some() || agent.is_some() {
            return Err(at.spanned(
                flag,
                key!(no_initramfs),
                "cannot go with initramfs or agent".into(),
            ));
        }
    }
    if let Some(flag) = keep.filter(|f| *f.get_ref()) {
        if rootfs.is_none() {
            return Err(at.spanned(flag, key!(keep), "needs a rootfs".into()));
        }
    }
    if initramfs.is_some() && agent.is_some() {
        return Err(Error::At {
            file: at.file.to_string(),
            line: own.name.as_ref().map_or(1, |n| at.line_of(n.span().start)),
            key: "agent".into(),
            message: "cannot go with initramfs (the agent goes in the default initramfs)".into(),
        });
    }
    Ok(BootConfig {
        vms: 1,
        runs: 1,
        warmup: 0,
        backends,
        entry: pick!(entry).and_then(|e| match e {
            file::Entry::Auto => None,
            file::Entry::Pvh => Some("pvh".to_string()),
            file::Entry::Linux64 => Some("linux64".to_string()),
        }),
        kernel: pick!(kernel).cloned(),
        initramfs,
        agent,
        no_initramfs: no_initramfs.is_some_and(|f| *f.get_ref()),
        mem_mib,
        vcpus,
        accel: match pick!(accel).copied().unwrap_or(file::Accel::Auto) {
            file::Accel::Auto => AccelChoice::Auto,
            file::Accel::Kvm => AccelChoice::Kvm,
            file::Accel::Tcg => AccelChoice::Tcg,
        },
        timeout_s,
        rootfs,
        keep_overlays: keep.is_some_and(|f| *f.get_ref()),
        out: None,
        append: pick!(append).cloned().unwrap_or_default(),
        port,
        progress: true,
        bench: None,
    })
}

fn verdict(at: &Locator<'_>, raw: &file::Verdict) -> Result<VerdictSettings> {
    let mut judge = Judge::default();
    if let Some(alpha) = &raw.alpha {
        let a = *alpha.get_ref();
        if !(a > 0.0 && a < 1.0) {
            return Err(at.spanned(
                alpha,
                "verdict.alpha",
                format!("{a}: must be more than 0 and less than 1"),
            ));
        }
        judge.alpha = a;
    }
    let band = |value: &Spanned<f64>, key: &str| -> Result<f64> {
        let b = *value.get_ref();
        if (0.0..1.0).contains(&b) {
            Ok(b)
        } else {
            Err(at.spanned(
                value,
                key,
                format!("{b}: must be at least 0 and less than 1"),
            ))
        }
    };
    if let Some(noise) = &raw.noise {
        judge.noise_band = Some(band(noise, "verdict.noise")?);
    }
    for (metric, value) in &raw.noise_by_metric {
        let key = format!("verdict.noise_by_metric.{}", metric.get_ref());
        judge
            .noise_bands
            .insert(metric.get_ref().clone(), band(value, &key)?);
    }
    Ok(VerdictSettings {
        judge,
        format: match raw.format {
            file::Format::Table => Format::Table,
            file::Format::Markdown => Format::Markdown,
            file::Format::Json => Format::Json,
            file::Format::Junit => Format::Junit,
            file::Format::Csv => Format::Csv,
        },
        gate: raw.gate.iter().map(|g| g.get_ref().clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[variant]]\nname = \"a\"\n";

    fn error(text: &str) -> String {
        let e = parse("x.toml", text).expect_err("refused");
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        line
    }

    #[test]
    fn every_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 3, "{seen} examples in {}", dir.display());
    }

    #[test]
    fn bad_files_are_refused_in_one_line_naming_line_and_key() {
        for (text, expected) in [
            (
                "runs = 2\nvmz = 1\n[[variant]]\nname = \"a\"\n",
                "x.toml:2: vmz: unknown field `vmz`",
            ),
            (
                "runs = \"two\"\n[[variant]]\nname = \"a\"\n",
                "x.toml:1: runs: invalid type: string \"two\", expected u32",
            ),
            (
                "[boot]\nmem_mib = 63\n[[variant]]\nname = \"a\"\n",
                "x.toml:2: boot.mem_mib: 63 is not in 64..=262144",
            ),
            (
                "vms = 0\n[[variant]]\nname = \"a\"\n",
                "x.toml:1: vms: 0 is not in 1..=1024",
            ),
            (
                "runs = -1\n[[variant]]\nname = \"a\"\n",
                "x.toml:1: runs: invalid value: integer `-1`, expected u32",
            ),
            (
                "[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n",
                "x.toml:4: variant.name: \"a\": another variant has this name",
            ),
            (
                "[verdict]\nalpha = 1.0\n[[variant]]\nname = \"a\"\n",
                "x.toml:2: verdict.alpha: 1: must be more than 0 and less than 1",
            ),
            (
                "[[variant]]\nname = \"a\"\nbackend = \"xen\"\n",
                "x.toml:3: variant.backend: a backend (\"auto\", \"kvm\", \"qemu\") or a list of them",
            ),
            (
                "profilers = [\"host\", \"perf\"]\n[[variant]]\nname = \"a\"\n",
                "x.toml:1: profilers: no profiler \"perf\": the profilers are exits, kvm-stats, host, perf-kvm, initcalls, guest-stat",
            ),
            (
                "[[variant]]\nname = \"a\"\ntimeout_s = 1e20\n",
                "x.toml:3: variant.timeout_s: 100000000000000000000: must be from 0.001 to 86400 seconds",
            ),
            (
                "[bench]\nnames = [\"nosuch\"]\n[[variant]]\nname = \"a\"\n",
                "x.toml:2: bench.names: ",
            ),
            (
                "[[variant]]\nname = \"a\"\nkeep = true\n",
                "x.toml:3: variant.keep: needs a rootfs",
            ),
            ("runs = 2\n", "x.toml: no [[variant]]: an experiment needs at least one"),
            (
                "[[variant]]\nname = \"a\"\n[[variant]]\nkernel = \"k\"\n",
                "x.toml:3: variant.name: variant 2 has no name: with several, each needs one",
            ),
            ("runs = \n", "x.toml:1: runs: "),
        ] {
            let line = error(text);
            assert!(line.starts_with(expected), "{text:?}:\n got {line}\nwant {expected}");
        }
    }

    #[test]
    fn variants_inherit_boot_and_override_it() {
        let text = "runs = 3\nwarmup = 1\n[boot]\nbackend = \"qemu\"\nmem_mib = 128\nappend = [\"quiet\"]\n\
                    [[variant]]\nname = \"one\"\n[[variant]]\nname = \"two\"\nvcpus = 2\nmem_mib = 512\n\
                    [verdict]\nnoise_by_metric = { \"phase.total\" = 0.1 }\ngate = [\"all\"]\n";
        let e = parse("x.toml", text).unwrap();
        let [one, two] = e.variants.as_slice() else {
            panic!("{:?}", e.variants)
        };
        assert_eq!((one.config.mem_mib, one.config.vcpus), (128, 1));
        assert_eq!((two.config.mem_mib, two.config.vcpus), (512, 2));
        assert_eq!(two.config.backends, vec![BackendChoice::Qemu]);
        assert_eq!(two.config.append, vec!["quiet".to_string()]);
        assert_eq!((two.config.runs, two.config.warmup), (3, 1));
        assert_eq!(e.verdict.judge.noise_bands["phase.total"], 0.1);
        let Shape::Pairs(pairs) = e.shape() else {
            panic!("two variants are an A/B run")
        };
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].out, e.out);
    }

    #[test]
    fn three_variants_are_two_pairs_against_the_first() {
        let text = "out = \"o\"\n[[variant]]\nname = \"a\"\n[[variant]]\nname = \"b\"\n[[variant]]\nname = \"c\"\n";
        let e = parse("x.toml", text).unwrap();
        let Shape::Pairs(pairs) = e.shape() else {
            panic!("pairs")
        };
        let outs: Vec<PathBuf> = pairs.iter().map(|p| p.out.clone()).collect();
        assert_eq!(outs, [PathBuf::from("o/a-vs-b"), PathBuf::from("o/a-vs-c")]);
        assert_eq!(pairs[1].b_description, "c");
    }

    #[test]
    fn one_variant_is_a_single_run_with_the_experiment_tag() {
        let e = parse("x.toml", &format!("name = \"exp\"\n{MINIMAL}")).unwrap();
        assert!(matches!(e.shape(), Shape::Single(_)));
        assert_eq!(e.store.tags["experiment"], "exp");
    }
}
