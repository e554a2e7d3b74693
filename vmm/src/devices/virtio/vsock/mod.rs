//! virtio-vsock (virtio 1.2, §5.10): the device behind the guest's AF_VSOCK
//! sockets, bridged to Unix sockets on the host.
//!
//! # Primer
//! Three virtqueues: `rx` (0) holds buffers the guest lends the device for
//! packets *to* it, `tx` (1) the packets it sends, `event` (2) is for
//! transport events (only live migration uses it; this device never posts
//! one). A packet is a 44-byte header (`virtio_vsock_hdr`: source and
//! destination CID and port, `len`, `type`, `op`, `flags`, `buf_alloc`,
//! `fwd_cnt`) followed by `len` bytes of data, in one descriptor or two.
//! The configuration space holds the guest's CID (a u64); the host is CID 2.
//! Connections, flow control and shutdown are in [`connection`].
//!
//! # Bridging (the convention Firecracker, Cloud Hypervisor and
//! vhost-device-vsock share)
//! A guest connection to host port P becomes a connection to the Unix
//! socket `<uds_base>_P`; a host program reaches guest port P through
//! `<uds_base>` (see [`handshake`]). So vmbench's collector serves this
//! device and QEMU's vhost-device-vsock alike.
//!
//! # Untrusted input
//! Every chain is parsed by the virtio-vsock crate's `VsockPacket`, which
//! checks descriptor directions, lengths against the header's `len` and the
//! 64 KiB packet limit, and that buffers lie in guest memory; virtio-queue's
//! chain iterator bounds a chain at the queue size, so a descriptor loop
//! ends. A chain that does not parse goes back to the guest unused and is
//! counted; a packet that parses but makes no sense (wrong CID, type,
//! unknown connection, a credit overrun) is answered with RST and counted. A
//! queue the guest corrupts (an avail index beyond the ring, a used ring
//! outside memory) stops the device until the driver resets it. The
//! counters go to `vmm.json`.

pub mod connection;
pub mod handshake;
pub mod muxer;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::mmio::VirtioDevice;
use super::{next_chain, read_config, BrokenQueue, Interrupt};
use muxer::Muxer;

pub const DEVICE_ID: u32 = 19;
pub const HOST_CID: u64 = 2;
/// The only socket type: SOCK_STREAM.
pub const TYPE_STREAM: u16 = 1;
/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

const RXQ: usize = 0;
const TXQ: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// The largest payload of one packet, as Linux's driver uses.
pub const MAX_PKT_DATA: u32 = 64 * 1024;

pub struct VsockDevice {
    guest_cid: u64,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queue_events: Vec<EventFd>,
    /// Set at DRIVER_OK, cleared at reset.
    queues: Option<Vec<Queue>>,
    /// The guest corrupted a queue: nothing is processed until a reset.
    broken: bool,
    muxer: Muxer,
}

/// What a pass over a queue did: whether it used any buffer.
type Pass = Result<bool, BrokenQueue>;

