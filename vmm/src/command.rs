//! `vmbench vmm`: one VM in the foreground, from its configuration to the
//! line that says how it ended and the exit status that goes with it.

use std::path::PathBuf;

use crate::account::{Account, End};
use crate::exits::Kind;
use crate::machine::{self, Machine, MachineConfig, VsockConfig};
use crate::vm_dir;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot create --dir {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Machine(#[from] machine::Error),
}

/// How a VM run by [`run`] ended, for the person who started it.
#[derive(Debug)]
pub struct Ended {
    pub account: Account,
    /// Where the account was written.
    pub account_path: PathBuf,
}

impl Ended {
    /// The exit status `vmbench vmm` ends with: 0 for a guest that reset
    /// or triple-faulted (how it powers off), 1 for a failed VM, 3 for a
    /// VM stopped by a signal.
    pub fn exit_code(&self) -> u8 {
        match self.account.end {
            End::Reset | End::TripleFault => 0,
            End::Failed { .. } => 1,
            End::Stopped { .. } => 3,
        }
    }

    /// The line to print, and whether it goes to stderr (a failure or a stop).
    pub fn message(&self) -> (String, bool) {
        let account = &self.account;
        let count = |kind| {
            account
                .vcpus
                .iter()
                .map(|v| v.exits.count(kind))
                .sum::<u64>()
        };
        let summary = format!(
            "userspace exits: {} io out, {} io in, {} mmio write, {} mmio read; account: {}",
            count(Kind::IoOut),
            count(Kind::IoIn),
            count(Kind::MmioWrite),
            count(Kind::MmioRead),
            self.account_path.display()
        );
        let said = account
            .guest_said
            .as_ref()
            .map(|s| format!(" after the kernel said \"{}\"", crate::cli::printable(s)))
            .unwrap_or_default();
        match &account.end {
            End::Reset => (
                format!("vmm: the guest reset the machine{said}; {summary}"),
                false,
            ),
            End::TripleFault => (
                format!(
                    "vmm: the guest triple-faulted (how it reboots with reboot=t){said}; {summary}"
                ),
                false,
            ),
            End::Failed { detail } => (format!("vmbench: error: the VM failed: {detail}"), true),
            End::Stopped { signal } => (
                format!("vmbench: the VM was stopped by signal {signal}; {summary}"),
                true,
            ),
        }
    }
}

/// The vsock device `vmbench vmm --vsock-cid` asks for: its host side in
/// the VM's directory.
pub fn vsock_in_dir(config_dir: &std::path::Path, guest_cid: u64) -> VsockConfig {
    VsockConfig {
        guest_cid,
        uds_base: config_dir.join(vm_dir::VSOCK_SOCKET),
    }
}

/// Creates the VM's directory, runs the VM to its end and returns its account.
pub fn run(config: &MachineConfig) -> Result<Ended, Error> {
    std::fs::create_dir_all(&config.dir).map_err(|source| Error::Dir {
        path: config.dir.clone(),
        source,
    })?;
    let account = Machine::new(config)?.run();
    Ok(Ended {
        account,
        account_path: crate::account::path_in(&config.dir),
    })
}
