//! Recording a run: checked whole first ([`plan`]), then written in one
//! transaction ([`write`]).
//!
//! Shared rows (environments, metrics, inputs, attachments) are looked up
//! and inserted `ON CONFLICT DO NOTHING`, in a fixed order (those tables in
//! that order, each one's rows sorted by key), so that concurrent writers
//! on PostgreSQL wait for each other's new rows instead of deadlocking; the
//! run's own rows come after them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::attachment::{self, Encoded};
use crate::driver::{Param, Tx};
use crate::error::{DatabaseError, Error, Fail, MetricConflict};
use crate::record::{sha256_hex, EnvironmentRecord, MetricDef, RunRecord};

/// Rows per multi-row `INSERT` (well under both databases' limits on
/// parameters per statement).
const ROWS_PER_INSERT: usize = 100;

/// A run checked and prepared: everything that need not be redone when
/// the transaction is retried.
pub(crate) struct Plan<'r> {
    run: &'r RunRecord,
    environment_key: String,
    /// Per variant, per input: its dedup key and its detail as JSON text.
    inputs: Vec<Vec<(String, String)>>,
    /// Distinct attachment contents, by SHA-256.
    contents: BTreeMap<String, Encoded>,
    /// Per attachment of the run: its contents' SHA-256.
    attachment_sha256: Vec<String>,
    variant_index: HashMap<&'r str, usize>,
    metric_index: HashMap<&'r str, usize>,
}

/// Checks `run` and prepares it for [`write`].
pub(crate) fn plan<'r>(run: &'r RunRecord, location: &str) -> Result<Plan<'r>, Error> {
    let invalid = |problem: String| Error::InvalidRun {
        location: location.to_string(),
        run: run.id.clone(),
        problem,
    };
    match uuid::Uuid::parse_str(&run.id) {
        Ok(u) if u.hyphenated().to_string() == run.id => {}
        _ => {
            return Err(invalid(
                "its id is not a UUID in canonical form (lowercase, hyphenated)".into(),
            ))
        }
    }
    if !is_rfc3339_utc(&run.started_at) {
        return Err(invalid(format!(
            "started_at {:?} is not an RFC 3339 time in UTC (like 2026-11-29T03:54:53Z)",
            run.started_at
        )));
    }
    if run.kind.is_empty() {
        return Err(invalid("its kind is empty".into()));
    }
    if run.variants.is_empty() {
        return Err(invalid("it has no variant".into()));
    }
    let mut variant_index = HashMap::new();
    for (i, v) in run.variants.iter().enumerate() {
        if variant_index.insert(v.name.as_str(), i).is_some() {
            return Err(invalid(format!("variant {:?} is there twice", v.name)));
        }
    }
    let mut metric_index = HashMap::new();
    for (i, m) in run.metrics.iter().enumerate() {
        if m.name.is_empty() {
            return Err(invalid("a metric has an empty name".into()));
        }
        if metric_index.insert(m.name.as_str(), i).is_some() {
            return Err(invalid(format!("metric {} is defined twice", m.name)));
        }
    }
    let mut seen = HashSet::new();
    for s in &run.samples {
        if !variant_index.contains_key(s.variant.as_str()) {
            return Err(invalid(format!(
                "a sample of {} names variant {:?}, which the run does not have",
                s.metric, s.variant
            )));
        }
        if !metric_index.contains_key(s.metric.as_str()) {
            return Err(invalid(format!(
                "a sample names metric {}, which the run does not define",
                s.metric
            )));
        }
        if !s.value.is_finite() {
            return Err(invalid(format!(
                "sample {} of variant {:?}, round {}, vm {} is {}",
                s.metric, s.variant, s.round, s.vm, s.value
            )));
        }
        if !seen.insert((s.variant.as_str(), s.round, s.vm, s.metric.as_str())) {
            return Err(invalid(format!(
                "sample {} of variant {:?}, round {}, vm {} is there twice",
                s.metric, s.variant, s.round, s.vm
            )));
        }
    }
    let mut seen = HashSet::new();
    let mut contents = BTreeMap::new();
    let mut attachment_sha256 = Vec::with_capacity(run.attachments.len());
    for a in &run.attachments {
        if !variant_index.contains_key(a.variant.as_str()) {
            return Err(invalid(format!(
                "attachment {} names variant {:?}, which the run does not have",
                a.name, a.variant
            )));
        }
        if !seen.insert((a.variant.as_str(), a.vm, a.name.as_str())) {
            return Err(invalid(format!(
                "attachment {} of variant {:?}{} is there twice",
                a.name,
                a.variant,
                a.vm.map(|vm| format!(", vm {vm}")).unwrap_or_default()
            )));
        }
        let sha256 = a.sha256();
        if !contents.contains_key(&sha256) {
            let encoded = attachment::encode(&a.bytes);
            contents.insert(sha256.clone(), encoded);
        }
        attachment_sha256.push(sha256);
    }
    let inputs = run
        .variants
        .iter()
        .map(|v| {
            v.inputs
                .iter()
                .map(|i| {
                    let detail = i.detail.to_string();
                    let key = key_of(&[&i.role, &i.path, &i.sha256, &detail]);
                    (key, detail)
                })
                .collect()
        })
        .collect();
    Ok(Plan {
        run,
        environment_key: environment_key(&run.environment),
        inputs,
        contents,
        attachment_sha256,
        variant_index,
        metric_index,
    })
}

