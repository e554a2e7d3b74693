//! The Intel MultiProcessor Specification (1.4) table: how a guest without
//! ACPI learns its CPUs, its I/O APIC and how ISA interrupts are wired.
//!
//! # Layout
//! At [`layout::EBDA_ADDR`]: the 16-byte floating pointer ("_MP_"), then the
//! configuration table ("PCMP" header of 44 bytes) and its entries: one
//! processor entry (20 bytes) per vCPU, then 8-byte entries for the ISA bus,
//! the I/O APIC, one I/O interrupt per IRQ line, and the two local
//! interrupts (ExtINT on LINT0, NMI on LINT1). Each structure's bytes sum to
//! zero (its checksum byte makes it so).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::WriteError;
use crate::layout;

pub const LAPIC_ADDR: u32 = 0xfee0_0000;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// IRQ lines routed through the I/O APIC.
pub const IRQ_LINES: u8 = 24;
const SPEC_REV: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;

/// Most vCPUs the table describes: it must fit below 1 MiB after the EBDA.
pub const MAX_CPUS: u8 = 254;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("The MP table describes 1 to {MAX_CPUS} vCPUs, not {0}")]
    CpuCount(u32),
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The table's bytes (floating pointer first) for `cpus` vCPUs placed at `addr`.
pub fn build(cpus: u32, addr: u64) -> Result<Vec<u8>, Error> {
    let cpus = u8::try_from(cpus)
        .ok()
        .filter(|c| (1..=MAX_CPUS).contains(c))
        .ok_or(Error::CpuCount(cpus))?;
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[0, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for irq in 0..IRQ_LINES {
        // Type 3: INT, conforming polarity and trigger, from ISA bus 0 IRQ n to pin n.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // Type 4: ExtINT to LINT0 and NMI to LINT1 of every local APIC (0xff).
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    let entry_count = u16::from(cpus) + 1 + 1 + u16::from(IRQ_LINES) + 2;

    let config_addr = addr + 16;
    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    config.extend_from_slice(&[SPEC_REV, 0]); // checksum below
    config.extend_from_slice(b"VMBENCH ");
    config.extend_from_slice(b"MICROVM     ");
    config.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    config.extend_from_slice(&0u16.to_le_bytes());
    config.extend_from_slice(&entry_count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0, 0, 0, 0]); // no extended table
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut table = Vec::with_capacity(16 + config.len());
    table.extend_from_slice(b"_MP_");
    table.extend_from_slice(&(config_addr as u32).to_le_bytes());
    table.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, checksum below
    table[10] = checksum(&table);
    table.extend_from_slice(&config);
    Ok(table)
}

/// Writes the table at [`layout::EBDA_ADDR`].
pub fn write<M: GuestMemory>(mem: &M, cpus: u32) -> Result<(), Error> {
    let addr = layout::EBDA_ADDR;
    let table = build(cpus, addr)?;
    mem.write_slice(&table, GuestAddress(addr))
        .map_err(|source| WriteError {
            what: "MP table",
            addr,
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn structures_checksum_to_zero_and_point_at_each_other() {
        for cpus in [1, 2, 64, 254] {
            let t = build(cpus, layout::EBDA_ADDR).unwrap();
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer, {cpus} cpus");
            let config_addr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            assert_eq!(config_addr, layout::EBDA_ADDR + 16);
            let config = &t[16..];
            assert_eq!(&config[..4], b"PCMP");
            let length = u16::from_le_bytes([config[4], config[5]]) as usize;
            assert_eq!(length, config.len());
            assert_eq!(sum(config), 0, "configuration table, {cpus} cpus");
            let entries = u16::from_le_bytes([config[34], config[35]]);
            assert_eq!(entries as u32, cpus + 1 + 1 + 24 + 2);
            assert_eq!(length, 44 + 20 * cpus as usize + 8 * (1 + 1 + 24 + 2));
            // It fits between the EBDA and the firmware area at 0xf0000.
            assert!(layout::EBDA_ADDR + t.len() as u64 <= 0xf_0000);
        }
    }

    #[test]
    fn only_the_first_cpu_is_the_bootstrap_processor() {
        let t = build(3, layout::EBDA_ADDR).unwrap();
        let cpu = |i: usize| &t[16 + 44 + 20 * i..16 + 44 + 20 * (i + 1)];
        assert_eq!(
            &cpu(0)[..4],
            &[0, 0, APIC_VERSION, CPU_ENABLED | CPU_BOOTSTRAP]
        );
        assert_eq!(&cpu(2)[..4], &[0, 2, APIC_VERSION, CPU_ENABLED]);
        // The I/O APIC's id follows the CPUs'.
        let ioapic = &t[16 + 44 + 60 + 8..][..8];
        assert_eq!(&ioapic[..4], &[2, 4, IOAPIC_VERSION, 1]);
    }

    #[test]
    fn cpu_counts_outside_the_table_are_refused() {
        assert!(build(0, 0).is_err());
        assert!(build(255, 0).unwrap_err().to_string().contains("not 255"));
    }

    #[test]
    fn table_lands_in_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write(&mem, 2).unwrap();
        let mut magic = [0u8; 4];
        mem.read_slice(&mut magic, GuestAddress(layout::EBDA_ADDR))
            .unwrap();
        assert_eq!(&magic, b"_MP_");
    }
}
