//! The `vmbench` command line: parses arguments, builds a config, runs it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use vmbench::error_line::one_line;
use vmbench::interrupt::{self, Stop};
use vmbench::pipeline::{self, options, AccelChoice, BackendChoice, BootConfig};
use vmbench::{doctor, record, render, rootfs_command, store_commands};

#[derive(Parser)]
#[command(name = "vmbench", version = env!("CARGO_PKG_VERSION"), about = "Measure how fast Linux VMs boot")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot N guests in parallel and report their boot timelines.
    Boot(BootArgs),
    /// Run guest benchmarks in VMs (virtbench's micro and inter-guest sets,
    /// kvm-unit-tests' vmexit set) and show what each costs in VM exits.
    Bench(BenchArgs),
    /// Boot two variants, A and B, in one run, their rounds interleaved
    /// (ABBA), and compare them: did B boot slower or faster than A?
    Ab(AbArgs),
    /// Run what an experiment file describes: variants, rounds, benchmarks,
    /// profilers, tags, the store and the verdict (examples/*.toml).
    Run(RunArgs),
    /// List the runs in the results store (newest first), or show one.
    Runs(RunsArgs),
    /// Compare two runs: each a run id (ID:A or ID:B for an A/B run), a tag
    /// query KEY=VALUE[,KEY=VALUE] (the matching runs' samples pooled), or a
    /// results.json file. Did the candidate boot slower than the baseline?
    Compare(CompareArgs),
    /// A metric's median over the stored runs, oldest first, with the
    /// change points E-divisive means finds.
    History(HistoryArgs),
    /// Every raw sample of the stored runs, as CSV on stdout.
    Export(QueryArgs),
    /// Record a results.json (a run made elsewhere or before) in the store.
    Import(ImportArgs),
    /// Draw a finished run: a Chrome trace (Perfetto, chrome://tracing), the
    /// boot-timeline chart as SVG, or one self-contained HTML page.
    Report(ReportArgs),
    /// Say what this host can run, and how to fix what is missing.
    Doctor,
    /// Build guest images.
    #[command(subcommand)]
    Rootfs(RootfsCommand),
    /// Run one VM in the foreground with vmbench's own VMM (needs /dev/kvm).
    Vmm(vmbench_vmm::cli::VmmArgs),
}

/// One variant of `vmbench ab`: the common boot options, then its own on top.
#[derive(Parser)]
#[command(name = "variant", args_override_self = true, no_binary_name = true)]
struct VariantArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[command(flatten)]
    plan: PlanArgs,
    /// Accepted among the common options, used by `ab` itself.
    #[command(flatten)]
    _verdict: VerdictArgs,
}

#[derive(clap::Args)]
struct AbArgs {
    /// The boot options both variants share (as for `vmbench boot`).
    #[command(flatten)]
    boot: BootArgs,
    /// With --suite or --bench, both variants run these benchmarks (as
    /// `vmbench bench` does) and are judged on them too.
    #[command(flatten)]
    plan: PlanArgs,
    /// Variant A's own boot options, on top of the common ones, e.g.
    /// --a '--kernel old/vmlinux' (a shell-quoted string).
    #[arg(
        long = "a",
        value_name = "OPTIONS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    a: String,
    /// Variant B's own boot options, e.g. --b '--kernel new/vmlinux'.
    #[arg(
        long = "b",
        value_name = "OPTIONS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    b: String,
    #[command(flatten)]
    verdict: VerdictArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The experiment file (TOML).
    file: PathBuf,
    /// Only check the file and say what it would run.
    #[arg(long)]
    check: bool,
}

/// Which stored runs.
#[derive(clap::Args, Clone)]
struct QueryArgs {
    /// Only runs with this tag, KEY=VALUE (repeatable: all must match).
    #[arg(long = "where", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Only the last N runs (at least 1).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    last: Option<usize>,
    /// Only runs of this kind: boot, ab, bench, import.
    #[arg(long, value_parser = ["boot", "ab", "bench", "import"])]
    kind: Option<String>,
    /// The results store (default as for `vmbench boot`).
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
}

#[derive(clap::Args)]
struct RunsArgs {
    #[command(subcommand)]
    show: Option<RunsCommand>,
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// How a run was made, and its metrics.
    Show {
        /// The run's id (its first characters are enough).
        id: String,
    },
}

#[derive(clap::Args)]
struct CompareArgs {
    /// The baseline (A).
    baseline: String,
    /// The candidate (B).
    candidate: String,
    #[command(flatten)]
    verdict: VerdictArgs,
    /// The results store (default as for `vmbench boot`).
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("outputs").required(true).multiple(true)))]
struct ReportArgs {
    /// The run: its directory (results.json, or an A/B run's A/ and B/), a
    /// results.json file, or a run id in the store (its first characters).
    run: String,
    /// Write the run as a Chrome trace-event JSON file.
    #[arg(long, value_name = "FILE", group = "outputs")]
    trace: Option<PathBuf>,
    /// Write the boot-timeline chart alone as a self-contained SVG file.
    #[arg(long, value_name = "FILE", group = "outputs")]
    svg: Option<PathBuf>,
    /// Write one self-contained HTML page (inline SVG and CSS, no scripts,
    /// nothing fetched): timeline, systemd units, benchmarks, A/B verdicts.
    #[arg(long, value_name = "FILE", group = "outputs")]
    html: Option<PathBuf>,
    /// The results store a run id is looked up in (default as for `vmbench boot`).
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// The metric: phase.total, phase.guest_kernel, systemd.userspace, …
    metric: String,
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The results.json to record.
    results: PathBuf,
    /// A label for the run in the store, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// The results store (default as for `vmbench boot`).
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
}

/// How `vmbench ab` and `vmbench compare` judge and say it.
#[derive(clap::Args, Clone)]
struct VerdictArgs {
    /// How the verdict table is printed.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Exit with status 4 when any metric regressed (for CI).
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// Relative change of a metric not worth acting on (a fraction, at
    /// least 0 and less than 1). Default: 0.05 for boot metrics, 0.02 for
    /// guest benchmarks (`bench.*`).
    #[arg(long, value_parser = noise_band)]
    noise: Option<f64>,
    /// Significance level of the Benjamini–Hochberg-corrected p-values
    /// (more than 0 and less than 1).
    #[arg(long, default_value_t = 0.01, value_parser = significance)]
    alpha: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Markdown,
    Json,
    Junit,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    Regression,
}

