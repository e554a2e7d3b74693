//! One VM from creation to its end: memory, boot structures, vCPUs, the
//! devices, and the run loops that hand each exit to them.
//!
//! # Threads
//! One thread per vCPU runs `KVM_RUN` and handles its exits (port I/O under
//! the port bus's lock, MMIO through the virtio-mmio bus); one device thread
//! ([`crate::event_loop`]) serves the virtio devices' ioeventfds and host
//! sockets and interrupts the guest through irqfds. The main thread waits
//! for the first vCPU that ends the VM (or for SIGTERM/SIGINT), then stops
//! the others: a flag each checks before `KVM_RUN`, and a real-time signal
//! that makes a `KVM_RUN` in progress return `EINTR`.
//!
//! How a VM ends is recorded, never panicked on: an i8042 reset or a triple
//! fault (how a guest without ACPI reboots or powers off) ends it cleanly; a
//! KVM internal error or failed entry ends it as a failure with the exit
//! reason, the instruction bytes KVM reported and the vCPU's registers.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmbench_image::Format;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::account::{self, Account, End, MemoryUse, VcpuAccount};
use crate::boot_tables::{gdt, mptable, paging, params, pvh};
use crate::clock::now_ns;
use crate::devices::bus::{lock, MmioBus, MmioSlot, PioBus, Request};
use crate::devices::marker::BootMarker;
use crate::devices::serial::SerialPort;
use crate::devices::virtio::block::disk::{self, Disk};
use crate::devices::virtio::block::BlockDevice;
use crate::devices::virtio::mmio::{MmioTransport, VirtioDevice};
use crate::devices::virtio::vsock::VsockDevice;
use crate::devices::virtio::Interrupt;
use crate::emulated_kvm;
use crate::event_loop::EventLoop;
use crate::exits::{ExitStats, Kind, Target};
use crate::seccomp::{self, Filters, Gate, ThreadKind};
use crate::vm_dir;
use crate::windows::Attribution;
use crate::{cpu, layout, loader};

/// The serial port's interrupt line.
const SERIAL_GSI: u32 = 4;

#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u32,
    pub vcpus: u32,
    /// The VM's directory: serial.log, vmm.json; marker.sock if a collector listens there.
    pub dir: PathBuf,
    /// How the vCPU enters the kernel.
    pub entry: EntryChoice,
    /// A virtio-vsock device, if the guest is to have one.
    pub vsock: Option<VsockConfig>,
    /// virtio-blk disks, in the order the guest finds them: the first is
    /// its `/dev/vda`. They take the first MMIO slots, before the vsock device.
    pub disks: Vec<DiskConfig>,
    /// Complete the few instructions an emulating KVM refuses
    /// ([`crate::emulated_kvm`]): a test aid for hosts whose KVM emulates
    /// guest code, off by default.
    pub emulated_kvm: bool,
    /// Confine each thread with its seccomp filter ([`crate::seccomp`]):
    /// on unless `--no-seccomp`.
    pub seccomp: bool,
    /// A test aid: a thread of this kind makes a system call no filter
    /// allows once its filter is on (`--forbidden-syscall-in`).
    pub forbidden_syscall_in: Option<ThreadKind>,
}

/// At most this many disks: each device needs an interrupt line of its own,
/// and the I/O APIC has 24 (the first virtio device gets line 5).
pub const MAX_DISKS: usize = 16;

/// A disk image for the guest: raw or qcow2 (with its backing chain, which
/// is only ever read). As an argument: `PATH[,format=raw|qcow2][,ro|,rw]`,
/// the options in any order after the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// The guest sees a read-only disk and the image is opened read-only.
    pub read_only: bool,
    /// The image's format as stated; `None` probes its first bytes, which
    /// only a read-only disk may do (see [`Error::FormatNotStated`]).
    pub format: Option<Format>,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// Options are taken from the right, each kind (access, format) once, so
    /// a path with a comma keeps it: `a,b.img` is the path `a,b.img`, and
    /// `x,ro,rw` the writable path `x,ro`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let mut path = spec;
        let (mut read_only, mut format) = (None, None);
        while let Some((head, last)) = path.rsplit_once(',') {
            match last {
                "ro" | "rw" if read_only.is_none() => read_only = Some(last == "ro"),
                "format=raw" if format.is_none() => format = Some(Format::Raw),
                "format=qcow2" if format.is_none() => format = Some(Format::Qcow2),
                _ if last.starts_with("format=") && format.is_none() => {
                    return Err(format!(
                        "{spec:?}: unknown {last}: the formats are raw and qcow2"
                    ))
                }
                _ => break,
            }
            path = head;
        }
        if path.is_empty() {
            return Err(format!("{spec:?}: expected PATH[,format=raw|qcow2][,ro]"));
        }
        Ok(DiskConfig {
            path: path.into(),
            read_only: read_only.unwrap_or(false),
            format,
        })
    }
}

impl DiskConfig {
    /// The argument that parses back to this disk: the format when stated,
    /// and the access when read-only or when the path has a comma (so that
    /// its last part is not taken for an option). A path with a comma whose
    /// end reads like `,format=…`, with no format stated, does not round-trip.
    pub fn arg(&self) -> String {
        let mut arg = self.path.display().to_string();
        let comma = arg.contains(',');
        if let Some(format) = self.format {
            arg.push_str(",format=");
            arg.push_str(format.as_str());
        }
        match (self.read_only, comma) {
            (true, _) => arg.push_str(",ro"),
            (false, true) => arg.push_str(",rw"),
            (false, false) => {}
        }
        arg
    }
}

