//! vmbench's own VMM (the `kvm` backend), built on the rust-vmm crates: one
//! KVM virtual machine per process, and an account of everything it did.
//!
//! Boot steps, in order (each its own module):
//! 1. guest memory ([`layout`] says where everything goes, in memory and
//!    in port I/O space);
//! 2. the boot tables in guest memory ([`boot_tables`]): GDT and identity
//!    page tables for the 64-bit entry, the MP table for CPUs and interrupt
//!    routing without ACPI, the zero page with the e820 map, PVH's start info;
//! 3. the kernel, initramfs and command line ([`loader`], with linux-loader);
//! 4. the vCPU state that enters them ([`cpu`]): segments, control registers,
//!    EFER, general registers, FPU, boot MSRs;
//! 5. the devices ([`devices`]) and the run loop ([`machine`]), which
//!    accounts for every userspace exit ([`exits`]) and reads KVM's own
//!    statistics at the end ([`kvm_stats`]);
//! 6. the account of the VM ([`account`], `vmm.json`), written when it ends.
//!
//! The legacy devices (serial, i8042, the boot-marker port) answer port
//! I/O; the virtio devices sit behind the virtio-mmio transport
//! ([`devices::virtio::mmio`]), one 4 KiB slot each, announced on the
//! kernel command line in slot order: first the disks
//! ([`devices::virtio::block`], virtio-blk backed by raw or qcow2 images
//! through imago; the first disk is the guest's `/dev/vda`), then the vsock
//! device ([`devices::virtio::vsock`]). Their queues are served on one
//! device thread ([`event_loop`]).
//!
//! [`command`] is the body of `vmbench vmm`; [`probe`] is a second, tiny
//! use of KVM that times a calibration guest to tell native KVM from KVM
//! that emulates guest code. Every time the VMM records is on [`clock`].
//! The VMM depends on nothing of the orchestrator: it is reached through
//! [`command`], [`machine::MachineConfig`] and the account it writes.

pub mod account;
pub mod boot_tables;
pub mod clock;
pub mod command;
pub mod cpu;
pub mod devices;
pub mod event_loop;
pub mod exits;
pub mod kvm_stats;
pub mod layout;
pub mod loader;
pub mod machine;
pub mod probe;
pub mod vm_dir;
