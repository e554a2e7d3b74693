//! The benchmark port ([`crate::layout::BENCH_PORT`], 0x0EE0): a 4-byte
//! read-only register whose reads the VMM answers in userspace, so that a
//! guest can time the round trip to the VMM (kvm-unit-tests'
//! `inl_from_qemu`, our `port_io_user` and `inl_from_vmm` benchmarks). It
//! answers [`VALUE`] (`"nebv"` in memory, little-endian): a read of 1, 2
//! or 4 bytes at the port gets its low bytes, a read at one of the next
//! three ports the bytes from there (all ones past the register); writes
//! are ignored. It has no state, so any access costs the same.

use crate::layout::BENCH_PORT;

/// What a 4-byte read of the port returns.
pub const VALUE: u32 = 0x7662_656e;
/// The register's width: it answers ports [`BENCH_PORT`] to `BENCH_PORT + 3`.
pub const BYTES: u16 = 4;

/// A read of `data.len()` bytes at `port`, one of the register's ports.
pub fn read(port: u16, data: &mut [u8]) {
    let value = VALUE.to_le_bytes();
    let offset = usize::from(port.wrapping_sub(BENCH_PORT));
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = value.get(offset + i).copied().unwrap_or(0xff);
    }
}

/// Whether `port` is one of the register's.
pub fn claims(port: u16) -> bool {
    (BENCH_PORT..BENCH_PORT + BYTES).contains(&port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_give_the_value_from_the_port_on() {
        let read_at = |port: u16, len: usize| {
            let mut data = vec![0u8; len];
            read(port, &mut data);
            data
        };
        assert_eq!(read_at(BENCH_PORT, 4), VALUE.to_le_bytes());
        assert_eq!(read_at(BENCH_PORT, 4), b"nebv");
        assert_eq!(read_at(BENCH_PORT, 2), [0x6e, 0x65], "the low bytes");
        assert_eq!(read_at(BENCH_PORT, 1), [0x6e]);
        assert_eq!(read_at(BENCH_PORT + 2, 2), [0x62, 0x76]);
        assert_eq!(read_at(BENCH_PORT + 3, 4), [0x76, 0xff, 0xff, 0xff]);
        assert!(claims(0x0ee0) && claims(0x0ee3));
        assert!(!claims(0x0edf) && !claims(0x0ee4));
    }
}
