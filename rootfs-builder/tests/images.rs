//! Root images end to end: built from small trees with the real e2fsprogs,
//! read back with debugfs, checked with e2fsck, booted from through qcow2
//! overlays (opened with imago, cross-checked with qemu-img).
//!
//! A test that needs a tool this machine lacks prints `SKIPPED: <test>:
//! <reason>` and returns; under CI (`CI=true`) that is a failure instead.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vmbench_rootfs::agent::fake_static_agent;
use vmbench_rootfs::e2fs::{self, InodeKind};
use vmbench_rootfs::provenance::sha256_file;
use vmbench_rootfs::tree::scan_tree;
use vmbench_rootfs::{
    build_plain_image, build_systemd_image, create_overlay, open_read_only, read_sidecar,
    validate_image, BuildOptions, Built, DiskFormat, Durability, Error, ImageKind, Output,
    RawSource, AGENT_PATH, AGENT_UNIT, AGENT_UNIT_PATH, AGENT_UNIT_WANTS_PATH, IMAGE_JSON_PATH,
};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `tools` are all here; if not, says SKIPPED (or fails under CI).
fn have(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !e2fs::tool_available(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{} not installed", missing.join(", "));
    assert!(
        !in_ci(),
        "{test}: under CI every install step has run, yet {reason}"
    );
    println!("SKIPPED: {test}: {reason}");
    false
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A fresh directory for `test`, or `None` (after saying SKIPPED, or
    /// failing under CI) without mkfs.ext4 and debugfs, which every image
    /// test needs.
    fn new(test: &str) -> Option<Fixture> {
        have(test, &["mkfs.ext4", "debugfs"]).then(|| Fixture {
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An agent whose bytes differ with `payload`.
    fn agent(&self, payload: &[u8]) -> PathBuf {
        let path = self.path(&format!("agent-{}", payload.len()));
        fs::write(&path, fake_static_agent(payload)).unwrap();
        path
    }

    /// A small plain tree.
    fn tree(&self, name: &str) -> PathBuf {
        let root = self.path(name);
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("etc/hostname"), "guest\n").unwrap();
        fs::write(root.join("bin/sh"), vec![0x5a; 50_000]).unwrap();
        fs::set_permissions(root.join("bin/sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("sh", root.join("bin/bash")).unwrap();
        root
    }

    /// A usr-merged tree with a (fake) systemd.
    fn systemd_tree(&self, name: &str) -> PathBuf {
        let root = self.path(name);
        for dir in [
            "usr/lib/systemd",
            "usr/sbin",
            "usr/bin",
            "etc/systemd/system",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        symlink("usr/lib", root.join("lib")).unwrap();
        // Absolute, as some distributions make it: it must resolve in the tree.
        symlink("/usr/sbin", root.join("sbin")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        fs::write(root.join("usr/lib/systemd/systemd"), b"\x7fELF systemd").unwrap();
        fs::set_permissions(
            root.join("usr/lib/systemd/systemd"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("../lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
        fs::write(root.join("etc/hostname"), "debian\n").unwrap();
        root
    }

    /// A plain image of `tree` with `agent` at `out` (`size_mib` None: the
    /// default size).
    fn build_plain(
        &self,
        tree: &Path,
        size_mib: Option<u64>,
        agent: &Path,
        out: &Path,
    ) -> vmbench_rootfs::Result<Built> {
        let options = self.options(agent, Output::Path(out.to_path_buf()));
        build_plain_image(tree, size_mib, &options, &mut quiet())
    }

    /// A 64 MiB plain image of a fresh small tree at `rel`, to make
    /// overlays of.
    fn base_image(&self, rel: &str) -> PathBuf {
        let base = self.path(rel);
        let (tree, agent) = (self.tree("tree"), self.agent(b"a"));
        self.build_plain(&tree, Some(64), &agent, &base).unwrap();
        base
    }

    fn options(&self, agent: &Path, output: Output) -> BuildOptions {
        BuildOptions {
            agent: agent.to_path_buf(),
            output,
            vmbench_version: "test".into(),
        }
    }

    fn names(&self, rel: &str) -> Vec<String> {
        names_in(&self.path(rel))
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn quiet() -> impl FnMut(&str) {
    |_: &str| {}
}

/// Runs `program ARGS… FILES…`, which must succeed; its output.
fn run_ok(program: &str, args: &[&str], files: &[&Path]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {} {files:?}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// debugfs's own view of a file, not through the library.
fn debugfs_cat(image: &Path, path: &str) -> Vec<u8> {
    run_ok("debugfs", &["-R", &format!("cat {path}")], &[image]).stdout
}

/// e2fsck comes in e2fsprogs with mkfs.ext4 and debugfs, which every caller
/// required: a missing one fails the check rather than passing it unseen.
fn e2fsck_clean(image: &Path) {
    assert!(
        e2fs::tool_available("e2fsck"),
        "e2fsck is missing though mkfs.ext4 and debugfs are here"
    );
    run_ok("e2fsck", &["-fn"], &[image]);
}

fn symlink_target(image: &Path, path: &str) -> String {
    match e2fs::stat(image, path).unwrap() {
        Some(e2fs::Inode {
            kind: InodeKind::Symlink { target },
            ..
        }) => target,
        other => panic!("{path} in {} is not a symlink: {other:?}", image.display()),
    }
}

#[test]
fn a_plain_image_has_the_agent_and_init_and_leaves_the_tree_alone() {
    let Some(fx) = Fixture::new("a_plain_image_has_the_agent…") else {
        return;
    };
    let tree = fx.tree("tree");
    let agent = fx.agent(b"agent one");
    let before = scan_tree(&tree).unwrap();
    let out = fx.path("out/plain.ext4");
    let built = fx.build_plain(&tree, None, &agent, &out).unwrap();
    assert_eq!(built.path, out);
    assert!(!built.up_to_date);
    assert_eq!(scan_tree(&tree).unwrap(), before, "the tree is untouched");
    assert_eq!(fx.names("out"), ["plain.ext4", "plain.ext4.json"]);

    assert_eq!(debugfs_cat(&out, AGENT_PATH), fs::read(&agent).unwrap());
    let inode = e2fs::stat(&out, AGENT_PATH).unwrap().unwrap();
    assert_eq!(
        (inode.kind, inode.mode, inode.uid, inode.gid),
        (InodeKind::Regular, 0o755, 0, 0)
    );
    assert_eq!(symlink_target(&out, "/sbin/init"), AGENT_PATH);
    assert_eq!(
        e2fs::read_file(&out, "/bin/sh").unwrap(),
        vec![0x5a; 50_000]
    );
    assert_eq!(symlink_target(&out, "/bin/bash"), "sh");
    for dir in ["/dev", "/proc", "/sys", "/run", "/tmp"] {
        let inode = e2fs::stat(&out, dir).unwrap().unwrap();
        assert_eq!(inode.kind, InodeKind::Directory, "{dir}");
    }
    assert_eq!(e2fs::stat(&out, "/tmp").unwrap().unwrap().mode, 0o1777);
    assert_eq!(e2fs::stat(&out, AGENT_UNIT_PATH).unwrap(), None);

    let inside: serde_json::Value =
        serde_json::from_slice(&e2fs::read_file(&out, IMAGE_JSON_PATH).unwrap()).unwrap();
    assert_eq!(inside["kind"], "plain");
    assert_eq!(inside["agent_sha256"], sha256_file(&agent).unwrap());
    assert_eq!(inside["recipe"]["name"], "ext4");
    assert_eq!(inside["recipe"]["tree_sha256"], before.sha256);

    let info = read_sidecar(&out).unwrap();
    assert_eq!(info, built.info);
    assert_eq!(info.provenance.kind, ImageKind::Plain);
    assert_eq!(info.sha256, sha256_file(&out).unwrap());
    assert_eq!(info.size_bytes, fs::metadata(&out).unwrap().len());
    assert_eq!(info.size_bytes, 128 << 20, "default size for a tiny tree");
    assert_eq!(info.sources.tree.as_deref(), Some(tree.as_path()));
    e2fsck_clean(&out);

    // The whole thing validates as a bootable disk, with its sidecar.
    let disk = validate_image(&out).unwrap();
    assert_eq!(disk.format, DiskFormat::Raw);
    assert_eq!(disk.virtual_size_bytes, info.size_bytes);
    assert_eq!(disk.base_info.unwrap().sha256, info.sha256);
}

#[test]
fn a_usr_merged_sbin_gets_init_inside_the_tree() {
    let Some(fx) = Fixture::new("a_usr_merged_sbin_gets_init…") else {
        return;
    };
    let tree = fx.tree("tree");
    fs::create_dir_all(tree.join("usr/sbin")).unwrap();
    // Absolute: followed on the host it would lead to the host's /usr/sbin.
    symlink("/usr/sbin", tree.join("sbin")).unwrap();
    let agent = fx.agent(b"a");
    let out = fx.path("merged.ext4");
    fx.build_plain(&tree, Some(64), &agent, &out).unwrap();
    assert_eq!(symlink_target(&out, "/sbin"), "/usr/sbin");
    assert_eq!(symlink_target(&out, "/usr/sbin/init"), AGENT_PATH);
    assert_eq!(fs::metadata(&out).unwrap().len(), 64 << 20);
    e2fsck_clean(&out);

    // A usr-merged /sbin pointing at a missing /usr/sbin: made, then used.
    let tree = fx.tree("tree2");
    symlink("usr/sbin", tree.join("sbin")).unwrap();
    let out = fx.path("merged2.ext4");
    fx.build_plain(&tree, Some(64), &agent, &out).unwrap();
    assert_eq!(symlink_target(&out, "/usr/sbin/init"), AGENT_PATH);
    e2fsck_clean(&out);

    // A tree with its own init keeps it.
    let tree = fx.tree("tree3");
    fs::create_dir(tree.join("sbin")).unwrap();
    symlink("/bin/sh", tree.join("sbin/init")).unwrap();
    let out = fx.path("own-init.ext4");
    fx.build_plain(&tree, Some(64), &agent, &out).unwrap();
    assert_eq!(symlink_target(&out, "/sbin/init"), "/bin/sh");
}

#[test]
fn cached_images_are_named_by_their_inputs_and_reproducible() {
    let Some(fx) = Fixture::new("cached_images_are_named…") else {
        return;
    };
    let tree = fx.tree("tree");
    let agent = fx.agent(b"agent");
    let cache = fx.path("cache");
    let cached = |tree: &Path, size_mib: u64, agent: &Path, cache: &Path| {
        let options = fx.options(agent, Output::Cache(cache.to_path_buf()));
        build_plain_image(tree, Some(size_mib), &options, &mut quiet()).unwrap()
    };
    let first = cached(&tree, 64, &agent, &cache);
    assert!(first.path.starts_with(&cache));
    let name = first
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("plain-") && name.ends_with(".ext4") && name.len() == 27,
        "{name}"
    );
    let again = cached(&tree, 64, &agent, &cache);
    assert!(again.up_to_date);
    assert_eq!(again.path, first.path);

    // A copy of the tree elsewhere, built into another cache: the same name
    // and the same bytes.
    let copy = fx.tree("copy");
    let elsewhere = fx.path("cache2");
    let second = cached(&copy, 64, &agent, &elsewhere);
    assert!(!second.up_to_date);
    assert_eq!(second.path.file_name(), first.path.file_name());
    assert_eq!(second.info.sha256, first.info.sha256, "reproducible bytes");

    // Other inputs, other names.
    let other_agent = fx.agent(b"another agent");
    let other = cached(&tree, 64, &other_agent, &cache);
    assert_ne!(other.path, first.path);
    fs::write(tree.join("etc/hostname"), "changed\n").unwrap();
    let changed = cached(&tree, 64, &agent, &cache);
    assert_ne!(changed.path, first.path);
    let sized = cached(&tree, 96, &agent, &cache);
    assert_ne!(sized.path, changed.path);

    // An image written after its sidecar is not trusted.
    fs::OpenOptions::new()
        .append(true)
        .open(&changed.path)
        .unwrap()
        .set_len(changed.info.size_bytes + 4096)
        .unwrap();
    let rebuilt = cached(&tree, 64, &agent, &cache);
    assert!(!rebuilt.up_to_date);
    assert_eq!(rebuilt.info.sha256, changed.info.sha256);
    assert!(fx.names("cache").iter().all(|n| !n.ends_with(".tmp")));
}

#[test]
fn from_raw_installs_the_service_from_a_tree_and_from_an_image() {
    let Some(fx) = Fixture::new("from_raw_installs_the_service…") else {
        return;
    };
    let tree = fx.systemd_tree("debian");
    let agent = fx.agent(b"agent");
    let out = fx.path("systemd.ext4");
    let built = build_systemd_image(
        &RawSource::detect(&tree).unwrap(),
        &fx.options(&agent, Output::Path(out.clone())),
        &mut quiet(),
    )
    .unwrap();
    let check = |image: &Path| {
        assert_eq!(debugfs_cat(image, AGENT_PATH), fs::read(&agent).unwrap());
        assert_eq!(
            e2fs::read_file(image, AGENT_UNIT_PATH).unwrap(),
            AGENT_UNIT.as_bytes()
        );
        let unit = e2fs::stat(image, AGENT_UNIT_PATH).unwrap().unwrap();
        assert_eq!((unit.mode, unit.uid, unit.gid), (0o644, 0, 0));
        assert_eq!(
            symlink_target(image, AGENT_UNIT_WANTS_PATH),
            AGENT_UNIT_PATH
        );
        // systemd's own init is left alone.
        assert_eq!(
            symlink_target(image, "/usr/sbin/init"),
            "../lib/systemd/systemd"
        );
        let inside: serde_json::Value =
            serde_json::from_slice(&e2fs::read_file(image, IMAGE_JSON_PATH).unwrap()).unwrap();
        assert_eq!(inside["kind"], "systemd");
        e2fsck_clean(image);
    };
    check(&out);
    assert_eq!(built.info.provenance.kind, ImageKind::Systemd);
    assert!(built.info.provenance.unit_sha256.is_some());

    // From that image: a copy gets the agent again; the source is not touched.
    let source_sha = sha256_file(&out).unwrap();
    let again = fx.path("again.ext4");
    let other_agent = fx.agent(b"a newer agent");
    let from_image = build_systemd_image(
        &RawSource::detect(&out).unwrap(),
        &fx.options(&other_agent, Output::Path(again.clone())),
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(
        sha256_file(&out).unwrap(),
        source_sha,
        "the source is untouched"
    );
    assert_eq!(
        debugfs_cat(&again, AGENT_PATH),
        fs::read(&other_agent).unwrap()
    );
    assert_eq!(
        symlink_target(&again, AGENT_UNIT_WANTS_PATH),
        AGENT_UNIT_PATH
    );
    assert_eq!(from_image.info.size_bytes, built.info.size_bytes);
    assert_eq!(
        from_image.info.sources.image.as_deref(),
        Some(out.as_path())
    );
    e2fsck_clean(&again);
    // Sparse: the copy takes about as much disk as its source.
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&fs::metadata(p).unwrap());
    assert!(
        blocks(&again) <= blocks(&out) + 2048,
        "the copy kept the holes"
    );
}

#[test]
fn from_raw_refuses_what_is_not_a_systemd_ext4_root() {
    let Some(fx) = Fixture::new("from_raw_refuses…") else {
        return;
    };
    let agent = fx.agent(b"agent");
    let options = fx.options(&agent, Output::Cache(fx.path("cache")));

    let not_ext4 = fx.path("disk.img");
    fs::write(&not_ext4, vec![0u8; 1 << 20]).unwrap();
    let err = build_systemd_image(
        &RawSource::detect(&not_ext4).unwrap(),
        &options,
        &mut quiet(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NotExt4 { .. }), "{text}");
    assert!(text.contains("disk.img is not an ext4 image ("), "{text}");
    assert!(text.contains("byte 1080 is 0x0000, not 0xEF53"), "{text}");

    let mut mbr = vec![0u8; 1 << 20];
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    fs::write(&not_ext4, mbr).unwrap();
    let err = build_systemd_image(&RawSource::Image(not_ext4.clone()), &options, &mut quiet())
        .unwrap_err();
    assert!(err.to_string().contains("MBR partition table"), "{err}");

    fs::write(&not_ext4, b"").unwrap();
    let err = build_systemd_image(&RawSource::Image(not_ext4.clone()), &options, &mut quiet())
        .unwrap_err();
    assert!(err.to_string().contains("(it is empty)"), "{err}");

    let plain = fx.tree("plain");
    let err = build_systemd_image(&RawSource::detect(&plain).unwrap(), &options, &mut quiet())
        .unwrap_err();
    assert!(matches!(err, Error::NoSystemd { .. }), "{err}");
    assert!(err.to_string().contains("has no systemd"), "{err}");

    // A plain ext4 image (no systemd in it) is refused too.
    let plain_image = fx.path("plain.ext4");
    fx.build_plain(&plain, Some(64), &agent, &plain_image)
        .unwrap();
    let err =
        build_systemd_image(&RawSource::Image(plain_image), &options, &mut quiet()).unwrap_err();
    assert!(matches!(err, Error::NoSystemd { .. }), "{err}");

    let err = RawSource::detect(&fx.path("nope")).unwrap_err();
    assert!(err.to_string().contains("nope does not exist"), "{err}");
    assert!(!fx.path("cache").exists() || fx.names("cache").is_empty());
}

#[test]
fn a_failure_part_way_leaves_no_output() {
    let Some(fx) = Fixture::new("a_failure_part_way_leaves_no_output") else {
        return;
    };
    let tree = fx.tree("tree");
    fs::create_dir(fx.path("out")).unwrap();

    // mkfs.ext4 succeeds in 4 MiB; the 6 MiB agent then does not fit.
    let big_agent = fx.agent(&vec![1u8; 6 << 20]);
    let out = fx.path("out/small.ext4");
    let err = fx
        .build_plain(&tree, Some(4), &big_agent, &out)
        .unwrap_err();
    assert!(
        matches!(err, Error::ImageTooSmall { size_mib: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("small.ext4"), "{err}");
    assert!(fx.names("out").is_empty(), "{:?}", fx.names("out"));

    // The tree itself does not fit: mkfs.ext4 fails.
    fs::write(tree.join("big"), vec![3u8; 8 << 20]).unwrap();
    let agent = fx.agent(b"a");
    let err = fx.build_plain(&tree, Some(4), &agent, &out).unwrap_err();
    assert!(matches!(err, Error::ImageTooSmall { .. }), "{err}");
    assert!(fx.names("out").is_empty(), "{:?}", fx.names("out"));

    // Everything built, then the sidecar cannot be written: no image either.
    fs::create_dir_all(fx.path("out/blocked.ext4.json/x")).unwrap();
    let out = fx.path("out/blocked.ext4");
    fx.build_plain(&tree, Some(64), &agent, &out).unwrap_err();
    assert!(!out.exists());
    assert_eq!(fx.names("out"), ["blocked.ext4.json"]);
}

/// A tmpfs of `size` mounted for the test's lifetime.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing() {
    let test = "a_full_disk_is_a_clear_error_and_leaves_nothing";
    let Some(fx) = Fixture::new(test) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        // Mounting a tmpfs needs root; CI runs as root.
        assert!(
            !in_ci(),
            "{test}: CI runs as root, which mounting a tmpfs needs"
        );
        println!("SKIPPED: {test}: not running as root (mounting a tmpfs needs it)");
        return;
    }
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        assert!(!in_ci(), "{test}: root cannot mount a tmpfs under CI");
        println!("SKIPPED: {test}: cannot mount a tmpfs here");
        return;
    };
    let tree = fx.tree("tree");
    fs::write(tree.join("big"), vec![9u8; 3 << 20]).unwrap();
    let agent = fx.agent(b"agent");
    let out = tmpfs.dir.path().join("full.ext4");
    let err = fx.build_plain(&tree, None, &agent, &out).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert!(err.to_string().contains("full.ext4"), "{err}");
    assert!(err.to_string().contains("ENOSPC"), "{err}");
    assert_eq!(names_in(tmpfs.dir.path()), Vec::<String>::new());

    // An overlay into a full tmpfs: the same.
    let base = fx.path("base.ext4");
    fx.build_plain(&fx.tree("small"), None, &agent, &base)
        .unwrap();
    fs::write(tmpfs.dir.path().join("filler"), vec![0u8; 2 << 20]).unwrap_or(());
    let overlay = tmpfs.dir.path().join("vm.qcow2");
    let err = create_overlay(&base, &overlay, Durability::Synced).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert!(err.to_string().contains("vm.qcow2"), "{err}");
    assert_eq!(names_in(tmpfs.dir.path()), ["filler"]);
}

#[test]
fn overlays_read_through_to_the_base_and_qemu_img_agrees() {
    let Some(fx) = Fixture::new("overlays_read_through…") else {
        return;
    };
    let base = fx.base_image("images/base.ext4");
    let base_sha = sha256_file(&base).unwrap();
    let base_bytes = fs::metadata(&base).unwrap().len();

    // A relative base path: the overlay still names it absolutely.
    let overlay = fx.path("vm1/disk.qcow2");
    fs::create_dir(fx.path("vm1")).unwrap();
    let made = create_overlay(&base, &overlay, Durability::Synced).unwrap();
    assert_eq!(made.base, base.canonicalize().unwrap());
    assert_eq!(made.base_format, DiskFormat::Raw);
    assert_eq!(made.virtual_size_bytes, base_bytes);
    assert_eq!(fx.names("vm1"), ["disk.qcow2"]);

    let opened = open_read_only(&overlay).unwrap();
    assert_eq!(opened.chain.len(), 2);
    assert_eq!(opened.chain[0].format, DiskFormat::Qcow2);
    assert_eq!(opened.chain[1].path, base.canonicalize().unwrap());
    assert_eq!(opened.virtual_size_bytes(), base_bytes);
    let base_file = fs::read(&base).unwrap();
    for offset in [0u64, 1024, 4096 * 7 + 100, base_bytes - 8192] {
        let got = opened.read(offset, 8192).unwrap();
        assert_eq!(
            got,
            base_file[offset as usize..offset as usize + 8192],
            "at {offset}"
        );
    }
    drop(opened);

    let disk = validate_image(&overlay).unwrap();
    assert_eq!(disk.chain.len(), 2);
    assert_eq!(disk.virtual_size_bytes, base_bytes);
    assert!(disk.base_info.is_some(), "the base's sidecar is found");

    // An overlay over that overlay: backing format qcow2.
    let top = fx.path("vm1/top.qcow2");
    let made = create_overlay(&overlay, &top, Durability::Unsynced).unwrap();
    assert_eq!(made.base_format, DiskFormat::Qcow2);
    let opened = open_read_only(&top).unwrap();
    assert_eq!(opened.chain.len(), 3);
    assert_eq!(opened.read(0, 4096).unwrap(), base_file[..4096]);
    drop(opened);
    assert_eq!(
        sha256_file(&base).unwrap(),
        base_sha,
        "the base is untouched"
    );

    if !have("overlays_read_through… (qemu-img part)", &["qemu-img"]) {
        return;
    }
    let out = run_ok("qemu-img", &["info", "--output=json", "-U"], &[&overlay]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], base_bytes);
    assert_eq!(
        info["backing-filename"],
        base.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(info["backing-filename-format"], "raw");
    run_ok("qemu-img", &["check", "-U"], &[&overlay]);
    // qemu-img reads the same guest bytes through it.
    let raw = fx.path("converted.raw");
    run_ok("qemu-img", &["convert", "-U", "-O", "raw"], &[&top, &raw]);
    assert_eq!(sha256_file(&raw).unwrap(), base_sha);
}

#[test]
fn broken_images_are_refused_by_name() {
    let Some(fx) = Fixture::new("broken_images_are_refused_by_name") else {
        return;
    };
    let base = fx.base_image("base.ext4");
    let overlay = fx.path("good.qcow2");
    create_overlay(&base, &overlay, Durability::Unsynced).unwrap();
    let good = fs::read(&overlay).unwrap();
    let expect = |path: &Path, what: &str| {
        let err = validate_image(path).unwrap_err().to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(what), "{err}");
    };

    let empty = fx.path("empty.img");
    fs::write(&empty, b"").unwrap();
    expect(&empty, "it is empty");

    let truncated = fx.path("short.qcow2");
    fs::write(&truncated, &good[..100]).unwrap();
    expect(&truncated, "truncated");
    // Header intact, its L1 table cut off.
    fs::write(&truncated, &good[..good.len() - 1000]).unwrap();
    expect(&truncated, "truncated");

    // Written to (by imago), then its last data cluster cut off.
    let written = fx.path("written.qcow2");
    fs::write(&written, &good).unwrap();
    {
        use imago::{FormatAccess, Storage, StorageOpenOptions};
        let storage =
            imago::file::File::open(StorageOpenOptions::new().filename(&written).write(true))
                .unwrap();
        let mut qcow2 =
            imago::qcow2::Qcow2::<imago::file::File>::open_image(storage, true).unwrap();
        qcow2.set_backing(None);
        let access = FormatAccess::new(qcow2);
        access.write(&[0xabu8; 65536][..], 1 << 20).unwrap();
        access.flush().unwrap();
    }
    let with_data = fs::read(&written).unwrap();
    assert!(with_data.len() > good.len(), "the write allocated clusters");
    validate_image(&written).unwrap();
    fs::write(&written, &with_data[..with_data.len() - 65536]).unwrap();
    expect(&written, "truncated: data for disk offset 1048576");

    let corrupt = fx.path("corrupt.qcow2");
    let mut bytes = good.clone();
    bytes[4..8].copy_from_slice(&99u32.to_be_bytes()); // version 99
    fs::write(&corrupt, &bytes).unwrap();
    expect(&corrupt, "is corrupt");
    let mut bytes = good.clone();
    bytes[20..24].copy_from_slice(&40u32.to_be_bytes()); // 1 TiB clusters
    fs::write(&corrupt, &bytes).unwrap();
    expect(&corrupt, "is corrupt");

    let not_ext4 = fx.path("zeros.img");
    fs::write(&not_ext4, vec![0u8; 1 << 20]).unwrap();
    expect(&not_ext4, "is not an ext4 image");

    let missing = fx.path("nowhere.qcow2");
    expect(&missing, "does not exist");

    // The base goes away: the overlay names it.
    let moved = fx.path("moved.ext4");
    fs::rename(&base, &moved).unwrap();
    let err = validate_image(&overlay).unwrap_err().to_string();
    assert!(err.contains("good.qcow2"), "{err}");
    assert!(err.contains("base.ext4, which does not exist"), "{err}");
    let err = create_overlay(&overlay, &fx.path("x.qcow2"), Durability::Unsynced)
        .unwrap_err()
        .to_string();
    assert!(err.contains("base.ext4, which does not exist"), "{err}");
    assert!(!fx.path("x.qcow2").exists());
}
