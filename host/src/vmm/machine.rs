//! One VM from creation to its end: memory, boot structures, one vCPU, the
//! legacy devices, and the run loop that hands each exit to them.
//!
//! How a VM ends is recorded, never panicked on: an i8042 reset or a triple
//! fault (how a guest without ACPI reboots or powers off) ends it cleanly; a
//! KVM internal error or failed entry ends it as a failure with the exit
//! reason, the instruction bytes KVM reported and the vCPU's registers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use serde::Serialize;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{gdt, mptable, paging, params};
use super::devices::bus::{PioBus, Request};
use super::devices::marker::BootMarker;
use super::devices::serial::SerialPort;
use super::exits::{ExitStats, Kind, Target};
use super::{cpu, layout, loader};
use crate::vm::now_ns;

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
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--vcpus {0}: this VMM runs 1 vCPU so far (SMP needs the MP table, still to come)")]
    Smp(u32),
    #[error("--mem-mib {0} is too small (at least 16)")]
    TooLittleMemory(u32),
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
    Boot(#[from] super::boot::WriteError),
    #[error(transparent)]
    Cpu(#[from] cpu::Error),
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum End {
    /// The guest reset the machine through the i8042 controller.
    Reset,
    /// A triple fault (`reboot=t`): KVM reports a shutdown.
    TripleFault,
    /// The VM could not go on; `detail` says why, with registers where KVM had them.
    Failed { detail: String },
}

/// What the VMM saw, written to `<dir>/vmm.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub end: End,
    /// CLOCK_MONOTONIC ns of the first KVM_RUN (`vmm_ready`) and of the end.
    pub first_run_ns: Option<u64>,
    pub end_ns: u64,
    pub exits: ExitStats,
    /// KVM's own statistics for the vCPU, or why they could not be read.
    pub kvm_stats: Result<BTreeMap<String, u64>, String>,
    /// Boot-marker codes with their host times.
    pub boot_markers: Vec<(u8, u64)>,
    pub unclaimed_ports: BTreeMap<u16, u64>,
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
        // alive for as long as the VM runs (Machine declares `mem` before `vm`).
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(())
}

/// A VM ready to run.
pub struct Machine {
    // Field order is drop order: the vCPU and VM go before the memory they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    _mem: GuestMemoryMmap,
    bus: PioBus,
    dir: PathBuf,
}

impl Machine {
    pub fn new(config: &MachineConfig) -> Result<Machine, Error> {
        if config.vcpus != 1 {
            return Err(Error::Smp(config.vcpus));
        }
        if config.mem_mib < 16 {
            return Err(Error::TooLittleMemory(config.mem_mib));
        }
        let mem_bytes = u64::from(config.mem_mib) << 20;
        let mem = guest_memory(config.mem_mib)?;
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        register_memory(&vm, &mem)?;
        vm.create_irq_chip()
            .map_err(kvm_err("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .map_err(kvm_err("create the in-kernel PIT"))?;

        let kernel = loader::load_kernel(&mem, &config.kernel)?;
        let ram_top = mem_bytes.min(layout::MMIO_GAP_START);
        let initramfs = match &config.initramfs {
            Some(path) => Some(loader::load_initramfs(&mem, path, kernel.end, ram_top)?),
            None => None,
        };
        let cmdline_len = loader::load_cmdline_str(&mem, &config.cmdline)?;
        let inputs = params::BootInputs {
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len,
            initramfs,
            setup_header: kernel.setup_header,
        };
        params::write(
            &mem,
            &params::zero_page(&layout::ram_ranges(mem_bytes), &inputs)?,
        )?;
        gdt::write(&mem, layout::GDT_ADDR, layout::IDT_ADDR)?;
        mptable::write(&mem, config.vcpus)?;
        let cr3 = paging::write(&mem, layout::PML4_ADDR, layout::PDPT_ADDR, layout::PD_ADDR)?;

        let vcpu = vm.create_vcpu(0).map_err(kvm_err("create vCPU 0"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("read KVM's supported CPUID"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(kvm_err("set vCPU 0's CPUID"))?;
        cpu::enter_long_mode(&vcpu, 0, kernel.entry, cr3)?;

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Kvm {
            what: "create an eventfd",
            source: e.into(),
        })?;
        vm.register_irqfd(&serial_irq, SERIAL_GSI)
            .map_err(kvm_err("connect the serial interrupt"))?;
        let log_path = config.dir.join("serial.log");
        let log = File::create(&log_path).map_err(|source| Error::File {
            path: log_path,
            source,
        })?;
        let serial = SerialPort::new(serial_irq, Box::new(log));
        // The collector listens here when `vmbench boot` runs this VMM.
        let marker = match UnixStream::connect(config.dir.join("marker.sock")) {
            Ok(stream) => BootMarker::with_sink(Box::new(stream)),
            Err(_) => BootMarker::default(),
        };
        Ok(Machine {
            vcpu,
            _vm: vm,
            _mem: mem,
            bus: PioBus::new(serial, marker),
            dir: config.dir.clone(),
        })
    }

    /// Runs until the guest resets, triple-faults or fails.
    pub fn run(mut self) -> Report {
        let mut exits = ExitStats::default();
        let mut first_run_ns = None;
        let mut other_exits = 0u64;
        let end = loop {
            let now = now_ns();
            first_run_ns.get_or_insert(now);
            let exit = self.vcpu.run();
            let at = now_ns();
            // (kind, target) of an exit handled here; its latency is taken
            // once it is handled, just before the next KVM_RUN.
            let handled = match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    if self.bus.write(port, data, at) == Request::Reset {
                        break End::Reset;
                    }
                    (Kind::IoOut, Target::Port(port))
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    self.bus.read(port, data);
                    (Kind::IoIn, Target::Port(port))
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    data.fill(0xff);
                    (Kind::MmioRead, Target::Mmio(addr))
                }
                Ok(VcpuExit::MmioWrite(addr, _)) => (Kind::MmioWrite, Target::Mmio(addr)),
                Ok(VcpuExit::Shutdown) => break End::TripleFault,
                Ok(VcpuExit::InternalError) => {
                    let what = self.internal_error();
                    break End::Failed {
                        detail: self.failure(&what),
                    };
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    break End::Failed {
                        detail: self.failure(&format!(
                            "KVM could not enter the guest (hardware reason {reason:#x}, CPU {cpu})"
                        )),
                    }
                }
                Ok(other) => {
                    other_exits += 1;
                    if other_exits > 1_000_000 {
                        let last = format!("{other:?}");
                        break End::Failed {
                            detail: self.failure(&format!("unhandled exits, last {last}")),
                        };
                    }
                    (Kind::Other, Target::None)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => {
                    break End::Failed {
                        detail: self.failure(&format!("KVM_RUN failed: {e}")),
                    }
                }
            };
            exits.record(handled.0, handled.1, now_ns() - at);
        };
        let report = Report {
            end,
            first_run_ns,
            end_ns: now_ns(),
            exits: exits.sealed(),
            kvm_stats: super::kvm_stats::read_vcpu(&self.vcpu).map_err(|e| e.to_string()),
            boot_markers: self.bus.marker.marks().to_vec(),
            unclaimed_ports: self.bus.unclaimed.clone(),
        };
        write_report(&self.dir, &report);
        report
    }

    /// KVM's account of an internal error, from the vCPU's kvm_run area.
    fn internal_error(&mut self) -> String {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which KVM fills
        // the `emulation_failure` view of the union (a superset of `internal`'s
        // header); both are plain integers, valid for any bit pattern.
        let failure = unsafe { run.__bindgen_anon_1.emulation_failure };
        // SAFETY: as above; the instruction bytes are plain bytes.
        let insn = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
        let bytes = &insn.insn_bytes[..usize::from(insn.insn_size).min(insn.insn_bytes.len())];
        describe_internal_error(failure.suberror, failure.ndata, failure.flags, bytes)
    }

    /// One readable paragraph: what happened, the instruction bytes KVM
    /// reported (if any) and the registers.
    fn failure(&self, what: &str) -> String {
        let mut text = what.to_string();
        if let Ok(r) = self.vcpu.get_regs() {
            text.push_str(&format!(
                "; rip={:#x} rsp={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rflags={:#x}",
                r.rip, r.rsp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rflags
            ));
        }
        if let Ok(s) = self.vcpu.get_sregs() {
            text.push_str(&format!(
                "; cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
                s.cr0, s.cr3, s.cr4, s.efer, s.cs.selector
            ));
        }
        text
    }
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

fn write_report(dir: &Path, report: &Report) {
    if let Ok(mut file) = File::create(dir.join("vmm.json")) {
        let _ = serde_json::to_writer_pretty(&mut file, report);
        let _ = file.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
