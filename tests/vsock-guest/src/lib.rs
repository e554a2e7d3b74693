//! A freestanding x86-64 guest that tests virtio-vsock end to end.
//!
//! Nested KVM on CI hosts cannot boot Linux, so this small guest stands in
//! for the kernel's vsock driver: it runs under QEMU (microvm,
//! vhost-user-vsock-device, vhost-device-vsock, TCG) and under vmbench's own
//! VMM. It polls (no interrupts, no heap) and works through its command line:
//!
//! 1. find every `virtio_mmio.device=<size>@<base>:<irq>` and bring up the
//!    first vsock device (device ID 19) as a virtio 1.x driver would;
//! 2. `vsockguest.connect=<port>`: connect to the host (CID 2) on `<port>`,
//!    send `vsockguest.message=<token>` (default `hello`) and a newline, then
//!    echo whatever the host sends until it shuts the connection down;
//! 3. `vsockguest.listen=<port>`: accept one host connection on `<port>` and
//!    echo the same way;
//! 4. print `vsock-guest: done` or `vsock-guest: error=<what>` on COM1 and
//!    end the VM (i8042 reset, then a triple fault).
//!
//! Every wait is bounded by a deadline in TSC ticks (`vsockguest.wait_ticks=`,
//! default `clock::DEFAULT_WAIT_TICKS`, about 10 s), so a broken device or
//! host ends in an error line rather than a hung VM.
//!
//! Layers, bottom up: `virtio_mmio` (registers), `queue` (split virtqueues),
//! `packet` (the header's wire form), `vsock` (the device and its buffers),
//! `credit` and `echo_ring` (flow control, the receive buffer),
//! `connection` (the stream protocol). All but the register accesses are
//! tested on the host with `cargo test`.

#![cfg_attr(not(test), no_std)]

pub mod clock;
pub mod cmdline;
pub mod connection;
pub mod credit;
pub mod echo_ring;
pub mod packet;
pub mod queue;
pub mod virtio_mmio;
pub mod vsock;
#[cfg(test)]
mod xorshift;

use core::fmt;

pub use freestanding::{boot, machine, serial};

use connection::{Addr, Summary};
use echo_ring::EchoRing;
use virtio_mmio::{Identity, Transport, DEVICE_ID_VSOCK};
use vsock::{DeviceMemory, VsockDevice};

/// The guest's port for the connection it makes.
pub const LOCAL_PORT: u32 = 49152;

/// Everything that can stop the guest, printed as `error=<code> [details]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The command line or an address (freestanding::boot's checks).
    Boot(boot::Error),
    BadParam {
        name: &'static str,
    },
    TooManyDevices,
    BadMmioWindow {
        base: u64,
        size: u64,
    },
    NoVsockDevice,
    NoVersion1,
    FeaturesRejected,
    QueueUnavailable {
        index: u32,
    },
    BadGuestCid {
        cid: u64,
    },
    Timeout {
        waiting: &'static str,
    },
    Refused {
        port: u32,
    },
    /// The device or the host broke the protocol.
    BadPacket {
        what: &'static str,
    },
    /// The device reset every connection (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET).
    TransportReset,
    EchoOverflow,
    /// This program broke its own rules: a bug here, not in the device.
    Internal {
        what: &'static str,
    },
}

pub type Result<T> = core::result::Result<T, Error>;

impl From<boot::Error> for Error {
    fn from(e: boot::Error) -> Error {
        Error::Boot(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Boot(e) => e.fmt(f),
            Error::BadParam { name } => write!(f, "bad_param name={name}"),
            Error::TooManyDevices => write!(f, "too_many_virtio_mmio_devices"),
            Error::BadMmioWindow { base, size } => {
                write!(f, "bad_mmio_window base={base:#x} size={size:#x}")
            }
            Error::NoVsockDevice => write!(f, "no_vsock_device"),
            Error::NoVersion1 => write!(f, "no_virtio_version_1"),
            Error::FeaturesRejected => write!(f, "features_rejected"),
            Error::QueueUnavailable { index } => write!(f, "queue_unavailable queue={index}"),
            Error::BadGuestCid { cid } => write!(f, "bad_guest_cid cid={cid}"),
            Error::Timeout { waiting } => write!(f, "timeout waiting={waiting}"),
            Error::Refused { port } => write!(f, "refused port={port}"),
            Error::BadPacket { what } => write!(f, "bad_packet what={what}"),
            Error::TransportReset => write!(f, "transport_reset"),
            Error::EchoOverflow => write!(f, "echo_overflow"),
            Error::Internal { what } => write!(f, "internal what={what}"),
        }
    }
}

