//! The vmexit guest's report, read from its serial console (`serial.log`).
//!
//! # Primer
//!
//! The freestanding vmexit guest has no vsock agent: it writes one ASCII
//! line per event to COM1, each starting with [`PREFIX`], and powers off
//! after the last:
//!
//! ```text
//! vmbench-vmexit: hello version=1 cpus=2 vendor=GenuineIntel tsc_khz=2400000
//! vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1024 overhead_milli=52000 calibration_runs=16 stop=peaks window=1 ops_in_window=20480 values=81234,80567,...
//! vmbench-vmexit: bench name=ipi_cross status=unavailable why=one%20vCPU
//! vmbench-vmexit: done
//! ```
//!
//! (`error why=…` instead of `done`: the guest could not run the suite at
//! all, e.g. it refused its command line.)
//!
//! Fields are `key=value`, one space apart; a value percent-encodes `%`,
//! space and control bytes. Lines without the prefix are not the report
//! (anything else the console carries) and are skipped.
//!
//! The guest is untrusted, so the reading is strict and bounded: a report
//! line longer than [`MAX_LINE_BYTES`], more than [`MAX_VALUES`] values,
//! more report lines than [`MAX_REPORT_LINES`], an unknown event, a missing
//! or malformed field, a benchmark reported twice, a benchmark this vmbench
//! does not know, a second `hello` or anything after `done` is a
//! [`Error`] naming the line; unknown keys are ignored (a newer guest may
//! say more). The file itself is read at most [`MAX_LOG_BYTES`] far. A
//! report without `done` is not an error here: the guest stopped (hung,
//! crashed, timed out) and the caller says which benchmark it stopped in.

use std::io::Read;
use std::path::Path;

use super::outcome::{Outcome, Samples};

/// What starts every report line.
pub const PREFIX: &str = "vmbench-vmexit: ";
/// The report's version this vmbench reads.
pub const VERSION: u32 = 1;
/// A report line is at most this long (without its newline).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Values one benchmark may report.
pub const MAX_VALUES: usize = 10_000;
/// Report lines in one console: hello, one per benchmark (with room), done.
pub const MAX_REPORT_LINES: usize = 256;
/// How much of the console log is read. Our VMM stops its log at 16 MiB;
/// under QEMU only the timeout bounds it.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("The vmexit guest's report, line {line}: {what}: {text}")]
    Line {
        line: usize,
        what: String,
        /// The line as written, cut to a readable length.
        text: String,
    },
    #[error("The vmexit guest's report, line {line}: longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong { line: usize },
    #[error("The vmexit guest wrote more than {MAX_REPORT_LINES} report lines")]
    TooManyLines,
    #[error("The vmexit guest's console log is longer than {MAX_LOG_BYTES} bytes")]
    LogTooLong,
    #[error("Cannot read the vmexit guest's console log {path}: {detail}")]
    Read { path: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The guest's `hello`: what it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub cpus: u32,
    pub vendor: String,
    /// The TSC frequency the guest knows (0: it does not).
    pub tsc_khz: u64,
    /// CPUID 0x40000000's signature (`KVMKVMKVM`, `TCGTCGTCGTCG`, `none`), if said.
    pub hypervisor: Option<String>,
    /// `x2apic`, `xapic` or `none`, if said.
    pub apic: Option<String>,
}

/// Everything the report said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub hello: Option<Hello>,
    /// Each benchmark's result, in the order reported.
    pub results: Vec<(String, Outcome)>,
    /// The guest said it was done.
    pub done: bool,
    /// The guest said it could not run the suite at all, and why (in
    /// place of `done`).
    pub error: Option<String>,
}

/// Reads the report from a console log file.
pub fn read(path: &Path, known: &dyn Fn(&str) -> bool) -> Result<Report> {
    let file = std::fs::File::open(path).map_err(|e| Error::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut parser = Parser::new(known);
    let mut reader = file.take(MAX_LOG_BYTES + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Read {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })
            }
        };
        total += n as u64;
        if total > MAX_LOG_BYTES {
            return Err(Error::LogTooLong);
        }
        parser.feed(&buf[..n])?;
    }
    parser.finish()
}

