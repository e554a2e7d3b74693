//! The VMM's targets (issue 3), measured with a tiny guest through `vmbench
//! vmm` (its own test binary, so no other test competes for the CPU):
//! - `vmm` phase, spawn → first KVM_RUN, of a 256 MiB 1-vCPU VM over 20 VMs;
//! - the VMM's resident memory beyond the guest memory it touched;
//! - 32 concurrent VMs start, run and end cleanly on a 2-core machine.
//!
//! The tiny guest's first KVM_RUN is the same as Linux's: everything the VMM
//! does before it (memory, KVM VM, irqchip, loading, boot structures, vCPU
//! setup, devices) is the same code; only the kernel's size differs.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use vmbench_e2e::{dump, have_kvm, tiny_elf, vmbench_bin};

/// 'ok\n' on COM1, a boot marker, then an i8042 reset.
const GUEST: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'o', 0xee, // mov al, 'o'; out dx, al
    0xb0, b'k', 0xee, // mov al, 'k'; out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
    0xb0, 0x60, 0xee, // mov al, 0x60; out dx, al
    0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al
    0xf4, // hlt (not reached)
];

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

fn spawn(kernel: &Path, dir: &Path) -> Child {
    Command::new(vmbench_bin())
        .arg("vmm")
        .arg("--kernel")
        .arg(kernel)
        .args(["--mem-mib", "256", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// (vmm phase ms, VMM overhead KiB) of a VM that ended with a reset.
fn account(dir: &Path, spawn_ns: u64) -> (f64, u64) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vmm.json")).unwrap()).unwrap();
    assert_eq!(report["end"]["kind"], "reset", "{report}");
    assert_eq!(
        std::fs::read_to_string(dir.join("serial.log")).unwrap(),
        "ok\n"
    );
    let first_run = report["first_run_ns"].as_u64().unwrap();
    let memory = &report["memory"];
    assert!(memory["max_rss_kib"].as_u64().unwrap() > 0, "{report}");
    (
        (first_run - spawn_ns) as f64 / 1e6,
        memory["vmm_overhead_kib"].as_u64().unwrap(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn vmm_startup_memory_and_32_concurrent_vms() {
    if !have_kvm("vmm_startup_memory_and_32_concurrent_vms") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kernel = work.path().join("guest.elf");
    std::fs::write(&kernel, tiny_elf(GUEST)).unwrap();

    // 20 VMs one after the other: spawn → first KVM_RUN.
    let mut phases = Vec::new();
    let mut overheads = Vec::new();
    for i in 0..20 {
        let dir = work.path().join(format!("seq-{i}"));
        std::fs::create_dir(&dir).unwrap();
        let spawn_ns = monotonic_ns();
        let out = spawn(&kernel, &dir).wait_with_output().unwrap();
        assert!(out.status.success(), "{}", dump(&out));
        let (phase, overhead) = account(&dir, spawn_ns);
        phases.push(phase);
        overheads.push(overhead);
    }
    let max_overhead = *overheads.iter().max().unwrap();
    println!(
        "vmm phase (spawn → first KVM_RUN), 256 MiB, 1 vCPU, 20 VMs: median {:.2} ms, min {:.2}, max {:.2}; VMM memory beyond touched guest memory: max {:.1} MiB",
        median(phases.clone()),
        phases.iter().copied().fold(f64::INFINITY, f64::min),
        phases.iter().copied().fold(0.0, f64::max),
        max_overhead as f64 / 1024.0
    );
    assert!(median(phases) <= 5.0, "target: median vmm phase ≤ 5 ms");
    assert!(max_overhead <= 10 * 1024, "target: ≤ 10 MiB per VM");

    // 32 at once.
    let started = std::time::Instant::now();
    let running: Vec<(std::path::PathBuf, u64, Child)> = (0..32)
        .map(|i| {
            let dir = work.path().join(format!("par-{i}"));
            std::fs::create_dir(&dir).unwrap();
            let spawn_ns = monotonic_ns();
            let child = spawn(&kernel, &dir);
            (dir, spawn_ns, child)
        })
        .collect();
    let mut phases = Vec::new();
    let mut max_overhead = 0;
    for (dir, spawn_ns, child) in running {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}: {}", dir.display(), dump(&out));
        let (phase, overhead) = account(&dir, spawn_ns);
        phases.push(phase);
        max_overhead = max_overhead.max(overhead);
    }
    println!(
        "32 concurrent VMs: all reset cleanly in {:.0} ms; vmm phase median {:.2} ms, max {:.2} ms; VMM overhead max {:.1} MiB",
        started.elapsed().as_secs_f64() * 1e3,
        median(phases.clone()),
        phases.iter().copied().fold(0.0, f64::max),
        max_overhead as f64 / 1024.0
    );
    assert!(max_overhead <= 10 * 1024, "target: ≤ 10 MiB per VM");
}