/// Writes a planned run. Refuses a run id the store has, and a metric the
/// store defines otherwise.
pub(crate) fn write(tx: &mut dyn Tx, plan: &Plan<'_>, location: &str) -> Result<(), Fail> {
    let run = plan.run;
    let duplicate = || {
        Fail::Store(Error::DuplicateRun {
            location: location.to_string(),
            id: run.id.clone(),
        })
    };
    if tx
        .query_opt(
            "SELECT id FROM runs WHERE uuid = $1",
            &[Param::Text(&run.id)],
        )?
        .is_some()
    {
        return Err(duplicate());
    }

    let environment_id = environment(tx, plan)?;
    let metric_ids = metrics(tx, run, location)?;
    let input_ids = inputs(tx, plan)?;
    for (sha256, e) in &plan.contents {
        let stored = tx.query_opt(
            "SELECT size_bytes FROM attachments WHERE sha256 = $1",
            &[Param::Text(sha256)],
        )?;
        if stored.is_none() {
            tx.execute(
                "INSERT INTO attachments (sha256, size_bytes, encoding, data) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
                &[
                    Param::Text(sha256),
                    Param::Int(e.size_bytes),
                    Param::Text(e.encoding),
                    Param::Blob(&e.data),
                ],
            )?;
        }
    }

    let env = &run.environment;
    let run_id = match tx.query_one(
        "INSERT INTO runs (uuid, started_at, kind, command, vmbench_version, environment_id, \
         kvm_detail, sample_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        &[
            Param::Text(&run.id),
            Param::Text(&run.started_at),
            Param::Text(&run.kind),
            Param::Text(&run.command),
            Param::Text(&run.vmbench_version),
            Param::Int(environment_id),
            Param::Text(&env.kvm_detail),
            Param::Int(run.samples.len() as i64),
        ],
    ) {
        Ok(mut row) => row.int(0)?,
        // Another writer recorded the same id since the check above.
        Err(e) if e.is_unique_violation() => return Err(duplicate()),
        Err(e) => return Err(e.into()),
    };

    let mut rows = Vec::new();
    for (key, value) in &run.tags {
        rows.extend([Param::Int(run_id), Param::Text(key), Param::Text(value)]);
    }
    insert_rows(tx, "INSERT INTO tags (run_id, key, value)", 3, &rows)?;
    rows.clear();
    for (tool, version) in &run.tool_versions {
        rows.extend([Param::Int(run_id), Param::Text(tool), Param::Text(version)]);
    }
    insert_rows(
        tx,
        "INSERT INTO tool_versions (run_id, tool, version)",
        3,
        &rows,
    )?;
    rows.clear();
    for (position, id) in metric_ids.iter().enumerate() {
        rows.extend([
            Param::Int(run_id),
            Param::Int(position as i64),
            Param::Int(*id),
        ]);
    }
    insert_rows(
        tx,
        "INSERT INTO run_metrics (run_id, position, metric_id)",
        3,
        &rows,
    )?;

    let mut variant_ids = Vec::with_capacity(run.variants.len());
    for (position, v) in run.variants.iter().enumerate() {
        let id = tx
            .query_one(
                "INSERT INTO variants (run_id, position, name, description) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    Param::Int(run_id),
                    Param::Int(position as i64),
                    Param::Text(&v.name),
                    Param::Text(&v.description),
                ],
            )?
            .int(0)?;
        variant_ids.push(id);
    }
    let mut rows = Vec::new();
    for (v, variant_id) in plan.inputs.iter().zip(&variant_ids) {
        for (position, (key, _)) in v.iter().enumerate() {
            rows.extend([
                Param::Int(*variant_id),
                Param::Int(position as i64),
                Param::Int(input_ids[key.as_str()]),
            ]);
        }
    }
    insert_rows(
        tx,
        "INSERT INTO variant_inputs (variant_id, position, input_id)",
        3,
        &rows,
    )?;

    let mut rows = Vec::with_capacity(run.samples.len() * 8);
    for (position, s) in run.samples.iter().enumerate() {
        rows.extend([
            Param::Int(run_id),
            Param::Int(position as i64),
            Param::Int(variant_ids[plan.variant_index[s.variant.as_str()]]),
            Param::Int(metric_ids[plan.metric_index[s.metric.as_str()]]),
            Param::Int(s.round.into()),
            Param::Int(s.vm.into()),
            Param::Real(s.value),
            Param::Int(s.warmup.into()),
        ]);
    }
    insert_rows(
        tx,
        "INSERT INTO samples (run_id, position, variant_id, metric_id, round, vm, value, warmup)",
        8,
        &rows,
    )?;

    let mut rows = Vec::new();
    for (position, (a, sha256)) in run
        .attachments
        .iter()
        .zip(&plan.attachment_sha256)
        .enumerate()
    {
        rows.extend([
            Param::Int(run_id),
            Param::Int(position as i64),
            Param::Int(variant_ids[plan.variant_index[a.variant.as_str()]]),
            Param::OptInt(a.vm.map(i64::from)),
            Param::Text(&a.name),
            Param::Text(sha256),
        ]);
    }
    insert_rows(
        tx,
        "INSERT INTO run_attachments (run_id, position, variant_id, vm, name, sha256)",
        6,
        &rows,
    )?;
    Ok(())
}

