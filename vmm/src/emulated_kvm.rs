//! A test aid for hosts whose KVM emulates guest code, nothing more.
//!
//! Under nested virtualisation without hardware support (the development
//! and CI machines), KVM runs every guest instruction through its
//! instruction emulator. Linux then stops at the first instruction the
//! emulator refuses: KVM exits with an internal error (suberror 1,
//! emulation failure) and hands back the instruction's bytes. This module
//! completes the few such instructions a Linux boot meets, so the kernel
//! reaches `Run /init` and the VMM's Linux boot path (entry, CPU and
//! irqchip setup, timers, the serial port, Linux's own virtio-mmio drivers
//! probing our devices) is exercised on these hosts too:
//!
//! | bytes | instruction | what the VMM does |
//! | --- | --- | --- |
//! | `cc` | INT3 | RIP past it, then #BP injected (a trap: the handler sees the next RIP) |
//! | `0f 0b` | UD2 | #UD injected at it (a fault: Linux's BUG/WARN handler reads it) |
//! | `0f 01 ca` | CLAC | RFLAGS.AC cleared, RIP past it |
//! | `0f 01 cb` | STAC | RFLAGS.AC set, RIP past it |
//! | `f3 [REX] 0f b8 /r`, register operands | POPCNT | the count and flags written, RIP past it |
//!
//! Anything else still ends the VM with KVM's reason. The guest's other
//! CPU features are turned off on its command line (`noxsave`: KVM's
//! emulator has no XRSTOR, and filtering CPUID does not reach the guest on
//! these hosts). Timings of a guest run this way are the emulator's, never
//! a hardware boot's; the orchestrator turns this on only where its KVM
//! calibration found KVM emulating, and says so in the results.
//!
//! [`complete`] is a pure function of the instruction bytes and the
//! registers, so it is tested on register states without KVM.

use std::collections::BTreeMap;

use kvm_bindings::kvm_regs;
use serde::{Deserialize, Serialize};

/// RFLAGS bits this module reads or writes.
const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_PF: u64 = 1 << 2;
const RFLAGS_AF: u64 = 1 << 4;
const RFLAGS_ZF: u64 = 1 << 6;
const RFLAGS_SF: u64 = 1 << 7;
const RFLAGS_OF: u64 = 1 << 11;
const RFLAGS_AC: u64 = 1 << 18;

/// Exception vectors injected.
const BP_VECTOR: u8 = 3;
const UD_VECTOR: u8 = 6;

/// The instructions the VMM completes, by the name the account counts them under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovered {
    Int3,
    Ud2,
    Clac,
    Stac,
    Popcnt,
}

impl Recovered {
    pub fn name(self) -> &'static str {
        match self {
            Recovered::Int3 => "int3",
            Recovered::Ud2 => "ud2",
            Recovered::Clac => "clac",
            Recovered::Stac => "stac",
            Recovered::Popcnt => "popcnt",
        }
    }
}

/// What the VMM does to the vCPU to complete an instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub recovered: Recovered,
    /// The registers to set (RIP, RFLAGS and any result already in them).
    pub regs: kvm_regs,
    /// An exception to inject after setting them.
    pub inject: Option<u8>,
}

/// The account of the fallback: how many instructions of each kind it completed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub recovered: BTreeMap<Recovered, u64>,
}

impl Counts {
    pub fn count(&mut self, recovered: Recovered) {
        *self.recovered.entry(recovered).or_default() += 1;
    }

    pub fn add(&mut self, other: &Counts) {
        for (kind, n) in &other.recovered {
            *self.recovered.entry(*kind).or_default() += n;
        }
    }
}

/// The instruction at RIP after its prefixes.
struct Decoded<'a> {
    /// An operand-size prefix (0x66) came before it.
    operand_16: bool,
    /// A REPE/F3 prefix came before it (part of POPCNT's encoding).
    rep: bool,
    /// The REX prefix (64-bit mode only), 0 without one.
    rex: u8,
    /// The opcode and what follows it.
    rest: &'a [u8],
    /// Bytes of prefixes.
    prefix_len: usize,
}

