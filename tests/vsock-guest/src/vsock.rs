//! The virtio-vsock device (virtio 1.2 §5.10), driven by polling.
//!
//! Primer: device ID 19, three queues: 0 rx (buffers the device fills with
//! packets for the guest), 1 tx (packets from the guest, read by the
//! device), 2 event (4-byte `virtio_vsock_event`s; id 0 is TRANSPORT_RESET:
//! every connection is gone). The configuration space holds `guest_cid`, a
//! u64 at offset 0 (the upper 32 bits reserved). This driver negotiates
//! VIRTIO_F_VERSION_1 only: no stream-only-off, no SEQPACKET, no event index.
//! Every packet is a header (packet.rs) and `len` payload bytes.
//!
//! The buffers this driver lends, each exactly one descriptor (queue.rs):
//!
//! - rx: `RX_BUFFER_BYTES` (4096), device-writable, header and payload
//!   together. It is what Linux posts since 6.2 and what every device must
//!   take (VIRTIO_F_VERSION_1 implies any descriptor layout); one descriptor
//!   per buffer means buffer i is descriptor i, so no chain is built,
//!   walked, or trusted. The used length must cover the header and the
//!   header's `len`.
//! - tx: one device-readable descriptor, the header then the payload,
//!   `44 + len` bytes, payload at most `MAX_TX_PAYLOAD` (4052) bytes.
//! - event: 4 bytes, device-writable.
//!
//! `Queues` holds the rings and buffers and is tested on the host against a
//! fake device; `VsockDevice` adds the MMIO transport: bring-up, notifies.

use core::ptr::{addr_of_mut, copy_nonoverlapping};

use crate::clock::{tsc_ticks, Deadline};
use crate::connection::Link;
use crate::packet::{Header, HEADER_BYTES};
use crate::queue::{choose_size, QueueMemory, SplitQueue, MAX_QUEUE_SIZE};
use crate::virtio_mmio::{self, QueueAreas, Transport};
use crate::{Error, Result};

pub const RX_QUEUE: u32 = 0;
pub const TX_QUEUE: u32 = 1;
pub const EVENT_QUEUE: u32 = 2;
const QUEUE_COUNT: usize = 3;

pub const RX_BUFFER_BYTES: usize = 4096;
pub const TX_BUFFER_BYTES: usize = 4096;
pub const MAX_TX_PAYLOAD: usize = TX_BUFFER_BYTES - HEADER_BYTES;
const EVENT_BYTES: usize = 4;
pub const EVENT_TRANSPORT_RESET: u32 = 0;
/// The offset of `guest_cid` in the configuration space.
const CONFIG_GUEST_CID: u64 = 0;

/// All memory the device reads or writes: static (no heap) and
/// identity-mapped, so its addresses are guest-physical.
#[repr(C, align(4096))]
pub struct DeviceMemory {
    queues: [QueueMemory; QUEUE_COUNT],
    rx: [[u8; RX_BUFFER_BYTES]; MAX_QUEUE_SIZE],
    tx: [[u8; TX_BUFFER_BYTES]; MAX_QUEUE_SIZE],
    events: [[u8; EVENT_BYTES]; MAX_QUEUE_SIZE],
}

impl DeviceMemory {
    pub const ZERO: DeviceMemory = DeviceMemory {
        queues: [QueueMemory::ZERO; QUEUE_COUNT],
        rx: [[0; RX_BUFFER_BYTES]; MAX_QUEUE_SIZE],
        tx: [[0; TX_BUFFER_BYTES]; MAX_QUEUE_SIZE],
        events: [[0; EVENT_BYTES]; MAX_QUEUE_SIZE],
    };
}

/// The three queues and their buffers.
pub struct Queues {
    memory: *mut DeviceMemory,
    rx: SplitQueue,
    tx: SplitQueue,
    event: SplitQueue,
}

