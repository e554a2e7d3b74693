//! A minimal Debian with systemd: debootstrap's `minbase` variant plus
//! systemd, systemd-sysv and udev, set up for a microVM (hostname, an fstab
//! for `/dev/vda`, none of the host's network settings), then built into an
//! image as [`crate::build_systemd_image`] builds a tree.
//!
//! debootstrap needs root (it creates device nodes and chroots to run the
//! packages' scripts) and takes a minute or two; it prints a line per step,
//! which is boiled down here to a line per stage. Its whole output goes to
//! `<image>.debootstrap.log`, kept when it fails.
//!
//! The image is named by its recipe (suite, mirror, packages, agent, unit,
//! this crate's version), known before anything is downloaded, so a second
//! run finds the first one's image without running debootstrap. The archive
//! changes under the same suite name; a rebuild is asked for by removing
//! the image.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::agent::check_agent;
use crate::atomic::parent_dir;
use crate::image::{assemble, existing, provenance_of, BuildOptions, Built, Content, Job};
use crate::lookup::{lookup, Lookup};
use crate::provenance::{ImageKind, Recipe, Sources};
use crate::systemd::find_systemd;
use crate::tree::{scan_tree, HostTree};
use crate::{Error, Result};

pub const DEFAULT_SUITE: &str = "bookworm";
pub const VARIANT: &str = "minbase";
/// What `--include` adds to minbase: systemd as PID 1 and udev for /dev.
pub const PACKAGES: [&str; 3] = ["systemd", "systemd-sysv", "udev"];
/// The mirror when the host's apt configuration names none.
pub const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";
const APT_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const APT_SOURCES_LIST: &str = "/etc/apt/sources.list";
pub const HOSTNAME: &str = "vmbench";
pub const FSTAB: &str = "\
# The root disk as vmbench's VMs attach it (virtio-blk, the first disk).
/dev/vda / ext4 rw,relatime 0 0
";
const HOSTS: &str = "\
127.0.0.1\tlocalhost
127.0.1.1\tvmbench
::1\tlocalhost ip6-localhost ip6-loopback
";

/// Which Debian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debian {
    pub suite: String,
    pub mirror: String,
}

impl Default for Debian {
    /// Bookworm from the mirror this host's apt uses.
    fn default() -> Self {
        Debian {
            suite: DEFAULT_SUITE.to_string(),
            mirror: default_mirror(),
        }
    }
}

impl Debian {
    fn recipe(&self) -> Recipe {
        Recipe::Debian {
            suite: self.suite.clone(),
            mirror: self.mirror.clone(),
            variant: VARIANT.to_string(),
            packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// The Debian mirror the host's apt reads (deb822 `debian.sources`, then
/// the one-line `sources.list`), or [`FALLBACK_MIRROR`].
pub fn default_mirror() -> String {
    fs::read_to_string(APT_SOURCES)
        .ok()
        .and_then(|text| mirror_from_deb822(&text))
        .or_else(|| {
            fs::read_to_string(APT_SOURCES_LIST)
                .ok()
                .and_then(|text| mirror_from_sources_list(&text))
        })
        .unwrap_or_else(|| FALLBACK_MIRROR.to_string())
}

/// The first `deb` stanza's first URI that is not the security archive.
fn mirror_from_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) || !is_deb {
            continue;
        }
        if let Some(uri) = field("URIs")
            .and_then(|uris| uris.split_whitespace().next().map(str::to_string))
            .filter(|uri| !uri.contains("security"))
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

fn mirror_from_sources_list(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
        (words.next()? == "deb")
            .then(|| words.next())
            .flatten()
            .filter(|uri| !uri.contains("security"))
            .map(|uri| uri.trim_end_matches('/').to_string())
    })
}

