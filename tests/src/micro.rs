//! The host's side of the agent's bench mode, for the end-to-end tests of
//! the micro suite until `vmbench bench` drives it: boot the agent under
//! QEMU microvm (TCG) with `vmbench.bench=1`, with a scratch disk if asked,
//! speak the protocol on its report connection (`Hello`, `Ready`, then
//! `RunBench` → `Bench`, and `Ack` to end), serve the vsock benchmarks'
//! echo and sink on `vmbench.port + 1`, and keep every byte the guest wrote
//! to the boot-marker port (through an `isa-debugcon`, as the qemu backend
//! does), where the benchmark windows are marked.
//!
//! Every wait has a timeout and every process dies with its guard, so a
//! failing test neither hangs nor leaves anything behind.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmbench_proto::{
    decode_body, decode_hello, encode_frame, BenchRequest, BenchResult, FrameDecoder, GuestMessage,
    Hello, HostMessage,
};

use crate::vsock::{accept_within, find_program, wait_for_path, Check, KillOnDrop};
use crate::{agent_bin, skip_unless_ci};

/// The report port; the benchmarks' peer listens on the next one.
pub const REPORT_PORT: u32 = 1234;
const GUEST_CID: u32 = 3;
/// The scratch disk: as `vmbench bench` will attach it.
pub const SCRATCH_BYTES: u64 = 64 << 20;
pub const SCRATCH_SERIAL: &str = "vmbench-scratch";
/// Guest memory: room for the memory benchmarks' buffers (64 MiB for the
/// chases, 16 MiB for the copy-on-write faults), twice.
const MEM_MIB: u32 = 256;
/// Booting to `Ready` under TCG takes about a second.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// Beyond a benchmark's budget: its set-up, calibration, the agent's own
/// hang guard (60 s past the budget) and the answer.
const ANSWER_GRACE: Duration = Duration::from_secs(120);

/// The programs and files a micro guest needs.
pub struct Inputs {
    qemu: PathBuf,
    vhost: PathBuf,
    kernel: PathBuf,
}

impl Inputs {
    /// `None` (after printing why, or failing under CI) when something is
    /// missing.
    pub fn find(test: &str) -> Option<Inputs> {
        let qemu = find_program("qemu-system-x86_64");
        let vhost = find_program("vhost-device-vsock");
        let kernel = this_trees_kernel();
        let missing = match (&qemu, &vhost, &kernel) {
            (None, _, _) => {
                Some("qemu-system-x86_64 is not installed (scripts/setup.sh)".to_string())
            }
            (_, None, _) => {
                Some("vhost-device-vsock is not installed (scripts/setup.sh)".to_string())
            }
            (_, _, Err(e)) => Some(e.clone()),
            _ if !agent_bin().is_file() => Some(format!(
                "the static agent {} is not built (scripts/build-agent.sh)",
                agent_bin().display()
            )),
            _ => None,
        };
        if let Some(reason) = missing {
            skip_unless_ci(test, &reason);
            return None;
        }
        Some(Inputs {
            qemu: qemu.unwrap(),
            vhost: vhost.unwrap(),
            kernel: kernel.unwrap(),
        })
    }
}

