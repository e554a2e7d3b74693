//! The virtio-mmio transport (virtio 1.2, §4.2, register layout version 2):
//! the registers a driver uses to discover a device, negotiate features, set
//! up its queues and signal it, in front of any [`VirtioDevice`].
//!
//! # Primer
//! The driver reads MagicValue ("virt"), Version (2) and DeviceID, resets the
//! device (Status = 0), sets ACKNOWLEDGE and DRIVER, reads the device's
//! features 32 bits at a time (DeviceFeaturesSel picks the half), writes the
//! ones it accepts (DriverFeaturesSel/DriverFeatures), sets FEATURES_OK and
//! reads it back, then for each queue: QueueSel, QueueNumMax, QueueNum, the
//! three ring addresses, QueueReady = 1. DRIVER_OK makes the device live.
//! From then on a QueueNotify write names a queue with new buffers, and the
//! device interrupts with InterruptStatus bits the driver acknowledges.
//!
//! Nothing the driver writes can panic the VMM: out-of-range queue indices,
//! writes to read-only registers, queue changes after DRIVER_OK, odd access
//! sizes are ignored and counted in [`MmioTransport::bad_accesses`].

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
pub const VERSION: u32 = 2;
pub const VENDOR_ID: u32 = 0x564d_4256; // "VBMV"

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_FAILED: u32 = 0x80;

/// InterruptStatus bit: a used buffer was added to a queue.
pub const INTERRUPT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration space changed.
pub const INTERRUPT_CONFIG: u32 = 2;

/// VIRTIO_F_VERSION_1: every modern device offers it; a driver must accept it.
pub const FEATURE_VERSION_1: u64 = 1 << 32;

/// A virtio device behind the transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// One entry per queue: its largest size.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered; [`FEATURE_VERSION_1`] is added by the transport.
    fn features(&self) -> u64;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// DRIVER_OK: the device takes its configured queues and the features the
    /// driver accepted.
    fn activate(&mut self, queues: Vec<Queue>, features: u64);
    /// A queue has new buffers.
    fn queue_notify(&mut self, queue: u16);
    /// Status 0: back to the state before the driver found it.
    fn reset(&mut self);
    /// One eventfd per queue, in queue order, that the machine registers as
    /// KVM ioeventfds on QueueNotify (datamatch = the queue's index): a
    /// notify then wakes the device's [`VirtioDevice::event_fd`] instead of
    /// exiting to userspace. Empty: notifies come through [`VirtioDevice::queue_notify`].
    fn queue_events(&self) -> &[EventFd] {
        &[]
    }
    /// A descriptor that is readable whenever the device has work (typically
    /// its own epoll over its queue events and backend sockets); the event
    /// loop polls it and then calls [`VirtioDevice::process_events`].
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
    /// Does the work that is ready, without blocking.
    fn process_events(&mut self) {}
    /// The device's counters for vmm.json (malformed descriptors, packets, resets…).
    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// What a register write asks of the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// The device went live.
    Activated,
    /// The driver reset the device.
    Reset,
}

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    /// Shared with the device, which sets bits when it interrupts.
    pub interrupt_status: Arc<AtomicU32>,
    config_generation: u32,
    /// Driver accesses that were ignored (see the module primer).
    pub bad_accesses: u64,
}

/// The device's copy of a configured queue (virtio-queue's `Queue` is not
/// `Clone`); the transport keeps its own to answer the driver's reads.
fn copy_queue(q: &Queue) -> Queue {
    let mut copy = Queue::new(q.max_size()).expect("the original had a valid size");
    let split = |addr: u64| (Some(addr as u32), Some((addr >> 32) as u32));
    copy.set_size(q.size());
    let (low, high) = split(q.desc_table());
    copy.set_desc_table_address(low, high);
    let (low, high) = split(q.avail_ring());
    copy.set_avail_ring_address(low, high);
    let (low, high) = split(q.used_ring());
    copy.set_used_ring_address(low, high);
    copy.set_event_idx(q.event_idx_enabled());
    copy.set_ready(q.ready());
    copy
}

fn u32_of(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.try_into().ok()?))
}