/// `vmbench rootfs debian`: debootstrap, set up for a microVM, and built
/// into an image with the agent as a systemd service. Needs root, unless
/// the image is up to date.
pub fn build_debian_image(
    debian: &Debian,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built> {
    let suite_ok = !debian.suite.is_empty()
        && debian
            .suite
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !suite_ok {
        return Err(Error::BadSuite {
            suite: debian.suite.clone(),
        });
    }
    let agent = check_agent(&options.agent)?;
    let (provenance, out) = provenance_of(ImageKind::Systemd, debian.recipe(), &agent, options);
    if let Some(built) = existing(&provenance, &out) {
        return Ok(built);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NeedsRoot {
            what:
                "debootstrap (it creates device nodes and runs the packages' scripts in a chroot)",
        });
    }
    let dir = parent_dir(&out);
    fs::create_dir_all(dir).map_err(|source| Error::write(dir, source))?;
    // Beside the image: the same file system, with room for it.
    let work = tempfile::Builder::new()
        .prefix(".debootstrap-")
        .tempdir_in(dir)
        .map_err(|source| Error::write(dir, source))?;
    let tree = work.path().join("root");
    let log = log_path(&out);
    let result = debootstrap(debian, &tree, &log, progress).and_then(|()| {
        progress("configuring for a microVM");
        configure_for_microvm(&tree)?;
        if find_systemd(&HostTree { root: &tree })?.is_none() {
            return Err(Error::NoSystemd { path: tree.clone() });
        }
        progress("hashing the tree");
        let summary = scan_tree(&tree)?;
        let job = Job {
            kind: ImageKind::Systemd,
            recipe: debian.recipe(),
            content: Content::Tree {
                path: &tree,
                summary,
                size_mib: None,
            },
            agent,
            sources: Sources {
                tree: None,
                image: None,
                agent: options.agent.clone(),
            },
        };
        assemble(job, options, progress)
    });
    unmount_below(work.path());
    if result.is_ok() {
        let _ = fs::remove_file(&log);
    }
    result
}

/// `<image>.debootstrap.log`.
fn log_path(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".debootstrap.log");
    image.with_file_name(name)
}

