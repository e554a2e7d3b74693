//! COM1 output: a 16550 UART at port 0x3f8, written by polling.
//!
//! Each byte waits for the line status register's "transmit holding
//! register empty" bit, up to a TSC deadline (never a count of reads: under
//! an emulating KVM each read is a 6 µs exit), so a VMM without a UART slows
//! the guest down but does not hang it.

use core::fmt;

use crate::clock::{tsc_ticks, Deadline};
use crate::machine::{inb, outb};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// A byte takes 87 µs at 115200 baud; 10^7 ticks is 3 ms or more.
const READY_WAIT_TICKS: u64 = 10_000_000;

pub struct Serial;

impl Serial {
    pub fn write_byte(byte: u8) {
        let deadline = Deadline::after(tsc_ticks(), READY_WAIT_TICKS);
        while inb(LSR) & LSR_THR_EMPTY == 0 && !deadline.passed(tsc_ticks()) {
            core::hint::spin_loop();
        }
        outb(COM1, byte);
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(Serial::write_byte);
        Ok(())
    }
}
