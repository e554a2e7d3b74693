//! End to end: `vmbench boot --backend kvm` runs Linux guests with vmbench's
//! own VMM (one `vmbench vmm` per VM) and the same agent, collector and
//! results as the qemu backend.
//!
//! A whole boot needs native KVM. On a host whose KVM emulates guest code
//! (nested, like the development machines) the kvm backend gives the guest
//! `noxsave` and turns on the VMM's emulated-KVM fallback, and Linux gets as
//! far as `Run /init`; its init then dies at its first system call, which
//! such a host never hands to the VMM. There the tests check the kernel's
//! whole path through our VMM instead: the kernel reached `Run /init`,
//! Linux's own drivers set our virtio devices up (DRIVER_OK, every feature
//! we offer accepted), nothing touched an address no device claims, the
//! `vmm` and `kernel` phases are filled in, and the VM is `failed` with the
//! one-line reason, never a timeout.

use vmbench_e2e::boot::{self, BootTest};
use vmbench_e2e::{assert_follows_its_document, dump, kvm_verdict, plain_base, results, sha256};

#[test]
fn linux_guests_boot_under_the_kvm_backend() {
    let name = "linux_guests_boot_under_the_kvm_backend";
    let Some(test) = BootTest::start_with_kvm(name) else {
        return;
    };
    let (native, verdict) = kvm_verdict();
    let out_dir = test.out_dir();
    let vms = if native { "2" } else { "1" };
    let out = boot::run(
        "kvm",
        &out_dir,
        &["--vms", vms, "--timeout-s", "60", "--exits"],
    );
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    assert_eq!(r["environment"]["backend"], "kvm");
    let vm = &r["vms"][0];
    assert_eq!(vm["backend"], "kvm");
    // Whatever happened next, the VMM ran the guest and accounted for it.
    // (How fast it gets there is the vmm_startup benchmark's to say.)
    let vmm_ms = vm["phases_ms"]["vmm"].as_f64().unwrap();
    assert!(vmm_ms > 0.0, "{vm}");
    let vcpu = &vm["exits"]["vcpus"][0];
    assert!(
        vcpu["exits"]["by_port"]["1016"]["count"].as_u64().unwrap() > 0,
        "serial output goes through userspace exits: {vm}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("exits handled in userspace") && stdout.contains("io port 0x3f8"),
        "{}",
        dump(&out)
    );
    if native {
        assert!(out.status.success(), "{}", dump(&out));
        assert!(stdout.contains("2/2 VMs ok"), "{}", dump(&out));
        for vm in r["vms"].as_array().unwrap() {
            let phases = &vm["phases_ms"];
            for phase in ["total", "vmm", "kernel", "userspace", "guest_kernel"] {
                assert!(phases[phase].as_f64().unwrap() > 0.0, "{phase}: {vm}");
            }
            assert_eq!(vm["guest"]["cpus"], 1);
        }
    } else {
        println!(
            "{name}: KVM here is not native ({verdict}): checking the kernel's path to Run /init"
        );
        reached_run_init_on_emulated_kvm(&out, vm, &out_dir.join("vm-0"));
        let env = &r["environment"];
        assert_eq!(env["emulated_kvm"]["cmdline"], "noxsave", "{env}");
        assert!(
            env["kernel_cmdline"].as_str().unwrap().contains("noxsave"),
            "{env}"
        );
        let devices = &vm["exits"]["devices"];
        set_up_by_linux(devices, "0xd0000000:19");
    }
}

/// What a kvm-backend VM on KVM that emulates guest code must show: the
/// kernel reached `Run /init` (its console and the VMM's mark), the VM
/// failed with the reason (the host cannot run guest userspace) and not a
/// timeout, the `vmm` and `kernel` phases are there, no MMIO went
/// unclaimed, and the VMM completed the instructions KVM's emulator refused.
fn reached_run_init_on_emulated_kvm(
    out: &std::process::Output,
    vm: &serde_json::Value,
    dir: &std::path::Path,
) {
    assert_eq!(out.status.code(), Some(1), "{}", dump(out));
    assert_eq!(vm["status"], "failed", "{vm}");
    let error = vm["error"].as_str().unwrap();
    assert!(
        error.contains("reached Run /init") && error.contains("cannot run guest userspace"),
        "{error}"
    );
    let serial = std::fs::read_to_string(dir.join("serial.log")).unwrap();
    assert!(serial.contains("Run /init as init process"), "{serial}");
    let phases = &vm["phases_ms"];
    for phase in ["vmm", "kernel"] {
        assert!(phases[phase].as_f64().unwrap_or(0.0) > 0.0, "{phase}: {vm}");
    }
    let host = &vm["host_ns"];
    assert!(
        host["run_init"].as_u64() > host["vmm_ready"].as_u64(),
        "{host}"
    );
    let exits = &vm["exits"];
    assert_eq!(exits["unclaimed_mmio"], serde_json::json!({}), "{exits}");
    let recovered = exits["emulated_kvm"]["recovered"].as_object().unwrap();
    assert!(recovered.values().any(|n| n.as_u64() > Some(0)), "{exits}");
}

