//! What CPUID says, decoded: the vendor (and so which hypercall
//! instruction exists), the features the suite needs, and the TSC's rate
//! where a leaf states it. The instruction itself is the binary's; here
//! are the pure decodings of its four registers.

/// One CPUID leaf's registers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub const LEAF_VENDOR: u32 = 0;
pub const LEAF_FEATURES: u32 = 1;
pub const LEAF_TSC_CRYSTAL: u32 = 0x15;
pub const LEAF_FREQUENCY: u32 = 0x16;
pub const LEAF_HYPERVISOR: u32 = 0x4000_0000;
/// The VMware/KVM timing leaf: EAX is the guest's TSC rate in kHz.
pub const LEAF_HYPERVISOR_TIMING: u32 = 0x4000_0010;

/// Leaf 0's vendor (EBX, EDX, ECX) or leaf 0x40000000's signature (EBX,
/// ECX, EDX), trailing NULs dropped.
pub fn signature(bytes: [u32; 3]) -> ([u8; 12], usize) {
    let mut text = [0; 12];
    for (i, word) in bytes.iter().enumerate() {
        text[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    let len = text.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (text, len)
}

pub fn vendor(leaf0: Leaf) -> ([u8; 12], usize) {
    signature([leaf0.ebx, leaf0.edx, leaf0.ecx])
}

pub fn hypervisor_signature(leaf: Leaf) -> ([u8; 12], usize) {
    signature([leaf.ebx, leaf.ecx, leaf.edx])
}

/// The instruction that calls the hypervisor on this vendor's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypercall {
    /// Intel's (and every vendor's that is not AMD's or Hygon's).
    Vmcall,
    /// AMD's and Hygon's.
    Vmmcall,
}

impl Hypercall {
    pub fn for_vendor(vendor: &[u8]) -> Hypercall {
        match vendor {
            b"AuthenticAMD" | b"HygonGenuine" => Hypercall::Vmmcall,
            _ => Hypercall::Vmcall,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hypercall::Vmcall => "VMCALL",
            Hypercall::Vmmcall => "VMMCALL",
        }
    }
}

/// Leaf 1's bits the suite looks at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// EDX 9: an on-chip local APIC.
    pub apic: bool,
    /// ECX 21.
    pub x2apic: bool,
    /// ECX 24: the LAPIC timer's TSC-deadline mode.
    pub tsc_deadline: bool,
    /// ECX 31: running under a hypervisor (leaves 0x40000000 on exist).
    pub hypervisor: bool,
}

impl Features {
    pub fn from_leaf1(leaf1: Leaf) -> Features {
        Features {
            apic: leaf1.edx & 1 << 9 != 0,
            x2apic: leaf1.ecx & 1 << 21 != 0,
            tsc_deadline: leaf1.ecx & 1 << 24 != 0,
            hypervisor: leaf1.ecx & 1 << 31 != 0,
        }
    }
}

/// The TSC's rate in kHz from the first leaf that states it: the
/// hypervisor's timing leaf, then leaf 0x15 (crystal × ratio), then leaf
/// 0x16 (the base frequency). `None` when none does (QEMU's TCG, most
/// KVM guests): the binary then times the TSC against the PIT.
pub fn tsc_khz(
    timing: Option<Leaf>,
    crystal: Option<Leaf>,
    frequency: Option<Leaf>,
) -> Option<u64> {
    if let Some(khz) = timing.map(|l| u64::from(l.eax)).filter(|&k| k > 0) {
        return Some(khz);
    }
    if let Some(l) = crystal.filter(|l| l.eax != 0 && l.ebx != 0 && l.ecx != 0) {
        return Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax) / 1000);
    }
    frequency
        .map(|l| u64::from(l.eax & 0xffff) * 1000)
        .filter(|&k| k > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &[u8; 12]) -> [u32; 3] {
        core::array::from_fn(|i| u32::from_le_bytes(text[i * 4..i * 4 + 4].try_into().unwrap()))
    }

    #[test]
    fn vendors_and_their_hypercalls() {
        let [ebx, edx, ecx] = words(b"GenuineIntel");
        let (text, len) = vendor(Leaf {
            eax: 0x16,
            ebx,
            ecx,
            edx,
        });
        assert_eq!(&text[..len], b"GenuineIntel");
        assert_eq!(Hypercall::for_vendor(&text[..len]), Hypercall::Vmcall);
        assert_eq!(Hypercall::for_vendor(b"AuthenticAMD"), Hypercall::Vmmcall);
        assert_eq!(Hypercall::for_vendor(b"HygonGenuine"), Hypercall::Vmmcall);
        assert_eq!(Hypercall::Vmmcall.name(), "VMMCALL");
    }

    #[test]
    fn hypervisor_signatures_drop_trailing_nuls() {
        let [ebx, ecx, edx] = words(b"KVMKVMKVM\0\0\0");
        let (text, len) = hypervisor_signature(Leaf {
            eax: 0x4000_0001,
            ebx,
            ecx,
            edx,
        });
        assert_eq!(&text[..len], b"KVMKVMKVM");
        let (_, len) = hypervisor_signature(Leaf::default());
        assert_eq!(len, 0);
    }

    #[test]
    fn feature_bits() {
        let f = Features::from_leaf1(Leaf {
            ecx: 1 << 21 | 1 << 24 | 1 << 31,
            edx: 1 << 9,
            ..Leaf::default()
        });
        assert_eq!(
            f,
            Features {
                apic: true,
                x2apic: true,
                tsc_deadline: true,
                hypervisor: true
            }
        );
        assert_eq!(Features::from_leaf1(Leaf::default()), Features::default());
    }

    #[test]
    fn tsc_rate_from_the_first_leaf_that_states_it() {
        let timing = Leaf {
            eax: 2_593_906,
            ..Leaf::default()
        };
        // 25 MHz crystal × 208/2 = 2.6 GHz.
        let crystal = Leaf {
            eax: 2,
            ebx: 208,
            ecx: 25_000_000,
            edx: 0,
        };
        let frequency = Leaf {
            eax: 2100,
            ..Leaf::default()
        };
        assert_eq!(
            tsc_khz(Some(timing), Some(crystal), Some(frequency)),
            Some(2_593_906)
        );
        assert_eq!(
            tsc_khz(None, Some(crystal), Some(frequency)),
            Some(2_600_000)
        );
        let no_crystal = Leaf { ecx: 0, ..crystal };
        assert_eq!(
            tsc_khz(None, Some(no_crystal), Some(frequency)),
            Some(2_100_000)
        );
        assert_eq!(
            tsc_khz(Some(Leaf::default()), None, Some(Leaf::default())),
            None
        );
        assert_eq!(tsc_khz(None, None, None), None);
    }
}
