//! End to end: root disks. `vmbench rootfs` builds the images, `vmbench boot
//! --rootfs` gives every VM its own qcow2 overlay of one base and boots from
//! it (the agent switches from the initramfs to the disk), under QEMU with
//! TCG here (a Linux guest cannot run on this host's emulated KVM).
//!
//! - Two VMs on overlays of one plain ext4 base report `ok`, with an initrd
//!   phase; the base is never written (its sha256 is unchanged), the overlays
//!   hold what the guests wrote and are removed after the run unless `--keep`.
//! - Bad root disks are refused before any VM starts, with one line.
//! - A full disk while writing the overlays is a clear error leaving nothing.
//! - A Debian bookworm systemd guest (debootstrap, about 35 s, cached in
//!   ~/.cache/vmbench/images) reports systemd's phases, which must agree with
//!   `systemd-analyze time` run in the same guest, and every unit's times.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmbench_e2e::boot::{self, BootTest};
use vmbench_e2e::{
    assert_follows_its_document, can_boot_guests, dump, in_ci, one_line_error, plain_base, results,
    sha256, vmbench,
};

/// `vmbench boot` of `vms` VMs under QEMU and TCG (a Linux guest cannot run
/// on this host's emulated KVM), each from its own overlay of `base`.
fn boot_from(base: &Path, out_dir: &Path, vms: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--accel", "tcg", "--rootfs", base.to_str().unwrap()];
    args.extend(["--vms", vms]);
    args.extend(extra);
    boot::run("qemu", out_dir, &args)
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid only reads this process's credentials.
    unsafe { libc::geteuid() == 0 }
}

/// For a test that needs root for `what`: without it, prints `SKIPPED:`
/// and returns false, or fails under CI, which runs as root.
fn have_root(test: &str, what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "{test}: CI runs as root, which {what} needs");
    println!("SKIPPED: {test}: {what} needs root");
    false
}

#[test]
fn two_vms_boot_from_overlays_of_one_ext4_base() {
    let Some(test) = BootTest::start("two_vms_boot_from_overlays_of_one_ext4_base") else {
        return;
    };
    let base = plain_base(test.dir());
    let before = sha256(&base);
    let run = test.out_dir();
    let out = boot_from(&base, &run, "2", &[]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(sha256(&base), before, "the base image was written to");
    let r = results(&run);
    assert_follows_its_document(&r, "results-json.md");
    let rootfs = &r["environment"]["rootfs"];
    assert_eq!(rootfs["base_sha256"], before.as_str(), "{rootfs}");
    assert_eq!(rootfs["format"], "raw");
    assert_eq!(rootfs["built_by"]["kind"], "plain", "{rootfs}");
    assert!(r["environment"]["kernel_cmdline"]
        .as_str()
        .unwrap()
        .contains("vmbench.root=/dev/vda"));
    for vm in r["vms"].as_array().unwrap() {
        assert_eq!(vm["status"], "ok", "{vm}");
        let phases = &vm["phases_ms"];
        for phase in ["initrd", "guest_initrd", "userspace", "guest_kernel"] {
            assert!(phases[phase].as_f64().unwrap() > 0.0, "{phase}: {vm}");
        }
        assert!(vm["guest_ns"]["root_mounted_ns"].as_u64().unwrap() > 0);
        let overlay = &vm["overlay"];
        assert!(overlay["create_ms"].as_f64().unwrap() > 0.0, "{overlay}");
        assert!(overlay["disk_used_kib"].as_u64().unwrap() > 0, "{overlay}");
        assert_eq!(overlay["kept"], false);
        let path = PathBuf::from(overlay["path"].as_str().unwrap());
        assert!(
            !path.exists(),
            "the overlay was not removed: {}",
            path.display()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("overlays made in"), "{stdout}");
}

/// `--keep`: the overlay stays, names the base as its backing file, and holds
/// the guest's writes (the agent mounted the disk read-write; ext4 wrote its
/// superblock and journal); reading through it shows the base's files.
#[test]
fn kept_overlays_hold_the_guests_writes_over_the_base() {
    let Some(test) = BootTest::start("kept_overlays_hold_the_guests_writes_over_the_base") else {
        return;
    };
    let base = plain_base(test.dir());
    let before = sha256(&base);
    let run = test.out_dir();
    let out = boot_from(&base, &run, "1", &["--keep"]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(sha256(&base), before);
    let overlay = run.join("vm-0/rootfs.qcow2");
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", dump(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["full-backing-filename"].as_str().unwrap(),
        base.canonicalize().unwrap().to_str().unwrap()
    );
    // What the guest wrote is in the overlay, and only there.
    let raw = test.dir().join("through-overlay.raw");
    let convert = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&overlay)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(convert.status.success(), "{}", dump(&convert));
    assert_ne!(
        sha256(&raw),
        before,
        "the guest's writes are not in the overlay"
    );
    let motd = Command::new("debugfs")
        .args(["-R", "cat /etc/motd"])
        .arg(&raw)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&motd.stdout), "vmbench root disk\n");
}