/// The stored environment's id, inserted if new.
fn environment(tx: &mut dyn Tx, plan: &Plan<'_>) -> Result<i64, DatabaseError> {
    let e = &plan.run.environment;
    let logical_cpus = i64::from(e.logical_cpus);
    shared_row_id(
        tx,
        "SELECT id FROM environments WHERE key_sha256 = $1",
        "INSERT INTO environments (key_sha256, cpu_vendor, cpu_family, cpu_model, \
         cpu_model_name, microarchitecture, logical_cpus, host_kernel, accel, kvm, backend, \
         vmm_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (key_sha256) DO NOTHING RETURNING id",
        &[
            Param::Text(&plan.environment_key),
            Param::Text(&e.cpu_vendor),
            Param::Text(&e.cpu_family),
            Param::Text(&e.cpu_model),
            Param::Text(&e.cpu_model_name),
            Param::Text(&e.microarchitecture),
            Param::Int(logical_cpus),
            Param::Text(&e.host_kernel),
            Param::Text(&e.accel),
            Param::Text(&e.kvm),
            Param::Text(&e.backend),
            Param::Text(&e.vmm_version),
        ],
    )
}

/// The stored inputs' ids by key, inserted if new, in key order.
fn inputs<'p>(tx: &mut dyn Tx, plan: &'p Plan<'_>) -> Result<HashMap<&'p str, i64>, DatabaseError> {
    let mut by_key = BTreeMap::new();
    for (v, keys) in plan.run.variants.iter().zip(&plan.inputs) {
        for (input, (key, detail)) in v.inputs.iter().zip(keys) {
            by_key.insert(key.as_str(), (input, detail.as_str()));
        }
    }
    let mut ids = HashMap::new();
    for (key, (input, detail)) in by_key {
        let id = shared_row_id(
            tx,
            "SELECT id FROM inputs WHERE key_sha256 = $1",
            "INSERT INTO inputs (key_sha256, role, path, sha256, detail) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_sha256) DO NOTHING RETURNING id",
            &[
                Param::Text(key),
                Param::Text(&input.role),
                Param::Text(&input.path),
                Param::Text(&input.sha256),
                Param::Text(detail),
            ],
        )?;
        ids.insert(key, id);
    }
    Ok(ids)
}

