//! Stage 3: what runs the guests. KVM is calibrated once (native, emulated
//! or absent), then the backends and the accelerator the configuration asks
//! for are resolved against that verdict.

use vmbench_vmm::probe::{self, KvmVerdict};

use super::{BootConfig, Error, Result};
use crate::backend::kvm::{self, KvmVmm};
use crate::backend::qemu::Qemu;
use crate::backend::{Accel, Launcher};
use crate::{environment, locate};

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM where it runs guests natively, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// `kvm` where KVM runs guests natively, else `qemu`.
    Auto,
    Kvm,
    Qemu,
}

/// The run's backends, in the order VM ids alternate between them, each
/// with the accelerator its VMs run on.
#[derive(Debug, Clone)]
pub struct Backends {
    pub launchers: Vec<Launcher>,
    pub accels: Vec<Accel>,
    pub kvm: KvmVerdict,
    /// Measured when a backend runs TCG guests: their kernels get it as
    /// `tsc_early_khz=`, so they keep a precise clock (see
    /// [`environment::host_tsc_khz`]).
    pub host_tsc_khz: Option<u64>,
}

pub fn resolve(config: &BootConfig) -> Result<Backends> {
    let calibration = probe::calibrate();
    let launchers = choose_backends(&config.backends, &calibration.verdict)?;
    let qemu_accel = choose_accel(config.accel, &calibration.verdict)?;
    // Our VMM has no TCG: it runs on KVM, whatever KVM is here.
    let kvm_accel = Accel::Kvm {
        native: calibration.verdict.is_native(),
    };
    let accels: Vec<Accel> = launchers
        .iter()
        .map(|l| match l {
            Launcher::Kvm(_) => kvm_accel,
            Launcher::Qemu(_) => qemu_accel,
        })
        .collect();
    let host_tsc_khz = accels
        .contains(&Accel::Tcg)
        .then(environment::host_tsc_khz)
        .flatten();
    Ok(Backends {
        launchers,
        accels,
        kvm: calibration.verdict,
        host_tsc_khz,
    })
}

impl Backends {
    /// `n` qemu backends on TCG, for tests that need a run's shape only.
    #[cfg(test)]
    pub fn for_test(n: usize) -> Backends {
        let qemu = Launcher::Qemu(Qemu {
            qemu: "/unused".into(),
            vhost_device_vsock: "/unused".into(),
        });
        Backends {
            launchers: vec![qemu; n],
            accels: vec![Accel::Tcg; n],
            kvm: KvmVerdict::Absent {
                reason: "test".into(),
            },
            host_tsc_khz: None,
        }
    }

    /// The backend of VM `id`: with several, ids alternate between them, and
    /// so does the order VMs start in, so neither backend always goes first.
    pub fn of_vm(&self, id: u32) -> usize {
        id as usize % self.launchers.len()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.launchers.iter().map(Launcher::name).collect()
    }

    pub fn accel_labels(&self) -> Vec<&'static str> {
        self.accels.iter().map(|a| a.label()).collect()
    }

    /// Each backend's VMM and its version.
    pub fn vmm_versions(&self) -> Vec<String> {
        self.launchers
            .iter()
            .map(|l| match l {
                Launcher::Kvm(_) => format!("vmbench vmm {}", environment::vmbench_version()),
                Launcher::Qemu(q) => environment::program_version(&q.qemu),
            })
            .collect()
    }

    pub fn vhost_device_vsock_version(&self) -> String {
        self.launchers
            .iter()
            .find_map(|l| match l {
                Launcher::Qemu(q) => Some(environment::program_version(&q.vhost_device_vsock)),
                Launcher::Kvm(_) => None,
            })
            .unwrap_or_else(|| "not used".into())
    }

    /// Whether backend `index` is our VMM on KVM that emulates guest code:
    /// its guests then need [`kvm::EMULATED_KVM_CMDLINE`] and the VMM's
    /// emulated-KVM fallback, and their timings are the emulator's.
    pub fn on_emulated_kvm(&self, index: usize) -> bool {
        matches!(self.launchers[index], Launcher::Kvm(_))
            && kvm::on_emulated_kvm(self.accels[index])
    }

    /// What backend `index`'s guests need on their kernel command line for
    /// a precise clock and to boot at all: under TCG, the host's TSC
    /// frequency (`tsc_early_khz=`: TCG's emulated PIT cannot calibrate it
    /// on a busy host) and `tsc=reliable` (the guest's TSC is the host's,
    /// constant and nonstop, but the clocksource watchdog compares it with
    /// jiffies that TCG's timer interrupts let slip under load, and would
    /// mark it unstable: either way the kernel falls back to jiffies, 4 ms
    /// steps); `noxsave` on KVM that emulates guest code. On native KVM the
    /// guest has kvm-clock and needs nothing.
    pub fn cmdline_extra(&self, index: usize) -> Option<String> {
        if self.on_emulated_kvm(index) {
            return Some(kvm::EMULATED_KVM_CMDLINE.to_string());
        }
        match (self.accels[index], self.host_tsc_khz) {
            (Accel::Tcg, Some(khz)) => Some(format!("tsc_early_khz={khz} tsc=reliable")),
            _ => None,
        }
    }

    /// What the KVM calibration found, in words.
    pub fn kvm_detail(&self) -> String {
        match &self.kvm {
            KvmVerdict::Absent { reason } => reason.clone(),
            KvmVerdict::Emulated { ns_per_iteration } | KvmVerdict::Native { ns_per_iteration } => {
                format!("{ns_per_iteration:.1} ns per calibration loop iteration")
            }
        }
    }
}

