//! COM1: vm-superio's 16550A state machine, its output going to the VM's
//! serial.log and its interrupt to an eventfd (an irqfd for IRQ 4 once the
//! VM has an irqchip).

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Raises the serial interrupt by signalling an eventfd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

pub struct SerialPort {
    uart: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
    /// Writes the UART refused (its output failed or the interrupt could not be raised).
    pub errors: u64,
}

impl SerialPort {
    pub fn new(interrupt: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialPort {
            uart: Serial::new(EventFdTrigger(interrupt), out),
            errors: 0,
        }
    }

    /// A port whose output is kept in memory (for tests).
    pub fn in_memory() -> (Self, Arc<Mutex<Vec<u8>>>) {
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let event = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        (SerialPort::new(event, Box::new(Shared(out.clone()))), out)
    }

    pub fn read(&mut self, offset: u16) -> u8 {
        self.uart.read(offset as u8)
    }

    pub fn write(&mut self, offset: u16, value: u8) {
        if self.uart.write(offset as u8, value).is_err() {
            self.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LSR: u16 = 5;
    const LSR_THR_EMPTY: u8 = 0x20;

    #[test]
    fn transmitted_bytes_reach_the_log() {
        let (mut port, out) = SerialPort::in_memory();
        assert_ne!(port.read(LSR) & LSR_THR_EMPTY, 0, "ready to transmit");
        for b in b"Linux version" {
            port.write(0, *b);
        }
        assert_eq!(out.lock().unwrap().as_slice(), b"Linux version");
        assert_eq!(port.errors, 0);
    }
}
