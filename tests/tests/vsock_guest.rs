//! End to end: the freestanding vsock test guest (tests/vsock-guest).
//!
//! - Under QEMU microvm (TCG) with vhost-user-vsock-device and
//!   vhost-device-vsock, the reference that shows the guest itself is right:
//!   it connects to a host listener and echoes, accepts a host connection and
//!   echoes, and fails cleanly when nothing listens.
//! - Under vmbench's own VMM (`vmbench vmm --vsock-cid 3`), which runs it
//!   even where KVM only emulates guest code: the same three exchanges
//!   through vmbench's virtio-vsock device, with a refusal that must be an
//!   RST, and the device's counters in vmm.json; both entry points reach the
//!   guest's code.
//! - The ELF itself: one segment at 1 MiB, both entry points, no SSE.
//!
//! The host-side checks live in `vmbench_e2e::vsock` and run unchanged
//! against both VMMs.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vmbench_e2e::elf::{assert_no_sse, assert_static_at_1_mib_with_both_entries};
use vmbench_e2e::vmm::{vmm_command, vmm_json};
use vmbench_e2e::vsock::{
    built_vsock_guest, connect_and_echo, expect_done, expect_error, find_program, guest_lines,
    patterned_bytes, serve_guest_connection, vsock_guest_bin, wait_for_path, Check, KillOnDrop,
};
use vmbench_e2e::{have_kvm, skip_unless_ci};

const GUEST_CID: u32 = 3;
/// The VMM's start to its exit. The guest itself needs well under a second
/// under TCG; its own waits are about 10 s each.
const VM_TIMEOUT: Duration = Duration::from_secs(90);
/// One host-side step: a connection, an echo, a close.
const STEP_TIMEOUT: Duration = Duration::from_secs(45);
/// More than one credit window (the guest's buffer is 16 KiB,
/// vhost-device-vsock's 64 KiB) and many packets (at most 4052 bytes each).
const ECHO_BYTES: usize = 100 * 1024;

/// A VM's directory, whichever VMM runs it: logs, and the host end of the
/// guest's vsock (`CONNECT <port>` at `vsock.sock`; guest connections to
/// host port P arrive at `vsock.sock_P`).
struct GuestDir(tempfile::TempDir);

