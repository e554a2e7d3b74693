//! vmbench: boots Linux guests in parallel, collects each guest's report of
//! its boot over virtio-vsock, and turns the reports into timelines, tables
//! and statistics — every number recorded with how it was produced.
//!
//! The pieces, in the order a `vmbench boot` uses them:
//! - [`locate`] finds the kernel, agent, QEMU and vhost-device-vsock;
//! - [`inputs`] checks the kernel and initramfs before any VM starts;
//! - [`kvm_probe`] tells native KVM from emulated KVM (and picks the accelerator);
//! - [`backend`] runs a guest (today: QEMU microvm);
//! - [`vm`] watches one VM: its sockets, its VMM's exit, its deadline;
//! - [`collector`] judges the guest's protocol bytes;
//! - [`timeline`] turns marks into phases; [`systemd`] reads a systemd guest's own account;
//! - [`results`], [`report`] write results.json and print tables;
//! - [`boot`] runs N VMs and ties it together; [`doctor`] says what this host can run.

pub mod backend;
pub mod boot;
pub mod collector;
pub mod doctor;
pub mod environment;
pub mod inputs;
pub mod locate;
pub mod report;
pub mod results;
pub mod systemd;
pub mod timeline;
pub mod vm;
pub mod vmm_account;
