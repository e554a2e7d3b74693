//! The port-I/O and MMIO buses: which device answers which port or address,
//! and what happens to one no device claims (reads return all ones, as on
//! real hardware; writes are dropped; both are counted, so a guest poking at
//! absent hardware shows). The counts by port and address are bounded
//! ([`crate::bounded`]): the first [`MAX_UNCLAIMED_PORTS`] ports and
//! [`MAX_UNCLAIMED_MMIO_ADDRS`] addresses are counted apart, the rest together.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::bounded::entry_or_other;

use super::virtio::mmio::MmioTransport;
use crate::layout;

use super::bench_port;
use super::i8042::I8042;
use super::marker::{BootMarker, Byte, WindowStep};
use super::serial::SerialPort;

use layout::{BOOT_MARKER_PORT, I8042_COMMAND, SERIAL_BASE, SERIAL_LAST};

/// Unclaimed ports counted apart (Linux's boot touches one).
pub const MAX_UNCLAIMED_PORTS: usize = 64;
/// Unclaimed MMIO addresses counted apart (Linux's boot touches none).
pub const MAX_UNCLAIMED_MMIO_ADDRS: usize = 512;

/// Accesses no device answers: the first keys apart, the rest together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unclaimed<K> {
    pub by_key: BTreeMap<K, u64>,
    pub other: u64,
}

impl<K: Ord> Unclaimed<K> {
    fn count(&mut self, key: K, limit: usize) {
        *entry_or_other(&mut self.by_key, &mut self.other, limit, key) += 1;
    }
}

/// What a port write asks of the VMM beyond the device's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    None,
    /// The guest asked for a reset (i8042 pulse of the reset line).
    Reset,
    /// A byte of a benchmark window's mark ([`crate::windows`]).
    Window(WindowStep),
}

/// The VMM's legacy devices, by port.
pub struct PioBus {
    pub serial: SerialPort,
    pub marker: BootMarker,
    pub i8042: I8042,
    /// Accesses to ports no device claims.
    pub unclaimed: Unclaimed<u16>,
}

impl PioBus {
    pub fn new(serial: SerialPort, marker: BootMarker) -> Self {
        PioBus {
            serial,
            marker,
            i8042: I8042::default(),
            unclaimed: Unclaimed::default(),
        }
    }

    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            SERIAL_BASE..=SERIAL_LAST if data.len() == 1 => {
                data[0] = self.serial.read(port - SERIAL_BASE)
            }
            I8042_COMMAND if data.len() == 1 => data[0] = self.i8042.read_status(),
            _ if bench_port::claims(port) => bench_port::read(port, data),
            _ => {
                self.unclaimed.count(port, MAX_UNCLAIMED_PORTS);
                data.fill(0xff);
            }
        }
    }

    /// `now_ns`: the host time of the exit, for the boot marker.
    pub fn write(&mut self, port: u16, data: &[u8], now_ns: u64) -> Request {
        match (port, data) {
            (SERIAL_BASE..=SERIAL_LAST, [value]) => {
                self.serial.write(port - SERIAL_BASE, *value, now_ns)
            }
            (BOOT_MARKER_PORT, [code]) => {
                if let Byte::Window(step) = self.marker.write(*code, now_ns) {
                    return Request::Window(step);
                }
            }
            (I8042_COMMAND, [command]) => {
                if self.i8042.write_command(*command) {
                    return Request::Reset;
                }
            }
            // The benchmark port ignores writes, of any width.
            _ if bench_port::claims(port) => {}
            _ => self.unclaimed.count(port, MAX_UNCLAIMED_PORTS),
        }
        Request::None
    }
}

/// One virtio-mmio device: its 4 KiB window and interrupt line.
pub struct MmioSlot {
    pub base: u64,
    pub irq: u32,
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// The virtio-mmio devices, shared by every vCPU thread and the event loop.
#[derive(Default)]
pub struct MmioBus {
    pub slots: Vec<MmioSlot>,
    unclaimed: Mutex<Unclaimed<u64>>,
}

impl MmioBus {
    /// Slot `index`'s base address and interrupt line.
    pub fn slot_of(index: usize) -> (u64, u32) {
        (
            layout::VIRTIO_MMIO_BASE + index as u64 * layout::VIRTIO_MMIO_SLOT_BYTES,
            layout::VIRTIO_FIRST_IRQ + index as u32,
        )
    }

    fn find(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.slots.iter().find_map(|slot| {
            let offset = addr.checked_sub(slot.base)?;
            (offset < layout::VIRTIO_MMIO_SLOT_BYTES).then_some((slot, offset))
        })
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((slot, offset)) => lock(&slot.transport).read(offset, data),
            None => {
                lock(&self.unclaimed).count(addr, MAX_UNCLAIMED_MMIO_ADDRS);
                data.fill(0xff);
            }
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((slot, offset)) => {
                lock(&slot.transport).write(offset, data);
            }
            None => lock(&self.unclaimed).count(addr, MAX_UNCLAIMED_MMIO_ADDRS),
        }
    }