fn decode(bytes: &[u8], long_mode: bool) -> Decoded<'_> {
    let mut at = 0;
    let (mut operand_16, mut rep) = (false, false);
    while let Some(&b) = bytes.get(at) {
        match b {
            0x66 => operand_16 = true,
            0xf3 => rep = true,
            0xf2 | 0xf0 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67 => {}
            _ => break,
        }
        at += 1;
    }
    let rex = match bytes.get(at) {
        Some(&b) if long_mode && (0x40..=0x4f).contains(&b) => {
            at += 1;
            b
        }
        _ => 0,
    };
    Decoded {
        operand_16,
        rep,
        rex,
        rest: &bytes[at..],
        prefix_len: at,
    }
}

/// General register `index` (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp,
/// 6 rsi, 7 rdi, 8–15 r8–r15), as the ModRM and REX bits number them.
fn register(regs: &mut kvm_regs, index: u8) -> &mut u64 {
    match index & 15 {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    }
}

/// How to complete the instruction `bytes` (as KVM reported them, starting
/// at RIP) on a vCPU with `regs`, in 64-bit mode or not; `None` for an
/// instruction this fallback does not know, which ends the VM as before.
pub fn complete(bytes: &[u8], regs: &kvm_regs, long_mode: bool) -> Option<Completion> {
    let d = decode(bytes, long_mode);
    let mut regs = *regs;
    let advance = |regs: &mut kvm_regs, len: usize| regs.rip = regs.rip.wrapping_add(len as u64);
    let (recovered, inject) = match d.rest {
        [0xcc, ..] if d.prefix_len == 0 => {
            advance(&mut regs, 1);
            (Recovered::Int3, Some(BP_VECTOR))
        }
        [0x0f, 0x0b, ..] => (Recovered::Ud2, Some(UD_VECTOR)),
        [0x0f, 0x01, 0xca, ..] if d.prefix_len == 0 => {
            regs.rflags &= !RFLAGS_AC;
            advance(&mut regs, 3);
            (Recovered::Clac, None)
        }
        [0x0f, 0x01, 0xcb, ..] if d.prefix_len == 0 => {
            regs.rflags |= RFLAGS_AC;
            advance(&mut regs, 3);
            (Recovered::Stac, None)
        }
        [0x0f, 0xb8, modrm, ..] if d.rep && modrm >> 6 == 0b11 => {
            popcnt(&mut regs, &d, *modrm);
            advance(&mut regs, d.prefix_len + 3);
            (Recovered::Popcnt, None)
        }
        _ => return None,
    };
    Some(Completion {
        recovered,
        regs,
        inject,
    })
}

