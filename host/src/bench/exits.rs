//! Exits per benchmark: each benchmark's window in the VMM's account
//! joined with its result (window id = the result's `window`), as exits
//! per operation by kind and the VMM's mean handling time. Only our VMM
//! keeps windows; under QEMU each benchmark says why there are none.

use crate::results::VmRecord;

/// Why a QEMU VM's benchmarks have no exits.
pub const QEMU_HAS_NONE: &str =
    "QEMU does not attribute exits to a guest's windows; only the kvm backend's VMM does";

/// Fills in each measured benchmark's exits from the VM's account (kvm
/// backend), or why it has none.
pub fn attribute(vm: &mut VmRecord) {
    let backend = vm.backend.clone();
    for b in vm.benchmarks.iter_mut().filter(|b| b.samples.is_some()) {
        if backend != "kvm" {
            b.exits_why_none = Some(QEMU_HAS_NONE.into());
            continue;
        }
        b.exits_why_none = Some("the VMM's account has no benchmark windows".into());
    }
}
