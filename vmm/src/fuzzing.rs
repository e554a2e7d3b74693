//! Entry points for the cargo-fuzz targets in `fuzz/` (not the VMM's API:
//! nothing else calls them).
//!
//! Each entry point reads the fuzzer's bytes as a small program that a
//! hostile driver runs against a device, exactly as the VMM wires it but
//! without KVM: guest memory from vm-memory, queues from virtio-queue, the
//! interrupt an eventfd nobody reads. Raw steps (bytes written anywhere in
//! guest memory, descriptors and avail-ring entries with any values) reach
//! whatever the device does with garbage; structured steps (a well-formed
//! block request, vsock packet or RX buffer) get the fuzzer past the parsers
//! into the disk and connection code.
//!
//! # Programs
//! A program is a sequence of steps, each an opcode byte and its operands;
//! operands are read little-endian, and missing bytes read as 0, so every
//! byte string is a program. A guest address is a tag byte and then: `0x00–
//! 0x7f` a u16 (the first 64 KiB, where most of guest memory is), `0x80–0xbf`
//! 64 KiB + a u16 (the hole after it and the small region above), `0xc0–0xff`
//! any u64. Guest memory is three regions: `[0, 32K)`, `[32K, 64K)` (a buffer
//! may span the two) and `[68K, 72K)`, with a hole between.
//!
//! A queue's shape (a byte, then operands): bits 0–3 pick its size, `1 << (n
//! % 9)`; bit 7 instead reads a raw u16 size; bit 6 reads the three ring
//! addresses (descriptor table, avail, used) as guest addresses, otherwise
//! they are the usual layout at the queue's base (table, +4 KiB, +8 KiB).
//!
//! [`block_device`]: a disk byte (`% 4`: raw, raw read-only, qcow2 over a
//! raw base, the same read-only), the queue's shape, a features byte (bit 0:
//! FLUSH accepted), then steps by opcode `% 10`: 0 write guest memory
//! (address, length byte, bytes), 1 store a descriptor (index u16, address,
//! length u32, flags u16, next u16), 2 publish a head (u16), 3 set the avail
//! index (u16), 4 notify, 5 process events, 6 a well-formed request (type
//! byte, sector, data descriptors), 7 reset and activate again (queue count
//! byte, shape, features), 8 read configuration space (offset byte, length
//! byte), 9 write it.
//!
//! [`vsock_device`]: three queue shapes, then steps by opcode `% 14`: 0
//! write guest memory, 1 store a descriptor (queue byte, then as above), 2
//! publish (queue byte, head), 3 set the avail index (queue byte, u16), 4
//! notify a queue, 5 process events, 6 a TX packet, 7 RX buffers, 8 the host
//! listener on port 1234 accepts what is pending, 9 a host stream writes,
//! 10 a host stream closes, 11 a host program connects to the device's
//! socket and sends a line, 12 reset and activate again, 13 a host stream
//! reads what it can.
//!
//! [`mmio_transport`]: a device byte (even: a block device on a raw disk,
//! odd: a vsock device), then steps by opcode `% 4`: 0 read a register
//! (offset, size byte), 1 write one (offset, size byte, value bytes), 2
//! write guest memory, 3 the device processes its events. An offset is a
//! byte `b`: below 0xc0 it is `4 * b` (every register and the start of
//! configuration space), otherwise a u64 follows.
//!
//! Every entry point returns the device's counters (for the transport, its
//! ignored accesses and the driver's state too), so tests can check that a
//! program reaches what it is meant to.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmbench_image::Format;

use crate::devices::virtio::block::disk::{Disk, SECTOR_BYTES};
use crate::devices::virtio::block::request::{T_FLUSH, T_GET_ID, T_IN, T_OUT};
use crate::devices::virtio::block::{BlockDevice, F_FLUSH};
use crate::devices::virtio::mmio::{MmioTransport, VirtioDevice};
use crate::devices::virtio::vsock::{VsockDevice, HOST_CID};
use crate::devices::virtio::Interrupt;

/// Guest memory: two adjacent regions, a hole, a small region.
const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x1_1000, 0x1000)];
/// Where the structured steps put their buffers.
const BUFFERS: (u64, u64) = (0x9000, 0x1_0000);
/// The disk behind the block device: 64 KiB.
const DISK_BYTES: u64 = 64 << 10;
/// The qcow2 overlay's clusters: 16 of them over the disk.
const CLUSTER_BYTES: usize = 4096;
/// The guest CID of the vsock device, and the host port a listener serves.
const GUEST_CID: u64 = 3;
const LISTENED_PORT: u32 = 1234;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The fuzzer's bytes, read front to back; past the end everything is 0.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    /// Up to `max` bytes (fewer if the input ends).
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let (bytes, rest) = self.0.split_at(max.min(self.0.len()));
        self.0 = rest;
        bytes
    }

    /// A guest address (see the module's primer).
    fn addr(&mut self) -> u64 {
        match self.u8() {
            0x00..=0x7f => u64::from(self.u16()),
            0x80..=0xbf => 0x1_0000 + u64::from(self.u16()),
            _ => self.u64(),
        }
    }
}

