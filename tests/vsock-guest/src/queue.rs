//! Split virtqueues, driver side, polled (virtio 1.2 §2.7).
//!
//! Primer: a split virtqueue is three areas of guest memory the driver and
//! the device share, for a queue of `size` entries (a power of two):
//!
//! - the descriptor table: `size` × {addr u64, len u32, flags u16, next u16};
//!   flag WRITE means the device writes the buffer, NEXT chains `next`;
//! - the driver area (available ring): {flags u16, idx u16, ring[size] u16}:
//!   the driver puts a buffer's head descriptor id in `ring[idx % size]`,
//!   then increments `idx`;
//! - the device area (used ring): {flags u16, idx u16, ring[size] of
//!   {id u32, len u32}}: the device returns a head id with the number of
//!   bytes it wrote, then increments its `idx`.
//!
//! Both `idx` run freely and wrap at 2^16; since `size` divides 2^16, `idx %
//! size` stays the right slot across the wrap, and `used_idx − next_used`
//! (wrapping) is how many entries are waiting.
//!
//! Ordering: the driver must make a descriptor and its ring slot visible
//! before the `idx` that publishes them (a release fence between), and must
//! read the used `idx` before the entries it covers (an acquire fence after).
//! x86 keeps stores in order and loads in order, so both fences compile to no
//! instruction; they stop the compiler from moving accesses across them.
//! All shared fields are accessed volatile: the device changes them behind
//! the compiler's back.
//!
//! This driver gives every buffer exactly one descriptor with a fixed id
//! (buffer i is descriptor i), so it needs no free list and walks no chains,
//! and a used id names its buffer directly. Everything the device returns is
//! checked: an id out of range or not lent to the device, a length beyond the
//! buffer, or a used `idx` more than `size` ahead is `Error::BadPacket`.

use core::ptr::addr_of_mut;
use core::sync::atomic::{fence, Ordering};

use crate::virtio_mmio::QueueAreas;
use crate::{Error, Result};

/// Entries per queue at most: this guest never needs more buffers in flight.
pub const MAX_QUEUE_SIZE: usize = 16;
const _: () = assert!(MAX_QUEUE_SIZE.is_power_of_two() && MAX_QUEUE_SIZE <= 64);

pub const DESC_F_WRITE: u16 = 2;
/// Asks the device not to interrupt: this driver polls.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Descriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C)]
pub struct AvailRing {
    flags: u16,
    idx: u16,
    ring: [u16; MAX_QUEUE_SIZE],
    used_event: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UsedElem {
    id: u32,
    len: u32,
}

#[repr(C)]
pub struct UsedRing {
    flags: u16,
    idx: u16,
    ring: [UsedElem; MAX_QUEUE_SIZE],
    avail_event: u16,
}

/// One queue's three areas; the alignments the spec asks (16, 2 and 4) follow
/// from the field types and the page alignment of the whole.
#[repr(C, align(4096))]
pub struct QueueMemory {
    descriptors: [Descriptor; MAX_QUEUE_SIZE],
    avail: AvailRing,
    used: UsedRing,
}

impl QueueMemory {
    pub const ZERO: QueueMemory = QueueMemory {
        descriptors: [Descriptor {
            addr: 0,
            len: 0,
            flags: 0,
            next: 0,
        }; MAX_QUEUE_SIZE],
        avail: AvailRing {
            flags: 0,
            idx: 0,
            ring: [0; MAX_QUEUE_SIZE],
            used_event: 0,
        },
        used: UsedRing {
            flags: 0,
            idx: 0,
            ring: [UsedElem { id: 0, len: 0 }; MAX_QUEUE_SIZE],
            avail_event: 0,
        },
    };
}

/// The queue size to ask for, given the device's QueueNumMax: the largest
/// power of two within both limits (split queues must be powers of two).
pub fn choose_size(device_max: u32) -> Option<u16> {
    let limit = device_max.min(MAX_QUEUE_SIZE as u32);
    if limit == 0 {
        return None;
    }
    Some(1 << (31 - limit.leading_zeros()))
}

/// A buffer the device has returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub id: u16,
    /// Bytes the device wrote into it.
    pub len: u32,
}

/// The driver's side of one split virtqueue.
pub struct SplitQueue {
    memory: *mut QueueMemory,
    size: u16,
    /// The next available-ring index to publish.
    next_avail: u16,
    /// The next used-ring index to consume.
    next_used: u16,
    /// Bit i: descriptor i is lent to the device.
    lent: u64,
    /// The length each descriptor was given, to check used lengths against.
    lens: [u32; MAX_QUEUE_SIZE],
}

