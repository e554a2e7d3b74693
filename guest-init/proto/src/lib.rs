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
//!   [`GuestMessage::Ready`] the moment it considers itself booted (so the
//!   host's timestamp of its arrival is the boot's end). A systemd guest then
//!   sends what it gathered from systemd, [`GuestMessage::Systemd`], which
//!   `Ready` announces ([`GuestMarks::systemd_follows`]): gathering takes
//!   time that is not boot time. The host answers with [`HostMessage::Ack`]
//!   once it has the whole report; the guest waits for it (bounded) before
//!   powering off, so the report is known to have left the VM before the VM
//!   ends. A guest that fails sends [`GuestMessage::Failed`] instead.
//! - Benchmarks (version 4): a guest booted with `vmbench.bench=1` waits
//!   after its report for the host's orders instead of a bounded wait for
//!   `Ack`: [`HostMessage::RunBench`] runs one benchmark, answered by one
//!   [`GuestMessage::Bench`]; `Ack` still powers the guest off. The
//!   [`bench`] module's primer says what a result holds and how the agent
//!   marks the window the VMM attributes exits to.
//! - Versions: `Hello` is variant 0 of [`GuestMessage`] and its first field is
//!   [`PROTO_VERSION`]; those two facts never change, so a host can read the
//!   version of any guest and name both versions when they differ
//!   ([`decode_hello_version`]).
//!
//! postcard was chosen over bincode (unmaintained) for its documented, stable
//! wire format.

pub mod bench;
mod frame;

pub use bench::{
    micro_bench, BenchInfo, BenchOutcome, BenchRequest, BenchResult, Samples, MICRO_BENCHES,
};
pub use frame::{decode_body, encode_frame, FrameDecoder, FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. Bump on any change to a message.
pub const PROTO_VERSION: u32 = 4;

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

/// Boot-marker code the agent in the initramfs writes as it switches to the
/// root disk: the end of the initrd phase.
pub const MARKER_SWITCH_ROOT: u8 = 0x62;

/// Boot-marker code the agent writes when systemd starts it as a service.
pub const MARKER_SERVICE_START: u8 = 0x63;

/// Written to the boot-marker port before the two bytes (low, high) of a
/// benchmark window's id: the window starts. Not a boot mark, nor are the
/// id bytes that follow it.
pub const MARKER_WINDOW_START: u8 = 0xB0;

/// Written before the same two id bytes: the window ends.
pub const MARKER_WINDOW_END: u8 = 0xB1;

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
    /// The root disk was mounted (0: the guest has no root disk).
    pub root_mounted_ns: u64,
    /// The agent in the initramfs switched to the root disk: the initrd
    /// phase ended (0: no switch).
    pub switch_root_ns: u64,
    /// systemd started the agent as a service (0: not a systemd guest).
    pub service_start_ns: u64,
    /// A [`GuestMessage::Systemd`] report follows this `Ready`.
    pub systemd_follows: bool,
    /// The guest kernel's clocksource when it became ready
    /// (`/sys/devices/system/clocksource/clocksource0/current_clocksource`):
    /// every guest time above is on it. Empty if it could not be read.
    pub clocksource: String,
}

/// What a systemd guest's manager says about its boot, as `systemctl show`
/// gives it: CLOCK_MONOTONIC microseconds, 0 where systemd has no value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdTimestamps {
    /// Before the kernel: firmware and boot loader (EFI systems only), as
    /// offsets before the kernel started.
    pub firmware_us: u64,
    pub loader_us: u64,
    /// The kernel started (normally 0).
    pub kernel_us: u64,
    /// systemd started in an initrd.
    pub initrd_us: u64,
    /// systemd started on the real root.
    pub userspace_us: u64,
    /// The boot finished (the default target and its jobs are done).
    pub finish_us: u64,
    pub security_start_us: u64,
    pub security_finish_us: u64,
    pub generators_start_us: u64,
    pub generators_finish_us: u64,
    pub units_load_start_us: u64,
    pub units_load_finish_us: u64,
}

