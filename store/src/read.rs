//! Reading runs back: listings ([`runs`]), a whole run ([`run`]) and an
//! attachment's contents ([`attachment`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::attachment;
use crate::driver::{Param, Tx};
use crate::error::{DatabaseError, Error, Fail};
use crate::record::{
    AttachmentRecord, Direction, EnvironmentRecord, InputRecord, MetricDef, RunQuery, RunRecord,
    RunSummary, SampleRecord, VariantRecord,
};

/// The runs `query` selects, newest first.
pub(crate) fn runs(tx: &mut dyn Tx, query: &RunQuery) -> Result<Vec<RunSummary>, DatabaseError> {
    let mut sql = String::from(
        "SELECT r.id, r.uuid, r.started_at, r.kind, r.command, r.vmbench_version, \
         r.sample_count, e.cpu_model_name, e.accel, e.backend \
         FROM runs r JOIN environments e ON e.id = r.environment_id WHERE 1 = 1",
    );
    let mut params = Vec::new();
    if let Some(kind) = &query.kind {
        params.push(Param::Text(kind));
        let _ = write!(sql, " AND r.kind = ${}", params.len());
    }
    for (key, value) in &query.tags {
        params.extend([Param::Text(key), Param::Text(value)]);
        let n = params.len();
        let _ = write!(
            sql,
            " AND EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.id AND t.key = ${} AND t.value = ${n})",
            n - 1
        );
    }
    sql.push_str(" ORDER BY r.started_at DESC, r.id DESC");
    if let Some(last) = query.last {
        params.push(Param::Int(i64::try_from(last).unwrap_or(i64::MAX)));
        let _ = write!(sql, " LIMIT ${}", params.len());
    }
    let mut summaries = Vec::new();
    for mut row in tx.query(&sql, &params)? {
        let run_id = row.int(0)?;
        summaries.push(RunSummary {
            id: row.text(1)?,
            started_at: row.text(2)?,
            kind: row.text(3)?,
            command: row.text(4)?,
            vmbench_version: row.text(5)?,
            sample_count: u64::try_from(row.int(6)?).unwrap_or(0),
            host_cpu: row.text(7)?,
            accel: row.text(8)?,
            backend: row.text(9)?,
            tags: pairs(tx, "SELECT key, value FROM tags WHERE run_id = $1", run_id)?,
        });
    }
    Ok(summaries)
}

