//! Legacy port-I/O devices of the VMM. None touches `/dev/kvm`: each is a
//! state machine that takes port reads and writes (and raises interrupts
//! through an injected trigger), so each is tested without KVM.

pub mod bus;
pub mod i8042;
pub mod marker;
pub mod serial;
pub mod virtio;
