//! The wire protocol's frame decoder and message decoding, as the host runs
//! them on what a guest sends: the stream arrives in chunks of any size.
//! Input: a byte choosing the chunk size, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench_proto::{
    decode_body, decode_hello, decode_hello_version, encode_frame, FrameDecoder, GuestMessage,
    HostMessage, SystemdReport, FRAME_HEADER_BYTES, MAX_FRAME_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    for piece in stream.chunks(usize::from(chunk % 32) + 1) {
        decoder.push(piece);
        loop {
            match decoder.next_body() {
                Ok(Some(body)) => check_body(&body),
                Ok(None) => break,
                // The stream cannot be resynchronised: the connection ends.
                Err(_) => return,
            }
        }
        assert!(decoder.pending_bytes() < FRAME_HEADER_BYTES + MAX_FRAME_BYTES);
    }
    let _ = decoder.finish();
});

fn check_body(body: &[u8]) {
    assert!(!body.is_empty() && body.len() <= MAX_FRAME_BYTES);
    let _ = decode_hello_version(body);
    let _ = decode_hello(body);
    let _ = decode_body::<HostMessage>(body);
    let _ = decode_body::<SystemdReport>(body);
    if let Ok(message) = decode_body::<GuestMessage>(body) {
        // What decodes, encodes, and decodes to the same message.
        let frame = encode_frame(&message).expect("a decoded message encodes");
        let again: GuestMessage =
            decode_body(&frame[FRAME_HEADER_BYTES..]).expect("an encoded message decodes");
        assert_eq!(again, message);
    }
}
