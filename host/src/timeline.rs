//! One VM's boot timeline (DESIGN.md): marks on the host's CLOCK_MONOTONIC, the
//! guest's own marks on its CLOCK_BOOTTIME, and the phases derived from both.
//!
//! | phase             | view  | from                                   |
//! |-------------------|-------|----------------------------------------|
//! | `total`           | host  | ready − spawn                          |
//! | `vmm`             | host  | vmm_ready − spawn (kvm backend only)   |
//! | `kernel`          | host  | init_start − vmm_ready (kvm only)      |
//! | `vmm_and_kernel`  | host  | init_start − spawn                     |
//! | `userspace`       | host  | ready − init_start                     |
//! | `shutdown`        | host  | exit − ready                           |
//! | `guest_kernel`    | guest | BOOTTIME at PID-1 entry                |
//! | `guest_userspace` | guest | BOOTTIME at Ready − at PID-1 entry     |
//!
//! Host and guest both see userspace; when they disagree by more than
//! [`USERSPACE_DISAGREEMENT_MS`] (plus 10%), the measurement itself is suspect
//! and the VM carries a warning.

use serde::{Deserialize, Serialize};
use vmbench_proto::GuestMarks;

/// Host-clock marks, CLOCK_MONOTONIC in nanoseconds (raw, not relative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMarks {
    pub spawn: Option<u64>,
    pub vmm_ready: Option<u64>,
    pub init_start: Option<u64>,
    pub hello: Option<u64>,
    pub ready: Option<u64>,
    pub exit: Option<u64>,
}

/// Phases in milliseconds; a phase this backend cannot see is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmm_and_kernel: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userspace: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_kernel: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_userspace: Option<f64>,
}

/// Host and guest views of userspace may differ by this much (plus 10%) before
/// the difference is reported: the host sees the marker write a VM exit later
/// and the Ready message a vsock hop later than the guest's clock does.
pub const USERSPACE_DISAGREEMENT_MS: f64 = 5.0;

fn span_ms(from: Option<u64>, to: Option<u64>) -> Option<f64> {
    let (from, to) = (from?, to?);
    Some(to.checked_sub(from)? as f64 / 1e6)
}

impl Phases {
    pub fn derive(
        host: &HostMarks,
        guest_init_ns: Option<u64>,
        guest: Option<&GuestMarks>,
    ) -> Phases {
        Phases {
            total: span_ms(host.spawn, host.ready),
            vmm: span_ms(host.spawn, host.vmm_ready),
            kernel: span_ms(host.vmm_ready, host.init_start),
            vmm_and_kernel: span_ms(host.spawn, host.init_start),
            userspace: span_ms(host.init_start, host.ready),
            shutdown: span_ms(host.ready, host.exit),
            guest_kernel: guest_init_ns.map(|ns| ns as f64 / 1e6),
            guest_userspace: guest.and_then(|g| span_ms(Some(g.init_ns), Some(g.ready_ns))),
        }
    }

    /// A warning when host and guest disagree about userspace beyond the noise.
    pub fn disagreement(&self) -> Option<String> {
        let (host, guest) = (self.userspace?, self.guest_userspace?);
        let limit = USERSPACE_DISAGREEMENT_MS + 0.1 * host.max(guest);
        ((host - guest).abs() > limit).then(|| {
            format!(
                "host and guest disagree about userspace: {host:.1} ms on the host clock, {guest:.1} ms on the guest's (limit {limit:.1} ms)"
            )
        })
    }

    /// Userspace as the table shows it: the host's view, else the guest's.
    pub fn userspace_any(&self) -> Option<f64> {
        self.userspace.or(self.guest_userspace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn phases_from_all_marks() {
        let host = HostMarks {
            spawn: Some(1000 * MS),
            vmm_ready: Some(1004 * MS),
            init_start: Some(1804 * MS),
            hello: Some(1810 * MS),
            ready: Some(1820 * MS),
            exit: Some(1850 * MS),
        };
        let guest = GuestMarks {
            init_ns: 700 * MS,
            ready_ns: 714 * MS,
            ..GuestMarks::default()
        };
        let p = Phases::derive(&host, Some(700 * MS), Some(&guest));
        assert_eq!(p.total, Some(820.0));
        assert_eq!(p.vmm, Some(4.0));
        assert_eq!(p.kernel, Some(800.0));
        assert_eq!(p.vmm_and_kernel, Some(804.0));
        assert_eq!(p.userspace, Some(16.0));
        assert_eq!(p.shutdown, Some(30.0));
        assert_eq!(p.guest_kernel, Some(700.0));
        assert_eq!(p.guest_userspace, Some(14.0));
        assert_eq!(p.disagreement(), None);
    }

    #[test]
    fn unseen_marks_leave_phases_empty() {
        let host = HostMarks {
            spawn: Some(5),
            ready: None,
            ..HostMarks::default()
        };
        let p = Phases::derive(&host, None, None);
        assert_eq!(p, Phases::default());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "{}");
    }

    #[test]
    fn a_mark_before_its_start_is_not_a_negative_phase() {
        let host = HostMarks {
            spawn: Some(10 * MS),
            ready: Some(5 * MS),
            ..HostMarks::default()
        };
        assert_eq!(Phases::derive(&host, None, None).total, None);
    }

    #[test]
    fn large_disagreement_is_reported() {
        let p = Phases {
            userspace: Some(100.0),
            guest_userspace: Some(20.0),
            ..Phases::default()
        };
        assert!(p
            .disagreement()
            .unwrap()
            .contains("100.0 ms on the host clock"));
        let p = Phases {
            userspace: Some(22.0),
            guest_userspace: Some(20.0),
            ..Phases::default()
        };
        assert_eq!(p.disagreement(), None);
    }
}