/// The id of a row deduplicated by the key that is `insert`'s first
/// parameter and `select`'s only one: found, or inserted, or (when another
/// writer inserted it meanwhile) found after all.
fn shared_row_id(
    tx: &mut dyn Tx,
    select: &str,
    insert: &str,
    params: &[Param<'_>],
) -> Result<i64, DatabaseError> {
    if let Some(mut row) = tx.query_opt(select, &params[..1])? {
        return row.int(0);
    }
    if let Some(mut row) = tx.query_opt(insert, params)? {
        return row.int(0);
    }
    tx.query_one(select, &params[..1])?.int(0)
}

/// The run's metrics' ids, in the run's order. Each is inserted if new, or
/// checked against its stored definition (in name order, see the module
/// doc).
fn metrics(tx: &mut dyn Tx, run: &RunRecord, location: &str) -> Result<Vec<i64>, Fail> {
    let mut order: Vec<usize> = (0..run.metrics.len()).collect();
    order.sort_by(|&a, &b| run.metrics[a].name.cmp(&run.metrics[b].name));
    let mut ids = vec![0; run.metrics.len()];
    for i in order {
        let m = &run.metrics[i];
        ids[i] = loop {
            if let Some(mut row) = tx.query_opt(
                "SELECT id, unit, clock, direction, alias_group FROM metrics WHERE name = $1",
                &[Param::Text(&m.name)],
            )? {
                let id = row.int(0)?;
                let stored_alias_group = row.opt_text(4)?;
                let fill_alias_group = stored_alias_group.is_none() && m.alias_group.is_some();
                let stored = (row.text(1)?, row.text(2)?, row.text(3)?, stored_alias_group);
                check_metric(m, stored, run, location)?;
                if fill_alias_group {
                    tx.execute(
                        "UPDATE metrics SET alias_group = $1 WHERE id = $2 AND alias_group IS NULL",
                        &[Param::OptText(m.alias_group.as_deref()), Param::Int(id)],
                    )?;
                }
                break id;
            }
            if let Some(mut row) = tx.query_opt(
                "INSERT INTO metrics (name, unit, clock, direction, alias_group) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id",
                &[
                    Param::Text(&m.name),
                    Param::Text(&m.unit),
                    Param::Text(&m.clock),
                    Param::Text(m.direction.as_str()),
                    Param::OptText(m.alias_group.as_deref()),
                ],
            )? {
                break row.int(0)?;
            }
            // Inserted by another writer meanwhile: check it as stored.
        };
    }
    Ok(ids)
}

/// Refuses `m` if the store defines its name with another unit, clock,
/// direction or alias group (an alias group missing on either side is no
/// difference).
fn check_metric(
    m: &MetricDef,
    (unit, clock, direction, alias_group): (String, String, String, Option<String>),
    run: &RunRecord,
    location: &str,
) -> Result<(), Fail> {
    let differs = |field: &'static str, stored: String, given: &str| {
        Fail::Store(Error::MetricRedefined {
            location: location.to_string(),
            conflict: Box::new(MetricConflict {
                run: run.id.clone(),
                metric: m.name.clone(),
                field,
                stored,
                given: given.to_string(),
            }),
        })
    };
    if unit != m.unit {
        return Err(differs("unit", unit, &m.unit));
    }
    if clock != m.clock {
        return Err(differs("clock", clock, &m.clock));
    }
    if direction != m.direction.as_str() {
        return Err(differs("direction", direction, m.direction.as_str()));
    }
    if let (Some(stored), Some(given)) = (alias_group, &m.alias_group) {
        if stored != *given {
            return Err(differs("alias group", stored, given));
        }
    }
    Ok(())
}