/// `--no-initramfs`: the kernel mounts the disk itself and runs the image's
/// `/sbin/init`, which for a `vmbench rootfs ext4` image is the agent.
#[test]
fn a_plain_image_boots_without_an_initramfs() {
    let Some(test) = BootTest::start("a_plain_image_boots_without_an_initramfs") else {
        return;
    };
    let base = plain_base(test.dir());
    let run = test.out_dir();
    let out = boot_from(&base, &run, "1", &["--no-initramfs"]);
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&run);
    assert_eq!(r["environment"]["initramfs"], "none");
    let cmdline = r["environment"]["kernel_cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains("root=/dev/vda rw") && !cmdline.contains("vmbench.root"),
        "{cmdline}"
    );
    let vm = &r["vms"][0];
    assert_eq!(vm["status"], "ok", "{vm}");
    let phases = &vm["phases_ms"];
    assert!(
        phases["initrd"].is_null() && phases["guest_initrd"].is_null(),
        "{phases}"
    );
    assert!(phases["userspace"].as_f64().unwrap() > 0.0, "{phases}");
    assert!(phases["guest_kernel"].as_f64().unwrap() > 0.0, "{phases}");
    // Without a root disk, --no-initramfs makes no sense.
    let out = vmbench(&["boot", "--no-initramfs"]);
    assert_eq!(out.status.code(), Some(2), "{}", dump(&out));
}

/// One line on stderr naming the problem, exit 2, and no VM started.
fn refused(base: &Path, run: &Path, expect: &str) {
    let stderr = one_line_error(&boot_from(base, run, "1", &[]), 2);
    assert!(stderr.contains(expect), "expected {expect:?}: {stderr}");
    assert!(!run.join("results.json").exists(), "a run was started");
}