impl VerdictArgs {
    fn judge(&self) -> vmbench::compare::Judge {
        vmbench::compare::Judge {
            alpha: self.alpha,
            noise_band: self.noise,
            noise_bands: BTreeMap::new(),
        }
    }

    fn format(&self) -> render::verdicts::Format {
        use render::verdicts::Format;
        match self.format {
            OutputFormat::Table => Format::Table,
            OutputFormat::Markdown => Format::Markdown,
            OutputFormat::Json => Format::Json,
            OutputFormat::Junit => Format::Junit,
            OutputFormat::Csv => Format::Csv,
        }
    }

    /// The exit status for these verdicts: 4 when asked to fail on a
    /// regression and one is there, else `otherwise`.
    fn exit(&self, verdicts: &vmbench::compare::Verdicts, otherwise: ExitCode) -> ExitCode {
        match self.fail_on {
            Some(FailOn::Regression) if verdicts.regressed() => ExitCode::from(4),
            _ => otherwise,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EntryArg {
    Auto,
    Pvh,
    Linux64,
}

impl EntryArg {
    fn as_str(self) -> &'static str {
        match self {
            EntryArg::Auto => "auto",
            EntryArg::Pvh => "pvh",
            EntryArg::Linux64 => "linux64",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Auto,
    Kvm,
    Qemu,
}

#[derive(Clone, Copy, ValueEnum)]
enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(clap::Args, Clone)]
struct BootArgs {
    /// Number of VMs to boot in parallel (per backend, per round), 1 to 1024.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_VMS)))]
    vms: u32,
    /// Measured rounds, one after another, each booting --vms VMs per
    /// backend: every VM of every round is one sample. `--vms 1 --runs 20`
    /// samples one boot at a time, free of the contention of parallel VMs.
    /// 1 to 10000; a run boots at most 10000 VMs in all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_RUNS)))]
    runs: u32,
    /// Rounds before the measured ones, booted the same way and recorded,
    /// but left out of every statistic (caches, page cache, CPU frequency).
    /// 0 to 1000.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(options::MAX_WARMUP)))]
    warmup: u32,
    /// Guest kernel (ELF vmlinux with PVH note, or bzImage). Default: the cached build of kernel-config/.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs (cpio newc, plain or gzip) with an /init. Default: built from the guest agent.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Static guest agent to put in the default initramfs. Default: the workspace's static build.
    #[arg(long, conflicts_with = "initramfs")]
    agent: Option<PathBuf>,
    /// Guest memory in MiB, 64 to 262144.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(i64::from(options::MIN_MEM_MIB)..=i64::from(options::MAX_MEM_MIB)))]
    mem_mib: u32,
    /// vCPUs per guest, 1 to 64.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_VCPUS)))]
    vcpus: u32,
    /// What runs the guests: kvm (vmbench's own VMM), qemu, auto (kvm where
    /// `vmbench doctor` finds KVM native, else qemu), or several, comma-separated
    /// (kvm,qemu: the same guests under each, interleaved, compared side by side).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    backend: Vec<Backend>,
    /// kvm backend: the kernel entry (default: PVH when the kernel has the note).
    #[arg(long, value_enum)]
    entry: Option<EntryArg>,
    /// Print each VM's exits (kvm backend), sorted by time spent, as `perf kvm stat report` does.
    #[arg(long)]
    exits: bool,
    /// Accelerator of the qemu backend: auto uses KVM only where it runs guest code natively, else TCG.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Boot from this root disk image (raw ext4 or qcow2, e.g. from `vmbench
    /// rootfs`): each VM gets its own qcow2 overlay of it in its directory, as
    /// virtio-blk `/dev/vda`; the agent switches to it from the initramfs.
    /// The image itself is never written.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Keep each VM's overlay after the run (default: removed once measured).
    #[arg(long, requires = "rootfs")]
    keep: bool,
    /// With --rootfs: no initramfs; the kernel mounts the root disk and runs
    /// its /sbin/init (systemd, or the agent in a `vmbench rootfs ext4`
    /// image), as the distribution would boot. There is then no initrd
    /// phase, and for a systemd guest no host mark of PID 1's start.
    #[arg(long, requires = "rootfs", conflicts_with_all = ["initramfs", "agent"])]
    no_initramfs: bool,
    /// Seconds a VM may take from start to exit before it is killed and
    /// recorded as a timeout. Default: 60, or 300 with --rootfs (a systemd
    /// guest under TCG takes about 40 s). 0.001 to 86400 (a day).
    #[arg(long, value_parser = timeout_s)]
    timeout_s: Option<f64>,
    /// Directory for results.json and the VMs' directories. Default: vmbench-runs/<UTC time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra words for the guest kernel command line (repeatable), e.g. --append initcall_debug.
    #[arg(long)]
    append: Vec<String>,
    /// vsock port the guests report to, 1 to 4294967294.
    #[arg(long, default_value_t = vmbench_proto::DEFAULT_PORT, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_PORT)))]
    port: u32,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Print results.json to stdout instead of the tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum SuiteArg {
    All,
    Micro,
    Inter,
    Vmexit,
}

/// What `vmbench bench` (and `vmbench ab` with benchmarks) measures.
#[derive(clap::Args, Clone)]
struct PlanArgs {
    /// Which suite: micro (the agent in a Linux guest), inter (two Linux
    /// guests through the host's relay), vmexit (a freestanding guest at
    /// CPL0, 2 vCPUs) or all. Default: all (`vmbench ab`: none, unless
    /// --bench names some).
    #[arg(long, value_enum)]
    suite: Option<SuiteArg>,
    /// Only these benchmarks (comma-separated, or repeated).
    #[arg(long = "bench", value_name = "NAME[,NAME…]", value_delimiter = ',')]
    bench: Vec<String>,
    /// Stop sampling a benchmark once any one peak of its distribution
    /// holds 10 samples, rather than every peak (virtbench's --rough).
    #[arg(long)]
    rough: bool,
    /// Seconds each benchmark may spend calibrating and sampling (default:
    /// 10 for the agent's, 2 for the vmexit guest's); past it and a grace
    /// (90 s, the vmexit guest's 30 s), it hung its guest. 0.1 to 600.
    #[arg(long, value_name = "S", value_parser = budget_s)]
    budget_s: Option<f64>,
    /// The vmexit guest to boot. Default: the set-up step's build
    /// (target/vmexit-guest/release/vmexit-guest, or $VMBENCH_VMEXIT_GUEST).
    #[arg(long, value_name = "PATH")]
    vmexit_guest: Option<PathBuf>,
    /// Test aid: tells the agent to hang in this benchmark.
    #[arg(long, hide = true, value_name = "NAME")]
    hang_in: Option<String>,
}

impl PlanArgs {
    /// Whether any benchmark is asked for (`vmbench ab`).
    fn asked(&self) -> bool {
        self.suite.is_some() || !self.bench.is_empty()
    }

    fn plan(&self) -> anyhow::Result<vmbench::bench::plan::Plan> {
        use vmbench::bench::catalog::Suite;
        let suite = match self.suite {
            None | Some(SuiteArg::All) => None,
            Some(SuiteArg::Micro) => Some(Suite::Micro),
            Some(SuiteArg::Inter) => Some(Suite::Inter),
            Some(SuiteArg::Vmexit) => Some(Suite::Vmexit),
        };
        let mut plan = vmbench::bench::plan::Plan::choose(suite, &self.bench)?;
        plan.rough = self.rough;
        plan.budget_ms = self.budget_s.map(|seconds| (seconds * 1e3).round() as u32);
        plan.vmexit_guest.clone_from(&self.vmexit_guest);
        if let Some(name) = &self.hang_in {
            if vmbench::bench::catalog::find(name).is_none() {
                anyhow::bail!("--hang-in {name}: no such benchmark");
            }
        }
        plan.hang_in.clone_from(&self.hang_in);
        Ok(plan)
    }
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Print every benchmark, what it measures and which exit it exercises, and exit.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    plan: PlanArgs,
    /// Also print each benchmark's peaks: value and share of the samples.
    #[arg(long)]
    distribution: bool,
    /// Append every per-run value to FILE (CSV: run id, backend, vm,
    /// benchmark, unit, value, …; a header when the file is new).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// VMs booted at once per suite and backend (pairs for the inter
    /// suite), each running the suite's benchmarks: 1 to 1024.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_VMS)))]
    vms: u32,
    /// Measured rounds, each booting every suite on every backend in
    /// turn: 1 to 10000.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_RUNS)))]
    runs: u32,
    /// Rounds before the measured ones, left out of every statistic: 0 to 1000.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(options::MAX_WARMUP)))]
    warmup: u32,
    /// What runs the guests: kvm, qemu, auto, or several, comma-separated
    /// (kvm,qemu: side by side), as for `vmbench boot`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    backend: Vec<Backend>,
    /// Accelerator of the qemu backend, as for `vmbench boot`.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Guest kernel of the micro and inter suites (as for `vmbench boot`).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs of the micro and inter suites (as for `vmbench boot`).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Static guest agent for the default initramfs.
    #[arg(long, conflicts_with = "initramfs")]
    agent: Option<PathBuf>,
    /// Guest memory in MiB, 64 to 262144.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(i64::from(options::MIN_MEM_MIB)..=i64::from(options::MAX_MEM_MIB)))]
    mem_mib: u32,
    /// vCPUs of the Linux guests, 1 to 64 (the vmexit guest always has 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_VCPUS)))]
    vcpus: u32,
    /// Seconds a VM may take to boot (to Ready; the vmexit guest: to its
    /// first benchmark) before it is stopped: 0.001 to 86400. Default 60.
    #[arg(long, value_parser = timeout_s)]
    timeout_s: Option<f64>,
    /// Directory for results.json and the VMs' directories. Default: vmbench-runs/<UTC time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra words for every guest's kernel command line (repeatable).
    #[arg(long)]
    append: Vec<String>,
    /// vsock port the guests report to, 1 to 4294967293; the benchmark
    /// endpoints are on the next one.
    #[arg(long, default_value_t = vmbench_proto::DEFAULT_PORT, value_parser = clap::value_parser!(u32).range(1..=i64::from(options::MAX_PORT - 1)))]
    port: u32,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Print results.json to stdout instead of the tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `--budget-s`: seconds, within the plan's range.
fn budget_s(text: &str) -> Result<f64, String> {
    use vmbench::bench::plan::{MAX_BUDGET_MS, MIN_BUDGET_MS};
    let seconds = number(text)?;
    let (min, max) = (
        f64::from(MIN_BUDGET_MS) / 1e3,
        f64::from(MAX_BUDGET_MS) / 1e3,
    );
    if (min..=max).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("must be from {min} to {max} seconds"))
    }
}

/// Where a finished run is recorded, and how it is labelled there.
#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// The results store the run is recorded in: a SQLite file, or a
    /// postgres://… URL. Default: $VMBENCH_STORE, else
    /// $XDG_DATA_HOME/vmbench/results.db (~/.local/share/vmbench/results.db).
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
    /// Do not record the run in the results store (results.json still has it).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// A label for the run in the store, KEY=VALUE (repeatable), e.g.
    /// --tag kernel=6.1.192 --tag commit=abc123.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
}

#[derive(Subcommand)]
enum RootfsCommand {
    /// Build a deterministic initramfs with the guest agent as /init.
    Initramfs {
        /// The static guest agent. Default: the workspace's static build.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Extra file, HOST_PATH:GUEST_PATH (repeatable); mode is kept from the host file.
        #[arg(long = "add")]
        add: Vec<String>,
        /// Do not gzip the archive.
        #[arg(long)]
        no_gzip: bool,
    },
    /// Build a raw ext4 root image from a directory tree, with the guest agent.
    ///
    /// The agent goes to /usr/local/sbin/vmbench-init and /sbin/init points to
    /// it (unless the tree has its own /sbin/init). Made with mkfs.ext4 -d and
    /// debugfs: no root, no mounting, DIR is never modified. Without --out the
    /// image goes to the image cache (~/.cache/vmbench/images, or
    /// $VMBENCH_CACHE/images), named by a hash of its inputs, and is reused when
    /// up to date; a sidecar IMAGE.json says how it was made.
    Ext4 {
        /// The directory tree to put in the image.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Output image. Default: the image cache.
        #[arg(long, value_name = "IMAGE")]
        out: Option<PathBuf>,
        /// The static guest agent. Default: the workspace's static build.
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
        /// Image size in MiB. Default: the tree's size plus half as much again
        /// (at least 64 MiB free), rounded up to 64 MiB. 1 to 16777216 (16
        /// TiB, ext4's largest with 4 KiB blocks).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_IMAGE_MIB))]
        size_mib: Option<u64>,
    },
    /// "Spin from raw": a base image from a systemd distribution's ext4 image or tree.
    ///
    /// Builds a new base image from a raw ext4 image (copied, never modified)
    /// or a directory tree of a distribution that boots with systemd, with the
    /// guest agent installed as the systemd service
    /// vmbench-agent.service (enabled for multi-user.target), which reports to
    /// the host once the boot has finished. Output as for `ext4`.
    FromRaw {
        /// A raw ext4 file system image, or a directory tree.
        #[arg(long, value_name = "IMAGE|DIR")]
        from: PathBuf,
        /// Output image. Default: the image cache.
        #[arg(long, value_name = "IMAGE")]
        out: Option<PathBuf>,
        /// The static guest agent. Default: the workspace's static build.
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
    },
    /// Build a minimal Debian with systemd and the agent (debootstrap; needs root).
    ///
    /// debootstrap --variant=minbase --include=systemd,systemd-sysv,udev (needs
    /// root, takes a minute or two and downloads about 60 MB), set up for a
    /// microVM (hostname vmbench, an fstab for /dev/vda, no network settings,
    /// no apt caches), with the guest agent as a systemd service, as `from-raw`
    /// does. Output as for `ext4`; an up-to-date image is reused without
    /// running debootstrap. debootstrap's log is kept beside the image as
    /// IMAGE.debootstrap.log when it fails.
    Debian {
        /// Output image. Default: the image cache.
        #[arg(long, value_name = "IMAGE")]
        out: Option<PathBuf>,
        /// Debian suite.
        #[arg(long, default_value = vmbench_rootfs::debian::DEFAULT_SUITE)]
        suite: String,
        /// Debian mirror. Default: the one this host's apt uses
        /// (/etc/apt/sources.list.d/debian.sources), else http://deb.debian.org/debian.
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
        /// The static guest agent. Default: the workspace's static build.
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
    },
    /// Create a qcow2 overlay over a base image, for one VM to boot from.
    ///
    /// The base may be raw or qcow2 (detected); the overlay has the same
    /// virtual size and the base's absolute path as backing file. A VM's
    /// writes go to the overlay; the base is only read. Prints the time taken.
    Overlay {
        /// The base image.
        #[arg(long, value_name = "IMAGE")]
        base: PathBuf,
        /// The overlay to create.
        #[arg(long, value_name = "OVERLAY")]
        out: PathBuf,
    },
}

/// `vmbench rootfs ext4 --size-mib`'s largest: ext4's 16 TiB with 4 KiB blocks.
const MAX_IMAGE_MIB: u64 = 16 * 1024 * 1024;

/// A decimal number, as the option's value.
fn number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// `--last`: a count of runs, at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number, at least 1".into()),
    }
}

