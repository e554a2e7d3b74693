//! `vmbench-vmm`: vmbench's VMM as a program of its own — what the kvm
//! backend spawns per VM, and what `vmbench vmm` becomes where it is
//! installed beside `vmbench` (see `vmbench_vmm::cli`): one VM in the
//! foreground, its account written to `<dir>/vmm.json`. It links only the
//! VMM, so a VMM process's resident memory is the VMM's.

use std::process::ExitCode;

use clap::Parser;

/// Run one VM in the foreground with vmbench's own VMM (needs /dev/kvm).
#[derive(Parser)]
#[command(name = "vmbench-vmm", version)]
struct Cli {
    #[command(flatten)]
    args: vmbench_vmm::cli::VmmArgs,
}

fn main() -> ExitCode {
    vmbench_vmm::cli::run(vmbench_vmm::cli::parse_or_exit::<Cli>().args)
}
