//! Build-time facts the binary records in every result: the hash of the kernel
//! config fragments (the same value kernel-config/build.sh computes, so a cached
//! kernel built from other fragments is noticed) and the git revision.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let fragments = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/fragments");
    println!("cargo:rerun-if-changed={}", fragments.display());
    let mut names: Vec<String> = std::fs::read_dir(&fragments)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".config"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut hasher = Sha256::new();
    for name in &names {
        let path = fragments.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        hasher.update(format!("{name}\n").as_bytes());
        hasher.update(std::fs::read(&path).expect("read kernel config fragment"));
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=VMBENCH_FRAGMENTS_SHA256={digest}");

    let git_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git");
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!("cargo:rerun-if-changed={}", git_dir.join("refs").display());
    let rev = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=VMBENCH_GIT_REV={rev}");
}
