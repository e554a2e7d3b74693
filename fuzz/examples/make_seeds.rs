//! Writes the seed inputs of the targets whose inputs are files or streams
//! vmbench reads (the device targets' seeds are programs, written by
//! `vmbench-vmm`'s `fuzzing` tests). Run from the repository's root:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! It needs qemu-img and qemu-io (the qcow2 seeds are QEMU's own images)
//! and GNU cpio (one cpio seed is GNU cpio's archive).

use std::path::Path;
use std::process::Command;

use vmbench_proto::{
    encode_frame, GuestMarks, GuestMessage, Hello, SystemdReport, SystemdTimestamps, UnitTimes,
    FRAME_HEADER_BYTES, PROTO_VERSION,
};
use vmbench_rootfs::{Compression, Initramfs};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn hello() -> GuestMessage {
    GuestMessage::Hello(Hello {
        proto_version: PROTO_VERSION,
        agent_version: "0.1.0".into(),
        vm_id: 3,
        kernel_release: "6.1.0-vmbench".into(),
        cpus: 1,
        mem_total_kib: 500_000,
        boottime_at_init_ns: 180_000_000,
    })
}

fn ready(systemd_follows: bool) -> GuestMessage {
    GuestMessage::Ready(GuestMarks {
        init_ns: 180_000_000,
        mounts_done_ns: 181_000_000,
        connected_ns: 182_000_000,
        ready_ns: 182_500_000,
        connect_attempts: 1,
        root_mounted_ns: if systemd_follows { 200_000_000 } else { 0 },
        switch_root_ns: if systemd_follows { 201_000_000 } else { 0 },
        service_start_ns: if systemd_follows { 900_000_000 } else { 0 },
        systemd_follows,
        clocksource: "tsc".into(),
    })
}

fn unit(id: &str, activating_us: u64, active_us: u64, after: &[&str]) -> UnitTimes {
    UnitTimes {
        id: id.into(),
        activating_us,
        active_us,
        deactivating_us: 0,
        inactive_us: 0,
        after: after.iter().map(|s| s.to_string()).collect(),
    }
}

/// As host/src/systemd.rs's tests read systemd 252's output.
fn systemd_reports() -> Vec<(&'static str, SystemdReport)> {
    let plain = SystemdReport {
        version: "252.22-1~deb12u1".into(),
        timestamps: SystemdTimestamps {
            userspace_us: 1_234_567,
            finish_us: 37_775_100,
            units_load_start_us: 1_300_000,
            units_load_finish_us: 1_350_000,
            ..SystemdTimestamps::default()
        },
        units: vec![
            unit(
                "multi-user.target",
                37_000_000,
                37_295_567,
                &["basic.target"],
            ),
            unit("basic.target", 2_000_000, 2_100_000, &[]),
            unit(
                "vmbench-agent.service",
                36_000_000,
                36_900_000,
                &["basic.target"],
            ),
        ],
        default_target: "multi-user.target".into(),
        system_state: "running".into(),
        failed_units: vec![],
        analyze_time: "Startup finished in 1.234s (kernel) + 36.540s (userspace) = 37.775s \n\
                       multi-user.target reached after 36.061s in userspace.\n"
            .into(),
        problems: vec![],
    };
    let efi = SystemdReport {
        timestamps: SystemdTimestamps {
            firmware_us: 3_000_000,
            loader_us: 1_000_000,
            initrd_us: 800_000,
            userspace_us: 2_300_000,
            finish_us: 5_300_000,
            ..SystemdTimestamps::default()
        },
        default_target: "graphical.target".into(),
        system_state: "degraded".into(),
        failed_units: vec!["systemd-networkd-wait-online.service".into()],
        analyze_time: "Startup finished in 2.000s (firmware) + 1.000s (loader) + 800ms (kernel) + 1.500s (initrd) + 3.000s (userspace) = 8.300s".into(),
        problems: vec!["systemctl list-units --failed timed out".into()],
        ..plain.clone()
    };
    vec![("systemd-252", plain), ("efi-initrd-degraded", efi)]
}

fn frames(messages: &[GuestMessage]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| encode_frame(m).unwrap())
        .collect()
}

