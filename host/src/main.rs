//! The `vmbench` command line: parses arguments, builds a config, runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use vmbench::boot::{self, AccelChoice, BackendChoice, BootConfig};
use vmbench::{doctor, report};

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
    /// Say what this host can run, and how to fix what is missing.
    Doctor,
    /// Build guest images.
    #[command(subcommand)]
    Rootfs(RootfsCommand),
    /// Run one VM in the foreground with vmbench's own VMM (needs /dev/kvm).
    Vmm(VmmArgs),
}

#[derive(clap::Args)]
struct VmmArgs {
    /// Guest kernel: ELF vmlinux or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs to load at the top of guest RAM.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0 panic=-1 reboot=t")]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u32,
    /// vCPUs (an MP table describes them; application processors wait for the kernel's INIT/SIPI).
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// The VM's directory: serial.log, vmm.json and the vsock sockets go here.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Kernel entry: PVH when the kernel has the note (auto), or force one.
    #[arg(long, value_enum, default_value_t = EntryArg::Auto)]
    entry: EntryArg,
    /// Give the guest a virtio-vsock device with this CID: its connections to
    /// host port P arrive on `<dir>/vsock.sock_P`; host programs reach it through
    /// `<dir>/vsock.sock` with `CONNECT <port>\n` (Firecracker's convention).
    #[arg(long)]
    vsock_cid: Option<u64>,
    /// Give the guest a virtio-blk disk (repeatable; the first is its /dev/vda,
    /// e.g. with --cmdline "... root=/dev/vda"): a raw or qcow2 image, opened
    /// read-write; `PATH,ro` makes it read-only for the guest. A qcow2 image's
    /// backing files are only ever read: the guest's writes stay in the image.
    #[arg(long = "disk", value_name = "PATH[,ro]")]
    disks: Vec<vmbench::vmm::machine::DiskConfig>,
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

#[derive(clap::Args)]
struct BootArgs {
    /// Number of VMs to boot in parallel (per backend).
    #[arg(long, default_value_t = 1)]
    vms: u32,
    /// Guest kernel (ELF vmlinux with PVH note, or bzImage). Default: the cached build of kernel-config/.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs (cpio newc, plain or gzip) with an /init. Default: built from the guest agent.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Static guest agent to put in the default initramfs. Default: the workspace's static build.
    #[arg(long, conflicts_with = "initramfs")]
    agent: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u32,
    /// vCPUs per guest.
    #[arg(long, default_value_t = 1)]
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
    /// Seconds a VM may take from start to exit before it is killed and recorded as a timeout.
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
    /// Directory for results.json and the VMs' directories. Default: vmbench-runs/<UTC time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra words for the guest kernel command line (repeatable), e.g. --append initcall_debug.
    #[arg(long)]
    append: Vec<String>,
    /// vsock port the guests report to.
    #[arg(long, default_value_t = vmbench_proto::DEFAULT_PORT)]
    port: u32,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Print results.json to stdout instead of the tables.
    #[arg(long)]
    json: bool,
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
}

fn boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
        anyhow::bail!(
            "--timeout-s must be a positive number of seconds, not {}",
            args.timeout_s
        );
    }
    let config = BootConfig {
        vms: args.vms,
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
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        accel: match args.accel {
            Accel::Auto => AccelChoice::Auto,
            Accel::Kvm => AccelChoice::Kvm,
            Accel::Tcg => AccelChoice::Tcg,
        },
        timeout: Duration::from_secs_f64(args.timeout_s),
        out: args.out,
        append: args.append,
        port: args.port,
        progress: !args.quiet,
    };
    let outcome = boot::run(&config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.results)?);
    } else {
        print!("{}", report::table::boot_report(&outcome.results));
        if args.exits {
            print!("{}", report::table::exits_report(&outcome.results));
        }
        println!("results: {}", outcome.results_path.display());
    }
    Ok(if outcome.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn rootfs(command: RootfsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RootfsCommand::Initramfs {
            agent,
            out,
            add,
            no_gzip,
        } => {
            let agent = match agent {
                Some(path) => path,
                None => vmbench::locate::default_agent()?,
            };
            let mut image = vmbench_rootfs::agent_initramfs(&agent)?;
            for spec in &add {
                let (host, guest) = spec.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("--add {spec}: expected HOST_PATH:GUEST_PATH")
                })?;
                let mode = std::fs::metadata(host)
                    .map_err(|e| anyhow::anyhow!("--add {spec}: cannot read {host}: {e}"))?;
                image.add_file_from(
                    guest,
                    std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
                    host.as_ref(),
                )?;
            }
            let compression = if no_gzip {
                vmbench_rootfs::Compression::None
            } else {
                vmbench_rootfs::Compression::Gzip
            };
            image.write(&out, compression)?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn vmm(args: VmmArgs) -> anyhow::Result<ExitCode> {
    use vmbench::vmm::exits::Kind;
    use vmbench::vmm::machine::{End, EntryChoice, Machine, MachineConfig, VsockConfig};
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| anyhow::anyhow!("Cannot create --dir {}: {e}", args.dir.display()))?;
    let vsock = args.vsock_cid.map(|guest_cid| VsockConfig {
        guest_cid,
        uds_base: args.dir.join(vmbench::backend::VSOCK_UDS_BASE),
    });
    let config = MachineConfig {
        kernel: args.kernel,
        initramfs: args.initramfs,
        cmdline: args.cmdline,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        dir: args.dir,
        entry: match args.entry {
            EntryArg::Auto => EntryChoice::Auto,
            EntryArg::Pvh => EntryChoice::Pvh,
            EntryArg::Linux64 => EntryChoice::Linux64,
        },
        vsock,
        disks: args.disks,
    };
    let report = Machine::new(&config)?.run();
    let count = |kind| {
        report
            .vcpus
            .iter()
            .map(|v| v.exits.count(kind))
            .sum::<u64>()
    };
    let summary = format!(
        "userspace exits: {} io out, {} io in, {} mmio write, {} mmio read; report: {}",
        count(Kind::IoOut),
        count(Kind::IoIn),
        count(Kind::MmioWrite),
        count(Kind::MmioRead),
        config.dir.join("vmm.json").display()
    );
    let said = report
        .guest_said
        .as_ref()
        .map(|s| format!(" after the kernel said \"{s}\""))
        .unwrap_or_default();
    Ok(match report.end {
        End::Reset => {
            println!("vmm: the guest reset the machine{said}; {summary}");
            ExitCode::SUCCESS
        }
        End::TripleFault => {
            println!(
                "vmm: the guest triple-faulted (how it reboots with reboot=t){said}; {summary}"
            );
            ExitCode::SUCCESS
        }
        End::Failed { detail } => {
            eprintln!("vmbench: error: the VM failed: {detail}");
            ExitCode::FAILURE
        }
        End::Stopped { signal } => {
            eprintln!("vmbench: the VM was stopped by signal {signal}; {summary}");
            ExitCode::from(3)
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Boot(args) => boot(args),
        Command::Doctor => {
            let report = doctor::run();
            print!("{}", report.render());
            Ok(if report.can_boot() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Rootfs(command) => rootfs(command),
        Command::Vmm(args) => vmm(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes, never a backtrace.
            let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
            let mut line = chain[0].clone();
            for cause in &chain[1..] {
                if !line.contains(cause.as_str()) {
                    line.push_str(": ");
                    line.push_str(cause);
                }
            }
            eprintln!("vmbench: error: {line}");
            ExitCode::from(2)
        }
    }
}
