//! End to end: `vmbench vmm` runs hand-assembled guests through the VMM's
//! exact boot path (linux-loader, boot structures, 64-bit entry, devices).
//! They need /dev/kvm but not native KVM: a few hundred instructions run
//! even where KVM emulates guest code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use vmbench_e2e::vmm::{backend_vmm_command, vmm_command, vmm_json};
use vmbench_e2e::vsock::wait_for_path;
use vmbench_e2e::{
    assert_follows_its_document, dump, have_kvm, json_paths, kvm_verdict, one_line_error,
    skip_unless_ci, tiny_elf,
};

/// 'ok\n' to COM1, 0x60 to the boot-marker port, a write to an MMIO address
/// with no RAM behind it, then an i8042 reset.
const DEVICES_GUEST: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'o', 0xee, // mov al, 'o'; out dx, al
    0xb0, b'k', 0xee, // mov al, 'k'; out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
    0xb0, 0x60, 0xee, // mov al, 0x60; out dx, al
    0xb8, 0x00, 0x00, 0x00, 0x30, // mov eax, 0x30000000
    0xc7, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [rax], 1
    0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al
    0xf4, // hlt (not reached)
];

/// Reads the first virtio-mmio slot's MagicValue (a 4-byte MMIO read at
/// 0xd0000000, reached through the VMM's boot page tables), prints its four
/// bytes on COM1, writes ACKNOWLEDGE to the Status register (0x70) and resets.
const VIRTIO_MMIO_GUEST: &[u8] = &[
    0xb8, 0x00, 0x00, 0x00, 0xd0, // mov eax, 0xd0000000
    0x8b, 0x00, // mov eax, [rax]
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xee, // out dx, al
    0xc1, 0xe8, 0x08, 0xee, // shr eax, 8; out dx, al
    0xc1, 0xe8, 0x08, 0xee, // shr eax, 8; out dx, al
    0xc1, 0xe8, 0x08, 0xee, // shr eax, 8; out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0xbb, 0x70, 0x00, 0x00, 0xd0, // mov ebx, 0xd0000070
    0xc7, 0x03, 0x01, 0x00, 0x00, 0x00, // mov dword [rbx], 1
    0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al
    0xf4, // hlt (not reached)
];

/// `vmbench vmm --kernel KERNEL --mem-mib MIB --dir DIR EXTRA…`.
/// POPCNT of 0xf0000000000000ff into RAX (12, printed as '<' = '0' + 12),
/// then of 0 (ZF set: 'Z', else 'n'), a newline, an i8042 reset. KVM's
/// emulator refuses POPCNT where it emulates guest code; native KVM runs it.
const POPCNT_GUEST: &[u8] = &[
    0x48, 0xbf, 0xff, 0, 0, 0, 0, 0, 0, 0xf0, // mov rdi, 0xf0000000000000ff
    0xf3, 0x48, 0x0f, 0xb8, 0xc7, // popcnt rax, rdi
    0x04, 0x30, // add al, '0'
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xee, // out dx, al
    0x31, 0xff, // xor edi, edi
    0xf3, 0x48, 0x0f, 0xb8, 0xcf, // popcnt rcx, rdi
    0xb0, b'Z', // mov al, 'Z'
    0x74, 0x02, // jz +2
    0xb0, b'n', // mov al, 'n'
    0xee, // out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al (reset)
];

fn run_vmm(kernel: &Path, mem_mib: u32, dir: &Path, extra: &[&str]) -> Output {
    vmm_command(kernel, dir)
        .args(["--mem-mib", &mem_mib.to_string()])
        .args(extra)
        .output()
        .unwrap()
}

fn run_guest_with(code: &[u8], extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    std::fs::write(&kernel, tiny_elf(code)).unwrap();
    (run_vmm(&kernel, 16, dir.path(), extra), dir)
}

fn run_guest(code: &[u8]) -> (Output, tempfile::TempDir) {
    run_guest_with(code, &[])
}