fn guest_memory() -> GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = REGIONS
        .iter()
        .map(|&(start, len)| (GuestAddress(start), len))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).expect("fixed, non-overlapping regions")
}

/// Guest writes fail outside memory, as a guest's stores would fault: ignored.
fn poke(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    let _ = mem.write_slice(bytes, GuestAddress(addr));
}

/// One split virtqueue as the driver keeps it.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
    avail_idx: u16,
    /// The next descriptor a structured step uses.
    next_desc: u16,
}

impl Ring {
    /// A ring of the shape the input gives (the usual layout at `base`),
    /// its avail index zeroed as a driver setting a queue up does.
    fn from_input(input: &mut Input, mem: &GuestMemoryMmap, base: u64) -> Ring {
        let shape = input.u8();
        let size = if shape & 0x80 != 0 {
            input.u16()
        } else {
            1 << ((shape & 0x0f) % 9)
        };
        let (desc, avail, used) = if shape & 0x40 != 0 {
            (input.addr(), input.addr(), input.addr())
        } else {
            (base, base + 0x1000, base + 0x2000)
        };
        let mut ring = Ring {
            desc,
            avail,
            used,
            size,
            avail_idx: 0,
            next_desc: 0,
        };
        ring.set_avail_idx(mem, 0);
        ring
    }

    /// The device's view of it, as the transport hands it over at DRIVER_OK.
    fn queue(&self, max_size: u16) -> Queue {
        let mut queue = Queue::new(max_size).expect("device queue sizes are powers of two");
        let split = |addr: u64| (Some(addr as u32), Some((addr >> 32) as u32));
        queue.set_size(self.size);
        let (low, high) = split(self.desc);
        queue.set_desc_table_address(low, high);
        let (low, high) = split(self.avail);
        queue.set_avail_ring_address(low, high);
        let (low, high) = split(self.used);
        queue.set_used_ring_address(low, high);
        queue.set_ready(true);
        queue
    }

    fn store_desc(&self, mem: &GuestMemoryMmap, index: u16, desc: (u64, u32, u16, u16)) {
        let (addr, len, flags, next) = desc;
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        poke(mem, self.desc.wrapping_add(16 * u64::from(index)), &raw);
    }

    /// Puts `head` in the next avail slot and bumps the avail index.
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail_idx % self.size.max(1);
        poke(
            mem,
            self.avail.wrapping_add(4 + 2 * u64::from(slot)),
            &head.to_le_bytes(),
        );
        self.set_avail_idx(mem, self.avail_idx.wrapping_add(1));
    }

    fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.avail_idx = idx;
        poke(mem, self.avail.wrapping_add(2), &idx.to_le_bytes());
    }

    /// Makes descriptors (address, length, flags) available as one chain.
    fn post(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) {
        let size = self.size.max(1);
        let head = self.next_desc % size;
        let mut index = head;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let next = (index + 1) % size;
            let flags = if i + 1 < descs.len() {
                flags | F_NEXT
            } else {
                flags
            };
            self.store_desc(mem, index, (addr, len, flags, next));
            index = next;
        }
        self.next_desc = index;
        self.publish(mem, head);
    }

    /// Step 1: a descriptor with any values.
    fn raw_desc(&self, mem: &GuestMemoryMmap, input: &mut Input) {
        let index = input.u16();
        let desc = (input.addr(), input.u32(), input.u16(), input.u16());
        self.store_desc(mem, index, desc);
    }
}

/// Buffers for the structured steps, handed out round-robin.
struct Buffers {
    next: u64,
}

impl Buffers {
    fn new() -> Self {
        Buffers { next: BUFFERS.0 }
    }

    fn take(&mut self, len: u32) -> u64 {
        let len = u64::from(len).next_multiple_of(16);
        if self.next + len > BUFFERS.1 {
            self.next = BUFFERS.0;
        }
        let addr = self.next;
        self.next += len;
        addr
    }
}

/// Step 0: bytes written anywhere.
fn write_memory(mem: &GuestMemoryMmap, input: &mut Input) {
    let addr = input.addr();
    let len = usize::from(input.u8());
    poke(mem, addr, input.bytes(len));
}

/// The block device's disk: the image files, as a fresh copy each run.
struct DiskFiles {
    raw: Vec<u8>,
    qcow2: Vec<u8>,
}

