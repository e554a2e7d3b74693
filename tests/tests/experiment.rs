//! End to end: `vmbench run EXPERIMENT.toml` through the real binary —
//! the shipped examples check, small experiments boot under QEMU and land
//! in results.json and the store the file names, and bad files are refused
//! in one line naming the line and key.

use std::path::Path;

use vmbench_e2e::boot::BootTest;
use vmbench_e2e::{assert_follows_its_document, dump, one_line_error, results, vmbench};

/// `vmbench runs --store STORE --kind KIND`'s table.
fn stored(store: &Path, kind: &str) -> String {
    let out = vmbench(&["runs", "--store", store.to_str().unwrap(), "--kind", kind]);
    assert!(out.status.success(), "{}", dump(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_example_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for name in ["kernel-ab.toml", "backends.toml", "systemd-profiled.toml"] {
        let path = dir.join(name);
        let out = vmbench(&["run", "--check", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", dump(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(said.lines().count(), 1, "{said}");
    }
}

#[test]
fn a_bad_file_is_one_line_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[[variant]]\nname = \"a\"\nkernal = \"k\"\n",
            ":3: variant.kernal: unknown field `kernal`",
        ),
        (
            "vms = \"4\"\n[[variant]]\nname = \"a\"\n",
            ":1: vms: invalid type: string \"4\", expected u32",
        ),
        (
            "warmup = 1001\n[[variant]]\nname = \"a\"\n",
            ":1: warmup: 1001 is not in 0..=1000",
        ),
        (
            "[[variant]]\nname = \"x\"\n\n[[variant]]\nname = \"x\"\n",
            ":5: variant.name: \"x\": another variant has this name",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = vmbench(&["run", path.to_str().unwrap()]);
        let line = one_line_error(&out, 2);
        let want = format!("vmbench: error: {}{expected}", path.display());
        assert!(
            line.starts_with(&want),
            "{text:?}:\n got {line}\nwant {want}"
        );
    }
}

/// One variant under QEMU, one VM, two rounds: a boot run, its
/// results.json as `vmbench boot` writes it, recorded in the file's store
/// with the file's tags.
#[test]
fn a_one_variant_experiment_boots_and_is_stored() {
    let Some(test) = BootTest::start("a_one_variant_experiment_boots_and_is_stored") else {
        return;
    };
    let out_dir = test.out_dir();
    let store = test.dir().join("exp.db");
    let file = test.dir().join("boot.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"e2e-boot\"\nvms = 1\nruns = 2\nout = {out:?}\ntags = {{ suite = \"e2e\" }}\n\
             [store]\npath = {store:?}\n[boot]\nbackend = \"qemu\"\nmem_mib = 128\n\
             [[variant]]\nname = \"only\"\nappend = [\"quiet\"]\n",
            out = out_dir.to_str().unwrap(),
            store = store.to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = vmbench(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", dump(&out));
    let r = results(&out_dir);
    assert_follows_its_document(&r, "results-json.md");
    let vms = r["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2, "1 VM x 2 rounds");
    assert!(vms.iter().all(|v| v["status"] == "ok"), "{r}");
    assert_eq!(r["environment"]["mem_mib"].as_u64(), Some(128));
    assert!(
        r["environment"]["kernel_cmdline"]
            .as_str()
            .unwrap()
            .contains("quiet"),
        "{}",
        r["environment"]["kernel_cmdline"]
    );
    let listed = stored(&store, "boot");
    assert!(listed.contains("\n1 run(s) in"), "{listed}");
    assert!(listed.contains("experiment=e2e-boot"), "{listed}");
    assert!(listed.contains("suite=e2e"), "{listed}");
}

/// Two variants under QEMU, one VM, two rounds: an A/B run (A and B
/// directories, interleaved), its verdicts printed as the file asks, the
/// gate obeyed, and the run in the store as an A/B run.
#[test]
fn a_two_variant_experiment_is_an_ab_run() {
    let Some(test) = BootTest::start("a_two_variant_experiment_is_an_ab_run") else {
        return;
    };
    let out_dir = test.out_dir();
    let store = test.dir().join("exp.db");
    let file = test.dir().join("ab.toml");
    std::fs::write(
        &file,
        format!(
            "runs = 2\nout = {out:?}\n[store]\npath = {store:?}\n[boot]\nbackend = \"qemu\"\n\
             [verdict]\nformat = \"json\"\nalpha = 0.05\n\
             [[variant]]\nname = \"one-cpu\"\n[[variant]]\nname = \"two-cpus\"\nvcpus = 2\n",
            out = out_dir.to_str().unwrap(),
            store = store.to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = vmbench(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", dump(&out));
    let verdicts: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", dump(&out)));
    assert_eq!(verdicts["alpha"].as_f64(), Some(0.05), "{verdicts}");
    assert!(
        verdicts["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "phase.total"),
        "{verdicts}"
    );
    let (a, b) = (results(&out_dir.join("A")), results(&out_dir.join("B")));
    assert_eq!(
        (
            a["environment"]["vcpus"].as_u64(),
            b["environment"]["vcpus"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(a["vms"].as_array().unwrap().len(), 2);
    let listed = stored(&store, "ab");
    assert!(listed.contains("\n1 run(s) in"), "{listed}");
}