impl SplitQueue {
    /// # Safety
    /// `memory` must stay valid for as long as the queue and the device use
    /// it, and be used by no one but this queue and its device. `size` must
    /// come from `choose_size`.
    pub unsafe fn new(memory: *mut QueueMemory, size: u16) -> SplitQueue {
        let queue = SplitQueue {
            memory,
            size,
            next_avail: 0,
            next_used: 0,
            lent: 0,
            lens: [0; MAX_QUEUE_SIZE],
        };
        // The device is not live yet: these are the starting values it will
        // read when it is.
        // SAFETY: memory is valid and ours, as the caller guarantees.
        unsafe {
            addr_of_mut!((*memory).avail.flags).write_volatile(AVAIL_F_NO_INTERRUPT);
        }
        // SAFETY: as above.
        unsafe { addr_of_mut!((*memory).avail.idx).write_volatile(0) };
        // SAFETY: as above.
        unsafe { addr_of_mut!((*memory).used.idx).write_volatile(0) };
        queue
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The guest-physical addresses of the three areas (memory is
    /// identity-mapped, so a pointer is its physical address).
    pub fn areas(&self) -> QueueAreas {
        let memory = self.memory;
        QueueAreas {
            // SAFETY: only addresses are taken; nothing is read or written.
            descriptors: unsafe { addr_of_mut!((*memory).descriptors) } as u64,
            // SAFETY: as above.
            driver: unsafe { addr_of_mut!((*memory).avail) } as u64,
            // SAFETY: as above.
            device: unsafe { addr_of_mut!((*memory).used) } as u64,
        }
    }

    pub fn is_lent(&self, id: u16) -> bool {
        self.lent & (1 << id) != 0
    }

    /// The lowest descriptor id not lent to the device.
    pub fn free_id(&self) -> Option<u16> {
        (0..self.size).find(|&id| !self.is_lent(id))
    }

    /// Lends buffer `id` (`len` bytes at guest-physical `addr`) to the device:
    /// for it to write if `device_writes`, else to read.
    pub fn lend(&mut self, id: u16, addr: u64, len: u32, device_writes: bool) -> Result<()> {
        if id >= self.size || self.is_lent(id) {
            return Err(Error::Internal {
                what: "lend_busy_descriptor",
            });
        }
        let memory = self.memory;
        let slot = usize::from(self.next_avail % self.size);
        let index = usize::from(id);
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        // SAFETY: index < size <= MAX_QUEUE_SIZE, and descriptor id is not
        // lent, so the device does not read it now.
        let descriptor = unsafe { addr_of_mut!((*memory).descriptors[index]) };
        // SAFETY: descriptor points into our queue memory; one field each.
        unsafe { addr_of_mut!((*descriptor).addr).write_volatile(addr) };
        // SAFETY: as above.
        unsafe { addr_of_mut!((*descriptor).len).write_volatile(len) };
        // SAFETY: as above.
        unsafe { addr_of_mut!((*descriptor).flags).write_volatile(flags) };
        // SAFETY: as above.
        unsafe { addr_of_mut!((*descriptor).next).write_volatile(0) };
        // SAFETY: slot < size; the device reads it only once idx covers it.
        unsafe { addr_of_mut!((*memory).avail.ring[slot]).write_volatile(id) };
        self.next_avail = self.next_avail.wrapping_add(1);
        // The descriptor and the ring slot before the idx that publishes them.
        fence(Ordering::Release);
        // SAFETY: the driver's own field of the shared memory.
        unsafe { addr_of_mut!((*memory).avail.idx).write_volatile(self.next_avail) };
        self.lent |= 1 << id;
        self.lens[index] = len;
        Ok(())
    }

    /// The next buffer the device has returned, checked, if there is one.
    pub fn take_used(&mut self) -> Result<Option<Used>> {
        let memory = self.memory;
        // SAFETY: the device's field of our queue memory, read volatile.
        let used_idx = unsafe { addr_of_mut!((*memory).used.idx).read_volatile() };
        let waiting = used_idx.wrapping_sub(self.next_used);
        if waiting == 0 {
            return Ok(None);
        }
        if waiting > self.size {
            return Err(Error::BadPacket { what: "used_idx" });
        }
        // The entries only after the idx that covers them.
        fence(Ordering::Acquire);
        let slot = usize::from(self.next_used % self.size);
        // SAFETY: slot < size; the device wrote this entry before used_idx.
        let elem = unsafe { addr_of_mut!((*memory).used.ring[slot]) };
        // SAFETY: as above, one field each.
        let id = unsafe { addr_of_mut!((*elem).id).read_volatile() };
        // SAFETY: as above.
        let len = unsafe { addr_of_mut!((*elem).len).read_volatile() };
        self.next_used = self.next_used.wrapping_add(1);
        let id = match u16::try_from(id) {
            Ok(id) if id < self.size => id,
            _ => return Err(Error::BadPacket { what: "used_id" }),
        };
        if !self.is_lent(id) {
            return Err(Error::BadPacket {
                what: "used_id_not_lent",
            });
        }
        if len > self.lens[usize::from(id)] {
            return Err(Error::BadPacket { what: "used_len" });
        }
        self.lent &= !(1 << id);
        Ok(Some(Used { id, len }))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::xorshift::XorShift64;

    /// The device's side, for tests: reads the available ring, writes the
    /// used ring, through the same raw pointer the queue uses.
    pub struct FakeDevice {
        memory: *mut QueueMemory,
        size: u16,
        next_avail: u16,
        used_idx: u16,
    }

    impl FakeDevice {
        pub fn new(memory: *mut QueueMemory, size: u16) -> FakeDevice {
            FakeDevice {
                memory,
                size,
                next_avail: 0,
                used_idx: 0,
            }
        }

        /// The next buffer the driver made available: (id, addr, len, flags).
        pub fn pop_avail(&mut self) -> Option<(u16, u64, u32, u16)> {
            let memory = self.memory;
            // SAFETY: test memory, alive for the test.
            let avail_idx = unsafe { addr_of_mut!((*memory).avail.idx).read_volatile() };
            if avail_idx == self.next_avail {
                return None;
            }
            let slot = usize::from(self.next_avail % self.size);
            self.next_avail = self.next_avail.wrapping_add(1);
            // SAFETY: as above.
            let id = unsafe { addr_of_mut!((*memory).avail.ring[slot]).read_volatile() };
            // SAFETY: as above; tests only make ids in range available.
            let d = unsafe { addr_of_mut!((*memory).descriptors[usize::from(id)]).read() };
            Some((id, d.addr, d.len, d.flags))
        }

        /// Returns buffer `id` with `len` bytes written.
        pub fn push_used(&mut self, id: u32, len: u32) {
            let memory = self.memory;
            let slot = usize::from(self.used_idx % self.size);
            // SAFETY: test memory, alive for the test.
            unsafe { addr_of_mut!((*memory).used.ring[slot]).write(UsedElem { id, len }) };
            self.used_idx = self.used_idx.wrapping_add(1);
            // SAFETY: as above.
            unsafe { addr_of_mut!((*memory).used.idx).write_volatile(self.used_idx) };
        }

        /// Sets the used idx to anything, as a broken device might.
        pub fn set_used_idx(&mut self, idx: u16) {
            self.used_idx = idx;
            // SAFETY: test memory, alive for the test.
            unsafe { addr_of_mut!((*self.memory).used.idx).write_volatile(idx) };
        }
    }

    fn queue(size: u16) -> (Box<QueueMemory>, SplitQueue, FakeDevice) {
        let mut memory = Box::new(QueueMemory::ZERO);
        let pointer: *mut QueueMemory = &mut *memory;
        // SAFETY: the box outlives the queue in every test (returned together,
        // dropped after).
        let queue = unsafe { SplitQueue::new(pointer, size) };
        (memory, queue, FakeDevice::new(pointer, size))
    }

    #[test]
    fn sizes_are_powers_of_two_within_both_limits() {
        assert_eq!(choose_size(0), None);
        assert_eq!(choose_size(1), Some(1));
        assert_eq!(choose_size(3), Some(2));
        assert_eq!(choose_size(8), Some(8));
        assert_eq!(choose_size(12), Some(8));
        assert_eq!(choose_size(256), Some(MAX_QUEUE_SIZE as u16));
        assert_eq!(choose_size(u32::MAX), Some(MAX_QUEUE_SIZE as u16));
    }

    #[test]
    fn the_layout_is_the_specs() {
        assert_eq!(core::mem::size_of::<Descriptor>(), 16);
        assert_eq!(core::mem::size_of::<UsedElem>(), 8);
        let (_memory, queue, _device) = queue(8);
        let areas = queue.areas();
        assert_eq!(areas.descriptors % 4096, 0);
        assert_eq!(areas.driver - areas.descriptors, 16 * MAX_QUEUE_SIZE as u64);
        assert_eq!(areas.device % 4, 0);
        assert!(areas.device >= areas.driver + 4 + 2 * MAX_QUEUE_SIZE as u64 + 2);
    }

    #[test]
    fn lend_and_take_back_with_lengths_and_flags() {
        let (_memory, mut queue, mut device) = queue(4);
        queue.lend(0, 0x1000, 100, true).unwrap();
        queue.lend(2, 0x2000, 50, false).unwrap();
        assert_eq!(device.pop_avail(), Some((0, 0x1000, 100, DESC_F_WRITE)));
        assert_eq!(device.pop_avail(), Some((2, 0x2000, 50, 0)));
        assert_eq!(device.pop_avail(), None);
        assert_eq!(queue.free_id(), Some(1));
        assert_eq!(queue.take_used(), Ok(None));
        // Out of order, as the spec allows.
        device.push_used(2, 0);
        device.push_used(0, 100);
        assert_eq!(queue.take_used(), Ok(Some(Used { id: 2, len: 0 })));
        assert_eq!(queue.take_used(), Ok(Some(Used { id: 0, len: 100 })));
        assert_eq!(queue.take_used(), Ok(None));
        assert_eq!(queue.free_id(), Some(0));
    }

    #[test]
    fn a_busy_descriptor_cannot_be_lent_twice() {
        let (_memory, mut queue, _device) = queue(2);
        queue.lend(1, 0x1000, 10, true).unwrap();
        assert!(queue.lend(1, 0x1000, 10, true).is_err());
        assert!(queue.lend(2, 0x1000, 10, true).is_err());
        queue.lend(0, 0x1000, 10, true).unwrap();
        assert_eq!(queue.free_id(), None);
    }

    #[test]
    fn indices_wrap_at_65536() {
        let (_memory, mut queue, mut device) = queue(4);
        for round in 0..70_000u32 {
            let id = (round % 4) as u16;
            queue.lend(id, 0x1000 + u64::from(id), 64, true).unwrap();
            let (got, ..) = device.pop_avail().unwrap();
            assert_eq!(got, id);
            device.push_used(u32::from(id), round % 65);
            assert_eq!(
                queue.take_used(),
                Ok(Some(Used {
                    id,
                    len: round % 65
                }))
            );
        }
        assert_eq!(queue.take_used(), Ok(None));
    }

    #[test]
    fn a_used_id_out_of_range_is_a_bad_packet() {
        let (_memory, mut queue, mut device) = queue(4);
        queue.lend(0, 0x1000, 64, true).unwrap();
        device.push_used(4, 0);
        assert_eq!(queue.take_used(), Err(Error::BadPacket { what: "used_id" }));
        device.push_used(0x1_0000, 0);
        assert_eq!(queue.take_used(), Err(Error::BadPacket { what: "used_id" }));
    }

    #[test]
    fn a_used_id_not_lent_is_a_bad_packet() {
        let (_memory, mut queue, mut device) = queue(4);
        queue.lend(0, 0x1000, 64, true).unwrap();
        device.push_used(0, 1);
        assert!(queue.take_used().unwrap().is_some());
        device.push_used(0, 1);
        assert_eq!(
            queue.take_used(),
            Err(Error::BadPacket {
                what: "used_id_not_lent"
            })
        );
        device.push_used(3, 1);
        assert_eq!(
            queue.take_used(),
            Err(Error::BadPacket {
                what: "used_id_not_lent"
            })
        );
    }

    #[test]
    fn a_used_len_beyond_the_buffer_is_a_bad_packet() {
        let (_memory, mut queue, mut device) = queue(4);
        queue.lend(1, 0x1000, 64, true).unwrap();
        device.push_used(1, 65);
        assert_eq!(
            queue.take_used(),
            Err(Error::BadPacket { what: "used_len" })
        );
    }

    #[test]
    fn a_used_idx_running_ahead_is_a_bad_packet() {
        let (_memory, mut queue, mut device) = queue(4);
        device.set_used_idx(5);
        assert_eq!(
            queue.take_used(),
            Err(Error::BadPacket { what: "used_idx" })
        );
        device.set_used_idx(0xffff);
        assert_eq!(
            queue.take_used(),
            Err(Error::BadPacket { what: "used_idx" })
        );
    }

    #[test]
    fn random_device_behaviour_never_panics() {
        // A small property test: whatever a device writes in the used ring,
        // take_used returns Ok or BadPacket and never hands out an id twice.
        let mut rng = XorShift64::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let (_memory, mut queue, mut device) = queue(8);
            for id in 0..8 {
                queue.lend(id, 0x1000, 100, true).unwrap();
            }
            let mut returned = 0u64;
            for _ in 0..12 {
                let r = rng.next_u64();
                match r % 4 {
                    0 => device.set_used_idx((r >> 8) as u16),
                    _ => device.push_used((r >> 8) as u32 % 10, (r >> 40) as u32 % 120),
                }
                match queue.take_used() {
                    Ok(Some(used)) => {
                        assert!(used.id < 8 && used.len <= 100);
                        assert_eq!(returned & (1 << used.id), 0, "id returned twice");
                        returned |= 1 << used.id;
                    }
                    Ok(None) => {}
                    Err(Error::BadPacket { .. }) => break,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }
    }
}