/// The kernel built from this tree's config fragments (`kernel-config/
/// build.sh --print-path`), not whichever one the cache's `current` points
/// at: the micro suite needs this tree's options (`/dev/mem`).
fn this_trees_kernel() -> Check<PathBuf> {
    let script = crate::workspace().join("kernel-config/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-path")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        return Err(format!(
            "no guest kernel built from this tree's fragments at {} (kernel-config/build.sh) {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(path)
}

/// What the benchmarks' peer on `vmbench.port + 1` saw: one entry per
/// connection, its mode byte and the bytes that followed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerLog {
    pub connections: Vec<(u8, u64)>,
}

/// A guest in bench mode, booted and reported `Ready`.
pub struct MicroGuest {
    // Dropped first: the VM, then its vsock backend.
    qemu: KillOnDrop,
    _vhost: KillOnDrop,
    report: UnixStream,
    decoder: FrameDecoder,
    pub hello: Hello,
    markers: Arc<Mutex<Vec<u8>>>,
    marker_thread: Option<JoinHandle<()>>,
    peer: Arc<Mutex<PeerLog>>,
    peer_stop: Arc<AtomicBool>,
    peer_thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

/// How the guest ended.
#[derive(Debug)]
pub struct Finished {
    pub serial: String,
    /// Every byte written to port 0x80, in order.
    pub markers: Vec<u8>,
    pub peer: PeerLog,
}

impl MicroGuest {
    /// Boots the agent in `dir` with `vmbench.bench=1` (and a 64 MiB raw
    /// scratch disk with serial `vmbench-scratch` when `scratch`), and
    /// reads its `Hello` and `Ready`.
    pub fn boot(inputs: &Inputs, dir: &Path, scratch: bool) -> Check<MicroGuest> {
        let initramfs = dir.join("initramfs.cpio.gz");
        vmbench_rootfs::initramfs::agent_initramfs(&agent_bin())
            .and_then(|image| image.write(&initramfs, vmbench_rootfs::initramfs::Compression::Gzip))
            .map_err(|e| format!("the agent's initramfs: {e}"))?;
        let uds = dir.join("vsock.sock");
        let listen = |path: PathBuf| {
            UnixListener::bind(&path).map_err(|e| format!("listen on {}: {e}", path.display()))
        };
        let report_listener = listen(PathBuf::from(format!("{}_{REPORT_PORT}", uds.display())))?;
        let peer_listener = listen(PathBuf::from(format!(
            "{}_{}",
            uds.display(),
            REPORT_PORT + 1
        )))?;
        let marker_listener = listen(dir.join("marker.sock"))?;

        let vhost_socket = dir.join("vhost.sock");
        let vhost = KillOnDrop::spawn(
            "vhost-device-vsock",
            Command::new(&inputs.vhost)
                .args([
                    "--vm",
                    &format!(
                        "guest-cid={GUEST_CID},socket={},uds-path={}",
                        vhost_socket.display(),
                        uds.display()
                    ),
                ])
                .stdin(Stdio::null())
                .stdout(log_file(dir, "vhost.log")?)
                .stderr(log_file(dir, "vhost.log")?),
        )?;
        wait_for_path(&vhost_socket, Duration::from_secs(30))?;

        let mut qemu = Command::new(&inputs.qemu);
        qemu.args(["-M", "microvm,acpi=off,memory-backend=mem", "-accel", "tcg"])
            .args(["-m", &format!("{MEM_MIB}M"), "-smp", "1"])
            .args([
                "-object",
                &format!("memory-backend-memfd,id=mem,size={MEM_MIB}M,share=on"),
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args([
                "-serial",
                &format!("file:{}", dir.join("serial.log").display()),
            ]);
        if scratch {
            let disk = dir.join("scratch.raw");
            std::fs::File::create(&disk)
                .and_then(|f| f.set_len(SCRATCH_BYTES))
                .map_err(|e| format!("the scratch disk: {e}"))?;
            qemu.args([
                "-drive",
                &format!("file={},format=raw,if=none,id=scratch", disk.display()),
                "-device",
                &format!("virtio-blk-device,drive=scratch,serial={SCRATCH_SERIAL}"),
            ]);
        }
        qemu.args([
            "-chardev",
            &format!("socket,id=vsock,path={}", vhost_socket.display()),
            "-device",
            "vhost-user-vsock-device,chardev=vsock",
            "-chardev",
            &format!(
                "socket,id=marker,path={}",
                dir.join("marker.sock").display()
            ),
            "-device",
            "isa-debugcon,iobase=0x80,chardev=marker",
        ])
        .arg("-kernel")
        .arg(&inputs.kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", &cmdline()])
        .stdin(Stdio::null())
        .stdout(log_file(dir, "qemu.log")?)
        .stderr(log_file(dir, "qemu.log")?);
        let qemu = KillOnDrop::spawn("qemu", &mut qemu)?;

        // QEMU connects to the marker socket as it starts.
        let markers = Arc::new(Mutex::new(Vec::new()));
        let marker_stream = accept_within(&marker_listener, Duration::from_secs(30))?;
        let marker_thread = {
            let markers = Arc::clone(&markers);
            std::thread::spawn(move || read_all_into(marker_stream, &markers))
        };
        let peer = Arc::new(Mutex::new(PeerLog::default()));
        let peer_stop = Arc::new(AtomicBool::new(false));
        let peer_thread = {
            let (peer, stop) = (Arc::clone(&peer), Arc::clone(&peer_stop));
            std::thread::spawn(move || serve_peer(&peer_listener, &peer, &stop))
        };

        let report = accept_within(&report_listener, BOOT_TIMEOUT)?;
        let mut guest = MicroGuest {
            qemu,
            _vhost: vhost,
            report,
            decoder: FrameDecoder::new(),
            hello: Hello {
                proto_version: 0,
                agent_version: String::new(),
                vm_id: 0,
                kernel_release: String::new(),
                cpus: 0,
                mem_total_kib: 0,
                boottime_at_init_ns: 0,
            },
            markers,
            marker_thread: Some(marker_thread),
            peer,
            peer_stop,
            peer_thread: Some(peer_thread),
            dir: dir.to_path_buf(),
        };
        let hello = guest.next_body(BOOT_TIMEOUT)?;
        guest.hello = decode_hello(&hello).map_err(|e| format!("first message: {e}"))?;
        match guest.next_message(BOOT_TIMEOUT)? {
            GuestMessage::Ready(_) => Ok(guest),
            other => Err(format!("expected Ready, got {other:?}")),
        }
    }

    fn next_body(&mut self, timeout: Duration) -> Check<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64 * 1024];
        loop {
            if let Some(body) = self.decoder.next_body().map_err(|e| e.to_string())? {
                return Ok(body);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no message from the guest within {timeout:?}"));
            }
            self.report
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.report.read(&mut buf) {
                Ok(0) => return Err("the guest closed its report connection".into()),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading from the guest: {e}")),
            }
        }
    }

    fn next_message(&mut self, timeout: Duration) -> Check<GuestMessage> {
        let body = self.next_body(timeout)?;
        decode_body(&body).map_err(|e| e.to_string())
    }

    fn send(&mut self, message: &HostMessage) -> Check<()> {
        let frame = encode_frame(message).map_err(|e| e.to_string())?;
        self.report
            .write_all(&frame)
            .map_err(|e| format!("writing to the guest: {e}"))
    }

    /// Asks for one benchmark and waits for its answer, which must carry
    /// its name.
    pub fn run(&mut self, request: BenchRequest) -> Check<BenchResult> {
        let name = request.name.clone();
        let budget = Duration::from_millis(u64::from(request.budget_ms.max(10_000)));
        self.send(&HostMessage::RunBench(request))?;
        match self.next_message(budget + ANSWER_GRACE)? {
            GuestMessage::Bench(result) if result.name == name => Ok(result),
            other => Err(format!("asked for {name}, got {other:?}")),
        }
    }

    /// Sends `Ack` and waits for the guest to power off (QEMU exits).
    pub fn finish(mut self) -> Check<Finished> {
        self.send(&HostMessage::Ack)?;
        let status = self.qemu.wait_timeout(Duration::from_secs(60))?;
        if !status.success() {
            return Err(format!("QEMU ended with {status}"));
        }
        // QEMU's exit closed the marker socket.
        if let Some(thread) = self.marker_thread.take() {
            let _ = thread.join();
        }
        self.peer_stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.peer_thread.take() {
            let _ = thread.join();
        }
        let markers = std::mem::take(&mut *self.markers.lock().unwrap());
        let peer = self.peer.lock().unwrap().clone();
        Ok(Finished {
            serial: self.serial(),
            markers,
            peer,
        })
    }

    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default()
    }

    /// The logs, for a failure message.
    pub fn logs(&self) -> String {
        ["serial.log", "qemu.log", "vhost.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
                format!("--- {name}\n{text}")
            })
            .collect()
    }
}

impl Drop for MicroGuest {
    fn drop(&mut self) {
        self.peer_stop.store(true, Ordering::Relaxed);
    }
}

/// The guest's command line: the qemu backend's, in bench mode. Like the
/// backend, it gives a TCG guest the host's TSC frequency, without which
/// its kernel often falls back to `refined-jiffies` (4 ms steps), too
/// coarse a clock to time anything with.
fn cmdline() -> String {
    let mut line = format!(
        "console=ttyS0 panic=-1 reboot=t vmbench.id=0 vmbench.port={REPORT_PORT} vmbench.bench=1"
    );
    if let Some(khz) = host_tsc_khz() {
        line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    line
}

/// The host's TSC frequency as `vmbench` measures it (the TSC against
/// CLOCK_MONOTONIC_RAW, the median of three 10 ms windows), where the TSC
/// is constant and nonstop.
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    let raw_ns = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
        ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
    };
    // SAFETY: RDTSC reads a counter; it touches no memory.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let mut windows: Vec<f64> = (0..3)
        .map(|_| {
            let (t0, c0) = (raw_ns(), tsc());
            std::thread::sleep(Duration::from_millis(10));
            let (c1, t1) = (tsc(), raw_ns());
            c1.wrapping_sub(c0) as f64 / ((t1 - t0) / 1e6)
        })
        .collect();
    windows.sort_by(f64::total_cmp);
    Some(windows[1].round() as u64)
}

