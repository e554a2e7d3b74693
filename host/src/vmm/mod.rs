//! vmbench's own VMM (the `kvm` backend), built on the rust-vmm crates.
//!
//! Boot steps, in order (each its own module):
//! 1. guest memory ([`layout`] says where everything goes);
//! 2. the boot structures in guest memory: GDT ([`boot::gdt`]) and identity
//!    page tables ([`boot::paging`]) for the 64-bit entry;
//! 3. the vCPU state that enters them ([`cpu`]): segments, control registers,
//!    EFER, general registers, FPU.
//!
//! Still to come (issue 3): kernel loading with linux-loader, boot params and
//! e820, MP table, devices (serial, boot marker, virtio-mmio, vsock), the run
//! loop and exit accounting.

pub mod boot;
pub mod cpu;
pub mod layout;