/// Parses a whole console text (tests, and small logs).
pub fn parse(text: &[u8], known: &dyn Fn(&str) -> bool) -> Result<Report> {
    let mut parser = Parser::new(known);
    parser.feed(text)?;
    parser.finish()
}

/// A line-at-a-time parser that holds at most one line of
/// [`MAX_LINE_BYTES`] (and the prefix of a longer one).
struct Parser<'a> {
    known: &'a dyn Fn(&str) -> bool,
    line: Vec<u8>,
    /// The current line went past the limit: its bytes are dropped.
    overlong: bool,
    line_number: usize,
    report_lines: usize,
    report: Report,
}

impl<'a> Parser<'a> {
    fn new(known: &'a dyn Fn(&str) -> bool) -> Self {
        Parser {
            known,
            line: Vec::new(),
            overlong: false,
            line_number: 0,
            report_lines: 0,
            report: Report::default(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.take(&bytes[..at]);
                    self.end_line()?;
                    bytes = &bytes[at + 1..];
                }
                None => {
                    self.take(bytes);
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            // Keep the start: whether it is a report line is in its prefix.
            let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
            self.line.extend_from_slice(&bytes[..room.min(bytes.len())]);
            self.overlong = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) -> Result<()> {
        self.line_number += 1;
        let mut line = std::mem::take(&mut self.line);
        let overlong = std::mem::take(&mut self.overlong);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // The prefix may follow other bytes on the same line (a console
        // that had not ended its line); the report starts at the prefix.
        let Some(start) = find(&line, PREFIX.as_bytes()) else {
            return Ok(());
        };
        if overlong {
            return Err(Error::LineTooLong {
                line: self.line_number,
            });
        }
        self.report_lines += 1;
        if self.report_lines > MAX_REPORT_LINES {
            return Err(Error::TooManyLines);
        }
        let body = &line[start + PREFIX.len()..];
        self.line(body).map_err(|what| Error::Line {
            line: self.line_number,
            what,
            text: shown(&line[start..]),
        })
    }

    fn finish(mut self) -> Result<Report> {
        if !self.line.is_empty() || self.overlong {
            self.end_line()?;
        }
        Ok(self.report)
    }

    /// One report line's body (after the prefix); the error says what is wrong.
    fn line(&mut self, body: &[u8]) -> std::result::Result<(), String> {
        let text = std::str::from_utf8(body).map_err(|_| "not ASCII".to_string())?;
        if !text.is_ascii() {
            return Err("not ASCII".into());
        }
        if self.report.done || self.report.error.is_some() {
            return Err("a report line after done".into());
        }
        let mut words = text.split(' ');
        let event = words.next().unwrap_or_default();
        let fields = Fields::parse(words)?;
        match event {
            "hello" => {
                if self.report.hello.is_some() {
                    return Err("a second hello".into());
                }
                let version = fields.number("version")?;
                if version != u64::from(VERSION) {
                    return Err(format!(
                        "report version {version}, but this vmbench reads version {VERSION}"
                    ));
                }
                self.report.hello = Some(Hello {
                    version: VERSION,
                    cpus: u32::try_from(fields.number("cpus")?)
                        .map_err(|_| "cpus out of range".to_string())?,
                    vendor: fields.text("vendor")?,
                    tsc_khz: fields.number("tsc_khz")?,
                    hypervisor: fields.text("hypervisor").ok(),
                    apic: fields.text("apic").ok(),
                });
            }
            "bench" => {
                if self.report.hello.is_none() {
                    return Err("a bench line before hello".into());
                }
                let name = fields.text("name")?;
                if !(self.known)(&name) {
                    return Err(format!("unknown benchmark {name:?}"));
                }
                if self.report.results.iter().any(|(n, _)| *n == name) {
                    return Err(format!("{name} reported twice"));
                }
                let outcome = match fields.text("status")?.as_str() {
                    "ok" => Outcome::Done(samples(&fields)?),
                    "unavailable" => Outcome::Unavailable {
                        why: fields.text("why")?,
                    },
                    "failed" => Outcome::Failed {
                        why: fields.text("why")?,
                    },
                    other => return Err(format!("unknown status {other:?}")),
                };
                self.report.results.push((name, outcome));
            }
            "done" => self.report.done = true,
            "error" => self.report.error = Some(fields.text("why")?),
            other => return Err(format!("unknown event {other:?}")),
        }
        Ok(())
    }
}

/// An `ok` line's samples.
fn samples(fields: &Fields<'_>) -> std::result::Result<Samples, String> {
    let unit = fields.text("unit")?;
    if unit != "cycles" && unit != "ns" {
        return Err(format!("unit {unit:?} is neither cycles nor ns"));
    }
    let values_text = fields.raw("values")?;
    let mut values = Vec::new();
    if !values_text.is_empty() {
        for value in values_text.split(',') {
            if values.len() == MAX_VALUES {
                return Err(format!("more than {MAX_VALUES} values"));
            }
            values.push(number("values", value)?);
        }
    }
    if values.is_empty() {
        return Err("status ok without values".into());
    }
    let window = fields.number("window")?;
    Ok(Samples {
        clock: if unit == "cycles" {
            "tsc".into()
        } else {
            "guest".into()
        },
        unit,
        iterations: fields.number("iterations")?,
        overhead_milli: fields.number("overhead_milli")?,
        calibration_runs: u32::try_from(fields.number("calibration_runs")?)
            .map_err(|_| "calibration_runs out of range".to_string())?,
        stop: {
            let stop = fields.text("stop")?;
            if !["peaks", "max_samples", "budget"].contains(&stop.as_str()) {
                return Err(format!("unknown stop {stop:?}"));
            }
            stop
        },
        window: u16::try_from(window).map_err(|_| format!("window {window} out of range"))?,
        ops_in_window: fields.number("ops_in_window")?,
        values,
        extra: Vec::new(),
    })
}

/// A line's `key=value` fields.
struct Fields<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn parse(words: impl Iterator<Item = &'a str>) -> std::result::Result<Self, String> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{:?} is not key=value", cut(word)))?;
            if key.is_empty() {
                return Err(format!("{:?} has no key", cut(word)));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(format!("{} given twice", cut(key)));
            }
            pairs.push((key, value));
        }
        Ok(Fields { pairs })
    }