/// One unit's activation, CLOCK_MONOTONIC microseconds (0: did not happen);
/// with `after` these rebuild `systemd-analyze blame` and `critical-chain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTimes {
    pub id: String,
    /// Left the inactive state (began activating): InactiveExitTimestamp.
    pub activating_us: u64,
    /// Became active: ActiveEnterTimestamp.
    pub active_us: u64,
    /// Began deactivating: ActiveExitTimestamp.
    pub deactivating_us: u64,
    /// Became inactive again: InactiveEnterTimestamp.
    pub inactive_us: u64,
    /// The units it is ordered after.
    pub after: Vec<String>,
}

/// A systemd guest's own account of its boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdReport {
    /// systemd's version string (`systemctl show -p Version`).
    pub version: String,
    pub timestamps: SystemdTimestamps,
    /// Every loaded unit.
    pub units: Vec<UnitTimes>,
    /// The unit the boot was for (`systemctl get-default`).
    pub default_target: String,
    /// `systemctl is-system-running` once the boot was over: `running`, or
    /// `degraded` when units failed.
    pub system_state: String,
    /// The units that failed (`systemctl list-units --failed`).
    pub failed_units: Vec<String>,
    /// `systemd-analyze time` as it printed in the guest, to check the
    /// host's reading of the timestamps against.
    pub analyze_time: String,
    /// What could not be gathered, one line each.
    pub problems: Vec<String>,
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
    /// A systemd guest's own account, after a `Ready` that announced it.
    Systemd(SystemdReport),
    /// The answer to a [`HostMessage::RunBench`].
    Bench(BenchResult),
}

