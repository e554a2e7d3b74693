//! vsock benchmarks to the host: `vsock_rtt` (1-byte ping-pong with a host
//! echo) and `vsock_bw` (64 KiB blocks into a host sink). The agent
//! connects to host port `vmbench.port + 1`; its first byte names what it
//! wants: `e` echo, `s` sink (`r`, relay, is the inter suite's).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
use vmbench_proto::HOST_CID;

use super::timing::time_fallible;
use super::{require_vm, Env, SetupError, Workload};

pub const MODE_ECHO: u8 = b'e';
pub const MODE_SINK: u8 = b's';
pub const MODE_RELAY: u8 = b'r';

pub(super) const BW_BLOCK_BYTES: usize = 64 * 1024;

/// The host port the benchmarks connect to.
pub fn bench_port(env: &Env) -> u32 {
    env.settings.port.wrapping_add(1)
}

pub(super) fn connect_host(env: &Env, mode: u8) -> Result<File, SetupError> {
    require_vm(env, "its peer is the host's vmbench")?;
    let port = bench_port(env);
    let failed = |what: &str, e: nix::errno::Errno| {
        SetupError::Failed(format!("{what} (host port {port}): {}", e.desc()))
    };
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| failed("vsock socket", e))?;
    connect(fd.as_raw_fd(), &VsockAddr::new(HOST_CID, port)).map_err(|e| failed("connect", e))?;
    let mut stream = File::from(fd);
    stream
        .write_all(&[mode])
        .map_err(|e| SetupError::Failed(format!("saying the mode to host port {port}: {e}")))?;
    Ok(stream)
}

/// `vsock_rtt`: one byte to the host's echo and back.
pub fn rtt(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(PingPong {
        stream: connect_host(env, MODE_ECHO)?,
        far_end: "the host's echo",
    }))
}

/// A byte to the far end and back, per operation: `vsock_rtt` (the host
/// echoes) and `inter_vsock_rtt` (the other guest does, through the relay).
pub(super) struct PingPong {
    pub stream: File,
    /// Who answers, for the errors.
    pub far_end: &'static str,
}

impl Workload for PingPong {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let (stream, far_end) = (&mut self.stream, self.far_end);
        time_fallible(iterations, || {
            let mut byte = [0x5a];
            stream
                .write_all(&byte)
                .map_err(|e| format!("write to {far_end}: {e}"))?;
            match stream.read(&mut byte) {
                Ok(1) => Ok(()),
                Ok(_) => Err(format!("{far_end} closed the connection")),
                Err(e) => Err(format!("read from {far_end}: {e}")),
            }
        })
    }
}

pub fn bw(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(Sink {
        stream: connect_host(env, MODE_SINK)?,
        block: vec![0xa5; BW_BLOCK_BYTES],
        sent_bytes: 0,
    }))
}

struct Sink {
    stream: File,
    block: Vec<u8>,
    sent_bytes: u64,
}

impl Workload for Sink {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let (stream, block) = (&mut self.stream, &self.block);
        let mut sent = 0;
        let ns = time_fallible(iterations, || {
            stream
                .write_all(block)
                .map_err(|e| format!("write to the host's sink after {sent} bytes: {e}"))?;
            sent += block.len() as u64;
            Ok(())
        });
        self.sent_bytes += sent;
        ns
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![
            ("block_bytes".to_string(), BW_BLOCK_BYTES as u64),
            ("sent_bytes".to_string(), self.sent_bytes),
        ]
    }
}
