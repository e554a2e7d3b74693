//! What vmbench's freestanding x86-64 guests share: the vsock test guest
//! (`tests/vsock-guest`) and the vmexit benchmark guest (`vmexit-guest`).
//!
//! Each guest is a static, non-PIE ELF at physical 1 MiB (`linker.ld`
//! here), built without SSE (KVM's instruction emulator, which runs every
//! guest instruction on hosts with nested KVM, cannot execute SSE; see
//! `scripts/build-freestanding-guest.sh`). This crate gives them:
//!
//! - [`entry_points!`]: both entries (PVH, 64-bit Linux boot protocol), the
//!   boot GDT, identity page tables for the first 4 GiB and the boot stack,
//!   ending in the guest's two Rust functions;
//! - [`mem_functions!`]: memcpy and friends, which the compiler calls and no
//!   libc provides;
//! - [`boot`]: the command line from the boot structure the VMM left;
//! - [`cmdline`]: `key=value` words and `virtio_mmio.device=` as Linux reads it;
//! - [`clock`]: the TSC and deadlines in its ticks;
//! - [`machine`]: port I/O and ending the VM; [`serial`]: COM1 output.
//!
//! The two macros expand in the guest's binary (`main.rs`), never in a
//! library: host-side `cargo test` builds of the guests' libraries then
//! neither assemble the entry code nor replace the test program's memcpy.

#![cfg_attr(not(test), no_std)]

pub mod boot;
pub mod clock;
pub mod cmdline;
mod entry;
pub mod machine;
mod mem;
pub mod serial;