/// `--timeout-s`: seconds, within [`options::timeout_in_range`].
fn timeout_s(text: &str) -> Result<f64, String> {
    let seconds = number(text)?;
    options::timeout_in_range(seconds)
        .map(|()| seconds)
        .map_err(|range| format!("must be {range}"))
}

/// `--alpha`: a significance level, strictly between 0 and 1.
fn significance(text: &str) -> Result<f64, String> {
    let alpha = number(text)?;
    if alpha > 0.0 && alpha < 1.0 {
        Ok(alpha)
    } else {
        Err("must be more than 0 and less than 1".into())
    }
}

/// `--noise`: a relative change, at least 0 and less than 1 (100 %).
fn noise_band(text: &str) -> Result<f64, String> {
    let band = number(text)?;
    if (0.0..1.0).contains(&band) {
        Ok(band)
    } else {
        Err("must be at least 0 and less than 1".into())
    }
}

fn boot_config(args: BootArgs) -> BootConfig {
    BootConfig {
        vms: args.vms,
        runs: args.runs,
        warmup: args.warmup,
        backends: args
            .backend
            .iter()
            .map(|b| match b {
                Backend::Auto => BackendChoice::Auto,
                Backend::Kvm => BackendChoice::Kvm,
                Backend::Qemu => BackendChoice::Qemu,
            })
            .collect(),
        entry: args.entry.map(|e| e.as_str().to_string()),
        kernel: args.kernel,
        initramfs: args.initramfs,
        agent: args.agent,
        no_initramfs: args.no_initramfs,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        accel: match args.accel {
            Accel::Auto => AccelChoice::Auto,
            Accel::Kvm => AccelChoice::Kvm,
            Accel::Tcg => AccelChoice::Tcg,
        },
        timeout_s: args.timeout_s,
        rootfs: args.rootfs,
        keep_overlays: args.keep,
        out: args.out,
        append: args.append,
        port: args.port,
        progress: !args.quiet,
        bench: None,
    }
}

