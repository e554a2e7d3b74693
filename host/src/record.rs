//! Runs into the results store (`vmbench-store`): where the store is, and a
//! finished run (a boot, both variants of an A/B run, an imported
//! results.json) as the store's record, raw samples included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vmbench_store::{
    AttachmentRecord, EnvironmentRecord, InputRecord, Location, MetricDef, RunRecord, SampleRecord,
    VariantRecord,
};

use crate::metrics::{self, Direction};
use crate::results::{RunResults, VmStatus};

/// The store a run goes to: `--store`, else `$VMBENCH_STORE`, else
/// `$XDG_DATA_HOME/vmbench/results.db` (`~/.local/share/vmbench/results.db`).
/// A `postgres://…` URL names a PostgreSQL database, anything else a SQLite file.
pub fn location(explicit: Option<&str>) -> Option<Location> {
    if let Some(given) = explicit
        .map(str::to_string)
        .or_else(|| std::env::var("VMBENCH_STORE").ok())
    {
        return Some(Location::parse(&given));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(Location::Sqlite(data.join("vmbench/results.db")))
}

/// Records `run` in the store at `location`; the one-line reason when it
/// could not (the caller warns and goes on: results.json has the run).
pub fn save(location: &Location, run: &RunRecord) -> Result<(), String> {
    let mut store = vmbench_store::Store::open(location).map_err(|e| e.to_string())?;
    store.record(run).map_err(|e| e.to_string())
}

/// `KEY=VALUE` tags as a map; the error names the tag without `=`.
pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>, String> {
    tags.iter()
        .map(|tag| {
            tag.split_once('=')
                .filter(|(key, _)| !key.is_empty())
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .ok_or_else(|| format!("--tag {tag:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// One variant of a run: its name (`""` for a plain boot, `A`, `B`), how
/// it differs, and its results.
pub struct Variant<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub results: &'a RunResults,
}

/// How the run was started: `boot`, `ab` or `import`, the command line,
/// and its `--tag`s.
pub struct Origin<'a> {
    pub kind: &'a str,
    pub command: &'a str,
    pub tags: &'a BTreeMap<String, String>,
}

/// A finished run as the store's record: every ok VM's metrics as samples
/// (warm-up rounds flagged), each VM's serial log and VMM account and each
/// variant's results.json as attachments.
pub fn run_record(origin: &Origin<'_>, variants: &[Variant<'_>]) -> RunRecord {
    let first = variants[0].results;
    let env = &first.environment;
    let mut metric_defs: BTreeMap<String, MetricDef> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut attachments = Vec::new();
    for variant in variants {
        for vm in &variant.results.vms {
            attach_vm_files(variant.name, vm.id, Path::new(&vm.dir), &mut attachments);
            if vm.status != VmStatus::Ok {
                continue;
            }
            for sample in metrics::samples_of(vm) {
                metric_defs
                    .entry(sample.metric.name.clone())
                    .or_insert_with(|| store_metric(&sample.metric));
                samples.push(SampleRecord {
                    variant: variant.name.to_string(),
                    round: vm.round,
                    vm: vm.id,
                    metric: sample.metric.name,
                    value: sample.value,
                    warmup: vm.warmup,
                });
            }
        }
        attach_inputs(variant.name, variant.results, &mut attachments);
        if let Ok(bytes) = serde_json::to_vec_pretty(variant.results) {
            attachments.push(AttachmentRecord {
                variant: variant.name.to_string(),
                vm: None,
                name: "results.json".into(),
                bytes,
            });
        }
    }
    RunRecord {
        id: RunRecord::new_id(),
        started_at: first.started_at.clone(),
        kind: origin.kind.to_string(),
        command: origin.command.to_string(),
        vmbench_version: env.vmbench_version.clone(),
        tags: origin.tags.clone(),
        environment: EnvironmentRecord {
            cpu_vendor: env.host_cpu_info.vendor.clone(),
            cpu_family: env.host_cpu_info.family.clone(),
            cpu_model: env.host_cpu_info.model.clone(),
            cpu_model_name: env.host_cpu_info.model_name.clone(),
            microarchitecture: microarchitecture(
                &env.host_cpu_info.vendor,
                &env.host_cpu_info.family,
                &env.host_cpu_info.model,
            )
            .to_string(),
            logical_cpus: env.host_cpu_info.logical_cpus as u32,
            host_kernel: env.host_kernel.clone(),
            accel: env.accel.clone(),
            kvm: env.kvm.clone(),
            kvm_detail: env.kvm_detail.clone(),
            backend: env.backend.clone(),
            vmm_version: env.vmm_version.clone(),
        },
        tool_versions: tool_versions(variants),
        variants: variants
            .iter()
            .map(|v| VariantRecord {
                name: v.name.to_string(),
                description: v.description.to_string(),
                inputs: inputs(v.results),
            })
            .collect(),
        metrics: metric_defs.into_values().collect(),
        samples,
        attachments,
    }
}

fn store_metric(def: &metrics::MetricDef) -> MetricDef {
    MetricDef {
        name: def.name.clone(),
        unit: def.unit.clone(),
        clock: def.clock.clone(),
        direction: match def.direction {
            Direction::LowerIsBetter => vmbench_store::Direction::LowerIsBetter,
            Direction::HigherIsBetter => vmbench_store::Direction::HigherIsBetter,
        },
        alias_group: def.alias.clone(),
    }
}

/// A VM's serial log and VMM account, where they are.
fn attach_vm_files(variant: &str, vm: u32, dir: &Path, into: &mut Vec<AttachmentRecord>) {
    for name in [
        vmbench_vmm::vm_dir::SERIAL_LOG,
        vmbench_vmm::vm_dir::ACCOUNT,
    ] {
        if let Some(bytes) = read_capped(&dir.join(name), MAX_VM_ATTACHMENT_BYTES) {
            into.push(AttachmentRecord {
                variant: variant.to_string(),
                vm: Some(vm),
                name: name.to_string(),
                bytes,
            });
        }
    }
}

/// A VM's file is stored up to this size: a guest decides how long its
/// console log is (QEMU's is not cut), and a run holds every VM's in memory
/// on its way to the store. A real boot's log is tens of KiB.
const MAX_VM_ATTACHMENT_BYTES: u64 = 1 << 20;

/// The file's first `max` bytes, with a line saying how much was left out.
fn read_capped(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes).ok()?;
    if len > max {
        let note = format!("\n[vmbench: stored the first {max} bytes of {len}]\n");
        bytes.extend_from_slice(note.as_bytes());
    }
    Some(bytes)
}

/// What a variant booted, kept with it: the kernel's config (beside a
/// kernel-config/build.sh kernel) and the root disk's `vmbench rootfs`
/// sidecar. Stored once however many runs share them.
fn attach_inputs(variant: &str, results: &RunResults, into: &mut Vec<AttachmentRecord>) {
    let env = &results.environment;
    let kernel_config = Path::new(&env.guest_kernel).with_file_name("config");
    let sidecar = env
        .rootfs
        .as_ref()
        .and_then(|r| r.chain.last())
        .map(|base| vmbench_rootfs::sidecar_path(Path::new(base)));
    for (name, path) in [
        ("kernel.config", Some(kernel_config)),
        ("image.json", sidecar),
    ] {
        if let Some(bytes) = path.and_then(|p| std::fs::read(p).ok()) {
            into.push(AttachmentRecord {
                variant: variant.to_string(),
                vm: None,
                name: name.to_string(),
                bytes,
            });
        }
    }
}

/// Each VMM and helper program, by name, with its version.
fn tool_versions(variants: &[Variant<'_>]) -> BTreeMap<String, String> {
    let mut tools = BTreeMap::new();
    for v in variants {
        let env = &v.results.environment;
        for version in env.vmm_version.split("; ").filter(|s| !s.is_empty()) {
            let tool = if version.starts_with("vmbench vmm") {
                "vmbench vmm"
            } else {
                "qemu"
            };
            tools.insert(tool.to_string(), version.to_string());
        }
        if env.vhost_device_vsock_version != "not used" {
            tools.insert(
                "vhost-device-vsock".to_string(),
                env.vhost_device_vsock_version.clone(),
            );
        }
        tools.insert("vmbench".to_string(), env.vmbench_version.clone());
    }
    tools
}

/// What a variant booted: its kernel, initramfs and root disk.
fn inputs(results: &RunResults) -> Vec<InputRecord> {
    let env = &results.environment;
    let mut inputs = vec![InputRecord {
        role: "kernel".into(),
        path: env.guest_kernel.clone(),
        sha256: env.guest_kernel_sha256.clone(),
        detail: serde_json::json!({
            "format": env.guest_kernel_format,
            "source": env.guest_kernel_source,
            "cmdline": env.kernel_cmdline,
        }),
    }];
    if env.initramfs != "none" {
        inputs.push(InputRecord {
            role: "initramfs".into(),
            path: env.initramfs.clone(),
            sha256: env.initramfs_sha256.clone(),
            detail: serde_json::Value::Null,
        });
    }
    if let Some(rootfs) = &env.rootfs {
        inputs.push(InputRecord {
            role: "rootfs".into(),
            path: rootfs.path.clone(),
            sha256: rootfs.base_sha256.clone(),
            detail: serde_json::json!({
                "format": rootfs.format,
                "chain": rootfs.chain,
                "built_by": rootfs.built_by,
            }),
        });
    }
    inputs
}

/// The microarchitecture of an x86 CPU from its vendor, family and model,
/// for the families servers and CI runners use; empty when not known.
pub fn microarchitecture(vendor: &str, family: &str, model: &str) -> &'static str {
    let (Ok(family), Ok(model)) = (family.parse::<u32>(), model.parse::<u32>()) else {
        return "";
    };
    match (vendor, family, model) {
        ("GenuineIntel", 6, 0x3f) => "Haswell",
        ("GenuineIntel", 6, 0x4f | 0x56) => "Broadwell",
        ("GenuineIntel", 6, 0x55) => "Skylake-SP/Cascade Lake",
        ("GenuineIntel", 6, 0x4e | 0x5e) => "Skylake",
        ("GenuineIntel", 6, 0x8e | 0x9e) => "Kaby Lake/Coffee Lake",
        ("GenuineIntel", 6, 0x6a | 0x6c) => "Ice Lake-SP",
        ("GenuineIntel", 6, 0x7d | 0x7e) => "Ice Lake",
        ("GenuineIntel", 6, 0x8c | 0x8d) => "Tiger Lake",
        ("GenuineIntel", 6, 0xa7) => "Rocket Lake",
        ("GenuineIntel", 6, 0x97 | 0x9a) => "Alder Lake",
        ("GenuineIntel", 6, 0xb7 | 0xba | 0xbf) => "Raptor Lake",
        ("GenuineIntel", 6, 0x8f) => "Sapphire Rapids",
        ("GenuineIntel", 6, 0xcf) => "Emerald Rapids",
        ("GenuineIntel", 6, 0xad | 0xae) => "Granite Rapids",
        ("AuthenticAMD", 0x17, 0x00..=0x2f) => "Zen/Zen+",
        ("AuthenticAMD", 0x17, _) => "Zen 2",
        ("AuthenticAMD", 0x19, 0x10..=0x1f | 0x60..=0x7f | 0xa0..=0xaf) => "Zen 4",
        ("AuthenticAMD", 0x19, _) => "Zen 3",
        ("AuthenticAMD", 0x1a, _) => "Zen 5",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_log_is_stored_cut_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, vec![b'x'; 5000]).unwrap();
        let stored = read_capped(&path, 1000).unwrap();
        assert!(stored.starts_with(&[b'x'; 1000]));
        assert_eq!(
            &stored[1000..],
            b"\n[vmbench: stored the first 1000 bytes of 5000]\n"
        );
        assert_eq!(read_capped(&path, 5000).unwrap().len(), 5000);
        assert_eq!(read_capped(&dir.path().join("none"), 10), None);
    }

    #[test]
    fn microarchitectures_of_common_cpus() {
        assert_eq!(microarchitecture("GenuineIntel", "6", "167"), "Rocket Lake");
        assert_eq!(microarchitecture("AuthenticAMD", "25", "1"), "Zen 3");
        assert_eq!(microarchitecture("AuthenticAMD", "25", "17"), "Zen 4");
        assert_eq!(microarchitecture("GenuineIntel", "6", "1"), "");
        assert_eq!(microarchitecture("", "x", "y"), "");
    }

    #[test]
    fn the_store_is_chosen_by_option_then_environment() {
        assert_eq!(
            location(Some("postgres://db/vmbench")),
            Some(Location::Postgres("postgres://db/vmbench".into()))
        );
        assert_eq!(
            location(Some("/tmp/r.db")),
            Some(Location::Sqlite("/tmp/r.db".into()))
        );
    }
}