impl Queues {
    /// # Safety
    /// `memory` must stay valid while the queues and the device use it, and
    /// be used by nothing else; `sizes` must come from `choose_size`.
    pub unsafe fn new(memory: *mut DeviceMemory, sizes: [u16; QUEUE_COUNT]) -> Queues {
        let [rx_size, tx_size, event_size] = sizes;
        // SAFETY: only the addresses of the queue areas are taken here.
        let [rx, tx, event] = [0, 1, 2].map(|i| unsafe { addr_of_mut!((*memory).queues[i]) });
        Queues {
            memory,
            // SAFETY: each queue gets its own area of the caller's memory.
            rx: unsafe { SplitQueue::new(rx, rx_size) },
            // SAFETY: as above.
            tx: unsafe { SplitQueue::new(tx, tx_size) },
            // SAFETY: as above.
            event: unsafe { SplitQueue::new(event, event_size) },
        }
    }

    pub fn areas(&self, index: u32) -> QueueAreas {
        match index {
            RX_QUEUE => self.rx.areas(),
            TX_QUEUE => self.tx.areas(),
            _ => self.event.areas(),
        }
    }

    pub fn rx_buffers(&self) -> u16 {
        self.rx.size()
    }

    fn rx_buffer(&self, id: u16) -> *mut u8 {
        let memory = self.memory;
        // SAFETY: only an address is taken; id < the queue size <= the
        // number of buffers.
        unsafe { addr_of_mut!((*memory).rx[usize::from(id)]) }.cast()
    }

    fn tx_buffer(&self, id: u16) -> *mut u8 {
        let memory = self.memory;
        // SAFETY: as rx_buffer.
        unsafe { addr_of_mut!((*memory).tx[usize::from(id)]) }.cast()
    }

    fn event_buffer(&self, id: u16) -> *mut u8 {
        let memory = self.memory;
        // SAFETY: as rx_buffer.
        unsafe { addr_of_mut!((*memory).events[usize::from(id)]) }.cast()
    }

    /// Lends every rx and event buffer to the device.
    pub fn fill(&mut self) -> Result<()> {
        for id in 0..self.rx.size() {
            let buffer = self.rx_buffer(id) as u64;
            self.rx.lend(id, buffer, RX_BUFFER_BYTES as u32, true)?;
        }
        for id in 0..self.event.size() {
            let buffer = self.event_buffer(id) as u64;
            self.event.lend(id, buffer, EVENT_BYTES as u32, true)?;
        }
        Ok(())
    }

    /// Queues one packet if a tx buffer is free; `false` if none is.
    pub fn try_send(&mut self, header: &Header, payload: &[u8]) -> Result<bool> {
        if payload.len() > MAX_TX_PAYLOAD || header.len as usize != payload.len() {
            return Err(Error::Internal {
                what: "tx_payload_size",
            });
        }
        while self.tx.take_used()?.is_some() {}
        let Some(id) = self.tx.free_id() else {
            return Ok(false);
        };
        let buffer = self.tx_buffer(id);
        let bytes = header.encode();
        // SAFETY: buffer is tx buffer `id`, TX_BUFFER_BYTES long and not lent
        // to the device; 44 bytes of header fit.
        unsafe { copy_nonoverlapping(bytes.as_ptr(), buffer, HEADER_BYTES) };
        // SAFETY: the payload fits after the header (checked above).
        unsafe { copy_nonoverlapping(payload.as_ptr(), buffer.add(HEADER_BYTES), payload.len()) };
        let len = (HEADER_BYTES + payload.len()) as u32;
        self.tx.lend(id, buffer as u64, len, false)?;
        Ok(true)
    }

    /// Hands the next received packet, checked, to `handle`, then lends its
    /// buffer back to the device (also when the packet was bad).
    pub fn receive<R>(&mut self, handle: impl FnOnce(&Header, &[u8]) -> R) -> Result<Option<R>> {
        let Some(used) = self.rx.take_used()? else {
            return Ok(None);
        };
        let buffer = self.rx_buffer(used.id);
        // SAFETY: the device has returned this buffer and writes it no more
        // until it is lent again below; take_used checked that the length it
        // wrote is within the buffer.
        let written = unsafe { core::slice::from_raw_parts(buffer, used.len as usize) };
        let result = match Header::decode(written) {
            None => Err(Error::BadPacket { what: "rx_short" }),
            Some(header) => match written[HEADER_BYTES..].get(..header.len as usize) {
                None => Err(Error::BadPacket { what: "rx_len" }),
                Some(payload) => Ok(handle(&header, payload)),
            },
        };
        self.rx
            .lend(used.id, buffer as u64, RX_BUFFER_BYTES as u32, true)?;
        result.map(Some)
    }