/// Linux's driver set the device in this slot up: DRIVER_OK, and every
/// feature the device offers accepted (VERSION_1 among them).
fn set_up_by_linux(devices: &serde_json::Value, slot: &str) {
    let device = &devices[slot];
    assert_eq!(device["driver_status"], 15, "not DRIVER_OK: {devices}");
    let offered = device["offered_features"].as_u64().unwrap();
    assert_eq!(
        device["accepted_features"].as_u64(),
        Some(offered),
        "{devices}"
    );
    assert_ne!(offered & (1 << 32), 0, "no VERSION_1: {devices}");
}

#[test]
fn kvm_and_qemu_side_by_side() {
    let Some(test) = BootTest::start_with_kvm("kvm_and_qemu_side_by_side") else {
        return;
    };
    let (native, _) = kvm_verdict();
    let out_dir = test.out_dir();
    let out = boot::run("kvm,qemu", &out_dir, &["--vms", "1", "--timeout-s", "120"]);
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    assert_eq!(r["environment"]["backend"], "kvm,qemu");
    let vms = r["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    // Interleaved: even ids kvm, odd ids qemu.
    assert_eq!(
        (vms[0]["backend"].as_str(), vms[1]["backend"].as_str()),
        (Some("kvm"), Some("qemu"))
    );
    assert_eq!(vms[1]["status"], "ok", "{}", dump(&out));
    let by_backend = &r["aggregate_by_backend"];
    assert_eq!(by_backend["qemu"]["ok"], 1);
    assert_eq!(by_backend["kvm"]["vms"], 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout
        .lines()
        .find(|l| l.starts_with("phase, median"))
        .unwrap_or_else(|| panic!("no side-by-side table: {}", dump(&out)));
    assert!(
        header.contains("kvm") && header.contains("qemu"),
        "{header}"
    );
    if native {
        assert!(out.status.success(), "{}", dump(&out));
    } else {
        assert_eq!(vms[0]["status"], "failed");
        assert_eq!(out.status.code(), Some(1));
    }
}

/// `--rootfs` on the kvm backend: each VM's overlay becomes the VMM's
/// virtio-blk disk (`vmbench vmm --disk`), the first device, `/dev/vda`.
#[test]
fn kvm_backend_boots_from_overlays_of_a_root_disk() {
    let name = "kvm_backend_boots_from_overlays_of_a_root_disk";
    let Some(test) = BootTest::start_with_kvm(name) else {
        return;
    };
    let (native, verdict) = kvm_verdict();
    let base = plain_base(test.dir());
    let before = sha256(&base);
    let out_dir = test.out_dir();
    let vms = if native { "2" } else { "1" };
    let out = boot::run(
        "kvm",
        &out_dir,
        &[
            "--rootfs",
            base.to_str().unwrap(),
            "--vms",
            vms,
            "--timeout-s",
            "60",
        ],
    );
    assert_eq!(sha256(&base), before, "the base was written to");
    let r = results(&out_dir);
    for vm in r["vms"].as_array().unwrap() {
        // The VMM had the overlay as its first device, a virtio-blk disk.
        let devices = &vm["exits"]["devices"];
        let disk = &devices["0xd0000000:2"];
        assert!(disk.is_object(), "no block device in slot 0: {devices}");
        assert_eq!(disk["read_only"], 0, "{disk}");
        // The VMM was confined, and took the overlay as the qcow2 vmbench
        // stated (it refuses a writable disk whose format is not stated).
        assert_eq!(vm["exits"]["seccomp"], true, "{vm}");
        assert_eq!(disk["chain_images"], 2, "{disk}");
        assert!(
            devices["0xd0001000:19"].is_object(),
            "vsock moved to slot 1: {devices}"
        );
        assert_eq!(vm["overlay"]["kept"], false, "{vm}");
    }
    if native {
        assert!(out.status.success(), "{}", dump(&out));
        for vm in r["vms"].as_array().unwrap() {
            assert_eq!(vm["status"], "ok", "{vm}");
            assert!(vm["phases_ms"]["initrd"].as_f64().unwrap() > 0.0, "{vm}");
            let disk = &vm["exits"]["devices"]["0xd0000000:2"];
            assert!(disk["reads"].as_u64().unwrap_or(0) > 0, "{disk}");
        }
    } else {
        println!("{name}: KVM here is not native ({verdict}): checking the kernel's path to Run /init with the disk");
        let vm = &r["vms"][0];
        reached_run_init_on_emulated_kvm(&out, vm, &out_dir.join("vm-0"));
        set_up_by_linux(&vm["exits"]["devices"], "0xd0000000:2");
        set_up_by_linux(&vm["exits"]["devices"], "0xd0001000:19");
    }
}