impl GuestDir {
    fn new() -> Self {
        GuestDir(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn uds(&self) -> PathBuf {
        self.path("vsock.sock")
    }

    /// Listens where the guest's connections to host `port` arrive.
    fn listen(&self, port: u32) -> UnixListener {
        UnixListener::bind(self.path(&format!("vsock.sock_{port}"))).unwrap()
    }

    /// A file's text, empty if it is not there.
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// A log file for a child's stdout and stderr both.
    fn log_file(&self, name: &str) -> (Stdio, Stdio) {
        let file = std::fs::File::create(self.path(name)).unwrap();
        let again = file.try_clone().unwrap();
        (file.into(), again.into())
    }
}

/// The VMM that runs the guest.
enum Vmm {
    /// QEMU microvm with vhost-user-vsock-device, served by
    /// vhost-device-vsock: the reference.
    Qemu {
        qemu_bin: PathBuf,
        vhost_bin: PathBuf,
    },
    /// `vmbench vmm`, entered at `entry`; with a vsock device (CID 3) when
    /// `vsock`.
    Ours { entry: &'static str, vsock: bool },
}

impl Vmm {
    fn name(&self) -> String {
        match self {
            Vmm::Qemu { .. } => "QEMU".into(),
            Vmm::Ours { entry, .. } => format!("vmbench vmm (entry {entry})"),
        }
    }

    /// Everything in `dir` that tells what happened, for a failure message.
    fn logs(&self, dir: &GuestDir) -> String {
        let names: &[&str] = match self {
            Vmm::Qemu { .. } => &["serial.log", "qemu.log", "vhost.log"],
            Vmm::Ours { .. } => &["serial.log", "vmm.log"],
        };
        names
            .iter()
            .map(|name| format!("--- {name}\n{}", dir.read(name)))
            .collect()
    }

    /// Starts the guest in `dir` with `cmdline`: the VMM, and the backend it
    /// needs first if it has one.
    fn start(&self, dir: &GuestDir, cmdline: &str) -> (KillOnDrop, Option<KillOnDrop>) {
        match self {
            Vmm::Qemu {
                qemu_bin,
                vhost_bin,
            } => {
                let vhost = self.start_vhost(dir, vhost_bin);
                (self.start_qemu(dir, qemu_bin, cmdline), Some(vhost))
            }
            Vmm::Ours { entry, vsock } => (self.start_ours(dir, entry, *vsock, cmdline), None),
        }
    }

    /// Starts vhost-device-vsock and waits for its socket (QEMU fails
    /// without it).
    fn start_vhost(&self, dir: &GuestDir, vhost_bin: &Path) -> KillOnDrop {
        let vhost_socket = dir.path("vhu.sock");
        let vm = format!(
            "guest-cid={GUEST_CID},socket={},uds-path={}",
            vhost_socket.display(),
            dir.uds().display()
        );
        let (stdout, stderr) = dir.log_file("vhost.log");
        let vhost = KillOnDrop::spawn(
            "vhost-device-vsock",
            Command::new(vhost_bin)
                .args(["--vm", &vm])
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr),
        )
        .unwrap();
        if let Err(e) = wait_for_path(&vhost_socket, STEP_TIMEOUT) {
            panic!("{e}\n{}", self.logs(dir));
        }
        vhost
    }

    fn start_qemu(&self, dir: &GuestDir, qemu_bin: &Path, append: &str) -> KillOnDrop {
        let serial = format!("file:{}", dir.path("serial.log").display());
        let chardev = format!("socket,id=c0,path={}", dir.path("vhu.sock").display());
        let (stdout, stderr) = dir.log_file("qemu.log");
        KillOnDrop::spawn(
            "qemu",
            Command::new(qemu_bin)
                .args(["-M", "microvm,acpi=off", "-accel", "tcg", "-m", "64"])
                .args([
                    "-nographic",
                    "-no-reboot",
                    "-nodefaults",
                    "-serial",
                    &serial,
                ])
                .args(["-object", "memory-backend-memfd,id=mem,size=64M,share=on"])
                .args(["-machine", "memory-backend=mem", "-chardev", &chardev])
                .args(["-device", "vhost-user-vsock-device,chardev=c0"])
                .args(["-global", "virtio-mmio.force-legacy=false"])
                .arg("-kernel")
                .arg(vsock_guest_bin())
                .args(["-append", append])
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr),
        )
        .unwrap()
    }

    fn start_ours(&self, dir: &GuestDir, entry: &str, vsock: bool, cmdline: &str) -> KillOnDrop {
        let (stdout, stderr) = dir.log_file("vmm.log");
        let mut command = vmm_command(&vsock_guest_bin(), dir.0.path());
        command.args(["--mem-mib", "64", "--entry", entry, "--cmdline", cmdline]);
        if vsock {
            command.args(["--vsock-cid", &GUEST_CID.to_string()]);
        }
        let command = command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        KillOnDrop::spawn("vmbench vmm", command).unwrap()
    }
}

/// The guest under one VMM, in a directory of its own. Fields drop in
/// order: the VMM is killed first, then its backend, then the directory
/// goes.
struct Guest {
    vm: Option<KillOnDrop>,
    backend: Option<KillOnDrop>,
    dir: GuestDir,
    vmm: Vmm,
}

impl Guest {
    fn new(vmm: Vmm) -> Guest {
        Guest {
            vm: None,
            backend: None,
            dir: GuestDir::new(),
            vmm,
        }
    }

    /// Under QEMU; `None` (after printing why, or failing under CI) when
    /// QEMU, vhost-device-vsock or the built guest is missing.
    fn under_qemu(test: &str) -> Option<Guest> {
        let qemu_bin = find_program("qemu-system-x86_64");
        let vhost_bin = find_program("vhost-device-vsock");
        let missing = match (&qemu_bin, &vhost_bin) {
            (None, _) => Some("qemu-system-x86_64"),
            (_, None) => Some("vhost-device-vsock"),
            _ => None,
        };
        if let Some(program) = missing {
            skip_unless_ci(
                test,
                &format!("{program} is not installed (scripts/setup.sh)"),
            );
            return None;
        }
        built_vsock_guest(test)?;
        Some(Guest::new(Vmm::Qemu {
            qemu_bin: qemu_bin.unwrap(),
            vhost_bin: vhost_bin.unwrap(),
        }))
    }

    /// Under `vmbench vmm`, entered at `entry`, with a vsock device when
    /// `vsock`; `None` (after printing why, or failing under CI) without the
    /// built guest or /dev/kvm.
    fn under_vmbench_vmm(test: &str, entry: &'static str, vsock: bool) -> Option<Guest> {
        built_vsock_guest(test)?;
        have_kvm(test).then(|| Guest::new(Vmm::Ours { entry, vsock }))
    }

