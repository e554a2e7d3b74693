//! virtio-blk (virtio 1.2, §5.2): a disk for the guest, backed by a raw or
//! qcow2 image through imago.
//!
//! # Primer
//! Device ID 2, one request queue. A request is a descriptor chain: a
//! device-readable 16-byte header (`type` u32, reserved u32, `sector` u64,
//! little-endian), the data buffers, and a final device-writable status
//! byte (OK 0, IOERR 1, UNSUPP 2). Types: IN (0) reads from `sector` into
//! the data buffers, OUT (1) writes them there, FLUSH (4) makes earlier
//! writes durable, GET_ID (8) fills up to 20 bytes with a serial number;
//! anything else is UNSUPP. Sectors are 512 bytes whatever the block size.
//! The used length of a chain is what the device wrote into it: the data
//! of an IN or GET_ID, plus the status byte.
//!
//! Features offered (VERSION_1 comes from the transport): FLUSH (the guest
//! treats the disk as having a write-back cache, so it flushes; without it
//! we flush after every write), SEG_MAX and SIZE_MAX (Linux sends up to
//! [`SEG_MAX`] segments of up to [`SIZE_MAX_BYTES`] per request, which also
//! bounds what a request may ask of us: [`request::MAX_DATA_BYTES`]),
//! BLK_SIZE (512) and, for a read-only disk, RO (then every OUT is IOERR).
//! Configuration space: `capacity` in sectors (u64, offset 0), `size_max`
//! (8), `seg_max` (12), `blk_size` (20); any other byte reads as 0.
//!
//! # Threading
//! Requests are served synchronously on the VMM's device thread
//! ([`crate::event_loop`]): a QueueNotify wakes it through the queue's
//! ioeventfd, it calls [`VirtioDevice::process_events`], which reads,
//! writes or flushes through imago and answers each chain before taking the
//! next. That keeps one request in flight per disk and holds the
//! transport's lock during the I/O (a vCPU reading this device's registers,
//! or another device on the thread, waits meanwhile). Acceptable here: the
//! guests boot from images in the host's page cache, where a request takes
//! microseconds, and the vCPU is not blocked (the notify does not exit to
//! userspace). A pass serves at most a ring's worth of chains and then
//! re-arms its own eventfd, so a driver that keeps the ring full cannot
//! starve the other devices. A disk-heavy benchmark would want a thread or
//! io_uring per disk.
//!
//! # Untrusted input
//! Each chain is parsed and checked by [`request`] before the disk is
//! touched; the sector range is checked with overflow-safe arithmetic; the
//! image is reached only through [`disk::Disk`]. A bad chain is answered
//! with IOERR, or returned with used length 0 when it has no usable status
//! byte, and counted. A queue the guest corrupts (an avail index more than
//! a ring ahead, a head index beyond the ring, a used ring outside memory)
//! stops the device until the driver resets it. The counters go to `vmm.json`.

pub mod disk;
pub mod request;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::VirtioDevice;
use super::{next_chain, read_config, Counters, Interrupt};
use disk::{Disk, ID_BYTES, SECTOR_BYTES};
use request::{Fault, Kind, Refusal, Request};

pub const DEVICE_ID: u32 = 2;
const QUEUE_SIZE: u16 = 256;

/// Feature bits (virtio 1.2, §5.2.3).
pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;

/// Data descriptors per request: the ring's size less the header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes per data descriptor.
pub const SIZE_MAX_BYTES: u32 = 128 * 1024;
pub const BLK_SIZE_BYTES: u32 = SECTOR_BYTES as u32;

/// Status byte values.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Up to and including `blk_size`.
const CONFIG_BYTES: usize = 24;

/// The counters for `vmm.json` beside one per [`Fault`], every one present
/// from the start.
const COUNTER_NAMES: [&str; 16] = [
    "requests",
    "reads",
    "writes",
    "flushes",
    "write_through_flushes",
    "get_ids",
    "bytes_read",
    "bytes_written",
    "unsupported_requests",
    "out_of_range",
    "writes_to_read_only",
    "io_errors",
    "queue_errors",
    "invalid_queues",
    "config_writes_ignored",
    "interrupt_errors",
];

fn new_counters() -> Counters {
    Counters::with_names(
        COUNTER_NAMES
            .into_iter()
            .chain(Fault::ALL.iter().map(|f| f.counter())),
    )
}

pub struct BlockDevice {
    disk: Disk,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queue_events: Vec<EventFd>,
    /// Set at DRIVER_OK, cleared at reset.
    queue: Option<Queue>,
    /// The guest corrupted the queue: nothing is processed until a reset.
    broken: bool,
    /// The driver did not accept FLUSH: every write is flushed at once.
    write_through: bool,
    config: [u8; CONFIG_BYTES],
    counters: Counters,
}

