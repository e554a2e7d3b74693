//! What the fuzz targets share: the process set up as vmbench's programs
//! are, a scratch directory per process, and a check that a run left no
//! file descriptor open.

use std::path::Path;
use std::sync::OnceLock;

/// A directory for the files a target makes, removed when the process ends
/// normally (scripts/fuzz.sh also runs each target in a temporary directory
/// of its own, removed afterwards, in case it does not).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
        .path()
}

/// This process's open file descriptors.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Runs `run` and fails if it left a descriptor open: a device or an image
/// chain that leaks one per guest request or per image would exhaust the
/// VMM's descriptors.
pub fn without_fd_leak<T>(run: impl FnOnce() -> T) -> T {
    let before = open_fds();
    let out = run();
    let after = open_fds();
    assert!(
        after <= before,
        "{} file descriptors leaked",
        after - before
    );
    out
}

/// Sets the process up as vmbench's programs run, where libFuzzer's `main`
/// differs from a Rust `main`:
/// - SIGPIPE is ignored (Rust's runtime does that before `main`; libFuzzer
///   does not), so a write to a socket whose peer left fails with EPIPE
///   instead of killing the process;
/// - libFuzzer's panic hook aborts on any panic, even one that is caught.
///   vmbench-image calls into imago through `catch_panic`, on purpose (imago
///   panics on some corrupt images, and that fails the image, not the
///   process), so a panic raised inside imago unwinds to that guard
///   instead; if nothing catches it, libfuzzer-sys's own `catch_unwind`
///   still reports the crash.
pub fn init() {
    // SAFETY: sets a signal's disposition to SIG_IGN, no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let_imago_panics_unwind();
}

fn let_imago_panics_unwind() {
    let libfuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_imago = info
            .location()
            .is_some_and(|at| at.file().contains("/imago-"));
        if !in_imago {
            libfuzzer_hook(info);
        }
    }));
}
