//! The commands over the results store: `vmbench runs` (list, show),
//! `vmbench compare` (two runs, tag queries or results.json files),
//! `vmbench history` (a metric over time, with change points), `vmbench
//! export` (every raw sample as CSV) and `vmbench import` (a results.json
//! made elsewhere or before).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use vmbench_store::{Location, RunQuery, RunRecord, Store};

use crate::compare::Side;
use crate::record;
use crate::results::RunResults;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] vmbench_store::Error),
    #[error("No run {0} in the store")]
    NoRun(String),
    #[error("No run in the store matches {0}")]
    NoMatch(String),
    #[error("Run {run} has variants {variants}: say {run}:A or {run}:B")]
    WhichVariant { run: String, variants: String },
    #[error("Run {run} has no variant {variant:?}")]
    NoVariant { run: String, variant: String },
    #[error("Cannot read {path}: {detail}")]
    Results { path: String, detail: String },
    #[error("--where {0:?}: expected KEY=VALUE")]
    BadWhere(String),
    #[error("No run in the store has metric {0}")]
    NoMetric(String),
    #[error(transparent)]
    Stats(#[from] vmbench_stats::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `KEY=VALUE` filters.
pub fn parse_where(filters: &[String]) -> Result<Vec<(String, String)>> {
    filters
        .iter()
        .map(|f| {
            f.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::BadWhere(f.clone()))
        })
        .collect()
}

/// A run id given by its first characters, as `git` takes a commit's.
pub(crate) fn full_id(store: &mut Store, given: &str) -> Result<String> {
    let all = store.runs(&RunQuery::default())?;
    let matching: Vec<&str> = all
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| id.starts_with(given))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(Error::NoRun(given.to_string())),
    }
}

