//! The vmbench wire protocol: what the guest agent (`vmbench-init`) and the host
//! (`vmbench`) say to each other over virtio-vsock.
//!
//! # Primer
//!
//! - Transport: one AF_VSOCK stream per VM. The guest connects to the host
//!   (CID 2) on the port named by `vmbench.port=` on its kernel command line.
//! - Framing: a little-endian `u32` body length, then the body: one
//!   [postcard]-encoded message. A body longer than [`MAX_FRAME_BYTES`], or an
//!   empty one, is refused: the guest is untrusted input.
//! - Conversation: the guest sends [`GuestMessage::Hello`] first, then
//!   [`GuestMessage::Ready`] once it considers itself booted. The host answers
//!   `Ready` with [`HostMessage::Ack`]; the guest waits for it (bounded) before
//!   powering off, so the report is known to have left the VM before the VM ends.
//!   A guest that fails sends [`GuestMessage::Failed`] instead of `Ready`.
//! - Versions: `Hello` is variant 0 of [`GuestMessage`] and its first field is
//!   [`PROTO_VERSION`]; those two facts never change, so a host can read the
//!   version of any guest and name both versions when they differ
//!   ([`decode_hello_version`]).
//!
//! postcard was chosen over bincode (unmaintained) for its documented, stable
//! wire format.

mod frame;

pub use frame::{decode_body, encode_frame, FrameDecoder, FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. Bump on any change to a message.
pub const PROTO_VERSION: u32 = 1;

/// The vsock port the guest connects to unless `vmbench.port=` says otherwise.
pub const DEFAULT_PORT: u32 = 1234;

/// The host's vsock context id (VMADDR_CID_HOST).
pub const HOST_CID: u32 = 2;

/// The x86 I/O port guest-init writes boot-marker codes to (Cloud Hypervisor's
/// debug port).
pub const BOOT_MARKER_PORT: u16 = 0x80;

/// Boot-marker code guest-init writes as its first act: userspace has started.
/// Codes 0x40–0x5f are the kernel's, 0x60–0x7f userspace's (Cloud Hypervisor's ranges).
pub const MARKER_USERSPACE_START: u8 = 0x60;

/// Boot-marker code guest-init writes just before it reports `Ready`.
pub const MARKER_USERSPACE_READY: u8 = 0x61;

/// The first message of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field: see [`decode_hello_version`].
    pub proto_version: u32,
    /// The agent's crate version.
    pub agent_version: String,
    /// The VM's id, from `vmbench.id=`.
    pub vm_id: u32,
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// Online CPUs in the guest.
    pub cpus: u32,
    /// MemTotal from the guest's /proc/meminfo.
    pub mem_total_kib: u64,
    /// CLOCK_BOOTTIME when PID 1 started: the kernel's boot time as the guest saw it.
    pub boottime_at_init_ns: u64,
}

/// Points in the agent's own life, each on the guest's CLOCK_BOOTTIME.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMarks {
    /// PID 1 entered.
    pub init_ns: u64,
    /// proc, sysfs, devtmpfs and the tmpfs mounts are in place.
    pub mounts_done_ns: u64,
    /// The vsock connection to the host is up.
    pub connected_ns: u64,
    /// The agent considers the guest booted (just before sending `Ready`).
    pub ready_ns: u64,
    /// Connection attempts it took to reach the host.
    pub connect_attempts: u32,
}

/// Guest to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// Variant 0, forever: see the module primer.
    Hello(Hello),
    /// The guest has booted.
    Ready(GuestMarks),
    /// The agent hit an error it could not get past; it powers off next.
    Failed { what: String },
}

/// Host to guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMessage {
    /// The host has recorded the guest's report; the guest may power off.
    Ack,
}