fn disk_files(dir: &Path) -> &'static DiskFiles {
    static FILES: OnceLock<DiskFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        use imago::file::File as ImagoFile;
        use imago::qcow2::Qcow2;
        use imago::{FormatCreateBuilder, Storage, StorageCreateOptions};
        let path = dir.join("template.qcow2");
        let file = ImagoFile::create_open(StorageCreateOptions::new().filename(&path))
            .expect("create the qcow2 template");
        Qcow2::<ImagoFile>::create_builder(file)
            .size(DISK_BYTES)
            .cluster_size(CLUSTER_BYTES)
            .backing("base.raw".into(), "raw".into())
            .create()
            .expect("write the qcow2 template");
        let qcow2 = std::fs::read(&path).expect("read the qcow2 template");
        let _ = std::fs::remove_file(&path);
        DiskFiles {
            raw: (0..DISK_BYTES)
                .map(|i| ((i * 7) ^ (i >> 9)) as u8)
                .collect(),
            qcow2,
        }
    })
}

/// Runs a block-device program (see the module's primer) with its disk in
/// `dir`; returns the device's counters.
pub fn block_device(dir: &Path, data: &[u8]) -> BTreeMap<String, u64> {
    let mut input = Input(data);
    let files = disk_files(dir);
    let kind = input.u8() % 4;
    let read_only = kind % 2 == 1;
    let base = dir.join("base.raw");
    std::fs::write(&base, &files.raw).expect("write the raw image");
    // The VMM states a disk's format (`--disk PATH,format=`), so do we.
    let (top, format) = if kind >= 2 {
        let overlay = dir.join("overlay.qcow2");
        std::fs::write(&overlay, &files.qcow2).expect("write the qcow2 image");
        (overlay, Format::Qcow2)
    } else {
        (base.clone(), Format::Raw)
    };
    let disk = Disk::open(&top, read_only, Some(format)).expect("the disk images are valid");
    let mem = guest_memory();
    let (interrupt, _irq) = Interrupt::for_tests();
    let mut device = BlockDevice::new(disk, mem.clone(), interrupt).expect("eventfd");
    let mut ring = Ring::from_input(&mut input, &mem, 0);
    let features = if input.u8() & 1 != 0 { F_FLUSH } else { 0 };
    device.activate(vec![ring.queue(256)], features);
    let mut buffers = Buffers::new();
    while !input.done() {
        match input.u8() % 10 {
            0 => write_memory(&mem, &mut input),
            1 => ring.raw_desc(&mem, &mut input),
            2 => ring.publish(&mem, input.u16()),
            3 => ring.set_avail_idx(&mem, input.u16()),
            4 => device.queue_notify(0),
            5 => {
                // As the ioeventfd would: the device drains it and looks.
                let _ = device.queue_events()[0].write(1);
                device.process_events();
            }
            6 => block_request(&mem, &mut ring, &mut buffers, &mut input),
            7 => {
                device.reset();
                let count = input.u8() % 4;
                ring = Ring::from_input(&mut input, &mem, 0);
                let features = if input.u8() & 1 != 0 { F_FLUSH } else { 0 };
                let queues = (0..count).map(|_| ring.queue(256)).collect();
                device.activate(queues, features);
            }
            8 => {
                let offset = u64::from(input.u8());
                let mut buf = vec![0u8; usize::from(input.u8() % 16)];
                device.read_config(offset, &mut buf);
            }
            _ => {
                let offset = u64::from(input.u8());
                let len = usize::from(input.u8() % 16);
                device.write_config(offset, input.bytes(len));
            }
        }
    }
    let counters = device.counters();
    drop(device);
    // The guest cannot change what it may not write: a read-only disk, or
    // the base under a copy-on-write overlay.
    if read_only && kind >= 2 {
        assert_eq!(
            std::fs::read(&top).expect("read the overlay back"),
            files.qcow2,
            "a read-only overlay changed"
        );
    }
    if read_only || kind >= 2 {
        assert!(
            std::fs::read(&base).expect("read the base back") == files.raw,
            "the guest changed a disk it may not write"
        );
    }
    counters
}

/// Step 6: a request laid out as Linux lays it out, its fields from the input.
fn block_request(mem: &GuestMemoryMmap, ring: &mut Ring, buffers: &mut Buffers, input: &mut Input) {
    let pick = input.u8();
    let request_type = match pick % 5 {
        0 => T_IN,
        1 => T_OUT,
        2 => T_FLUSH,
        3 => T_GET_ID,
        _ => input.u32(),
    };
    let sector = if pick & 0x80 != 0 {
        input.u64()
    } else {
        u64::from(input.u8())
    };
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&request_type.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    let header_at = buffers.take(16);
    poke(mem, header_at, &header);
    let mut descs = vec![(header_at, 16, 0)];
    let data_flags = if request_type == T_OUT { 0 } else { F_WRITE };
    for _ in 0..input.u8() % 4 {
        let size = input.u8();
        let len = if size & 0x80 != 0 {
            input.u32()
        } else {
            u32::from(size % 16 + 1) * SECTOR_BYTES as u32
        };
        let at = buffers.take(len.min(4096));
        descs.push((at, len, data_flags));
    }
    descs.push((buffers.take(1), 1, F_WRITE));
    ring.post(mem, &descs);
}