/// `vmbench runs`: the runs a query selects, newest first, one a line.
pub fn list(location: &Location, query: &RunQuery) -> Result<String> {
    let mut store = Store::open(location)?;
    let runs = store.runs(query)?;
    let mut rows = vec![[
        "run",
        "started (UTC)",
        "kind",
        "samples",
        "host",
        "backend",
        "tags",
    ]
    .map(String::from)
    .to_vec()];
    for r in &runs {
        rows.push(vec![
            r.id.chars().take(8).collect(),
            r.started_at
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " "),
            r.kind.clone(),
            r.sample_count.to_string(),
            r.host_cpu.clone(),
            format!("{} ({})", r.backend, r.accel),
            r.tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    let mut out = crate::render::grid(&rows);
    let _ = writeln!(out, "{} run(s) in {location}", runs.len());
    Ok(out)
}

/// `vmbench runs show ID`: how a run was made and its metrics' medians.
pub fn show(location: &Location, given: &str) -> Result<String> {
    let mut store = Store::open(location)?;
    let id = full_id(&mut store, given)?;
    let run = store.run(&id)?.ok_or_else(|| Error::NoRun(id.clone()))?;
    let mut out = String::new();
    let env = &run.environment;
    let _ = writeln!(
        out,
        "run {} ({}), started {}",
        run.id, run.kind, run.started_at
    );
    let _ = writeln!(out, "command: {}", run.command);
    let _ = writeln!(out, "vmbench: {}", run.vmbench_version);
    let _ = writeln!(
        out,
        "host: {} ({} family {} model {}{}), {} CPUs, kernel {}",
        env.cpu_model_name,
        env.cpu_vendor,
        env.cpu_family,
        env.cpu_model,
        if env.microarchitecture.is_empty() {
            String::new()
        } else {
            format!(", {}", env.microarchitecture)
        },
        env.logical_cpus,
        env.host_kernel
    );
    let _ = writeln!(
        out,
        "backend: {} on {} (KVM {}: {})",
        env.backend, env.accel, env.kvm, env.kvm_detail
    );
    for (tool, version) in &run.tool_versions {
        let _ = writeln!(out, "tool: {tool}: {version}");
    }
    for (k, v) in &run.tags {
        let _ = writeln!(out, "tag: {k}={v}");
    }
    for variant in &run.variants {
        out.push_str(&variant_section(&run, variant));
    }
    let attachments: Vec<String> = run.attachments.iter().map(|a| a.name.clone()).collect();
    let _ = writeln!(out, "\n{} attachment(s): {}", attachments.len(), {
        let mut names = attachments.clone();
        names.sort();
        names.dedup();
        names.join(", ")
    });
    Ok(out)
}

/// One variant of a stored run: what it booted and its metrics' medians.
fn variant_section(run: &RunRecord, variant: &vmbench_store::VariantRecord) -> String {
    let mut out = String::new();
    let name = if variant.name.is_empty() {
        "run"
    } else {
        &variant.name
    };
    let _ = writeln!(out, "\n{name}: {}", variant.description);
    for input in &variant.inputs {
        let _ = writeln!(
            out,
            "  {}: {} (sha256 {})",
            input.role,
            input.path,
            input.sha256.chars().take(12).collect::<String>()
        );
    }
    let mut side = Side::default();
    side.add_record(run, &variant.name);
    let mut rows = vec![["metric", "unit", "n", "median", "min", "max"]
        .map(String::from)
        .to_vec()];
    for (name, (def, values)) in &side.samples {
        if let Some(s) = crate::stats::of(values.iter().copied()) {
            rows.push(vec![
                name.clone(),
                def.unit.clone(),
                s.n.to_string(),
                format!("{:.1}", s.median),
                format!("{:.1}", s.min),
                format!("{:.1}", s.max),
            ]);
        }
    }
    out.push_str(&crate::render::grid(&rows));
    out
}

/// One side of `vmbench compare`: a results.json path, a run id (with
/// `:A`/`:B` for an A/B run), or a tag query `KEY=VALUE[,KEY=VALUE]` whose
/// matching runs' samples are pooled.
pub fn side(location: Option<&Location>, spec: &str) -> Result<Side> {
    let path = Path::new(spec);
    if spec.ends_with(".json") || path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Results {
            path: spec.to_string(),
            detail: e.to_string(),
        })?;
        let results: RunResults = serde_json::from_str(&text).map_err(|e| Error::Results {
            path: spec.to_string(),
            detail: e.to_string(),
        })?;
        return Ok(Side::of_results(spec, &results));
    }
    let location = location.ok_or_else(|| Error::NoMatch(spec.to_string()))?;
    let mut store = Store::open(location)?;
    let mut side = Side {
        label: spec.to_string(),
        ..Side::default()
    };
    if spec.contains('=') {
        let tags = parse_where(&spec.split(',').map(str::to_string).collect::<Vec<_>>())?;
        let runs = store.runs(&RunQuery {
            tags,
            ..RunQuery::default()
        })?;
        if runs.is_empty() {
            return Err(Error::NoMatch(spec.to_string()));
        }
        for summary in runs {
            if let Some(run) = store.run(&summary.id)? {
                let variant = run
                    .variants
                    .last()
                    .map(|v| v.name.clone())
                    .unwrap_or_default();
                side.add_record(&run, &variant);
            }
        }
        return Ok(side);
    }
    let (given, variant) = match spec.split_once(':') {
        Some((id, variant)) => (id, Some(variant)),
        None => (spec, None),
    };
    let id = full_id(&mut store, given)?;
    let run = store.run(&id)?.ok_or_else(|| Error::NoRun(id.clone()))?;
    let variant = pick_variant(&run, variant)?;
    side.add_record(&run, &variant);
    Ok(side)
}

/// The variant of `run` a side means.
fn pick_variant(run: &RunRecord, asked: Option<&str>) -> Result<String> {
    let names: Vec<&str> = run.variants.iter().map(|v| v.name.as_str()).collect();
    match asked {
        Some(name) if names.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(Error::NoVariant {
            run: run.id.clone(),
            variant: name.to_string(),
        }),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(Error::WhichVariant {
            run: run.id.chars().take(8).collect(),
            variants: names.join(", "),
        }),
    }
}