/// Host to guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMessage {
    /// The host has recorded the guest's report; the guest may power off.
    Ack,
    /// Run one benchmark and answer with [`GuestMessage::Bench`] (only a
    /// guest booted with `vmbench.bench=1` waits for this).
    RunBench(BenchRequest),
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
    fn systemd_report_round_trips() {
        let report = SystemdReport {
            version: "252.38-1~deb12u1".into(),
            timestamps: SystemdTimestamps {
                userspace_us: 1_200_000,
                finish_us: 9_800_000,
                ..SystemdTimestamps::default()
            },
            units: vec![UnitTimes {
                id: "systemd-journald.service".into(),
                activating_us: 1_500_000,
                active_us: 1_900_000,
                after: vec!["systemd-journald.socket".into()],
                ..UnitTimes::default()
            }],
            default_target: "multi-user.target".into(),
            system_state: "running".into(),
            failed_units: vec![],
            analyze_time: "Startup finished in 1.200s (kernel) + 8.600s (userspace) = 9.800s"
                .into(),
            problems: vec![],
        };
        let frame = encode_frame(&GuestMessage::Systemd(report.clone())).unwrap();
        assert_eq!(
            decode_body::<GuestMessage>(body_of(&frame)).unwrap(),
            GuestMessage::Systemd(report)
        );
    }

    #[test]
    fn host_messages_round_trip() {
        let run = HostMessage::RunBench(BenchRequest {
            name: "syscall".into(),
            rough: true,
            max_samples: 200,
            budget_ms: 5_000,
            window: 0x1234,
        });
        for message in [HostMessage::Ack, run] {
            let frame = encode_frame(&message).unwrap();
            assert_eq!(
                decode_body::<HostMessage>(body_of(&frame)).unwrap(),
                message
            );
        }
    }

    fn done() -> BenchResult {
        BenchResult {
            name: "blk_read_bw".into(),
            outcome: BenchOutcome::Done(Samples {
                unit: "ns".into(),
                clock: "CLOCK_MONOTONIC_RAW/tsc".into(),
                iterations: 64,
                overhead_milli: 1_500,
                calibration_runs: 8,
                values: vec![812_000_000, 790_000_123, u64::MAX, 0],
                stop: "peaks".into(),
                window: 7,
                ops_in_window: 256,
                extra: vec![("block_bytes".into(), 1 << 20)],
            }),
        }
    }

    #[test]
    fn bench_results_round_trip() {
        let unavailable = BenchResult {
            name: "hypercall".into(),
            outcome: BenchOutcome::Unavailable {
                why: "VMCALL raises #UD".into(),
            },
        };
        let failed = BenchResult {
            name: "fork".into(),
            outcome: BenchOutcome::Failed {
                why: "killed by SIGSEGV".into(),
            },
        };
        for result in [done(), unavailable, failed] {
            let frame = encode_frame(&GuestMessage::Bench(result.clone())).unwrap();
            assert_eq!(
                decode_body::<GuestMessage>(body_of(&frame)).unwrap(),
                GuestMessage::Bench(result)
            );
        }
    }

    #[test]
    fn variants_keep_their_wire_numbers() {
        // Older variants keep their numbers: a version 3 Ready or Ack still
        // reads the same; the new ones come last.
        assert_eq!(postcard::to_stdvec(&HostMessage::Ack).unwrap(), [0]);
        let run = HostMessage::RunBench(BenchRequest {
            name: String::new(),
            rough: false,
            max_samples: 0,
            budget_ms: 0,
            window: 0,
        });
        assert_eq!(postcard::to_stdvec(&run).unwrap()[0], 1);
        assert_eq!(
            postcard::to_stdvec(&GuestMessage::Bench(done())).unwrap()[0],
            4
        );
    }

    #[test]
    fn the_largest_result_fits_in_a_frame() {
        let mut result = done();
        if let BenchOutcome::Done(samples) = &mut result.outcome {
            samples.values = vec![u64::MAX; bench::MAX_SAMPLES_LIMIT as usize];
        }
        encode_frame(&GuestMessage::Bench(result)).unwrap();
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::body_of;

        fn outcome() -> impl Strategy<Value = BenchOutcome> {
            let samples = (
                ".{0,8}",
                ".{0,30}",
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(any::<u64>(), 0..100),
                ".{0,12}",
                any::<u16>(),
                any::<u64>(),
                proptest::collection::vec((".{0,12}", any::<u64>()), 0..4),
            )
                .prop_map(
                    |(
                        unit,
                        clock,
                        iterations,
                        overhead_milli,
                        calibration_runs,
                        values,
                        stop,
                        window,
                        ops_in_window,
                        extra,
                    )| {
                        BenchOutcome::Done(Samples {
                            unit,
                            clock,
                            iterations,
                            overhead_milli,
                            calibration_runs,
                            values,
                            stop,
                            window,
                            ops_in_window,
                            extra,
                        })
                    },
                );
            prop_oneof![
                samples,
                ".{0,40}".prop_map(|why| BenchOutcome::Unavailable { why }),
                ".{0,40}".prop_map(|why| BenchOutcome::Failed { why }),
            ]
        }

        proptest! {
            #[test]
            fn any_bench_result_round_trips(name in ".{0,20}", outcome in outcome()) {
                let message = GuestMessage::Bench(BenchResult { name, outcome });
                let frame = encode_frame(&message).unwrap();
                prop_assert_eq!(decode_body::<GuestMessage>(body_of(&frame)).unwrap(), message);
            }

            #[test]
            fn any_bench_request_round_trips(
                name in ".{0,20}",
                rough in any::<bool>(),
                max_samples in any::<u32>(),
                budget_ms in any::<u32>(),
                window in any::<u16>(),
            ) {
                let message = HostMessage::RunBench(BenchRequest { name, rough, max_samples, budget_ms, window });
                let frame = encode_frame(&message).unwrap();
                prop_assert_eq!(decode_body::<HostMessage>(body_of(&frame)).unwrap(), message);
            }

            #[test]
            fn arbitrary_host_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = decode_body::<HostMessage>(&bytes);
            }
        }
    }
}