/// Which kernel entry to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntryChoice {
    /// PVH when the kernel has the note, else the 64-bit Linux entry.
    #[default]
    Auto,
    Pvh,
    Linux64,
}

#[derive(Debug, Clone)]
pub struct VsockConfig {
    pub guest_cid: u64,
    /// Guest connections to port P go to `<uds_base>_P`; host connections come in at `<uds_base>`.
    pub uds_base: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--vcpus {0}: between 1 and {max}", max = mptable::MAX_CPUS)]
    Vcpus(u32),
    #[error("{0} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); use the 64-bit entry")]
    NoPvhEntry(PathBuf),
    #[error("Cannot set up the {what}: {source}")]
    Device {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("--mem-mib {0} is too small (at least 16)")]
    TooLittleMemory(u32),
    #[error("--disk given {0} times: at most {MAX_DISKS} disks")]
    TooManyDisks(usize),
    #[error("--disk {0}: a writable disk needs its format stated (format=raw or format=qcow2): probing the bytes the guest writes would let it forge a qcow2 header that makes the next run open any host file")]
    FormatNotStated(PathBuf),
    #[error(transparent)]
    Disk(#[from] disk::Error),
    #[error("Cannot {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("Cannot set up guest memory of {mib} MiB: {detail}")]
    Memory { mib: u32, detail: String },
    #[error("Cannot create {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] loader::Error),
    #[error(transparent)]
    Params(#[from] params::Error),
    #[error(transparent)]
    Boot(#[from] crate::boot_tables::WriteError),
    #[error(transparent)]
    Cpu(#[from] cpu::Error),
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

/// Resident pages of guest memory (mincore(2) over every region).
fn guest_resident_kib(mem: &GuestMemoryMmap) -> u64 {
    let page = 4096usize;
    let mut resident_pages = 0u64;
    for region in mem.iter() {
        let Ok(host) = mem.get_host_address(region.start_addr()) else {
            continue;
        };
        let len = region.len() as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: [host, host + len) is the region's own page-aligned mapping,
        // alive while `mem` is; `vec` has one byte per page of it.
        let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
        if rc == 0 {
            resident_pages += vec.iter().filter(|b| *b & 1 == 1).count() as u64;
        }
    }
    resident_pages * (page as u64 / 1024)
}

fn memory_use(mem: &GuestMemoryMmap) -> MemoryUse {
    // VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak
    // across fork and exec into ru_maxrss, so it would count vmbench's.
    let max_rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let guest_resident_kib = guest_resident_kib(mem);
    MemoryUse {
        max_rss_kib,
        guest_resident_kib,
        vmm_overhead_kib: max_rss_kib.saturating_sub(guest_resident_kib),
    }
}

fn guest_memory(mem_mib: u32) -> Result<GuestMemoryMmap, Error> {
    let regions: Vec<(GuestAddress, usize)> = layout::memory_regions(u64::from(mem_mib) << 20)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&regions).map_err(|e| Error::Memory {
        mib: mem_mib,
        detail: e.to_string(),
    })
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (slot, (start, len)) in layout::memory_regions(mem.last_addr().0 + 1)
        .into_iter()
        .enumerate()
    {
        let host = mem
            .get_host_address(GuestAddress(start))
            .map_err(|e| Error::Memory {
                mib: 0,
                detail: e.to_string(),
            })?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: start,
            memory_size: len,
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a mapping owned by `mem`, which the caller keeps
        // alive until the vCPUs and the VM are closed (see `Machine::run`).
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(())
}

/// A VM ready to run.
pub struct Machine {
    vcpus: Vec<VcpuFd>,
    vm: VmFd,
    mem: GuestMemoryMmap,
    shared: Arc<Shared>,
    entry: &'static str,
    dir: PathBuf,
    /// Each thread kind's seccomp filter; none with `--no-seccomp`.
    filters: Option<Filters>,
}

/// What every vCPU thread reaches.
struct Shared {
    pio: Mutex<PioBus>,
    mmio: MmioBus,
    /// Set once the VM is ending: vCPUs stop instead of re-entering the guest.
    stopping: AtomicBool,
    /// [`MachineConfig::emulated_kvm`].
    emulated_kvm: bool,
    /// [`MachineConfig::forbidden_syscall_in`].
    forbidden_syscall_in: Option<ThreadKind>,
    /// Benchmark windows: every vCPU's exit counters and statistics fds,
    /// and the windows' recorder. Taken after `pio` when both are.
    windows: Attribution,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop(signal: libc::c_int) {
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

/// The kick handler (no SA_RESTART, so KVM_RUN returns EINTR) and the
/// SIGTERM/SIGINT handlers that end the VM with its account written.
fn install_signal_handlers() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick).map_err(|e| Error::Device {
            what: "vCPU kick signal",
            source: std::io::Error::from_raw_os_error(e.errno()),
        });
        for signal in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: the handler only stores into an atomic, which is
            // async-signal-safe; the sigaction struct is fully initialised.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_stop as *const () as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    });
    result
}

impl Machine {
    /// Sets up the VM `config` describes, in boot order; nothing runs yet.
    pub fn new(config: &MachineConfig) -> Result<Machine, Error> {
        check(config)?;
        // First, so that a bad image is reported as such whatever else is wrong.
        let disks = config
            .disks
            .iter()
            .map(|d| Disk::open(&d.path, d.read_only, d.format))
            .collect::<Result<Vec<_>, _>>()?;
        install_signal_handlers()?;
        let filters = match config.seccomp {
            true => {
                seccomp::install_sigsys_handler()?;
                Some(Filters::compile()?)
            }
            false => None,
        };
        let mem = guest_memory(config.mem_mib)?;
        let (kvm, vm) = create_vm(&mem)?;
        let mmio = virtio_devices(config, disks, &vm, &mem)?;
        let entry = load_guest(config, &mem, &mmio.cmdline())?;
        let vcpus = create_vcpus(&kvm, &vm, config.vcpus, entry)?;
        let windows = Attribution::new(&vcpus);
        let pio = legacy_devices(&vm, &config.dir)?;
        Ok(Machine {
            vcpus,
            vm,
            mem,
            shared: Arc::new(Shared {
                pio: Mutex::new(pio),
                mmio,
                stopping: AtomicBool::new(false),
                emulated_kvm: config.emulated_kvm,
                forbidden_syscall_in: config.forbidden_syscall_in,
                windows,
            }),
            entry: entry.name(),
            dir: config.dir.clone(),
            filters,
        })
    }

    /// Runs until the guest resets, triple-faults or fails, or the VMM is
    /// told to stop; writes its account to `<dir>/vmm.json` and returns it.
    pub fn run(self) -> Account {
        let Machine {
            vcpus,
            vm,
            mem,
            shared,
            entry,
            dir,
            filters,
        } = self;
        // Every thread installs its filter before any goes on: the boot
        // vCPU's first KVM_RUN comes after the last filter.
        let gate = Arc::new(Gate::new(filters));
        let filtered = gate.filtered();
        let event_loop = EventLoop::spawn(
            shared.mmio.transports(),
            gate.clone(),
            shared.forbidden_syscall_in == Some(ThreadKind::Devices),
        );
        let (ended_tx, ended_rx) = mpsc::channel();
        let (threads, spawn_error) = match &event_loop {
            Ok(_) => spawn_vcpus(vcpus, &shared, &ended_tx, &gate),
            Err(e) => (
                Vec::new(),
                Some(format!("cannot start the device thread: {e}")),
            ),
        };
        drop(ended_tx);
        let started = threads.len() + usize::from(event_loop.is_ok());
        let confined = gate.open(started, spawn_error.is_none());
        if confined.is_ok() && shared.forbidden_syscall_in == Some(ThreadKind::Main) {
            seccomp::make_forbidden_call();
        }
        let (ended_by_vcpu, end) = match (spawn_error, confined) {
            (Some(detail), _) | (None, Err(detail)) => (None, End::Failed { detail }),
            (None, Ok(())) => wait_for_end(&ended_rx),
        };
        shared.stopping.store(true, Ordering::SeqCst);
        let vcpus = stop_vcpus(threads);
        if let Ok(event_loop) = event_loop {
            event_loop.stop();
        }
        let mut account = account_of(&shared, &mem, entry, (ended_by_vcpu, end), vcpus);
        account.seccomp = filtered;
        // The account is also returned; a VMM that cannot write it says so.
        if let Err(e) = account::write(&dir, &account) {
            eprintln!(
                "vmbench vmm: cannot write {}: {e}",
                account::path_in(&dir).display()
            );
        }
        // The vCPUs are closed (their threads returned); now the VM, then the memory.
        drop(vm);
        drop(mem);
        account
    }
}

/// The limits a configuration must keep, checked before anything is opened.
fn check(config: &MachineConfig) -> Result<(), Error> {
    if config.vcpus == 0 || config.vcpus > u32::from(mptable::MAX_CPUS) {
        return Err(Error::Vcpus(config.vcpus));
    }
    if config.mem_mib < 16 {
        return Err(Error::TooLittleMemory(config.mem_mib));
    }
    if config.disks.len() > MAX_DISKS {
        return Err(Error::TooManyDisks(config.disks.len()));
    }
    if let Some(disk) = config
        .disks
        .iter()
        .find(|d| !d.read_only && d.format.is_none())
    {
        return Err(Error::FormatNotStated(disk.path.clone()));
    }
    Ok(())
}

/// A KVM VM with `mem` as its memory, the in-kernel irqchip (local APICs,
/// I/O APIC and PICs) and the in-kernel PIT.
fn create_vm(mem: &GuestMemoryMmap) -> Result<(Kvm, VmFd), Error> {
    let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
    let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
    register_memory(&vm, mem)?;
    vm.create_irq_chip()
        .map_err(kvm_err("create the in-kernel irqchip"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(kvm_err("create the in-kernel PIT"))?;
    Ok((kvm, vm))
}

/// Puts the kernel, the initramfs and the command line (the user's, then
/// `devices_cmdline`) in guest memory, and the boot tables that describe
/// them; returns how the boot vCPU enters the kernel.
fn load_guest(
    config: &MachineConfig,
    mem: &GuestMemoryMmap,
    devices_cmdline: &str,
) -> Result<cpu::Entry, Error> {
    let mem_bytes = u64::from(config.mem_mib) << 20;
    let kernel = loader::load_kernel(mem, &config.kernel)?;
    let ram_top = mem_bytes.min(layout::MMIO_GAP_START);
    let initramfs = match &config.initramfs {
        Some(path) => Some(loader::load_initramfs(mem, path, kernel.end, ram_top)?),
        None => None,
    };
    let cmdline = [config.cmdline.as_str(), devices_cmdline]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let cmdline_len = loader::load_cmdline_str(mem, &cmdline)?;
    let ram = layout::ram_ranges(mem_bytes);
    let inputs = params::BootInputs {
        cmdline_addr: layout::CMDLINE_ADDR,
        cmdline_len,
        initramfs,
        setup_header: kernel.setup_header,
    };
    params::write(mem, &params::zero_page(&ram, &inputs)?)?;
    pvh::write(mem, &pvh::build(&ram, layout::CMDLINE_ADDR, initramfs))?;
    gdt::write(mem, layout::GDT_ADDR, layout::IDT_ADDR)?;
    mptable::write(mem, config.vcpus)?;
    let cr3 = paging::write(mem, layout::PML4_ADDR, layout::PDPT_ADDR, layout::PD_ADDR)?;
    match (config.entry, kernel.pvh_entry) {
        (EntryChoice::Auto | EntryChoice::Pvh, Some(rip)) => Ok(cpu::Entry::Pvh { rip }),
        (EntryChoice::Pvh, None) => Err(Error::NoPvhEntry(config.kernel.clone())),
        _ => Ok(cpu::Entry::Linux64 {
            rip: kernel.entry,
            cr3,
        }),
    }
}

/// `count` vCPUs, each with its own CPUID and wired local APIC: the first
/// at the kernel's `entry`, the others waiting for it to start them.
fn create_vcpus(kvm: &Kvm, vm: &VmFd, count: u32, entry: cpu::Entry) -> Result<Vec<VcpuFd>, Error> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read KVM's supported CPUID"))?;
    let mut vcpus = Vec::new();
    for index in 0..count {
        let vcpu = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("create a vCPU"))?;
        let mut cpuid = supported.clone();
        cpu::cpuid_for(cpuid.as_mut_slice(), index, count);
        vcpu.set_cpuid2(&cpuid)
            .map_err(kvm_err("set a vCPU's CPUID"))?;
        cpu::wire_lapic(&vcpu, u64::from(index))?;
        if index == 0 {
            cpu::enter(&vcpu, 0, entry)?;
        } else {
            cpu::setup_ap(&vcpu, u64::from(index))?;
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// The port-I/O devices: the serial port writing `<dir>/serial.log` and
/// interrupting through an irqfd, and the boot marker, forwarding to a
/// collector when one listens at `<dir>/marker.sock`.
fn legacy_devices(vm: &VmFd, dir: &Path) -> Result<PioBus, Error> {
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Kvm {
        what: "create an eventfd",
        source: e.into(),
    })?;
    vm.register_irqfd(&serial_irq, SERIAL_GSI)
        .map_err(kvm_err("connect the serial interrupt"))?;
    let log_path = dir.join(vm_dir::SERIAL_LOG);
    let log = File::create(&log_path).map_err(|source| Error::File {
        path: log_path,
        source,
    })?;
    let serial = SerialPort::new(serial_irq, Box::new(log));
    // The collector listens here when `vmbench boot` runs this VMM.
    let marker = match UnixStream::connect(dir.join(vm_dir::MARKER_SOCKET)) {
        Ok(stream) => BootMarker::with_socket(stream),
        Err(_) => BootMarker::default(),
    };
    Ok(PioBus::new(serial, marker))
}

/// One thread per vCPU, each running [`run_vcpu`]; stops at the first
/// thread that cannot start, and says why.
fn spawn_vcpus(
    vcpus: Vec<VcpuFd>,
    shared: &Arc<Shared>,
    ended: &mpsc::Sender<(u32, End)>,
    gate: &Arc<Gate>,
) -> (Vec<JoinHandle<VcpuAccount>>, Option<String>) {
    let mut threads = Vec::new();
    for (index, vcpu) in vcpus.into_iter().enumerate() {
        let shared = shared.clone();
        let ended = ended.clone();
        let gate = gate.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let go = gate.enter(ThreadKind::Vcpu);
                drop(gate);
                run_vcpu(vcpu, index as u32, &shared, &ended, go)
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                return (
                    threads,
                    Some(format!("cannot start vCPU thread {index}: {e}")),
                )
            }
        }
    }
    (threads, None)
}

/// The account of a VM that has ended (`ended`: by which vCPU, and how),
/// from what its devices and vCPUs kept.
fn account_of(
    shared: &Shared,
    mem: &GuestMemoryMmap,
    entry: &str,
    ended: (Option<u32>, End),
    vcpus: Vec<VcpuAccount>,
) -> Account {
    let (ended_by_vcpu, end) = ended;
    let vcpus_recovered: Vec<emulated_kvm::Counts> =
        vcpus.iter().map(|v| v.recovered.clone()).collect();
    let devices = shared.mmio.device_counters();
    let virtio_bad_accesses = shared.mmio.bad_accesses();
    let pio = lock(&shared.pio);
    let unclaimed_mmio = shared.mmio.unclaimed();
    let windows = shared.windows.finish();
    Account {
        schema_version: account::SCHEMA_VERSION,
        end,
        ended_by_vcpu,
        guest_said: pio.serial.last_word(),
        entry: entry.to_string(),
        first_run_ns: vcpus.first().and_then(|v| v.first_run_ns),
        end_ns: now_ns(),
        vcpus,
        devices,
        boot_markers: pio.marker.marks().to_vec(),
        boot_markers_not_kept: pio.marker.not_kept(),
        boot_markers_not_forwarded: pio.marker.not_forwarded(),
        console_marks: pio.serial.console_marks(),
        unclaimed_ports: pio.unclaimed.by_key.clone(),
        unclaimed_ports_other: pio.unclaimed.other,
        unclaimed_mmio: unclaimed_mmio.by_key,
        unclaimed_mmio_other: unclaimed_mmio.other,
        virtio_bad_accesses,
        serial_log_bytes_dropped: pio.serial.log_bytes_dropped(),
        memory: memory_use(mem),
        emulated_kvm: shared.emulated_kvm.then(|| {
            let mut all = emulated_kvm::Counts::default();
            for vcpu in &vcpus_recovered {
                all.add(vcpu);
            }
            all
        }),
        windows: windows.kept,
        windows_not_kept: windows.not_kept,
        windows_restarted: windows.restarted,
        window_ends_unmatched: windows.ends_unmatched,
        // Set by the caller, which knows whether the filters were on.
        seccomp: false,
    }
}

/// The first vCPU to end the VM, or a stop signal.
fn wait_for_end(ended: &mpsc::Receiver<(u32, End)>) -> (Option<u32>, End) {
    loop {
        match ended.recv_timeout(Duration::from_millis(50)) {
            Ok((index, end)) => return (Some(index), end),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let signal = STOP_SIGNAL.load(Ordering::SeqCst);
                if signal != 0 {
                    return (None, End::Stopped { signal });
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return (
                    None,
                    End::Failed {
                        detail: "every vCPU thread ended without saying why".into(),
                    },
                )
            }
        }
    }
}

/// Kicks every vCPU thread out of KVM_RUN until all have returned (a kick
/// that lands just before a thread enters KVM_RUN is lost, hence the repeat).
fn stop_vcpus(threads: Vec<JoinHandle<VcpuAccount>>) -> Vec<VcpuAccount> {
    while threads.iter().any(|t| !t.is_finished()) {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(kick_signal());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    threads.into_iter().filter_map(|t| t.join().ok()).collect()
}

/// Builds a device once its interrupt exists.
type MakeDevice = Box<dyn FnOnce(Interrupt) -> std::io::Result<Box<dyn VirtioDevice>>>;

/// The virtio devices `config` asks for, in their MMIO slots, with their
/// interrupts and queue notifications wired into KVM: the disks first, in
/// order (Linux probes the devices in command-line order, so the first disk
/// is `/dev/vda`), then the vsock device.
fn virtio_devices(
    config: &MachineConfig,
    disks: Vec<Disk>,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
) -> Result<MmioBus, Error> {
    let mut devices: Vec<(&'static str, MakeDevice)> = Vec::new();
    for disk in disks {
        let mem = mem.clone();
        devices.push((
            "virtio-blk device",
            Box::new(move |interrupt| {
                let device = BlockDevice::new(disk, mem, interrupt)?;
                Ok(Box::new(device) as Box<dyn VirtioDevice>)
            }),
        ));
    }
    if let Some(vsock) = &config.vsock {
        let (vsock, mem) = (vsock.clone(), mem.clone());
        devices.push((
            "vsock device",
            Box::new(move |interrupt| {
                let device = VsockDevice::new(vsock.guest_cid, &vsock.uds_base, mem, interrupt)?;
                Ok(Box::new(device) as Box<dyn VirtioDevice>)
            }),
        ));
    }
    let mut bus = MmioBus::default();
    for (index, (what, make)) in devices.drain(..).enumerate() {
        let (base, irq) = MmioBus::slot_of(index);
        let device_err = |source| Error::Device { what, source };
        let irq_fd = EventFd::new(libc::EFD_NONBLOCK).map_err(device_err)?;
        vm.register_irqfd(&irq_fd, irq)
            .map_err(kvm_err("connect a virtio interrupt"))?;
        let interrupt = Interrupt::new(irq_fd);
        let status = interrupt.status();
        let device = make(interrupt).map_err(device_err)?;
        for (queue, event) in device.queue_events().iter().enumerate() {
            vm.register_ioevent(
                event,
                &kvm_ioctls::IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET),
                queue as u32,
            )
            .map_err(kvm_err("connect a virtio queue notification"))?;
        }
        bus.slots.push(MmioSlot {
            base,
            irq,
            transport: Arc::new(Mutex::new(MmioTransport::new(device, status))),
        });
    }
    Ok(bus)
}

/// virtio-mmio's QueueNotify register.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// One vCPU's run loop; sends the reason when its exit ends the VM.
/// `go`: every thread's filter is on (else the thread ends at once).
fn run_vcpu(
    mut vcpu: VcpuFd,
    index: u32,
    shared: &Shared,
    ended: &mpsc::Sender<(u32, End)>,
    go: bool,
) -> VcpuAccount {
    let mut exits = ExitStats::default();
    let mut first_run_ns = None;
    let mut other_exits = 0u64;
    let mut recovered_counts = emulated_kvm::Counts::default();
    let mut forbidden_call = shared.forbidden_syscall_in == Some(ThreadKind::Vcpu);
    // What windows see of this vCPU's exits (the marks' own left out).
    let window_counters = shared.windows.counters(index);
    let record = |exits: &mut ExitStats, kind, target, ns| {
        exits.record(kind, target, ns);
        if let Some(counters) = window_counters {
            counters.record(kind, ns);
        }
    };
    let end = loop {
        if !go || shared.stopping.load(Ordering::SeqCst) {
            break None;
        }
        let now = now_ns();
        first_run_ns.get_or_insert(now);
        let exit = vcpu.run();
        let at = now_ns();
        // The test aid: the guest's first exit makes the handling of it do
        // what no vCPU thread does.
        if std::mem::take(&mut forbidden_call) {
            seccomp::make_forbidden_call();
        }
        // A handled exit's latency is taken just before the next KVM_RUN.
        match handle_exit(exit, shared, index, at, &mut other_exits) {
            Outcome::Handled(kind, target) => record(&mut exits, kind, target, now_ns() - at),
            Outcome::WindowMark(target) => exits.record(Kind::IoOut, target, now_ns() - at),
            Outcome::Retry => {}
            Outcome::Ends(end) => break Some(end),
            Outcome::Fails(what) => {
                break Some(End::Failed {
                    detail: failure(&vcpu, index, &what),
                })
            }
            Outcome::InternalError => {
                if shared.emulated_kvm {
                    if let Some(recovered) = complete_refused(&mut vcpu) {
                        recovered_counts.count(recovered);
                        record(&mut exits, Kind::Emulation, Target::None, now_ns() - at);
                        continue;
                    }
                }
                let what = internal_error(&mut vcpu);
                break Some(End::Failed {
                    detail: failure(&vcpu, index, &what),
                });
            }
        }
    };
    if let Some(end) = end {
        let _ = ended.send((index, end));
    }
    VcpuAccount {
        index,
        first_run_ns,
        exits: exits.sealed(),
        kvm_stats: crate::kvm_stats::read_vcpu(&vcpu).map_err(|e| e.to_string()),
        recovered: recovered_counts,
    }
}

/// What one `KVM_RUN` asks of the vCPU's run loop.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A device handled the exit: account for it as this kind, at this target.
    Handled(Kind, Target),
    /// A port write of a byte of a benchmark window's mark: accounted as
    /// any port write, but never within a window.
    WindowMark(Target),
    /// `KVM_RUN` returned without an exit (a kick's EINTR, or EAGAIN).
    Retry,
    /// The guest ended the VM.
    Ends(End),
    /// The VM cannot go on, for this reason (the caller adds the registers).
    Fails(String),
    /// KVM's internal error: its kvm_run area says what happened.
    InternalError,
}

/// Hands one `KVM_RUN` result of vCPU `vcpu` to the devices. `at`: the
/// host time of the exit, for the boot marker and windows; `other_exits`:
/// exits no device handles, so far (a guest that makes nothing but those
/// fails after a million).
fn handle_exit(
    exit: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    shared: &Shared,
    vcpu: u32,
    at: u64,
    other_exits: &mut u64,
) -> Outcome {
    match exit {
        Ok(VcpuExit::IoOut(port, data)) => {
            // Held through a window's snapshot: marks are taken in one order.
            let mut pio = lock(&shared.pio);
            match pio.write(port, data, at) {
                Request::Reset => Outcome::Ends(End::Reset),
                Request::Window(step) => {
                    shared.windows.on_step(step, vcpu, at);
                    Outcome::WindowMark(Target::Port(port))
                }
                Request::None => Outcome::Handled(Kind::IoOut, Target::Port(port)),
            }
        }
        Ok(VcpuExit::IoIn(port, data)) => {
            lock(&shared.pio).read(port, data);
            Outcome::Handled(Kind::IoIn, Target::Port(port))
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            shared.mmio.read(addr, data);
            Outcome::Handled(Kind::MmioRead, Target::Mmio(addr))
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            shared.mmio.write(addr, data);
            Outcome::Handled(Kind::MmioWrite, Target::Mmio(addr))
        }
        Ok(VcpuExit::Shutdown) => Outcome::Ends(End::TripleFault),
        Ok(VcpuExit::InternalError) => Outcome::InternalError,
        Ok(VcpuExit::FailEntry(reason, cpu)) => Outcome::Fails(format!(
            "KVM could not enter the guest (hardware reason {reason:#x}, CPU {cpu})"
        )),
        Ok(other) => {
            *other_exits += 1;
            if *other_exits > MAX_OTHER_EXITS {
                return Outcome::Fails(format!("unhandled exits, last {other:?}"));
            }
            Outcome::Handled(Kind::Other, Target::None)
        }
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Outcome::Retry,
        Err(e) => Outcome::Fails(format!("KVM_RUN failed: {e}")),
    }
}

/// Exits no device handles that a vCPU may make before its VM fails.
const MAX_OTHER_EXITS: u64 = 1_000_000;

/// The instruction KVM's emulator refused, completed by the VMM if it is
/// one [`emulated_kvm`] knows: its kind, or `None` (the VM then fails as
/// without the fallback).
fn complete_refused(vcpu: &mut VcpuFd) -> Option<emulated_kvm::Recovered> {
    let run = vcpu.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which KVM fills
    // the `emulation_failure` view of the union; plain integers and bytes.
    let failure = unsafe { run.__bindgen_anon_1.emulation_failure };
    // SAFETY: as above.
    let insn = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
    let has_bytes = failure.suberror == 1 && failure.ndata >= 3 && failure.flags & 1 == 1;
    if !has_bytes {
        return None;
    }
    let bytes = &insn.insn_bytes[..usize::from(insn.insn_size).min(insn.insn_bytes.len())];
    let regs = vcpu.get_regs().ok()?;
    let long_mode = vcpu.get_sregs().ok()?.cs.l == 1;
    let completion = emulated_kvm::complete(bytes, &regs, long_mode)?;
    vcpu.set_regs(&completion.regs).ok()?;
    if let Some(vector) = completion.inject {
        let mut events = vcpu.get_vcpu_events().ok()?;
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        vcpu.set_vcpu_events(&events).ok()?;
    }
    Some(completion.recovered)
}

/// KVM's account of an internal error, from the vCPU's kvm_run area.
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which KVM fills
    // the `emulation_failure` view of the union (a superset of `internal`'s
    // header); both are plain integers, valid for any bit pattern.
    let failure = unsafe { run.__bindgen_anon_1.emulation_failure };
    // SAFETY: as above; the instruction bytes are plain bytes.
    let insn = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
    let bytes = &insn.insn_bytes[..usize::from(insn.insn_size).min(insn.insn_bytes.len())];
    describe_internal_error(failure.suberror, failure.ndata, failure.flags, bytes)
}

/// One readable paragraph: what happened on which vCPU, the instruction
/// bytes KVM reported (if any) and the registers.
fn failure(vcpu: &VcpuFd, index: u32, what: &str) -> String {
    let mut text = format!("vCPU {index}: {what}");
    if let Ok(r) = vcpu.get_regs() {
        text.push_str(&format!(
            "; rip={:#x} rsp={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rflags={:#x}",
            r.rip, r.rsp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rflags
        ));
    }
    if let Ok(s) = vcpu.get_sregs() {
        text.push_str(&format!(
            "; cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
            s.cr0, s.cr3, s.cr4, s.efer, s.cs.selector
        ));
    }
    text
}

/// "KVM internal error, suberror 1 (emulation failure); instruction bytes: 0f ae 2f".
pub fn describe_internal_error(suberror: u32, ndata: u32, flags: u64, insn: &[u8]) -> String {
    let kind = match suberror {
        1 => "emulation failure: KVM could not emulate an instruction",
        2 => "simultaneous exceptions",
        3 => "failure delivering an event",
        4 => "unexpected exit reason",
        _ => "unknown suberror",
    };
    let mut text = format!("KVM internal error, suberror {suberror} ({kind})");
    // The bytes are there when KVM says so: emulation failure, flag bit 0, and
    // enough data words (flags + 2 words of bytes) reported.
    let has_bytes = suberror == 1 && ndata >= 3 && flags & 1 == 1 && !insn.is_empty();
    if has_bytes {
        let hex: Vec<String> = insn.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!("; instruction bytes: {}", hex.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_arguments_parse_and_round_trip() {
        let parse = |s: &str| s.parse::<DiskConfig>();
        let disk = |path: &str, read_only, format| DiskConfig {
            path: path.into(),
            read_only,
            format,
        };
        let (raw, qcow2) = (Some(Format::Raw), Some(Format::Qcow2));
        assert_eq!(parse("a.qcow2"), Ok(disk("a.qcow2", false, None)));
        assert_eq!(
            parse("a.qcow2,format=qcow2"),
            Ok(disk("a.qcow2", false, qcow2))
        );
        assert_eq!(parse("/x/a.raw,ro"), Ok(disk("/x/a.raw", true, None)));
        assert_eq!(
            parse("/x/a.raw,ro,format=raw"),
            Ok(disk("/x/a.raw", true, raw))
        );
        assert_eq!(
            parse("/x/a.raw,format=raw,ro"),
            Ok(disk("/x/a.raw", true, raw))
        );
        assert_eq!(parse("a,b.img"), Ok(disk("a,b.img", false, None)));
        assert_eq!(parse("a,b.img,rw"), Ok(disk("a,b.img", false, None)));
        assert_eq!(parse("x,ro,rw"), Ok(disk("x,ro", false, None)));
        assert!(parse(",ro").is_err());
        assert!(parse("").is_err());
        assert!(parse("a.img,format=vmdk")
            .unwrap_err()
            .contains("unknown format=vmdk"));
        for d in [
            disk("a.img", false, raw),
            disk("a.img", true, None),
            disk("a.img", true, qcow2),
            disk("x,ro", false, None),
            disk("x,format=raw", true, qcow2),
            disk("a,b.img", false, raw),
        ] {
            assert_eq!(parse(&d.arg()), Ok(d.clone()), "{}", d.arg());
        }
    }

    #[test]
    fn a_writable_disk_must_state_its_format() {
        let config = |disk: &str| MachineConfig {
            kernel: "k".into(),
            initramfs: None,
            cmdline: String::new(),
            mem_mib: 64,
            vcpus: 1,
            dir: ".".into(),
            entry: EntryChoice::Auto,
            vsock: None,
            disks: vec![disk.parse().unwrap()],
            emulated_kvm: false,
            seccomp: true,
            forbidden_syscall_in: None,
        };
        let err = check(&config("d.raw")).unwrap_err().to_string();
        assert!(
            err.starts_with("--disk d.raw: a writable disk needs its format stated"),
            "{err}"
        );
        assert!(check(&config("d.raw,format=raw")).is_ok());
        assert!(check(&config("d.img,ro")).is_ok(), "read-only: probed");
    }

    /// The devices a vCPU thread reaches, with the serial output kept.
    fn shared() -> (Shared, Arc<Mutex<Vec<u8>>>) {
        let (serial, out) = SerialPort::in_memory();
        let shared = Shared {
            pio: Mutex::new(PioBus::new(serial, BootMarker::default())),
            mmio: MmioBus::default(),
            stopping: AtomicBool::new(false),
            emulated_kvm: false,
            forbidden_syscall_in: None,
            windows: Attribution::new(&[] as &[File]),
        };
        (shared, out)
    }

    #[test]
    fn exits_reach_the_devices_and_say_what_the_loop_does() {
        let (shared, out) = shared();
        let handle = |exit: Result<VcpuExit<'_>, _>| handle_exit(exit, &shared, 0, 42, &mut 0);
        assert_eq!(
            handle(Ok(VcpuExit::IoOut(0x3f8, b"K"))),
            Outcome::Handled(Kind::IoOut, Target::Port(0x3f8))
        );
        assert_eq!(out.lock().unwrap().as_slice(), b"K");
        assert_eq!(
            handle(Ok(VcpuExit::IoOut(0x80, &[0x41]))),
            Outcome::Handled(Kind::IoOut, Target::Port(0x80))
        );
        let mut data = [0u8; 4];
        assert_eq!(
            handle(Ok(VcpuExit::MmioRead(0xd000_0000, &mut data))),
            Outcome::Handled(Kind::MmioRead, Target::Mmio(0xd000_0000))
        );
        assert_eq!(data, [0xff; 4], "no device there");
        assert_eq!(
            handle(Ok(VcpuExit::IoOut(0x64, &[0xfe]))),
            Outcome::Ends(End::Reset)
        );
        assert_eq!(
            handle(Ok(VcpuExit::Shutdown)),
            Outcome::Ends(End::TripleFault)
        );
        assert_eq!(handle(Ok(VcpuExit::InternalError)), Outcome::InternalError);
        assert_eq!(
            handle(Err(kvm_ioctls::Error::new(libc::EINTR))),
            Outcome::Retry
        );
        assert!(matches!(
            handle(Err(kvm_ioctls::Error::new(libc::EFAULT))),
            Outcome::Fails(what) if what.starts_with("KVM_RUN failed")
        ));
        // A window mark's bytes: port writes, never within a window.
        for byte in [0xb0, 0x01, 0x00] {
            assert_eq!(
                handle(Ok(VcpuExit::IoOut(0x80, &[byte]))),
                Outcome::WindowMark(Target::Port(0x80))
            );
        }
        let mut data = [0u8; 4];
        assert_eq!(
            handle(Ok(VcpuExit::IoIn(layout::BENCH_PORT, &mut data))),
            Outcome::Handled(Kind::IoIn, Target::Port(layout::BENCH_PORT))
        );
        assert_eq!(&data, b"nebv");
        let pio = lock(&shared.pio);
        assert_eq!(pio.marker.marks(), &[(0x41, 42)], "at the exit's time");
        assert!(pio.unclaimed.by_key.is_empty(), "{:?}", pio.unclaimed);
        assert_eq!(shared.mmio.unclaimed().by_key.get(&0xd000_0000), Some(&1));
    }

    #[test]
    fn a_guest_of_nothing_but_unhandled_exits_fails() {
        let (shared, _) = shared();
        let mut other = MAX_OTHER_EXITS - 1;
        assert_eq!(
            handle_exit(Ok(VcpuExit::Hlt), &shared, 0, 0, &mut other),
            Outcome::Handled(Kind::Other, Target::None)
        );
        assert_eq!(
            handle_exit(Ok(VcpuExit::Hlt), &shared, 0, 0, &mut other),
            Outcome::Fails("unhandled exits, last Hlt".into())
        );
    }

    #[test]
    fn emulation_failure_names_the_instruction() {
        let text = describe_internal_error(1, 4, 1, &[0x0f, 0xae, 0x2f]);
        assert_eq!(
            text,
            "KVM internal error, suberror 1 (emulation failure: KVM could not emulate an instruction); instruction bytes: 0f ae 2f"
        );
        // Without the flag, KVM gave no bytes: none are shown.
        assert!(!describe_internal_error(1, 4, 0, &[0x0f]).contains("instruction bytes"));
        assert!(describe_internal_error(9, 0, 0, &[]).contains("unknown suberror"));
    }
}
