//! Helpers for vmbench's end-to-end tests: find the real binaries, decide
//! whether a test can run here, and read results.json; `boot` runs `vmbench
//! boot`, `vmm` runs `vmbench vmm`, `vsock` is the host's side of the vsock
//! test guest.
//!
//! A test that needs something this machine lacks prints `SKIPPED: <reason>`
//! and returns; under CI (`CI=true`) a missing package or kernel is a failure
//! instead, since the setup script installs them. Only native KVM may be
//! skipped there: no install step can provide it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod boot;
pub mod vmm;
pub mod vsock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `vmbench` binary of the same profile as this test.
pub fn vmbench_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VMBENCH_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> -> target/<profile>/vmbench
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("vmbench");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// The static guest agent built by scripts/build-agent.sh.
pub fn agent_bin() -> PathBuf {
    workspace().join("target/x86_64-unknown-linux-gnu/release/vmbench-init")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// For a test that cannot run here: prints `SKIPPED: <test>: <reason>`, or
/// panics under CI, where every install step has run and nothing may be
/// missing.
pub fn skip_unless_ci(test: &str, reason: &str) {
    assert!(
        !in_ci(),
        "{test}: under CI every install step has run, yet {reason}"
    );
    println!("SKIPPED: {test}: {reason}");
}

/// Whether `vmbench doctor` says guests can boot here. When they cannot, prints
/// `SKIPPED: <reason>` and returns false, or panics under CI.
pub fn can_boot_guests(test: &str) -> bool {
    let out = Command::new(vmbench_bin())
        .arg("doctor")
        .output()
        .expect("run vmbench doctor");
    if out.status.success() && agent_bin().is_file() {
        return true;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("MISSING") || l.contains("fix:"))
        .collect();
    let reason = if agent_bin().is_file() {
        format!("vmbench doctor: {}", missing.join("; "))
    } else {
        format!(
            "the static agent {} is not built (scripts/build-agent.sh)",
            agent_bin().display()
        )
    };
    skip_unless_ci(test, &reason);
    false
}

/// Runs vmbench with `args`; returns its output.
pub fn vmbench(args: &[&str]) -> Output {
    Command::new(vmbench_bin())
        .args(args)
        .env("VMBENCH_AGENT", agent_bin())
        .output()
        .expect("run vmbench")
}

pub fn results(out_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out_dir.join("results.json")).expect("results.json exists");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// A readable dump of a command's output, for assertion messages.
pub fn dump(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Checks that `out` failed with exit `code` and said why in one line on
/// stderr; returns stderr.
pub fn one_line_error(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", dump(out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// A minimal x86-64 ELF executable: one PT_LOAD at 1 MiB holding the headers
/// and then `code`, entered at the first byte of `code`. Enough for
/// linux-loader, and for hand-assembled guests that need no Linux.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const LOAD_ADDR: u64 = 0x10_0000;
    const HEADERS_BYTES: u64 = 64 + 56;
    let total = HEADERS_BYTES + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(LOAD_ADDR + HEADERS_BYTES).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, LOAD_ADDR, LOAD_ADDR, total, total, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(elf.len() as u64, HEADERS_BYTES);
    elf.extend_from_slice(code);
    elf
}

/// Whether /dev/kvm can run a VM here; prints `SKIPPED:` when it cannot.
/// (No install step gives a host KVM, so this may skip under CI too.)
pub fn have_kvm(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED: {test}: cannot open /dev/kvm: {e}");
            false
        }
    }
}

/// `vmbench doctor`'s KVM line ("kvm  <level>  native: …", "… emulated: …"
/// or "… absent (…)") and whether it says native.
pub fn kvm_verdict() -> (bool, String) {
    let doctor = Command::new(vmbench_bin()).arg("doctor").output().unwrap();
    let line = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .find(|l| l.starts_with("kvm "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "vmbench doctor printed no kvm line".into());
    let native = line.split_whitespace().nth(2) == Some("native:");
    (native, line)
}

/// SHA-256 of a file, hex (by `sha256sum`).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", dump(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A small plain root tree with a marker file (`/etc/motd`), built into
/// the raw ext4 image `<dir>/base.ext4` by `vmbench rootfs ext4`.
pub fn plain_base(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "vmbench root disk\n").unwrap();
    let base = dir.join("base.ext4");
    let out = vmbench(&[
        "rootfs",
        "ext4",
        "--from",
        tree.to_str().unwrap(),
        "--out",
        base.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", dump(&out));
    base
}
