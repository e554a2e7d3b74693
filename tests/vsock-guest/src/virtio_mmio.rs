//! The virtio-mmio transport, modern register layout (Version 2) only.
//!
//! Primer (virtio 1.2 §4.2.2, §4.2.3): a device is a window of 32-bit
//! registers, little-endian, that the driver reads and writes with 32-bit
//! aligned accesses; its device-specific configuration starts at 0x100.
//!
//! - 0x000 MagicValue "virt", 0x004 Version (2; 1 is the legacy layout, which
//!   this driver does not speak), 0x008 DeviceID (0: an empty slot).
//! - Features are 64 bits read and written 32 at a time through a selector
//!   (DeviceFeaturesSel/DriverFeaturesSel); the driver must accept
//!   VIRTIO_F_VERSION_1 (bit 32) from a modern device.
//! - Status: writing 0 resets the device, and the driver waits until it
//!   reads 0 back; then it sets ACKNOWLEDGE, DRIVER, writes its features, sets
//!   FEATURES_OK and reads it back (a device that cannot work with those
//!   features clears it), sets up its queues, and finally sets DRIVER_OK.
//! - A queue is set up by selecting it (QueueSel), reading QueueNumMax (0: no
//!   such queue), writing QueueNum and the 64-bit guest-physical addresses of
//!   its three areas, then writing 1 to QueueReady. QueueNotify (the queue's
//!   index) tells the device a queue has new buffers.
//! - Configuration fields wider than 32 bits are read in 32-bit halves, and
//!   again while ConfigGeneration changes under the reads.

use core::fmt;

use crate::boot::check_mapped;
use crate::clock::{tsc_ticks, Deadline};
use crate::{Error, Result};

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
pub const MODERN_VERSION: u32 = 2;
pub const DEVICE_ID_VSOCK: u32 = 19;
pub const F_VERSION_1: u64 = 1 << 32;

const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_FAILED: u32 = 0x80;

/// How often a configuration read is retried while the device keeps
/// changing its configuration under it. Each try is two MMIO reads that
/// exit to the VMM, so this is no busy wait.
const CONFIG_READ_TRIES: u32 = 16;

/// What a virtio-mmio window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    NotVirtio {
        magic: u32,
    },
    /// The legacy layout (Version 1) or an unknown one.
    UnsupportedVersion {
        version: u32,
    },
    /// A transport with no device behind it.
    Empty,
    Device {
        id: u32,
    },
}

impl Identity {
    pub fn from_registers(magic: u32, version: u32, device_id: u32) -> Identity {
        if magic != MAGIC {
            Identity::NotVirtio { magic }
        } else if version != MODERN_VERSION {
            Identity::UnsupportedVersion { version }
        } else if device_id == 0 {
            Identity::Empty
        } else {
            Identity::Device { id: device_id }
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::NotVirtio { magic } => write!(f, "not_virtio magic={magic:#x}"),
            Identity::UnsupportedVersion { version } => {
                write!(f, "unsupported_version version={version}")
            }
            Identity::Empty => write!(f, "empty"),
            Identity::Device { id } => write!(f, "device_id={id}"),
        }
    }
}

/// One virtio-mmio register window.
pub struct Transport {
    base: u64,
    size: u64,
}

