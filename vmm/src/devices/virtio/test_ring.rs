//! The driver's side of one split virtqueue, for device tests: virtio-queue's
//! mock rings placed at explicit addresses, with indices kept here (and
//! wrapping). Not virtio-queue's `MockSplitQueue`: it places the used ring
//! `len` bytes after the avail ring's entries start, not `2 * len`, so for 8
//! entries or more the two overlap; and its chain builder does not wrap.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// Where a ring and its buffers live.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The descriptor table; the avail ring is 4 KiB after it, the used ring 8 KiB.
    pub rings_at: u64,
    pub size: u16,
    /// The device's largest queue size (the queue handed to it says so).
    pub max_size: u16,
    /// The buffers' area, handed out round-robin.
    pub buffers_at: u64,
    pub buffer_bytes: u64,
    /// Each buffer's start is aligned to this.
    pub align: u64,
}

pub struct TestRing<'m> {
    pub mem: &'m GuestMemoryMmap,
    pub desc: DescriptorTable<'m, GuestMemoryMmap>,
    pub avail: AvailRing<'m, GuestMemoryMmap>,
    pub used: UsedRing<'m, GuestMemoryMmap>,
    layout: Layout,
    pub next_desc: u16,
    pub avail_idx: u16,
    used_seen: u16,
    next_buf: u64,
}

impl<'m> TestRing<'m> {
    pub fn new(mem: &'m GuestMemoryMmap, layout: Layout) -> Self {
        let at = |offset: u64| GuestAddress(layout.rings_at + offset);
        TestRing {
            mem,
            desc: DescriptorTable::new(mem, at(0), layout.size),
            avail: AvailRing::new(mem, at(0x1000), layout.size),
            used: UsedRing::new(mem, at(0x2000), layout.size),
            layout,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
            next_buf: layout.buffers_at,
        }
    }

    /// The device's view: a ready queue of this ring's size.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.layout.max_size).unwrap();
        q.set_size(self.layout.size);
        let addr = |offset: u64| {
            let a = self.layout.rings_at + offset;
            (Some(a as u32), Some((a >> 32) as u32))
        };
        let (lo, hi) = addr(0);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = addr(0x1000);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = addr(0x2000);
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        q
    }

    /// A buffer of `len` bytes in this ring's area (reused round-robin).
    pub fn buffer(&mut self, len: u32) -> u64 {
        let end = self.layout.buffers_at + self.layout.buffer_bytes;
        if self.next_buf + u64::from(len) > end {
            self.next_buf = self.layout.buffers_at;
        }
        let addr = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(self.layout.align);
        addr
    }

    /// Makes the descriptors (address, length, flags, next) available as given.
    pub fn post_raw(&mut self, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc;
        for &(addr, len, flags, next) in descs {
            let desc = Descriptor::new(addr, len, flags, next);
            self.desc
                .store(self.next_desc, RawDescriptor::from(desc))
                .unwrap();
            self.next_desc = (self.next_desc + 1) % self.layout.size;
        }
        self.publish(head);
        head
    }

    /// Puts `head` in the next avail slot and bumps the avail index.
    pub fn publish(&mut self, head: u16) {
        let slot = usize::from(self.avail_idx % self.layout.size);
        self.avail.ring().ref_at(slot).unwrap().store(head.to_le());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.avail.idx().store(self.avail_idx.to_le());
    }

    /// Makes a chain of (address, length, flags) available, NEXT links added.
    pub fn post(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let first = self.next_desc;
        let chained: Vec<_> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let next = (first + i as u16 + 1) % self.layout.size;
                let last = i + 1 == descs.len();
                (addr, len, if last { flags } else { flags | F_NEXT }, next)
            })
            .collect();
        self.post_raw(&chained)
    }

    /// (chain head, used length) of each chain the device returned since last asked.
    pub fn used(&mut self) -> Vec<(u16, u32)> {
        let idx = u16::from_le(self.used.idx().load());
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = usize::from(self.used_seen % self.layout.size);
            let elem = self.used.ring().ref_at(slot).unwrap().load();
            out.push((elem.id() as u16, elem.len()));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}