impl BlockDevice {
    pub fn new(disk: Disk, mem: GuestMemoryMmap, interrupt: Interrupt) -> io::Result<Self> {
        let mut config = [0u8; CONFIG_BYTES];
        config[0..8].copy_from_slice(&disk.capacity_sectors().to_le_bytes());
        config[8..12].copy_from_slice(&SIZE_MAX_BYTES.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&BLK_SIZE_BYTES.to_le_bytes());
        Ok(BlockDevice {
            disk,
            mem,
            interrupt,
            queue_events: vec![EventFd::new(libc::EFD_NONBLOCK)?],
            queue: None,
            broken: false,
            write_through: false,
            config,
            counters: new_counters(),
        })
    }

    /// Answers every chain the driver made available, then interrupts it
    /// if it was given any back (and wants to know).
    fn process_queue(&mut self) {
        if self.broken {
            return;
        }
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        let mem = &self.mem;
        let mut io = Io {
            mem,
            disk: &mut self.disk,
            counters: &mut self.counters,
            write_through: self.write_through,
        };
        let mut used_any = false;
        // A driver that keeps the ring full must not keep the device thread
        // from the other devices: after a ring's worth, come back later.
        for served in 0.. {
            if served == QUEUE_SIZE {
                let more = queue
                    .avail_idx(mem, Ordering::Acquire)
                    .map_or(true, |idx| idx.0 != queue.next_avail());
                if more && self.queue_events[0].write(1).is_err() {
                    io.counters.bump("interrupt_errors");
                }
                break;
            }
            let chain = match next_chain(queue, mem) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            };
            let head = chain.head_index();
            let used_len = serve(chain, &mut io);
            if queue.add_used(mem, head, used_len).is_err() {
                self.broken = true;
                break;
            }
            used_any = true;
        }
        if self.broken {
            self.counters.bump("queue_errors");
        }
        if used_any
            && queue.needs_notification(mem).unwrap_or(true)
            && self.interrupt.signal_used_queue().is_err()
        {
            self.counters.bump("interrupt_errors");
        }
    }
}

/// What serving a request reaches: the guest's memory, the disk, the
/// device's counters, and whether every write is flushed at once (the
/// driver did not accept FLUSH).
struct Io<'a> {
    mem: &'a GuestMemoryMmap,
    disk: &'a mut Disk,
    counters: &'a mut Counters,
    write_through: bool,
}

/// Parses and serves one chain; returns its used length.
fn serve(chain: DescriptorChain<&GuestMemoryMmap>, io: &mut Io) -> u32 {
    io.counters.bump("requests");
    let parsed = request::parse(chain, io.mem, usize::from(QUEUE_SIZE));
    let (status_addr, status, written) = match parsed {
        Ok(req) => {
            let (status, written) = execute(&req, io);
            (req.status, status, written)
        }
        Err(Refusal::Invalid { status, fault }) => {
            io.counters.bump(fault.counter());
            (status, S_IOERR, 0)
        }
        Err(Refusal::Unanswerable(fault)) => {
            io.counters.bump(fault.counter());
            return 0;
        }
    };
    match io.mem.write_obj(status, status_addr) {
        Ok(()) => written + 1,
        // Checked by the parser; a used length of 0 says nothing was written.
        Err(_) => 0,
    }
}

/// Does what a valid request asks; returns its status and the data bytes
/// written into the guest's buffers.
fn execute(req: &Request, io: &mut Io) -> (u8, u32) {
    match req.kind {
        Kind::In | Kind::Out => read_or_write(req, io),
        Kind::Flush => {
            io.counters.bump("flushes");
            match io.disk.flush() {
                Ok(()) => (S_OK, 0),
                Err(_) => io_error(io.counters),
            }
        }
        Kind::GetId => {
            io.counters.bump("get_ids");
            let id = io.disk.id();
            let mut done = 0usize;
            for &(addr, len) in &req.data {
                let n = (len as usize).min(ID_BYTES - done);
                if n == 0 {
                    break;
                }
                if io.mem.write_slice(&id[done..done + n], addr).is_err() {
                    return io_error(io.counters);
                }
                done += n;
            }
            (S_OK, done as u32)
        }
        Kind::Unsupported(_) => {
            io.counters.bump("unsupported_requests");
            (S_UNSUPP, 0)
        }
    }
}

/// The disk failed the request: counted, and answered with IOERR.
fn io_error(counters: &mut Counters) -> (u8, u32) {
    counters.bump("io_errors");
    (S_IOERR, 0)
}