impl MmioTransport {
    /// `interrupt_status`: the word the device's [`super::Interrupt`] sets.
    pub fn new(device: Box<dyn VirtioDevice>, interrupt_status: Arc<AtomicU32>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("queue sizes are powers of two"))
            .collect();
        MmioTransport {
            device,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            interrupt_status,
            config_generation: 0,
            bad_accesses: 0,
        }
    }

    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    fn offered(&self) -> u64 {
        self.device.features() | FEATURE_VERSION_1
    }

    /// Where the driver got to with this device, for the account: the
    /// device status it wrote last (DRIVER_OK is 4), the features the
    /// device offers and those the driver accepted.
    pub fn driver_state(&self) -> [(&'static str, u64); 3] {
        [
            ("driver_status", u64::from(self.status)),
            ("offered_features", self.offered()),
            ("accepted_features", self.driver_features),
        ]
    }

    fn live(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queues cannot change once the device is live.
        if self.live() {
            return None;
        }
        self.queues.get_mut(self.queue_select as usize)
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
            return;
        }
        if data.len() != 4 {
            self.bad_accesses += 1;
            data.fill(0);
            return;
        }
        let value = match offset {
            0x000 => MAGIC_VALUE,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => match self.device_features_select {
                0 => self.offered() as u32,
                1 => (self.offered() >> 32) as u32,
                _ => 0,
            },
            0x034 => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            0x044 => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt_status.load(Ordering::SeqCst),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => {
                self.bad_accesses += 1;
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Action {
        if offset >= 0x100 {
            if self.live() || self.status & STATUS_DRIVER != 0 {
                self.device.write_config(offset - 0x100, data);
            } else {
                self.bad_accesses += 1;
            }
            return Action::None;
        }
        let Some(value) = u32_of(data) else {
            self.bad_accesses += 1;
            return Action::None;
        };
        let mut ok = true;
        match offset {
            0x014 => self.device_features_select = value,
            0x020 => match self.driver_features_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => ok = false,
            },
            0x024 => self.driver_features_select = value,
            0x030 => self.queue_select = value,
            0x038 => match self.selected_queue() {
                Some(q) => q.set_size(value as u16),
                None => ok = false,
            },
            0x044 => match self.selected_queue() {
                Some(q) => q.set_ready(value == 1),
                None => ok = false,
            },
            0x050 => match u16::try_from(value) {
                Ok(queue) if self.live() && usize::from(queue) < self.queues.len() => {
                    self.device.queue_notify(queue)
                }
                _ => ok = false,
            },
            0x064 => {
                self.interrupt_status.fetch_and(!value, Ordering::SeqCst);
            }
            0x070 => return self.write_status(value),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                let (low, high) = if offset & 4 == 0 {
                    (Some(value), None)
                } else {
                    (None, Some(value))
                };
                match self.selected_queue() {
                    Some(q) if offset < 0x090 => q.set_desc_table_address(low, high),
                    Some(q) if offset < 0x0a0 => q.set_avail_ring_address(low, high),
                    Some(q) => q.set_used_ring_address(low, high),
                    None => ok = false,
                }
            }
            _ => ok = false,
        }
        if !ok {
            self.bad_accesses += 1;
        }
        Action::None
    }

    fn write_status(&mut self, value: u32) -> Action {
        if value == 0 {
            self.device.reset();
            for q in &mut self.queues {
                q.reset();
            }
            self.status = 0;
            self.driver_features = 0;
            self.interrupt_status.store(0, Ordering::SeqCst);
            return Action::Reset;
        }
        let mut value = value;
        // FEATURES_OK only sticks if the driver accepted nothing we did not
        // offer and accepted VERSION_1 (a legacy driver cannot drive us).
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let valid = self.driver_features & !self.offered() == 0
                && self.driver_features & FEATURE_VERSION_1 != 0;
            if !valid {
                value &= !STATUS_FEATURES_OK;
            }
        }
        let becomes_live = value & STATUS_DRIVER_OK != 0 && !self.live();
        if becomes_live && value & STATUS_FEATURES_OK == 0 {
            // DRIVER_OK without FEATURES_OK is a driver error.
            self.status = value | STATUS_FAILED;
            self.bad_accesses += 1;
            return Action::None;
        }
        self.status = value;
        if becomes_live {
            let queues = self.queues.iter().map(copy_queue).collect();
            self.device.activate(queues, self.driver_features);
            return Action::Activated;
        }
        Action::None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// (size, ready, descriptor table address) of each queue handed over.
    type QueueView = (u16, bool, u64);

    #[derive(Default)]
    struct Seen {
        activated: Option<(Vec<QueueView>, u64)>,
        notified: Vec<u16>,
        resets: u32,
        config: Vec<u8>,
    }

    struct FakeDevice(Arc<Mutex<Seen>>);

    impl VirtioDevice for FakeDevice {
        fn device_type(&self) -> u32 {
            19 // vsock
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[256, 256, 64]
        }
        fn features(&self) -> u64 {
            0b101
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 0x10);
        }
        fn write_config(&mut self, _offset: u64, data: &[u8]) {
            self.0.lock().unwrap().config.extend_from_slice(data);
        }
        fn activate(&mut self, queues: Vec<Queue>, features: u64) {
            let qs = queues
                .iter()
                .map(|q| (q.size(), q.ready(), q.desc_table()))
                .collect();
            self.0.lock().unwrap().activated = Some((qs, features));
        }
        fn queue_notify(&mut self, queue: u16) {
            self.0.lock().unwrap().notified.push(queue);
        }
        fn reset(&mut self) {
            self.0.lock().unwrap().resets += 1;
        }
    }

    fn transport() -> (MmioTransport, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (
            MmioTransport::new(
                Box::new(FakeDevice(seen.clone())),
                Arc::new(AtomicU32::new(0)),
            ),
            seen,
        )
    }

    fn r(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn w(t: &mut MmioTransport, offset: u64, value: u32) -> Action {
        t.write(offset, &value.to_le_bytes())
    }

    /// The Linux driver's sequence, as in the primer.
    fn bring_up(t: &mut MmioTransport, accept: u64) -> Action {
        w(t, 0x070, 0);
        w(t, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, 0x024, 0);
        w(t, 0x020, accept as u32);
        w(t, 0x024, 1);
        w(t, 0x020, (accept >> 32) as u32);
        w(
            t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        for q in 0..3 {
            w(t, 0x030, q);
            w(t, 0x038, 64);
            w(t, 0x080, 0x1000 * (q + 1));
            w(t, 0x084, 0);
            w(t, 0x090, 0x1000 * (q + 1) + 0x400);
            w(t, 0x0a0, 0x1000 * (q + 1) + 0x800);
            w(t, 0x044, 1);
        }
        w(
            t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        )
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport();
        assert_eq!(r(&mut t, 0x000), MAGIC_VALUE);
        assert_eq!(r(&mut t, 0x004), 2);
        assert_eq!(r(&mut t, 0x008), 19);
        assert_eq!(r(&mut t, 0x010), 0b101);
        w(&mut t, 0x014, 1);
        assert_eq!(r(&mut t, 0x010), 1, "VERSION_1 in the high half");
        w(&mut t, 0x030, 2);
        assert_eq!(r(&mut t, 0x034), 64);
        w(&mut t, 0x030, 9);
        assert_eq!(r(&mut t, 0x034), 0, "no such queue");
    }

    #[test]
    fn linux_bring_up_activates_with_the_configured_queues() {
        let (mut t, seen) = transport();
        assert_eq!(bring_up(&mut t, FEATURE_VERSION_1 | 1), Action::Activated);
        let (queues, features) = seen.lock().unwrap().activated.clone().unwrap();
        assert_eq!(features, FEATURE_VERSION_1 | 1);
        assert_eq!(
            queues,
            vec![(64, true, 0x1000), (64, true, 0x2000), (64, true, 0x3000)]
        );
        assert_eq!(t.bad_accesses, 0);
        w(&mut t, 0x050, 1);
        assert_eq!(seen.lock().unwrap().notified, vec![1]);
    }

    #[test]
    fn features_not_offered_or_without_version_1_are_refused() {
        let (mut t, seen) = transport();
        assert_eq!(
            bring_up(&mut t, FEATURE_VERSION_1 | 0b10),
            Action::None,
            "bit 1 was not offered"
        );
        assert_eq!(r(&mut t, 0x070) & STATUS_FEATURES_OK, 0);
        assert_ne!(r(&mut t, 0x070) & STATUS_FAILED, 0);
        assert!(seen.lock().unwrap().activated.is_none());
        let (mut t, _) = transport();
        assert_eq!(bring_up(&mut t, 1), Action::None, "a legacy driver");
    }

    #[test]
    fn driver_abuse_is_ignored_and_counted() {
        let (mut t, seen) = transport();
        bring_up(&mut t, FEATURE_VERSION_1);
        let before = t.bad_accesses;
        w(&mut t, 0x050, 7); // notify a queue that does not exist
        w(&mut t, 0x030, 0);
        w(&mut t, 0x038, 8); // resize a live queue
        w(&mut t, 0x000, 1); // write a read-only register
        t.write(0x070, &[1, 2]); // a 2-byte register write
        let mut small = [0u8; 2];
        t.read(0x000, &mut small);
        assert_eq!(small, [0, 0]);
        assert_eq!(t.bad_accesses - before, 5);
        assert!(seen.lock().unwrap().notified.is_empty());
        // The live queue kept its size.
        assert_eq!(seen.lock().unwrap().activated.as_ref().unwrap().0[0].0, 64);
    }

    #[test]
    fn interrupts_are_acknowledged_and_reset_clears_everything() {
        let (mut t, seen) = transport();
        bring_up(&mut t, FEATURE_VERSION_1);
        t.interrupt_status
            .fetch_or(INTERRUPT_VRING | INTERRUPT_CONFIG, Ordering::SeqCst);
        w(&mut t, 0x064, INTERRUPT_VRING);
        assert_eq!(r(&mut t, 0x060), INTERRUPT_CONFIG);
        let resets_before = seen.lock().unwrap().resets; // bring-up starts with one
        assert_eq!(w(&mut t, 0x070, 0), Action::Reset);
        assert_eq!((r(&mut t, 0x070), r(&mut t, 0x060)), (0, 0));
        w(&mut t, 0x030, 0);
        assert_eq!(r(&mut t, 0x044), 0, "queues are not ready after a reset");
        assert_eq!(seen.lock().unwrap().resets, resets_before + 1);
    }

    #[test]
    fn config_space_goes_to_the_device() {
        let (mut t, seen) = transport();
        let mut data = [0u8; 8];
        t.read(0x100, &mut data);
        assert_eq!(data, [0x10; 8]);
        w(&mut t, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        t.write(0x104, &[1, 2]);
        assert_eq!(seen.lock().unwrap().config, vec![1, 2]);
    }
}