/// The backends `choices` name, resolved against what KVM can do here.
pub fn choose_backends(choices: &[BackendChoice], verdict: &KvmVerdict) -> Result<Vec<Launcher>> {
    let mut resolved = Vec::new();
    for &choice in choices {
        let choice = match choice {
            BackendChoice::Auto if verdict.is_native() => BackendChoice::Kvm,
            BackendChoice::Auto => BackendChoice::Qemu,
            other => other,
        };
        if resolved.contains(&choice) {
            return Err(Error::DuplicateBackend);
        }
        resolved.push(choice);
    }
    resolved
        .into_iter()
        .map(|choice| match choice {
            BackendChoice::Kvm => {
                if let KvmVerdict::Absent { reason } = verdict {
                    return Err(Error::NoKvmBackend(reason.clone()));
                }
                Ok(Launcher::Kvm(KvmVmm::for_vmbench(
                    std::env::current_exe().map_err(Error::SelfExe)?,
                )))
            }
            _ => Ok(Launcher::Qemu(Qemu {
                qemu: locate::qemu()?,
                vhost_device_vsock: locate::vhost_device_vsock()?,
            })),
        })
        .collect()
}

/// Decides the qemu backend's accelerator and says why not when it cannot.
pub fn choose_accel(choice: AccelChoice, verdict: &KvmVerdict) -> Result<Accel> {
    match (choice, verdict) {
        (AccelChoice::Tcg, _) => Ok(Accel::Tcg),
        (AccelChoice::Kvm, KvmVerdict::Absent { reason }) => Err(Error::NoKvm(reason.clone())),
        (AccelChoice::Kvm, v) => Ok(Accel::Kvm {
            native: v.is_native(),
        }),
        (AccelChoice::Auto, v) if v.is_native() => Ok(Accel::Kvm { native: true }),
        (AccelChoice::Auto, _) => Ok(Accel::Tcg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_resolve_against_the_kvm_verdict() {
        let native = KvmVerdict::Native {
            ns_per_iteration: 1.0,
        };
        let absent = KvmVerdict::Absent {
            reason: "no /dev/kvm".into(),
        };
        let names = |choices: &[BackendChoice], v: &KvmVerdict| {
            choose_backends(choices, v).map(|ls| ls.iter().map(|l| l.name()).collect::<Vec<_>>())
        };
        assert_eq!(names(&[BackendChoice::Auto], &native).unwrap(), ["kvm"]);
        assert!(matches!(
            names(&[BackendChoice::Kvm], &absent),
            Err(Error::NoKvmBackend(reason)) if reason == "no /dev/kvm"
        ));
        assert!(matches!(
            names(&[BackendChoice::Kvm, BackendChoice::Auto], &native),
            Err(Error::DuplicateBackend)
        ));
        assert_eq!(
            Error::NoKvmBackend("no /dev/kvm".into()).to_string(),
            "--backend kvm: KVM cannot run guests here: no /dev/kvm"
        );
    }

    #[test]
    fn accel_auto_uses_kvm_only_when_native() {
        let native = KvmVerdict::Native {
            ns_per_iteration: 1.0,
        };
        let emulated = KvmVerdict::Emulated {
            ns_per_iteration: 1300.0,
        };
        let absent = KvmVerdict::Absent {
            reason: "no /dev/kvm".into(),
        };
        assert_eq!(
            choose_accel(AccelChoice::Auto, &native).unwrap(),
            Accel::Kvm { native: true }
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, &emulated).unwrap(),
            Accel::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, &absent).unwrap(),
            Accel::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Kvm, &emulated).unwrap(),
            Accel::Kvm { native: false }
        );
        assert!(choose_accel(AccelChoice::Kvm, &absent)
            .unwrap_err()
            .to_string()
            .contains("no /dev/kvm"));
    }
}
