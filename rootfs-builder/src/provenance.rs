//! How an image was made, and the content-addressed name that follows.
//!
//! Every image carries its [`Provenance`] twice: inside, as
//! `/etc/vmbench/image.json`, so a guest (and whoever inspects a disk) can
//! say what it is; and beside it, as the sidecar `<image>.json`
//! ([`ImageInfo`]: the provenance plus the image's own size and SHA-256 and
//! the host paths it was made from), which the host reads to record the
//! image's identity in its results without hashing gigabytes.
//!
//! The name is `<stem>-<16 hex digits>.ext4`, the digits from the SHA-256 of
//! everything that went in ([`Provenance::inputs_sha256`]): the same inputs
//! give the same path, so a second build finds the first one's image.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// This crate's version: part of every image's inputs, since the code that
/// lays out the image is.
/// The crate's version and the revision of what goes into an image: bump
/// the revision whenever an image built by the same inputs would come out
/// different (a new file, another mkfs option), or cached images built the
/// old way keep being reused as "up to date".
pub const BUILDER_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+recipe.2");

/// What boots from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A plain tree: `/sbin/init` is the agent (unless the tree has its own).
    Plain,
    /// A systemd distribution: the agent runs as the unit [`crate::AGENT_UNIT`].
    Systemd,
}

/// What a from-raw image was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Image,
    Tree,
}

/// The recipe and its inputs, without host paths (a copy of the same tree
/// elsewhere is the same input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Recipe {
    /// `vmbench rootfs ext4`: a directory tree.
    Ext4 {
        tree_sha256: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        size_mib: Option<u64>,
    },
    /// `vmbench rootfs from-raw`: an ext4 image or a tree of a systemd distribution.
    FromRaw {
        source: SourceKind,
        source_sha256: String,
    },
    /// `vmbench rootfs debian`: debootstrap.
    Debian {
        suite: String,
        mirror: String,
        variant: String,
        packages: Vec<String>,
    },
}

/// How an image was made: written into it and into its sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub kind: ImageKind,
    pub recipe: Recipe,
    /// SHA-256 of the canonical inputs (recipe, kind, agent, unit, builder
    /// version); its first 16 hex digits name the image.
    pub inputs_sha256: String,
    pub agent_sha256: String,
    /// The agent's systemd unit, for [`ImageKind::Systemd`].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit_sha256: Option<String>,
    pub builder_version: String,
    /// The vmbench that built it (may name a git revision; not an input).
    pub vmbench_version: String,
}

/// What the name is derived from: [`Provenance`] minus the fields that are
/// derived or informational.
#[derive(Serialize)]
struct Inputs<'a> {
    kind: ImageKind,
    recipe: &'a Recipe,
    agent_sha256: &'a str,
    unit_sha256: Option<&'a str>,
    builder_version: &'a str,
}

impl Provenance {
    pub fn new(
        kind: ImageKind,
        recipe: Recipe,
        agent_sha256: String,
        unit_sha256: Option<String>,
        vmbench_version: String,
    ) -> Self {
        let inputs = Inputs {
            kind,
            recipe: &recipe,
            agent_sha256: &agent_sha256,
            unit_sha256: unit_sha256.as_deref(),
            builder_version: BUILDER_VERSION,
        };
        let canonical = serde_json::to_vec(&inputs).expect("plain data serializes");
        Provenance {
            kind,
            inputs_sha256: sha256_hex(&canonical),
            recipe,
            agent_sha256,
            unit_sha256,
            builder_version: BUILDER_VERSION.to_string(),
            vmbench_version,
        }
    }

    /// The content-addressed file name.
    pub fn file_name(&self) -> String {
        let stem = match &self.recipe {
            Recipe::Ext4 { .. } => "plain".to_string(),
            Recipe::FromRaw { .. } => "systemd".to_string(),
            Recipe::Debian { suite, .. } => format!("debian-{suite}"),
        };
        format!("{stem}-{}.ext4", &self.inputs_sha256[..16])
    }
}

/// The host files an image was made from (for people; not inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tree: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image: Option<PathBuf>,
    pub agent: PathBuf,
}