impl VsockDevice {
    /// A device for the guest with `guest_cid`, listening for host programs on `uds_base`.
    pub fn new(
        guest_cid: u64,
        uds_base: &Path,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
    ) -> io::Result<Self> {
        // 0-2 are reserved (hypervisor, local, host); the top of the u32
        // range is VMADDR_CID_ANY.
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("guest CID {guest_cid} is reserved: use 3 or more"),
            ));
        }
        let muxer = Muxer::new(guest_cid, uds_base)?;
        let queue_events = (0..3)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        for (token, fd) in queue_events.iter().enumerate() {
            muxer.watch(fd.as_raw_fd(), token as u64)?;
        }
        Ok(VsockDevice {
            guest_cid,
            mem,
            interrupt,
            queue_events,
            queues: None,
            broken: false,
            muxer,
        })
    }

    /// Moves packets both ways until neither queue makes progress, then
    /// interrupts the guest if it was given anything.
    fn process_queues(&mut self) {
        if self.broken {
            return;
        }
        let Some(queues) = self.queues.as_mut() else {
            return;
        };
        let (mut rx_used, mut tx_used) = (false, false);
        let result = loop {
            let tx = match process_tx(&mut queues[TXQ], &self.mem, &mut self.muxer) {
                Ok(tx) => tx,
                Err(broken) => break Err(broken),
            };
            let rx = match process_rx(&mut queues[RXQ], &self.mem, &mut self.muxer) {
                Ok(rx) => rx,
                Err(broken) => break Err(broken),
            };
            tx_used |= tx;
            rx_used |= rx;
            if !tx && !rx {
                break Ok(());
            }
        };
        if result.is_err() {
            self.broken = true;
            self.muxer.counters.bump("queue_errors");
        }
        let mem = &self.mem;
        let wants = |q: &mut Queue, used: bool| used && q.needs_notification(mem).unwrap_or(true);
        let notify_rx = wants(&mut queues[RXQ], rx_used);
        let notify_tx = wants(&mut queues[TXQ], tx_used);
        if (notify_rx || notify_tx) && self.interrupt.signal_used_queue().is_err() {
            self.muxer.counters.bump("interrupt_errors");
        }
    }
}

/// Takes the guest's packets (its TX queue) while the muxer can answer them.
fn process_tx(queue: &mut Queue, mem: &GuestMemoryMmap, muxer: &mut Muxer) -> Pass {
    let mut used = false;
    while !muxer.rx_backlog_full() {
        let Some(mut chain) = next_chain(queue, mem)? else {
            break;
        };
        let head = chain.head_index();
        match VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
            Ok(pkt) => {
                muxer.counters.bump("tx_packets");
                if pkt.op() == op::RW {
                    muxer.counters.add("tx_bytes", u64::from(pkt.len()));
                }
                muxer.send_pkt(&pkt);
            }
            Err(_) => muxer.counters.bump("bad_tx_chains"),
        }
        queue.add_used(mem, head, 0).map_err(|_| BrokenQueue)?;
        used = true;
    }
    Ok(used)
}

