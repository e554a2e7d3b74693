//! Helpers for vmbench's end-to-end tests: find the real binaries, decide
//! whether a test can run here, and read results.json; `boot` runs `vmbench
//! boot`, `vmm` runs `vmbench vmm`, `vsock` is the host's side of the vsock
//! test guest, `micro` the host's side of the agent's bench mode, `vmexit`
//! reads the vmexit guest's report, `elf` checks a freestanding guest's ELF.
//!
//! A test that needs something this machine lacks prints `SKIPPED: <reason>`
//! and returns; under CI (`CI=true`) a missing package or kernel is a failure
//! instead, since the setup script installs them. Only native KVM may be
//! skipped there: no install step can provide it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod boot;
pub mod elf;
pub mod micro;
pub mod vmexit;
pub mod vmm;
pub mod vsock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `vmbench` binary of the same profile as this test.
pub fn vmbench_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VMBENCH_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> -> target/<profile>/vmbench
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("vmbench");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// The static guest agent built by scripts/build-agent.sh.
pub fn agent_bin() -> PathBuf {
    workspace().join("target/x86_64-unknown-linux-gnu/release/vmbench-init")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// For a test that cannot run here: prints `SKIPPED: <test>: <reason>`, or
/// panics under CI, where every install step has run and nothing may be
/// missing.
pub fn skip_unless_ci(test: &str, reason: &str) {
    assert!(
        !in_ci(),
        "{test}: under CI every install step has run, yet {reason}"
    );
    println!("SKIPPED: {test}: {reason}");
}

/// Whether `vmbench doctor` says guests can boot here. When they cannot, prints
/// `SKIPPED: <reason>` and returns false, or panics under CI.
pub fn can_boot_guests(test: &str) -> bool {
    let out = Command::new(vmbench_bin())
        .arg("doctor")
        .output()
        .expect("run vmbench doctor");
    if out.status.success() && agent_bin().is_file() {
        return true;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("MISSING") || l.contains("fix:"))
        .collect();
    let reason = if agent_bin().is_file() {
        format!("vmbench doctor: {}", missing.join("; "))
    } else {
        format!(
            "the static agent {} is not built (scripts/build-agent.sh)",
            agent_bin().display()
        )
    };
    skip_unless_ci(test, &reason);
    false
}

/// Runs vmbench with `args`; returns its output.
pub fn vmbench(args: &[&str]) -> Output {
    Command::new(vmbench_bin())
        .args(args)
        .env("VMBENCH_AGENT", agent_bin())
        .env("VMBENCH_STORE", test_store())
        .output()
        .expect("run vmbench")
}

/// The results store this test binary's runs go to (a SQLite file in a
/// directory of its own, removed with the process's temporary files), so
/// tests never write to the user's own store.
pub fn test_store() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
        .join("results.db")
}

pub fn results(out_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out_dir.join("results.json")).expect("results.json exists");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// A readable dump of a command's output, for assertion messages.
pub fn dump(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Checks that `out` failed with exit `code` and said why in one line on
/// stderr; returns stderr.
pub fn one_line_error(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", dump(out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// A minimal x86-64 ELF executable: one PT_LOAD at 1 MiB holding the headers
/// and then `code`, entered at the first byte of `code`. Enough for
/// linux-loader, and for hand-assembled guests that need no Linux.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const LOAD_ADDR: u64 = 0x10_0000;
    const HEADERS_BYTES: u64 = 64 + 56;
    let total = HEADERS_BYTES + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(LOAD_ADDR + HEADERS_BYTES).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, LOAD_ADDR, LOAD_ADDR, total, total, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(elf.len() as u64, HEADERS_BYTES);
    elf.extend_from_slice(code);
    elf
}

/// Whether /dev/kvm can run a VM here; prints `SKIPPED:` when it cannot.
/// (No install step gives a host KVM, so this may skip under CI too.)
pub fn have_kvm(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED: {test}: cannot open /dev/kvm: {e}");
            false
        }
    }
}

