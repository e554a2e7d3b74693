//! vmbench's own VMM (the `kvm` backend), built on the rust-vmm crates.
//!
//! Boot steps, in order (each its own module):
//! 1. guest memory ([`layout`] says where everything goes);
//! 2. the boot structures in guest memory: GDT ([`boot::gdt`]) and identity
//!    page tables ([`boot::paging`]) for the 64-bit entry, the MP table
//!    ([`boot::mptable`]) for CPUs and interrupt routing without ACPI;
//! 3. the kernel, initramfs and command line ([`loader`], with linux-loader)
//!    and the boot parameters with the e820 map ([`boot::params`]);
//! 4. the vCPU state that enters them ([`cpu`]): segments, control registers,
//!    EFER, general registers, FPU, boot MSRs.
//!
//! 5. the legacy devices ([`devices`]) and the run loop ([`machine`]), which
//!    accounts for every userspace exit ([`exits`]) and reads KVM's own
//!    statistics at the end ([`kvm_stats`]).
//!
//! The virtio devices sit behind the virtio-mmio transport
//! ([`devices::virtio::mmio`]), one 4 KiB slot each, announced on the
//! kernel command line in slot order: first the disks
//! ([`devices::virtio::block`], virtio-blk backed by raw or qcow2 images
//! through imago; the first disk is the guest's `/dev/vda`), then the vsock
//! device ([`devices::virtio::vsock`]). Their queues are served on one
//! device thread ([`event_loop`]).

pub mod boot;
pub mod cpu;
pub mod devices;
pub mod event_loop;
pub mod exits;
pub mod kvm_stats;
pub mod layout;
pub mod loader;
pub mod machine;
