//! One VM's boot timeline: marks on the host's CLOCK_MONOTONIC, the
//! guest's own marks on its CLOCK_BOOTTIME, and the phases derived from both
//! (`docs/results-json.md` lists them with their clocks).
//!
//! | phase             | view  | from                                   |
//! |-------------------|-------|----------------------------------------|
//! | `total`           | host  | ready − spawn                          |
//! | `vmm`             | host  | vmm_ready − spawn (kvm backend only)   |
//! | `kernel`          | host  | init_start − vmm_ready (kvm only)      |
//! | `vmm_and_kernel`  | host  | init_start − spawn                     |
//! | `initrd`          | host  | switch_root − init_start (root disks)  |
//! | `userspace`       | host  | ready − (switch_root, else init_start) |
//! | `shutdown`        | host  | exit − reported (the whole report in)  |
//! | `guest_kernel`    | guest | BOOTTIME at PID-1 entry                |
//! | `guest_initrd`    | guest | at the root switch − at PID-1 entry    |
//! | `guest_userspace` | guest | at Ready − at the switch (else PID 1)  |
//!
//! Where the agent never marks `init_start` because the host cannot run
//! guest userspace (KVM emulating guest code), the kernel's `Run /init`
//! console line, timestamped by our VMM (`run_init`), ends `kernel` and
//! `vmm_and_kernel` instead.
//!
//! With a root disk, the agent runs first from the initramfs and switches to
//! the disk; `userspace` is then the real root's, as `systemd-analyze`
//! counts it, and the initramfs's time is `initrd`. A systemd guest sends
//! `Ready` the moment its boot finished and then what it gathered from
//! systemd; `reported` is when that last part arrived, so the gathering
//! counts neither as boot nor as shutdown.
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
    /// kvm backend: the kernel's `Run … as init process` console line, as
    /// the VMM timestamped it. It ends the kernel phase where the agent
    /// never marks `init_start` (a host that cannot run guest userspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_init: Option<u64>,
    pub init_start: Option<u64>,
    /// The agent in the initramfs switched to the root disk (boot marker 0x62).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_root: Option<u64>,
    pub hello: Option<u64>,
    pub ready: Option<u64>,
    /// The whole report had arrived: `ready`, or the systemd report after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<u64>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userspace: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_kernel: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_initrd: Option<f64>,
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
        let nonzero = |ns: u64| (ns > 0).then_some(ns);
        let guest_switch = guest.and_then(|g| nonzero(g.switch_root_ns));
        let kernel_end = host.init_start.or(host.run_init);
        Phases {
            total: span_ms(host.spawn, host.ready),
            vmm: span_ms(host.spawn, host.vmm_ready),
            kernel: span_ms(host.vmm_ready, kernel_end),
            vmm_and_kernel: span_ms(host.spawn, kernel_end),
            initrd: span_ms(host.init_start, host.switch_root),
            userspace: span_ms(host.switch_root.or(host.init_start), host.ready),
            shutdown: span_ms(host.reported.or(host.ready), host.exit),
            guest_kernel: guest_init_ns.map(|ns| ns as f64 / 1e6),
            guest_initrd: guest.and_then(|g| span_ms(nonzero(g.init_ns), guest_switch)),
            guest_userspace: guest
                .and_then(|g| span_ms(guest_switch.or(nonzero(g.init_ns)), nonzero(g.ready_ns))),
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
            run_init: Some(1790 * MS),
            init_start: Some(1804 * MS),
            switch_root: None,
            hello: Some(1810 * MS),
            ready: Some(1820 * MS),
            reported: None,
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
        assert_eq!(p.kernel, Some(800.0), "the agent's mark, not the console's");
        assert_eq!(p.vmm_and_kernel, Some(804.0));
        assert_eq!(p.userspace, Some(16.0));
        assert_eq!(p.shutdown, Some(30.0));
        assert_eq!(p.guest_kernel, Some(700.0));
        assert_eq!(p.guest_userspace, Some(14.0));
        assert_eq!(p.disagreement(), None);
    }

    #[test]
    fn without_the_agents_mark_the_run_init_line_ends_the_kernel() {
        let host = HostMarks {
            spawn: Some(1000 * MS),
            vmm_ready: Some(1003 * MS),
            run_init: Some(23_003 * MS),
            exit: Some(23_500 * MS),
            ..HostMarks::default()
        };
        let p = Phases::derive(&host, None, None);
        assert_eq!((p.vmm, p.kernel), (Some(3.0), Some(22_000.0)));
        assert_eq!(p.vmm_and_kernel, Some(22_003.0));
        assert_eq!((p.total, p.userspace), (None, None));
    }

    #[test]
    fn a_root_switch_splits_initrd_from_userspace() {
        let host = HostMarks {
            spawn: Some(1000 * MS),
            init_start: Some(1800 * MS),
            switch_root: Some(1830 * MS),
            ready: Some(9830 * MS),
            ..HostMarks::default()
        };
        let guest = GuestMarks {
            init_ns: 700 * MS,
            switch_root_ns: 728 * MS,
            ready_ns: 8725 * MS,
            ..GuestMarks::default()
        };
        let p = Phases::derive(&host, Some(700 * MS), Some(&guest));
        assert_eq!(p.initrd, Some(30.0));
        assert_eq!(p.userspace, Some(8000.0));
        assert_eq!(p.shutdown, None, "no exit yet");
        let with_report = HostMarks {
            reported: Some(14_830 * MS),
            exit: Some(15_000 * MS),
            ..host
        };
        let p2 = Phases::derive(&with_report, None, None);
        assert_eq!(
            p2.shutdown,
            Some(170.0),
            "from the last report, not from Ready"
        );
        assert_eq!(p.guest_initrd, Some(28.0));
        assert_eq!(p.guest_userspace, Some(7997.0));
        assert_eq!(p.disagreement(), None);
        // No switch: no initrd phase, userspace from PID 1.
        let p = Phases::derive(
            &HostMarks {
                switch_root: None,
                ..host
            },
            Some(700 * MS),
            Some(&GuestMarks {
                switch_root_ns: 0,
                ..guest
            }),
        );
        assert_eq!((p.initrd, p.guest_initrd), (None, None));
        assert_eq!(p.userspace, Some(8030.0));
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
