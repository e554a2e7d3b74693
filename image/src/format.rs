//! Which format a file's first bytes say it is.
//!
//! A raw image has no signature: anything that is not qcow2 could be one.
//! So a file is raw unless it starts with the signature of something a user
//! may hand us by mistake: another VM image format (its metadata would
//! reach the guest as disk contents) or a kernel, initramfs or archive.

use std::io;
use std::path::Path;

use crate::file::read_prefix;
use crate::qcow2::ondisk::MAGIC as QCOW2_MAGIC;

/// Bytes [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 0x206;

/// The formats vmbench reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    /// The name qcow2 headers and QEMU use.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Qcow2,
    Raw,
    /// A VM image in a format we do not read; says which.
    OtherImage(&'static str),
    /// Not a disk image at all; says what it looks like.
    NotAnImage(&'static str),
}

impl Sniffed {
    /// The format to read the file as, if it is one vmbench reads.
    pub fn format(self) -> Option<Format> {
        match self {
            Sniffed::Qcow2 => Some(Format::Qcow2),
            Sniffed::Raw => Some(Format::Raw),
            Sniffed::OtherImage(_) | Sniffed::NotAnImage(_) => None,
        }
    }
}

/// (offset, signature, what it is, whether it is a VM image).
///
/// VirtualBox writes a text banner at byte 0 (`<<< Oracle VM VirtualBox
/// Disk Image >>>`) and the binary signature at 0x40: both are listed, so
/// that a VDI whose banner was edited is still recognised.
const SIGNATURES: [(usize, &[u8], &str, bool); 15] = [
    (0, b"KDMV", "VMDK image", true),
    (0, b"# Disk DescriptorFile", "VMDK descriptor", true),
    (0, b"vhdxfile", "VHDX image", true),
    (0, b"conectix", "VHD image", true),
    (0, b"QED\0", "QED image", true),
    (0, b"<<< ", "VirtualBox VDI image", true),
    (0x40, &[0x7f, 0x10, 0xda, 0xbe], "VDI image", true),
    (0, b"LUKS\xba\xbe", "LUKS-encrypted volume", true),
    (0, &[0x1f, 0x8b], "gzip file (an initramfs?)", false),
    (0, b"\xfd7zXZ\0", "xz file", false),
    (0, &[0x28, 0xb5, 0x2f, 0xfd], "zstd file", false),
    (0, b"070701", "cpio archive (an initramfs?)", false),
    (0, b"070702", "cpio archive (an initramfs?)", false),
    (0, b"\x7fELF", "ELF file (a kernel?)", false),
    (0x202, b"HdrS", "Linux bzImage kernel", false),
];

/// The format of a file starting with `first` (up to [`SNIFF_BYTES`] bytes).
pub fn sniff(first: &[u8]) -> Sniffed {
    if first.starts_with(QCOW2_MAGIC) {
        return Sniffed::Qcow2;
    }
    for (offset, signature, what, image) in SIGNATURES {
        if first
            .get(offset..)
            .is_some_and(|rest| rest.starts_with(signature))
        {
            return if image {
                Sniffed::OtherImage(what)
            } else {
                Sniffed::NotAnImage(what)
            };
        }
    }
    Sniffed::Raw
}

/// The format of the file at `path`, by its first bytes.
pub fn sniff_file(path: &Path) -> io::Result<Sniffed> {
    let file = std::fs::File::open(path)?;
    Ok(sniff(&read_prefix(&file, SNIFF_BYTES)?))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn signatures_are_recognised() {
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Sniffed::Qcow2);
        assert_eq!(sniff(b"KDMV\x01"), Sniffed::OtherImage("VMDK image"));
        assert_eq!(
            sniff(&[0x1f, 0x8b, 8, 0]),
            Sniffed::NotAnImage("gzip file (an initramfs?)")
        );
        let mut bzimage = vec![0u8; SNIFF_BYTES];
        bzimage[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(sniff(&bzimage), Sniffed::NotAnImage("Linux bzImage kernel"));
        let mut vdi = vec![0u8; 0x44];
        vdi[0x40..].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        assert_eq!(sniff(&vdi), Sniffed::OtherImage("VDI image"));
        assert_eq!(
            sniff(b"<<< Oracle VM VirtualBox Disk Image >>>\n"),
            Sniffed::OtherImage("VirtualBox VDI image")
        );
        assert_eq!(sniff(b"vhdxfile"), Sniffed::OtherImage("VHDX image"));
        assert_eq!(sniff(b"conectix"), Sniffed::OtherImage("VHD image"));
    }

    #[test]
    fn anything_else_is_raw() {
        assert_eq!(sniff(b""), Sniffed::Raw);
        assert_eq!(sniff(b"QFI"), Sniffed::Raw, "too short to be qcow2");
        // An MBR, an ext4 image (zeros before its superblock), text.
        let mut mbr = vec![0u8; 512];
        mbr[510..].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(sniff(&mbr), Sniffed::Raw);
        assert_eq!(sniff(&[0u8; SNIFF_BYTES]), Sniffed::Raw);
        assert_eq!(sniff(b"hello"), Sniffed::Raw);
    }

    #[test]
    fn a_file_is_sniffed_by_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(sniff_file(&path).unwrap(), Sniffed::Qcow2);
        assert_eq!(Sniffed::Qcow2.format(), Some(Format::Qcow2));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(sniff_file(&path).unwrap().format(), Some(Format::Raw));
        assert!(sniff_file(&dir.path().join("nope")).is_err());
    }

    proptest! {
        /// Any bytes are some format, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x300)) {
            let _ = sniff(&bytes);
        }
    }
}
