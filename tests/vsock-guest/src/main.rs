//! The vsock test guest's two entry points (see lib.rs for what it does),
//! from `freestanding::entry_points!`:
//!
//! - `pvh_start` (32-bit, EBX = `hvm_start_info`), named by the PVH note: how
//!   QEMU's `-kernel` boots an ELF that is not a bzImage;
//! - `linux_start`, the ELF entry point (64-bit, RSI = `boot_params`): how
//!   linux-loader-based VMMs such as ours enter a vmlinux.

#![no_std]
#![no_main]

use vsock_guest::{boot, Entry};

freestanding::entry_points!(pvh = pvh_main, linux = linux_main);
freestanding::mem_functions!();

extern "C" fn pvh_main(start_info: u64) -> ! {
    // SAFETY: pvh_start passes EBX, the PVH start info's physical address, and
    // the boot page tables map the first 4 GiB one to one.
    let cmdline = unsafe { boot::pvh_cmdline(start_info) };
    vsock_guest::run(Entry::Pvh, cmdline)
}

extern "C" fn linux_main(boot_params: u64) -> ! {
    // SAFETY: linux_start passes RSI, the zero page's physical address, and
    // the boot page tables map the first 4 GiB one to one.
    let cmdline = unsafe { boot::linux_cmdline(boot_params) };
    vsock_guest::run(Entry::Linux, cmdline)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    vsock_guest::fail_on_panic(info)
}
