//! The port-I/O bus: which device answers which port, and what happens to a
//! port no device claims (reads return all ones, as on real hardware; writes
//! are dropped; both are counted, so a guest poking at absent hardware shows).

use std::collections::BTreeMap;

use super::i8042::I8042;
use super::marker::BootMarker;
use super::serial::SerialPort;

/// COM1.
pub const SERIAL_BASE: u16 = 0x3f8;
pub const SERIAL_PORTS: u16 = 8;
/// The i8042 controller's command/status port.
pub const I8042_COMMAND: u16 = 0x64;

/// What a port write asks of the VMM beyond the device's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    None,
    /// The guest asked for a reset (i8042 pulse of the reset line).
    Reset,
}

/// The VMM's legacy devices, by port.
pub struct PioBus {
    pub serial: SerialPort,
    pub marker: BootMarker,
    pub i8042: I8042,
    /// Accesses to ports no device claims, by port.
    pub unclaimed: BTreeMap<u16, u64>,
}

impl PioBus {
    pub fn new(serial: SerialPort, marker: BootMarker) -> Self {
        PioBus {
            serial,
            marker,
            i8042: I8042::default(),
            unclaimed: BTreeMap::new(),
        }
    }

    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            SERIAL_BASE..=0x3ff if data.len() == 1 => {
                data[0] = self.serial.read(port - SERIAL_BASE)
            }
            I8042_COMMAND if data.len() == 1 => data[0] = self.i8042.read_status(),
            _ => {
                *self.unclaimed.entry(port).or_default() += 1;
                data.fill(0xff);
            }
        }
    }

    /// `now_ns`: the host time of the exit, for the boot marker.
    pub fn write(&mut self, port: u16, data: &[u8], now_ns: u64) -> Request {
        match (port, data) {
            (SERIAL_BASE..=0x3ff, [value]) => self.serial.write(port - SERIAL_BASE, *value),
            (vmbench_proto::BOOT_MARKER_PORT, [code]) => self.marker.write(*code, now_ns),
            (I8042_COMMAND, [command]) => {
                if self.i8042.write_command(*command) {
                    return Request::Reset;
                }
            }
            _ => *self.unclaimed.entry(port).or_default() += 1,
        }
        Request::None
    }
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
        assert!(bus.unclaimed.is_empty());
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
        assert_eq!(bus.unclaimed.get(&0x1234), Some(&2));
        assert_eq!(bus.unclaimed.get(&0x3f8), Some(&1));
    }
}
