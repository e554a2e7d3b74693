//! A systemd guest's report as the host takes it: decoded from its frame
//! body, the phases derived, `systemd-analyze time`'s text read and checked,
//! `blame` listed, and the record written to and read back from JSON as
//! results.json keeps it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench::systemd::{parse_analyze_time, SystemdRecord};
use vmbench_proto::{decode_body, SystemdReport};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = decode_body::<SystemdReport>(data) else {
        return;
    };
    let _ = parse_analyze_time(&report.analyze_time);
    let record = SystemdRecord::from_report(report);
    let blame = record.blame();
    assert!(blame.iter().all(|(_, ms)| *ms >= 0.0));
    let json = serde_json::to_string(&record).expect("a record serialises");
    let back: SystemdRecord = serde_json::from_str(&json).expect("results.json reads back");
    assert_eq!(back.units, record.units);
    assert_eq!(back.timestamps_us, record.timestamps_us);
    assert_eq!(back.analyze_time, record.analyze_time);
});