/// `vmbench doctor`'s KVM line ("kvm  <level>  native: …", "… emulated: …"
/// or "… absent (…)") and whether it says native.
pub fn kvm_verdict() -> (bool, String) {
    let doctor = Command::new(vmbench_bin()).arg("doctor").output().unwrap();
    let line = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .find(|l| l.starts_with("kvm "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "vmbench doctor printed no kvm line".into());
    let native = line.split_whitespace().nth(2) == Some("native:");
    (native, line)
}

/// SHA-256 of a file, hex (by `sha256sum`).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", dump(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A small plain root tree with a marker file (`/etc/motd`), built into
/// the raw ext4 image `<dir>/base.ext4` by `vmbench rootfs ext4`.
pub fn plain_base(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "vmbench root disk\n").unwrap();
    let base = dir.join("base.ext4");
    let out = vmbench(&[
        "rootfs",
        "ext4",
        "--from",
        tree.to_str().unwrap(),
        "--out",
        base.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", dump(&out));
    base
}

/// One field a format document (`docs/*.md`) describes: its JSON path and
/// whether it may be absent where the object that would hold it is present.
///
/// Paths join object keys with `.`, write an array's elements as `[]`
/// (`vcpus[].index`) and a key that is data rather than a fixed name as a
/// `<placeholder>` (`unclaimed_ports.<port>`), which matches any one key;
/// `{a,b}` matches either key (`aggregate.{total_ms,vmm_ms}.n`), for
/// fields that share their rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentedPath {
    pub path: String,
    pub optional: bool,
}

/// The paths the tables under the heading `heading` of `doc` document
/// (its subsections included): every table row's first cell holds a path
/// in backticks, followed by `(optional)` when the field may be absent.
pub fn documented_paths(doc: &Path, heading: &str) -> Vec<DocumentedPath> {
    let text = std::fs::read_to_string(doc).expect("the format document exists");
    let level = |line: &str| line.chars().take_while(|&c| c == '#').count();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| level(l) > 0 && l.trim_start_matches('#').trim() == heading)
        .unwrap_or_else(|| panic!("{} has no heading {heading:?}", doc.display()));
    let section_level = level(lines[start]);
    let mut paths = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if (1..=section_level).contains(&level(line)) {
            break;
        }
        let is_separator = |l: &str| l.starts_with('|') && l.chars().all(|c| "|-: ".contains(c));
        let is_header = lines.get(i + 1).is_some_and(|next| is_separator(next));
        if !line.starts_with('|') || is_separator(line) || is_header {
            continue;
        }
        let first_cell = line.trim_start_matches('|').split('|').next().unwrap_or("");
        let path = first_cell
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("a row without a `path`: {line}"));
        paths.push(DocumentedPath {
            path: path.to_string(),
            optional: first_cell.contains("(optional)"),
        });
    }
    paths
}

