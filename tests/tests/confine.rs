//! End to end: the VMM is confined. Each of its thread kinds runs under a
//! seccomp filter, and a system call the filter does not allow ends the
//! VMM with a line naming the call and the thread; a disk's format is never
//! probed from bytes a guest could have written.

use std::ffi::CString;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use vmbench_e2e::vmm::{vmm_command, vmm_json};
use vmbench_e2e::{dump, have_kvm, one_line_error, tiny_elf};

/// 'ok\n' to COM1, 0x60 to the boot-marker port, then an i8042 reset.
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

/// The exit status of a VMM its filter stopped: 128 + SIGSYS.
const SECCOMP_EXIT: i32 = 159;

fn run(dir: &Path, extra: &[&str]) -> Output {
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, tiny_elf(GUEST)).unwrap();
    vmm_command(&kernel, dir)
        .args(["--mem-mib", "16", "--vsock-cid", "3"])
        .args(extra)
        .output()
        .unwrap()
}

/// Every thread kind has its filter on: the test aid makes each in turn
/// call `execve` once its filter is installed (the vCPU thread at the
/// guest's first exit), and each is caught: the VMM says which call in
/// which thread, on one line, exits 159 and writes no account. Without the
/// filters the same call goes through (and fails harmlessly), the VM runs
/// to its end, and its account says the filters were off.
#[test]
fn a_forbidden_call_in_each_thread_kind_is_caught_and_named() {
    if !have_kvm("a_forbidden_call_in_each_thread_kind_is_caught_and_named") {
        return;
    }
    for (kind, name) in [("vcpu", "vCPU"), ("devices", "device"), ("main", "main")] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &["--forbidden-syscall-in", kind]);
        let stderr = one_line_error(&out, SECCOMP_EXIT);
        assert_eq!(
            stderr,
            format!("seccomp: syscall 59 (execve) not allowed in the {name} thread\n"),
            "{}",
            dump(&out)
        );
        assert!(!dir.path().join("vmm.json").exists(), "{kind}: an account");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--no-seccomp", "--forbidden-syscall-in", "vcpu"],
    );
    assert!(out.status.success(), "{}", dump(&out));
    assert_eq!(vmm_json(dir.path())["seccomp"], false);
    // By default the filters are on, and the VM runs as before.
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", dump(&out));
    let account = vmm_json(dir.path());
    assert_eq!(account["seccomp"], true, "{account}");
    assert_eq!(account["end"]["kind"], "reset", "{account}");
}

/// The descriptors the VMM inherits are closed before it opens its own:
/// one left open by its parent is not among the VM's; and its resource
/// limits are set (no core dump, a bounded number of descriptors).
#[test]
fn inherited_descriptors_are_closed() {
    if !have_kvm("inherited_descriptors_are_closed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    let leaked = dir.path().join("leaked");
    std::fs::write(&leaked, b"x").unwrap();
    // A shell opens descriptor 7 on the file and execs the VMM; its
    // descriptors are read from /proc while it runs a spinning guest,
    // which SIGTERM then stops.
    let spin: &[u8] = &[0xeb, 0xfe]; // jmp $
    std::fs::write(&kernel, tiny_elf(spin)).unwrap();
    let mut vmm = vmm_command(&kernel, dir.path());
    vmm.args(["--mem-mib", "16"]);
    let program = vmm.get_program().to_owned();
    let args: Vec<_> = vmm.get_args().map(|a| a.to_owned()).collect();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec 7<\"$0\"; exec \"$@\"")
        .arg(&leaked)
        .arg(program)
        .args(args)
        .spawn()
        .unwrap();
    let fd_dir = format!("/proc/{}/fd", child.id());
    // The VMM is up once its serial log exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dir.path().join("serial.log").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VMM never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let open: Vec<_> = std::fs::read_dir(&fd_dir)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let limit = |name: &str| -> Vec<String> {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect()
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!open.contains(&leaked), "{open:?}");
    assert_eq!(limit("Max core file size"), ["0", "0"], "{limits}");
    assert_eq!(limit("Max open files"), ["4096", "4096"], "{limits}");
    assert_eq!(status.code(), Some(3), "stopped by SIGTERM");
    assert_eq!(vmm_json(dir.path())["seccomp"], true);
}

