//! `vmbench boot` for the end-to-end tests: one guest-booting test at a
//! time, each in a directory of its own, and the command line.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard};

use crate::{can_boot_guests, have_kvm, vmbench};

/// Guests share two cores: booting them from several tests at once would
/// only measure the contention, and slow TCG guests past their timeouts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A boot test's workspace: the lock that keeps it alone among this test
/// binary's tests, and a fresh directory.
pub struct BootTest {
    _alone: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
}

impl BootTest {
    /// `None` (after printing why, or failing under CI) when guests cannot
    /// boot here.
    pub fn start(test: &str) -> Option<BootTest> {
        Self::start_if(|| can_boot_guests(test))
    }

    /// For the kvm backend: `None` also without /dev/kvm.
    pub fn start_with_kvm(test: &str) -> Option<BootTest> {
        Self::start_if(|| have_kvm(test) && can_boot_guests(test))
    }

    fn start_if(can_run: impl FnOnce() -> bool) -> Option<BootTest> {
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        can_run().then(|| BootTest {
            _alone: alone,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The run's --out directory (not created yet: vmbench creates it).
    pub fn out_dir(&self) -> PathBuf {
        self.dir().join("run")
    }
}

/// `vmbench boot --backend BACKEND EXTRA… --out OUT_DIR`.
pub fn run(backend: &str, out_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["boot", "--backend", backend];
    args.extend(extra);
    args.extend(["--out", out_dir.to_str().unwrap()]);
    vmbench(&args)
}