/// An IN or OUT request: its sector range checked against the disk, then
/// the data moved between the disk and the guest's buffers.
fn read_or_write(req: &Request, io: &mut Io) -> (u8, u32) {
    let is_read = req.kind == Kind::In;
    io.counters.bump(if is_read { "reads" } else { "writes" });
    if !is_read && io.disk.read_only() {
        io.counters.bump("writes_to_read_only");
        return (S_IOERR, 0);
    }
    let in_range = req
        .sector
        .checked_mul(SECTOR_BYTES)
        .and_then(|offset| Some((offset, offset.checked_add(req.data_bytes)?)))
        .filter(|&(_, end)| end <= io.disk.capacity_sectors() * SECTOR_BYTES);
    let Some((offset, _)) = in_range else {
        io.counters.bump("out_of_range");
        return (S_IOERR, 0);
    };
    let Some(buffers) = slices(io.mem, &req.data) else {
        io.counters.bump(Fault::DataOutsideMemory.counter());
        return (S_IOERR, 0);
    };
    let done = if is_read {
        io.disk.read(offset, &buffers)
    } else {
        io.disk.write(offset, &buffers).and_then(|()| {
            if io.write_through {
                io.counters.bump("write_through_flushes");
                io.disk.flush()
            } else {
                Ok(())
            }
        })
    };
    match done {
        Err(_) => io_error(io.counters),
        Ok(()) if is_read => {
            io.counters.add("bytes_read", req.data_bytes);
            // At most MAX_DATA_BYTES, well within a u32.
            (S_OK, req.data_bytes as u32)
        }
        Ok(()) => {
            io.counters.add("bytes_written", req.data_bytes);
            (S_OK, 0)
        }
    }
}