/// What can go wrong reading or writing the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("Frame of {len_bytes} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    Oversized { len_bytes: u64 },
    #[error("Empty frame (length 0)")]
    Empty,
    #[error("Stream ended inside a frame: {have_bytes} of {want_bytes} bytes received")]
    Truncated {
        have_bytes: usize,
        want_bytes: usize,
    },
    #[error("Frame body is not a valid message: {reason}")]
    Garbage { reason: String },
    #[error("Frame body has {extra_bytes} bytes after the message")]
    TrailingBytes { extra_bytes: usize },
    #[error("Guest speaks protocol version {theirs}, this host speaks version {ours}")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("Message too large to frame: {len_bytes} bytes")]
    TooLargeToSend { len_bytes: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Reads the protocol version of a `Hello` body without decoding the rest, so a
/// body from a different version still yields its version. `None` when the body
/// is not a `Hello` at all.
pub fn decode_hello_version(body: &[u8]) -> Option<u32> {
    // postcard encodes the enum discriminant and a u32 as varints, so a
    // `(u32, u32)` prefix is (variant, first field of the variant).
    let ((variant, version), _) = postcard::take_from_bytes::<(u32, u32)>(body).ok()?;
    (variant == 0).then_some(version)
}

/// Decodes the first message of a connection: a `Hello` of our version.
pub fn decode_hello(body: &[u8]) -> Result<Hello> {
    match decode_hello_version(body) {
        Some(PROTO_VERSION) => {}
        Some(theirs) => {
            return Err(Error::VersionMismatch {
                ours: PROTO_VERSION,
                theirs,
            })
        }
        None => {
            return Err(Error::Garbage {
                reason: "first message is not Hello".to_string(),
            })
        }
    }
    match decode_body::<GuestMessage>(body)? {
        GuestMessage::Hello(hello) => Ok(hello),
        _ => unreachable!("variant 0 is Hello"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u32) -> Hello {
        Hello {
            proto_version: version,
            agent_version: "0.1.0".into(),
            vm_id: 3,
            kernel_release: "6.1.0".into(),
            cpus: 1,
            mem_total_kib: 250_000,
            boottime_at_init_ns: 812_000_000,
        }
    }

    fn body_of(frame: &[u8]) -> &[u8] {
        &frame[FRAME_HEADER_BYTES..]
    }

    #[test]
    fn hello_round_trips() {
        let frame = encode_frame(&GuestMessage::Hello(hello(PROTO_VERSION))).unwrap();
        assert_eq!(decode_hello(body_of(&frame)).unwrap(), hello(PROTO_VERSION));
    }

    #[test]
    fn unknown_version_names_both_versions() {
        let frame = encode_frame(&GuestMessage::Hello(hello(PROTO_VERSION + 6))).unwrap();
        let err = decode_hello(body_of(&frame)).unwrap_err();
        assert_eq!(
            err,
            Error::VersionMismatch {
                ours: PROTO_VERSION,
                theirs: PROTO_VERSION + 6
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {}", PROTO_VERSION + 6)),
            "{text}"
        );
        assert!(text.contains(&format!("version {PROTO_VERSION}")), "{text}");
    }

    #[test]
    fn version_of_a_future_hello_with_other_fields_is_still_read() {
        // A later protocol may change Hello's other fields; only the prefix is fixed.
        #[derive(Serialize)]
        enum FutureMessage {
            Hello {
                proto_version: u32,
                something_new: [u8; 3],
            },
        }
        let body = postcard::to_stdvec(&FutureMessage::Hello {
            proto_version: 9,
            something_new: [1, 2, 3],
        })
        .unwrap();
        assert_eq!(decode_hello_version(&body), Some(9));
        assert!(matches!(
            decode_hello(&body),
            Err(Error::VersionMismatch { theirs: 9, .. })
        ));
    }

    #[test]
    fn first_message_other_than_hello_is_garbage() {
        let frame = encode_frame(&GuestMessage::Ready(GuestMarks::default())).unwrap();
        assert!(matches!(
            decode_hello(body_of(&frame)),
            Err(Error::Garbage { .. })
        ));
    }

    #[test]
    fn host_messages_round_trip() {
        let frame = encode_frame(&HostMessage::Ack).unwrap();
        assert_eq!(
            decode_body::<HostMessage>(body_of(&frame)).unwrap(),
            HostMessage::Ack
        );
    }
}