/// Every node under `value` with its path: each object member (`true`)
/// and each array element (`false`, its path ending in `[]`).
fn nodes(value: &serde_json::Value) -> Vec<(String, &serde_json::Value, bool)> {
    fn walk<'v>(
        value: &'v serde_json::Value,
        at: &str,
        out: &mut Vec<(String, &'v serde_json::Value, bool)>,
    ) {
        match value {
            serde_json::Value::Object(members) => {
                for (key, member) in members {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    out.push((path.clone(), member, true));
                    walk(member, &path, out);
                }
            }
            serde_json::Value::Array(elements) => {
                for element in elements {
                    let path = format!("{at}[]");
                    out.push((path.clone(), element, false));
                    walk(element, &path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

/// The path of every object member in `value`, in the syntax of
/// [`DocumentedPath`] but with the real keys.
pub fn json_paths(value: &serde_json::Value) -> std::collections::BTreeSet<String> {
    nodes(value)
        .into_iter()
        .filter(|(_, _, member)| *member)
        .map(|(path, _, _)| path)
        .collect()
}

/// A path's steps: its keys, with each `[]` a step of its own.
fn path_steps(path: &str) -> Vec<&str> {
    let mut steps = Vec::new();
    for key in path.split('.') {
        let name = key.trim_end_matches("[]");
        steps.push(name);
        steps.extend(std::iter::repeat_n("[]", (key.len() - name.len()) / 2));
    }
    steps
}

/// Whether the first steps of `path` are those of `pattern`, where a
/// `<placeholder>` step matches any key and `{a,b}` either of its keys.
fn starts_with_steps(path: &[&str], pattern: &[&str]) -> bool {
    path.len() >= pattern.len()
        && pattern.iter().zip(path).all(|(want, have)| {
            let placeholder = want.starts_with('<') && want.ends_with('>') && *have != "[]";
            let either = want
                .strip_prefix('{')
                .and_then(|w| w.strip_suffix('}'))
                .is_some_and(|keys| keys.split(',').any(|k| k == *have));
            want == have || placeholder || either
        })
}

/// The paths in `value` that hold an object (not null, not a number): the
/// objects whose documented fields must be there. The root is `""`.
fn object_paths(value: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let root = value.is_object().then(String::new);
    nodes(value)
        .into_iter()
        .filter(|(_, node, _)| node.is_object())
        .map(|(path, _, _)| path)
        .chain(root)
        .collect()
}

/// Whether `path` (real keys) is the field `pattern` documents.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let (pattern, path) = (path_steps(pattern), path_steps(path));
    pattern.len() == path.len() && starts_with_steps(&path, &pattern)
}

/// Where `value` and its document disagree: the paths in `value` that no
/// row documents, and the documented fields `value` lacks although they
/// are not optional and the object that holds them is there.
pub fn doc_mismatches(
    value: &serde_json::Value,
    documented: &[DocumentedPath],
) -> (Vec<String>, Vec<String>) {
    let present = json_paths(value);
    let undocumented = present
        .iter()
        .filter(|path| !documented.iter().any(|d| path_matches(&d.path, path)))
        .cloned()
        .collect();
    let objects = object_paths(value);
    // A required field must be in every object that should hold it.
    let missing = documented
        .iter()
        .filter(|d| !d.optional)
        .filter(|d| {
            let steps = path_steps(&d.path);
            let holder = &steps[..steps.len() - 1];
            objects.iter().any(|object| {
                let object_steps: Vec<&str> = if object.is_empty() {
                    Vec::new()
                } else {
                    path_steps(object)
                };
                object_steps.len() == holder.len()
                    && starts_with_steps(&object_steps, holder)
                    && !present.iter().any(|p| {
                        let p_steps = path_steps(p);
                        p_steps.len() == steps.len()
                            && p_steps.starts_with(&object_steps)
                            && starts_with_steps(&p_steps, &steps)
                    })
            })
        })
        .map(|d| d.path.clone())
        .collect();
    (undocumented, missing)
}

/// Asserts that `value` is what its format document `docs/<doc>` says:
/// every field in it is documented under "Fields", every documented field
/// that is not optional is there, and its `schema_version` is the
/// document's.
pub fn assert_follows_its_document(value: &serde_json::Value, doc: &str) {
    let doc = workspace().join("docs").join(doc);
    let documented = documented_paths(&doc, "Fields");
    let (undocumented, missing) = doc_mismatches(value, &documented);
    assert!(
        undocumented.is_empty(),
        "fields {} does not describe: {undocumented:?}",
        doc.display()
    );
    assert!(
        missing.is_empty(),
        "fields {} says are always there, missing: {missing:?}",
        doc.display()
    );
    assert_eq!(value["schema_version"], documented_schema_version(&doc));
}

/// The version a format document describes, from its sentence "The
/// current `schema_version` is **N**."
pub fn documented_schema_version(doc: &Path) -> u64 {
    let text = std::fs::read_to_string(doc).expect("the format document exists");
    text.split_once("`schema_version` is **")
        .and_then(|(_, rest)| rest.split_once("**"))
        .and_then(|(version, _)| version.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{} says nowhere \"`schema_version` is **N**\"",
                doc.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# A format

The current `schema_version` is **3**.

## Fields

| Path | Meaning |
| --- | --- |
| `version` | |
| `items` | |
| `items[].name` | |
| `items[].note` (optional) | |
| `by_port` | |
| `by_port.<port>` (optional) | |
| `by_port.<port>.count` | |

### Nested

| Path | Meaning |
| --- | --- |
| `nested` | |
| `nested.deep` | |

## Elsewhere

| Counter | Meaning |
| --- | --- |
| `not_a_path` | |
";

    fn doc() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("format.md");
        std::fs::write(&path, DOC).unwrap();
        (dir, path)
    }

    #[test]
    fn the_fields_section_documents_its_paths_and_version() {
        let (_dir, path) = doc();
        let documented = documented_paths(&path, "Fields");
        let paths: Vec<(&str, bool)> = documented
            .iter()
            .map(|d| (d.path.as_str(), d.optional))
            .collect();
        assert_eq!(
            paths,
            [
                ("version", false),
                ("items", false),
                ("items[].name", false),
                ("items[].note", true),
                ("by_port", false),
                ("by_port.<port>", true),
                ("by_port.<port>.count", false),
                ("nested", false),
                ("nested.deep", false),
            ]
        );
        assert_eq!(documented_schema_version(&path), 3);
    }

    #[test]
    fn placeholders_match_one_key_and_arrays_their_elements() {
        assert!(path_matches("by_port.<port>.count", "by_port.1016.count"));
        assert!(!path_matches("by_port.<port>", "by_port.1016.count"));
        assert!(!path_matches("by_port.<port>", "by_port[]"));
        assert!(path_matches("items[].name", "items[].name"));
        assert!(!path_matches("items.name", "items[].name"));
        let value = serde_json::json!({"a": [{"b": 1}, {"c": [[{"d": 2}]]}], "e": {}});
        let paths: Vec<String> = json_paths(&value).into_iter().collect();
        assert_eq!(paths, ["a", "a[].b", "a[].c", "a[].c[][].d", "e"]);
    }

    #[test]
    fn mismatches_are_undocumented_paths_and_missing_required_ones() {
        let (_dir, path) = doc();
        let documented = documented_paths(&path, "Fields");
        let good = serde_json::json!({
            "version": 3,
            "items": [{"name": "x"}, {"name": "y", "note": "z"}],
            "by_port": {"1016": {"count": 3}},
            "nested": {"deep": true},
        });
        assert_eq!(doc_mismatches(&good, &documented), (vec![], vec![]));
        // No items and no ports: nothing under them is required.
        let sparse =
            serde_json::json!({"version": 3, "items": [], "by_port": {}, "nested": {"deep": 1}});
        assert_eq!(doc_mismatches(&sparse, &documented), (vec![], vec![]));
        let bad = serde_json::json!({
            "items": [{"name": "x", "colour": "red"}],
            "by_port": {"1016": {}},
            "nested": {"deep": true},
        });
        let (undocumented, missing) = doc_mismatches(&bad, &documented);
        assert_eq!(undocumented, ["items[].colour"]);
        assert_eq!(missing, ["version", "by_port.<port>.count"]);
    }

    #[test]
    fn alternatives_match_each_key_and_every_holder_needs_its_fields() {
        assert!(path_matches("agg.{total,vmm}.n", "agg.vmm.n"));
        assert!(!path_matches("agg.{total,vmm}.n", "agg.kernel.n"));
        let documented = [
            DocumentedPath {
                path: "agg".into(),
                optional: false,
            },
            DocumentedPath {
                path: "agg.{total,vmm}".into(),
                optional: true,
            },
            DocumentedPath {
                path: "agg.{total,vmm}.n".into(),
                optional: false,
            },
        ];
        // A null summary holds nothing; an object must hold its fields, each.
        let null = serde_json::json!({"agg": {"total": {"n": 1}, "vmm": null}});
        assert_eq!(doc_mismatches(&null, &documented), (vec![], vec![]));
        let empty = serde_json::json!({"agg": {"total": {"n": 1}, "vmm": {}}});
        assert_eq!(
            doc_mismatches(&empty, &documented),
            (vec![], vec!["agg.{total,vmm}.n".to_string()])
        );
    }
}