    /// The next event the device has sent, if any; its buffer is lent back.
    pub fn take_event(&mut self) -> Result<Option<u32>> {
        let Some(used) = self.event.take_used()? else {
            return Ok(None);
        };
        let buffer = self.event_buffer(used.id);
        if used.len as usize != EVENT_BYTES {
            return Err(Error::BadPacket { what: "event_len" });
        }
        let mut id = [0; EVENT_BYTES];
        // SAFETY: the device has returned this 4-byte buffer.
        unsafe { copy_nonoverlapping(buffer, id.as_mut_ptr(), EVENT_BYTES) };
        self.event
            .lend(used.id, buffer as u64, EVENT_BYTES as u32, true)?;
        Ok(Some(u32::from_le_bytes(id)))
    }
}

/// A vsock device brought up and ready to carry packets.
pub struct VsockDevice {
    transport: Transport,
    queues: Queues,
    guest_cid: u64,
    wait_ticks: u64,
}

impl VsockDevice {
    /// Brings the device up (virtio 1.2 §3.1.1) and lends it every rx and
    /// event buffer. On failure the device is left in the FAILED state.
    ///
    /// # Safety
    /// `memory` must be valid for as long as the device runs, and used by
    /// nothing else; `transport` must be a vsock device.
    pub unsafe fn new(
        transport: Transport,
        memory: *mut DeviceMemory,
        wait_ticks: u64,
    ) -> Result<VsockDevice> {
        // SAFETY: passed on from the caller.
        match unsafe { bring_up(&transport, memory, wait_ticks) } {
            Ok((queues, guest_cid)) => Ok(VsockDevice {
                transport,
                queues,
                guest_cid,
                wait_ticks,
            }),
            Err(e) => {
                transport.add_status(virtio_mmio::STATUS_FAILED);
                Err(e)
            }
        }
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    pub fn rx_buffers(&self) -> u16 {
        self.queues.rx_buffers()
    }

    pub fn base(&self) -> u64 {
        self.transport.base()
    }
}

/// # Safety
/// As `VsockDevice::new`.
unsafe fn bring_up(
    transport: &Transport,
    memory: *mut DeviceMemory,
    wait_ticks: u64,
) -> Result<(Queues, u64)> {
    transport.reset(wait_ticks)?;
    transport.add_status(virtio_mmio::STATUS_ACKNOWLEDGE);
    transport.add_status(virtio_mmio::STATUS_DRIVER);
    if transport.device_features() & virtio_mmio::F_VERSION_1 == 0 {
        return Err(Error::NoVersion1);
    }
    transport.set_driver_features(virtio_mmio::F_VERSION_1);
    transport.add_status(virtio_mmio::STATUS_FEATURES_OK);
    if transport.status() & virtio_mmio::STATUS_FEATURES_OK == 0 {
        return Err(Error::FeaturesRejected);
    }
    let mut sizes = [0; QUEUE_COUNT];
    for (index, size) in (0..).zip(sizes.iter_mut()) {
        *size =
            choose_size(transport.queue_max(index)?).ok_or(Error::QueueUnavailable { index })?;
    }
    // SAFETY: passed on from the caller.
    let mut queues = unsafe { Queues::new(memory, sizes) };
    for (index, &size) in (0..).zip(sizes.iter()) {
        transport.enable_queue(index, size, queues.areas(index));
    }
    let guest_cid = transport.config_u64(CONFIG_GUEST_CID)?;
    // CIDs 0-2 are the hypervisor's and the host's; the upper half is reserved.
    if guest_cid <= 2 || guest_cid > u64::from(u32::MAX) {
        return Err(Error::BadGuestCid { cid: guest_cid });
    }
    transport.add_status(virtio_mmio::STATUS_DRIVER_OK);
    // Buffers go in after DRIVER_OK: a device may only be notified from then
    // on, and a vhost-user backend only starts watching the rings then.
    queues.fill()?;
    transport.notify(RX_QUEUE);
    transport.notify(EVENT_QUEUE);
    Ok((queues, guest_cid))
}

impl Link for VsockDevice {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        let deadline = Deadline::after(tsc_ticks(), self.wait_ticks);
        loop {
            if self.queues.try_send(header, payload)? {
                self.transport.notify(TX_QUEUE);
                return Ok(());
            }
            if deadline.passed(tsc_ticks()) {
                return Err(Error::Timeout {
                    waiting: "tx_buffer",
                });
            }
            core::hint::spin_loop();
        }
    }