/// What stops a run in order: SIGINT, SIGTERM and SIGHUP, from now on.
fn stop_on_signals() -> anyhow::Result<Arc<Stop>> {
    let stop = Stop::on_signals()
        .map_err(|e| anyhow::anyhow!("Cannot set up the handling of Ctrl-C: {e}"))?;
    Ok(Arc::new(stop))
}

/// A run that did not get to its first VM: a signal stopped it (one line,
/// the signal's status) or it was refused (the usual error line).
fn not_started(error: pipeline::Error) -> anyhow::Result<ExitCode> {
    match error {
        pipeline::Error::Interrupted(signal) => {
            eprintln!("vmbench: {error}");
            Ok(ExitCode::from(interrupt::exit_status(signal)))
        }
        error => Err(error.into()),
    }
}

/// Says what an interrupted run kept; its exit status.
fn interrupted(signal: i32, runs: &[&pipeline::Outcome]) -> ExitCode {
    for outcome in runs {
        let results = &outcome.results;
        let ended = results
            .vms
            .iter()
            .filter(|v| v.status != vmbench::results::VmStatus::Interrupted)
            .count();
        eprintln!(
            "vmbench: interrupted by {}: {ended} of {} VMs ended before it; {} is final. Not stored: `vmbench import {}` stores it",
            interrupt::name(signal),
            results.vms.len(),
            outcome.results_path.display(),
            outcome.results_path.display(),
        );
    }
    ExitCode::from(interrupt::exit_status(signal))
}