/// Inserts rows of `columns` parameters each, [`ROWS_PER_INSERT`] per
/// statement. `head` is the statement up to `VALUES`.
fn insert_rows(
    tx: &mut dyn Tx,
    head: &str,
    columns: usize,
    params: &[Param<'_>],
) -> Result<(), DatabaseError> {
    for chunk in params.chunks(columns * ROWS_PER_INSERT) {
        let mut sql = format!("{head} VALUES ");
        for row in 0..chunk.len() / columns {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..columns {
                let sep = if column == 0 { "" } else { ", " };
                let _ = write!(sql, "{sep}${}", row * columns + column + 1);
            }
            sql.push(')');
        }
        tx.execute(&sql, chunk)?;
    }
    Ok(())
}

/// The key environments are deduplicated by: everything but `kvm_detail`,
/// which is a measurement of the run.
fn environment_key(e: &EnvironmentRecord) -> String {
    key_of(&[
        &e.cpu_vendor,
        &e.cpu_family,
        &e.cpu_model,
        &e.cpu_model_name,
        &e.microarchitecture,
        &e.logical_cpus.to_string(),
        &e.host_kernel,
        &e.accel,
        &e.kvm,
        &e.backend,
        &e.vmm_version,
    ])
}

/// SHA-256 of the fields as a JSON array: unambiguous where the fields
/// themselves contain separators.
fn key_of(fields: &[&str]) -> String {
    sha256_hex(serde_json::to_string(fields).unwrap_or_default().as_bytes())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (or `+00:00`): RFC 3339 in UTC, which
/// also sorts as text in time order (to the second).
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && digits(5..7) && digits(8..10) && digits(11..13))
        || !(digits(14..16) && digits(17..19))
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    matches!(rest, "Z" | "z" | "+00:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_are_recognised() {
        for ok in [
            "2026-11-29T03:54:53Z",
            "2026-11-29T03:54:53.123456789Z",
            "2026-11-29T03:54:53+00:00",
        ] {
            assert!(is_rfc3339_utc(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-11-29",
            "2026-11-29 03:54:53Z",
            "2026-11-29T03:54:53",
            "2026-11-29T03:54:53+01:00",
            "2026-11-29T03:54:53.Z",
            "2026-1-29T03:54:53Z",
            "yesterday at noon, UTC",
        ] {
            assert!(!is_rfc3339_utc(bad), "{bad}");
        }
    }

    #[test]
    fn keys_do_not_run_fields_together() {
        assert_ne!(key_of(&["ab", "c"]), key_of(&["a", "bc"]));
        assert_eq!(key_of(&["a", "b"]), key_of(&["a", "b"]));
    }

    #[test]
    fn the_calibration_measurement_does_not_split_environments() {
        let a = EnvironmentRecord {
            kvm_detail: "12 ns".into(),
            ..Default::default()
        };
        let b = EnvironmentRecord {
            kvm_detail: "13 ns".into(),
            ..Default::default()
        };
        assert_eq!(environment_key(&a), environment_key(&b));
        let c = EnvironmentRecord {
            accel: "tcg".into(),
            ..Default::default()
        };
        assert_ne!(environment_key(&a), environment_key(&c));
    }
}