    fn receive<R>(&mut self, handle: impl FnOnce(&Header, &[u8]) -> R) -> Result<Option<R>> {
        if let Some(event) = self.queues.take_event()? {
            self.transport.notify(EVENT_QUEUE);
            if event == EVENT_TRANSPORT_RESET {
                return Err(Error::TransportReset);
            }
        }
        let received = self.queues.receive(handle)?;
        if received.is_some() {
            // The buffer went back to the device: it may have been waiting.
            self.transport.notify(RX_QUEUE);
        }
        Ok(received)
    }

    fn now_ticks(&mut self) -> u64 {
        tsc_ticks()
    }

    fn max_payload(&self) -> usize {
        MAX_TX_PAYLOAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Op, TYPE_STREAM};
    use crate::queue::tests::FakeDevice;
    use crate::queue::DESC_F_WRITE;

    struct Fixture {
        memory: Box<DeviceMemory>,
        queues: Queues,
        rx: FakeDevice,
        tx: FakeDevice,
        event: FakeDevice,
    }

    fn fixture(size: u16) -> Fixture {
        let mut memory = Box::new(DeviceMemory::ZERO);
        let pointer: *mut DeviceMemory = &mut *memory;
        // SAFETY: the box lives in the fixture as long as the queues.
        let mut queues = unsafe { Queues::new(pointer, [size; QUEUE_COUNT]) };
        queues.fill().unwrap();
        // SAFETY: only addresses are taken.
        let [rx, tx, event] = [0, 1, 2].map(|i| unsafe { addr_of_mut!((*pointer).queues[i]) });
        Fixture {
            memory,
            queues,
            rx: FakeDevice::new(rx, size),
            tx: FakeDevice::new(tx, size),
            event: FakeDevice::new(event, size),
        }
    }

    fn header(op: Op, len: u32) -> Header {
        Header {
            src_cid: 2,
            dst_cid: 3,
            src_port: 5000,
            dst_port: 49152,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        }
    }