fn streams() {
    let reports = systemd_reports();
    let failed = GuestMessage::Failed {
        what: "Cannot mount /dev/vda on /mnt: No such device".into(),
    };
    let cases = [
        ("hello-ready", frames(&[hello(), ready(false)])),
        (
            "hello-ready-systemd",
            frames(&[
                hello(),
                ready(true),
                GuestMessage::Systemd(reports[0].1.clone()),
            ]),
        ),
        ("hello-failed", frames(&[hello(), failed])),
    ];
    for (name, stream) in cases {
        // The first byte picks the chunk size: 32 bytes, and 1 byte.
        for (chunk, suffix) in [(31u8, ""), (0, "-bytewise")] {
            let mut input = vec![chunk];
            input.extend_from_slice(&stream);
            write("frame_decoder", &format!("{name}{suffix}"), &input);
            write("collector_session", &format!("{name}{suffix}"), &input);
        }
    }
    for (name, report) in reports {
        let frame = encode_frame(&report).unwrap();
        write("systemd_record", name, &frame[FRAME_HEADER_BYTES..]);
    }
}

fn cpio() {
    let mut image = Initramfs::new();
    image
        .add_file("init", 0o755, b"#!/bin/sh\nexec /bin/true\n".to_vec())
        .unwrap();
    for dir in ["dev", "proc", "sys"] {
        image.add_dir(dir, 0o755).unwrap();
    }
    image.add_symlink("sbin/init", "/init").unwrap();
    image.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
    write(
        "cpio_reader",
        "rootfs-builder",
        &image.encode(Compression::None),
    );
    write(
        "cpio_reader",
        "rootfs-builder-gzip",
        &image.encode(Compression::Gzip),
    );
    // GNU cpio's own newc (names with "./", other padding choices).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("init"), b"#!/bin/sh\n").unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf './init\\n./etc\\n' | cpio --quiet -o -H newc")
        .current_dir(dir.path())
        .output()
        .expect("GNU cpio");
    assert!(out.status.success());
    write("cpio_reader", "gnu-cpio", &out.stdout);
}

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
}

/// A chain seed: 1 + (n % 3) files, each but the last after a u16 length.
fn chain(dir: &Path, files: &[&str]) -> Vec<u8> {
    let mut out = vec![(files.len() - 1) as u8];
    for (i, name) in files.iter().enumerate() {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        if i + 1 < files.len() {
            out.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_le_bytes());
        }
        out.extend_from_slice(&bytes);
    }
    out
}

fn qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Small clusters keep the files a few KiB.
    let small = "cluster_size=512";
    run(d, &["qemu-img", "create", "-q", "-f", "raw", "img1", "2K"]);
    run(
        d,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-o", small, "img0", "64K",
        ],
    );
    write("qcow2_chain", "qcow2-empty", &chain(d, &["img0"]));
    run(d, &["qemu-io", "-c", "write -P 0x5a 1024 1536", "img0"]);
    write("qcow2_chain", "qcow2-written", &chain(d, &["img0"]));
    write("qcow2_chain", "raw", &chain(d, &["img1"]));
    let over_raw = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", small];
    run(
        d,
        &[&over_raw[..], &["-b", "img1", "-F", "raw", "img0", "8K"]].concat(),
    );
    run(d, &["qemu-io", "-c", "write -P 0x11 0 512", "img0"]);
    write(
        "qcow2_chain",
        "qcow2-over-raw",
        &chain(d, &["img0", "img1"]),
    );
    std::fs::rename(d.join("img1"), d.join("img2")).unwrap();
    run(
        d,
        &[&over_raw[..], &["-b", "img2", "-F", "raw", "img1", "8K"]].concat(),
    );
    run(d, &["qemu-io", "-c", "write -P 0x22 512 512", "img1"]);
    run(
        d,
        &[&over_raw[..], &["-b", "img1", "-F", "qcow2", "img0", "8K"]].concat(),
    );
    run(d, &["qemu-io", "-c", "write -P 0x33 1024 512", "img0"]);
    write(
        "qcow2_chain",
        "qcow2-over-qcow2-over-raw",
        &chain(d, &["img0", "img1", "img2"]),
    );
}

fn main() {
    streams();
    cpio();
    qcow2();
}