fn boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    let (json, exits, store) = (args.json, args.exits, args.store.clone());
    let tags = record::parse_tags(&store.tags).map_err(anyhow::Error::msg)?;
    let config = boot_config(args);
    boot_run(&config, render::Shown { json, exits }, &store, &tags)
}

/// Runs a `vmbench boot` configuration, prints it and stores it.
fn boot_run(
    config: &BootConfig,
    shown: render::Shown,
    store: &StoreArgs,
    tags: &BTreeMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let outcome = match pipeline::run(config, stop_on_signals()?) {
        Ok(outcome) => outcome,
        Err(e) => return not_started(e),
    };
    print!("{}", render::boot_output(&outcome, shown)?);
    if let Some(signal) = outcome.interrupted {
        return Ok(interrupted(signal, &[&outcome]));
    }
    let variants = [record::Variant {
        name: "",
        description: "",
        results: &outcome.results,
    }];
    store_run(store, "boot", tags, &variants);
    Ok(if outcome.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        print!("{}", vmbench::bench::catalog::list());
        return Ok(ExitCode::SUCCESS);
    }
    let plan = args.plan.plan()?;
    let tags = record::parse_tags(&args.store.tags).map_err(anyhow::Error::msg)?;
    let config = BootConfig {
        vms: args.vms,
        runs: args.runs,
        warmup: args.warmup,
        backends: args
            .backend
            .iter()
            .map(|b| match b {
                Backend::Auto => BackendChoice::Auto,
                Backend::Kvm => BackendChoice::Kvm,
                Backend::Qemu => BackendChoice::Qemu,
            })
            .collect(),
        entry: None,
        kernel: args.kernel,
        initramfs: args.initramfs,
        agent: args.agent,
        no_initramfs: false,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        accel: match args.accel {
            Accel::Auto => AccelChoice::Auto,
            Accel::Kvm => AccelChoice::Kvm,
            Accel::Tcg => AccelChoice::Tcg,
        },
        timeout_s: args.timeout_s,
        rootfs: None,
        keep_overlays: false,
        out: args.out,
        append: args.append,
        port: args.port,
        progress: !args.quiet,
        bench: Some(plan),
    };
    let shown = render::bench::Shown {
        distribution: args.distribution,
    };
    bench_run(
        &config,
        args.json,
        shown,
        args.csv.as_deref(),
        &args.store,
        &tags,
    )
}

