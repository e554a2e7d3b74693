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
//!
//! # What every device shares
//! Here, beside the [`Interrupt`]: taking the next chain from a queue
//! ([`next_chain`], which tells a queue the driver corrupted from an empty
//! one), answering configuration-space reads from a byte image
//! ([`read_config`]), and the named [`Counters`] each device keeps for
//! `vmm.json`.

pub mod block;
pub mod mmio;
#[cfg(test)]
pub mod test_device;
#[cfg(test)]
pub mod test_ring;
pub mod vsock;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT};
use vm_memory::GuestMemoryMmap;
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

/// The driver corrupted a queue (an avail index more than a ring ahead, a
/// head index beyond the ring, a used ring outside memory): the device
/// stops until the driver resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenQueue;

/// The next chain the driver made available, if any.
pub fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, BrokenQueue> {
    match queue.iter(mem) {
        Ok(mut available) => Ok(available.next()),
        Err(_) => Err(BrokenQueue),
    }
}

/// A driver's read of configuration space, answered from `config`: its
/// bytes from `offset`, zeros past its end (at any offset and size).
pub fn read_config(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    if let Some(src) = usize::try_from(offset).ok().and_then(|o| config.get(o..)) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// A device's named event counts for `vmm.json` (requests, packets, bytes,
/// every kind of malformed input), as [`mmio::VirtioDevice::counters`]
/// gives them.
#[derive(Debug, Default, Clone)]
pub struct Counters(BTreeMap<&'static str, u64>);

impl Counters {
    /// Counters present from the start, at 0, whether or not they ever count.
    pub fn with_names(names: impl IntoIterator<Item = &'static str>) -> Self {
        Counters(names.into_iter().map(|n| (n, 0)).collect())
    }

    pub fn bump(&mut self, name: &'static str) {
        self.add(name, 1);
    }

    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.0.entry(name).or_default() += n;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Every counter by name, owned, for the account.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.0.iter().map(|(k, v)| (k.to_string(), *v)).collect()
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

    #[test]
    fn config_reads_are_the_bytes_then_zeros() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xaa; 3];
        read_config(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0]);
        for offset in [4, 5, u64::MAX] {
            let mut data = [0xaa; 2];
            read_config(&config, offset, &mut data);
            assert_eq!(data, [0, 0], "offset {offset}");
        }
    }

    #[test]
    fn named_counters_start_at_zero_and_count() {
        let mut counters = Counters::with_names(["reads", "writes"]);
        counters.bump("reads");
        counters.add("bytes", 512);
        assert_eq!((counters.get("reads"), counters.get("nothing")), (1, 0));
        let map = counters.to_map();
        assert_eq!(map.len(), 3);
        assert_eq!((map["writes"], map["bytes"]), (0, 512));
    }
}
