//! Realistic runs, made from a seed: the same seed makes the same record
//! (id included), so a test (or a child process) can make a run again to
//! compare it with what was stored.

use std::collections::BTreeMap;

use serde_json::json;
use vmbench_store::{
    AttachmentRecord, Direction, EnvironmentRecord, InputRecord, MetricDef, RunRecord,
    SampleRecord, VariantRecord,
};

/// The metrics a `vmbench boot` of a systemd guest records: name, unit,
/// clock, direction, alias group.
const METRICS: &[(&str, &str, &str, Direction, Option<&str>)] = &[
    ("phase.total", "ms", "host", Direction::LowerIsBetter, None),
    ("phase.vmm", "ms", "host", Direction::LowerIsBetter, None),
    ("phase.kernel", "ms", "host", Direction::LowerIsBetter, None),
    (
        "phase.vmm_and_kernel",
        "ms",
        "host",
        Direction::LowerIsBetter,
        None,
    ),
    ("phase.initrd", "ms", "host", Direction::LowerIsBetter, None),
    (
        "phase.userspace",
        "ms",
        "host",
        Direction::LowerIsBetter,
        Some("userspace"),
    ),
    (
        "phase.shutdown",
        "ms",
        "host",
        Direction::LowerIsBetter,
        None,
    ),
    (
        "phase.guest_kernel",
        "ms",
        "guest",
        Direction::LowerIsBetter,
        Some("kernel"),
    ),
    (
        "phase.guest_userspace",
        "ms",
        "guest",
        Direction::LowerIsBetter,
        None,
    ),
    (
        "systemd.kernel",
        "ms",
        "guest",
        Direction::LowerIsBetter,
        Some("kernel"),
    ),
    (
        "systemd.userspace",
        "ms",
        "guest",
        Direction::LowerIsBetter,
        Some("userspace"),
    ),
    (
        "overlay.create",
        "ms",
        "host",
        Direction::LowerIsBetter,
        None,
    ),
    (
        "overlay.disk_used",
        "KiB",
        "",
        Direction::LowerIsBetter,
        None,
    ),
    ("exits.total", "count", "", Direction::LowerIsBetter, None),
    ("memory.max_rss", "KiB", "", Direction::LowerIsBetter, None),
    ("boot.rate", "VMs/s", "", Direction::HigherIsBetter, None),
];

pub fn metrics() -> Vec<MetricDef> {
    METRICS
        .iter()
        .map(|(name, unit, clock, direction, group)| MetricDef {
            name: name.to_string(),
            unit: unit.to_string(),
            clock: clock.to_string(),
            direction: *direction,
            alias_group: group.map(str::to_string),
        })
        .collect()
}

/// What a run holds.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Variant names: `[""]` for a boot, `["A", "B"]` for an A/B run.
    pub variants: Vec<&'static str>,
    pub vms: u32,
    pub rounds: u32,
    /// Metrics per sample set (the first n of [`metrics`], at most 16;
    /// more are made up as `extra.<i>`).
    pub metrics: usize,
    /// Bytes of each VM's `serial.log` (none if 0), unique to the run.
    pub serial_log_bytes: usize,
    /// Only VM 0 of the first variant has a serial log.
    pub one_serial_log: bool,
    /// A `kernel.config` per variant, the same in every run of that shape,
    /// and a small `vmm.json` per VM.
    pub shared_files: bool,
}

impl Shape {
    /// An A/B run: 3 VMs × 2 rounds × 16 metrics per variant, with
    /// attachments of each kind.
    pub fn ab() -> Shape {
        Shape {
            variants: vec!["A", "B"],
            vms: 3,
            rounds: 2,
            metrics: 16,
            serial_log_bytes: 8 * 1024,
            one_serial_log: false,
            shared_files: true,
        }
    }

    /// The measured case: a boot of 10 VMs, 1 round, 16 metrics, one 100
    /// KiB serial log.
    pub fn boot_of_ten() -> Shape {
        Shape {
            variants: vec![""],
            vms: 10,
            rounds: 1,
            metrics: 16,
            serial_log_bytes: 100 * 1024,
            one_serial_log: true,
            shared_files: false,
        }
    }

    /// A small boot, for many of them.
    pub fn small() -> Shape {
        Shape {
            variants: vec![""],
            vms: 2,
            rounds: 1,
            metrics: 16,
            serial_log_bytes: 2 * 1024,
            one_serial_log: true,
            shared_files: true,
        }
    }
}

