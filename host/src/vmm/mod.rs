//! vmbench's own VMM (the `kvm` backend), built on the rust-vmm crates.
//!
//! Boot steps, in order (each its own module):
//! 1. guest memory ([`layout`] says where everything goes);
//! 2. the boot structures in guest memory: GDT ([`boot::gdt`]) and identity
//!    page tables ([`boot::paging`]) for the 64-bit entry;
//! 3. the kernel, initramfs and command line ([`loader`], with linux-loader)
//!    and the boot parameters with the e820 map ([`boot::params`]);
//! 4. the vCPU state that enters them ([`cpu`]): segments, control registers,
//!    EFER, general registers, FPU.
//!
//! Still to come (issue 3): MSRs and CPUID, the MP table, devices (serial,
//! boot marker, i8042, virtio-mmio, vsock), the run loop, `vmbench vmm`, and
//! exit accounting.

pub mod boot;
pub mod cpu;
pub mod devices;
pub mod exits;
pub mod layout;
pub mod loader;
pub mod machine;
