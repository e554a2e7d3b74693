//! The initramfs reader: a stream of cpio newc archives and gzip members,
//! as `vmbench boot --initramfs` reads a user's file, then the check that
//! the kernel would find an `/init` to run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench_rootfs::{check_bootable, read_initramfs, read_newc};

fuzz_target!(|data: &[u8]| {
    let _ = read_newc(data);
    let Ok(entries) = read_initramfs(data) else {
        return;
    };
    for entry in &entries {
        let _ = entry.node();
        let _ = entry.name_lossy();
    }
    let _ = check_bootable(&entries);
});