    /// How the kernel learns of the devices (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
    pub fn cmdline(&self) -> String {
        self.slots
            .iter()
            .map(|s| {
                format!(
                    "virtio_mmio.device={}K@{:#x}:{}",
                    layout::VIRTIO_MMIO_SLOT_BYTES >> 10,
                    s.base,
                    s.irq
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Accesses to addresses no device claims.
    pub fn unclaimed(&self) -> Unclaimed<u64> {
        lock(&self.unclaimed).clone()
    }

    /// Every slot's transport, for the device thread.
    pub fn transports(&self) -> Vec<Arc<Mutex<MmioTransport>>> {
        self.slots.iter().map(|s| s.transport.clone()).collect()
    }

    /// Each device's counters, by `<slot base>:<device type>` (vmm.json's `devices`).
    pub fn device_counters(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.slots
            .iter()
            .map(|s| {
                let t = lock(&s.transport);
                let mut counters = t.device().counters();
                counters.extend(
                    t.driver_state()
                        .map(|(name, value)| (name.to_string(), value)),
                );
                (
                    format!("{:#x}:{}", s.base, t.device().device_type()),
                    counters,
                )
            })
            .collect()
    }

    /// Driver accesses the transports ignored, all slots together.
    pub fn bad_accesses(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| lock(&s.transport).bad_accesses)
            .sum()
    }
}

/// A poisoned lock means a thread panicked while holding it; the device state
/// is still the best there is, and the VMM must not panic in turn.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> (PioBus, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let (serial, out) = SerialPort::in_memory();
        (PioBus::new(serial, BootMarker::default()), out)
    }

    #[test]
    fn ports_reach_their_devices() {
        let (mut bus, out) = bus();
        assert_eq!(bus.write(0x3f8, b"K", 1), Request::None);
        assert_eq!(out.lock().unwrap().as_slice(), b"K");
        bus.write(0x80, &[0x60], 42);
        assert_eq!(bus.marker.marks(), &[(0x60, 42)]);
        assert_eq!(bus.write(I8042_COMMAND, &[0xfe], 2), Request::Reset);
        let mut data = [0u8; 4];
        bus.read(layout::BENCH_PORT, &mut data);
        assert_eq!(u32::from_le_bytes(data), bench_port::VALUE);
        assert_eq!(
            bus.write(layout::BENCH_PORT, &[1, 2, 3, 4], 3),
            Request::None
        );
        assert_eq!(
            bus.unclaimed,
            Unclaimed::default(),
            "the bench port is claimed"
        );
    }

    /// A window mark's bytes are said to the caller as they come, however
    /// other devices' accesses fall between them.
    #[test]
    fn window_marks_come_through_byte_by_byte() {
        let (mut bus, out) = bus();
        let mut data = [0u8; 4];
        assert_eq!(
            bus.write(0x80, &[0xb0], 1),
            Request::Window(WindowStep::StartCode)
        );
        bus.write(0x3f8, b"x", 2);
        bus.read(layout::BENCH_PORT, &mut data);
        assert_eq!(
            bus.write(0x80, &[0x34], 3),
            Request::Window(WindowStep::StartLow)
        );
        bus.read(0x1234, &mut data);
        assert_eq!(
            bus.write(0x80, &[0x12], 4),
            Request::Window(WindowStep::Start(0x1234))
        );
        assert_eq!(bus.write(0x80, &[0x60], 5), Request::None);
        assert_eq!(bus.marker.marks(), &[(0x60, 5)]);
        assert_eq!(out.lock().unwrap().as_slice(), b"x");
    }

    #[test]
    fn mmio_addresses_reach_their_slot_and_the_rest_is_counted() {
        use super::super::virtio::mmio::MAGIC_VALUE;
        use super::super::virtio::test_device::TestDevice;
        let transport = |_| {
            Arc::new(Mutex::new(MmioTransport::new(
                Box::new(TestDevice::idle()),
                Arc::default(),
            )))
        };
        let slots = (0..2)
            .map(|i| {
                let (base, irq) = MmioBus::slot_of(i);
                MmioSlot {
                    base,
                    irq,
                    transport: transport(i),
                }
            })
            .collect();
        let bus = MmioBus {
            slots,
            ..Default::default()
        };
        assert_eq!(
            bus.cmdline(),
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        let mut data = [0u8; 4];
        bus.read(0xd000_1000, &mut data);
        assert_eq!(u32::from_le_bytes(data), MAGIC_VALUE);
        bus.read(0xd000_2000, &mut data);
        assert_eq!(data, [0xff; 4]);
        bus.write(0xd000_2000, &[1]);
        assert_eq!(bus.unclaimed().by_key.get(&0xd000_2000), Some(&2));
        for i in 0..MAX_UNCLAIMED_MMIO_ADDRS as u64 + 10 {
            bus.read(0xc000_0000 + 4 * i, &mut data);
        }
        let unclaimed = bus.unclaimed();
        assert_eq!(unclaimed.by_key.len(), MAX_UNCLAIMED_MMIO_ADDRS);
        assert_eq!(unclaimed.other, 11, "the last 11 addresses");
        assert_eq!(unclaimed.by_key.get(&0xd000_2000), Some(&2));
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_are_counted() {
        let (mut bus, _) = bus();
        let mut data = [0u8; 2];
        bus.read(0x1234, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        bus.write(0x1234, &[1], 0);
        // A two-byte write to the serial port is not a UART access either.
        bus.write(0x3f8, &[1, 2], 0);
        assert_eq!(bus.unclaimed.by_key.get(&0x1234), Some(&2));
        assert_eq!(bus.unclaimed.by_key.get(&0x3f8), Some(&1));
        for port in 0..MAX_UNCLAIMED_PORTS as u16 {
            bus.write(0x2000 + port, &[0], 0);
        }
        assert_eq!(bus.unclaimed.by_key.len(), MAX_UNCLAIMED_PORTS);
        assert_eq!(bus.unclaimed.other, 2, "the last two ports");
        bus.write(0x1234, &[1], 0);
        assert_eq!(bus.unclaimed.by_key.get(&0x1234), Some(&3), "still its own");
    }
}
