//! Many VMs at once: 32 `vmbench vmm` processes of a tiny guest start, run
//! and end cleanly on a 2-core machine, each with a complete report and a
//! VMM that keeps within its memory budget (10 MiB beyond the guest memory
//! the guest touched). How fast they start is a benchmark, not a test:
//! `cargo bench -p vmbench-e2e --bench vmm_startup`.

use std::path::PathBuf;
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

const VMS: usize = 32;
const OVERHEAD_BUDGET_KIB: u64 = 10 * 1024;

#[test]
fn thirty_two_concurrent_vms_run_and_end_cleanly() {
    if !have_kvm("thirty_two_concurrent_vms_run_and_end_cleanly") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kernel = work.path().join("guest.elf");
    std::fs::write(&kernel, tiny_elf(GUEST)).unwrap();
    let running: Vec<(PathBuf, Child)> = (0..VMS)
        .map(|i| {
            let dir = work.path().join(format!("vm-{i}"));
            std::fs::create_dir(&dir).unwrap();
            let child = Command::new(vmbench_bin())
                .arg("vmm")
                .arg("--kernel")
                .arg(&kernel)
                .args(["--mem-mib", "256", "--dir"])
                .arg(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (dir, child)
        })
        .collect();
    for (dir, child) in running {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}: {}", dir.display(), dump(&out));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("vmm.json")).unwrap()).unwrap();
        assert_eq!(report["end"]["kind"], "reset", "{report}");
        assert_eq!(
            std::fs::read_to_string(dir.join("serial.log")).unwrap(),
            "ok\n"
        );
        let first_run = report["first_run_ns"].as_u64().unwrap();
        let marker = report["boot_markers"][0][1].as_u64().unwrap();
        assert!(first_run <= marker && marker <= report["end_ns"].as_u64().unwrap());
        let memory = &report["memory"];
        assert!(memory["max_rss_kib"].as_u64().unwrap() > 0, "{report}");
        let overhead = memory["vmm_overhead_kib"].as_u64().unwrap();
        assert!(
            overhead <= OVERHEAD_BUDGET_KIB,
            "VMM overhead {overhead} KiB beyond the {OVERHEAD_BUDGET_KIB} KiB budget: {report}"
        );
    }
}
