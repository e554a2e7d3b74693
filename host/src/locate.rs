//! Where vmbench finds what it runs: the guest kernel, the guest agent, QEMU and
//! vhost-device-vsock, and its cache (`~/.cache/vmbench`, or `$VMBENCH_CACHE`).
//! Each lookup that fails says what to run to fix it.

use std::path::{Path, PathBuf};

/// The command that installs everything vmbench needs (from the repository root).
pub const SETUP_COMMAND: &str = "scripts/setup.sh";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No guest kernel: {looked} does not exist; build it with `kernel-config/build.sh` (or `{SETUP_COMMAND}`), or pass --kernel")]
    NoKernel { looked: String },
    #[error("No guest agent (vmbench-init) found in {looked}; build it with `scripts/build-agent.sh` (or `{SETUP_COMMAND}`), or pass --agent")]
    NoAgent { looked: String },
    #[error("`{program}` not found on PATH{extra}; install it with `{fix}`")]
    NoProgram {
        program: &'static str,
        extra: String,
        fix: &'static str,
    },
    #[error("No vmexit guest found in {looked}; build it with `scripts/build-vmexit-guest.sh` (or `{SETUP_COMMAND}`), or pass --vmexit-guest")]
    NoVmexitGuest { looked: String },
    #[error("No home directory ($HOME is unset) for the cache; set $VMBENCH_CACHE")]
    NoHome,
}

pub type Result<T> = std::result::Result<T, Error>;

/// The cache root: `$VMBENCH_CACHE`, else `~/.cache/vmbench`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VMBENCH_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").ok_or(Error::NoHome)?;
    Ok(PathBuf::from(home).join(".cache/vmbench"))
}

/// Where `vmbench rootfs` keeps the images it builds: `<cache>/images`.
pub fn images_dir() -> Result<PathBuf> {
    Ok(cache_dir()?.join("images"))
}

/// The workspace this binary was built from, if it is still there.
pub fn workspace_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    dir.join("Cargo.toml").is_file().then_some(dir)
}

/// The guest kernel: the one kernel-config/build.sh built from this
/// binary's own fragments ([`FRAGMENTS_SHA256`]) if the cache holds it,
/// else the one it built last (`kernel/current`). Several work trees (or
/// a CI run beside a developer's tree) share one cache, and `current` is
/// whichever built last; a binary finds its own kernel regardless.
pub fn default_kernel() -> Result<PathBuf> {
    let kernels = cache_dir()?.join("kernel");
    default_kernel_in(&kernels, FRAGMENTS_SHA256)
}

fn default_kernel_in(kernels: &Path, fragments_sha256: &str) -> Result<PathBuf> {
    let current = kernels.join("current/vmlinux");
    let ours = |path: &Path| {
        path.is_file()
            && kernel_inputs(path).is_some_and(|i| i.fragments_sha256 == fragments_sha256)
    };
    if ours(&current) {
        return Ok(current);
    }
    // Another key built from the same fragments (a different source is
    // possible: the newest build wins).
    let newest = std::fs::read_dir(kernels)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != "current")
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| ours(p))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    if let Some(path) = newest {
        return Ok(path);
    }
    if current.is_file() {
        Ok(current)
    } else {
        Err(Error::NoKernel {
            looked: current.display().to_string(),
        })
    }
}

