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
//! The virtio-mmio transport ([`devices::virtio::mmio`]) is in place, tested
//! against the driver's bring-up sequence; still to come (issue 3): wiring it
//! into the MMIO bus and the command line, the vsock device, SMP
//! (vCPU threads: the MP table already describes them), and the `kvm`
//! backend of `vmbench boot`.

pub mod boot;
pub mod cpu;
pub mod devices;
pub mod event_loop;
pub mod exits;
pub mod kvm_stats;
pub mod layout;
pub mod loader;
pub mod machine;
