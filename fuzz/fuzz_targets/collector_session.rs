//! The orchestrator's collector session: one vsock connection's protocol
//! state, fed what a guest sends in chunks of any size. Input: a byte
//! choosing the chunk size, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench::watch::collector::Session;
use vmbench_proto::GuestMessage;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut session = Session::new();
    let mut count = 0usize;
    for piece in stream.chunks(usize::from(chunk % 32) + 1) {
        match session.feed(piece) {
            Ok(messages) => {
                for message in messages {
                    // Hello first, and only first.
                    let is_hello = matches!(message, GuestMessage::Hello(_));
                    assert_eq!(is_hello, count == 0, "Hello at message {count}");
                    count += 1;
                }
            }
            // A protocol error: the VM is `protocol_error`, the connection done.
            Err(_) => return,
        }
    }
    let _ = session.end();
});
