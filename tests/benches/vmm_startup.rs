//! How fast vmbench's VMM gets a VM running, beside QEMU, and what it costs:
//!
//! ```text
//! cargo bench -p vmbench-e2e --bench vmm_startup [-- --vms 20 --concurrent 32 --qemu-accel kvm|tcg --no-seccomp]
//! ```
//!
//! One tiny guest, an ELF with a PVH note whose first instruction writes the
//! boot-marker port (0x80), boots under both:
//! - our VMM as the kvm backend spawns it (`vmbench-vmm`, the VMM's own
//!   program beside `vmbench`; release build): spawn → first `KVM_RUN` (the `vmm`
//!   phase) and spawn → the marker write, both on the host's
//!   CLOCK_MONOTONIC as the VMM recorded them, and the VMM's resident memory
//!   beyond the guest memory the guest touched;
//! - `qemu-system-x86_64 -M microvm` (same memory, KVM where /dev/kvm works,
//!   else TCG): spawn → the marker byte arriving on the Unix socket behind its
//!   `isa-debugcon` (QEMU's own start, its firmware, its PVH loader, then the
//!   guest's first instruction). QEMU exposes no "first KVM_RUN", so the
//!   first guest instruction is the comparable mark.
//!
//! `--no-seccomp` runs our VMM without its seccomp filters (`vmbench-vmm
//! --no-seccomp`), to measure what confining it costs.
//!
//! VMs run one after another, ours and QEMU's interleaved, then `--concurrent`
//! of ours at once. The issue-3 targets are checked at the end: median `vmm`
//! phase ≤ 5 ms, VMM overhead ≤ 10 MiB per VM. The exit status: 0 when it
//! ran and met them, 2 when it ran and missed one (a loaded host misses a
//! speed target without anything being wrong), 1 when it could not run:
//! a VM of ours that did not end cleanly, QEMU that is there but could not
//! be measured. `scripts/test.sh` runs it once, small, and fails only on 1.
//! (The VMM phase does
//! not depend on the guest: everything before the first `KVM_RUN` — memory,
//! the KVM VM, irqchip, loading, boot structures, vCPUs, devices — is the same
//! code for this guest and for Linux.)

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use vmbench_e2e::vmm::backend_vmm_command;
use vmbench_e2e::{have_kvm, vmbench_bin};

const MEM_MIB: u32 = 256;
/// The exit status of a run that measured everything but missed a target.
const TARGET_MISSED: u8 = 2;
const LOAD_ADDR: u32 = 0x10_0000;

/// The guest, entered at its PVH entry in 32-bit protected mode: marker 0x60,
/// then an i8042 reset (vmbench's VMM ends there) and a triple fault (QEMU
/// microvm has no i8042; `-no-reboot` makes that its exit).
fn guest_code(idtr_addr: u32) -> Vec<u8> {
    let mut code = vec![
        0xb0, 0x60, // mov al, 0x60
        0xe6, 0x80, // out 0x80, al
        0xb0, 0xfe, // mov al, 0xfe
        0xe6, 0x64, // out 0x64, al
        0x0f, 0x01, 0x1d, // lidt [disp32]
    ];
    code.extend_from_slice(&idtr_addr.to_le_bytes());
    code.extend_from_slice(&[
        0xcc, // int3: no IDT, so #GP, #DF, shutdown
        0xf4, 0xeb, 0xfd, // hlt; jmp hlt
    ]);
    code
}