/// Runs debootstrap into `target`, its output into `log`, a line per stage
/// to `progress`.
pub fn debootstrap(
    debian: &Debian,
    target: &Path,
    log: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let log_err = |source| Error::Io {
        what: "write",
        path: log.to_path_buf(),
        source,
    };
    let mut log_file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(log)
        .map_err(log_err)?;
    let stderr = log_file.try_clone().map_err(log_err)?;
    progress(&format!(
        "debootstrap --variant={VARIANT} --include={} {} from {}",
        PACKAGES.join(","),
        debian.suite,
        debian.mirror
    ));
    let started = Instant::now();
    let mut child = Command::new("debootstrap")
        .arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(&debian.suite)
        .arg(target)
        .arg(&debian.mirror)
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing {
                tool: "debootstrap",
                package: "debootstrap",
            },
            _ => Error::Io {
                what: "run debootstrap for",
                path: target.to_path_buf(),
                source,
            },
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stage = "";
    let mut last_error = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(log_err)?;
        writeln!(log_file, "{line}").map_err(log_err)?;
        if line.starts_with("E: ") {
            last_error = Some(line.clone());
        }
        if let Some(next) = stage_of(&line) {
            if next != stage {
                stage = next;
                progress(&format!(
                    "debootstrap: {stage} ({:.1} s)",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
    }
    let status = child.wait().map_err(|source| Error::Io {
        what: "run debootstrap for",
        path: target.to_path_buf(),
        source,
    })?;
    if status.success() {
        progress(&format!(
            "debootstrap finished in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        return Ok(());
    }
    // Errors may have gone to stderr, which went straight to the log.
    let detail = last_error
        .or_else(|| {
            fs::read_to_string(log).ok().and_then(|text| {
                text.lines()
                    .rev()
                    .find(|l| l.starts_with("E: "))
                    .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
                    .map(str::to_string)
            })
        })
        .unwrap_or_else(|| "(no output)".to_string());
    Err(Error::Debootstrap {
        status: status.to_string(),
        detail,
        log: log.to_path_buf(),
    })
}

/// The stage a debootstrap progress line belongs to.
fn stage_of(line: &str) -> Option<&'static str> {
    let message = line.strip_prefix("I: ")?;
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| message.starts_with(p));
    Some(
        if starts(&[
            "Retrieving InRelease",
            "Retrieving Release",
            "Checking Release",
            "Valid Release",
            "Retrieving Packages",
            "Validating Packages",
            "Keyring file",
        ]) {
            "fetching the package index"
        } else if starts(&["Resolving", "Checking component", "Found "]) {
            "resolving dependencies"
        } else if starts(&["Retrieving ", "Validating "]) {
            "downloading packages"
        } else if starts(&["Extracting ", "Chosen extractor"]) {
            "extracting packages"
        } else if starts(&["Installing ", "Unpacking "]) {
            "installing packages"
        } else if starts(&["Configuring "]) {
            "configuring packages"
        } else if starts(&["Base system installed"]) {
            "installed"
        } else {
            return None;
        },
    )
}

/// Sets the tree up as a microVM's root: hostname `vmbench`, an fstab
/// mounting `/dev/vda` as `/`, none of the host's own settings (debootstrap
/// copies the host's hostname and resolv.conf into the tree), and without
/// apt's downloaded packages and package lists (about 90 of debootstrap's
/// 263 MB; Debian's container images drop them too, and `apt-get update`
/// in a guest fetches current lists anyway).
pub fn configure_for_microvm(root: &Path) -> Result<()> {
    remove_files_in(root, "/var/cache/apt/archives", |name| {
        name.ends_with(".deb")
    })?;
    remove_files_in(root, "/var/lib/apt/lists", |name| name != "lock")?;
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = guest_file(root, rel)?;
        // A symlink there (even one to the host's own file) is replaced,
        // never written through.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&path).map_err(|source| Error::write(&path, source))?;
        }
        fs::write(&path, text).map_err(|source| Error::write(&path, source))
    };
    write("/etc/hostname", &format!("{HOSTNAME}\n"))?;
    write("/etc/hosts", HOSTS)?;
    write("/etc/fstab", FSTAB)?;
    // An installed system has run systemd-update-done once: without these
    // stamps every boot of a fresh overlay would count as "after an
    // update" and run ldconfig, hwdb-update and journal-catalog-update,
    // which a real boot does not. (Every inode gets the image's fixed time,
    // so /usr is not newer than the stamps.)
    let stamp = format!(
        "# Written by vmbench rootfs, as systemd-update-done would.\nTIMESTAMP_NSEC={}\n",
        crate::e2fs::FIXED_TIME_S * 1_000_000_000
    );
    write("/etc/.updated", &stamp)?;
    write("/var/.updated", &stamp)?;
    let resolv = guest_file(root, "/etc/resolv.conf")?;
    match fs::remove_file(&resolv) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::write(&resolv, error)),
    }
}

/// Removes the regular files in the guest directory `dir` whose names
/// `wanted` accepts; a missing directory has none.
fn remove_files_in(root: &Path, dir: &str, wanted: impl Fn(&str) -> bool) -> Result<()> {
    let real = match lookup(&HostTree { root }, dir, true)? {
        Lookup::Found { real, .. } => real,
        Lookup::Missing { .. } => return Ok(()),
    };
    let host_dir = real.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let entries = fs::read_dir(&host_dir).map_err(|source| Error::ReadTree {
        path: host_dir.clone(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadTree {
            path: host_dir.clone(),
            source,
        })?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && wanted(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| Error::write(&path, source))?;
        }
    }
    Ok(())
}