/// The sidecar `<image>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    #[serde(flatten)]
    pub provenance: Provenance,
    /// Always "raw": the image file is the file system.
    pub format: String,
    /// Always "ext4".
    pub filesystem: String,
    pub size_bytes: u64,
    /// SHA-256 of the image file as written.
    pub sha256: String,
    pub e2fsprogs_version: String,
    pub sources: Sources,
}

/// `<image>.json`.
pub fn sidecar_path(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    image.with_file_name(name)
}

/// Reads the sidecar of `image`.
pub fn read_sidecar(image: &Path) -> Result<ImageInfo> {
    let path = sidecar_path(image);
    let text = fs::read(&path).map_err(|source| Error::Sidecar {
        image: image.to_path_buf(),
        path: path.clone(),
        detail: source.to_string(),
    })?;
    serde_json::from_slice(&text).map_err(|source| Error::Sidecar {
        image: image.to_path_buf(),
        path,
        detail: source.to_string(),
    })
}

/// The sidecar of `image` if the image is the complete, unmodified result
/// of `inputs_sha256`: the sidecar (written last) names those inputs, the
/// size matches, and the image was not written after its sidecar. Checking
/// its SHA-256 instead would read the whole image on every use.
pub(crate) fn up_to_date(image: &Path, inputs_sha256: &str) -> Option<ImageInfo> {
    let info = read_sidecar(image).ok()?;
    let image_meta = fs::metadata(image).ok()?;
    let sidecar_meta = fs::metadata(sidecar_path(image)).ok()?;
    let fresh = info.provenance.inputs_sha256 == inputs_sha256
        && image_meta.is_file()
        && image_meta.len() == info.size_bytes
        && image_meta.modified().ok()? <= sidecar_meta.modified().ok()?;
    fresh.then_some(info)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let read_err = |source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian(mirror: &str) -> Provenance {
        Provenance::new(
            ImageKind::Systemd,
            Recipe::Debian {
                suite: "bookworm".into(),
                mirror: mirror.into(),
                variant: "minbase".into(),
                packages: vec!["systemd".into()],
            },
            "aa".repeat(32),
            Some("bb".repeat(32)),
            "0.1.0 (git 1234)".into(),
        )
    }

    #[test]
    fn names_follow_the_inputs_only() {
        let a = debian("http://deb.debian.org/debian");
        let mut same = debian("http://deb.debian.org/debian");
        assert_eq!(a.file_name(), same.file_name());
        same.vmbench_version = "other".into();
        assert_eq!(
            Provenance::new(
                same.kind,
                same.recipe.clone(),
                same.agent_sha256.clone(),
                same.unit_sha256.clone(),
                "other".into()
            )
            .file_name(),
            a.file_name()
        );
        let b = debian("http://mirror.example/debian");
        assert_ne!(a.file_name(), b.file_name());
        assert!(
            a.file_name().starts_with("debian-bookworm-"),
            "{}",
            a.file_name()
        );
        assert!(a.file_name().ends_with(".ext4"));
    }

    #[test]
    fn sidecars_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.ext4");
        let info = ImageInfo {
            provenance: debian("m"),
            format: "raw".into(),
            filesystem: "ext4".into(),
            size_bytes: 4096,
            sha256: "cc".repeat(32),
            e2fsprogs_version: "1.47.0".into(),
            sources: Sources {
                agent: "/a".into(),
                ..Sources::default()
            },
        };
        fs::write(&image, vec![0; 4096]).unwrap();
        fs::write(sidecar_path(&image), serde_json::to_vec(&info).unwrap()).unwrap();
        assert_eq!(read_sidecar(&image).unwrap(), info);
        assert!(up_to_date(&image, &info.provenance.inputs_sha256).is_some());
        assert!(up_to_date(&image, "other").is_none());
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(sidecar_path(&image)).unwrap()).unwrap();
        assert_eq!(json["kind"], "systemd");
        assert_eq!(json["recipe"]["name"], "debian");
    }

    #[test]
    fn a_missing_or_bad_sidecar_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.ext4");
        let err = read_sidecar(&image).unwrap_err().to_string();
        assert!(err.contains("x.ext4.json"), "{err}");
        fs::write(sidecar_path(&image), b"{").unwrap();
        let err = read_sidecar(&image).unwrap_err().to_string();
        assert!(err.contains("x.ext4.json"), "{err}");
    }
}