/// `vmbench history METRIC`: the metric's median in each matching run,
/// oldest first, with E-divisive change points marked.
pub fn history(location: &Location, metric: &str, query: &RunQuery) -> Result<String> {
    let mut store = Store::open(location)?;
    let mut summaries = store.runs(query)?;
    summaries.reverse();
    let mut points: Vec<(String, String, String, usize, f64)> = Vec::new();
    for summary in summaries {
        let Some(run) = store.run(&summary.id)? else {
            continue;
        };
        for variant in &run.variants {
            let mut side = Side::default();
            side.add_record(&run, &variant.name);
            if let Some((_, values)) = side.samples.get(metric) {
                if let Some(s) = crate::stats::of(values.iter().copied()) {
                    points.push((
                        run.id.chars().take(8).collect(),
                        run.started_at.clone(),
                        variant.name.clone(),
                        s.n,
                        s.median,
                    ));
                }
            }
        }
    }
    if points.is_empty() {
        return Err(Error::NoMetric(metric.to_string()));
    }
    let medians: Vec<f64> = points.iter().map(|p| p.4).collect();
    let changes =
        vmbench_stats::change_points(&medians, &vmbench_stats::ChangePointConfig::default())?;
    let mut rows = vec![["started (UTC)", "run", "variant", "n", "median", "change"]
        .map(String::from)
        .to_vec()];
    for (i, (run, started, variant, n, median)) in points.iter().enumerate() {
        rows.push(vec![
            started
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " "),
            run.clone(),
            variant.clone(),
            n.to_string(),
            format!("{median:.2}"),
            if changes.contains(&i) {
                "<- change point".into()
            } else {
                String::new()
            },
        ]);
    }
    let mut out = crate::render::grid(&rows);
    let _ = writeln!(
        out,
        "{metric}: {} run(s), {} change point(s) (E-divisive means, permutation test)",
        points.len(),
        changes.len()
    );
    Ok(out)
}

/// `vmbench export`: every raw sample of the matching runs as CSV, with its
/// run, variant, round, VM, metric and tags.
pub fn export(location: &Location, query: &RunQuery) -> Result<String> {
    let mut store = Store::open(location)?;
    let mut out =
        String::from("run,started_at,kind,variant,round,vm,metric,unit,clock,warmup,value,tags\n");
    for summary in store.runs(query)? {
        let Some(run) = store.run(&summary.id)? else {
            continue;
        };
        let units: BTreeMap<&str, (&str, &str)> = run
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), (m.unit.as_str(), m.clock.as_str())))
            .collect();
        let tags = run
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        for s in &run.samples {
            let (unit, clock) = units.get(s.metric.as_str()).copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                run.id,
                run.started_at,
                run.kind,
                csv(&s.variant),
                s.round,
                s.vm,
                csv(&s.metric),
                unit,
                clock,
                s.warmup,
                s.value,
                csv(&tags)
            );
        }
    }
    Ok(out)
}

fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// `vmbench import results.json`: a run made elsewhere or before, recorded
/// in the store; its id.
pub fn import(location: &Location, path: &Path, tags: &BTreeMap<String, String>) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Results {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let results: RunResults = serde_json::from_str(&text).map_err(|e| Error::Results {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    if !results.finished {
        return Err(Error::Results {
            path: path.display().to_string(),
            detail: "the run never finished (vmbench was killed or is still running it)".into(),
        });
    }
    // An interrupted run says so in its tags, so queries can leave it out.
    let mut tags = tags.clone();
    if let Some(signal) = results
        .interrupted_by
        .as_ref()
        .filter(|_| results.interrupted)
    {
        tags.entry("interrupted".into())
            .or_insert_with(|| signal.clone());
    }
    let command = format!("vmbench import {}", path.display());
    let origin = record::Origin {
        kind: "import",
        command: &command,
        tags: &tags,
    };
    let variants = [record::Variant {
        name: "",
        description: "",
        results: &results,
    }];
    let run = record::run_record(&origin, &variants);
    let mut store = Store::open(location)?;
    store.record(&run)?;
    Ok(run.id)
}
