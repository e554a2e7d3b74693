//! The virtio-mmio transport, in front of a real device, by a hostile driver's program: see
//! `vmbench_vmm::fuzzing::mmio_transport` for how the input is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{init, scratch, without_fd_leak};

fuzz_target!(init: init(), |data: &[u8]| {
    without_fd_leak(|| vmbench_vmm::fuzzing::mmio_transport(scratch(), data));
});