/// The vsock device's host side: a listener on one port, and every host
/// stream the program opened.
struct Host {
    listener: UnixListener,
    streams: Vec<UnixStream>,
}

impl Host {
    fn pick(&mut self, input: &mut Input) -> Option<usize> {
        let index = usize::from(input.u8());
        (!self.streams.is_empty()).then(|| index % self.streams.len())
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(true);
            self.streams.push(stream);
        }
    }
}

/// A host port or guest port a packet names: the few that mean something
/// here, or any.
fn port(input: &mut Input) -> u32 {
    match input.u8() % 6 {
        0 => 1000,
        1 => 1001,
        2 => LISTENED_PORT,
        3 => 1 << 30,
        4 => (1 << 30) + 1,
        _ => input.u32(),
    }
}

/// Step 6 of the vsock program: a packet from the guest, header and data
/// laid out as Linux lays them out.
fn tx_packet(mem: &GuestMemoryMmap, ring: &mut Ring, buffers: &mut Buffers, input: &mut Input) {
    let pick = input.u8();
    let src_cid = if pick & 1 != 0 {
        input.u64()
    } else {
        GUEST_CID
    };
    let dst_cid = if pick & 2 != 0 { input.u64() } else { HOST_CID };
    let src_port = port(input);
    let dst_port = port(input);
    let op = u16::from(input.u8() % 8);
    let type_ = if pick & 4 != 0 { input.u16() } else { 1 };
    let flags = u32::from(input.u8() % 4);
    let buf_alloc = input.u32();
    let fwd_cnt = input.u32();
    let data_len = usize::from(input.u16()) % 8192;
    let len = if pick & 8 != 0 {
        input.u32()
    } else {
        data_len as u32
    };
    let mut header = [0u8; 44];
    header[0..8].copy_from_slice(&src_cid.to_le_bytes());
    header[8..16].copy_from_slice(&dst_cid.to_le_bytes());
    header[16..20].copy_from_slice(&src_port.to_le_bytes());
    header[20..24].copy_from_slice(&dst_port.to_le_bytes());
    header[24..28].copy_from_slice(&len.to_le_bytes());
    header[28..30].copy_from_slice(&type_.to_le_bytes());
    header[30..32].copy_from_slice(&op.to_le_bytes());
    header[32..36].copy_from_slice(&flags.to_le_bytes());
    header[36..40].copy_from_slice(&buf_alloc.to_le_bytes());
    header[40..44].copy_from_slice(&fwd_cnt.to_le_bytes());
    let payload = input.bytes(data_len.min(64));
    if pick & 16 != 0 {
        // Header and data in one descriptor.
        let at = buffers.take(44 + data_len as u32);
        poke(mem, at, &header);
        poke(mem, at + 44, payload);
        ring.post(mem, &[(at, 44 + data_len as u32, 0)]);
    } else {
        let at = buffers.take(44);
        poke(mem, at, &header);
        let mut descs = vec![(at, 44, 0)];
        if data_len > 0 {
            let data_at = buffers.take(data_len as u32);
            poke(mem, data_at, payload);
            descs.push((data_at, data_len as u32, 0));
        }
        ring.post(mem, &descs);
    }
}

/// Step 7: RX buffers for the device to fill, as Linux offers them.
fn rx_buffers(mem: &GuestMemoryMmap, ring: &mut Ring, buffers: &mut Buffers, input: &mut Input) {
    let pick = input.u8();
    for _ in 0..pick % 4 + 1 {
        let data_len = (u32::from(input.u8()) + 1) * 64;
        if pick & 0x80 != 0 {
            ring.post(
                mem,
                &[(buffers.take(44 + data_len), 44 + data_len, F_WRITE)],
            );
        } else {
            let header = buffers.take(44);
            let data = buffers.take(data_len);
            ring.post(mem, &[(header, 44, F_WRITE), (data, data_len, F_WRITE)]);
        }
    }
}

