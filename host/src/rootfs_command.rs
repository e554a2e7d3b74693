//! `vmbench rootfs …`: guest images built by `vmbench-rootfs`, with the
//! agent and the image cache this vmbench finds. Each command prints the
//! image's path on stdout and what happened on stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{environment, locate};

/// `rootfs initramfs`: a deterministic initramfs with the agent as `/init`,
/// plus `HOST_PATH:GUEST_PATH` extra files (their mode kept).
pub fn initramfs(
    agent: Option<PathBuf>,
    out: &Path,
    add: &[String],
    no_gzip: bool,
) -> anyhow::Result<()> {
    let agent = match agent {
        Some(path) => path,
        None => locate::default_agent()?,
    };
    let mut image = vmbench_rootfs::agent_initramfs(&agent)?;
    for spec in add {
        let (host, guest) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--add {spec}: expected HOST_PATH:GUEST_PATH"))?;
        let mode = std::fs::metadata(host)
            .map_err(|e| anyhow::anyhow!("--add {spec}: cannot read {host}: {e}"))?;
        image.add_file_from(
            guest,
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
            host.as_ref(),
        )?;
    }
    let compression = if no_gzip {
        vmbench_rootfs::Compression::None
    } else {
        vmbench_rootfs::Compression::Gzip
    };
    image.write(out, compression)?;
    println!("{}", out.display());
    Ok(())
}

/// `rootfs ext4`: a plain ext4 root image of a directory tree, with the agent as init.
pub fn ext4(
    from: &Path,
    out: Option<PathBuf>,
    agent: Option<PathBuf>,
    size_mib: Option<u64>,
) -> anyhow::Result<()> {
    let options = image_options(agent, out)?;
    let started = Instant::now();
    let built = vmbench_rootfs::build_plain_image(from, size_mib, &options, &mut progress)?;
    say_built(&built, started);
    Ok(())
}

/// `rootfs from-raw`: a systemd base image from a distribution's ext4 image or tree.
pub fn from_raw(from: &Path, out: Option<PathBuf>, agent: Option<PathBuf>) -> anyhow::Result<()> {
    let options = image_options(agent, out)?;
    let started = Instant::now();
    let source = vmbench_rootfs::RawSource::detect(from)?;
    let built = vmbench_rootfs::build_systemd_image(&source, &options, &mut progress)?;
    say_built(&built, started);
    Ok(())
}

/// `rootfs debian`: a minimal Debian with systemd and the agent (debootstrap).
pub fn debian(
    out: Option<PathBuf>,
    suite: String,
    mirror: Option<String>,
    agent: Option<PathBuf>,
) -> anyhow::Result<()> {
    let options = image_options(agent, out)?;
    let debian = vmbench_rootfs::Debian {
        suite,
        mirror: mirror.unwrap_or_else(vmbench_rootfs::default_mirror),
    };
    let started = Instant::now();
    let built = vmbench_rootfs::build_debian_image(&debian, &options, &mut progress)?;
    say_built(&built, started);
    Ok(())
}

/// `rootfs overlay`: a qcow2 overlay over a base image, timed.
pub fn overlay(base: &Path, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let overlay = vmbench_rootfs::create_overlay(base, out, vmbench_rootfs::Durability::Synced)?;
    eprintln!(
        "vmbench: overlay over {} ({}, {} MiB) in {:.2} ms",
        overlay.base.display(),
        overlay.base_format.as_str(),
        overlay.virtual_size_bytes >> 20,
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("{}", overlay.path.display());
    Ok(())
}

/// Where `rootfs ext4|from-raw|debian` build: `--out`, or the image cache;
/// with the agent and this build's version.
fn image_options(
    agent: Option<PathBuf>,
    out: Option<PathBuf>,
) -> anyhow::Result<vmbench_rootfs::BuildOptions> {
    let agent = match agent {
        Some(path) => path,
        None => locate::default_agent()?,
    };
    let output = match out {
        Some(path) => vmbench_rootfs::Output::Path(path),
        None => vmbench_rootfs::Output::Cache(locate::images_dir()?),
    };
    Ok(vmbench_rootfs::BuildOptions {
        agent,
        output,
        vmbench_version: environment::vmbench_version(),
    })
}

fn progress(line: &str) {
    eprintln!("vmbench: {line}");
}

/// The image's path on stdout, what happened on stderr.
fn say_built(built: &vmbench_rootfs::Built, started: Instant) {
    if built.up_to_date {
        eprintln!("vmbench: {} is up to date", built.path.display());
    } else {
        eprintln!(
            "vmbench: built {} ({} MiB, sha256 {}) in {:.1} s",
            built.path.display(),
            built.info.size_bytes >> 20,
            &built.info.sha256[..16],
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", built.path.display());
}