/// A small xorshift generator: runs are reproducible from their seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The run id seed `seed` makes: a version 4 UUID in canonical form.
pub fn id_of(seed: u64) -> String {
    let mut rng = Rng::new(seed ^ 0x1d);
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

pub fn environment() -> EnvironmentRecord {
    EnvironmentRecord {
        cpu_vendor: "GenuineIntel".into(),
        cpu_family: "6".into(),
        cpu_model: "106".into(),
        cpu_model_name: "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz".into(),
        microarchitecture: "Ice Lake".into(),
        logical_cpus: 2,
        host_kernel: "6.1.0-28-cloud-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1".into(),
        accel: "kvm-native".into(),
        kvm: "native".into(),
        kvm_detail: "3.1 ns per calibration loop iteration".into(),
        backend: "kvm".into(),
        vmm_version: "vmbench vmm 0.1.0".into(),
    }
}

/// A run of `shape`, reproducible from `seed`, started `seed` minutes
/// after 2026-11-01T00:00:00Z (so a larger seed is a newer run).
pub fn run(seed: u64, shape: &Shape) -> RunRecord {
    let mut rng = Rng::new(seed);
    let mut metrics = metrics();
    metrics.truncate(shape.metrics);
    for i in metrics.len()..shape.metrics {
        metrics.push(MetricDef {
            name: format!("extra.{i}"),
            unit: "count".into(),
            clock: String::new(),
            direction: Direction::LowerIsBetter,
            alias_group: None,
        });
    }
    let kind = if shape.variants.len() > 1 {
        "ab"
    } else {
        "boot"
    };
    let variants = shape
        .variants
        .iter()
        .map(|name| VariantRecord {
            name: name.to_string(),
            description: if name.is_empty() {
                String::new()
            } else {
                format!("--kernel {name}/vmlinux")
            },
            inputs: vec![
                InputRecord {
                    role: "kernel".into(),
                    path: format!("/srv/kernels/{name}/vmlinux"),
                    sha256: format!("{:064x}", name.len() + 1),
                    detail: json!({"format": "elf-pvh", "source": "linux-source-6.1 6.1.119-1"}),
                },
                InputRecord {
                    role: "initramfs".into(),
                    path: "/home/ci/.cache/vmbench/agent-initramfs.cpio".into(),
                    sha256: "ab".repeat(32),
                    detail: json!({"format": "cpio"}),
                },
                InputRecord {
                    role: "rootfs".into(),
                    path: "/srv/images/debian.qcow2".into(),
                    sha256: "cd".repeat(32),
                    detail: json!({
                        "format": "qcow2",
                        "chain": ["/srv/images/debian.qcow2", "/srv/images/debian.raw"],
                        "built_by": {"kind": "systemd", "recipe": {"name": "debian", "suite": "bookworm"}},
                    }),
                },
            ],
        })
        .collect();
    let mut samples = Vec::new();
    for variant in &shape.variants {
        for round in 0..shape.rounds {
            for vm in 0..shape.vms {
                for m in &metrics {
                    samples.push(SampleRecord {
                        variant: variant.to_string(),
                        round,
                        vm,
                        metric: m.name.clone(),
                        // Milliseconds with sub-microsecond digits.
                        value: 100.0 + 900.0 * rng.unit(),
                        warmup: shape.rounds > 1 && round == 0,
                    });
                }
            }
        }
    }
    let mut attachments = Vec::new();
    for (i, variant) in shape.variants.iter().enumerate() {
        if shape.shared_files {
            attachments.push(AttachmentRecord {
                variant: variant.to_string(),
                vm: None,
                name: "kernel.config".into(),
                bytes: format!("# kernel {variant}\nCONFIG_VIRTIO_MMIO=y\nCONFIG_VSOCKETS=y\n")
                    .repeat(200)
                    .into_bytes(),
            });
        }
        for vm in 0..shape.vms {
            if shape.serial_log_bytes > 0 && (!shape.one_serial_log || (i == 0 && vm == 0)) {
                attachments.push(AttachmentRecord {
                    variant: variant.to_string(),
                    vm: Some(vm),
                    name: "serial.log".into(),
                    bytes: serial_log(&mut rng, seed, shape.serial_log_bytes),
                });
            }
            if shape.shared_files {
                attachments.push(AttachmentRecord {
                    variant: variant.to_string(),
                    vm: Some(vm),
                    name: "vmm.json".into(),
                    bytes: format!(
                        "{{\"schema_version\": 1, \"vm\": {vm}, \"exits\": {}}}",
                        rng.next() % 5000
                    )
                    .into_bytes(),
                });
            }
        }
    }
    RunRecord {
        id: id_of(seed),
        started_at: started_at(seed),
        kind: kind.into(),
        command: format!(
            "vmbench {kind} --vms {} --rounds {}",
            shape.vms, shape.rounds
        ),
        vmbench_version: "0.1.0 (d120759)".into(),
        tags: BTreeMap::from([
            ("kernel".to_string(), "6.1.119".to_string()),
            ("seed".to_string(), seed.to_string()),
        ]),
        environment: environment(),
        tool_versions: BTreeMap::from([
            (
                "qemu".to_string(),
                "QEMU emulator version 7.2.15".to_string(),
            ),
            ("vhost-device-vsock".to_string(), "0.3.0".to_string()),
            ("vmbench vmm".to_string(), "0.1.0".to_string()),
        ]),
        variants,
        metrics,
        samples,
        attachments,
    }
}

pub fn started_at(seed: u64) -> String {
    let minutes = seed % (60 * 24 * 28);
    format!(
        "2026-11-{:02}T{:02}:{:02}:00Z",
        1 + minutes / (60 * 24),
        (minutes / 60) % 24,
        minutes % 60
    )
}

/// A kernel console log of about `bytes` bytes, with this run's timings
/// (so no two runs' logs are the same).
fn serial_log(rng: &mut Rng, seed: u64, bytes: usize) -> Vec<u8> {
    const LINES: &[&str] = &[
        "Linux version 6.1.119 (vmbench@build) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP",
        "Command line: console=ttyS0 reboot=t panic=-1 vmbench.id=0",
        "virtio-mmio: Registering device virtio-mmio.0 at 0xd0000000-0xd00001ff, IRQ 5.",
        "NET: Registered PF_VSOCK protocol family",
        "EXT4-fs (vda): mounted filesystem with ordered data mode. Quota mode: none.",
        "Run /init as init process",
        "systemd[1]: Reached target multi-user.target - Multi-User System.",
    ];
    let mut log = format!("vmbench run {seed}\n");
    let mut t = 0.0;
    while log.len() < bytes {
        t += rng.unit() * 0.01;
        let line = LINES[(rng.next() % LINES.len() as u64) as usize];
        log.push_str(&format!("[{t:12.6}] {line}\n"));
    }
    log.truncate(bytes);
    log.into_bytes()
}