/// `qemu-img` runs here, or the test says it skips.
fn have_qemu_img(what: &str) -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: {what}: qemu-img is not installed");
    }
    ok
}

/// Watches a FIFO for anyone opening it, through inotify: `IN_OPEN` is
/// reported for every open of the file, however short (the image crate
/// opens chain files `O_NONBLOCK`, so a refused FIFO is open for
/// microseconds, too briefly for any polling).
struct FifoWatch {
    inotify: std::os::fd::OwnedFd,
}

impl FifoWatch {
    /// Makes the FIFO at `path` and watches it.
    fn start(path: &Path) -> FifoWatch {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        FifoWatch::start_existing(path)
    }

    fn start_existing(path: &Path) -> FifoWatch {
        use std::os::fd::FromRawFd;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: inotify_init1(2) takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a descriptor we just made and own from here on.
        let inotify = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: our inotify descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, c_path.as_ptr(), libc::IN_OPEN) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        FifoWatch { inotify }
    }

    /// Whether anyone opened it since the watch started.
    fn finish(self) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 4096];
        let mut opened = false;
        loop {
            // SAFETY: read(2) into a buffer we own, of its length.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            // Every event is at least the fixed header; the mask is its second u32.
            let mut at = 0usize;
            while at + 16 <= n as usize {
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap());
                opened |= mask & libc::IN_OPEN != 0;
                at += 16 + len as usize;
            }
        }
        opened
    }
}

/// The attack of issue 12: a guest writes a qcow2 header into its raw,
/// writable disk, naming a host file as the backing file. Stated as raw,
/// the next run gives the guest the same raw bytes (its size is the file's,
/// not the forged header's 64 MiB) and never opens the named file; not
/// stated, the VMM refuses the writable disk with one line before it opens
/// anything.
#[test]
fn a_forged_qcow2_header_in_a_raw_disk_opens_no_host_file() {
    let name = "a_forged_qcow2_header_in_a_raw_disk_opens_no_host_file";
    if !have_kvm(name) || !have_qemu_img(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("host-secret.fifo");
    let disk = dir.path().join("disk.raw");
    // What the guest wrote: a qcow2 header (qemu-img's, -u: it does not
    // look at the backing file) at the start of 1 MiB of disk.
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .arg(&secret)
        .arg(&disk)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", dump(&out));
    let file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    file.set_len(1 << 20).unwrap();
    drop(file);
    let watch = FifoWatch::start(&secret);
    let stated = format!("{},format=raw", disk.display());
    let out = run(dir.path(), &["--disk", &stated]);
    let account = vmm_json(dir.path());
    let unstated = run(dir.path(), &["--disk", disk.to_str().unwrap()]);
    let opened = watch.finish();
    assert!(out.status.success(), "{}", dump(&out));
    let device = &account["devices"]["0xd0000000:2"];
    assert_eq!(device["capacity_sectors"], 2048, "raw, 1 MiB: {device}");
    assert_eq!(device["chain_images"], 1, "no backing file: {device}");
    let stderr = one_line_error(&unstated, 2);
    assert!(
        stderr.contains("a writable disk needs its format stated (format=raw or format=qcow2)"),
        "{stderr}"
    );
    assert!(!opened, "the VMM opened the file the forged header names");
    // The watch sees an open: a read-only disk without a stated format is
    // probed (README: state the format of any image a guest has written),
    // and the chain reaches for the FIFO, which it then refuses.
    let watch = FifoWatch::start_existing(&secret);
    let probed = run(dir.path(), &["--disk", &format!("{},ro", disk.display())]);
    assert!(watch.finish(), "the control: an open is seen");
    let stderr = one_line_error(&probed, 2);
    assert!(stderr.contains("neither a regular file"), "{stderr}");
}