    fn raw(&self, key: &str) -> std::result::Result<&'a str, String> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("no {key}="))
    }

    fn text(&self, key: &str) -> std::result::Result<String, String> {
        percent_decode(self.raw(key)?).ok_or_else(|| format!("{key}= is badly percent-encoded"))
    }

    fn number(&self, key: &str) -> std::result::Result<u64, String> {
        number(key, self.raw(key)?)
    }
}

/// A decimal `u64`: digits only, at most 20 of them, no overflow.
fn number(key: &str, text: &str) -> std::result::Result<u64, String> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{key}={:?} is not a whole number", cut(text)));
    }
    text.parse()
        .map_err(|_| format!("{key}={} is out of range", cut(text)))
}

/// `%XX` escapes decoded (the guest encodes `%`, space and control bytes);
/// `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// At most 80 characters of `text`, for an error message.
fn cut(text: &str) -> String {
    let mut shown: String = text.chars().take(80).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// A report line as an error quotes it: at most 120 bytes, lossy.
fn shown(line: &[u8]) -> String {
    let head = &line[..line.len().min(120)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    if head.len() < line.len() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        ["cpuid", "ipi_cross", "wbinvd", "inl_from_vmm"].contains(&name)
    }

    fn parsed(text: &str) -> Result<Report> {
        parse(text.as_bytes(), &known)
    }

    const HELLO: &str = "vmbench-vmexit: hello version=1 cpus=2 vendor=GenuineIntel tsc_khz=0\n";

    fn ok_line(name: &str) -> String {
        format!("vmbench-vmexit: bench name={name} status=ok unit=cycles iterations=1024 overhead_milli=52000 calibration_runs=16 stop=peaks window=3 ops_in_window=20480 values=81234,80567\n")
    }

    #[test]
    fn a_whole_report_is_read_with_other_console_lines_between() {
        let text = format!(
            "SeaBIOS noise\r\n{HELLO}{}garbage \x1b[31m line\nvmbench-vmexit: bench name=ipi_cross status=unavailable why=one%20vCPU%25\r\nvmbench-vmexit: bench name=wbinvd status=failed why=timer%20never%20fired\nvmbench-vmexit: done\n",
            ok_line("cpuid")
        );
        let report = parsed(&text).unwrap();
        assert_eq!(
            report.hello,
            Some(Hello {
                version: 1,
                cpus: 2,
                vendor: "GenuineIntel".into(),
                tsc_khz: 0,
                hypervisor: None,
                apic: None,
            })
        );
        assert!(report.done);
        assert_eq!(report.results.len(), 3);
        let Outcome::Done(samples) = &report.results[0].1 else {
            panic!("{report:?}")
        };
        assert_eq!(samples.values, [81234, 80567]);
        assert_eq!(
            (samples.iterations, samples.window, samples.ops_in_window),
            (1024, 3, 20480)
        );
        assert_eq!(samples.unit, "cycles");
        assert_eq!(
            report.results[1].1,
            Outcome::Unavailable {
                why: "one vCPU%".into()
            }
        );
        assert_eq!(
            report.results[2].1,
            Outcome::Failed {
                why: "timer never fired".into()
            }
        );
    }

    #[test]
    fn a_report_cut_short_is_read_as_far_as_it_goes() {
        let text = format!("{HELLO}{}vmbench-vmexit: bench name=ipi", ok_line("cpuid"));
        let err = parsed(&text).unwrap_err();
        // The cut line is a report line without its fields: named.
        assert!(err.to_string().contains("line 3"), "{err}");
        let report = parsed(&format!("{HELLO}{}", ok_line("cpuid"))).unwrap();
        assert!(!report.done);
        assert_eq!(report.results.len(), 1);
        assert_eq!(parsed("").unwrap(), Report::default());
    }

    #[test]
    fn malformed_lines_are_errors_that_name_them() {
        for (bad, said) in [
            ("vmbench-vmexit: hullo x=1", "unknown event \"hullo\""),
            (
                "vmbench-vmexit: hello version=2 cpus=2 vendor=x tsc_khz=0",
                "report version 2",
            ),
            (
                "vmbench-vmexit: hello version=1 cpus=two vendor=x tsc_khz=0",
                "cpus=\"two\" is not a whole number",
            ),
            (
                "vmbench-vmexit: hello version=1 cpus=99999999999 vendor=x tsc_khz=0",
                "cpus out of range",
            ),
            (
                "vmbench-vmexit: bench name=cpuid status=ok",
                "a bench line before hello",
            ),
        ] {
            let err = parsed(&format!("{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(said) && err.contains("line 1"), "{bad}: {err}");
        }
        for (bad, said) in [
            ("vmbench-vmexit: bench name=rdtsc status=ok", "unknown benchmark \"rdtsc\""),
            ("vmbench-vmexit: bench name=cpuid status=maybe", "unknown status"),
            ("vmbench-vmexit: bench name=cpuid status=failed", "no why="),
            ("vmbench-vmexit: bench name=cpuid status=failed why=%zz", "badly percent-encoded"),
            ("vmbench-vmexit: bench name=cpuid status=failed why=%c3", "badly percent-encoded"),
            ("vmbench-vmexit: bench name=cpuid name=cpuid status=failed why=x", "name given twice"),
            ("vmbench-vmexit: bench name=cpuid  status=failed why=x", "\"\" is not key=value"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1 overhead_milli=1 calibration_runs=1 stop=peaks window=1 ops_in_window=1 values=", "status ok without values"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1 overhead_milli=1 calibration_runs=1 stop=peaks window=1 ops_in_window=1 values=1,,2", "values=\"\" is not a whole number"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1 overhead_milli=1 calibration_runs=1 stop=peaks window=1 ops_in_window=1 values=18446744073709551616", "out of range"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1 overhead_milli=1 calibration_runs=1 stop=peaks window=65536 ops_in_window=1 values=1", "window 65536 out of range"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=parsecs iterations=1 overhead_milli=1 calibration_runs=1 stop=peaks window=1 ops_in_window=1 values=1", "neither cycles nor ns"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1 overhead_milli=1 calibration_runs=1 stop=whenever window=1 ops_in_window=1 values=1", "unknown stop"),
            ("vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=-1 overhead_milli=1 calibration_runs=1 stop=peaks window=1 ops_in_window=1 values=1", "iterations=\"-1\""),
            ("vmbench-vmexit: bench name=cpu\u{e9}d status=failed why=x", "not ASCII"),
            ("vmbench-vmexit: hello version=1 cpus=2 vendor=x tsc_khz=0", "a second hello"),
        ] {
            let err = parsed(&format!("{HELLO}{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(said) && err.contains("line 2"), "{bad}: {err}");
        }
        let twice = format!("{HELLO}{}{}", ok_line("cpuid"), ok_line("cpuid"));
        assert!(parsed(&twice)
            .unwrap_err()
            .to_string()
            .contains("cpuid reported twice"));
        let after = format!("{HELLO}vmbench-vmexit: done\n{}", ok_line("cpuid"));
        assert!(parsed(&after)
            .unwrap_err()
            .to_string()
            .contains("after done"));
        // Unknown keys are a newer guest's: ignored.
        let newer = "vmbench-vmexit: hello version=1 cpus=2 vendor=x tsc_khz=0 microcode=0xf0 hypervisor=KVMKVMKVM apic=x2apic\n";
        let hello = parsed(newer).unwrap().hello.unwrap();
        assert_eq!(hello.hypervisor.as_deref(), Some("KVMKVMKVM"));
        assert_eq!(hello.apic.as_deref(), Some("x2apic"));
        let refused = format!("{HELLO}vmbench-vmexit: error why=bad%20value%20vmexit.rough=2\n");
        assert_eq!(
            parsed(&refused).unwrap().error.as_deref(),
            Some("bad value vmexit.rough=2")
        );
        let after_error = format!("{refused}vmbench-vmexit: done\n");
        assert!(parsed(&after_error).is_err());
    }

    #[test]
    fn oversized_lines_and_floods_are_refused() {
        let values = vec!["1"; MAX_VALUES + 1].join(",");
        let many = format!("{HELLO}vmbench-vmexit: bench name=cpuid status=ok unit=cycles iterations=1 overhead_milli=1 calibration_runs=1 stop=peaks window=1 ops_in_window=1 values={values}\n");
        assert!(parsed(&many)
            .unwrap_err()
            .to_string()
            .contains("more than 10000 values"));
        let long = format!(
            "{HELLO}vmbench-vmexit: bench name=cpuid status=failed why={}\n",
            "x".repeat(MAX_LINE_BYTES)
        );
        assert_eq!(parsed(&long).unwrap_err(), Error::LineTooLong { line: 2 });
        // The same without its newline (the log's last line).
        assert_eq!(
            parsed(long.trim_end()).unwrap_err(),
            Error::LineTooLong { line: 2 }
        );
        // A long line that is not the report's is the console's business.
        let console = format!("{}\n{HELLO}", "y".repeat(3 * MAX_LINE_BYTES));
        assert!(parsed(&console).unwrap().hello.is_some());
        let flood = "vmbench-vmexit: done\n".repeat(MAX_REPORT_LINES + 1);
        let err = parsed(&format!("{HELLO}{flood}")).unwrap_err();
        assert!(
            matches!(err, Error::Line { .. } | Error::TooManyLines),
            "{err}"
        );
        let unknown_events =
            "vmbench-vmexit: hello version=1 cpus=1 vendor=x tsc_khz=0\n".repeat(2);
        assert!(parsed(&unknown_events).is_err());
    }

    #[test]
    fn a_log_is_read_in_pieces_as_a_whole() {
        let text = format!("{HELLO}{}vmbench-vmexit: done\n", ok_line("cpuid"));
        let whole = parsed(&text).unwrap();
        let mut parser = Parser::new(&known);
        for byte in text.as_bytes() {
            parser.feed(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(parser.finish().unwrap(), whole);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path, &known).unwrap(), whole);
        assert!(matches!(
            read(&dir.path().join("none"), &known),
            Err(Error::Read { .. })
        ));
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Whatever the console holds, the parser answers, never panics.
        #[test]
        fn any_console_is_read_or_refused(
            lines in proptest::collection::vec(
                prop_oneof![
                    proptest::string::string_regex("vmbench-vmexit: [a-z=%0-9, ]{0,60}").unwrap(),
                    proptest::string::string_regex("[ -~]{0,40}").unwrap(),
                    proptest::collection::vec(any::<u8>(), 0..40)
                        .prop_map(|b: Vec<u8>| String::from_utf8_lossy(&b).into_owned()),
                ],
                0..12,
            )
        ) {
            let text = format!("{HELLO}{}", lines.join("\n"));
            let _ = parsed(&text);
        }
    }
}