/// Run `uuid` whole, or `None`.
pub(crate) fn run(tx: &mut dyn Tx, uuid: &str, location: &str) -> Result<Option<RunRecord>, Fail> {
    let Some(mut row) = tx.query_opt(
        "SELECT r.id, r.started_at, r.kind, r.command, r.vmbench_version, r.kvm_detail, \
         e.cpu_vendor, e.cpu_family, e.cpu_model, e.cpu_model_name, e.microarchitecture, \
         e.logical_cpus, e.host_kernel, e.accel, e.kvm, e.backend, e.vmm_version \
         FROM runs r JOIN environments e ON e.id = r.environment_id WHERE r.uuid = $1",
        &[Param::Text(uuid)],
    )?
    else {
        return Ok(None);
    };
    let run_id = row.int(0)?;
    let started_at = row.text(1)?;
    let kind = row.text(2)?;
    let command = row.text(3)?;
    let vmbench_version = row.text(4)?;
    let environment = EnvironmentRecord {
        kvm_detail: row.text(5)?,
        cpu_vendor: row.text(6)?,
        cpu_family: row.text(7)?,
        cpu_model: row.text(8)?,
        cpu_model_name: row.text(9)?,
        microarchitecture: row.text(10)?,
        logical_cpus: narrow(row.int(11)?, "logical_cpus")?,
        host_kernel: row.text(12)?,
        accel: row.text(13)?,
        kvm: row.text(14)?,
        backend: row.text(15)?,
        vmm_version: row.text(16)?,
    };
    let tags = pairs(tx, "SELECT key, value FROM tags WHERE run_id = $1", run_id)?;
    let tool_versions = pairs(
        tx,
        "SELECT tool, version FROM tool_versions WHERE run_id = $1",
        run_id,
    )?;

    let mut variants = Vec::new();
    let mut variant_ids = Vec::new();
    for mut row in tx.query(
        "SELECT id, name, description FROM variants WHERE run_id = $1 ORDER BY position",
        &[Param::Int(run_id)],
    )? {
        variant_ids.push(row.int(0)?);
        variants.push(VariantRecord {
            name: row.text(1)?,
            description: row.text(2)?,
            inputs: Vec::new(),
        });
    }
    for (variant, id) in variants.iter_mut().zip(variant_ids) {
        for mut row in tx.query(
            "SELECT i.role, i.path, i.sha256, i.detail FROM variant_inputs vi \
             JOIN inputs i ON i.id = vi.input_id WHERE vi.variant_id = $1 ORDER BY vi.position",
            &[Param::Int(id)],
        )? {
            let role = row.text(0)?;
            let detail = row.text(3)?;
            variant.inputs.push(InputRecord {
                path: row.text(1)?,
                sha256: row.text(2)?,
                detail: serde_json::from_str(&detail).map_err(|_| {
                    damaged(location, format!("detail of input {role} of run {uuid}"))
                })?,
                role,
            });
        }
    }

    let mut metrics = Vec::new();
    for mut row in tx.query(
        "SELECT m.name, m.unit, m.clock, m.direction, m.alias_group FROM run_metrics rm \
         JOIN metrics m ON m.id = rm.metric_id WHERE rm.run_id = $1 ORDER BY rm.position",
        &[Param::Int(run_id)],
    )? {
        let name = row.text(0)?;
        let unit = row.text(1)?;
        let clock = row.text(2)?;
        let direction = row.text(3)?;
        let direction = Direction::from_name(&direction)
            .ok_or_else(|| damaged(location, format!("metric {name} (direction {direction:?})")))?;
        metrics.push(MetricDef {
            name,
            unit,
            clock,
            direction,
            alias_group: row.opt_text(4)?,
        });
    }

    let mut samples = Vec::new();
    for mut row in tx.query(
        "SELECT v.name, s.round, s.vm, m.name, s.value, s.warmup FROM samples s \
         JOIN variants v ON v.id = s.variant_id JOIN metrics m ON m.id = s.metric_id \
         WHERE s.run_id = $1 ORDER BY s.position",
        &[Param::Int(run_id)],
    )? {
        samples.push(SampleRecord {
            variant: row.text(0)?,
            round: narrow(row.int(1)?, "round")?,
            vm: narrow(row.int(2)?, "vm")?,
            metric: row.text(3)?,
            value: row.real(4)?,
            warmup: row.int(5)? != 0,
        });
    }

    let mut attachments = Vec::new();
    for mut row in tx.query(
        "SELECT v.name, ra.vm, ra.name, a.sha256, a.size_bytes, a.encoding, a.data \
         FROM run_attachments ra JOIN variants v ON v.id = ra.variant_id \
         JOIN attachments a ON a.sha256 = ra.sha256 WHERE ra.run_id = $1 ORDER BY ra.position",
        &[Param::Int(run_id)],
    )? {
        let variant = row.text(0)?;
        let vm = row.opt_int(1)?.map(|vm| narrow(vm, "vm")).transpose()?;
        let name = row.text(2)?;
        let sha256 = row.text(3)?;
        let bytes = attachment::decode(&sha256, row.int(4)?, &row.text(5)?, row.blob(6)?)
            .map_err(|what| damaged(location, what))?;
        attachments.push(AttachmentRecord {
            variant,
            vm,
            name,
            bytes,
        });
    }

    Ok(Some(RunRecord {
        id: uuid.to_string(),
        started_at,
        kind,
        command,
        vmbench_version,
        tags,
        environment,
        tool_versions,
        variants,
        metrics,
        samples,
        attachments,
    }))
}

/// The contents stored under `sha256`, or `None`.
pub(crate) fn attachment(
    tx: &mut dyn Tx,
    sha256: &str,
    location: &str,
) -> Result<Option<Vec<u8>>, Fail> {
    let Some(mut row) = tx.query_opt(
        "SELECT size_bytes, encoding, data FROM attachments WHERE sha256 = $1",
        &[Param::Text(sha256)],
    )?
    else {
        return Ok(None);
    };
    let bytes = attachment::decode(sha256, row.int(0)?, &row.text(1)?, row.blob(2)?)
        .map_err(|what| damaged(location, what))?;
    Ok(Some(bytes))
}

/// Key-value rows of one run.
fn pairs(
    tx: &mut dyn Tx,
    sql: &str,
    run_id: i64,
) -> Result<BTreeMap<String, String>, DatabaseError> {
    tx.query(sql, &[Param::Int(run_id)])?
        .into_iter()
        .map(|mut row| Ok((row.text(0)?, row.text(1)?)))
        .collect()
}

fn narrow(v: i64, column: &str) -> Result<u32, DatabaseError> {
    u32::try_from(v).map_err(|_| DatabaseError::Decode(format!("{column} {v} is out of range")))
}

fn damaged(location: &str, what: String) -> Fail {
    Fail::Store(Error::Damaged {
        location: location.to_string(),
        what,
    })
}