    fn boot(&mut self, cmdline: &str) {
        let (vm, backend) = self.vmm.start(&self.dir, cmdline);
        (self.vm, self.backend) = (Some(vm), backend);
    }

    /// Passes a host-side step, or fails the test with every log.
    fn check(&self, step: Check<()>) {
        if let Err(e) = step {
            panic!("{}: {e}\n{}", self.vmm.name(), self.logs());
        }
    }

    /// Waits for the guest to end its VM (QEMU exits on its triple fault,
    /// ours on its reset) and returns the serial log.
    fn finish(&mut self) -> String {
        let vm = self.vm.as_mut().expect("booted");
        match vm.wait_timeout(VM_TIMEOUT) {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("{} failed: {status}\n{}", self.vmm.name(), self.logs()),
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
        self.dir.read("serial.log")
    }

    /// vmbench vmm's account of the run, once finished.
    fn report(&self) -> serde_json::Value {
        vmm_json(self.dir.0.path())
    }

    fn logs(&self) -> String {
        self.vmm.logs(&self.dir)
    }

    /// `vsockguest.connect=5000`: the guest connects to host port 5000,
    /// greets with `tok-1` and echoes `data`, the host serving it; the guest
    /// reports the echo done.
    fn echo_as_client(&mut self, data: &[u8]) {
        let listener = self.dir.listen(5000);
        self.boot("vsockguest.connect=5000 vsockguest.message=tok-1");
        self.check(serve_guest_connection(
            &listener,
            b"tok-1\n",
            data,
            STEP_TIMEOUT,
        ));
        let serial = self.finish();
        expect_done(&serial, "connect", 5000, data.len()).unwrap();
    }

    /// `vsockguest.listen=6000`: the host connects to guest port 6000 and
    /// echoes `data` through it; the guest reports the echo done.
    fn echo_as_server(&mut self, data: &[u8]) {
        self.boot("vsockguest.listen=6000");
        // CONNECT is retried until the guest answers: it may still be booting.
        self.check(connect_and_echo(&self.dir.uds(), 6000, data, STEP_TIMEOUT));
        let serial = self.finish();
        expect_done(&serial, "listen", 6000, data.len()).unwrap();
    }
}

#[test]
fn connect_mode_greets_and_echoes_100_kib_under_qemu() {
    let Some(mut guest) = Guest::under_qemu("connect_mode_greets_and_echoes_100_kib_under_qemu")
    else {
        return;
    };
    guest.echo_as_client(&patterned_bytes(ECHO_BYTES, 1));
}

#[test]
fn listen_mode_accepts_the_host_and_echoes_under_qemu() {
    let Some(mut guest) = Guest::under_qemu("listen_mode_accepts_the_host_and_echoes_under_qemu")
    else {
        return;
    };
    guest.echo_as_server(&patterned_bytes(ECHO_BYTES, 2));
}

/// A spec-following backend answers a REQUEST nobody listens for with RST,
/// and the guest reports `error=refused port=<port>` (Firecracker does, and
/// so must vmbench's VMM: check it there with
/// `expect_error(serial, "refused port=…")`). vhost-device-vsock does not:
/// its `enq_rst()` is an empty TODO (0.3.0, and upstream still), so the guest
/// hears nothing and reports a timeout once its wait, shortened here to
/// 3×10^9 ticks (about a second), has passed: with the 0.3.0 that
/// scripts/setup.sh installs, that timeout is the one outcome. (A version
/// that answers with RST fails this test: it should then expect `refused`.)
#[test]
fn connect_to_a_port_nobody_listens_on_fails_under_qemu() {
    let Some(mut guest) = Guest::under_qemu("connect_to_a_port_nobody_listens_on_fails_under_qemu")
    else {
        return;
    };
    guest.boot("vsockguest.connect=5999 vsockguest.wait_ticks=3000000000");
    let serial = guest.finish();
    expect_error(&serial, "timeout waiting=response").unwrap();
}

/// The vsock device's counters in vmm.json.
fn vsock_counters(report: &serde_json::Value) -> &serde_json::Value {
    &report["devices"]["0xd0000000:19"]
}

#[test]
fn connect_mode_greets_and_echoes_100_kib_under_vmbench_vmm() {
    for entry in ["pvh", "linux64"] {
        let test = "connect_mode_greets_and_echoes_100_kib_under_vmbench_vmm";
        let Some(mut guest) = Guest::under_vmbench_vmm(test, entry, true) else {
            return;
        };
        let data = patterned_bytes(ECHO_BYTES, 3);
        guest.echo_as_client(&data);
        let report = guest.report();
        assert_eq!(report["end"]["kind"], "reset", "{report}");
        let counters = vsock_counters(&report);
        assert_eq!(counters["connections_from_guest"], 1, "{counters}");
        // The greeting and the echo went to the host; the data came to the guest.
        assert_eq!(
            counters["tx_bytes"],
            (b"tok-1\n".len() + data.len()) as u64,
            "{counters}"
        );
        assert_eq!(counters["rx_bytes"], data.len() as u64, "{counters}");
        for bad in [
            "bad_tx_chains",
            "bad_rx_chains",
            "queue_errors",
            "credit_violations",
        ] {
            assert!(counters.get(bad).is_none(), "{bad}: {counters}");
        }
        assert_eq!(report["virtio_bad_accesses"], 0, "{report}");
        // Queue notifications went through ioeventfds, not userspace exits.
        let exits = &report["vcpus"][0]["exits"]["by_mmio_addr"];
        assert!(
            exits.get("3489661008").is_none(),
            "QueueNotify (0xd0000050) exited: {exits}"
        );
    }
}

#[test]
fn listen_mode_accepts_the_host_and_echoes_under_vmbench_vmm() {
    let test = "listen_mode_accepts_the_host_and_echoes_under_vmbench_vmm";
    let Some(mut guest) = Guest::under_vmbench_vmm(test, "pvh", true) else {
        return;
    };
    guest.echo_as_server(&patterned_bytes(ECHO_BYTES, 4));
    let report = guest.report();
    assert!(
        vsock_counters(&report)["connections_from_host"].as_u64() >= Some(1),
        "{report}"
    );
}

/// Unlike vhost-device-vsock, vmbench's device answers a REQUEST nobody
/// listens for with RST, as the spec (and Firecracker) does.
#[test]
fn connect_to_a_port_nobody_listens_on_is_refused_under_vmbench_vmm() {
    let test = "connect_to_a_port_nobody_listens_on_is_refused_under_vmbench_vmm";
    let Some(mut guest) = Guest::under_vmbench_vmm(test, "pvh", true) else {
        return;
    };
    guest.boot("vsockguest.connect=5999");
    let serial = guest.finish();
    expect_error(&serial, "refused port=5999").unwrap();
    let report = guest.report();
    let counters = vsock_counters(&report);
    assert_eq!(counters["connections_refused"], 1, "{counters}");
    assert_eq!(counters["rst_sent"], 1, "{counters}");
}

/// Both entry points under vmbench's VMM, which has no vsock device unless
/// asked (`--vsock-cid`): the guest starts, finds no device, and resets.
/// This is also the test that the guest's code runs under KVM's instruction
/// emulator on hosts with nested KVM (no SSE, see build-test-guest.sh).
#[test]
fn both_entries_run_under_vmbench_vmm() {
    for (entry, shown) in [("pvh", "pvh"), ("linux64", "linux")] {
        let test = "both_entries_run_under_vmbench_vmm";
        let Some(mut guest) = Guest::under_vmbench_vmm(test, entry, false) else {
            return;
        };
        guest.boot("vsockguest.connect=5000");
        let serial = guest.finish();
        assert!(
            guest
                .dir
                .read("vmm.log")
                .contains("the guest reset the machine"),
            "{entry}: {}",
            guest.logs()
        );
        let lines = guest_lines(&serial);
        assert_eq!(
            lines.first(),
            Some(&&*format!("start entry={shown}")),
            "{serial}"
        );
        expect_error(&serial, "no_vsock_device").unwrap();
    }
}

#[test]
fn guest_elf_is_one_static_segment_at_1_mib_with_both_entries() {
    let test = "guest_elf_is_one_static_segment_at_1_mib_with_both_entries";
    let Some(guest) = built_vsock_guest(test) else {
        return;
    };
    assert_static_at_1_mib_with_both_entries(&guest);
}

#[test]
fn guest_code_uses_no_sse_registers() {
    let test = "guest_code_uses_no_sse_registers";
    let Some(guest) = built_vsock_guest(test) else {
        return;
    };
    assert_no_sse(test, &guest);
}
