//! Length-prefixed frames: a little-endian `u32` body length, then the body.
//!
//! [`FrameDecoder`] takes bytes as they arrive from a stream, in any split, and
//! hands out whole bodies; it never allocates more than the limit for a frame,
//! however large the length a peer claims.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The largest body accepted or sent: 1 MiB.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Encodes one message as a frame (length prefix and body).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    frame = postcard::to_extend(message, frame).map_err(|e| Error::Garbage {
        reason: e.to_string(),
    })?;
    let len_bytes = frame.len() - FRAME_HEADER_BYTES;
    if len_bytes > MAX_FRAME_BYTES {
        return Err(Error::TooLargeToSend { len_bytes });
    }
    let len = u32::try_from(len_bytes).map_err(|_| Error::TooLargeToSend { len_bytes })?;
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// Decodes one body; bytes left over after the message are an error, since a
/// frame holds exactly one message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let (message, rest) = postcard::take_from_bytes(body).map_err(|e| Error::Garbage {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes {
            extra_bytes: rest.len(),
        });
    }
    Ok(message)
}

/// Splits a byte stream into frame bodies.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole body, if one has arrived. An oversized or empty length is
    /// an error at once: the stream cannot be resynchronised after it.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(header) = self.buf.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len_bytes = u32::from_le_bytes(header.try_into().expect("4-byte slice")) as usize;
        if len_bytes == 0 {
            return Err(Error::Empty);
        }
        if len_bytes > MAX_FRAME_BYTES {
            return Err(Error::Oversized {
                len_bytes: len_bytes as u64,
            });
        }
        let end = FRAME_HEADER_BYTES + len_bytes;
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_BYTES..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(body))
    }

    /// Called at end of stream: leftover bytes mean the peer stopped mid-frame.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let want_bytes = match self.buf.get(..FRAME_HEADER_BYTES) {
            Some(header) => {
                FRAME_HEADER_BYTES
                    + u32::from_le_bytes(header.try_into().expect("4-byte slice")) as usize
            }
            None => FRAME_HEADER_BYTES,
        };
        Err(Error::Truncated {
            have_bytes: self.buf.len(),
            want_bytes,
        })
    }

    /// Bytes received but not yet handed out.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{GuestMarks, GuestMessage};

    fn ready() -> GuestMessage {
        GuestMessage::Ready(GuestMarks {
            init_ns: 1,
            mounts_done_ns: 2,
            connected_ns: 3,
            ready_ns: 4,
            connect_attempts: 1,
            ..GuestMarks::default()
        })
    }

    #[test]
    fn frame_round_trips_in_one_push() {
        let frame = encode_frame(&ready()).unwrap();
        let mut dec = FrameDecoder::new();
        dec.push(&frame);
        let body = dec.next_body().unwrap().unwrap();
        assert_eq!(decode_body::<GuestMessage>(&body).unwrap(), ready());
        assert_eq!(dec.next_body().unwrap(), None);
        dec.finish().unwrap();
    }

    #[test]
    fn truncated_frame_is_reported_at_end_of_stream() {
        let frame = encode_frame(&ready()).unwrap();
        let mut dec = FrameDecoder::new();
        dec.push(&frame[..frame.len() - 1]);
        assert_eq!(dec.next_body().unwrap(), None);
        assert_eq!(
            dec.finish().unwrap_err(),
            Error::Truncated {
                have_bytes: frame.len() - 1,
                want_bytes: frame.len()
            }
        );
    }

    #[test]
    fn truncated_header_is_reported_at_end_of_stream() {
        let mut dec = FrameDecoder::new();
        dec.push(&[5, 0]);
        assert_eq!(
            dec.finish().unwrap_err(),
            Error::Truncated {
                have_bytes: 2,
                want_bytes: 4
            }
        );
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut dec = FrameDecoder::new();
        dec.push(&((MAX_FRAME_BYTES as u32) + 1).to_le_bytes());
        assert_eq!(
            dec.next_body().unwrap_err(),
            Error::Oversized {
                len_bytes: MAX_FRAME_BYTES as u64 + 1
            }
        );
    }

    #[test]
    fn frame_at_the_limit_is_accepted() {
        let mut dec = FrameDecoder::new();
        dec.push(&(MAX_FRAME_BYTES as u32).to_le_bytes());
        dec.push(&vec![0u8; MAX_FRAME_BYTES]);
        assert_eq!(dec.next_body().unwrap().unwrap().len(), MAX_FRAME_BYTES);
    }

    #[test]
    fn oversized_message_is_not_sent() {
        let big = GuestMessage::Failed {
            what: "x".repeat(MAX_FRAME_BYTES + 1),
        };
        assert!(matches!(
            encode_frame(&big),
            Err(Error::TooLargeToSend { .. })
        ));
    }

    #[test]
    fn empty_frame_is_refused() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 0]);
        assert_eq!(dec.next_body().unwrap_err(), Error::Empty);
    }

    #[test]
    fn garbage_body_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_body::<GuestMessage>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(Error::Garbage { .. })
        ));
        // Variant 2 (Failed) with a string length far past the body.
        assert!(matches!(
            decode_body::<GuestMessage>(&[2, 200, 1]),
            Err(Error::Garbage { .. })
        ));
    }

    #[test]
    fn trailing_bytes_in_a_body_are_refused() {
        let frame = encode_frame(&ready()).unwrap();
        let mut body = frame[FRAME_HEADER_BYTES..].to_vec();
        body.push(0);
        assert_eq!(
            decode_body::<GuestMessage>(&body).unwrap_err(),
            Error::TrailingBytes { extra_bytes: 1 }
        );
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_gives_the_same_frames(
            texts in proptest::collection::vec(".{0,40}", 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let messages: Vec<GuestMessage> =
                texts.iter().map(|t| GuestMessage::Failed { what: t.clone() }).collect();
            let stream: Vec<u8> =
                messages.iter().flat_map(|m| encode_frame(m).unwrap()).collect();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            let mut last = 0;
            for point in points.into_iter().chain([stream.len()]) {
                dec.push(&stream[last..point]);
                last = point;
                while let Some(body) = dec.next_body().unwrap() {
                    got.push(decode_body::<GuestMessage>(&body).unwrap());
                }
            }
            dec.finish().unwrap();
            prop_assert_eq!(got, messages);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            while let Ok(Some(body)) = dec.next_body() {
                let _ = decode_body::<GuestMessage>(&body);
                let _ = crate::decode_hello(&body);
            }
            let _ = dec.finish();
        }
    }
}
