//! A virtio device that does nothing but count how often the device thread
//! ran it, for the tests of what surrounds devices (the MMIO bus, the event
//! loop).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::mmio::VirtioDevice;

pub struct TestDevice {
    event: Option<EventFd>,
    runs: Arc<AtomicU32>,
}

impl TestDevice {
    /// A device without an event descriptor: the device thread never runs it.
    pub fn idle() -> Self {
        TestDevice {
            event: None,
            runs: Arc::default(),
        }
    }

    /// A device the device thread runs whenever `event` is readable, and
    /// the count of those runs.
    pub fn woken_by(event: EventFd) -> (Self, Arc<AtomicU32>) {
        let runs = Arc::new(AtomicU32::new(0));
        let device = TestDevice {
            event: Some(event),
            runs: runs.clone(),
        };
        (device, runs)
    }
}

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        19
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, _: u64, data: &mut [u8]) {
        data.fill(0)
    }
    fn write_config(&mut self, _: u64, _: &[u8]) {}
    fn activate(&mut self, _: Vec<Queue>, _: u64) {}
    fn queue_notify(&mut self, _: u16) {}
    fn reset(&mut self) {}
    fn event_fd(&self) -> Option<RawFd> {
        self.event.as_ref().map(|e| e.as_raw_fd())
    }
    fn process_events(&mut self) {
        if let Some(event) = &self.event {
            // Drained: level-triggered epoll does not wake again.
            let _ = event.read();
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
    }
}