    /// The device writes `bytes` into the next rx buffer and returns it
    /// with used length `used_len`.
    fn deliver(f: &mut Fixture, bytes: &[u8], used_len: u32) -> u16 {
        let (id, addr, len, flags) = f.rx.pop_avail().expect("an rx buffer");
        assert_eq!((len, flags), (RX_BUFFER_BYTES as u32, DESC_F_WRITE));
        // SAFETY: addr is the rx buffer the driver lent, len bytes long.
        let buffer = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) };
        buffer[..bytes.len()].copy_from_slice(bytes);
        f.rx.push_used(u32::from(id), used_len);
        id
    }

    #[test]
    fn every_rx_and_event_buffer_is_lent_device_writable() {
        let mut f = fixture(8);
        let base = &*f.memory as *const DeviceMemory as u64;
        for id in 0..8 {
            let (got, addr, len, flags) = f.rx.pop_avail().unwrap();
            assert_eq!(
                (got, len, flags),
                (id, RX_BUFFER_BYTES as u32, DESC_F_WRITE)
            );
            assert!(addr > base);
            let (got, _, len, flags) = f.event.pop_avail().unwrap();
            assert_eq!((got, len, flags), (id, EVENT_BYTES as u32, DESC_F_WRITE));
        }
        assert_eq!(f.rx.pop_avail(), None);
    }

    #[test]
    fn a_packet_is_one_readable_descriptor_header_then_payload() {
        let mut f = fixture(4);
        let sent = header(Op::Rw, 6);
        assert_eq!(f.queues.try_send(&sent, b"tok-1\n"), Ok(true));
        let (_, addr, len, flags) = f.tx.pop_avail().unwrap();
        assert_eq!((len, flags), (50, 0));
        // SAFETY: the tx buffer the driver lent, len bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
        assert_eq!(Header::decode(bytes), Some(sent));
        assert_eq!(&bytes[HEADER_BYTES..], b"tok-1\n");
    }

    #[test]
    fn sending_waits_for_a_free_tx_buffer() {
        let mut f = fixture(2);
        let sent = header(Op::CreditUpdate, 0);
        assert_eq!(f.queues.try_send(&sent, &[]), Ok(true));
        assert_eq!(f.queues.try_send(&sent, &[]), Ok(true));
        assert_eq!(f.queues.try_send(&sent, &[]), Ok(false));
        let (id, ..) = f.tx.pop_avail().unwrap();
        f.tx.push_used(u32::from(id), 0);
        assert_eq!(f.queues.try_send(&sent, &[]), Ok(true));
        let big = [0; MAX_TX_PAYLOAD + 1];
        let mut too_big = header(Op::Rw, big.len() as u32);
        assert!(f.queues.try_send(&too_big, &big).is_err());
        too_big.len = 3;
        assert!(f.queues.try_send(&too_big, &big[..4]).is_err());
    }

    #[test]
    fn a_received_packet_is_handed_over_and_its_buffer_lent_again() {
        let mut f = fixture(4);
        assert_eq!(f.queues.receive(|_, _| ()), Ok(None));
        let mut bytes = header(Op::Rw, 5).encode().to_vec();
        bytes.extend_from_slice(b"hello");
        let id = deliver(&mut f, &bytes, bytes.len() as u32);
        let got = f.queues.receive(|h, payload| (*h, payload.to_vec()));
        assert_eq!(got, Ok(Some((header(Op::Rw, 5), b"hello".to_vec()))));
        // The four lent at the start went out; the one returned comes back.
        for _ in 0..3 {
            f.rx.pop_avail().unwrap();
        }
        assert_eq!(f.rx.pop_avail().map(|a| a.0), Some(id));
    }

    #[test]
    fn short_or_inconsistent_rx_is_a_bad_packet_and_the_buffer_comes_back() {
        let mut f = fixture(4);
        let bytes = header(Op::Rw, 5).encode();
        deliver(&mut f, &bytes, HEADER_BYTES as u32 - 1);
        assert_eq!(
            f.queues.receive(|_, _| ()),
            Err(Error::BadPacket { what: "rx_short" })
        );
        deliver(&mut f, &bytes, HEADER_BYTES as u32 + 4);
        assert_eq!(
            f.queues.receive(|_, _| ()),
            Err(Error::BadPacket { what: "rx_len" })
        );
        deliver(&mut f, &bytes, RX_BUFFER_BYTES as u32 + 1);
        assert_eq!(
            f.queues.receive(|_, _| ()),
            Err(Error::BadPacket { what: "used_len" })
        );
        // The two checked by receive() were lent again: 4 - 3 + 2 left.
        let mut available = 0;
        while f.rx.pop_avail().is_some() {
            available += 1;
        }
        assert_eq!(available, 3);
    }

    #[test]
    fn events_are_read_and_their_buffers_lent_again() {
        let mut f = fixture(2);
        assert_eq!(f.queues.take_event(), Ok(None));
        let (id, addr, ..) = f.event.pop_avail().unwrap();
        // SAFETY: the 4-byte event buffer the driver lent.
        unsafe { (addr as *mut [u8; 4]).write(EVENT_TRANSPORT_RESET.to_le_bytes()) };
        f.event.push_used(u32::from(id), 4);
        assert_eq!(f.queues.take_event(), Ok(Some(EVENT_TRANSPORT_RESET)));
        let (id, ..) = f.event.pop_avail().unwrap();
        f.event.push_used(u32::from(id), 2);
        assert_eq!(
            f.queues.take_event(),
            Err(Error::BadPacket { what: "event_len" })
        );
    }
}