/// The host path of the guest file `path` in `root`, its directory's
/// symlinks resolved inside the root; the file itself is replaced, not
/// followed.
fn guest_file(root: &Path, path: &str) -> Result<PathBuf> {
    let view = HostTree { root };
    let real = match lookup(&view, path, false)? {
        Lookup::Found { real, .. } => real,
        Lookup::Missing { mut dir, rest } if rest.len() == 1 => {
            dir.extend(rest);
            dir
        }
        Lookup::Missing { .. } => {
            return Err(Error::NotADirectory {
                root: format!("tree {}", root.display()),
                path: path.rsplit_once('/').map_or("/", |(d, _)| d).to_string(),
            })
        }
    };
    Ok(real.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// Unmounts whatever a failed debootstrap left mounted below `dir` (it
/// mounts /proc and /sys in the target), deepest first, so removing the
/// tree cannot reach into them.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in mounts {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_the_main_deb822_stanza() {
        let text = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let only_security = "Types: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(mirror_from_deb822(only_security), None);
        let disabled = "Types: deb\nEnabled: no\nURIs: http://a/debian\n";
        assert_eq!(mirror_from_deb822(disabled), None);
        let src_only = "Types: deb-src\nURIs: http://a/debian\n";
        assert_eq!(mirror_from_deb822(src_only), None);
    }

    #[test]
    fn the_mirror_comes_from_a_one_line_sources_list() {
        let text = "# comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources_list(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn debootstrap_lines_map_to_stages() {
        assert_eq!(
            stage_of("I: Retrieving InRelease "),
            Some("fetching the package index")
        );
        assert_eq!(
            stage_of("I: Retrieving libc6 2.36-9+deb12u10"),
            Some("downloading packages")
        );
        assert_eq!(
            stage_of("I: Extracting libc6..."),
            Some("extracting packages")
        );
        assert_eq!(
            stage_of("I: Configuring systemd..."),
            Some("configuring packages")
        );
        assert_eq!(stage_of("W: something"), None);
    }

    #[test]
    fn a_tree_is_set_up_for_a_microvm_without_host_settings() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        fs::write(root.join("etc/hostname"), "buildhost\n").unwrap();
        fs::write(root.join("etc/resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        // A link out of the tree must be replaced, not written through.
        let outside = tempfile::tempdir().unwrap();
        let host_file = outside.path().join("hosts");
        fs::write(&host_file, "original\n").unwrap();
        std::os::unix::fs::symlink(&host_file, root.join("etc/hosts")).unwrap();
        configure_for_microvm(root).unwrap();
        assert_eq!(fs::read_to_string(&host_file).unwrap(), "original\n");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "vmbench\n"
        );
        assert!(fs::read_to_string(root.join("etc/fstab"))
            .unwrap()
            .contains("/dev/vda / ext4 rw,relatime 0 0\n"));
        assert!(!root.join("etc/resolv.conf").exists());
        assert!(fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .contains("vmbench"));
        for stamp in ["etc/.updated", "var/.updated"] {
            assert!(
                fs::read_to_string(root.join(stamp))
                    .unwrap()
                    .contains("TIMESTAMP_NSEC=1700000000000000000"),
                "{stamp}"
            );
        }
    }

    #[test]
    fn apt_downloads_and_lists_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("var/cache/apt/archives/partial")).unwrap();
        fs::create_dir_all(root.join("var/lib/apt/lists/partial")).unwrap();
        fs::write(root.join("var/cache/apt/archives/bash_5.2_amd64.deb"), b"x").unwrap();
        fs::write(root.join("var/cache/apt/archives/lock"), b"").unwrap();
        fs::write(root.join("var/lib/apt/lists/x_Packages"), b"x").unwrap();
        fs::write(root.join("var/lib/apt/lists/lock"), b"").unwrap();
        configure_for_microvm(root).unwrap();
        let names = |d: &str| {
            let mut n: Vec<String> = fs::read_dir(root.join(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names("var/cache/apt/archives"), ["lock", "partial"]);
        assert_eq!(names("var/lib/apt/lists"), ["lock", "partial"]);
    }

    #[test]
    fn a_suite_must_be_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let options = BuildOptions {
            agent: dir.path().join("agent"),
            output: crate::Output::Cache(dir.path().join("images")),
            vmbench_version: "test".into(),
        };
        let debian = Debian {
            suite: "../../etc".into(),
            mirror: FALLBACK_MIRROR.into(),
        };
        let err = build_debian_image(&debian, &options, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::BadSuite { .. }), "{err}");
    }
}
