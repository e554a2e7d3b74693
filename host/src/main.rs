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
    disks: Vec<vmbench_vmm::machine::DiskConfig>,
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
    /// guest under TCG takes about 40 s).
    #[arg(long)]
    timeout_s: Option<f64>,
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
        /// (at least 64 MiB free), rounded up to 64 MiB.
        #[arg(long, value_name = "N")]
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

fn boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    let timeout_s = args
        .timeout_s
        .unwrap_or(if args.rootfs.is_some() { 300.0 } else { 60.0 });
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        anyhow::bail!("--timeout-s must be a positive number of seconds, not {timeout_s}");
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
        no_initramfs: args.no_initramfs,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        accel: match args.accel {
            Accel::Auto => AccelChoice::Auto,
            Accel::Kvm => AccelChoice::Kvm,
            Accel::Tcg => AccelChoice::Tcg,
        },
        timeout: Duration::from_secs_f64(timeout_s),
        rootfs: args.rootfs,
        keep_overlays: args.keep,
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
    /// Where `vmbench rootfs ext4|from-raw|debian` build: `--out`, or the image
    /// cache; with the agent and this build's version.
    fn image_options(
        agent: Option<PathBuf>,
        out: Option<PathBuf>,
    ) -> anyhow::Result<vmbench_rootfs::BuildOptions> {
        let agent = match agent {
            Some(path) => path,
            None => vmbench::locate::default_agent()?,
        };
        let output = match out {
            Some(path) => vmbench_rootfs::Output::Path(path),
            None => vmbench_rootfs::Output::Cache(vmbench::locate::images_dir()?),
        };
        Ok(vmbench_rootfs::BuildOptions {
            agent,
            output,
            vmbench_version: vmbench::environment::vmbench_version(),
        })
    }

    fn progress(line: &str) {
        eprintln!("vmbench: {line}");
    }

    /// The image's path on stdout, what happened on stderr.
    fn report_built(built: &vmbench_rootfs::Built, started: std::time::Instant) {
        if built.up_to_date {
            eprintln!("vmbench: {} is up to date", built.path.display());
        } else {
            eprintln!(
                "vmbench: built {} ({} MiB, sha256 {}) in {:.1} s",
                built.path.display(),
                built.info.size_bytes >> 20,
                &built.info.sha256[..16],
                started.elapsed().as_secs_f64()
            );
        }
        println!("{}", built.path.display());
    }

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
        RootfsCommand::Ext4 {
            from,
            out,
            agent,
            size_mib,
        } => {
            let options = image_options(agent, out)?;
            let started = std::time::Instant::now();
            let built =
                vmbench_rootfs::build_plain_image(&from, size_mib, &options, &mut progress)?;
            report_built(&built, started);
            Ok(ExitCode::SUCCESS)
        }
        RootfsCommand::FromRaw { from, out, agent } => {
            let options = image_options(agent, out)?;
            let started = std::time::Instant::now();
            let source = vmbench_rootfs::RawSource::detect(&from)?;
            let built = vmbench_rootfs::build_systemd_image(&source, &options, &mut progress)?;
            report_built(&built, started);
            Ok(ExitCode::SUCCESS)
        }
        RootfsCommand::Debian {
            out,
            suite,
            mirror,
            agent,
        } => {
            let options = image_options(agent, out)?;
            let debian = vmbench_rootfs::Debian {
                suite,
                mirror: mirror.unwrap_or_else(vmbench_rootfs::default_mirror),
            };
            let started = std::time::Instant::now();
            let built = vmbench_rootfs::build_debian_image(&debian, &options, &mut progress)?;
            report_built(&built, started);
            Ok(ExitCode::SUCCESS)
        }
        RootfsCommand::Overlay { base, out } => {
            let started = std::time::Instant::now();
            let overlay =
                vmbench_rootfs::create_overlay(&base, &out, vmbench_rootfs::Durability::Synced)?;
            eprintln!(
                "vmbench: overlay over {} ({}, {} MiB) in {:.2} ms",
                overlay.base.display(),
                overlay.base_format.as_str(),
                overlay.virtual_size_bytes >> 20,
                started.elapsed().as_secs_f64() * 1e3
            );
            println!("{}", overlay.path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn vmm(args: VmmArgs) -> anyhow::Result<ExitCode> {
    use vmbench_vmm::machine::{EntryChoice, MachineConfig};
    let config = MachineConfig {
        vsock: args
            .vsock_cid
            .map(|cid| vmbench_vmm::command::vsock_in_dir(&args.dir, cid)),
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
        disks: args.disks,
    };
    let ended = vmbench_vmm::command::run(&config)?;
    match ended.message() {
        (line, true) => eprintln!("{line}"),
        (line, false) => println!("{line}"),
    }
    Ok(ExitCode::from(ended.exit_code()))
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
