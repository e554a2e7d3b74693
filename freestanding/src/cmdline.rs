//! The command line as Linux reads it: words separated by whitespace, ours
//! of the form `key=value` (other words are ignored), and the one value
//! every freestanding guest reads the same way:
//!
//! - `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`, as QEMU microvm
//!   (`512@0xfeb00e00:12`) and vmbench's VMM (`4K@0xd0000000:5`) write it,
//!   parsed like Linux does: size and base are decimal or `0x` hex, the size
//!   may end in K, M or G.
//!
//! Each guest matches its own keys over [`words`] and parses their values
//! with [`parse_number`] and [`parse_u32`].

use core::fmt;

/// One `virtio_mmio.device=` window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

/// Every `key=value` word of `cmdline`, in order, split at its first `=`.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .filter_map(|word| {
            let eq = word.iter().position(|&b| b == b'=')?;
            Some((&word[..eq], &word[eq + 1..]))
        })
}

/// The value of `virtio_mmio.device=`: `<size>@<base>:<irq>[:<id>]`.
pub fn parse_device(value: &[u8]) -> Option<MmioDevice> {
    let at = value.iter().position(|&b| b == b'@')?;
    let size = parse_size(&value[..at])?;
    let mut rest = value[at + 1..].split(|&b| b == b':');
    let base = parse_number(rest.next()?)?;
    let irq = parse_u32(rest.next()?)?;
    if let Some(id) = rest.next() {
        parse_u32(id)?;
    }
    if rest.next().is_some() || size == 0 || base.checked_add(size).is_none() {
        return None;
    }
    Some(MmioDevice { base, size, irq })
}

/// A number with an optional K, M or G suffix (Linux's memparse).
pub fn parse_size(text: &[u8]) -> Option<u64> {
    let (digits, shift) = match text.last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n = parse_number(digits)?;
    n.checked_mul(1 << shift)
}

/// Decimal, or hexadecimal after `0x`.
pub fn parse_number(text: &[u8]) -> Option<u64> {
    let (digits, radix) = match text {
        [b'0', b'x' | b'X', hex @ ..] => (hex, 16),
        _ => (text, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(radix)?;
        n.checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))
    })
}

/// A decimal u32 (no hex: ports and interrupt lines are written in decimal).
pub fn parse_u32(text: &[u8]) -> Option<u32> {
    if text.starts_with(b"0x") || text.starts_with(b"0X") {
        return None;
    }
    u32::try_from(parse_number(text)?).ok()
}

/// Shows bytes as text, non-printable ones as `\xNN`.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if b == b' ' || b.is_ascii_graphic() {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_key_value_pairs_and_the_rest_is_ignored() {
        let line = b"quiet x= =y  a=b=c\tlast=1\n";
        let got: Vec<(&[u8], &[u8])> = words(line).collect();
        assert_eq!(
            got,
            [
                (&b"x"[..], &b""[..]),
                (b"", b"y"),
                (b"a", b"b=c"),
                (b"last", b"1")
            ]
        );
        assert_eq!(words(b"").count(), 0);
    }

    #[test]
    fn devices_as_qemu_and_vmbench_write_them() {
        assert_eq!(
            parse_device(b"512@0xfeb00e00:12"),
            Some(MmioDevice {
                base: 0xfeb0_0e00,
                size: 512,
                irq: 12
            })
        );
        assert_eq!(
            parse_device(b"4K@0xd0001000:6:3"),
            Some(MmioDevice {
                base: 0xd000_1000,
                size: 4096,
                irq: 6
            })
        );
    }

    #[test]
    fn bad_devices_are_refused() {
        for bad in [
            &b"512"[..],
            b"512@0xfeb00000",
            b"512@0xfeb00000:",
            b"512@:5",
            b"0@0x1000:5",
            b"512@0xzz:5",
            b"512@0x1000:5:1:2",
            b"2@0xffffffffffffffff:5",
            b"",
        ] {
            assert_eq!(parse_device(bad), None, "{}", Printable(bad));
        }
    }

    #[test]
    fn sizes_and_bases() {
        assert_eq!(parse_size(b"512"), Some(512));
        assert_eq!(parse_size(b"4K"), Some(4096));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"0x1000"), Some(4096));
        assert_eq!(parse_size(b"2M"), Some(2 << 20));
        assert_eq!(parse_size(b"1G"), Some(1 << 30));
        assert_eq!(parse_size(b"K"), None);
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"0x"), None);
        assert_eq!(parse_size(b"12q"), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
        assert_eq!(parse_size(b"0xffffffffffffffffG"), None);
        assert_eq!(parse_number(b"0XFEB00000"), Some(0xfeb0_0000));
        assert_eq!(parse_number(b"4096"), Some(4096));
    }

    #[test]
    fn u32_values_are_decimal_and_in_range() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"0x10"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
    }

    #[test]
    fn printable() {
        assert_eq!(Printable(b"a=b c\x01\n").to_string(), "a=b c\\x01\\x0a");
    }
}