impl Transport {
    /// # Safety
    /// `base` must be the guest-physical address of a virtio-mmio register
    /// window of `size` bytes (or of nothing: reads of unbacked MMIO return
    /// junk, which `identify` reports), identity-mapped and uncached, and no
    /// other `Transport` may exist for it.
    pub unsafe fn new(base: u64, size: u64) -> Result<Transport> {
        check_mapped(base, size)?;
        if base % 4 != 0 || size < CONFIG {
            return Err(Error::BadMmioWindow { base, size });
        }
        Ok(Transport { base, size })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    fn read(&self, offset: u64) -> u32 {
        let register = (self.base + offset) as *const u32;
        // SAFETY: offset is one of the register offsets above or a config
        // offset checked against the window's size; the window is mapped and
        // ours, as new()'s caller guarantees. Volatile: every access is an
        // MMIO exit the device must see.
        unsafe { register.read_volatile() }
    }

    fn write(&self, offset: u64, value: u32) {
        let register = (self.base + offset) as *mut u32;
        // SAFETY: as read().
        unsafe { register.write_volatile(value) }
    }

    pub fn identify(&self) -> Identity {
        Identity::from_registers(
            self.read(MAGIC_VALUE),
            self.read(VERSION),
            self.read(DEVICE_ID),
        )
    }

    pub fn status(&self) -> u32 {
        self.read(STATUS)
    }

    pub fn add_status(&self, bits: u32) {
        self.write(STATUS, self.status() | bits);
    }

    /// Resets the device and waits (bounded) until it says it is done.
    pub fn reset(&self, wait_ticks: u64) -> Result<()> {
        self.write(STATUS, 0);
        let deadline = Deadline::after(tsc_ticks(), wait_ticks);
        while self.status() != 0 {
            if deadline.passed(tsc_ticks()) {
                return Err(Error::Timeout {
                    waiting: "device_reset",
                });
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    pub fn device_features(&self) -> u64 {
        self.write(DEVICE_FEATURES_SEL, 0);
        let low = self.read(DEVICE_FEATURES);
        self.write(DEVICE_FEATURES_SEL, 1);
        let high = self.read(DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    pub fn set_driver_features(&self, features: u64) {
        self.write(DRIVER_FEATURES_SEL, 0);
        self.write(DRIVER_FEATURES, features as u32);
        self.write(DRIVER_FEATURES_SEL, 1);
        self.write(DRIVER_FEATURES, (features >> 32) as u32);
    }

    /// The largest size queue `index` may have, 0 if it does not exist.
    /// Also checks the queue is not already live, as the spec asks.
    pub fn queue_max(&self, index: u32) -> Result<u32> {
        self.write(QUEUE_SEL, index);
        if self.read(QUEUE_READY) != 0 {
            return Err(Error::QueueUnavailable { index });
        }
        Ok(self.read(QUEUE_NUM_MAX))
    }

    /// Gives queue `index` its size and areas (guest-physical addresses) and
    /// makes it live.
    pub fn enable_queue(&self, index: u32, size: u16, areas: QueueAreas) {
        self.write(QUEUE_SEL, index);
        self.write(QUEUE_NUM, u32::from(size));
        for (low, high, addr) in [
            (QUEUE_DESC_LOW, QUEUE_DESC_HIGH, areas.descriptors),
            (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, areas.driver),
            (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, areas.device),
        ] {
            self.write(low, addr as u32);
            self.write(high, (addr >> 32) as u32);
        }
        self.write(QUEUE_READY, 1);
    }

    pub fn notify(&self, index: u32) {
        self.write(QUEUE_NOTIFY, index);
    }

    /// The 64-bit configuration field at `offset` in the device-specific
    /// configuration space, read as two 32-bit halves under one generation.
    pub fn config_u64(&self, offset: u64) -> Result<u64> {
        let low_offset = CONFIG + offset;
        if low_offset % 4 != 0 || low_offset + 8 > self.size {
            return Err(Error::BadMmioWindow {
                base: self.base,
                size: self.size,
            });
        }
        for _ in 0..CONFIG_READ_TRIES {
            let before = self.read(CONFIG_GENERATION);
            let low = self.read(low_offset);
            let high = self.read(low_offset + 4);
            if self.read(CONFIG_GENERATION) == before {
                return Ok(u64::from(high) << 32 | u64::from(low));
            }
        }
        Err(Error::BadPacket {
            what: "config_generation_unstable",
        })
    }
}

/// Where a queue's three areas are, guest-physical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAreas {
    pub descriptors: u64,
    pub driver: u64,
    pub device: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_registers() {
        assert_eq!(
            Identity::from_registers(MAGIC, 2, 19),
            Identity::Device { id: 19 }
        );
        assert_eq!(Identity::from_registers(MAGIC, 2, 0), Identity::Empty);
        assert_eq!(
            Identity::from_registers(MAGIC, 1, 19),
            Identity::UnsupportedVersion { version: 1 }
        );
        assert_eq!(
            Identity::from_registers(0xffff_ffff, 2, 19),
            Identity::NotVirtio { magic: 0xffff_ffff }
        );
        assert_eq!(Identity::Device { id: 19 }.to_string(), "device_id=19");
        assert_eq!(
            Identity::UnsupportedVersion { version: 1 }.to_string(),
            "unsupported_version version=1"
        );
    }

    #[test]
    fn windows_must_be_mapped_aligned_and_hold_the_config_space() {
        // SAFETY: new() only checks the numbers; nothing is accessed.
        let ok = unsafe { Transport::new(0xd000_0000, 0x1000) };
        assert!(ok.is_ok());
        for (base, size) in [(0xd000_0002, 0x1000), (0xd000_0000, 0xff)] {
            // SAFETY: as above.
            let bad = unsafe { Transport::new(base, size) };
            assert_eq!(bad.err(), Some(Error::BadMmioWindow { base, size }));
        }
        // SAFETY: as above.
        let unmapped = unsafe { Transport::new(0x1_0000_0000, 0x200) };
        assert_eq!(
            unmapped.err(),
            Some(Error::Boot(crate::boot::Error::Unmapped {
                addr: 0x1_0000_0000
            }))
        );
    }
}
