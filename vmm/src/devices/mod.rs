//! The VMM's devices. None touches `/dev/kvm`: each is a state machine that
//! takes port or MMIO reads and writes, reads and writes guest memory through
//! vm-memory, and raises interrupts through an injected trigger, so each is
//! tested without KVM.
//!
//! - port I/O, behind [`bus::PioBus`]: the serial port ([`serial`]), the
//!   i8042 controller's reset line ([`i8042`]), the boot-marker port
//!   ([`marker`], which also carries benchmark windows' marks) and the
//!   benchmark port ([`bench_port`]);
//! - MMIO, behind [`bus::MmioBus`]: the virtio-mmio transport and the
//!   virtio-blk and virtio-vsock devices ([`virtio`]).

pub mod bench_port;
pub mod bus;
pub mod i8042;
pub mod marker;
pub mod serial;
pub mod virtio;