/// Runs a vsock-device program (see the module's primer) with its sockets
/// in `dir`; returns the device's counters.
pub fn vsock_device(dir: &Path, data: &[u8]) -> BTreeMap<String, u64> {
    let mut input = Input(data);
    let uds_base = dir.join("vsock.sock");
    let listened = dir.join(format!("vsock.sock_{LISTENED_PORT}"));
    let _ = std::fs::remove_file(&listened);
    let listener = UnixListener::bind(&listened).expect("listen on the host port");
    listener.set_nonblocking(true).expect("non-blocking");
    let mut host = Host {
        listener,
        streams: Vec::new(),
    };
    let mem = guest_memory();
    let (interrupt, _irq) = Interrupt::for_tests();
    let mut device =
        VsockDevice::new(GUEST_CID, &uds_base, mem.clone(), interrupt).expect("the vsock device");
    let bases = [0, 0x3000, 0x6000];
    let mut rings: Vec<Ring> = bases
        .iter()
        .map(|&base| Ring::from_input(&mut input, &mem, base))
        .collect();
    device.activate(rings.iter().map(|r| r.queue(256)).collect(), 0);
    let mut buffers = Buffers::new();
    while !input.done() {
        let op = input.u8() % 14;
        match op {
            0 => write_memory(&mem, &mut input),
            1..=4 => {
                let q = usize::from(input.u8() % 3);
                match op {
                    1 => rings[q].raw_desc(&mem, &mut input),
                    2 => rings[q].publish(&mem, input.u16()),
                    3 => rings[q].set_avail_idx(&mem, input.u16()),
                    _ => device.queue_notify(q as u16),
                }
            }
            5 => device.process_events(),
            6 => tx_packet(&mem, &mut rings[1], &mut buffers, &mut input),
            7 => rx_buffers(&mem, &mut rings[0], &mut buffers, &mut input),
            8 => host.accept(),
            9 => {
                let len = usize::from(input.u16() % 4096);
                if let Some(i) = host.pick(&mut input) {
                    let _ = host.streams[i].write(input.bytes(len));
                }
            }
            10 => {
                if let Some(i) = host.pick(&mut input) {
                    host.streams.swap_remove(i);
                }
            }
            11 => {
                let line = match input.u8() {
                    0x80..=0xff => {
                        let len = usize::from(input.u8() % 40);
                        input.bytes(len).to_vec()
                    }
                    _ => format!("CONNECT {}\n", port(&mut input)).into_bytes(),
                };
                if let Ok(mut stream) = UnixStream::connect(&uds_base) {
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.write(&line);
                    host.streams.push(stream);
                }
            }
            12 => {
                device.reset();
                let count = input.u8() % 5;
                rings = bases
                    .iter()
                    .map(|&base| Ring::from_input(&mut input, &mem, base))
                    .collect();
                let queues = (0..count).map(|i| rings[usize::from(i) % 3].queue(256));
                device.activate(queues.collect(), 0);
            }
            _ => {
                if let Some(i) = host.pick(&mut input) {
                    let mut sink = [0u8; 4096];
                    let _ = host.streams[i].read(&mut sink);
                }
            }
        }
    }
    device.counters()
}

/// A register offset (see the module's primer).
fn register(input: &mut Input) -> u64 {
    match input.u8() {
        b @ 0x00..=0xbf => 4 * u64::from(b),
        _ => input.u64(),
    }
}

/// An access size: mostly 4, as a driver's, sometimes any up to 8.
fn access_bytes(input: &mut Input) -> usize {
    match input.u8() {
        0x00..=0xbf => 4,
        b => usize::from(b % 9),
    }
}

