//! The report on the serial console: one ASCII line per event, each
//! starting with [`PREFIX`], fields `key=value` separated by one space
//! (the host parses them strictly, ignoring keys it does not know):
//!
//! ```text
//! vmbench-vmexit: hello version=1 cpus=2 vendor=GenuineIntel tsc_khz=2593906 tsc_khz_from=pit hypervisor=KVMKVMKVM apic=x2apic
//! vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=64 overhead_milli=2500 calibration_runs=8 stop=peaks window=0 ops_in_window=1280 values=70125,70250,...
//! vmbench-vmexit: bench name=vmcall status=unavailable why=VMCALL%20raised%20#UD...
//! vmbench-vmexit: bench name=wbinvd status=failed why=...
//! vmbench-vmexit: done
//! ```
//!
//! `error why=...` instead of `done` when the guest cannot run the suite at
//! all (a bad command line). Values percent-encode `%`, space, control bytes
//! and bytes past ASCII ([`Encoded`]); a line stays under 64 KiB (at most
//! 2000 values of at most 20 digits).

use core::fmt;

/// Every line of the report starts with this.
pub const PREFIX: &str = "vmbench-vmexit: ";

/// Text as a field value: `%`, space, control bytes and non-ASCII bytes
/// as `%XX`.
pub struct Encoded<'a>(pub &'a [u8]);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if b == b'%' || b == b' ' || !b.is_ascii_graphic() {
                write!(f, "%{b:02X}")?;
            } else {
                write!(f, "{}", char::from(b))?;
            }
        }
        Ok(())
    }
}

/// The first line: who runs the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// vCPUs running the suite: 1, or 2 once vCPU 1 answered INIT-SIPI-SIPI.
    pub cpus: u32,
    /// CPUID leaf 0's vendor string.
    pub vendor: &'a [u8],
    /// The TSC's rate, 0 when nothing told it.
    pub tsc_khz: u64,
    /// Where the rate came from: `cpuid`, `tsc_early_khz`, `pit` or `none`.
    pub tsc_khz_from: &'a str,
    /// CPUID leaf 0x40000000's signature, or `none`.
    pub hypervisor: &'a [u8],
    /// `x2apic`, `xapic` or `none`.
    pub apic: &'a str,
}

impl fmt::Display for Hello<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hello version={} cpus={} vendor={} tsc_khz={} tsc_khz_from={} hypervisor={} apic={}",
            crate::REPORT_VERSION,
            self.cpus,
            Encoded(self.vendor),
            self.tsc_khz,
            Encoded(self.tsc_khz_from.as_bytes()),
            Encoded(self.hypervisor),
            Encoded(self.apic.as_bytes())
        )
    }
}

/// A benchmark's timing: what `status=ok` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing<'a> {
    pub iterations: u64,
    pub overhead_milli: u64,
    pub calibration_runs: u32,
    /// `peaks`, `max_samples` or `budget`.
    pub stop: &'a str,
    pub window: u16,
    pub ops_in_window: u64,
    /// Per-sample cost in milli-cycles per operation.
    pub values: &'a [u64],
}

/// How a benchmark ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    Ok(Timing<'a>),
    /// This CPU or backend cannot run it, and why.
    Unavailable(&'a str),
    /// It started and went wrong, and how.
    Failed(&'a str),
}

/// One benchmark's line.
pub struct Bench<'a> {
    pub name: &'a str,
    pub outcome: Outcome<'a>,
}

impl fmt::Display for Bench<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bench name={}", Encoded(self.name.as_bytes()))?;
        match &self.outcome {
            Outcome::Ok(t) => {
                write!(
                    f,
                    " status=ok unit=cycles iterations={} overhead_milli={} calibration_runs={} \
                     stop={} window={} ops_in_window={} values=",
                    t.iterations,
                    t.overhead_milli,
                    t.calibration_runs,
                    Encoded(t.stop.as_bytes()),
                    t.window,
                    t.ops_in_window
                )?;
                for (i, v) in t.values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
            Outcome::Unavailable(why) => {
                write!(f, " status=unavailable why={}", Encoded(why.as_bytes()))
            }
            Outcome::Failed(why) => write!(f, " status=failed why={}", Encoded(why.as_bytes())),
        }
    }
}

/// Percent-encodes (as [`Encoded`]) whatever is written through it.
pub struct Encoder<W>(pub W);

impl<W: fmt::Write> fmt::Write for Encoder<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write!(self.0, "{}", Encoded(s.as_bytes()))
    }
}

/// The line that ends a run that cannot go on, and why. It formats
/// without allocating: it also reports a heap that ran out.
pub struct Error<'a>(pub fmt::Arguments<'a>);

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("error why=")?;
        fmt::write(&mut Encoder(f), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_fields_one_word() {
        assert_eq!(
            Encoded(b"100% of 2\tcpus\n\x7f\xff=,:").to_string(),
            "100%25%20of%202%09cpus%0A%7F%FF=,:"
        );
        assert_eq!(Encoded(b"").to_string(), "");
    }

    #[test]
    fn hello() {
        let hello = Hello {
            cpus: 2,
            vendor: b"GenuineIntel",
            tsc_khz: 2_593_906,
            tsc_khz_from: "pit",
            hypervisor: b"KVMKVMKVM",
            apic: "x2apic",
        };
        assert_eq!(
            hello.to_string(),
            "hello version=1 cpus=2 vendor=GenuineIntel tsc_khz=2593906 tsc_khz_from=pit \
             hypervisor=KVMKVMKVM apic=x2apic"
        );
    }

    #[test]
    fn an_ok_line_carries_its_calibration_and_every_value() {
        let line = Bench {
            name: "cpuid",
            outcome: Outcome::Ok(Timing {
                iterations: 64,
                overhead_milli: 2500,
                calibration_runs: 7,
                stop: "peaks",
                window: 0,
                ops_in_window: 1280,
                values: &[70125, 70250, 0],
            }),
        };
        assert_eq!(
            line.to_string(),
            "bench name=cpuid status=ok unit=cycles iterations=64 overhead_milli=2500 \
             calibration_runs=7 stop=peaks window=0 ops_in_window=1280 values=70125,70250,0"
        );
    }

    #[test]
    fn unavailable_and_failed_say_why_in_one_field() {
        let line = Bench {
            name: "vmcall",
            outcome: Outcome::Unavailable("VMCALL raised #UD (vector 6)"),
        };
        assert_eq!(
            line.to_string(),
            "bench name=vmcall status=unavailable why=VMCALL%20raised%20#UD%20(vector%206)"
        );
        let line = Bench {
            name: "wbinvd",
            outcome: Outcome::Failed("#GP at 0x101234"),
        };
        assert_eq!(
            line.to_string(),
            "bench name=wbinvd status=failed why=#GP%20at%200x101234"
        );
        assert_eq!(
            Error(format_args!("bad value {}", 7)).to_string(),
            "error why=bad%20value%207"
        );
    }

    #[test]
    fn the_longest_line_fits_in_64_kib() {
        let values = vec![u64::MAX; crate::config::MAX_MAX_SAMPLES as usize];
        let line = Bench {
            name: "toggle_cr4_pge",
            outcome: Outcome::Ok(Timing {
                iterations: u64::MAX,
                overhead_milli: u64::MAX,
                calibration_runs: u32::MAX,
                stop: "max_samples",
                window: u16::MAX,
                ops_in_window: u64::MAX,
                values: &values,
            }),
        };
        assert!(PREFIX.len() + line.to_string().len() + 1 < 64 * 1024);
    }
}
