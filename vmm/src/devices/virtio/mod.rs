//! virtio devices and their MMIO transport.
//!
//! # How a device is wired
//! A device implements [`mmio::VirtioDevice`] and is built with the guest
//! memory and an [`Interrupt`]. The machine puts it behind an
//! [`mmio::MmioTransport`] at a slot of the MMIO window, announces it on the
//! kernel command line (`virtio_mmio.device=4K@0x…:<irq>`), registers each of
//! the device's [`mmio::VirtioDevice::queue_events`] as a KVM ioeventfd on the
//! slot's QueueNotify register (so a notify never exits to userspace), and
//! the event loop thread polls the device's [`mmio::VirtioDevice::event_fd`]
//! and calls [`mmio::VirtioDevice::process_events`] when it is readable.

pub mod block;
pub mod mmio;
#[cfg(test)]
pub mod test_device;
#[cfg(test)]
pub mod test_ring;
pub mod vsock;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// How a device interrupts the guest: it sets a bit in the transport's
/// InterruptStatus register and signals an irqfd KVM injects as the slot's
/// interrupt line.
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irq: Arc<EventFd>,
}

impl Interrupt {
    pub fn new(irq: EventFd) -> Self {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            irq: Arc::new(irq),
        }
    }

    /// The InterruptStatus word the transport shares.
    pub fn status(&self) -> Arc<AtomicU32> {
        self.status.clone()
    }

    /// A used buffer was added to a queue.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.signal(mmio::INTERRUPT_VRING)
    }

    /// The configuration space changed.
    pub fn signal_config(&self) -> io::Result<()> {
        self.signal(mmio::INTERRUPT_CONFIG)
    }

    fn signal(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irq.write(1)
    }

    /// An interrupt whose eventfd nobody injects, and that eventfd, for tests.
    pub fn for_tests() -> (Interrupt, Arc<EventFd>) {
        let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
        (
            Interrupt {
                status: Arc::new(AtomicU32::new(0)),
                irq: irq.clone(),
            },
            irq,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalling_sets_the_status_bit_and_the_eventfd() {
        let (interrupt, irq) = Interrupt::for_tests();
        interrupt.signal_used_queue().unwrap();
        interrupt.signal_config().unwrap();
        assert_eq!(
            interrupt.status().load(Ordering::SeqCst),
            mmio::INTERRUPT_VRING | mmio::INTERRUPT_CONFIG
        );
        assert_eq!(irq.read().unwrap(), 2);
    }
}