/// How the guest was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Pvh,
    Linux,
}

/// Prints `vsock-guest: <message>` on COM1.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, "vsock-guest: {}", format_args!($($arg)*));
    }};
}

/// Memory the device reads and writes, and the echo buffer: static, since
/// there is no heap, and identity-mapped, so addresses are physical.
struct Memory {
    device: DeviceMemory,
    echo: EchoRing,
}

static mut MEMORY: Memory = Memory {
    device: DeviceMemory::ZERO,
    echo: EchoRing::EMPTY,
};

/// The guest's whole life after its entry code: never returns.
pub fn run(entry: Entry, cmdline: boot::Result<&[u8]>) -> ! {
    say!(
        "start entry={}",
        match entry {
            Entry::Pvh => "pvh",
            Entry::Linux => "linux",
        }
    );
    match cmdline.map_err(Error::from).and_then(main) {
        Ok(()) => say!("done"),
        Err(e) => say!("error={e}"),
    }
    machine::end_vm()
}

fn main(cmdline: &[u8]) -> Result<()> {
    say!("cmdline={}", cmdline::Printable(cmdline));
    let config = cmdline::parse(cmdline)?;
    let wait_ticks = config.wait_ticks.unwrap_or(clock::DEFAULT_WAIT_TICKS);
    // The device's part is only ever handed on as a raw pointer: the device
    // writes it behind the compiler's back.
    let memory = &raw mut MEMORY;
    // SAFETY: only the field's address is taken.
    let device_memory = unsafe { &raw mut (*memory).device };
    // SAFETY: as above.
    let echo = unsafe { &raw mut (*memory).echo };
    // SAFETY: main() runs once, on the only CPU, so this is the only
    // reference to the echo ring there ever is.
    let echo = unsafe { &mut *echo };
    let mut vsock_transport = None;
    for dev in config.devices() {
        // SAFETY: the command line names this window as a virtio-mmio device;
        // new() checks it lies in the identity-mapped first 4 GiB.
        let transport = unsafe { Transport::new(dev.base, dev.size)? };
        let identity = transport.identify();
        say!(
            "virtio-mmio base={:#x} size={:#x} irq={} {identity}",
            dev.base,
            dev.size,
            dev.irq
        );
        let is_vsock = identity
            == Identity::Device {
                id: DEVICE_ID_VSOCK,
            };
        if vsock_transport.is_none() && is_vsock {
            vsock_transport = Some(transport);
        }
    }
    let transport = vsock_transport.ok_or(Error::NoVsockDevice)?;
    // SAFETY: device_memory is this program's only device memory, static,
    // and handed to this one device only; the transport is a vsock device.
    let mut vsock = unsafe { VsockDevice::new(transport, device_memory, wait_ticks)? };
    let cid = vsock.guest_cid();
    say!(
        "vsock ready base={:#x} cid={cid} rx_buffers={} buf_alloc={}",
        vsock.base(),
        vsock.rx_buffers(),
        echo.capacity()
    );
    if let Some(port) = config.connect {
        say!("connect port={port}");
        let message = config.message.unwrap_or(b"hello");
        let mut greeting = [0; cmdline::MAX_MESSAGE_BYTES + 1];
        greeting[..message.len()].copy_from_slice(message);
        greeting[message.len()] = b'\n';
        let local = Addr {
            cid,
            port: LOCAL_PORT,
        };
        let summary = connection::connect(
            &mut vsock,
            local,
            port,
            &greeting[..message.len() + 1],
            echo,
            wait_ticks,
        )?;
        report("connect", port, summary);
    }
    if let Some(port) = config.listen {
        say!("listen port={port}");
        let local = Addr { cid, port };
        let summary = connection::listen(&mut vsock, local, echo, wait_ticks)?;
        report("listen", port, summary);
    }
    Ok(())
}

fn report(mode: &str, port: u32, summary: Summary) {
    say!(
        "{mode} port={port} closed ended={} echoed_bytes={}",
        summary.ended,
        summary.echoed_bytes
    );
}

/// The panic handler's work: report, then end the VM like any other error.
pub fn fail_on_panic(info: &core::panic::PanicInfo) -> ! {
    let line = info.location().map_or(0, |l| l.line());
    say!("error=panic line={line}");
    machine::end_vm()
}