/// POPCNT dest, src with both operands registers (ModRM mod 11): the
/// count of src's set bits at the operand size; ZF set when src is 0, CF,
/// OF, SF, AF and PF cleared.
fn popcnt(regs: &mut kvm_regs, d: &Decoded<'_>, modrm: u8) {
    let dest = ((modrm >> 3) & 7) | ((d.rex & 0b0100) << 1);
    let src = (modrm & 7) | ((d.rex & 0b0001) << 3);
    let wide = d.rex & 0b1000 != 0;
    let value = *register(regs, src);
    let value = if wide {
        value
    } else if d.operand_16 {
        value & 0xffff
    } else {
        value & 0xffff_ffff
    };
    let count = u64::from(value.count_ones());
    let target = register(regs, dest);
    *target = if d.operand_16 && !wide {
        // A 16-bit write keeps the register's upper bits.
        (*target & !0xffff) | count
    } else {
        // A 32-bit write zero-extends; a 64-bit one replaces.
        count
    };
    regs.rflags &= !(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF);
    if value == 0 {
        regs.rflags |= RFLAGS_ZF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> kvm_regs {
        kvm_regs {
            rip: 0xffff_ffff_8100_0000,
            rflags: 0x2 | RFLAGS_CF | RFLAGS_SF,
            ..Default::default()
        }
    }

    #[test]
    fn int3_is_a_trap_and_ud2_a_fault() {
        let c = complete(&[0xcc, 0x90], &regs(), true).unwrap();
        assert_eq!(
            (c.recovered, c.inject, c.regs.rip),
            (Recovered::Int3, Some(3), regs().rip + 1)
        );
        let c = complete(&[0x0f, 0x0b, 0x90], &regs(), true).unwrap();
        assert_eq!(
            (c.recovered, c.inject, c.regs.rip),
            (Recovered::Ud2, Some(6), regs().rip)
        );
        assert_eq!(c.regs.rflags, regs().rflags, "a fault changes nothing");
    }

    #[test]
    fn clac_and_stac_flip_ac_only() {
        let mut set = regs();
        set.rflags |= RFLAGS_AC;
        let c = complete(&[0x0f, 0x01, 0xca], &set, true).unwrap();
        assert_eq!(c.recovered, Recovered::Clac);
        assert_eq!(c.regs.rflags, regs().rflags);
        assert_eq!(c.regs.rip, regs().rip + 3);
        let c = complete(&[0x0f, 0x01, 0xcb], &regs(), true).unwrap();
        assert_eq!(c.recovered, Recovered::Stac);
        assert_eq!(c.regs.rflags, regs().rflags | RFLAGS_AC);
        assert_eq!(c.inject, None);
    }

    #[test]
    fn popcnt_64_bit_from_rdi_into_rax() {
        // f3 48 0f b8 c7: popcnt rax, rdi (as in __bitmap_weight).
        let mut r = regs();
        r.rdi = 0xf000_0000_0000_00ff;
        r.rax = 0x1234;
        let c = complete(&[0xf3, 0x48, 0x0f, 0xb8, 0xc7], &r, true).unwrap();
        assert_eq!(c.recovered, Recovered::Popcnt);
        assert_eq!(c.regs.rax, 12);
        assert_eq!(c.regs.rdi, r.rdi, "the source is kept");
        assert_eq!(c.regs.rip, r.rip + 5);
        assert_eq!(c.regs.rflags, 0x2, "CF and SF cleared, ZF clear");
    }

    #[test]
    fn popcnt_of_zero_sets_zf_and_sizes_are_honoured() {
        let mut r = regs();
        r.rsi = 0xffff_ffff_0000_0000;
        r.rcx = u64::MAX;
        // f3 0f b8 ce: popcnt ecx, esi: the low 32 bits are 0; ecx zero-extended.
        let c = complete(&[0xf3, 0x0f, 0xb8, 0xce], &r, true).unwrap();
        assert_eq!(c.regs.rcx, 0);
        assert_eq!(c.regs.rflags, 0x2 | RFLAGS_ZF);
        assert_eq!(c.regs.rip, r.rip + 4);
        // 66 f3 0f b8 c6: popcnt ax, si: 16 bits, rax's upper bits kept.
        r.rax = 0xaaaa_0000;
        r.rsi = 0x0001_0007;
        let c = complete(&[0x66, 0xf3, 0x0f, 0xb8, 0xc6], &r, true).unwrap();
        assert_eq!(c.regs.rax, 0xaaaa_0003);
        // f3 4d 0f b8 c1: popcnt r8, r9 (REX.W, R and B).
        r.r9 = 0b1011;
        let c = complete(&[0xf3, 0x4d, 0x0f, 0xb8, 0xc1], &r, true).unwrap();
        assert_eq!(c.regs.r8, 3);
    }

    #[test]
    fn anything_else_is_left_to_fail() {
        let r = regs();
        // XRSTOR, a memory-operand POPCNT, POPCNT without F3 (JMPE), nothing.
        for bytes in [
            &[0x48, 0x0f, 0xae, 0x2f][..],
            &[0xf3, 0x48, 0x0f, 0xb8, 0x07],
            &[0x0f, 0xb8, 0xc0],
            &[],
        ] {
            assert_eq!(complete(bytes, &r, true), None, "{bytes:02x?}");
        }
        // Outside 64-bit mode 0x48 is DEC, not REX.
        assert_eq!(complete(&[0xf3, 0x48, 0x0f, 0xb8, 0xc7], &r, false), None);
    }

    #[test]
    fn counts_add_up() {
        let mut a = Counts::default();
        a.count(Recovered::Clac);
        a.count(Recovered::Clac);
        let mut b = Counts::default();
        b.count(Recovered::Popcnt);
        b.add(&a);
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"recovered": {"clac": 2, "popcnt": 1}})
        );
    }
}
