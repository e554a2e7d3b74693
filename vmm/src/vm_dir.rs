//! The files the VMM uses in its VM directory (`--dir`). A program that
//! runs the VMM (the orchestrator's kvm backend) finds them by these names.

/// The guest's serial console, as the guest wrote it.
pub const SERIAL_LOG: &str = "serial.log";
/// The account of the VM ([`crate::account`]), written when it ends.
pub const ACCOUNT: &str = "vmm.json";
/// If a program listens here when the VM starts, the VMM connects and
/// forwards each boot-marker code to it as one byte.
pub const MARKER_SOCKET: &str = "marker.sock";
/// The vsock device's host side (Firecracker's convention): guest
/// connections to host port P arrive on `vsock.sock_P`; host programs
/// reach the guest through `vsock.sock` with `CONNECT <port>\n`.
pub const VSOCK_SOCKET: &str = "vsock.sock";