/// What the cached kernel was built from (`inputs` beside the vmlinux), when known.
pub fn kernel_inputs(kernel: &Path) -> Option<KernelInputs> {
    let text = std::fs::read_to_string(kernel.parent()?.join("inputs")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    Some(KernelInputs {
        source: field("source")?,
        fragments_sha256: field("fragments_sha256")?,
        release: field("release").unwrap_or_default(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInputs {
    pub source: String,
    pub fragments_sha256: String,
    pub release: String,
}

/// The fragments this binary's workspace holds (computed by build.rs).
pub const FRAGMENTS_SHA256: &str = env!("VMBENCH_FRAGMENTS_SHA256");

/// The static guest agent: `$VMBENCH_AGENT`, beside this executable, or the
/// workspace's static build (scripts/build-agent.sh).
pub fn default_agent() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("VMBENCH_AGENT") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        // An installed vmbench keeps its agent beside it; a build tree does not
        // (the sibling there is the dynamic build, which is no use in a guest).
        candidates.push(dir.join("vmbench-init.static"));
    }
    if let Some(ws) = workspace_dir() {
        candidates.push(ws.join("target/x86_64-unknown-linux-gnu/release/vmbench-init"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::NoAgent {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The freestanding vmexit guest of `vmbench bench --suite vmexit`:
/// `$VMBENCH_VMEXIT_GUEST`, `vmexit-guest` beside this executable, or the
/// workspace's build (scripts/build-vmexit-guest.sh).
pub fn default_vmexit_guest() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("VMBENCH_VMEXIT_GUEST") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("vmexit-guest"));
    }
    if let Some(ws) = workspace_dir() {
        candidates.push(ws.join("target/vmexit-guest/release/vmexit-guest"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::NoVmexitGuest {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// An executable on PATH, or in one of `extra_dirs`.
pub fn program(name: &'static str, extra_dirs: &[PathBuf], fix: &'static str) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| Error::NoProgram {
            program: name,
            extra: extra_dirs
                .iter()
                .map(|d| format!(" or in {}", d.display()))
                .collect(),
            fix,
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub fn qemu() -> Result<PathBuf> {
    program(
        "qemu-system-x86_64",
        &[],
        "apt-get install qemu-system-x86 qemu-utils (or scripts/setup.sh)",
    )
}

pub fn vhost_device_vsock() -> Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin"));
    program(
        "vhost-device-vsock",
        cargo_bin.as_slice(),
        "cargo install --locked vhost-device-vsock (or scripts/setup.sh)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_inputs_are_read_from_beside_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("inputs"),
            "source=debian:linux-source-6.1=6.1.1\nfragments_sha256=abc\nrelease=6.1.1\n",
        )
        .unwrap();
        let inputs = kernel_inputs(&dir.path().join("vmlinux")).unwrap();
        assert_eq!(inputs.source, "debian:linux-source-6.1=6.1.1");
        assert_eq!(inputs.fragments_sha256, "abc");
        assert_eq!(inputs.release, "6.1.1");
    }

    #[test]
    fn missing_program_error_names_the_fix() {
        let err = program("surely-not-a-program-vmbench", &[], "apt-get install x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`surely-not-a-program-vmbench` not found on PATH; install it with `apt-get install x`"
        );
    }

    #[test]
    fn the_kernel_of_our_own_fragments_is_preferred_to_the_last_built() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path();
        let build = |key: &str, fragments: &str| {
            std::fs::create_dir_all(k.join(key)).unwrap();
            std::fs::write(k.join(key).join("vmlinux"), "elf").unwrap();
            std::fs::write(
                k.join(key).join("inputs"),
                format!("source=debian:linux-source-6.1=6.1.1\nfragments_sha256={fragments}\n"),
            )
            .unwrap();
        };
        assert!(matches!(
            default_kernel_in(k, "ours"),
            Err(Error::NoKernel { .. })
        ));
        build("aaaa", "theirs");
        std::os::unix::fs::symlink("aaaa", k.join("current")).unwrap();
        // Only theirs: the last built, as before (the inputs check warns).
        assert_eq!(
            default_kernel_in(k, "ours").unwrap(),
            k.join("current/vmlinux")
        );
        build("bbbb", "ours");
        assert_eq!(
            default_kernel_in(k, "ours").unwrap(),
            k.join("bbbb/vmlinux")
        );
        std::fs::remove_file(k.join("current")).unwrap();
        std::os::unix::fs::symlink("bbbb", k.join("current")).unwrap();
        assert_eq!(
            default_kernel_in(k, "ours").unwrap(),
            k.join("current/vmlinux")
        );
    }

    #[test]
    fn fragments_hash_is_set() {
        assert_eq!(FRAGMENTS_SHA256.len(), 64);
    }
}
