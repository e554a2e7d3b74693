//! vmbench, the orchestrator: boots Linux guests in parallel, collects each
//! guest's report of its boot over virtio-vsock, and turns the reports into
//! timelines, tables and statistics — every number recorded with how it was
//! produced. `ARCHITECTURE.md` at the repository root is the map.
//!
//! The pieces, in the order a `vmbench boot` uses them:
//! - [`pipeline`] runs the stages of `vmbench boot` in order;
//! - [`locate`] finds the kernel, agent, QEMU and vhost-device-vsock;
//! - [`inputs`] checks the kernel and initramfs before any VM starts;
//! - [`backend`] starts a guest's VMM: `kvm` (vmbench's own VMM, the
//!   `vmbench-vmm` crate, as a `vmbench vmm` process) or `qemu` (QEMU microvm);
//! - [`watch`] watches one VM: its sockets, its VMM's exit, its deadline, and
//!   judges the guest's protocol bytes;
//! - [`timeline`] turns marks into phases; [`systemd`] reads a systemd
//!   guest's own account; [`vmm_account`] keeps the kvm backend's;
//! - [`results`] is results.json; [`stats`] summarises samples;
//!   [`render`] prints tables from results alone;
//! - [`experiment`] is `vmbench run`: an experiment file mapped onto
//!   the same configurations `boot`, `bench` and `ab` build;
//! - [`environment`] records how a result was produced; [`doctor`] says what
//!   this host can run; [`rootfs_command`] is `vmbench rootfs`.
//!
//! Small shared pieces: [`clock`] (the host clock of every mark),
//! [`error_line`] (an error on one line), [`log_tail`] (a log's end),
//! [`interrupt`] (Ctrl-C and friends stop a run in order).

pub mod ab;
pub mod backend;
pub mod bench;
pub mod clock;
pub mod compare;
pub mod doctor;
pub mod environment;
pub mod error_line;
pub mod experiment;
pub mod inputs;
pub mod interrupt;
pub mod locate;
pub mod log_tail;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod render;
pub mod report;
pub mod results;
pub mod rootfs_command;
pub mod stats;
pub mod store_commands;
pub mod systemd;
pub mod timeline;
pub mod vmm_account;
pub mod watch;
