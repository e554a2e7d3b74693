//! vmbench's own VMM (the `kvm` backend), built on the rust-vmm crates: one
//! KVM virtual machine per process, and an account of everything it did.
//!
//! Boot steps, in the order [`machine::Machine::new`] and
//! [`machine::Machine::run`] take them:
//! 1. guest memory and the VM, with the in-kernel irqchip and PIT
//!    ([`layout`] says where everything goes, in memory, in the MMIO window
//!    and in port I/O space);
//! 2. the virtio devices ([`devices::virtio`]), first because the kernel
//!    command line announces them;
//! 3. the kernel, initramfs and command line ([`loader`], with
//!    linux-loader);
//! 4. the boot tables that describe them ([`boot_tables`]): the zero page
//!    with the e820 map, PVH's start info, the GDT, the MP table for CPUs
//!    and interrupt routing without ACPI, identity page tables for the
//!    64-bit entry;
//! 5. the vCPUs at the kernel's entry ([`cpu`]): segments, control
//!    registers, EFER, general registers, FPU, boot MSRs, CPUID and local
//!    APIC;
//! 6. the legacy devices (serial port, boot marker, benchmark port), and
//!    each vCPU's KVM statistics fd for benchmark windows ([`windows`]);
//! 7. each thread confined by its seccomp filter ([`seccomp`]) before the
//!    first `KVM_RUN`;
//! 8. the run loops ([`machine`]), one thread per vCPU, which account for
//!    every userspace exit ([`exits`]) and read KVM's own statistics at the
//!    end ([`kvm_stats`]), and the device thread ([`event_loop`]);
//! 9. the account of the VM ([`account`], `vmm.json`, its format in
//!    `docs/vmm-json.md`), written when it ends. Every table in it that is
//!    keyed by what the guest did (ports, addresses, marks) keeps its first
//!    keys and counts the rest together ([`bounded`]), so neither the VMM
//!    nor its account grows with what a guest does.
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
//! [`emulated_kvm`] is a test aid for hosts whose KVM emulates guest code:
//! it completes the few instructions KVM's emulator refuses, so Linux gets
//! to `Run /init` there (`vmbench vmm --emulated-kvm`).
//!
//! [`command`] is the body of `vmbench vmm`, [`cli`] its command line (also
//! the `vmbench-vmm` program's); [`probe`] is a second, tiny
//! use of KVM that times a calibration guest to tell native KVM from KVM
//! that emulates guest code. Every time the VMM records is on [`clock`].
//! The VMM depends on nothing of the orchestrator: it is reached through
//! [`command`], [`machine::MachineConfig`], the files of the VM's directory
//! ([`vm_dir`], the account among them) and two helpers for a program
//! that runs it: [`loader::pvh_entry`] (does a kernel have the PVH entry?)
//! and [`devices::marker::MarkStream`] (is a byte from the boot-marker
//! stream a mark, noise, or part of a benchmark window's mark?).
//!
//! [`windows`] attributes exits to benchmark windows the guest marks on
//! the boot-marker port: every vCPU's userspace exits and KVM statistics
//! between a window's start and end marks.

pub mod account;
pub mod boot_tables;
pub mod bounded;
pub mod cli;
pub mod clock;
pub mod command;
pub mod cpu;
pub mod devices;
pub mod emulated_kvm;
pub mod event_loop;
pub mod exits;
#[doc(hidden)]
pub mod fuzzing;
pub mod kvm_stats;
pub mod layout;
pub mod loader;
pub mod machine;
pub mod probe;
pub mod seccomp;
pub mod vm_dir;
pub mod windows;
