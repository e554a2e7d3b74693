//! qcow2 header and backing-chain validation: one to three files made from
//! the input, the first opened as the top of a chain (as the pre-boot check
//! and the VMM open a disk), vetted file by file, handed to imago and read.
//!
//! Input: a byte `n` (1 + n % 3 files), then for each file but the last a
//! u16 length and its bytes; the last file takes the rest. The files are
//! `img0`, `img1`, `img2` in one directory, so a header naming `img1` as
//! its backing file chains to the second.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{init, scratch, without_fd_leak};
use vmbench_image::{Chain, OpenOptions};

const NAMES: [&str; 3] = ["img0", "img1", "img2"];

fuzz_target!(init: init(), |data: &[u8]| {
    let dir = scratch();
    let Some((&n, mut rest)) = data.split_first() else {
        return;
    };
    let files = usize::from(n % 3) + 1;
    for (i, name) in NAMES.iter().enumerate() {
        let path = dir.join(name);
        if i >= files {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let len = if i + 1 == files || rest.len() < 2 {
            rest.len()
        } else {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
            len.min(rest.len())
        };
        std::fs::write(&path, &rest[..len]).expect("write an image file");
        rest = &rest[len..];
    }
    without_fd_leak(|| {
        let options = OpenOptions {
            writable: false,
            lock: true,
            // Read-only and unstated: the top's format is probed, the path
            // that reads the most of what the file says.
            format: None,
        };
        let Ok(chain) = Chain::open(&dir.join(NAMES[0]), options) else {
            return;
        };
        let layers = chain.layers();
        assert!(!layers.is_empty() && layers.len() <= vmbench_image::MAX_CHAIN_DEPTH);
        let Ok(image) = chain.into_imago() else {
            return;
        };
        let size = image.virtual_size_bytes();
        for offset in [0, size / 2, size.saturating_sub(4096)] {
            let _ = image.read(offset, 4096.min((size - offset) as usize));
        }
    });
});