/// Host views of the data buffers (a buffer may span memory regions).
fn slices<'m>(
    mem: &'m GuestMemoryMmap,
    data: &[(GuestAddress, u32)],
) -> Option<Vec<VolatileSlice<'m>>> {
    let mut out = Vec::with_capacity(data.len());
    for &(addr, len) in data {
        for slice in mem.get_slices(addr, len as usize) {
            out.push(slice.ok()?);
        }
    }
    Some(out)
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let ro = if self.disk.read_only() { F_RO } else { 0 };
        F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Only `writeback` is writable, and only with CONFIG_WCE, not offered.
        self.counters.bump("config_writes_ignored");
    }

    fn activate(&mut self, mut queues: Vec<Queue>, features: u64) {
        match queues.pop() {
            Some(queue) if queues.is_empty() && queue.is_valid(&self.mem) => {
                self.queue = Some(queue);
                self.broken = false;
                self.write_through = features & F_FLUSH == 0;
                // Requests made available before DRIVER_OK.
                self.process_queue();
            }
            _ => self.counters.bump("invalid_queues"),
        }
    }

    fn queue_notify(&mut self, _queue: u16) {
        self.process_queue();
    }

    fn reset(&mut self) {
        self.queue = None;
        self.broken = false;
        // What the driver wrote before it let go of the device is kept.
        if self.disk.flush().is_err() {
            self.counters.bump("io_errors");
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.queue_events[0].as_raw_fd())
    }

    fn process_events(&mut self) {
        // Drained: the queue is looked at whatever the count.
        let _ = self.queue_events[0].read();
        self.process_queue();
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let mut counters = self.counters.to_map();
        counters.insert("capacity_sectors".into(), self.disk.capacity_sectors());
        counters.insert("read_only".into(), u64::from(self.disk.read_only()));
        counters.insert("chain_images".into(), self.disk.chain().len() as u64);
        counters
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::desc::RawDescriptor;

    use super::disk::tests::{base_byte, create_qcow2, open_stated, sha256, write_raw};
    use super::request::{T_FLUSH, T_GET_ID, T_IN, T_OUT};
    use super::*;
    use crate::devices::virtio::test_ring::{Layout, TestRing, F_NEXT, F_WRITE};

    const MEM_BYTES: u64 = 16 << 20;
    /// The descriptor table (then the avail ring at +4 KiB, the used ring at +8 KiB).
    const RINGS: u64 = 0x1000;
    const BUFFERS: u64 = 0x1_0000;
    const RING_SIZE: u16 = QUEUE_SIZE;
    /// The test disk: 1 MiB.
    const DISK_BYTES: u64 = 1 << 20;
    const DISK_SECTORS: u64 = DISK_BYTES / SECTOR_BYTES;

    /// This queue's ring: 256 entries, buffers from 64 KiB, 64-byte aligned.
    const LAYOUT: Layout = Layout {
        rings_at: RINGS,
        size: RING_SIZE,
        max_size: QUEUE_SIZE,
        buffers_at: BUFFERS,
        buffer_bytes: 8 << 20,
        align: 64,
    };

    impl TestRing<'_> {
        /// A header descriptor for `request_type` at `sector`.
        fn header(&mut self, request_type: u32, sector: u64) -> (u64, u32, u16) {
            let addr = self.buffer(16);
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&request_type.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&h, GuestAddress(addr)).unwrap();
            (addr, 16, 0)
        }

        /// A status descriptor, preset to 0xff (no status).
        fn status(&mut self) -> (u64, u32, u16) {
            let addr = self.buffer(1);
            self.mem.write_obj(0xffu8, GuestAddress(addr)).unwrap();
            (addr, 1, F_WRITE)
        }
    }

    struct Rig {
        /// Leaked so the driver's ring can borrow it beside the device.
        mem: &'static GuestMemoryMmap,
        device: BlockDevice,
        irq: Arc<EventFd>,
        ring: TestRing<'static>,
        _dir: Option<tempfile::TempDir>,
    }

    /// Descriptors as (address, length, flags).
    type Chain = Vec<(u64, u32, u16)>;

    /// What one request got back.
    #[derive(Debug)]
    struct Answer {
        used_len: u32,
        status: u8,
    }

    impl Rig {
        fn with_disk(disk: Disk, dir: Option<tempfile::TempDir>) -> Rig {
            let mem: &'static GuestMemoryMmap = Box::leak(Box::new(
                GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES as usize)]).unwrap(),
            ));
            let (interrupt, irq) = Interrupt::for_tests();
            let mut device = BlockDevice::new(disk, mem.clone(), interrupt).unwrap();
            let ring = TestRing::new(mem, LAYOUT);
            device.activate(vec![ring.queue()], device.features());
            Rig {
                mem,
                device,
                irq,
                ring,
                _dir: dir,
            }
        }

        fn count(&self, name: &str) -> u64 {
            *self.device.counters().get(name).unwrap_or(&u64::MAX)
        }

        /// The status byte at `addr`; 0xff (never a status) outside memory.
        fn status_at(&self, addr: u64) -> u8 {
            self.mem.read_obj(GuestAddress(addr)).unwrap_or(0xff)
        }

        /// Posts `descs` as one chain, notifies and returns what came back.
        fn submit(&mut self, descs: &[(u64, u32, u16)]) -> Answer {
            let head = self.ring.post(descs);
            self.device.queue_notify(0);
            let used = self.ring.used();
            assert_eq!(used.len(), 1, "one chain back: {used:?}");
            assert_eq!(used[0].0, head);
            let status_addr = descs.last().unwrap().0;
            Answer {
                used_len: used[0].1,
                status: self.status_at(status_addr),
            }
        }

        /// Reads `lens` bytes (one data descriptor each) from `sector`.
        fn read(&mut self, sector: u64, lens: &[u32]) -> (Answer, Vec<u8>) {
            let mut descs = vec![self.ring.header(T_IN, sector)];
            let bufs: Vec<(u64, u32)> = lens.iter().map(|&l| (self.ring.buffer(l), l)).collect();
            for &(addr, len) in &bufs {
                self.mem
                    .write_slice(&vec![0xee; len as usize], GuestAddress(addr))
                    .unwrap();
                descs.push((addr, len, F_WRITE));
            }
            descs.push(self.ring.status());
            let answer = self.submit(&descs);
            let mut data = Vec::new();
            for (addr, len) in bufs {
                let mut chunk = vec![0u8; len as usize];
                self.mem.read_slice(&mut chunk, GuestAddress(addr)).unwrap();
                data.extend(chunk);
            }
            (answer, data)
        }

        /// Writes `data` (split into `lens`-byte descriptors) at `sector`.
        fn write(&mut self, sector: u64, data: &[u8], lens: &[u32]) -> Answer {
            assert_eq!(lens.iter().sum::<u32>() as usize, data.len());
            let mut descs = vec![self.ring.header(T_OUT, sector)];
            let mut done = 0;
            for &len in lens {
                let addr = self.ring.buffer(len);
                self.mem
                    .write_slice(&data[done..done + len as usize], GuestAddress(addr))
                    .unwrap();
                done += len as usize;
                descs.push((addr, len, 0));
            }
            descs.push(self.ring.status());
            self.submit(&descs)
        }

        fn simple(&mut self, request_type: u32) -> Answer {
            let descs = [self.ring.header(request_type, 0), self.ring.status()];
            self.submit(&descs)
        }
    }

    fn expected(offset: u64, len: usize) -> Vec<u8> {
        (offset..offset + len as u64).map(base_byte).collect()
    }

    /// A device on a raw 1 MiB disk with known contents.
    /// The rig, the image's path and its directory (kept until the test ends).
    fn raw_rig(read_only: bool) -> (Rig, std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        write_raw(&path, DISK_BYTES);
        let disk = open_stated(&path, read_only).unwrap();
        (Rig::with_disk(disk, None), path, dir)
    }

    fn config_u32(device: &BlockDevice, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        device.read_config(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn features_and_config_space() {
        let (rig, _, _dir) = raw_rig(false);
        let d = &rig.device;
        assert_eq!(d.device_type(), 2);
        assert_eq!(d.queue_max_sizes(), &[256]);
        assert_eq!(d.features(), F_FLUSH | F_SEG_MAX | F_SIZE_MAX | F_BLK_SIZE);
        let mut capacity = [0u8; 8];
        d.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), DISK_SECTORS);
        assert_eq!(config_u32(d, 0), DISK_SECTORS as u32);
        assert_eq!(config_u32(d, 4), 0);
        assert_eq!(config_u32(d, 8), SIZE_MAX_BYTES);
        assert_eq!(config_u32(d, 12), SEG_MAX);
        assert_eq!(config_u32(d, 20), 512);
        // Odd offsets and sizes, past the end, far past it: no panic, zeros beyond.
        let mut one = [0xaa];
        d.read_config(1, &mut one);
        assert_eq!(one, [(DISK_SECTORS >> 8) as u8]);
        assert_eq!(config_u32(d, 22), 0);
        assert_eq!(config_u32(d, 24), 0);
        assert_eq!(config_u32(d, u64::MAX), 0);
        let mut big = [0xaa; 64];
        d.read_config(0, &mut big);
        assert_eq!(big[24..], [0; 40]);

        let (rig, _, _dir) = raw_rig(true);
        assert_ne!(rig.device.features() & F_RO, 0);
    }

    #[test]
    fn reads_return_the_disk_and_writes_reach_it() {
        let (mut rig, path, _dir) = raw_rig(false);
        let (answer, data) = rig.read(3, &[1024]);
        assert_eq!((answer.status, answer.used_len), (S_OK, 1025));
        assert_eq!(data, expected(3 * 512, 1024));
        assert!(rig.irq.read().unwrap() >= 1, "the guest was interrupted");

        let answer = rig.write(10, &[0x42; 1536], &[1536]);
        assert_eq!((answer.status, answer.used_len), (S_OK, 1));
        let (_, data) = rig.read(10, &[1536]);
        assert_eq!(data, vec![0x42; 1536]);
        let answer = rig.simple(T_FLUSH);
        assert_eq!((answer.status, answer.used_len), (S_OK, 1));
        assert_eq!(
            std::fs::read(&path).unwrap()[10 * 512..10 * 512 + 1536],
            [0x42; 1536]
        );
        for (name, n) in [
            ("reads", 2),
            ("writes", 1),
            ("flushes", 1),
            ("bytes_read", 2560),
            ("bytes_written", 1536),
            ("requests", 4),
            ("io_errors", 0),
        ] {
            assert_eq!(rig.count(name), n, "{name}");
        }
    }

    #[test]
    fn a_request_split_over_many_descriptors() {
        let (mut rig, _, _dir) = raw_rig(false);
        // SEG_MAX data descriptors of different sizes, scattered in memory.
        let lens: Vec<u32> = (0..SEG_MAX).map(|i| 512 * (1 + i % 3)).collect();
        let total: u32 = lens.iter().sum();
        let (answer, data) = rig.read(7, &lens);
        assert_eq!((answer.status, answer.used_len), (S_OK, total + 1));
        assert_eq!(data, expected(7 * 512, total as usize));
        let pattern: Vec<u8> = (0..total).map(|i| (i / 512) as u8).collect();
        let answer = rig.write(100, &pattern, &lens);
        assert_eq!(answer.status, S_OK);
        let (_, back) = rig.read(100, &[total]);
        assert_eq!(back, pattern);
    }

    #[test]
    fn get_id_fills_up_to_twenty_bytes() {
        let (mut rig, _, _dir) = raw_rig(true);
        let id = rig.device.disk.id();
        let buf = rig.ring.buffer(32);
        let descs = [
            rig.ring.header(T_GET_ID, 0),
            (buf, 32, F_WRITE),
            rig.ring.status(),
        ];
        let answer = rig.submit(&descs);
        assert_eq!((answer.status, answer.used_len), (S_OK, 21));
        let mut got = [0u8; 20];
        rig.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
        assert_eq!(got, id);
        assert!(got.starts_with(b"vmb-"));
        // A smaller buffer, split in two: what fits.
        let (a, b) = (rig.ring.buffer(5), rig.ring.buffer(3));
        let descs = [
            rig.ring.header(T_GET_ID, 0),
            (a, 5, F_WRITE),
            (b, 3, F_WRITE),
            rig.ring.status(),
        ];
        assert_eq!(rig.submit(&descs).used_len, 9);
        let mut got = [0u8; 3];
        rig.mem.read_slice(&mut got, GuestAddress(b)).unwrap();
        assert_eq!(got, id[5..8]);
    }

    #[test]
    fn a_read_only_disk_refuses_writes() {
        let (mut rig, path, _dir) = raw_rig(true);
        let before = sha256(&path);
        let answer = rig.write(0, &[1; 512], &[512]);
        assert_eq!((answer.status, answer.used_len), (S_IOERR, 1));
        assert_eq!(rig.count("writes_to_read_only"), 1);
        assert_eq!(rig.simple(T_FLUSH).status, S_OK);
        let (answer, data) = rig.read(0, &[512]);
        assert_eq!(answer.status, S_OK);
        assert_eq!(data, expected(0, 512));
        drop(rig);
        assert_eq!(sha256(&path), before);
    }

    #[test]
    fn sectors_beyond_the_end_are_ioerr() {
        let (mut rig, path, _dir) = raw_rig(false);
        let before = sha256(&path);
        let last = DISK_SECTORS - 1;
        assert_eq!(rig.read(last, &[512]).0.status, S_OK, "the last sector");
        let cases = [
            (last, 1024),              // straddles the end
            (DISK_SECTORS, 512),       // just past it
            (u64::MAX / 512 + 1, 512), // sector * 512 overflows
            (u64::MAX, 512),
            (u64::MAX / 512, 512), // offset fits, offset + length does not
        ];
        for (sector, len) in cases {
            let (answer, data) = rig.read(sector, &[len]);
            assert_eq!((answer.status, answer.used_len), (S_IOERR, 1), "{sector}");
            assert!(data.iter().all(|&b| b == 0xee), "nothing written: {sector}");
            let answer = rig.write(sector, &vec![9; len as usize], &[len]);
            assert_eq!(answer.status, S_IOERR, "{sector}");
        }
        assert_eq!(rig.count("out_of_range"), 10);
        drop(rig);
        assert_eq!(sha256(&path), before);
    }

    #[test]
    fn requests_without_data_do_nothing_and_succeed() {
        let (mut rig, _, _dir) = raw_rig(false);
        for request_type in [T_IN, T_OUT, T_GET_ID] {
            let answer = rig.simple(request_type);
            assert_eq!(
                (answer.status, answer.used_len),
                (S_OK, 1),
                "{request_type}"
            );
        }
        // An empty data descriptor is skipped.
        let descs = [
            rig.ring.header(T_IN, 0),
            (BUFFERS, 0, F_WRITE),
            rig.ring.status(),
        ];
        assert_eq!(rig.submit(&descs).status, S_OK);
    }

    #[test]
    fn unsupported_request_types() {
        let (mut rig, _, _dir) = raw_rig(false);
        for request_type in [2, 11, 13, u32::MAX] {
            let answer = rig.simple(request_type);
            assert_eq!((answer.status, answer.used_len), (S_UNSUPP, 1));
        }
        assert_eq!(rig.count("unsupported_requests"), 4);
    }

    #[test]
    fn descriptor_abuse_is_answered_or_returned_and_counted() {
        let (mut rig, path, _dir) = raw_rig(false);
        let before = sha256(&path);
        let end = MEM_BYTES;
        let data = rig.ring.buffer(4096);
        // (descriptors, fault, answered with IOERR?)
        let h = |rig: &mut Rig, t| rig.ring.header(t, 0);
        // A header of type `t`, one data descriptor, a status.
        let with_data = |rig: &mut Rig, t, data: (u64, u32, u16)| {
            vec![rig.ring.header(t, 0), data, rig.ring.status()]
        };
        let cases: Vec<(Chain, Fault, bool)> = vec![
            {
                let (a, _, _) = h(&mut rig, T_IN);
                (
                    vec![(a, 8, 0), (data, 512, F_WRITE), rig.ring.status()],
                    Fault::ShortHeader,
                    true,
                )
            },
            {
                let (a, _, _) = h(&mut rig, T_IN);
                (
                    vec![(a, 16, F_WRITE), (data, 512, F_WRITE), rig.ring.status()],
                    Fault::WritableHeader,
                    true,
                )
            },
            (
                vec![(end - 8, 16, 0), rig.ring.status()],
                Fault::HeaderOutsideMemory,
                true,
            ),
            (
                with_data(&mut rig, T_IN, (data, 512, 0)),
                Fault::WrongDirection,
                true,
            ),
            (
                with_data(&mut rig, T_OUT, (data, 512, F_WRITE)),
                Fault::WrongDirection,
                true,
            ),
            (
                with_data(&mut rig, T_GET_ID, (data, 20, 0)),
                Fault::WrongDirection,
                true,
            ),
            (
                with_data(&mut rig, T_IN, (end, 512, F_WRITE)),
                Fault::DataOutsideMemory,
                true,
            ),
            (
                with_data(&mut rig, T_IN, (end - 256, 512, F_WRITE)),
                Fault::DataOutsideMemory,
                true,
            ),
            (
                with_data(&mut rig, T_OUT, (u64::MAX - 100, 512, 0)),
                Fault::DataOutsideMemory,
                true,
            ),
            (
                with_data(&mut rig, T_IN, (data, 100, F_WRITE)),
                Fault::PartialSector,
                true,
            ),
            {
                // More than SEG_MAX * SIZE_MAX in total (the buffers overlap).
                let mut descs = vec![h(&mut rig, T_IN)];
                descs.extend(std::iter::repeat_n((BUFFERS, 8 << 20, F_WRITE), 5));
                descs.push(rig.ring.status());
                (descs, Fault::TooLong, true)
            },
            (vec![h(&mut rig, T_IN)], Fault::MissingStatus, false),
            (
                vec![h(&mut rig, T_IN), (data, 512, F_WRITE), (data + 512, 1, 0)],
                Fault::ReadOnlyStatus,
                false,
            ),
            (
                vec![
                    h(&mut rig, T_IN),
                    (data, 512, F_WRITE),
                    (data + 512, 0, F_WRITE),
                ],
                Fault::EmptyStatus,
                false,
            ),
            (
                vec![h(&mut rig, T_IN), (data, 512, F_WRITE), (end, 1, F_WRITE)],
                Fault::StatusOutsideMemory,
                false,
            ),
        ];
        for (descs, fault, answered) in cases {
            let status_addr = descs.last().unwrap().0;
            if status_addr < end {
                rig.mem
                    .write_obj(0xffu8, GuestAddress(status_addr))
                    .unwrap();
            }
            let before = rig.count(fault.counter());
            let answer = rig.submit(&descs);
            assert_eq!(rig.count(fault.counter()), before + 1, "{fault:?}");
            if answered {
                assert_eq!((answer.status, answer.used_len), (S_IOERR, 1), "{fault:?}");
            } else {
                assert_eq!(answer.used_len, 0, "{fault:?}");
                if status_addr < end {
                    assert_eq!(rig.status_at(status_addr), 0xff, "untouched: {fault:?}");
                }
            }
        }
        assert_eq!(rig.count("queue_errors"), 0);
        // The device still works, and nothing reached the disk.
        let (answer, got) = rig.read(1, &[512]);
        assert_eq!(answer.status, S_OK);
        assert_eq!(got, expected(512, 512));
        drop(rig);
        assert_eq!(sha256(&path), before);
    }

    #[test]
    fn descriptor_loops_and_bad_links_are_returned_unanswered() {
        let (mut rig, _, _dir) = raw_rig(false);
        let (h, _, _) = rig.ring.header(T_IN, 0);
        let data = rig.ring.buffer(512);
        // A header chained to itself: the iterator stops after the queue size.
        let head = rig.ring.next_desc;
        rig.ring.post_raw(&[(h, 16, F_NEXT, head)]);
        // A data descriptor that loops back to the header.
        let head = rig.ring.next_desc;
        rig.ring.post_raw(&[
            (h, 16, F_NEXT, head + 1),
            (data, 512, F_WRITE | F_NEXT, head),
        ]);
        // A `next` beyond the descriptor table.
        rig.ring.post_raw(&[(h, 16, F_NEXT, RING_SIZE + 40)]);
        rig.device.queue_notify(0);
        let used = rig.ring.used();
        assert_eq!(used.len(), 3);
        assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
        assert_eq!(rig.count("truncated_chains"), 3);
        assert_eq!(rig.read(0, &[512]).0.status, S_OK);
    }

    #[test]
    fn a_corrupt_queue_stops_the_device_until_reset() {
        let (mut rig, _, _dir) = raw_rig(false);
        // The avail index jumps further than the ring holds.
        rig.ring.avail_idx = rig.ring.avail_idx.wrapping_add(RING_SIZE + 3);
        rig.ring.avail.idx().store(rig.ring.avail_idx.to_le());
        rig.device.queue_notify(0);
        rig.device.queue_notify(0);
        assert_eq!(rig.count("queue_errors"), 1);
        assert!(rig.ring.used().is_empty());
        // A reset and a driver starting over bring it back.
        rig.device.reset();
        rig.ring = TestRing::new(rig.mem, LAYOUT);
        rig.device.activate(vec![rig.ring.queue()], F_FLUSH);
        assert_eq!(rig.read(0, &[512]).0.status, S_OK);

        // A head index beyond the ring.
        rig.ring.publish(RING_SIZE + 1);
        rig.device.queue_notify(0);
        assert_eq!(rig.count("queue_errors"), 2);
    }

    #[test]
    fn queues_that_are_not_one_valid_queue_are_refused() {
        let (mut rig, _, _dir) = raw_rig(false);
        let mut outside = rig.ring.queue();
        outside.set_used_ring_address(Some(MEM_BYTES as u32), Some(0));
        rig.device.activate(vec![outside], F_FLUSH);
        rig.device
            .activate(vec![rig.ring.queue(), rig.ring.queue()], F_FLUSH);
        rig.device.activate(vec![], F_FLUSH);
        assert_eq!(rig.count("invalid_queues"), 3);
        rig.device.write_config(0, &[1]);
        assert_eq!(rig.count("config_writes_ignored"), 1);
    }

    #[test]
    fn without_flush_negotiated_every_write_is_flushed() {
        let (mut rig, _, _dir) = raw_rig(false);
        rig.device.reset();
        rig.ring = TestRing::new(rig.mem, LAYOUT);
        rig.device.activate(vec![rig.ring.queue()], F_SEG_MAX);
        assert_eq!(rig.write(0, &[3; 512], &[512]).status, S_OK);
        assert_eq!(rig.count("write_through_flushes"), 1);
    }

    #[test]
    fn a_full_ring_is_served_in_one_pass() {
        let (mut rig, _, _dir) = raw_rig(false);
        let descs = [rig.ring.header(T_FLUSH, 0), rig.ring.status()];
        for _ in 0..RING_SIZE / 2 {
            rig.ring.post(&descs);
        }
        rig.device.queue_notify(0);
        assert_eq!(rig.ring.used().len(), usize::from(RING_SIZE / 2));
        for _ in 0..RING_SIZE {
            rig.ring.post(&descs);
        }
        rig.device.queue_notify(0);
        assert_eq!(rig.ring.used().len(), usize::from(RING_SIZE));
        // Nothing was left: no wake-up for a next pass.
        assert!(rig.device.queue_events()[0].read().is_err());
        assert_eq!(rig.count("queue_errors"), 0);
    }

    #[test]
    fn notifies_through_the_eventfd_are_processed() {
        let (mut rig, _, _dir) = raw_rig(false);
        let descs = [rig.ring.header(T_FLUSH, 0), rig.ring.status()];
        rig.ring.post(&descs);
        rig.device.queue_events()[0].write(1).unwrap();
        rig.device.process_events();
        assert_eq!(rig.ring.used().len(), 1);
        assert!(rig.device.event_fd().is_some());
    }

    /// A device on `overlay`, a qcow2 image over a raw base.
    fn cow_rig(dir: &Path) -> (Rig, std::path::PathBuf) {
        let base = dir.join("base.raw");
        let overlay = dir.join("overlay.qcow2");
        write_raw(&base, DISK_BYTES);
        create_qcow2(&overlay, DISK_BYTES, Some(("base.raw", "raw")));
        (
            Rig::with_disk(open_stated(&overlay, false).unwrap(), None),
            base,
        )
    }

    #[test]
    fn copy_on_write_through_the_device_leaves_the_base_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut rig, base) = cow_rig(dir.path());
        let base_sha = sha256(&base);
        assert_eq!(rig.count("chain_images"), 2);
        // Never written: the base's bytes, across a cluster boundary too.
        let (answer, data) = rig.read(120, &[4096, 4096]);
        assert_eq!(answer.status, S_OK);
        assert_eq!(data, expected(120 * 512, 8192));
        let answer = rig.write(127, &[0x99; 1024], &[512, 512]);
        assert_eq!(answer.status, S_OK);
        let (_, data) = rig.read(126, &[2048]);
        assert_eq!(data[..512], expected(126 * 512, 512));
        assert_eq!(data[512..1536], [0x99; 1024]);
        assert_eq!(data[1536..], expected(129 * 512, 512));
        assert_eq!(rig.simple(T_FLUSH).status, S_OK);
        assert_eq!(sha256(&base), base_sha, "after flush");
        drop(rig);
        assert_eq!(sha256(&base), base_sha, "after drop");
        // The overlay kept the write.
        let mut disk = open_stated(&dir.path().join("overlay.qcow2"), true).unwrap();
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4096)]).unwrap();
        disk.read(127 * 512, &[mem.get_slice(GuestAddress(0), 1024).unwrap()])
            .unwrap();
        let mut back = [0u8; 1024];
        mem.read_slice(&mut back, GuestAddress(0)).unwrap();
        assert_eq!(back, [0x99; 1024]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random descriptor tables and chains: every chain comes back (or
        /// the queue is declared corrupt), the device never panics, and a
        /// used length never exceeds what the chain could hold.
        #[test]
        fn random_chains_never_panic(
            descs in proptest::collection::vec(
                (prop_oneof![0u64..MEM_BYTES, Just(MEM_BYTES - 4), any::<u64>()],
                 prop_oneof![0u32..4096, Just(16), Just(1), any::<u32>()],
                 0u16..4,
                 0u16..300),
                1..24),
            heads in proptest::collection::vec(0u16..270, 1..8),
            request_type in prop_oneof![Just(T_IN), Just(T_OUT), Just(T_FLUSH), Just(T_GET_ID), any::<u32>()],
            sector in prop_oneof![0u64..4096, any::<u64>()],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("disk.raw");
            write_raw(&path, 64 << 10);
            let mut rig = Rig::with_disk(open_stated(&path, false).unwrap(), Some(dir));
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&request_type.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
                // Point some descriptors at a header.
                if i % 3 == 0 && addr < MEM_BYTES - 16 {
                    rig.mem.write_slice(&h, GuestAddress(addr)).unwrap();
                }
                let desc = Descriptor::new(addr, len, flags, next);
                rig.ring.desc.store(i as u16, RawDescriptor::from(desc)).unwrap();
            }
            for &head in &heads {
                rig.ring.publish(head);
            }
            rig.device.queue_notify(0);
            let used = rig.ring.used();
            if rig.count("queue_errors") == 0 {
                prop_assert_eq!(used.len(), heads.len());
            }
            for (_, len) in used {
                prop_assert!(len <= request::MAX_DATA_BYTES as u32 + 1);
            }
        }
    }
}
