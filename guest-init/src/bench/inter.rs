//! The inter suite: two guests talk over vsock through the host's relay
//! (vmbench's, on the host: it is part of what is measured).
//!
//! # Primer
//!
//! - The host asks one VM of a pair for `inter_vsock_rtt`, `inter_vsock_bw`
//!   or `inter_sendfile` (it measures) and the other for the same name with
//!   [`PEER_SUFFIX`] (it serves).
//! - Each connects to host port `vmbench.port + 1` and sends `r`, the
//!   benchmark's name and `\n`; the host joins the two connections of one
//!   name and writes the go byte [`GO`] to each. Only then does either
//!   start, so the measuring side's calibration never times its peer's
//!   boot. A host that closes instead (no peer came) is this benchmark's
//!   failure.
//! - `inter_vsock_rtt`: one operation is 1 byte out and 1 byte back; the
//!   peer echoes until the connection ends. `inter_vsock_bw`: one operation
//!   is a 64 KiB block written whole; the peer reads and discards.
//!   `inter_sendfile`: the same block sent by `sendfile(2)` from a 64 KiB
//!   file in the guest's tmpfs.
//! - The measuring side closes its connection when its runner ends (after
//!   its last sample); the host passes the close on, and the peer, at the
//!   end of its stream, answers `Done` with no samples and the bytes it
//!   served (`extra.bytes`, `stop: "peer"`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use vmbench_proto::{BenchOutcome, BenchRequest, Samples};

use super::timing::sample;
use super::vsock::{connect_host, PingPong, BW_BLOCK_BYTES, MODE_RELAY};
use super::{Env, SetupError, Workload};

/// The inter suite's benchmarks.
pub const INTER_BENCHES: [&str; 3] = ["inter_vsock_rtt", "inter_vsock_bw", "inter_sendfile"];

/// The peer side of an inter benchmark is asked for its name and this.
pub const PEER_SUFFIX: &str = ":peer";

/// The host's go byte: both sides are there.
pub const GO: u8 = b'g';

/// Whether `name` is an inter benchmark or its peer side.
pub fn is_inter(name: &str) -> bool {
    let bench = name.strip_suffix(PEER_SUFFIX).unwrap_or(name);
    INTER_BENCHES.contains(&bench)
}

/// Runs the inter benchmark `request` names (in the runner process).
pub fn run(request: &BenchRequest, env: &Env) -> BenchOutcome {
    match request.name.strip_suffix(PEER_SUFFIX) {
        Some(bench) => serve(bench, env),
        None => measure(request, env),
    }
}

/// Connects to the host's relay for `bench` and waits for the go byte.
fn join_relay(env: &Env, bench: &str) -> Result<File, SetupError> {
    let mut stream = connect_host(env, MODE_RELAY)?;
    let mut name_line = bench.as_bytes().to_vec();
    name_line.push(b'\n');
    stream
        .write_all(&name_line)
        .map_err(|e| SetupError::Failed(format!("naming the benchmark to the relay: {e}")))?;
    let mut go = [0u8; 1];
    match stream.read(&mut go) {
        Ok(1) if go[0] == GO => Ok(stream),
        Ok(1) => Err(SetupError::Failed(format!(
            "the relay said {:#04x}, not go",
            go[0]
        ))),
        Ok(_) => Err(SetupError::Failed(
            "the relay closed the connection: no peer came".into(),
        )),
        Err(e) => Err(SetupError::Failed(format!("waiting for the relay: {e}"))),
    }
}

fn measure(request: &BenchRequest, env: &Env) -> BenchOutcome {
    let workload: Result<Box<dyn Workload>, SetupError> =
        join_relay(env, &request.name).and_then(|stream| {
            Ok(match request.name.as_str() {
                "inter_vsock_rtt" => Box::new(PingPong {
                    stream,
                    far_end: "the peer",
                }) as Box<dyn Workload>,
                "inter_vsock_bw" => Box::new(Stream::write(stream)),
                _ => Box::new(Stream::sendfile(stream)?),
            })
        });
    let mut workload = match workload {
        Ok(w) => w,
        Err(SetupError::Unavailable(why)) => return BenchOutcome::Unavailable { why },
        Err(SetupError::Failed(why)) => return BenchOutcome::Failed { why },
    };
    match sample(workload.as_mut(), request, env.in_vm) {
        Ok(samples) => BenchOutcome::Done(samples),
        Err(why) => BenchOutcome::Failed { why },
    }
}

