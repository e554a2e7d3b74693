//! The boot-marker port (0x80, Cloud Hypervisor's debug port): each byte the
//! guest writes is a code, timestamped at the VM exit on the VMM's clock
//! ([`crate::clock`]). Codes 0x40–0x5f are the kernel's, 0x60–0x7f
//! userspace's (Cloud Hypervisor's ranges, [`is_mark`]); anything else (a
//! kernel's io_delay) is counted, not kept.

use std::io::Write;

/// Whether a byte written to the port is a boot mark (0x40–0x7f) rather
/// than noise such as a kernel's io_delay. Whoever reads the marks from the
/// port's stream (the orchestrator's collector) filters with this too.
pub fn is_mark(code: u8) -> bool {
    (0x40..=0x7f).contains(&code)
}

/// The marks of one VM, and where they are forwarded as they happen.
#[derive(Default)]
pub struct BootMarker {
    marks: Vec<(u8, u64)>,
    other_writes: u64,
    /// Receives each kept code as one byte (the same stream QEMU's debugcon
    /// gives the collector).
    sink: Option<Box<dyn Write + Send>>,
}

impl BootMarker {
    pub fn with_sink(sink: Box<dyn Write + Send>) -> Self {
        BootMarker {
            sink: Some(sink),
            ..Default::default()
        }
    }

    pub fn write(&mut self, code: u8, now_ns: u64) {
        if !is_mark(code) {
            self.other_writes += 1;
            return;
        }
        self.marks.push((code, now_ns));
        if let Some(sink) = self.sink.as_mut() {
            // The collector may have gone; the marks are still kept here.
            if sink.write_all(&[code]).is_err() {
                self.sink = None;
            }
        }
    }

    /// (code, host CLOCK_MONOTONIC ns) in the order written.
    pub fn marks(&self) -> &[(u8, u64)] {
        &self.marks
    }

    pub fn other_writes(&self) -> u64 {
        self.other_writes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn marks_are_cloud_hypervisors_kernel_and_userspace_ranges() {
        let marks: Vec<u8> = (0..=u8::MAX).filter(|&c| is_mark(c)).collect();
        assert_eq!(marks, (0x40..=0x7f).collect::<Vec<u8>>());
    }

    #[test]
    fn codes_in_range_are_kept_and_forwarded() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut m = BootMarker::with_sink(Box::new(Shared(out.clone())));
        m.write(0xff, 1);
        m.write(0x60, 2);
        m.write(0x40, 3);
        m.write(0x80, 4);
        assert_eq!(m.marks(), &[(0x60, 2), (0x40, 3)]);
        assert_eq!(m.other_writes(), 2);
        assert_eq!(out.lock().unwrap().as_slice(), &[0x60, 0x40]);
    }
}