/// Runs a `vmbench bench` configuration, prints it and stores it.
fn bench_run(
    config: &BootConfig,
    json: bool,
    shown: render::bench::Shown,
    csv: Option<&std::path::Path>,
    store: &StoreArgs,
    tags: &BTreeMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let outcome = match pipeline::run(config, stop_on_signals()?) {
        Ok(outcome) => outcome,
        Err(e) => return not_started(e),
    };
    let run_id = vmbench_store::RunRecord::new_id();
    if json {
        println!("{}", render::json(&outcome.results)?);
    } else {
        print!("{}", render::bench::output(&outcome.results, shown));
        println!("results: {}", outcome.results_path.display());
    }
    if let Some(path) = csv {
        match vmbench::bench::csv::append(path, &run_id, &outcome.results) {
            Ok(rows) => eprintln!("vmbench: appended {rows} value(s) to {}", path.display()),
            Err(e) => eprintln!("vmbench: warning: cannot append to {}: {e}", path.display()),
        }
    }
    if let Some(signal) = outcome.interrupted {
        return Ok(interrupted(signal, &[&outcome]));
    }
    let variants = [record::Variant {
        name: "",
        description: "",
        results: &outcome.results,
    }];
    store_run_as(store, "bench", tags, &variants, Some(run_id));
    let benchmarks_ok = outcome.results.vms.iter().all(|vm| {
        vm.benchmarks
            .iter()
            .all(|b| b.status != vmbench::bench::record::Status::Failed)
    });
    Ok(if outcome.all_ok() && benchmarks_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn ab(args: AbArgs) -> anyhow::Result<ExitCode> {
    // The common options as typed (every `vmbench ab` argument but --a and
    // --b), then a variant's own: a later option overrides an earlier one.
    let common = ab_common_tokens(std::env::args().skip_while(|a| a != "ab").skip(1));
    let variant = |name: &str, options: &str| -> anyhow::Result<BootConfig> {
        let tokens = shlex::split(options)
            .ok_or_else(|| anyhow::anyhow!("--{name} {options:?}: unbalanced quotes"))?;
        let parsed =
            VariantArgs::try_parse_from(common.iter().cloned().chain(tokens)).map_err(|e| {
                let said = vmbench_vmm::cli::usage_error_line(&e.to_string());
                anyhow::anyhow!("--{name} {options:?}: {said}")
            })?;
        let plan = if parsed.plan.asked() {
            Some(parsed.plan.plan()?)
        } else {
            None
        };
        Ok(BootConfig {
            bench: plan,
            ..boot_config(parsed.boot)
        })
    };
    let config = vmbench::ab::AbConfig {
        a: variant("a", &args.a)?,
        b: variant("b", &args.b)?,
        a_description: args.a.clone(),
        b_description: args.b.clone(),
        out: args
            .boot
            .out
            .clone()
            .unwrap_or_else(pipeline::prepare::default_out_dir),
    };
    let tags = record::parse_tags(&args.boot.store.tags).map_err(anyhow::Error::msg)?;
    let gate = |verdicts: &vmbench::compare::Verdicts| {
        args.verdict.fail_on.is_some() && verdicts.regressed()
    };
    ab_run(
        &config,
        &args.boot.store,
        &tags,
        args.verdict.judge(),
        args.verdict.format(),
        &gate,
    )
}

/// Runs a `vmbench ab` configuration, prints it and its verdicts, stores
/// it; exit status 4 when `gate` says the verdicts fail the run.
fn ab_run(
    config: &vmbench::ab::AbConfig,
    store: &StoreArgs,
    tags: &BTreeMap<String, String>,
    judge: vmbench::compare::Judge,
    format: render::verdicts::Format,
    gate: &dyn Fn(&vmbench::compare::Verdicts) -> bool,
) -> anyhow::Result<ExitCode> {
    let outcome = match vmbench::ab::run(config, stop_on_signals()?) {
        Ok(outcome) => outcome,
        Err(e) => return not_started(e),
    };
    if let Some(signal) = outcome.interrupted() {
        print!("{}", render::ab_output(config, &outcome));
        eprintln!("vmbench: no verdict: the rounds were not all run");
        return Ok(interrupted(signal, &[&outcome.a, &outcome.b]));
    }
    let variants = [
        record::Variant {
            name: "A",
            description: &config.a_description,
            results: &outcome.a.results,
        },
        record::Variant {
            name: "B",
            description: &config.b_description,
            results: &outcome.b.results,
        },
    ];
    store_run(store, "ab", tags, &variants);
    let verdicts = vmbench::compare::compare(
        &vmbench::compare::Side::of_results("A", &outcome.a.results),
        &vmbench::compare::Side::of_results("B", &outcome.b.results),
        judge,
    )?;
    if format == render::verdicts::Format::Table {
        print!("{}", render::ab_output(config, &outcome));
    }
    print!("{}", render::verdicts::render(&verdicts, format));
    let all_ok = outcome.a.all_ok() && outcome.b.all_ok();
    let status = if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    Ok(if gate(&verdicts) {
        ExitCode::from(4)
    } else {
        status
    })
}

/// `vmbench run`: the experiment file's variants as `vmbench boot`,
/// `vmbench bench` or `vmbench ab` would run them, by the same functions.
fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    use vmbench::experiment::{self, Shape};
    let experiment = experiment::load(&args.file)?;
    let what = describe(&experiment);
    if args.check {
        println!("{}: {what}", args.file.display());
        return Ok(ExitCode::SUCCESS);
    }
    if !experiment.profilers.is_empty() {
        // The names are checked against issue 14's list; this build has no
        // profilers to hand them to yet.
        eprintln!(
            "vmbench: warning: profilers {} not run: this build of vmbench has no profilers yet",
            experiment.profilers.join(",")
        );
    }
    if experiment.variants[0].config.progress {
        eprintln!("vmbench: experiment {}: {what}", args.file.display());
    }
    let store = StoreArgs {
        store: experiment.store.path.clone(),
        no_store: experiment.store.disabled,
        tags: Vec::new(),
    };
    let tags = &experiment.store.tags;
    match experiment.shape() {
        Shape::Single(variant) => {
            let shown = &experiment.shown;
            if variant.config.bench.is_some() {
                let bench_shown = render::bench::Shown {
                    distribution: shown.distribution,
                };
                bench_run(
                    &variant.config,
                    shown.json,
                    bench_shown,
                    shown.csv.as_deref(),
                    &store,
                    tags,
                )
            } else {
                let boot_shown = render::Shown {
                    json: shown.json,
                    exits: shown.exits,
                };
                boot_run(&variant.config, boot_shown, &store, tags)
            }
        }
        Shape::Pairs(pairs) => {
            let verdict = &experiment.verdict;
            let gate = |verdicts: &vmbench::compare::Verdicts| verdict.gate_fails(verdicts);
            let mut worst = ExitCode::SUCCESS;
            for pair in &pairs {
                let status = ab_run(
                    pair,
                    &store,
                    tags,
                    verdict.judge.clone(),
                    verdict.format,
                    &gate,
                )?;
                if status == ExitCode::from(4) || worst == ExitCode::SUCCESS {
                    worst = status;
                }
                if status != ExitCode::SUCCESS
                    && status != ExitCode::FAILURE
                    && status != ExitCode::from(4)
                {
                    // Interrupted: the other pairs are not run.
                    return Ok(status);
                }
            }
            Ok(worst)
        }
    }
}

/// What an experiment runs, in a line.
fn describe(experiment: &vmbench::experiment::Experiment) -> String {
    let first = &experiment.variants[0].config;
    let kind = match (experiment.variants.len(), first.bench.is_some()) {
        (1, false) => "a boot run".to_string(),
        (1, true) => "a bench run".to_string(),
        (2, _) => "an A/B run".to_string(),
        (n, _) => format!("{} A/B runs, each variant against the first", n - 1),
    };
    let names: Vec<&str> = experiment
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let mut line = format!(
        "{kind}, {} VM(s) x {} round(s) + {} warm-up",
        first.vms, first.runs, first.warmup
    );
    if !names.is_empty() {
        line.push_str(&format!(", variants {}", names.join(", ")));
    }
    if let Some(plan) = &first.bench {
        line.push_str(&format!(", {} benchmark(s)", plan.benchmarks.len()));
    }
    if !experiment.profilers.is_empty() {
        line.push_str(&format!(", profilers {}", experiment.profilers.join(",")));
    }
    line.push_str(&format!(", into {}", experiment.out.display()));
    line
}

/// The store a command reads, and the runs it selects.
fn query(args: &QueryArgs) -> anyhow::Result<(vmbench_store::Location, vmbench_store::RunQuery)> {
    let location = record::location(args.store.as_deref()).ok_or_else(|| {
        anyhow::anyhow!("No results store: give --store, or set $VMBENCH_STORE or $HOME")
    })?;
    let query = vmbench_store::RunQuery {
        tags: store_commands::parse_where(&args.filters)?,
        kind: args.kind.clone(),
        last: args.last,
    };
    Ok((location, query))
}

fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let (location, query) = query(&args.query)?;
    match args.show {
        Some(RunsCommand::Show { id }) => print!("{}", store_commands::show(&location, &id)?),
        None => print!("{}", store_commands::list(&location, &query)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let location = record::location(args.store.as_deref());
    let baseline = store_commands::side(location.as_ref(), &args.baseline)?;
    let candidate = store_commands::side(location.as_ref(), &args.candidate)?;
    let verdicts = vmbench::compare::compare(&baseline, &candidate, args.verdict.judge())?;
    print!(
        "{}",
        render::verdicts::render(&verdicts, args.verdict.format())
    );
    Ok(args.verdict.exit(&verdicts, ExitCode::SUCCESS))
}

fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    use vmbench::report;
    let location = record::location(args.store.as_deref());
    let loaded = report::Report::load(&args.run, location.as_ref())?;
    if let Some(path) = &args.trace {
        let text = serde_json::to_string(&report::trace::trace(&loaded))?;
        report::write(path, &text)?;
        println!("trace: {}", path.display());
    }
    if let Some(path) = &args.svg {
        report::write(path, &report::svg::timeline(&loaded))?;
        println!("svg: {}", path.display());
    }
    if let Some(path) = &args.html {
        report::write(path, &report::html::page(&loaded))?;
        println!("html: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let (location, query) = query(&args.query)?;
    print!(
        "{}",
        store_commands::history(&location, &args.metric, &query)?
    );
    Ok(ExitCode::SUCCESS)
}

fn export(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let (location, query) = query(&args)?;
    print!("{}", store_commands::export(&location, &query)?);
    Ok(ExitCode::SUCCESS)
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let location = record::location(args.store.as_deref()).ok_or_else(|| {
        anyhow::anyhow!("No results store: give --store, or set $VMBENCH_STORE or $HOME")
    })?;
    let tags = record::parse_tags(&args.tags).map_err(anyhow::Error::msg)?;
    let id = store_commands::import(&location, &args.results, &tags)?;
    println!("{id}");
    eprintln!(
        "vmbench: stored {} as run {id} in {location}",
        args.results.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Records a finished run in the results store unless told not to; a store
/// that fails is a warning (results.json has the run), never a failed run.
fn store_run(
    args: &StoreArgs,
    kind: &str,
    tags: &BTreeMap<String, String>,
    variants: &[record::Variant<'_>],
) {
    store_run_as(args, kind, tags, variants, None);
}

/// [`store_run`], under the run id `id` when given (`vmbench bench --csv`
/// names its rows with it).
fn store_run_as(
    args: &StoreArgs,
    kind: &str,
    tags: &BTreeMap<String, String>,
    variants: &[record::Variant<'_>],
    id: Option<String>,
) {
    if args.no_store {
        return;
    }
    let Some(location) = record::location(args.store.as_deref()) else {
        eprintln!("vmbench: warning: the run was not stored: no --store, $VMBENCH_STORE or home directory");
        return;
    };
    let command = shlex::try_join(
        std::env::args()
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )
    .unwrap_or_default();
    let origin = record::Origin {
        kind,
        command: &command,
        tags,
    };
    let mut run = record::run_record(&origin, variants);
    if let Some(id) = id {
        run.id = id;
    }
    match record::save(&location, &run) {
        Ok(()) => eprintln!("vmbench: stored as run {} in {location}", run.id),
        Err(e) => eprintln!("vmbench: warning: the run was not stored: {e}"),
    }
}

/// `vmbench ab`'s arguments without `--a`/`--b` and their values.
fn ab_common_tokens(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        match arg.as_str() {
            "--a" | "--b" => skip_next = true,
            _ if arg.starts_with("--a=") || arg.starts_with("--b=") => {}
            _ => tokens.push(arg),
        }
    }
    tokens
}

fn rootfs(command: RootfsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RootfsCommand::Initramfs {
            agent,
            out,
            add,
            no_gzip,
        } => rootfs_command::initramfs(agent, &out, &add, no_gzip)?,
        RootfsCommand::Ext4 {
            from,
            out,
            agent,
            size_mib,
        } => rootfs_command::ext4(&from, out, agent, size_mib)?,
        RootfsCommand::FromRaw { from, out, agent } => rootfs_command::from_raw(&from, out, agent)?,
        RootfsCommand::Debian {
            out,
            suite,
            mirror,
            agent,
        } => rootfs_command::debian(out, suite, mirror, agent)?,
        RootfsCommand::Overlay { base, out } => rootfs_command::overlay(&base, &out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor() -> ExitCode {
    let diagnosis = doctor::run();
    print!("{}", diagnosis.render());
    if diagnosis.can_boot() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    // `vmbench vmm` becomes the VMM's own, smaller program where it is
    // installed beside this one: a VMM process then carries no more than
    // the VMM (no store, no statistics), which its memory account shows.
    vmbench_vmm::cli::exec_beside_if_vmm();
    let cli = vmbench_vmm::cli::parse_or_exit::<Cli>();
    let result = match cli.command {
        Command::Boot(args) => boot(args),
        Command::Bench(args) => bench(args),
        Command::Ab(args) => ab(args),
        Command::Run(args) => run(args),
        Command::Runs(args) => runs(args),
        Command::Compare(args) => compare(args),
        Command::History(args) => history(args),
        Command::Export(args) => export(args),
        Command::Import(args) => import(args),
        Command::Report(args) => report(args),
        Command::Doctor => Ok(doctor()),
        Command::Rootfs(command) => rootfs(command),
        Command::Vmm(args) => Ok(vmbench_vmm::cli::run(args)),
    };
    result.unwrap_or_else(|error| {
        eprintln!("vmbench: error: {}", one_line(error.as_ref()));
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a user might type as an option's value: integers of any size
    /// and sign, decimals (huge, tiny, NaN, infinities), and any text.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i128>().prop_map(|n| n.to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
            (0u32..2048).prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|x| x.to_string()),
            (-30i32..30, 0.0..10.0f64).prop_map(|(e, m)| format!("{m}e{e}")),
            Just("NaN".to_string()),
            Just("-inf".to_string()),
            Just("1e20".to_string()),
            Just("1e19".to_string()),
            "\\PC{0,12}",
        ]
    }

    const BOOT_NUMBERS: [&str; 7] = [
        "--vms",
        "--runs",
        "--warmup",
        "--mem-mib",
        "--vcpus",
        "--timeout-s",
        "--port",
    ];

    fn parse(words: &[String]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vmbench".to_string()).chain(words.iter().cloned()))
    }

    proptest! {
        /// `vmbench boot` with any values for its numbers: the parser and
        /// the options' check never panic; they give a configuration whose
        /// run has VMs, a bounded size and a timeout, or an error that
        /// names an option.
        #[test]
        fn boot_options_parse_or_are_refused(
            values in proptest::collection::vec(value(), BOOT_NUMBERS.len()),
            present in proptest::collection::vec(any::<bool>(), BOOT_NUMBERS.len()),
            two_backends in any::<bool>(),
        ) {
            let mut words = vec!["boot".to_string()];
            for ((option, value), present) in BOOT_NUMBERS.iter().zip(&values).zip(&present) {
                if *present {
                    words.push(format!("{option}={value}"));
                }
            }
            if two_backends {
                words.push("--backend=kvm,qemu".into());
            }
            let Ok(cli) = parse(&words) else {
                return Ok(());
            };
            let Command::Boot(args) = cli.command else {
                panic!("not boot: {words:?}");
            };
            let config = boot_config(args);
            match options::check_with(&config, |_| u64::MAX) {
                Ok(timeout) => {
                    let total = u64::from(config.vms)
                        * config.backends.len() as u64
                        * u64::from(config.runs + config.warmup);
                    prop_assert!((1..=options::MAX_TOTAL_VMS).contains(&total), "{words:?}");
                    prop_assert!(timeout > std::time::Duration::ZERO);
                    prop_assert!(timeout.as_secs_f64() <= options::MAX_TIMEOUT_S);
                }
                Err(e) => prop_assert!(e.to_string().contains("VMs"), "{words:?}: {e}"),
            }
        }

        /// Every option of the other commands that takes a number: parsed
        /// within its range, or refused; never a panic.
        #[test]
        fn other_numbers_parse_or_are_refused(value in value(), which in 0usize..7) {
            let words: Vec<String> = match which {
                0 => vec!["compare".into(), "a".into(), "b".into(), format!("--alpha={value}")],
                1 => vec!["compare".into(), "a".into(), "b".into(), format!("--noise={value}")],
                2 => vec!["runs".into(), format!("--last={value}")],
                3 => vec!["history".into(), "phase.total".into(), format!("--kind={value}")],
                4 => vec!["rootfs".into(), "ext4".into(), "--from=d".into(), format!("--size-mib={value}")],
                5 => vec!["vmm".into(), "--kernel=k".into(), format!("--mem-mib={value}")],
                _ => vec!["vmm".into(), "--kernel=k".into(), format!("--vsock-cid={value}"), format!("--vcpus={value}")],
            };
            match parse(&words) {
                Ok(Cli { command: Command::Compare(args), .. }) => {
                    let judge = args.verdict.judge();
                    prop_assert!(judge.alpha > 0.0 && judge.alpha < 1.0);
                    prop_assert!(judge.noise_band.is_none_or(|b| (0.0..1.0).contains(&b)));
                }
                Ok(Cli { command: Command::Runs(args), .. }) => {
                    prop_assert!(args.query.last.is_some_and(|n| n >= 1));
                }
                Ok(Cli { command: Command::Vmm(args), .. }) => {
                    prop_assert!((16..=262_144).contains(&args.mem_mib));
                    prop_assert!((1..=254).contains(&args.vcpus));
                    prop_assert!(args.vsock_cid.is_none_or(|c| (3..u64::from(u32::MAX)).contains(&c)));
                }
                Ok(_) => {}
                Err(e) => {
                    let line = vmbench_vmm::cli::usage_error_line(&e.to_string());
                    prop_assert!(!line.contains('\n') && !line.is_empty(), "{line}");
                }
            }
        }
    }

    #[test]
    fn out_of_range_values_are_refused_in_one_line() {
        for (words, expected) in [
            (vec!["boot", "--vms", "0"], "invalid value '0' for '--vms <VMS>': 0 is not in 1..=1024"),
            (vec!["boot", "--vms", "4294967296"], "invalid value '4294967296' for '--vms <VMS>': 4294967296 is not in 1..=1024"),
            (vec!["boot", "--timeout-s", "1e20"], "invalid value '1e20' for '--timeout-s <TIMEOUT_S>': must be from 0.001 to 86400 seconds"),
            (vec!["boot", "--timeout-s", "NaN"], "invalid value 'NaN' for '--timeout-s <TIMEOUT_S>': must be from 0.001 to 86400 seconds"),
            (vec!["boot", "--mem-mib", "63"], "invalid value '63' for '--mem-mib <MEM_MIB>': 63 is not in 64..=262144"),
            (vec!["compare", "a", "b", "--alpha", "1"], "invalid value '1' for '--alpha <ALPHA>': must be more than 0 and less than 1"),
            (vec!["runs", "--last", "0"], "invalid value '0' for '--last <N>': must be a whole number, at least 1"),
            (vec!["runs", "--kind", "bot"], "invalid value 'bot' for '--kind <KIND>' [possible values: boot, ab, bench, import]"),
            (vec!["bench", "--budget-s", "0.01"], "invalid value '0.01' for '--budget-s <S>': must be from 0.1 to 600 seconds"),
            (vec!["bench", "--port", "4294967294"], "invalid value '4294967294' for '--port <PORT>': 4294967294 is not in 1..=4294967293"),
            (vec!["bench", "--suite", "nano"], "invalid value 'nano' for '--suite <SUITE>' [possible values: all, micro, inter, vmexit]"),
            (vec!["bench", "--vms", "0"], "invalid value '0' for '--vms <VMS>': 0 is not in 1..=1024"),
        ] {
            let words: Vec<String> = words.into_iter().map(String::from).collect();
            let error = parse(&words).err().unwrap_or_else(|| panic!("{words:?} parsed"));
            assert_eq!(vmbench_vmm::cli::usage_error_line(&error.to_string()), expected);
        }
    }
}