#[test]
fn bad_root_disks_are_refused_before_any_vm_starts() {
    let name = "bad_root_disks_are_refused_before_any_vm_starts";
    if !can_boot_guests(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let base = plain_base(dir.path());

    refused(&dir.path().join("absent.ext4"), &run, "absent.ext4");

    let zeros = dir.path().join("zeros.raw");
    std::fs::write(&zeros, vec![0u8; 4 << 20]).unwrap();
    refused(&zeros, &run, "ext4");

    let overlay = dir.path().join("good.qcow2");
    let out = vmbench(&[
        "rootfs",
        "overlay",
        "--base",
        base.to_str().unwrap(),
        "--out",
        overlay.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", dump(&out));
    let bytes = std::fs::read(&overlay).unwrap();

    let truncated = dir.path().join("truncated.qcow2");
    std::fs::write(&truncated, &bytes[..60]).unwrap();
    refused(&truncated, &run, "truncated.qcow2");

    let corrupt = dir.path().join("corrupt.qcow2");
    let mut broken = bytes.clone();
    broken[4..8].copy_from_slice(&[0, 0, 0, 9]); // qcow2 version 9
    std::fs::write(&corrupt, &broken).unwrap();
    refused(&corrupt, &run, "corrupt.qcow2");

    // The overlay names the base by its absolute path: move the base away.
    let moved = dir.path().join("moved.ext4");
    std::fs::rename(&base, &moved).unwrap();
    refused(&overlay, &run, "base.ext4");
}

/// The output directory on a 2 MiB tmpfs: the overlays of 16 VMs (about
/// 200 KiB each) do not fit. The run stops before any VM starts, says why,
/// and leaves no overlay behind.
#[test]
fn a_full_disk_while_writing_overlays_is_a_clear_error() {
    let name = "a_full_disk_while_writing_overlays_is_a_clear_error";
    if !can_boot_guests(name) {
        return;
    }
    if !have_root(name, "mounting a small tmpfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = plain_base(dir.path());
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(mount.status.success(), "{}", dump(&mount));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let run = small.join("run");
    let stderr = one_line_error(&boot_from(&base, &run, "16", &[]), 2);
    assert!(
        stderr.contains("Cannot create the overlay") && stderr.contains("No space left"),
        "{stderr}"
    );
    let left: Vec<String> = walk(&run)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2" || e == "tmp"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// debootstrap needs root: without it, `vmbench rootfs debian` says so in
/// one line. The test runs the command as `nobody` (`setpriv`) when it is
/// root itself, so it runs everywhere.
#[test]
fn debian_without_root_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // An agent `nobody` can read: the check of the agent comes first.
    let agent = dir.path().join("vmbench-init");
    std::fs::copy(vmbench_e2e::agent_bin(), &agent).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out_image = dir.path().join("never.ext4");
    let mut command = Command::new(if is_root() { "setpriv" } else { "env" });
    if is_root() {
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    }
    let out = command
        .arg(vmbench_e2e::vmbench_bin())
        .args(["rootfs", "debian", "--agent"])
        .arg(&agent)
        .arg("--out")
        .arg(&out_image)
        .output()
        .unwrap();
    let stderr = one_line_error(&out, 2);
    assert!(
        stderr.contains("root") && stderr.contains("debootstrap"),
        "{stderr}"
    );
    assert!(!out_image.exists());
}

/// Debian bookworm with systemd, booted from an overlay under QEMU and TCG:
/// the agent reports systemd's own account once the boot has finished.
#[test]
fn debian_systemd_guest_reports_systemds_phases() {
    let name = "debian_systemd_guest_reports_systemds_phases";
    let Some(test) = BootTest::start(name) else {
        return;
    };
    if !have_root(name, "debootstrap") {
        return;
    }
    // Built once into the image cache (about 35 s); later runs reuse it.
    let built = vmbench(&["rootfs", "debian"]);
    assert!(built.status.success(), "{}", dump(&built));
    let image = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let image = PathBuf::from(image.lines().last().unwrap());
    assert!(image.is_file(), "{}: {}", image.display(), dump(&built));
    let before = sha256(&image);

    let run = test.out_dir();
    let out = boot_from(&image, &run, "1", &["--timeout-s", "300"]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(sha256(&image), before, "the base image was written to");
    let r = results(&run);
    assert_follows_its_document(&r, "results-json.md");
    let vm = &r["vms"][0];
    assert_eq!(vm["status"], "ok", "{vm}");
    let sd = &vm["systemd"];
    assert_eq!(sd["agrees_with_analyze"], true, "{}", sd["analyze_time"]);
    assert_eq!(
        sd["system_state"], "running",
        "failed units: {}",
        sd["failed_units"]
    );
    assert!(sd["version"].as_str().unwrap().starts_with("252"), "{sd}");
    for phase in ["kernel", "userspace", "total", "target_reached"] {
        assert!(
            sd["phases_ms"][phase].as_f64().unwrap() > 0.0,
            "{phase}: {sd}"
        );
    }
    let units = sd["units"].as_array().unwrap();
    assert!(units.len() > 50, "{} units", units.len());
    let journald = units
        .iter()
        .find(|u| u["id"] == "systemd-journald.service")
        .expect("journald among the units");
    assert!(journald["active_us"].as_u64().unwrap() > journald["activating_us"].as_u64().unwrap());
    assert!(!journald["after"].as_array().unwrap().is_empty());
    // The host's view beside systemd's: the agent's initramfs, then the real root.
    let phases = &vm["phases_ms"];
    assert!(phases["initrd"].as_f64().unwrap() > 0.0, "{phases}");
    assert!(
        phases["userspace"].as_f64().unwrap() >= sd["phases_ms"]["userspace"].as_f64().unwrap(),
        "the host sees userspace end when Ready arrives, after systemd's finish: {phases} {sd}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("systemd's view"), "{stdout}");

    // The same image booted as the distribution boots itself: no initramfs,
    // systemd as PID 1 from the disk; systemd's "kernel" is then the kernel.
    let direct = test.dir().join("direct");
    let out = boot_from(
        &image,
        &direct,
        "1",
        &["--timeout-s", "300", "--no-initramfs"],
    );
    assert!(out.status.success(), "{}", dump(&out));
    let d = results(&direct);
    let dvm = &d["vms"][0];
    assert_eq!(dvm["status"], "ok", "{dvm}");
    let dsd = &dvm["systemd"];
    assert_eq!(dsd["agrees_with_analyze"], true, "{}", dsd["analyze_time"]);
    assert_eq!(dsd["system_state"], "running", "{}", dsd["failed_units"]);
    assert!(dvm["phases_ms"]["initrd"].is_null(), "{}", dvm["phases_ms"]);
    assert!(
        dvm["phases_ms"]["guest_kernel"].as_f64().unwrap() > 0.0,
        "PID 1's start from systemd: {}",
        dvm["phases_ms"]
    );
    assert_eq!(sha256(&image), before, "the base image was written to");
    println!(
        "{name}: without the initramfs, systemd-analyze time: {}",
        dsd["analyze_time"].as_str().unwrap().replace('\n', " / ")
    );
    println!(
        "{name}: systemd-analyze time in the guest: {}",
        sd["analyze_time"].as_str().unwrap().replace('\n', " / ")
    );
    println!(
        "{name}: vmbench: systemd kernel {} ms, userspace {} ms, total {} ms; host: initrd {} ms, userspace {} ms, total {} ms; overlay {} KiB",
        sd["phases_ms"]["kernel"], sd["phases_ms"]["userspace"], sd["phases_ms"]["total"],
        phases["initrd"], phases["userspace"], phases["total"], vm["overlay"]["disk_used_kib"]
    );
}
