//! The collector: reads each guest's reports as they arrive and judges them.
//!
//! [`Session`] is one vsock connection's protocol state, with no I/O: bytes in,
//! messages out, or the protocol error that makes the VM `protocol_error`. The
//! guest is untrusted, so every way it can misbehave (garbage, an oversized or
//! truncated frame, a wrong version, a message before `Hello`, a second `Hello`
//! or `Ready`, a benchmark result the host did not ask for) is an error for
//! that VM only.

use std::collections::VecDeque;

use vmbench_proto::{decode_body, decode_hello, FrameDecoder, GuestMessage};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("Guest sent an invalid frame: {0}")]
    Frame(#[from] vmbench_proto::Error),
    #[error("Guest sent {what} before Hello")]
    BeforeHello { what: &'static str },
    #[error("Guest sent a second Hello")]
    SecondHello,
    #[error("Guest sent a second Ready")]
    SecondReady,
    #[error("Guest sent a result for benchmark {name:?}, which the host did not ask for{}",
        .asked.as_ref().map(|a| format!(" (it asked for {a:?})")).unwrap_or_default())]
    UnaskedBench { name: String, asked: Option<String> },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One connection's protocol state.
#[derive(Debug, Default)]
pub struct Session {
    decoder: FrameDecoder,
    said_hello: bool,
    said_ready: bool,
    /// Benchmarks asked for and not yet answered, oldest first: the guest
    /// answers them in order.
    asked: VecDeque<String>,
}