/// Fills the guest's RX buffers with what the muxer owes it.
fn process_rx(queue: &mut Queue, mem: &GuestMemoryMmap, muxer: &mut Muxer) -> Pass {
    let mut used = false;
    while muxer.has_pending_rx() {
        let Some(mut chain) = next_chain(queue, mem)? else {
            break;
        };
        let head = chain.head_index();
        let len = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
            // A buffer without room for data cannot take every packet: refused.
            Ok(mut pkt) if pkt.data_slice().is_some() => {
                if !muxer.recv_pkt(&mut pkt) {
                    // Nothing to say after all: the buffer stays the guest's.
                    queue.go_to_previous_position();
                    break;
                }
                muxer.counters.bump("rx_packets");
                if pkt.op() == op::RW {
                    muxer.counters.add("rx_bytes", u64::from(pkt.len()));
                }
                PKT_HEADER_SIZE as u32 + pkt.len()
            }
            Ok(_) | Err(_) => {
                muxer.counters.bump("bad_rx_chains");
                0
            }
        };
        queue.add_used(mem, head, len).map_err(|_| BrokenQueue)?;
        used = true;
    }
    Ok(used)
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        // VIRTIO_F_VERSION_1 (added by the transport) and nothing else: no
        // event index, no indirect descriptors, no SEQPACKET.
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The guest CID is the device's to set.
        self.muxer.counters.bump("config_writes_ignored");
    }

    fn activate(&mut self, queues: Vec<Queue>, _features: u64) {
        if queues.len() != 3 || queues.iter().any(|q| !q.is_valid(&self.mem)) {
            self.muxer.counters.bump("invalid_queues");
            return;
        }
        self.queues = Some(queues);
        self.broken = false;
        // Host programs may have asked for guest ports before the driver was up.
        self.process_queues();
        self.muxer.sweep();
    }

    fn queue_notify(&mut self, _queue: u16) {
        self.process_queues();
        self.muxer.sweep();
    }

    fn reset(&mut self) {
        self.queues = None;
        self.broken = false;
        self.muxer.reset();
        self.muxer.sweep();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.muxer.epoll_fd())
    }

    fn process_events(&mut self) {
        let ready = self.muxer.poll();
        for (index, event) in self.queue_events.iter().enumerate() {
            if ready & (1 << index) != 0 {
                // Drained: the queues are looked at whatever the count.
                let _ = event.read();
            }
        }
        self.process_queues();
        self.muxer.sweep();
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let mut counters = self.muxer.counters.to_map();
        counters.insert(
            "open_connections".into(),
            self.muxer.open_connections() as u64,
        );
        counters.insert("guest_cid".into(), self.guest_cid);
        counters
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::test_ring::{Layout, TestRing, F_NEXT, F_WRITE};

    const MAX_RST_BACKLOG_FOR_TESTS: usize = muxer::MAX_RST_BACKLOG;
    const GUEST_CID: u64 = 3;
    const MEM_BYTES: usize = 0x10_0000;
    /// Where each queue's rings go, and where its buffers start.
    const RINGS: [u64; 3] = [0x0, 0x4000, 0x8000];
    const BUFFERS: [u64; 3] = [0x1_0000, 0x5_0000, 0x9_0000];
    const RING_SIZE: u16 = 16;

    /// Queue `index`'s ring (rx, tx, event), 16 entries, and its buffers.
    fn layout(index: usize) -> Layout {
        Layout {
            rings_at: RINGS[index],
            size: RING_SIZE,
            max_size: QUEUE_SIZE,
            buffers_at: BUFFERS[index],
            buffer_bytes: 0x3_0000,
            align: 16,
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Hdr {
        src_cid: u64,
        dst_cid: u64,
        src_port: u32,
        dst_port: u32,
        len: u32,
        type_: u16,
        op: u16,
        flags: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
    }

    impl Hdr {
        /// From the guest's port 1000 to host port `port`.
        fn to_host(port: u32, op: u16) -> Self {
            Hdr::between(1000, port, op)
        }

        /// From guest port `guest_port` to host port `host_port`.
        fn between(guest_port: u32, host_port: u32, op: u16) -> Self {
            Hdr {
                src_cid: GUEST_CID,
                dst_cid: HOST_CID,
                src_port: guest_port,
                dst_port: host_port,
                len: 0,
                type_: TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc: 64 * 1024,
                fwd_cnt: 0,
            }
        }

        fn bytes(&self) -> [u8; PKT_HEADER_SIZE] {
            let mut b = [0u8; PKT_HEADER_SIZE];
            b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
            b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
            b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
            b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
            b[24..28].copy_from_slice(&self.len.to_le_bytes());
            b[28..30].copy_from_slice(&self.type_.to_le_bytes());
            b[30..32].copy_from_slice(&self.op.to_le_bytes());
            b[32..36].copy_from_slice(&self.flags.to_le_bytes());
            b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
            b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
            b
        }

        fn parse(b: &[u8]) -> Self {
            let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
            let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
            Hdr {
                src_cid: u64_at(0),
                dst_cid: u64_at(8),
                src_port: u32_at(16),
                dst_port: u32_at(20),
                len: u32_at(24),
                type_: u16_at(28),
                op: u16_at(30),
                flags: u32_at(32),
                buf_alloc: u32_at(36),
                fwd_cnt: u32_at(40),
            }
        }
    }

    /// A device, its memory, its queues as the driver sees them and the
    /// host side of its sockets.
    struct Rig {
        dir: tempfile::TempDir,
        /// Leaked so the driver's rings can borrow it beside the rig.
        mem: &'static GuestMemoryMmap,
        device: VsockDevice,
        irq: Arc<EventFd>,
        /// The RX buffers handed out: head -> (header address, data address).
        rx_bufs: std::collections::HashMap<u16, (u64, u64)>,
    }

    /// Rings borrow the memory; the rig hands them out separately.
    struct Driver<'m> {
        rx: TestRing<'m>,
        tx: TestRing<'m>,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES)]).unwrap(),
        ));
        let (interrupt, irq) = Interrupt::for_tests();
        let device = VsockDevice::new(
            GUEST_CID,
            &dir.path().join("vsock.sock"),
            mem.clone(),
            interrupt,
        )
        .unwrap();
        Rig {
            dir,
            mem,
            device,
            irq,
            rx_bufs: Default::default(),
        }
    }

    impl Rig {
        fn driver(&self) -> Driver<'static> {
            Driver {
                rx: TestRing::new(self.mem, layout(0)),
                tx: TestRing::new(self.mem, layout(1)),
            }
        }

        fn activate(&mut self, driver: &Driver<'_>) {
            let ev = TestRing::new(self.mem, layout(2));
            let queues = vec![driver.rx.queue(), driver.tx.queue(), ev.queue()];
            self.device.activate(queues, 0);
        }

        /// Offers `n` RX buffers (header and data in two descriptors).
        fn give_rx(&mut self, driver: &mut Driver<'_>, n: usize, data_len: u32) {
            for _ in 0..n {
                let hdr = driver.rx.buffer(PKT_HEADER_SIZE as u32);
                let data = driver.rx.buffer(data_len);
                let head = driver.rx.post(&[
                    (hdr, PKT_HEADER_SIZE as u32, F_WRITE),
                    (data, data_len, F_WRITE),
                ]);
                self.rx_bufs.insert(head, (hdr, data));
            }
        }

        /// Sends one packet (header and payload in two descriptors).
        fn send(&mut self, driver: &mut Driver<'_>, mut hdr: Hdr, payload: &[u8]) {
            hdr.len = payload.len() as u32;
            let h = driver.tx.buffer(PKT_HEADER_SIZE as u32);
            self.mem.write_slice(&hdr.bytes(), GuestAddress(h)).unwrap();
            if payload.is_empty() {
                driver.tx.post(&[(h, PKT_HEADER_SIZE as u32, 0)]);
            } else {
                let d = driver.tx.buffer(payload.len() as u32);
                self.mem.write_slice(payload, GuestAddress(d)).unwrap();
                driver
                    .tx
                    .post(&[(h, PKT_HEADER_SIZE as u32, 0), (d, payload.len() as u32, 0)]);
            }
            self.device.queue_notify(TXQ as u16);
        }

        /// Packets the device put in RX buffers since last asked.
        fn received(&mut self, driver: &mut Driver<'_>) -> Vec<(Hdr, Vec<u8>)> {
            driver
                .rx
                .used()
                .into_iter()
                .map(|(head, len)| {
                    let (h, d) = self.rx_bufs[&head];
                    let mut hb = [0u8; PKT_HEADER_SIZE];
                    self.mem.read_slice(&mut hb, GuestAddress(h)).unwrap();
                    let hdr = Hdr::parse(&hb);
                    assert_eq!(len as usize, PKT_HEADER_SIZE + hdr.len as usize);
                    let mut data = vec![0u8; hdr.len as usize];
                    self.mem.read_slice(&mut data, GuestAddress(d)).unwrap();
                    (hdr, data)
                })
                .collect()
        }

        /// Runs the device's event processing until `done` holds (host sockets are asynchronous).
        fn until<T>(
            &mut self,
            driver: &mut Driver<'_>,
            mut done: impl FnMut(&mut Rig, &mut Driver<'_>) -> Option<T>,
        ) -> T {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                self.device.process_events();
                if let Some(t) = done(self, driver) {
                    return t;
                }
                assert!(Instant::now() < deadline, "timed out");
                std::thread::sleep(Duration::from_millis(2));
            }
        }

        /// The packets the device gives the guest next, once it has any.
        fn next_received(&mut self, driver: &mut Driver<'_>) -> Vec<(Hdr, Vec<u8>)> {
            self.until(driver, |rig, driver| {
                let got = rig.received(driver);
                (!got.is_empty()).then_some(got)
            })
        }

        /// A device the driver has brought up, without RX buffers.
        fn live() -> (Rig, Driver<'static>) {
            let mut rig = rig();
            let driver = rig.driver();
            rig.activate(&driver);
            (rig, driver)
        }

        /// A live device with eight 4 KiB RX buffers.
        fn live_with_rx() -> (Rig, Driver<'static>) {
            let (mut rig, mut driver) = Rig::live();
            rig.give_rx(&mut driver, 8, 4096);
            (rig, driver)
        }

        /// A live device with RX buffers and one guest connection (guest
        /// port 1000 to host port 1234), accepted by a host listener.
        fn connected() -> (Rig, Driver<'static>, UnixStream) {
            let (mut rig, mut driver) = Rig::live_with_rx();
            let listener = UnixListener::bind(rig.dir.path().join("vsock.sock_1234")).unwrap();
            rig.send(&mut driver, Hdr::to_host(1234, op::REQUEST), b"");
            let (host, _) = listener.accept().unwrap();
            (rig, driver, host)
        }

        fn count(&self, name: &str) -> u64 {
            self.device.counters().get(name).copied().unwrap_or(0)
        }
    }

    fn ops(packets: &[(Hdr, Vec<u8>)]) -> Vec<u16> {
        packets.iter().map(|(h, _)| h.op).collect()
    }

    #[test]
    fn config_space_holds_the_guest_cid() {
        let rig = rig();
        let mut data = [0xaa_u8; 8];
        rig.device.read_config(0, &mut data);
        assert_eq!(u64::from_le_bytes(data), GUEST_CID);
        let mut high = [0xaa_u8; 4];
        rig.device.read_config(4, &mut high);
        assert_eq!(high, [0; 4]);
        let mut beyond = [0xaa_u8; 4];
        rig.device.read_config(6, &mut beyond);
        assert_eq!(beyond, [0; 4], "past the 8 bytes: zeros");
        rig.device.read_config(u64::MAX, &mut beyond);
        assert_eq!(beyond, [0; 4]);
    }

    #[test]
    fn reserved_cids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        for cid in [0, 1, 2, u64::from(u32::MAX)] {
            let (interrupt, _) = Interrupt::for_tests();
            let err = VsockDevice::new(cid, &dir.path().join("v.sock"), mem.clone(), interrupt)
                .err()
                .unwrap();
            assert!(err.to_string().contains("reserved"), "{err}");
        }
    }

    #[test]
    fn guest_connection_reaches_the_host_socket_both_ways() {
        let (mut rig, mut driver, mut host) = Rig::connected();
        let got = rig.received(&mut driver);
        assert_eq!(ops(&got), vec![op::RESPONSE]);
        let response = got[0].0;
        assert_eq!(
            (
                response.src_cid,
                response.dst_cid,
                response.src_port,
                response.dst_port
            ),
            (HOST_CID, GUEST_CID, 1234, 1000)
        );
        assert_eq!(response.buf_alloc, connection::BUF_ALLOC);
        assert!(rig.irq.read().unwrap() >= 1, "the guest was interrupted");

        rig.send(&mut driver, Hdr::to_host(1234, op::RW), b"hello host");
        let mut buf = [0u8; 10];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello host");

        host.write_all(b"hello guest").unwrap();
        let got = rig.next_received(&mut driver);
        assert_eq!(ops(&got), vec![op::RW]);
        assert_eq!(got[0].1, b"hello guest");
        assert_eq!((rig.count("tx_bytes"), rig.count("rx_bytes")), (10, 11));

        // The host closes: the guest is told it will get no more.
        drop(host);
        let got = rig.next_received(&mut driver);
        assert_eq!(ops(&got), vec![op::SHUTDOWN]);
        assert_eq!(got[0].0.flags, SHUTDOWN_SEND);
        // The guest closes too: the device confirms with RST and forgets it.
        let mut bye = Hdr::to_host(1234, op::SHUTDOWN);
        bye.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        rig.send(&mut driver, bye, b"");
        assert_eq!(ops(&rig.received(&mut driver)), vec![op::RST]);
        assert_eq!(rig.count("open_connections"), 0);
        assert_eq!(rig.count("connections_from_guest"), 1);
    }

    #[test]
    fn host_program_connects_to_a_guest_port() {
        let (mut rig, mut driver) = Rig::live_with_rx();
        let mut program = UnixStream::connect(rig.dir.path().join("vsock.sock")).unwrap();
        program.write_all(b"CONNECT 5000\n").unwrap();
        let got = rig.next_received(&mut driver);
        assert_eq!(ops(&got), vec![op::REQUEST]);
        let request = got[0].0;
        assert_eq!((request.dst_port, request.src_port), (5000, 1 << 30));
        // The guest accepts.
        rig.send(&mut driver, Hdr::between(5000, 1 << 30, op::RESPONSE), b"");
        let mut ok = [0u8; 14];
        program.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"OK 1073741824\n");
        rig.send(&mut driver, Hdr::between(5000, 1 << 30, op::RW), b"ping");
        let mut buf = [0u8; 4];
        program.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn host_request_to_a_port_nobody_listens_on_is_closed() {
        let (mut rig, mut driver) = Rig::live_with_rx();
        let mut program = UnixStream::connect(rig.dir.path().join("vsock.sock")).unwrap();
        program.write_all(b"CONNECT 7\n").unwrap();
        rig.next_received(&mut driver);
        rig.send(&mut driver, Hdr::between(7, 1 << 30, op::RST), b"");
        let mut rest = Vec::new();
        program.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "closed without OK");
        // A program that sends junk is closed and counted.
        let mut junk = UnixStream::connect(rig.dir.path().join("vsock.sock")).unwrap();
        junk.write_all(b"HELLO\n").unwrap();
        rig.until(&mut driver, |rig, _| {
            (rig.count("host_handshake_errors") == 1).then_some(())
        });
        let mut rest = Vec::new();
        junk.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn requests_to_absent_listeners_and_stray_packets_get_rst() {
        let (mut rig, mut driver) = Rig::live_with_rx();
        rig.send(&mut driver, Hdr::to_host(4321, op::REQUEST), b"");
        rig.send(&mut driver, Hdr::to_host(4321, op::RW), b"stray");
        let mut seqpacket = Hdr::to_host(4321, op::REQUEST);
        seqpacket.type_ = 2;
        rig.send(&mut driver, seqpacket, b"");
        let mut elsewhere = Hdr::to_host(4321, op::REQUEST);
        elsewhere.dst_cid = 7;
        rig.send(&mut driver, elsewhere, b"");
        // Never answered: an RST, and a packet not from the guest's CID.
        rig.send(&mut driver, Hdr::to_host(4321, op::RST), b"");
        let mut spoofed = Hdr::to_host(4321, op::REQUEST);
        spoofed.src_cid = 9;
        rig.send(&mut driver, spoofed, b"");
        let got = rig.received(&mut driver);
        assert_eq!(ops(&got), vec![op::RST; 4]);
        assert!(got
            .iter()
            .all(|(h, _)| h.dst_port == 1000 && h.src_port == 4321));
        assert_eq!(rig.count("connections_refused"), 1);
        assert_eq!(rig.count("unknown_connections"), 1);
        assert_eq!(rig.count("wrong_type"), 1);
        assert_eq!(rig.count("wrong_cid"), 2);
    }

    #[test]
    fn malformed_tx_chains_are_returned_and_counted() {
        let (mut rig, mut driver) = Rig::live_with_rx();
        let h = driver.tx.buffer(64);
        let mut hdr = Hdr::to_host(1234, op::RW);
        hdr.len = 100;
        rig.mem.write_slice(&hdr.bytes(), GuestAddress(h)).unwrap();
        let small = driver.tx.buffer(16);
        let mut oversized = Hdr::to_host(1234, op::RW);
        oversized.len = MAX_PKT_DATA + 1;
        let big = driver.tx.buffer(64);
        rig.mem
            .write_slice(&oversized.bytes(), GuestAddress(big))
            .unwrap();
        // A header shorter than 44 bytes.
        driver.tx.post(&[(h, 20, 0)]);
        // A header the device should write to (device-writable).
        driver.tx.post(&[(h, PKT_HEADER_SIZE as u32, F_WRITE)]);
        // Outside guest memory.
        driver
            .tx
            .post(&[(MEM_BYTES as u64 + 0x1000, PKT_HEADER_SIZE as u32, 0)]);
        // Straddling the end of guest memory.
        driver
            .tx
            .post(&[(MEM_BYTES as u64 - 8, PKT_HEADER_SIZE as u32, 0)]);
        // len = 100 but the data descriptor holds 16.
        driver
            .tx
            .post(&[(h, PKT_HEADER_SIZE as u32, 0), (small, 16, 0)]);
        // len = 100 and no data descriptor at all.
        driver.tx.post(&[(h, PKT_HEADER_SIZE as u32, 0)]);
        // A payload above the packet limit.
        driver
            .tx
            .post(&[(big, PKT_HEADER_SIZE as u32, 0), (small, 16, 0)]);
        // A descriptor that chains to itself (a loop).
        let head = driver.tx.next_desc;
        driver
            .tx
            .post_raw(&[(h, PKT_HEADER_SIZE as u32, F_NEXT, head)]);
        rig.device.queue_notify(TXQ as u16);
        let used = driver.tx.used();
        assert_eq!(used.len(), 8, "every chain went back to the guest");
        assert!(used.iter().all(|&(_, len)| len == 0));
        assert_eq!(rig.count("bad_tx_chains"), 8);
        assert_eq!(rig.count("queue_errors"), 0);
        // And the device still works.
        rig.send(&mut driver, Hdr::to_host(4321, op::REQUEST), b"");
        assert_eq!(ops(&rig.received(&mut driver)), vec![op::RST]);
    }

    #[test]
    fn malformed_rx_buffers_are_returned_empty_and_counted() {
        let (mut rig, mut driver) = Rig::live();
        let h = driver.rx.buffer(64);
        // Read-only, too short, outside memory, without room for data.
        driver.rx.post(&[(h, 64, 0)]);
        driver.rx.post(&[(h, 20, F_WRITE)]);
        driver.rx.post(&[(MEM_BYTES as u64, 4096, F_WRITE)]);
        driver
            .rx
            .post(&[(h, PKT_HEADER_SIZE as u32, F_WRITE), (h, 0, F_WRITE)]);
        rig.give_rx(&mut driver, 1, 4096);
        rig.send(&mut driver, Hdr::to_host(4321, op::REQUEST), b"");
        let used = driver.rx.used();
        assert_eq!(used.len(), 5);
        assert_eq!(&used[..4].iter().map(|u| u.1).collect::<Vec<_>>(), &[0; 4]);
        assert_eq!(
            used[4].1, PKT_HEADER_SIZE as u32,
            "the good buffer got the RST"
        );
        assert_eq!(rig.count("bad_rx_chains"), 4);
    }

    #[test]
    fn a_corrupt_queue_stops_the_device_until_reset() {
        let (mut rig, mut driver) = Rig::live();
        // The avail index jumps further than the ring holds.
        driver.tx.avail_idx = driver.tx.avail_idx.wrapping_add(RING_SIZE + 3);
        driver.tx.avail.idx().store(driver.tx.avail_idx.to_le());
        rig.device.queue_notify(TXQ as u16);
        rig.device.queue_notify(TXQ as u16);
        assert_eq!(rig.count("queue_errors"), 1);
        // Reset, and a driver starting over, brings it back.
        rig.device.reset();
        let mut driver = rig.driver();
        rig.activate(&driver);
        rig.give_rx(&mut driver, 1, 4096);
        rig.send(&mut driver, Hdr::to_host(4321, op::REQUEST), b"");
        assert_eq!(ops(&rig.received(&mut driver)), vec![op::RST]);
    }

    #[test]
    fn a_head_index_beyond_the_ring_is_a_corrupt_queue() {
        let (mut rig, mut driver) = Rig::live();
        driver.tx.publish(RING_SIZE + 1);
        rig.device.queue_notify(TXQ as u16);
        assert_eq!(rig.count("queue_errors"), 1);
    }

    #[test]
    fn queues_outside_memory_are_not_activated() {
        let mut rig = rig();
        let driver = rig.driver();
        let mut bad = driver.rx.queue();
        bad.set_used_ring_address(Some(MEM_BYTES as u32), Some(0));
        let queues = vec![
            bad,
            driver.tx.queue(),
            TestRing::new(rig.mem, layout(2)).queue(),
        ];
        rig.device.activate(queues, 0);
        assert_eq!(rig.count("invalid_queues"), 1);
    }

    #[test]
    fn a_flood_of_requests_waits_for_rx_buffers_instead_of_queueing_forever() {
        let (mut rig, mut driver) = Rig::live();
        // More refused requests than the RST backlog holds, with no RX
        // buffers: the device stops taking them and the TX ring fills.
        let total: u64 = 320;
        let (mut sent, mut outstanding) = (0u64, 0u16);
        let mut post_while_room = |rig: &mut Rig, driver: &mut Driver<'_>| {
            outstanding -= driver.tx.used().len() as u16;
            while outstanding < RING_SIZE && sent < total {
                let hdr = Hdr::to_host(50_000 + sent as u32, op::REQUEST);
                let h = driver.tx.buffer(PKT_HEADER_SIZE as u32);
                rig.mem.write_slice(&hdr.bytes(), GuestAddress(h)).unwrap();
                driver.tx.post(&[(h, PKT_HEADER_SIZE as u32, 0)]);
                sent += 1;
                outstanding += 1;
                rig.device.queue_notify(TXQ as u16);
                outstanding -= driver.tx.used().len() as u16;
            }
            sent
        };
        post_while_room(&mut rig, &mut driver);
        let taken = rig.count("tx_packets");
        assert_eq!(
            taken, MAX_RST_BACKLOG_FOR_TESTS as u64,
            "the device stopped taking packets"
        );
        assert_eq!(rig.count("queue_errors"), 0);
        // Each RX buffer drains the backlog and lets more in.
        let mut rsts = 0;
        while rsts < total {
            rig.give_rx(&mut driver, 8, 64);
            rig.device.queue_notify(RXQ as u16);
            let got = rig.received(&mut driver);
            assert!(!got.is_empty(), "progress after {rsts}");
            assert!(got.iter().all(|(h, _)| h.op == op::RST));
            rsts += got.len() as u64;
            post_while_room(&mut rig, &mut driver);
        }
        assert_eq!(rig.count("tx_packets"), total);
        assert_eq!(rig.count("connections_refused"), total);
    }

    #[test]
    fn a_guest_overrunning_its_credit_is_reset() {
        let (mut rig, mut driver, _host) = Rig::connected();
        assert_eq!(ops(&rig.received(&mut driver)), vec![op::RESPONSE]);
        // The host never reads: after the socket buffer and our 256 KiB, a reset.
        let chunk = vec![0x5a_u8; 60 * 1024];
        for _ in 0..20 {
            rig.send(&mut driver, Hdr::to_host(1234, op::RW), &chunk);
        }
        assert_eq!(rig.count("credit_violations"), 1);
        assert!(ops(&rig.received(&mut driver)).contains(&op::RST));
    }

    #[test]
    fn reset_closes_every_host_connection() {
        let (mut rig, _driver, mut host) = Rig::connected();
        rig.device.reset();
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(rig.count("open_connections"), 0);
    }
}
