//! End to end: `vmbench ab` boots two variants under QEMU (TCG where KVM is
//! not native), their rounds interleaved, and its verdicts find a real
//! slowdown and no slowdown where there is none.

use vmbench_e2e::boot::BootTest;
use vmbench_e2e::{assert_follows_its_document, dump, results, vmbench};

/// `vmbench ab` with the common options `common`, B's own `b`, into `out`.
fn ab(out: &std::path::Path, common: &[&str], b: &str) -> std::process::Output {
    let mut args = vec!["ab", "--backend", "qemu", "--out", out.to_str().unwrap()];
    args.extend(common);
    args.extend(["--b", b]);
    vmbench(&args)
}

/// The verdict rows of a `--format json` run, by metric.
fn verdicts(out: &std::process::Output) -> serde_json::Map<String, serde_json::Value> {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", dump(out)));
    json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Two vCPUs boot about 10 % slower than one under TCG (the second CPU's
/// bring-up): the verdict says regression, CI's exit status says so, and
/// each variant is an ordinary run with its rounds interleaved ABBA.
#[test]
fn a_real_slowdown_is_a_regression() {
    let Some(test) = BootTest::start("a_real_slowdown_is_a_regression") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = ab(
        &out_dir,
        &[
            "--runs",
            "12",
            "--format",
            "json",
            "--fail-on",
            "regression",
        ],
        "--vcpus 2",
    );
    assert_eq!(out.status.code(), Some(4), "{}", dump(&out));
    let rows = verdicts(&out);
    let total = &rows["phase.total"];
    // A regression is, by the verdict rule, a ratio's interval wholly above
    // the 5 % band and a corrected p under α: nothing more to check here.
    assert_eq!(total["verdict"], "regression", "{total}");
    let (a, b) = (results(&out_dir.join("A")), results(&out_dir.join("B")));
    assert_follows_its_document(&a, "results-json.md");
    assert_eq!(
        (
            a["environment"]["vcpus"].as_u64(),
            b["environment"]["vcpus"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // ABBA: A's round 1 started after B's round 1, B's round 2 after A's.
    let spawn =
        |r: &serde_json::Value, round: usize| r["vms"][round]["host_ns"]["spawn"].as_u64().unwrap();
    assert!(spawn(&a, 0) < spawn(&b, 0) && spawn(&b, 1) < spawn(&a, 1));
    assert!(spawn(&a, 1) < spawn(&a, 2) && spawn(&a, 2) < spawn(&b, 2));
}

/// A against itself: no metric regresses, and the same run in JUnit XML is
/// one passing test case per metric.
#[test]
fn a_against_itself_is_no_regression() {
    let Some(test) = BootTest::start("a_against_itself_is_no_regression") else {
        return;
    };
    let out_dir = test.out_dir();
    let out = ab(
        &out_dir,
        &[
            "--runs",
            "6",
            "--format",
            "junit",
            "--fail-on",
            "regression",
        ],
        "",
    );
    assert!(out.status.success(), "{}", dump(&out));
    let junit = String::from_utf8_lossy(&out.stdout);
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(junit.contains("name=\"phase.total\""), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
}
