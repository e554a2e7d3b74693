//! `vmbench vmm` run directly, one VM: its command line and the account it
//! leaves in its directory (vmm.json).

use std::path::Path;
use std::process::Command;

use crate::vmbench_bin;

/// The program the kvm backend spawns per VM: `vmbench-vmm` beside
/// `vmbench` (the two are built together), or `vmbench vmm` without it.
pub fn backend_vmm_command(kernel: &Path, dir: &Path) -> Command {
    let vmbench = vmbench_bin();
    let program = vmbench.with_file_name("vmbench-vmm");
    let mut command = match program.is_file() {
        true => Command::new(program),
        false => {
            let mut command = Command::new(vmbench);
            command.arg("vmm");
            command
        }
    };
    command.arg("--kernel").arg(kernel).arg("--dir").arg(dir);
    command
}

/// `vmbench vmm --kernel KERNEL --dir DIR`; the caller adds the rest.
pub fn vmm_command(kernel: &Path, dir: &Path) -> Command {
    let mut command = Command::new(vmbench_bin());
    command
        .arg("vmm")
        .arg("--kernel")
        .arg(kernel)
        .arg("--dir")
        .arg(dir);
    command
}

/// The VMM's account of the VM that ran in `dir`.
pub fn vmm_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("vmm.json")).unwrap()).unwrap()
}