#[test]
fn guest_reaches_serial_marker_mmio_and_resets() {
    if !have_kvm("guest_reaches_serial_marker_mmio_and_resets") {
        return;
    }
    let (out, dir) = run_guest(DEVICES_GUEST);
    assert!(out.status.success(), "{}", dump(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the guest reset the machine"),
        "{}",
        dump(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("serial.log")).unwrap(),
        "ok\n"
    );
    let report = vmm_json(dir.path());
    assert_eq!(report["end"]["kind"], "reset");
    assert_eq!(report["ended_by_vcpu"], 0);
    assert_eq!(report["boot_markers"][0][0], 0x60);
    assert!(
        report["first_run_ns"].as_u64().unwrap() <= report["boot_markers"][0][1].as_u64().unwrap()
    );
    let exits = &report["vcpus"][0]["exits"];
    assert_eq!(exits["by_mmio_addr"]["805306368"]["count"], 1, "{report}");
    assert_eq!(exits["by_port"]["1016"]["count"], 3, "{report}");
    // The reset itself ends the run before it is accounted: 3 serial + 1 marker.
    assert_eq!(exits["by_kind"]["io_out"]["count"], 4, "{report}");
    let serial = &exits["by_port"]["1016"];
    assert!(serial["min_ns"].as_u64().unwrap() <= serial["max_ns"].as_u64().unwrap());
    let buckets: u64 = serial["log2_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(buckets, 3);
    // KVM's own count (Linux 5.14+) includes the exits it handled itself.
    match report["vcpus"][0]["kvm_stats"].get("Ok") {
        Some(stats) => {
            for name in ["exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits"] {
                assert!(stats[name].is_u64(), "{name} missing: {stats}");
            }
            // How KVM splits the exits depends on the host (an emulating
            // nested KVM counts port I/O as instruction emulation), but the
            // guest cannot have run without exiting at least once.
            assert!(stats["exits"].as_u64().unwrap() >= 1, "{stats}");
        }
        // Only a host kernel before 5.14 has none; CI's has them.
        None => skip_unless_ci(
            "guest_reaches_serial_marker_mmio_and_resets (KVM binary statistics)",
            &format!(
                "KVM has no binary statistics here: {}",
                report["vcpus"][0]["kvm_stats"]
            ),
        ),
    }
}

/// A real vmm.json, from a guest that reaches the serial port, the boot
/// marker, unclaimed MMIO, a disk and a vsock device, holds no field
/// docs/vmm-json.md does not describe, lacks none it says is always there,
/// and has the version the document describes.
#[test]
fn vmm_json_is_what_its_document_says() {
    if !have_kvm("vmm_json_is_what_its_document_says") {
        return;
    }
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(1 << 20).unwrap();
    let disk = format!("{},format=raw", disk.path().display());
    let (out, dir) = run_guest_with(DEVICES_GUEST, &["--vsock-cid", "3", "--disk", &disk]);
    assert!(out.status.success(), "{}", dump(&out));
    let account = vmm_json(dir.path());
    assert_follows_its_document(&account, "vmm-json.md");
    // The guest reached every map the document keys by data.
    let paths = json_paths(&account);
    for map in ["devices", "unclaimed_mmio", "vcpus[].exits.by_port"] {
        assert!(
            paths.iter().any(|p| p.starts_with(&format!("{map}."))),
            "{map} is empty: {account}"
        );
    }
}

#[test]
fn guest_reads_and_writes_a_virtio_mmio_register() {
    if !have_kvm("guest_reads_and_writes_a_virtio_mmio_register") {
        return;
    }
    let (out, dir) = run_guest_with(VIRTIO_MMIO_GUEST, &["--vsock-cid", "3"]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("serial.log")).unwrap(),
        "virt\n",
        "the vsock device's MagicValue"
    );
    let report = vmm_json(dir.path());
    assert_eq!(report["end"]["kind"], "reset", "{report}");
    let exits = &report["vcpus"][0]["exits"];
    // 0xd0000000 and 0xd0000070 in decimal.
    assert_eq!(exits["by_mmio_addr"]["3489660928"]["count"], 1, "{report}");
    assert_eq!(exits["by_mmio_addr"]["3489661040"]["count"], 1, "{report}");
    assert_eq!(exits["by_kind"]["mmio_read"]["count"], 1, "{report}");
    assert_eq!(exits["by_kind"]["mmio_write"]["count"], 1, "{report}");
    assert_eq!(report["virtio_bad_accesses"], 0, "{report}");
    let vsock = &report["devices"]["0xd0000000:19"];
    assert_eq!(vsock["guest_cid"], 3, "{report}");
    assert!(report["unclaimed_mmio"].as_object().unwrap().is_empty());
    // The device's host socket existed while the VM ran.
    assert!(dir.path().join("vsock.sock").exists());
}

#[test]
fn triple_fault_ends_the_vm_cleanly() {
    if !have_kvm("triple_fault_ends_the_vm_cleanly") {
        return;
    }
    // ud2 with an empty IDT: #UD, then #GP, then a double fault, then shutdown.
    let (out, dir) = run_guest(&[0x0f, 0x0b]);
    assert!(out.status.success(), "{}", dump(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("triple-faulted"),
        "{}",
        dump(&out)
    );
    let report = std::fs::read_to_string(dir.path().join("vmm.json")).unwrap();
    assert!(report.contains("\"triple_fault\""), "{report}");
}

#[test]
fn smp_vms_end_with_every_vcpu_accounted() {
    if !have_kvm("smp_vms_end_with_every_vcpu_accounted") {
        return;
    }
    // The boot vCPU runs the guest and resets; the three others wait for an
    // INIT/SIPI that never comes and must still be stopped and reported.
    let (out, dir) = run_guest_with(DEVICES_GUEST, &["--vcpus", "4"]);
    assert!(out.status.success(), "{}", dump(&out));
    let report = vmm_json(dir.path());
    assert_eq!(report["end"]["kind"], "reset", "{report}");
    let vcpus = report["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 4, "{report}");
    for (i, v) in vcpus.iter().enumerate() {
        assert_eq!(v["index"], i);
    }
    assert_eq!(vcpus[0]["exits"]["by_kind"]["io_out"]["count"], 4);
    assert!(vcpus[1]["exits"]["by_kind"].as_object().unwrap().is_empty());
}

#[test]
fn sigterm_stops_a_spinning_guest_with_a_report() {
    if !have_kvm("sigterm_stops_a_spinning_guest_with_a_report") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    // "r\n" to COM1 once it runs, then spin.
    let code = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'r', 0xee, // mov al, 'r'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xeb, 0xfe, // jmp $
    ];
    std::fs::write(&kernel, tiny_elf(&code)).unwrap();
    let child = vmm_command(&kernel, dir.path())
        .args(["--mem-mib", "16", "--vcpus", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the guest to be running: it said so on its serial port
    // (the stop signals are handled from before the first KVM_RUN).
    let serial = dir.path().join("serial.log");
    if let Err(e) = wait_for_path(&serial, std::time::Duration::from_secs(10)) {
        panic!("the VMM never started: {e}");
    }
    let running = std::time::Instant::now();
    while std::fs::read_to_string(&serial).unwrap() != "r\n" {
        // Only against a hang: the guest's first instructions.
        assert!(
            running.elapsed() < std::time::Duration::from_secs(30),
            "the guest never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", dump(&out));
    let report = vmm_json(dir.path());
    assert_eq!(report["end"]["kind"], "stopped", "{report}");
    assert_eq!(report["end"]["signal"], libc::SIGTERM);
    assert_eq!(report["ended_by_vcpu"], serde_json::Value::Null);
    assert_eq!(report["vcpus"].as_array().unwrap().len(), 2);
}

/// The VMM opens /dev/kvm before it loads the kernel: without KVM the
/// kernel is never looked at, so this needs KVM.
#[test]
fn kernel_that_is_not_one_is_a_clear_error() {
    if !have_kvm("kernel_that_is_not_one_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, b"not a kernel").unwrap();
    let out = vmm_command(&bad, dir.path()).output().unwrap();
    let stderr = one_line_error(&out, 2);
    assert!(
        stderr.starts_with("vmbench: error: Cannot load kernel")
            && stderr.contains(&bad.display().to_string()),
        "{stderr}"
    );
}

/// Our kernel through our VMM: the loader, the zero page and the 64-bit entry
/// must get Linux far enough to print the e820 map we gave it. After that a
/// host with native KVM runs it to its panic (no initramfs: no init), and
/// `panic=-1 reboot=t` makes that a triple fault, a clean end; a host whose
/// KVM emulates guest code fails at an instruction its emulator lacks, and
/// the error must name it with its bytes.
#[test]
fn linux_boots_through_our_entry_path() {
    if !have_kvm("linux_boots_through_our_entry_path") {
        return;
    }
    let cache = std::env::var_os("VMBENCH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vmbench")));
    let test = "linux_boots_through_our_entry_path";
    let Some(kernel) = cache.map(|c| c.join("kernel/current/vmlinux")) else {
        // The kernel is built into the cache by scripts/setup.sh, which CI runs.
        return skip_unless_ci(test, "neither $VMBENCH_CACHE nor $HOME is set");
    };
    if !kernel.is_file() {
        let reason = format!("no kernel at {} (scripts/setup.sh)", kernel.display());
        return skip_unless_ci(test, &reason);
    }
    let (native, _) = vmbench_e2e::kvm_verdict();
    // The kernel has a PVH note: the default entry is PVH; the 64-bit Linux
    // entry must work as well.
    for entry in ["pvh", "linux64"] {
        linux_through_entry(&kernel, entry, native);
    }
}

fn linux_through_entry(kernel: &Path, entry: &str, native: bool) {
    let dir = tempfile::tempdir().unwrap();
    let out = run_vmm(kernel, 256, dir.path(), &["--entry", entry]);
    assert_eq!(vmm_json(dir.path())["entry"], entry);
    let serial = std::fs::read_to_string(dir.path().join("serial.log")).unwrap();
    assert!(serial.contains("Linux version 6.1"), "{serial}");
    // Linux finds the MP table we wrote at the EBDA and reads our OEM id.
    assert!(
        serial.contains("found SMP MP-table at [mem 0x0009fc00-0x0009fc0f]"),
        "{serial}"
    );
    assert!(serial.contains("MPTABLE: OEM ID: VMBENCH"), "{serial}");
    assert!(
        serial.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"),
        "{serial}"
    );
    if native {
        assert!(out.status.success(), "{}\n{serial}", dump(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("triple-faulted"),
            "{}",
            dump(&out)
        );
        // No initramfs, no root: Linux panics, and the VMM says so.
        let said = vmm_json(dir.path())["guest_said"].to_string();
        assert!(said.contains("Kernel panic"), "{said}");
    } else {
        let stderr = one_line_error(&out, 1);
        assert!(
            stderr.contains("emulation failure") && stderr.contains("instruction bytes: "),
            "{stderr}"
        );
        assert!(
            stderr.contains("rip=0xffffffff"),
            "registers of a kernel-mode vCPU: {stderr}"
        );
    }
}

/// 32 `vmbench vmm` processes at once on this 2-core machine: each starts,
/// runs and ends cleanly with a complete report, its VMM within the memory
/// budget (10 MiB beyond the guest memory the guest touched). How fast they
/// start is a benchmark, not a test: `cargo bench -p vmbench-e2e --bench vmm_startup`.
const CONCURRENT_VMS: usize = 32;
const OVERHEAD_BUDGET_KIB: u64 = 10 * 1024;

#[test]
fn thirty_two_concurrent_vms_run_and_end_cleanly() {
    if !have_kvm("thirty_two_concurrent_vms_run_and_end_cleanly") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kernel = work.path().join("guest.elf");
    std::fs::write(&kernel, tiny_elf(DEVICES_GUEST)).unwrap();
    let running: Vec<(PathBuf, Child)> = (0..CONCURRENT_VMS)
        .map(|i| {
            let dir = work.path().join(format!("vm-{i}"));
            std::fs::create_dir(&dir).unwrap();
            let child = vmm_command(&kernel, &dir)
                .args(["--mem-mib", "256"])
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
        let report = vmm_json(&dir);
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

/// Does `qemu-img` run here? Prints `SKIPPED:` for `what` when it does
/// not, or fails under CI (scripts/setup.sh installs qemu-utils).
fn have_qemu_img(what: &str) -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_unless_ci(
            what,
            "qemu-img is not installed (scripts/setup.sh: qemu-utils)",
        );
    }
    ok
}

fn qemu_img_create(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(["create", "-q"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", dump(&out));
}

/// Every way a `--disk` can be bad ends `vmbench vmm` with exit 2 and one
/// line on stderr naming the file and the problem. The images are opened
/// before /dev/kvm, so this runs without KVM.
#[test]
fn bad_disks_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let kernel = p("guest.elf");
    std::fs::write(&kernel, tiny_elf(DEVICES_GUEST)).unwrap();
    std::fs::write(p("empty.raw"), b"").unwrap();
    std::fs::write(p("initrd.img"), [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    // (disk argument, what stderr must say besides the file's name)
    let mut cases: Vec<(String, PathBuf, &str)> = vec![
        (
            format!("{},format=qcow2", p("missing.qcow2").display()),
            p("missing.qcow2"),
            "does not exist",
        ),
        (
            p("initrd.img").display().to_string(),
            p("initrd.img"),
            "a writable disk needs its format stated (format=raw or format=qcow2)",
        ),
        (
            format!("{},format=qcow2,ro", p("initrd.img").display()),
            p("initrd.img"),
            "is stated to be qcow2 but is not a qcow2 image",
        ),
        (
            format!("{},ro", p("empty.raw").display()),
            p("empty.raw"),
            "is not a disk image: it is empty",
        ),
        (
            format!("{},ro", p("initrd.img").display()),
            p("initrd.img"),
            "is not a disk image: it looks like a gzip file",
        ),
    ];
    let unprobed = cases.len();
    if have_qemu_img("bad_disks_are_one_line_errors (qcow2 cases)") {
        let good = p("good.qcow2");
        qemu_img_create(&["-f", "qcow2", good.to_str().unwrap(), "64M"]);
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(p("truncated.qcow2"), &bytes[..1000]).unwrap();
        let mut corrupt = bytes.clone();
        corrupt[20..24].copy_from_slice(&99u32.to_be_bytes()); // cluster_bits
        std::fs::write(p("corrupt.qcow2"), &corrupt).unwrap();
        let mut zstd = bytes.clone();
        zstd[79] |= 1 << 3; // incompatible feature: compression type
        std::fs::write(p("zstd.qcow2"), &zstd).unwrap();
        // -u: qemu-img does not look for the backing file.
        qemu_img_create(&[
            "-u",
            "-f",
            "qcow2",
            "-b",
            "gone.raw",
            "-F",
            "raw",
            p("orphan.qcow2").to_str().unwrap(),
            "64M",
        ]);
        for (name, expected) in [
            ("truncated.qcow2", "is a truncated qcow2 image"),
            ("corrupt.qcow2", "corrupt header: cluster_bits 99"),
            (
                "zstd.qcow2",
                "a compression type other than zlib, which is not supported",
            ),
            ("orphan.qcow2", "needs backing file"),
        ] {
            cases.push((
                format!("{},format=qcow2", p(name).display()),
                p(name),
                expected,
            ));
        }
    }
    for (arg, file, expected) in &cases {
        let out = run_vmm(&kernel, 16, dir.path(), &["--disk", arg]);
        let stderr = one_line_error(&out, 2);
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // The missing backing file is named as it was looked for.
    if cases.len() > unprobed {
        let orphan = format!("{},format=qcow2", p("orphan.qcow2").display());
        let out = run_vmm(&kernel, 16, dir.path(), &["--disk", &orphan]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{}, which does not exist",
                p("gone.raw").display()
            )),
            "{stderr}"
        );
    }
}

/// Reads the DeviceID register (offset 8) of the first `slots` virtio-mmio
/// slots and prints each as two decimal digits on COM1, then a newline, and
/// resets.
fn device_ids_guest(slots: u32) -> Vec<u8> {
    let mut code = Vec::new();
    for slot in 0..slots {
        let addr = 0xd000_0008u32 + slot * 0x1000;
        code.push(0xb8); // mov eax, addr
        code.extend(addr.to_le_bytes());
        code.extend([0x8b, 0x00]); // mov eax, [rax]
        code.extend([0xb9, 0x0a, 0x00, 0x00, 0x00]); // mov ecx, 10
        code.extend([0x31, 0xd2]); // xor edx, edx
        code.extend([0xf7, 0xf1]); // div ecx: eax = tens, edx = units
        code.extend([0x89, 0xd3]); // mov ebx, edx
        code.extend([0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        code.extend([0x04, b'0', 0xee]); // add al, '0'; out dx, al
        code.extend([0x89, 0xd8, 0x04, b'0', 0xee]); // mov eax, ebx; add al, '0'; out dx, al
    }
    code.extend([0x66, 0xba, 0xf8, 0x03, 0xb0, b'\n', 0xee]); // '\n' to COM1
    code.extend([0xb0, 0xfe, 0xe6, 0x64, 0xf4]); // i8042 reset; hlt
    code
}

/// Disks take the first virtio-mmio slots, in order, and the vsock device
/// the next: slot 0 (0xd0000000) is the first disk, so Linux, which probes
/// in command-line order, makes it /dev/vda.
#[test]
fn disks_come_first_and_the_guest_sees_them() {
    if !have_kvm("disks_come_first_and_the_guest_sees_them")
        || !have_qemu_img("disks_come_first_and_the_guest_sees_them")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("base.raw"), vec![0x5a; 1 << 20]).unwrap();
    qemu_img_create(&[
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        p("overlay.qcow2").to_str().unwrap(),
    ]);
    std::fs::write(p("data.raw"), vec![0; 64 << 10]).unwrap();
    let kernel = p("guest.elf");
    std::fs::write(&kernel, tiny_elf(&device_ids_guest(3))).unwrap();
    let overlay = format!("{},format=qcow2", p("overlay.qcow2").display());
    let data = format!("{},ro", p("data.raw").display());
    let out = run_vmm(
        &kernel,
        16,
        dir.path(),
        &["--disk", &overlay, "--disk", &data, "--vsock-cid", "3"],
    );
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(
        std::fs::read_to_string(p("serial.log")).unwrap(),
        "020219\n",
        "block, block, vsock"
    );
    let report = vmm_json(dir.path());
    assert_eq!(report["end"]["kind"], "reset", "{report}");
    let first = &report["devices"]["0xd0000000:2"];
    assert_eq!(first["capacity_sectors"], 2048, "{report}");
    assert_eq!(first["chain_images"], 2, "{report}");
    assert_eq!(first["read_only"], 0, "{report}");
    let second = &report["devices"]["0xd0001000:2"];
    assert_eq!(second["capacity_sectors"], 128, "{report}");
    assert_eq!(second["read_only"], 1, "{report}");
    assert_eq!(
        report["devices"]["0xd0002000:19"]["guest_cid"], 3,
        "{report}"
    );
    assert_eq!(report["virtio_bad_accesses"], 0, "{report}");
}

/// `--emulated-kvm` completes an instruction KVM's emulator refuses, with
/// the right result and flags, and counts it; off by default. Where KVM
/// runs guest code natively the same guest gives the same output and
/// nothing is completed.
#[test]
fn the_emulated_kvm_fallback_completes_popcnt_and_is_off_by_default() {
    let name = "the_emulated_kvm_fallback_completes_popcnt_and_is_off_by_default";
    if !have_kvm(name) {
        return;
    }
    let (native, _) = kvm_verdict();
    let (out, dir) = run_guest_with(POPCNT_GUEST, &["--emulated-kvm"]);
    assert!(out.status.success(), "{}", dump(&out));
    let serial = std::fs::read_to_string(dir.path().join("serial.log")).unwrap();
    assert_eq!(serial, "<Z\n", "12 set bits, then ZF for 0");
    let account = vmm_json(dir.path());
    let recovered = &account["emulated_kvm"]["recovered"];
    if native {
        assert_eq!(recovered, &serde_json::json!({}), "{account}");
    } else {
        assert_eq!(recovered["popcnt"], 2, "{account}");
        let emulation = &account["vcpus"][0]["exits"]["by_kind"]["emulation"];
        assert_eq!(emulation["count"], 2, "{account}");
    }
    // Without the flag the VMM completes nothing: an emulating KVM's refusal
    // ends the VM with its paragraph, as before.
    let (out, dir) = run_guest(POPCNT_GUEST);
    let account = vmm_json(dir.path());
    assert!(account.get("emulated_kvm").is_none(), "{account}");
    if native {
        assert!(out.status.success(), "{}", dump(&out));
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("instruction bytes: f3 48 0f b8 c7"),
            "{stderr}"
        );
    }
}

/// `vmbench vmm` runs as the VMM's own, smaller program, installed beside
/// `vmbench`: a VMM process carries none of the orchestrator's code.
#[test]
fn vmbench_vmm_becomes_the_vmms_own_program() {
    let out = std::process::Command::new(vmbench_e2e::vmbench_bin())
        .args(["vmm", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", dump(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("vmbench-vmm "), "{said}");
}

/// A hostile guest: reads `mmio_reads` distinct MMIO addresses from
/// 0xc0000000 on, 4 bytes apart (the MMIO gap below the virtio slots: no
/// RAM and no device there), writes `marks` boot marks (0x40–0x7f, in
/// turn) to port 0x80, reads `ports` distinct unclaimed ports from 0x1000
/// on, marks `windows` benchmark windows (ids `windows` down to 1, each
/// started and ended at once), then resets.
fn hostile_guest(mmio_reads: u32, marks: u32, ports: u32, windows: u32) -> Vec<u8> {
    let mut code = vec![0xb8]; // mov eax, 0xc0000000
    code.extend(0xc000_0000u32.to_le_bytes());
    code.push(0xb9); // mov ecx, mmio_reads
    code.extend(mmio_reads.to_le_bytes());
    code.extend([
        0x8b, 0x10, // 1: mov edx, [rax]
        0x48, 0x83, 0xc0, 0x04, // add rax, 4
        0xff, 0xc9, // dec ecx
        0x75, 0xf6, // jnz 1b
    ]);
    code.extend([0x66, 0xba, 0x80, 0x00]); // mov dx, 0x80
    code.push(0xb9); // mov ecx, marks
    code.extend(marks.to_le_bytes());
    code.extend([
        0x88, 0xc8, // 2: mov al, cl
        0x24, 0x3f, // and al, 0x3f
        0x0c, 0x40, // or al, 0x40
        0xee, // out dx, al
        0xff, 0xc9, // dec ecx
        0x75, 0xf5, // jnz 2b
    ]);
    code.push(0xba); // mov edx, 0x1000
    code.extend(0x1000u32.to_le_bytes());
    code.push(0xb9); // mov ecx, ports
    code.extend(ports.to_le_bytes());
    code.extend([
        0xec, // 3: in al, dx
        0xff, 0xc2, // inc edx
        0xff, 0xc9, // dec ecx
        0x75, 0xf9, // jnz 3b
    ]);
    code.push(0xb9); // mov ecx, windows
    code.extend(windows.to_le_bytes());
    code.extend([
        0x66, 0xba, 0x80, 0x00, // 4: mov dx, 0x80
        0xb0, 0xb0, 0xee, // mov al, 0xb0; out dx, al
        0x88, 0xc8, 0xee, // mov al, cl; out dx, al
        0x88, 0xe8, 0xee, // mov al, ch; out dx, al
        0xb0, 0xb1, 0xee, // mov al, 0xb1; out dx, al
        0x88, 0xc8, 0xee, // mov al, cl; out dx, al
        0x88, 0xe8, 0xee, // mov al, ch; out dx, al
        0xff, 0xc9, // dec ecx
        0x75, 0xe6, // jnz 4b
    ]);
    code.extend([0xb0, 0xfe, 0xe6, 0x64, 0xf4]); // i8042 reset; hlt
    code
}

/// A million distinct MMIO addresses: the count issue 12 asks for (about
/// 10 s of a debug VMM where KVM emulates guest code).
const HOSTILE_MMIO_READS: u32 = 1_000_000;
/// Marks: far more than the socket to a reader that never reads can hold.
const HOSTILE_MARKS: u32 = 100_000;
const HOSTILE_PORTS: u32 = 1000;
/// Windows: far more than the 256 the account keeps.
const HOSTILE_WINDOWS: u32 = 1000;
/// The VMM's peak resident set beyond the guest memory the guest touched:
/// the 32-VM test's budget. (Unbounded tables took 90 MiB for 100,000
/// addresses.)
const HOSTILE_OVERHEAD_BUDGET_KIB: u64 = 10 * 1024;
const MIB: u64 = 1 << 20;

/// The VMM's peak resident set (VmHWM) so far, from /proc.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn counts(table: &serde_json::Value) -> (usize, u64) {
    let table = table.as_object().unwrap();
    let sum = table
        .values()
        .map(|v| v.get("count").unwrap_or(v).as_u64().unwrap())
        .sum();
    (table.len(), sum)
}

/// Issue 12: a guest that touches a million distinct MMIO addresses, floods
/// the boot-marker port while the reader of marker.sock never reads,
/// probes a thousand absent ports and marks a thousand benchmark windows
/// cannot make the VMM grow or stall: the VM
/// ends on its own with its account written, every table is bounded with
/// exact totals beside it, the marks the reader did not take are dropped
/// and counted, vmm.json stays under 1 MiB and the VMM's own memory within
/// its budget. `--nocapture` prints the figures.
#[test]
fn a_hostile_guest_cannot_make_the_vmm_grow_or_stall() {
    if !have_kvm("a_hostile_guest_cannot_make_the_vmm_grow_or_stall") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    let code = hostile_guest(
        HOSTILE_MMIO_READS,
        HOSTILE_MARKS,
        HOSTILE_PORTS,
        HOSTILE_WINDOWS,
    );
    std::fs::write(&kernel, tiny_elf(&code)).unwrap();
    // The reader takes the connection and never reads from it.
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("marker.sock")).unwrap();
    let reader = std::thread::spawn(move || listener.accept().unwrap().0);
    let started = std::time::Instant::now();
    // vmbench-vmm itself, so /proc shows the VMM's own peak from the start.
    let mut child = backend_vmm_command(&kernel, dir.path())
        .args(["--mem-mib", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(300) {
            let _ = child.kill();
            panic!("the hostile guest's VMM did not end within 300 s");
        }
        peak_kib = peak_kib.max(vm_hwm_kib(child.id()).unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", dump(&out));
    let mut stream = reader.join().unwrap();
    stream.set_nonblocking(true).unwrap();
    let mut forwarded = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut forwarded);

    let size = std::fs::metadata(dir.path().join("vmm.json"))
        .unwrap()
        .len();
    let account = vmm_json(dir.path());
    assert_eq!(account["end"]["kind"], "reset", "{}", dump(&out));
    assert_follows_its_document(&account, "vmm-json.md");
    let exits = &account["vcpus"][0]["exits"];
    let mmio_reads = u64::from(HOSTILE_MMIO_READS);
    // Every exit counted, the kept addresses and the rest exactly.
    assert_eq!(exits["by_kind"]["mmio_read"]["count"], mmio_reads);
    let (kept, in_kept) = counts(&exits["by_mmio_addr"]);
    assert_eq!(kept, 512, "the first 512 addresses apart");
    assert_eq!(in_kept, 512, "each read once");
    let other = &exits["by_mmio_addr_other"];
    assert_eq!(other["count"], mmio_reads - 512);
    let in_histogram: u64 = other["log2_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(in_histogram, mmio_reads - 512);
    let (kept, in_kept) = counts(&account["unclaimed_mmio"]);
    assert_eq!(kept, 512);
    assert_eq!(
        in_kept + account["unclaimed_mmio_other"].as_u64().unwrap(),
        mmio_reads
    );
    // Ports: 0x80 and the absent ones, 64 apart, the rest together.
    let io = exits["by_kind"]["io_out"]["count"].as_u64().unwrap()
        + exits["by_kind"]["io_in"]["count"].as_u64().unwrap();
    assert_eq!(
        io,
        u64::from(HOSTILE_MARKS + HOSTILE_PORTS + 6 * HOSTILE_WINDOWS)
    );
    let (kept, in_kept) = counts(&exits["by_port"]);
    assert_eq!(kept, 64);
    assert_eq!(
        in_kept + exits["by_port_other"]["count"].as_u64().unwrap(),
        io
    );
    let (kept, in_kept) = counts(&account["unclaimed_ports"]);
    assert_eq!(kept, 64);
    assert_eq!(
        in_kept + account["unclaimed_ports_other"].as_u64().unwrap(),
        u64::from(HOSTILE_PORTS)
    );
    // Marks: the first 1024 kept; every one forwarded or counted as dropped.
    let marks = u64::from(HOSTILE_MARKS);
    assert_eq!(account["boot_markers"].as_array().unwrap().len(), 1024);
    assert_eq!(account["boot_markers_not_kept"], marks - 1024);
    let not_forwarded = account["boot_markers_not_forwarded"].as_u64().unwrap();
    assert!(not_forwarded > 0, "a reader that never reads drops marks");
    assert_eq!(forwarded.len() as u64 + not_forwarded, marks);
    // Windows: the first 256 kept, each complete; their id bytes no marks.
    let windows = account["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 256);
    assert!(windows.iter().all(|w| w["end_ns"].is_u64()));
    assert_eq!(windows[0]["id"], HOSTILE_WINDOWS);
    assert_eq!(account["windows_not_kept"], HOSTILE_WINDOWS - 256);
    // Size and memory.
    assert!(size < MIB, "vmm.json is {size} bytes");
    let memory = &account["memory"];
    let peak_kib = peak_kib.max(memory["max_rss_kib"].as_u64().unwrap());
    let guest_kib = memory["guest_resident_kib"].as_u64().unwrap();
    let overhead_kib = peak_kib.saturating_sub(guest_kib);
    assert!(
        overhead_kib <= HOSTILE_OVERHEAD_BUDGET_KIB,
        "VMM peak {peak_kib} KiB, {guest_kib} KiB of it guest memory: \
         beyond the {HOSTILE_OVERHEAD_BUDGET_KIB} KiB budget"
    );
    println!(
        "hostile guest: {mmio_reads} MMIO reads, {marks} marks, {HOSTILE_PORTS} ports, \
         {HOSTILE_WINDOWS} windows in {took:.1?}; \
         VMM peak RSS {peak_kib} KiB ({guest_kib} KiB guest memory, {overhead_kib} KiB VMM); \
         vmm.json {size} bytes; MMIO exits beyond the table {}; unclaimed MMIO beyond {}; \
         marks not kept {}, forwarded {}, not forwarded {not_forwarded}",
        other["count"],
        account["unclaimed_mmio_other"],
        account["boot_markers_not_kept"],
        forwarded.len(),
    );
}

/// `mov dx, 0x80`, then a benchmark window's mark: `code` (0xB0 start,
/// 0xB1 end) and the window id's two bytes, low first. Clobbers AL and DX.
fn window_mark(code: u8, id: u16) -> Vec<u8> {
    let [low, high] = id.to_le_bytes();
    let mut mark = vec![0x66, 0xba, 0x80, 0x00]; // mov dx, 0x80
    for byte in [code, low, high] {
        mark.extend([0xb0, byte, 0xee]); // mov al, byte; out dx, al
    }
    mark
}

/// `body` `n` times (n ≥ 1), counted in ESI: `body` must keep ESI.
fn repeat(n: u32, body: &[u8]) -> Vec<u8> {
    let mut code = vec![0xbe]; // mov esi, n
    code.extend(n.to_le_bytes());
    code.extend(body);
    code.extend([0xff, 0xce]); // dec esi
    let back = body.len() + 4;
    assert!(back <= 128, "a short jump back");
    code.extend([0x75, (back as u8).wrapping_neg()]); // jnz body
    code
}

/// `mov dx, port`.
fn set_dx(port: u16) -> Vec<u8> {
    let mut code = vec![0x66, 0xba];
    code.extend(port.to_le_bytes());
    code
}

const IN_EAX_DX: &[u8] = &[0xed];
const IN_AL_DX: &[u8] = &[0xec];
/// `xor eax, eax; cpuid` (leaf 0).
const CPUID: &[u8] = &[0x31, 0xc0, 0x0f, 0xa2];
/// `mov al, 0xfe; out 0x64, al` (an i8042 reset), `hlt`.
const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4];

/// Window `id` around `code`.
fn window(id: u16, code: &[u8]) -> Vec<u8> {
    [window_mark(0xb0, id), code.to_vec(), window_mark(0xb1, id)].concat()
}

/// The one window of a guest's account, with its KVM statistics (on a
/// host whose KVM has binary statistics: Linux 5.14 and later, CI's).
fn only_window(account: &serde_json::Value) -> &serde_json::Value {
    let windows = account["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{account}");
    let window = &windows[0];
    assert!(
        window["kvm_stats"]["Ok"].is_object(),
        "KVM's statistics in the window: {window}"
    );
    window
}

fn kvm_delta(window: &serde_json::Value, stat: &str) -> u64 {
    window["kvm_stats"]["Ok"][stat]
        .as_u64()
        .unwrap_or_else(|| panic!("no {stat} in {window}"))
}

const WINDOW_OPS: u32 = 1000;

/// A window around N 4-byte reads of the benchmark port (0x0EE0), which the
/// VMM answers in userspace: exactly N userspace exits in the window, all
/// `io_in` (the marks' own left out), and N of them in the whole account
/// under port 0x0EE0, a claimed port; KVM's statistics over the window
/// count them too (native KVM: exactly N `io_exits`; KVM that emulates
/// guest code counts port I/O as instruction emulation, but every one is
/// still an exit). The last value read, printed on COM1, is the port's.
/// Two vCPUs: the window's snapshot reads the idle one's counters and
/// statistics from the marking vCPU's thread, under the seccomp filters.
#[test]
fn a_window_around_bench_port_reads_holds_exactly_their_exits() {
    let test = "a_window_around_bench_port_reads_holds_exactly_their_exits";
    if !have_kvm(test) {
        return;
    }
    let body = [
        set_dx(0x0ee0),
        repeat(WINDOW_OPS, IN_EAX_DX),
        vec![0x89, 0xc3],
    ]
    .concat(); // mov ebx, eax
    let mut code = window(0x0160, &body);
    code.extend([0x89, 0xd8]); // mov eax, ebx
    code.extend(set_dx(0x3f8));
    code.extend([
        0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08, 0xee,
    ]);
    code.extend([0xb0, b'\n', 0xee]);
    code.extend(RESET);
    let (out, dir) = run_guest_with(&code, &["--vcpus", "2"]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("serial.log")).unwrap(),
        "nebv\n",
        "0x7662656e, little-endian"
    );
    let account = vmm_json(dir.path());
    assert_eq!(account["seccomp"], true);
    assert_follows_its_document(&account, "vmm-json.md");
    let window = only_window(&account);
    assert_eq!(window["id"], 0x0160, "{window}");
    assert_eq!(
        (&window["start_vcpu"], &window["end_vcpu"]),
        (&0.into(), &0.into())
    );
    assert!(
        window["start_ns"].as_u64() < window["end_ns"].as_u64(),
        "{window}"
    );
    let ops = u64::from(WINDOW_OPS);
    let exits = window["exits"].as_object().unwrap();
    assert_eq!(exits.keys().collect::<Vec<_>>(), ["io_in"], "{window}");
    assert_eq!(exits["io_in"]["count"], ops, "{window}");
    assert!(exits["io_in"]["total_ns"].as_u64().unwrap() > 0);
    let vcpu0 = &account["vcpus"][0]["exits"];
    assert_eq!(vcpu0["by_port"]["3808"]["count"], ops, "{account}");
    assert!(
        account["unclaimed_ports"].get("3808").is_none(),
        "{account}"
    );
    // The marks: six port writes to 0x80 in the account, none in the window.
    assert_eq!(vcpu0["by_port"]["128"]["count"], 6, "{account}");
    assert!(account["boot_markers"].as_array().unwrap().is_empty());
    assert!(kvm_delta(window, "exits") >= ops, "{window}");
    let (native, verdict) = kvm_verdict();
    if native {
        assert_eq!(kvm_delta(window, "io_exits"), ops, "{window}");
    } else {
        println!("{verdict}: KVM counts these reads as instruction emulation");
        assert!(kvm_delta(window, "insn_emulation") >= ops, "{window}");
    }
}

/// A window around N `cpuid`: KVM answers them all, no userspace exit.
/// Native KVM exits for each (≥ N `exits`); KVM that emulates guest code
/// emulates each (≥ N `insn_emulation`) and may not exit at all.
#[test]
fn a_window_around_cpuid_has_no_userspace_exit() {
    if !have_kvm("a_window_around_cpuid_has_no_userspace_exit") {
        return;
    }
    let code = [window(1, &repeat(WINDOW_OPS, CPUID)), RESET.to_vec()].concat();
    let (out, dir) = run_guest(&code);
    assert!(out.status.success(), "{}", dump(&out));
    let account = vmm_json(dir.path());
    let window = only_window(&account);
    assert_eq!(window["exits"], serde_json::json!({}), "{window}");
    let ops = u64::from(WINDOW_OPS);
    let (native, _) = kvm_verdict();
    let stat = if native { "exits" } else { "insn_emulation" };
    assert!(kvm_delta(window, stat) >= ops, "{window}");
}

/// Port 0x4d0, the PICs' ELCR, is KVM's in-kernel irqchip's: N byte reads
/// in a window make no userspace exit, and the port never reaches the
/// VMM. KVM's device there is two bytes wide: a 4-byte read of 0x4d0 is
/// not its, and goes to userspace (an unclaimed port) — so a benchmark of
/// the in-kernel round trip reads one byte, as kvm-unit-tests'
/// `inl_from_kernel` does (`inb`).
#[test]
fn the_elcr_port_is_answered_in_the_kernel() {
    if !have_kvm("the_elcr_port_is_answered_in_the_kernel") {
        return;
    }
    let byte_reads = [set_dx(0x4d0), repeat(WINDOW_OPS, IN_AL_DX)].concat();
    let dword_reads = [set_dx(0x4d0), repeat(WINDOW_OPS, IN_EAX_DX)].concat();
    let code = [
        window(1, &byte_reads),
        window(2, &dword_reads),
        RESET.to_vec(),
    ]
    .concat();
    let (out, dir) = run_guest(&code);
    assert!(out.status.success(), "{}", dump(&out));
    let account = vmm_json(dir.path());
    let windows = account["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{account}");
    assert_eq!(windows[0]["exits"], serde_json::json!({}), "{account}");
    let ops = u64::from(WINDOW_OPS);
    assert_eq!(windows[1]["exits"]["io_in"]["count"], ops, "{account}");
    // All the userspace reads of 0x4d0 are the 4-byte ones.
    assert_eq!(
        account["vcpus"][0]["exits"]["by_port"]["1232"]["count"],
        ops
    );
    assert_eq!(account["unclaimed_ports"]["1232"], ops, "{account}");
}

/// 300 windows, each around a few reads of the benchmark port: the first
/// 256 are kept, in order, each with its own reads; the other 44 are
/// counted. `--nocapture` prints what a window mark costs the VMM: the
/// mean handling time of a mark's exits (port 0x80; two of a window's six
/// take a snapshot) beside that of a plain port read (0x0EE0).
#[test]
fn of_300_windows_256_are_kept_and_44_counted() {
    if !have_kvm("of_300_windows_256_are_kept_and_44_counted") {
        return;
    }
    let reads = [set_dx(0x0ee0), repeat(3, IN_EAX_DX)].concat();
    let mut code: Vec<u8> = (0..300u16).flat_map(|id| window(id, &reads)).collect();
    code.extend(RESET);
    let (out, dir) = run_guest(&code);
    assert!(out.status.success(), "{}", dump(&out));
    let account = vmm_json(dir.path());
    assert_follows_its_document(&account, "vmm-json.md");
    let windows = account["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 256);
    assert_eq!(account["windows_not_kept"], 44);
    assert_eq!(account["windows_restarted"], 0);
    assert_eq!(account["window_ends_unmatched"], 0);
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["id"], i, "{w}");
        assert_eq!(w["exits"]["io_in"]["count"], 3, "{w}");
        assert!(w["end_ns"].is_u64(), "{w}");
    }
    let by_port = &account["vcpus"][0]["exits"]["by_port"];
    let mean = |port: &str| {
        let l = &by_port[port];
        l["total_ns"].as_f64().unwrap() / l["count"].as_f64().unwrap()
    };
    assert_eq!(by_port["128"]["count"], 300 * 6);
    let histogram: Vec<String> = by_port["128"]["log2_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{} from {} ns", b[1], 1u64 << b[0].as_u64().unwrap()))
        .collect();
    println!("window mark exits by time taken: {}", histogram.join(", "));
    println!(
        "window marks: {} exits to port 0x80, mean {:.0} ns (max {} ns); reads of port 0x0EE0: {}, mean {:.0} ns",
        by_port["128"]["count"],
        mean("128"),
        by_port["128"]["max_ns"],
        by_port["3808"]["count"],
        mean("3808"),
    );
}

/// Window marks out of order: a start while a window is open keeps the
/// open one as never ended; an end with another id is ignored; a window
/// never ended is kept with null end and counts. Boot marks between them
/// are still marks, and a window's id bytes never are.
#[test]
fn window_marks_out_of_order_are_counted_not_trusted() {
    if !have_kvm("window_marks_out_of_order_are_counted_not_trusted") {
        return;
    }
    let boot_mark = |code: u8| [set_dx(0x80), vec![0xb0, code, 0xee]].concat();
    let code = [
        window_mark(0xb0, 0x6001), // window 0x6001 starts (an id byte 0x60)
        window_mark(0xb0, 2),      // window 2 starts: 0x6001 never ends
        boot_mark(0x61),
        window_mark(0xb1, 3), // no window 3 is open
        window_mark(0xb1, 2),
        window_mark(0xb0, 4), // never ends
        RESET.to_vec(),
    ]
    .concat();
    let (out, dir) = run_guest(&code);
    assert!(out.status.success(), "{}", dump(&out));
    let account = vmm_json(dir.path());
    assert_follows_its_document(&account, "vmm-json.md");
    let windows = account["windows"].as_array().unwrap();
    let summary: Vec<(u64, bool)> = windows
        .iter()
        .map(|w| (w["id"].as_u64().unwrap(), w["end_ns"].is_u64()))
        .collect();
    assert_eq!(
        summary,
        [(0x6001, false), (2, true), (4, false)],
        "{account}"
    );
    for never_ended in [&windows[0], &windows[2]] {
        for field in ["end_vcpu", "exits", "kvm_stats"] {
            assert!(never_ended[field].is_null(), "{never_ended}");
        }
    }
    assert_eq!(account["windows_restarted"], 1);
    assert_eq!(account["window_ends_unmatched"], 1);
    assert_eq!(account["windows_not_kept"], 0);
    let marks: Vec<u64> = account["boot_markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_u64().unwrap())
        .collect();
    assert_eq!(marks, [0x61], "{account}");
}
