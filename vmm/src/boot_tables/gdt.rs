//! The global descriptor table for both entries, and the KVM segment
//! registers that describe the same descriptors (the CPU does not reload
//! them from memory until the guest loads a selector).

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::WriteError;

/// A descriptor from access flags (type, S, DPL, P in the low byte; AVL, L,
/// D/B, G in the high nibble), base and 20-bit limit, in the CPU's layout.
pub const fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// Null, 64-bit code (L=1), data, a busy 32-bit TSS, and 32-bit code
/// (D/B=1) for the PVH entry, which starts in 32-bit protected mode.
pub const TABLE: [u64; 5] = [
    0,
    entry(0xa09b, 0, 0xfffff),
    entry(0xc093, 0, 0xfffff),
    entry(0x808b, 0, 0xfffff),
    entry(0xc09b, 0, 0xfffff),
];

pub const CODE_INDEX: u16 = 1;
pub const DATA_INDEX: u16 = 2;
pub const TSS_INDEX: u16 = 3;
pub const CODE32_INDEX: u16 = 4;

/// The segment register KVM should hold for descriptor `index` of [`TABLE`].
pub fn segment(index: u16) -> kvm_segment {
    let e = TABLE[usize::from(index)];
    let bit = |n: u32| ((e >> n) & 1) as u8;
    let raw_limit = ((e & 0xffff) | ((e >> 32) & 0xf_0000)) as u32;
    let granular = bit(55) == 1;
    kvm_segment {
        base: ((e >> 16) & 0xff_ffff) | ((e >> 32) & 0xff00_0000),
        // KVM takes the limit in bytes: with G set it is in 4 KiB units.
        limit: if granular {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((e >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((e >> 45) & 3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

/// Writes [`TABLE`] at `addr` and an empty IDT at `idt_addr`.
pub fn write<M: GuestMemory>(mem: &M, addr: u64, idt_addr: u64) -> Result<(), WriteError> {
    for (i, descriptor) in TABLE.iter().enumerate() {
        let at = addr + (i as u64) * 8;
        mem.write_obj(*descriptor, GuestAddress(at))
            .map_err(|source| WriteError {
                what: "GDT",
                addr: at,
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(idt_addr))
        .map_err(|source| WriteError {
            what: "IDT",
            addr: idt_addr,
            source,
        })
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    #[test]
    fn descriptors_match_their_well_known_encodings() {
        // The flat 64-bit code and data descriptors every x86-64 boot uses.
        assert_eq!(TABLE[1], 0x00af_9b00_0000_ffff);
        assert_eq!(TABLE[2], 0x00cf_9300_0000_ffff);
        assert_eq!(TABLE[3], 0x008f_8b00_0000_ffff);
        assert_eq!(TABLE[4], 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn pvh_code_segment_is_32_bit() {
        let cs = segment(CODE32_INDEX);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.type_, cs.base),
            (32, 0, 1, 0xb, 0)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = entry(0x0093, 0x1234_5678, 0xabcde);
        assert_eq!(e & 0xffff, 0xbcde);
        assert_eq!((e >> 16) & 0xff_ffff, 0x34_5678);
        assert_eq!((e >> 56) & 0xff, 0x12);
        assert_eq!((e >> 48) & 0xf, 0xa);
    }

    #[test]
    fn code_segment_is_long_mode() {
        let cs = segment(CODE_INDEX);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.present, cs.s, cs.type_),
            (8, 1, 0, 1, 1, 0xb)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(DATA_INDEX);
        assert_eq!((ds.selector, ds.db, ds.type_, ds.l), (16, 1, 3, 0));
        let tr = segment(TSS_INDEX);
        // 0x808b: present busy TSS with 4 KiB granularity.
        assert_eq!((tr.selector, tr.type_, tr.s, tr.g), (24, 0xb, 0, 1));
        assert_eq!(tr.limit, 0xffff_ffff);
    }

    #[test]
    fn table_lands_in_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        write(&mem, 0x500, 0x520).unwrap();
        let code: u64 = mem.read_obj(GuestAddress(0x508)).unwrap();
        assert_eq!(code, TABLE[1]);
        let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100)]).unwrap();
        assert!(write(&small, 0x500, 0x520)
            .unwrap_err()
            .to_string()
            .contains("GDT at 0x500"));
    }
}