/// `inter_vsock_bw` and `inter_sendfile`: 64 KiB blocks to the peer.
struct Stream {
    stream: File,
    block: Vec<u8>,
    /// `inter_sendfile`: the block's file, sent with sendfile(2).
    file: Option<(File, std::path::PathBuf)>,
    sent_bytes: u64,
}

impl Stream {
    fn write(stream: File) -> Stream {
        Stream {
            stream,
            block: vec![0xa5; BW_BLOCK_BYTES],
            file: None,
            sent_bytes: 0,
        }
    }

    fn sendfile(stream: File) -> Result<Stream, SetupError> {
        let path =
            std::path::PathBuf::from(format!("/tmp/vmbench-sendfile-{}", std::process::id()));
        let made =
            std::fs::write(&path, vec![0xa5u8; BW_BLOCK_BYTES]).and_then(|()| File::open(&path));
        let file = made
            .map_err(|e| SetupError::Failed(format!("the block's file {}: {e}", path.display())))?;
        Ok(Stream {
            stream,
            block: Vec::new(),
            file: Some((file, path)),
            sent_bytes: 0,
        })
    }

    /// Sends one block whole.
    fn send_block(&mut self) -> Result<(), String> {
        match &self.file {
            None => self
                .stream
                .write_all(&self.block)
                .map_err(|e| format!("write to the peer after {} bytes: {e}", self.sent_bytes)),
            Some((file, _)) => {
                let mut offset: libc::off_t = 0;
                let end = BW_BLOCK_BYTES as libc::off_t;
                while offset < end {
                    let left = (end - offset) as usize;
                    let n = nix::sys::sendfile::sendfile(
                        self.stream.as_fd(),
                        file.as_fd(),
                        Some(&mut offset),
                        left,
                    )
                    .map_err(|e| format!("sendfile to the peer: {}", e.desc()))?;
                    if n == 0 {
                        return Err("sendfile sent nothing".into());
                    }
                }
                Ok(())
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Workload for Stream {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let start = crate::clock::monotonic_raw_ns();
        for _ in 0..iterations {
            self.send_block()?;
            self.sent_bytes += BW_BLOCK_BYTES as u64;
        }
        Ok(crate::clock::monotonic_raw_ns().saturating_sub(start))
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![
            ("block_bytes".to_string(), BW_BLOCK_BYTES as u64),
            ("bytes".to_string(), self.sent_bytes),
        ]
    }
}

/// The peer: joins the relay, echoes (`inter_vsock_rtt`) or reads and
/// discards until the measuring side has closed.
fn serve(bench: &str, env: &Env) -> BenchOutcome {
    let mut stream = match join_relay(env, bench) {
        Ok(stream) => stream,
        Err(SetupError::Unavailable(why)) => return BenchOutcome::Unavailable { why },
        Err(SetupError::Failed(why)) => return BenchOutcome::Failed { why },
    };
    let echo = bench == "inter_vsock_rtt";
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bytes += n as u64;
                if echo {
                    if let Err(e) = stream.write_all(&buf[..n]) {
                        return BenchOutcome::Failed {
                            why: format!("echo to the measuring guest: {e}"),
                        };
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return BenchOutcome::Failed {
                    why: format!("read from the measuring guest: {e}"),
                }
            }
        }
    }
    BenchOutcome::Done(Samples {
        unit: "ns".into(),
        clock: format!("CLOCK_MONOTONIC_RAW/{}", crate::clock::clocksource()),
        stop: "peer".into(),
        extra: vec![("bytes".into(), bytes)],
        ..Samples::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inter_names_and_their_peers_are_known() {
        assert!(is_inter("inter_vsock_rtt"));
        assert!(is_inter("inter_sendfile:peer"));
        assert!(!is_inter("syscall"));
        assert!(!is_inter("syscall:peer"));
        assert!(!is_inter("inter_vsock_rtt:peer:peer"));
    }

    #[test]
    fn outside_a_vm_there_is_no_relay() {
        let env = Env {
            in_vm: false,
            settings: crate::settings::Settings::default(),
        };
        let request = BenchRequest {
            name: "inter_vsock_rtt".into(),
            rough: true,
            max_samples: 10,
            budget_ms: 100,
            window: 1,
        };
        assert!(matches!(
            run(&request, &env),
            BenchOutcome::Unavailable { .. }
        ));
    }
}