/// Runs a program of register accesses (see the module's primer) against
/// the virtio-mmio transport in front of a real device, its files in `dir`;
/// returns the device's counters with the transport's.
pub fn mmio_transport(dir: &Path, data: &[u8]) -> BTreeMap<String, u64> {
    let mut input = Input(data);
    let mem = guest_memory();
    let (interrupt, _irq) = Interrupt::for_tests();
    let status = interrupt.status();
    let device: Box<dyn VirtioDevice> = if input.u8() % 2 == 0 {
        let path = dir.join("disk.raw");
        std::fs::write(&path, &disk_files(dir).raw).expect("write the raw image");
        let disk = Disk::open(&path, false, Some(Format::Raw)).expect("the raw image is valid");
        Box::new(BlockDevice::new(disk, mem.clone(), interrupt).expect("eventfd"))
    } else {
        let uds_base = dir.join("mmio-vsock.sock");
        Box::new(VsockDevice::new(GUEST_CID, &uds_base, mem.clone(), interrupt).expect("vsock"))
    };
    let mut transport = MmioTransport::new(device, status);
    while !input.done() {
        match input.u8() % 4 {
            0 => {
                let offset = register(&mut input);
                let mut buf = vec![0u8; access_bytes(&mut input)];
                transport.read(offset, &mut buf);
            }
            1 => {
                let offset = register(&mut input);
                let len = access_bytes(&mut input);
                let mut value = input.bytes(len).to_vec();
                value.resize(len, 0);
                transport.write(offset, &value);
            }
            2 => write_memory(&mem, &mut input),
            _ => transport.device_mut().process_events(),
        }
    }
    let mut counters = transport.device().counters();
    counters.insert("bad_accesses".into(), transport.bad_accesses);
    for (name, value) in transport.driver_state() {
        counters.insert(name.into(), value);
    }
    counters.insert(
        "interrupt_status".into(),
        u64::from(transport.interrupt_status.load(Ordering::SeqCst)),
    );
    counters
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A program for the entry points, written step by step.
    #[derive(Default, Clone)]
    struct Program(Vec<u8>);

    impl Program {
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn bytes(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        /// An address in the first 64 KiB.
        fn addr(self, a: u16) -> Self {
            self.u8(0).u16(a)
        }
        /// Step 0 (of the device programs): `bytes` at `a`.
        fn poke(self, a: u16, bytes: &[u8]) -> Self {
            self.u8(0).poke_operands(a, bytes)
        }
        /// Step 2 of the MMIO program: `bytes` at `a`.
        fn mmio_poke(self, a: u16, bytes: &[u8]) -> Self {
            self.u8(2).poke_operands(a, bytes)
        }
        fn poke_operands(self, a: u16, bytes: &[u8]) -> Self {
            self.addr(a).u8(bytes.len() as u8).bytes(bytes)
        }
    }

    const BLOCK_NOTIFY: u8 = 4;
    const BLOCK_REQUEST: u8 = 6;

    /// Step 6: a request of `type_pick` (0 IN, 1 OUT, 2 FLUSH, 3 GET_ID) at
    /// `sector` with one data descriptor of `sectors` sectors (0: none).
    fn request(p: Program, type_pick: u8, sector: u8, sectors: u8) -> Program {
        let p = p.u8(BLOCK_REQUEST).u8(type_pick).u8(sector);
        if sectors == 0 {
            p.u8(0)
        } else {
            p.u8(1).u8(sectors - 1)
        }
    }

    /// A 256-entry queue in the usual layout, FLUSH accepted.
    fn block_start(disk: u8) -> Program {
        Program::default().u8(disk).u8(0x08).u8(1)
    }

    /// IN, OUT, FLUSH and GET_ID, each notified.
    fn block_requests(disk: u8) -> Program {
        let p = block_start(disk);
        let p = request(p, 0, 3, 8).u8(BLOCK_NOTIFY);
        let p = request(p, 1, 10, 1).u8(BLOCK_NOTIFY);
        let p = request(p, 2, 0, 0).u8(BLOCK_NOTIFY);
        request(p, 3, 0, 1).u8(BLOCK_NOTIFY)
    }

    fn block_seeds() -> Seeds {
        // A chain built from raw descriptors: header, data, status.
        let raw = block_start(0)
            .poke(0x9000, &[0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
            .u8(1)
            .u16(0)
            .addr(0x9000)
            .u32(16)
            .u16(F_NEXT)
            .u16(1)
            .u8(1)
            .u16(1)
            .addr(0x9100)
            .u32(1024)
            .u16(F_NEXT | F_WRITE)
            .u16(2)
            .u8(1)
            .u16(2)
            .addr(0x9600)
            .u32(1)
            .u16(F_WRITE)
            .u16(0)
            .u8(2)
            .u16(0)
            .u8(BLOCK_NOTIFY);
        // The avail index far ahead: the queue is corrupt until a reset.
        let corrupt = block_start(0).u8(3).u16(300).u8(BLOCK_NOTIFY);
        let corrupt = request(corrupt.u8(7).u8(1).u8(0x04).u8(0), 0, 0, 1).u8(5);
        let config = block_start(0).u8(8).u8(0).u8(8).u8(9).u8(0).u8(1).u8(1);
        vec![
            ("requests-raw", block_requests(0).0),
            ("requests-raw-read-only", block_requests(1).0),
            ("requests-qcow2", block_requests(2).0),
            ("requests-qcow2-read-only", block_requests(3).0),
            ("raw-descriptors", raw.0),
            ("corrupt-queue-then-reset", corrupt.0),
            ("config-space", config.0),
        ]
    }

    const VSOCK_NOTIFY: u8 = 4;
    const VSOCK_TX: u8 = 6;

    /// A port operand.
    fn port(p: Program, port: u32) -> Program {
        match port {
            1000 => p.u8(0),
            1001 => p.u8(1),
            LISTENED_PORT => p.u8(2),
            0x4000_0000 => p.u8(3),
            other => p.u8(5).u32(other),
        }
    }

    /// Step 6: a packet from guest port `src` to host port `dst`, then a
    /// notify of the TX queue.
    fn packet(p: Program, src: u32, dst: u32, op: u8, payload: &[u8]) -> Program {
        let p = port(port(p.u8(VSOCK_TX).u8(0), src), dst);
        p.u8(op)
            .u8(0)
            .u32(256 * 1024)
            .u32(0)
            .u16(payload.len() as u16)
            .bytes(payload)
            .u8(VSOCK_NOTIFY)
            .u8(1)
    }

    /// Three 16-entry queues in the usual layout, four 4 KiB RX buffers.
    fn vsock_start() -> Program {
        Program::default()
            .u8(0x04)
            .u8(0x04)
            .u8(0x04)
            .u8(7)
            .u8(3)
            .u8(63)
            .u8(63)
            .u8(63)
            .u8(63)
    }

    fn vsock_seeds() -> Seeds {
        // The guest connects to port 1234 (ports: 0 = 1000, 2 = 1234), the
        // host accepts, both send, both shut down.
        let p = packet(vsock_start(), 1000, 1234, 1, b"").u8(8);
        let p = packet(p, 1000, 1234, 5, b"hello host").u8(13).u8(0);
        let p = p.u8(9).u16(11).u8(0).bytes(b"hello guest").u8(5);
        let p = p.u8(7).u8(3).u8(63).u8(63).u8(63).u8(63);
        let p = packet(p, 1000, 1234, 6, b"").u8(10).u8(0).u8(5);
        let guest_connects = packet(p, 1000, 1234, 4, b"");
        // A host program asks for guest port 5000 (the device accepts it,
        // then reads its line); the guest accepts; data both ways.
        let p = port(vsock_start().u8(11).u8(0), 5000).u8(5).u8(5);
        let p = packet(p, 5000, 1 << 30, 2, b"").u8(13).u8(0);
        let p = packet(p, 5000, 1 << 30, 5, b"ping").u8(13).u8(0);
        let host_connects = p.u8(9).u16(4).u8(0).bytes(b"pong").u8(5);
        // Requests nobody listens for, stray packets, a bad line.
        let p = packet(vsock_start(), 1000, 4321, 1, b"");
        let p = packet(p, 1001, 1234, 5, b"stray");
        let refused = p.u8(11).u8(0x80).u8(6).bytes(b"HELLO\n").u8(5).u8(5);
        vec![
            ("guest-connects", guest_connects.0),
            ("host-connects", host_connects.0),
            ("refused-and-stray", refused.0),
        ]
    }

    /// Step 1 of the MMIO program: write `value` to the register at `offset`.
    fn w(p: Program, offset: u64, value: u32) -> Program {
        p.u8(1).u8((offset / 4) as u8).u8(0).u32(value)
    }

    fn r(p: Program, offset: u64) -> Program {
        p.u8(0).u8((offset / 4) as u8).u8(0)
    }

    /// Linux's bring-up (see `mmio.rs`), accepting VERSION_1 and the low
    /// `features`, 8-entry queues at 0x0, 0x3000, 0x6000.
    fn bring_up(device: u8, features: u32, queues: u32) -> Program {
        let mut p = Program::default().u8(device);
        for offset in [0x000, 0x004, 0x008, 0x00c] {
            p = r(p, offset);
        }
        p = w(p, 0x070, 0);
        p = w(p, 0x070, 3);
        p = w(p, 0x014, 0);
        p = r(p, 0x010);
        p = w(p, 0x014, 1);
        p = r(p, 0x010);
        p = w(w(p, 0x024, 0), 0x020, features);
        p = w(w(p, 0x024, 1), 0x020, 1);
        p = r(w(p, 0x070, 11), 0x070);
        for q in 0..queues {
            let base = 0x3000 * q;
            p = r(w(p, 0x030, q), 0x034);
            p = w(p, 0x038, 8);
            p = w(w(p, 0x080, base), 0x084, 0);
            p = w(w(p, 0x090, base + 0x1000), 0x094, 0);
            p = w(w(p, 0x0a0, base + 0x2000), 0x0a4, 0);
            p = w(p, 0x044, 1);
        }
        w(p, 0x070, 15)
    }

    fn mmio_seeds() -> Seeds {
        // A read of sector 0 after bring-up: the chain and avail ring
        // written into guest memory, then QueueNotify.
        let mut desc = Vec::new();
        for (addr, len, flags, next) in [
            (0x9000u64, 16u32, F_NEXT, 1u16),
            (0x9100, 512, F_NEXT | F_WRITE, 2),
            (0x9400, 1, F_WRITE, 0),
        ] {
            desc.extend_from_slice(&addr.to_le_bytes());
            desc.extend_from_slice(&len.to_le_bytes());
            desc.extend_from_slice(&flags.to_le_bytes());
            desc.extend_from_slice(&next.to_le_bytes());
        }
        let p = bring_up(0, 1 << 9, 1)
            .mmio_poke(0x9000, &[0; 16])
            .mmio_poke(0, &desc)
            .mmio_poke(0x1000, &[0, 0, 1, 0, 0, 0]);
        let block_read = r(w(p, 0x050, 0), 0x060);
        let block_read = w(block_read, 0x064, 1);
        let block_reset = w(bring_up(0, 1 << 9, 1), 0x070, 0);
        let mut config = bring_up(1, 0, 3);
        for offset in [0x100, 0x104] {
            config = r(config, offset);
        }
        vec![
            ("block-bring-up-and-read", block_read.0),
            ("block-bring-up-and-reset", block_reset.0),
            ("vsock-bring-up", config.0),
        ]
    }

    fn seeds_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target)
    }

    type Entry = fn(&Path, &[u8]) -> BTreeMap<String, u64>;
    /// A target's seeds, by name.
    type Seeds = Vec<(&'static str, Vec<u8>)>;

    fn targets() -> [(&'static str, Entry, Seeds); 3] {
        [
            ("block_device", block_device as Entry, block_seeds()),
            ("vsock_device", vsock_device as Entry, vsock_seeds()),
            ("mmio_transport", mmio_transport as Entry, mmio_seeds()),
        ]
    }

    /// The seeds in `fuzz/seeds/` are these programs' bytes; with
    /// `VMBENCH_WRITE_FUZZ_SEEDS=1` this test writes them there.
    #[test]
    fn committed_seeds_are_the_programs_here() {
        let write = std::env::var_os("VMBENCH_WRITE_FUZZ_SEEDS").is_some();
        for (target, _, seeds) in targets() {
            let dir = seeds_dir(target);
            for (name, bytes) in seeds {
                let path = dir.join(name);
                if write {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, &bytes).unwrap();
                }
                let committed =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(committed == bytes, "{} is out of date", path.display());
            }
        }
    }

    /// Every committed input, seeds and crash regressions alike, runs.
    #[test]
    fn every_committed_input_runs() {
        for (target, entry, _) in targets() {
            let scratch = tempfile::tempdir().unwrap();
            let mut count = 0;
            for file in std::fs::read_dir(seeds_dir(target)).unwrap() {
                let path = file.unwrap().path();
                entry(scratch.path(), &std::fs::read(&path).unwrap());
                count += 1;
            }
            assert!(count > 0, "no inputs for {target}");
        }
    }

    /// The counters after `program`; a counter that never counted is absent.
    fn run(entry: Entry, program: &[u8]) -> Counts {
        let scratch = tempfile::tempdir().unwrap();
        Counts(entry(scratch.path(), program))
    }

    #[derive(Debug)]
    struct Counts(BTreeMap<String, u64>);

    impl std::ops::Index<&str> for Counts {
        type Output = u64;
        fn index(&self, name: &str) -> &u64 {
            self.0.get(name).unwrap_or(&0)
        }
    }

    #[test]
    fn block_seeds_reach_the_disk() {
        let seeds: BTreeMap<_, _> = block_seeds().into_iter().collect();
        for name in ["requests-raw", "requests-qcow2"] {
            let c = run(block_device, &seeds[name]);
            for (counter, n) in [
                ("requests", 4),
                ("reads", 1),
                ("writes", 1),
                ("flushes", 1),
                ("get_ids", 1),
                ("bytes_read", 4096),
                ("bytes_written", 512),
                ("io_errors", 0),
            ] {
                assert_eq!(c[counter], n, "{name}: {counter}");
            }
        }
        let c = run(block_device, &seeds["requests-qcow2-read-only"]);
        assert_eq!((c["writes_to_read_only"], c["reads"]), (1, 1));
        let c = run(block_device, &seeds["raw-descriptors"]);
        assert_eq!((c["reads"], c["bytes_read"]), (1, 1024));
        let c = run(block_device, &seeds["corrupt-queue-then-reset"]);
        assert_eq!((c["queue_errors"], c["reads"]), (1, 1));
        let c = run(block_device, &seeds["config-space"]);
        assert_eq!(c["config_writes_ignored"], 1);
    }

    #[test]
    fn vsock_seeds_reach_the_connections() {
        let seeds: BTreeMap<_, _> = vsock_seeds().into_iter().collect();
        let c = run(vsock_device, &seeds["guest-connects"]);
        assert_eq!(c["connections_from_guest"], 1, "{c:?}");
        assert_eq!((c["tx_bytes"], c["rx_bytes"]), (10, 11), "{c:?}");
        assert_eq!(c["bad_tx_chains"] + c["bad_rx_chains"], 0, "{c:?}");
        let c = run(vsock_device, &seeds["host-connects"]);
        assert_eq!(c["connections_from_host"], 1, "{c:?}");
        assert_eq!((c["tx_bytes"], c["rx_bytes"]), (4, 4), "{c:?}");
        let c = run(vsock_device, &seeds["refused-and-stray"]);
        assert_eq!(
            (
                c["connections_refused"],
                c["unknown_connections"],
                c["host_handshake_errors"]
            ),
            (1, 1, 1),
            "{c:?}"
        );
    }

    #[test]
    fn mmio_seeds_bring_the_device_up() {
        let seeds: BTreeMap<_, _> = mmio_seeds().into_iter().collect();
        let c = run(mmio_transport, &seeds["block-bring-up-and-read"]);
        assert_eq!((c["driver_status"], c["bad_accesses"]), (15, 0), "{c:?}");
        assert_eq!((c["reads"], c["bytes_read"], c["io_errors"]), (1, 512, 0));
        let c = run(mmio_transport, &seeds["block-bring-up-and-reset"]);
        assert_eq!((c["driver_status"], c["bad_accesses"]), (0, 0), "{c:?}");
        let c = run(mmio_transport, &seeds["vsock-bring-up"]);
        assert_eq!((c["driver_status"], c["bad_accesses"]), (15, 0), "{c:?}");
        assert_eq!(c["invalid_queues"], 0, "{c:?}");
    }

    #[test]
    fn empty_and_short_programs_run() {
        for (_, entry, _) in targets() {
            for program in [&[][..], &[1], &[0xff; 3], &[0x80, 0xff, 0xff]] {
                run(entry, program);
            }
        }
    }
}
