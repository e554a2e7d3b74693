//! Which format a file's first bytes say it is.
//!
//! A raw image has no signature: anything that is not qcow2 could be one.
//! So a file is raw unless it starts with the signature of something a user
//! may hand us by mistake: another VM image format (its metadata would
//! reach the guest as disk contents) or a kernel, initramfs or archive.

/// Bytes [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 0x206;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Qcow2,
    Raw,
    /// A VM image in a format we do not read; says which.
    OtherImage(&'static str),
    /// Not a disk image at all; says what it looks like.
    NotAnImage(&'static str),
}

/// (offset, signature, what it is, whether it is a VM image).
const SIGNATURES: [(usize, &[u8], &str, bool); 14] = [
    (0, b"KDMV", "VMDK image", true),
    (0, b"# Disk DescriptorFile", "VMDK descriptor", true),
    (0, b"vhdxfile", "VHDX image", true),
    (0, b"conectix", "VHD image", true),
    (0, b"QED\0", "QED image", true),
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
    if first.starts_with(super::qcow2_header::MAGIC) {
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

#[cfg(test)]
mod tests {
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
}