/// An ELF64 executable: one PT_LOAD at 1 MiB holding everything, a PT_NOTE
/// with the Xen PVH entry note (type 18) naming the code, which follows.
fn tiny_pvh_elf() -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&8u32.to_le_bytes()); // descsz (QEMU reads 8)
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    let code_off = note_off + note.len() + 8;
    let entry = LOAD_ADDR + code_off as u32;
    note.extend_from_slice(&u64::from(entry).to_le_bytes());
    let idtr_off = code_off + guest_code(0).len();
    let code = guest_code(LOAD_ADDR + idtr_off as u32);
    let total = (idtr_off + 8) as u64;

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&u64::from(entry).to_le_bytes());
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR as u16, PHDR as u16, 2, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    let load = u64::from(LOAD_ADDR);
    // PT_LOAD, RWX: p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&7u32.to_le_bytes());
    for word in [0, load, load, total, total, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    // PT_NOTE.
    elf.extend_from_slice(&4u32.to_le_bytes());
    elf.extend_from_slice(&4u32.to_le_bytes());
    let at = note_off as u64;
    for word in [
        at,
        load + at,
        load + at,
        note.len() as u64,
        note.len() as u64,
        4,
    ] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(elf.len(), note_off);
    elf.extend_from_slice(&note);
    assert_eq!(elf.len(), code_off);
    elf.extend_from_slice(&code);
    elf.extend_from_slice(&[0u8; 8]); // the IDTR: limit 0, base 0
    elf
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One run of our VMM: (vmm phase ms, first instruction ms, overhead KiB).
struct Ours {
    vmm_ms: f64,
    first_insn_ms: f64,
    overhead_kib: u64,
}

fn spawn_ours(kernel: &Path, dir: &Path) -> Result<Child, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut command = backend_vmm_command(kernel, dir);
    if std::env::args().any(|a| a == "--no-seccomp") {
        command.arg("--no-seccomp");
    }
    command
        .args(["--mem-mib", &MEM_MIB.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run our VMM ({}): {e}", vmbench_bin().display()))
}

fn account_ours(dir: &Path, spawn_ns: u64, child: Child) -> Result<Ours, String> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "our VMM failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = std::fs::read_to_string(dir.join("vmm.json")).map_err(|e| e.to_string())?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let seccomp_wanted = !std::env::args().any(|a| a == "--no-seccomp");
    if report["seccomp"] != seccomp_wanted {
        return Err(format!("vmm.json says seccomp {}", report["seccomp"]));
    }
    if report["end"]["kind"] != "reset" {
        return Err(format!(
            "the VM did not end with a reset: {}",
            report["end"]
        ));
    }
    let ms = |ns: Option<u64>| -> Result<f64, String> {
        let ns = ns.ok_or_else(|| format!("vmm.json lacks a mark: {report}"))?;
        Ok(ns.saturating_sub(spawn_ns) as f64 / 1e6)
    };
    Ok(Ours {
        vmm_ms: ms(report["first_run_ns"].as_u64())?,
        first_insn_ms: ms(report["boot_markers"][0][1].as_u64())?,
        overhead_kib: report["memory"]["vmm_overhead_kib"]
            .as_u64()
            .unwrap_or(u64::MAX),
    })
}

fn run_ours(kernel: &Path, dir: &Path) -> Result<Ours, String> {
    let spawn_ns = monotonic_ns();
    let child = spawn_ours(kernel, dir)?;
    account_ours(dir, spawn_ns, child)
}

/// One QEMU run: spawn → the marker byte on its debugcon socket, in ms.
fn run_qemu(qemu: &Path, accel: &str, kernel: &Path, dir: &Path) -> Result<f64, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let socket = dir.join("marker.sock");
    let listener = UnixListener::bind(&socket).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut args: Vec<String> = vec![
        "-M".into(),
        "microvm,acpi=off".into(),
        "-accel".into(),
        accel.into(),
    ];
    if accel == "kvm" {
        args.extend(["-cpu".into(), "host".into()]);
    }
    args.extend([
        "-m".into(),
        format!("{MEM_MIB}M"),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-chardev".into(),
        format!("socket,id=marker,path={}", socket.display()),
        "-device".into(),
        "isa-debugcon,iobase=0x80,chardev=marker".into(),
        "-kernel".into(),
        kernel.display().to_string(),
    ]);
    let spawn_ns = monotonic_ns();
    let mut child = Command::new(qemu)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        if Instant::now() > deadline {
            break Err("no marker from QEMU within 20 s".to_string());
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .map_err(|e| e.to_string())?;
                let mut byte = [0u8; 1];
                break match stream.read_exact(&mut byte) {
                    Ok(()) if byte[0] == 0x60 => Ok((monotonic_ns() - spawn_ns) as f64 / 1e6),
                    Ok(()) => Err(format!("unexpected marker {:#x}", byte[0])),
                    Err(e) => Err(format!("no marker from QEMU: {e}")),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut err);
                    }
                    break Err(format!("QEMU exited ({status}): {}", err.trim()));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// n, median, min, max of a sample.
fn summary(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "{:>8.2} {:>8.2} {:>8.2} {:>4}",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_text(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too: then only check it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return ExitCode::SUCCESS;
    }
    let vms = arg("--vms", 20).max(1);
    let concurrent = arg("--concurrent", 32);
    if !have_kvm("vmm_startup") {
        return ExitCode::SUCCESS;
    }
    let work = tempfile::tempdir().expect("a temporary directory");
    let kernel = work.path().join("tiny-pvh.elf");
    std::fs::write(&kernel, tiny_pvh_elf()).expect("write the guest");
    let qemu = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    });
    // KVM for QEMU too by default, as for ours (/dev/kvm opened above).
    let accel = arg_text("--qemu-accel").unwrap_or_else(|| "kvm".into());
    let accel = accel.as_str();
    println!(
        "vmm_startup: {vms} VMs of {MEM_MIB} MiB, 1 vCPU, one after another (ours: {}, seccomp {}; QEMU: {}, -accel {accel})",
        backend_vmm_command(Path::new("-"), Path::new("-")).get_program().to_string_lossy(),
        if std::env::args().any(|a| a == "--no-seccomp") { "off" } else { "on" },
        qemu.as_ref().map_or("not found".into(), |q: &PathBuf| q.display().to_string())
    );

    let (mut vmm, mut insn, mut overhead, mut qemu_insn) = (vec![], vec![], vec![], vec![]);
    let mut qemu_error = None;
    for i in 0..vms {
        match run_ours(&kernel, &work.path().join(format!("ours-{i}"))) {
            Ok(o) => {
                vmm.push(o.vmm_ms);
                insn.push(o.first_insn_ms);
                overhead.push(o.overhead_kib as f64 / 1024.0);
            }
            Err(e) => {
                println!("our VMM: {e}");
                return ExitCode::FAILURE;
            }
        }
        if let (Some(q), None) = (&qemu, &qemu_error) {
            match run_qemu(q, accel, &kernel, &work.path().join(format!("qemu-{i}"))) {
                Ok(ms) => qemu_insn.push(ms),
                Err(e) => qemu_error = Some(e),
            }
        }
    }
    println!(
        "\n{:<52} {:>8} {:>8} {:>8} {:>4}",
        "", "median", "min", "max", "n"
    );
    println!(
        "{:<52} {}",
        "vmbench-vmm: spawn → first KVM_RUN (vmm phase), ms",
        summary(&vmm)
    );
    println!(
        "{:<52} {}",
        "vmbench-vmm: spawn → first guest instruction, ms",
        summary(&insn)
    );
    println!(
        "{:<52} {}",
        "QEMU microvm: spawn → first guest instruction, ms",
        summary(&qemu_insn)
    );
    println!(
        "{:<52} {}",
        "vmbench-vmm: resident beyond touched guest memory, MiB",
        summary(&overhead)
    );
    if let Some(e) = &qemu_error {
        println!("QEMU could not be measured: {e}");
        return ExitCode::FAILURE;
    }

    let mut clean = 0;
    let mut concurrent_vmm = Vec::new();
    let mut concurrent_overhead: f64 = 0.0;
    if concurrent > 0 {
        let started = Instant::now();
        let running: Vec<_> = (0..concurrent)
            .map(|i| {
                let dir = work.path().join(format!("concurrent-{i}"));
                let spawn_ns = monotonic_ns();
                (dir.clone(), spawn_ns, spawn_ours(&kernel, &dir))
            })
            .collect();
        for (dir, spawn_ns, child) in running {
            match child.and_then(|c| account_ours(&dir, spawn_ns, c)) {
                Ok(o) => {
                    clean += 1;
                    concurrent_vmm.push(o.vmm_ms);
                    concurrent_overhead = concurrent_overhead.max(o.overhead_kib as f64 / 1024.0);
                }
                Err(e) => println!("{}: {e}", dir.display()),
            }
        }
        println!(
            "\n{concurrent} concurrent VMs on {} CPUs: {clean} ended cleanly in {:.0} ms; vmm phase median {:.2} ms, max {:.2} ms; overhead max {:.1} MiB",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            started.elapsed().as_secs_f64() * 1e3,
            if concurrent_vmm.is_empty() { f64::NAN } else { median(&concurrent_vmm) },
            concurrent_vmm.iter().copied().fold(0.0, f64::max),
            concurrent_overhead,
        );
    }

    if clean != concurrent {
        println!(
            "{} of {concurrent} concurrent VMs did not end cleanly",
            concurrent - clean
        );
        return ExitCode::FAILURE;
    }
    let targets = [
        ("median vmm phase ≤ 5 ms", median(&vmm) <= 5.0),
        (
            "VMM overhead ≤ 10 MiB per VM",
            overhead.iter().copied().fold(concurrent_overhead, f64::max) <= 10.0,
        ),
    ];
    println!();
    for (target, met) in &targets {
        println!("target {target}: {}", if *met { "met" } else { "MISSED" });
    }
    if targets.iter().all(|(_, met)| *met) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(TARGET_MISSED)
    }
}