fn name(message: &GuestMessage) -> &'static str {
    match message {
        GuestMessage::Hello(_) => "Hello",
        GuestMessage::Ready(_) => "Ready",
        GuestMessage::Failed { .. } => "Failed",
        GuestMessage::Systemd(_) => "Systemd",
        GuestMessage::Bench(_) => "Bench",
    }
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// The host has sent `RunBench` for `name`: one `Bench` of that name may
    /// come back, after those asked for before it.
    pub fn asked_for_bench(&mut self, name: &str) {
        self.asked.push_back(name.to_string());
    }

    /// Takes bytes from the connection; returns the whole messages they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<GuestMessage>> {
        self.decoder.push(bytes);
        let mut messages = Vec::new();
        while let Some(body) = self.decoder.next_body()? {
            let message = if self.said_hello {
                let message: GuestMessage = decode_body(&body)?;
                match message {
                    GuestMessage::Hello(_) => return Err(Error::SecondHello),
                    GuestMessage::Ready(_) if self.said_ready => return Err(Error::SecondReady),
                    GuestMessage::Ready(_) => self.said_ready = true,
                    GuestMessage::Bench(ref result) => {
                        if self.asked.front() != Some(&result.name) {
                            return Err(Error::UnaskedBench {
                                name: result.name.clone(),
                                asked: self.asked.front().cloned(),
                            });
                        }
                        self.asked.pop_front();
                    }
                    _ => {}
                }
                message
            } else {
                match decode_hello(&body) {
                    Ok(hello) => GuestMessage::Hello(hello),
                    // Name what came instead of Hello when it is a valid message.
                    Err(vmbench_proto::Error::Garbage { .. }) => match decode_body(&body) {
                        Ok(other) => return Err(Error::BeforeHello { what: name(&other) }),
                        Err(e) => return Err(e.into()),
                    },
                    Err(e) => return Err(e.into()),
                }
            };
            self.said_hello = true;
            messages.push(message);
        }
        Ok(messages)
    }

    /// The connection closed: bytes left over mean a frame was cut short.
    pub fn end(&self) -> Result<()> {
        Ok(self.decoder.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use vmbench_proto::{
        encode_frame, BenchOutcome, BenchResult, GuestMarks, Hello, PROTO_VERSION,
    };

    use super::*;

    fn hello(version: u32) -> GuestMessage {
        GuestMessage::Hello(Hello {
            proto_version: version,
            agent_version: "0.1.0".into(),
            vm_id: 0,
            kernel_release: "6.1".into(),
            cpus: 1,
            mem_total_kib: 1,
            boottime_at_init_ns: 5,
        })
    }

    fn ready() -> GuestMessage {
        GuestMessage::Ready(GuestMarks::default())
    }

    #[test]
    fn hello_then_ready_byte_by_byte() {
        let stream: Vec<u8> = [hello(PROTO_VERSION), ready()]
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect();
        let mut session = Session::new();
        let mut got = Vec::new();
        for byte in stream {
            got.extend(session.feed(&[byte]).unwrap());
        }
        assert_eq!(got, vec![hello(PROTO_VERSION), ready()]);
        session.end().unwrap();
    }

    #[test]
    fn garbage_is_a_frame_error() {
        let mut session = Session::new();
        let err = session
            .feed(b"\x05\x00\x00\x00\xff\xff\xff\xff\xff")
            .unwrap_err();
        assert!(
            matches!(err, Error::Frame(vmbench_proto::Error::Garbage { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("Guest sent an invalid frame"),
            "{err}"
        );
    }

    #[test]
    fn text_instead_of_frames_is_refused_by_size() {
        // "GET / HTTP/1.1" read as a length is far above the 1 MiB limit.
        let err = Session::new().feed(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert!(
            matches!(err, Error::Frame(vmbench_proto::Error::Oversized { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_version_is_named() {
        let err = Session::new()
            .feed(&encode_frame(&hello(PROTO_VERSION + 1)).unwrap())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("protocol version {}", PROTO_VERSION + 1)),
            "{err}"
        );
    }

    #[test]
    fn ready_before_hello_is_refused() {
        let err = Session::new()
            .feed(&encode_frame(&ready()).unwrap())
            .unwrap_err();
        assert_eq!(err, Error::BeforeHello { what: "Ready" });
    }

    #[test]
    fn second_hello_is_refused() {
        let mut session = Session::new();
        session
            .feed(&encode_frame(&hello(PROTO_VERSION)).unwrap())
            .unwrap();
        let err = session
            .feed(&encode_frame(&hello(PROTO_VERSION)).unwrap())
            .unwrap_err();
        assert_eq!(err, Error::SecondHello);
    }

    #[test]
    fn second_ready_is_refused() {
        let mut session = Session::new();
        let stream: Vec<u8> = [hello(PROTO_VERSION), ready()]
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect();
        assert_eq!(session.feed(&stream).unwrap().len(), 2);
        let err = session.feed(&encode_frame(&ready()).unwrap()).unwrap_err();
        assert_eq!(err, Error::SecondReady);
    }

    fn bench(name: &str) -> GuestMessage {
        GuestMessage::Bench(BenchResult {
            name: name.into(),
            outcome: BenchOutcome::Unavailable { why: "test".into() },
        })
    }

    fn hello_ready() -> Vec<u8> {
        [hello(PROTO_VERSION), ready()]
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect()
    }

    #[test]
    fn a_bench_result_nobody_asked_for_is_refused() {
        let mut session = Session::new();
        session.feed(&hello_ready()).unwrap();
        let err = session
            .feed(&encode_frame(&bench("syscall")).unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            Error::UnaskedBench {
                name: "syscall".into(),
                asked: None
            }
        );
        assert!(err.to_string().contains("did not ask for"), "{err}");
    }

    #[test]
    fn bench_results_come_back_in_the_order_asked() {
        let mut session = Session::new();
        session.feed(&hello_ready()).unwrap();
        session.asked_for_bench("fork");
        session.asked_for_bench("exec");
        let err = session.feed(&encode_frame(&bench("exec")).unwrap());
        assert!(
            matches!(err, Err(Error::UnaskedBench { ref asked, .. }) if asked.as_deref() == Some("fork")),
            "{err:?}"
        );
        let mut session = Session::new();
        session.feed(&hello_ready()).unwrap();
        session.asked_for_bench("fork");
        session.asked_for_bench("exec");
        let both: Vec<u8> = [bench("fork"), bench("exec")]
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect();
        assert_eq!(
            session.feed(&both).unwrap(),
            vec![bench("fork"), bench("exec")]
        );
        // Each request gets one answer.
        let err = session
            .feed(&encode_frame(&bench("exec")).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::UnaskedBench { .. }), "{err:?}");
    }

    proptest::proptest! {
        /// Whatever a guest sends, the session answers with messages or an error.
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8)
        ) {
            let mut session = Session::new();
            for chunk in &chunks {
                if session.feed(chunk).is_err() {
                    break;
                }
            }
            let _ = session.end();
        }

        /// A valid Hello followed by arbitrary bytes never panics either.
        #[test]
        fn valid_start_then_arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut session = Session::new();
            session.feed(&encode_frame(&hello(PROTO_VERSION)).unwrap()).unwrap();
            let _ = session.feed(&tail);
            let _ = session.end();
        }
    }

    #[test]
    fn connection_closed_mid_frame_is_truncation() {
        let frame = encode_frame(&hello(PROTO_VERSION)).unwrap();
        let mut session = Session::new();
        assert!(session.feed(&frame[..frame.len() - 2]).unwrap().is_empty());
        assert!(matches!(
            session.end(),
            Err(Error::Frame(vmbench_proto::Error::Truncated { .. }))
        ));
    }
}