fn log_file(dir: &Path, name: &str) -> Check<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map_err(|e| format!("{name}: {e}"))
}

fn read_all_into(mut stream: UnixStream, into: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
        }
    }
}

/// The benchmarks' peer: each connection's first byte names its mode,
/// `e` (echo every byte back) or `s` (read and count); the mode and count
/// go into the log when the guest closes it.
fn serve_peer(listener: &UnixListener, log: &Mutex<PeerLog>, stop: &AtomicBool) {
    let _ = listener.set_nonblocking(true);
    let mut threads = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
                threads.push(std::thread::spawn(move || serve_connection(stream)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for thread in threads {
        if let Ok(entry) = thread.join() {
            log.lock().unwrap().connections.push(entry);
        }
    }
}

fn serve_connection(mut stream: UnixStream) -> (u8, u64) {
    let mut mode = [0u8];
    if stream.read_exact(&mut mode).is_err() {
        return (0, 0);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return (mode[0], count),
            Ok(n) => {
                count += n as u64;
                if mode[0] == b'e' && stream.write_all(&buf[..n]).is_err() {
                    return (mode[0], count);
                }
            }
        }
    }
}

/// The window ids marked in `markers`, in order, each as (start, end)
/// pairs: `0xB0 lo hi` opens window `hi << 8 | lo`, `0xB1 lo hi` closes it.
/// Boot marks (one byte each) may come between.
pub fn windows(markers: &[u8]) -> Vec<(char, u16)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < markers.len() {
        match markers[i] {
            code @ (0xB0 | 0xB1) if i + 2 < markers.len() => {
                let id = u16::from_le_bytes([markers[i + 1], markers[i + 2]]);
                found.push((if code == 0xB0 { 's' } else { 'e' }, id));
                i += 3;
            }
            _ => i += 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_read_between_boot_marks() {
        let markers = [
            0x60, 0xB0, 0x02, 0x01, 0xB1, 0x02, 0x01, 0x61, 0xB0, 0xB0, 0x00, 0xB1, 0xB0, 0x00,
        ];
        assert_eq!(
            windows(&markers),
            [('s', 0x0102), ('e', 0x0102), ('s', 0x00B0), ('e', 0x00B0)]
        );
    }
}
