//! The regression guard of the load generator (issue 11): short, bounded `direct`
//! and `group` runs against a real hushd must deliver everything once. They assert
//! counts, never speed.
use std::process::Command;

/// Runs `hush-bench` with `args` against a hushd it starts; the JSON report, or
/// `None` when hushd is not built.
fn bench(args: &[&str]) -> Option<serde_json::Value> {
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_hush-bench"));
    let hushd = bench
        .parent()
        .unwrap()
        .join(format!("hushd{}", std::env::consts::EXE_SUFFIX));
    if !hushd.exists() {
        eprintln!(
            "skipped: {} not built (cargo test --workspace builds it)",
            hushd.display()
        );
        return None;
    }
    let out = Command::new(&bench)
        .args(args)
        .arg("--json")
        .arg("--hushd")
        .arg(&hushd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hush-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).unwrap())
}

fn assert_all_once(report: &serde_json::Value) {
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert!(report["delivered"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["delivered"], report["sent"], "{report}");
}

#[test]
fn a_short_direct_run_loses_and_duplicates_nothing() {
    let Some(report) = bench(&[
        "direct",
        "--clients",
        "4",
        "--rate",
        "200",
        "--seconds",
        "2",
    ]) else {
        return;
    };
    assert_all_once(&report);
}

#[test]
fn a_short_direct_run_fetching_after_wake_ups_loses_and_duplicates_nothing() {
    let Some(report) = bench(&[
        "direct",
        "--clients",
        "4",
        "--rate",
        "200",
        "--seconds",
        "1",
        "--delivery",
        "fetch",
        "--ack-batch",
        "1",
    ]) else {
        return;
    };
    assert_all_once(&report);
}

#[test]
fn a_short_group_run_delivers_each_message_to_every_other_member_once() {
    let Some(report) = bench(&[
        "group",
        "--clients",
        "12",
        "--group-size",
        "6",
        "--rate",
        "40",
        "--seconds",
        "2",
    ]) else {
        return;
    };
    assert_all_once(&report);
    let messages = report["messages"].as_u64().unwrap();
    assert_eq!(
        report["delivered"].as_u64().unwrap(),
        messages * 5,
        "each message reaches the five other members: {report}"
    );
}

#[test]
fn a_short_run_through_the_client_library_loses_and_duplicates_nothing() {
    let Some(report) = bench(&[
        "direct",
        "--mls",
        "--clients",
        "2",
        "--rate",
        "20",
        "--seconds",
        "1",
    ]) else {
        return;
    };
    assert_all_once(&report);
    assert_eq!(report["scenario"], "direct-mls", "{report}");
}

#[test]
fn a_short_run_across_two_nodes_on_postgresql_loses_and_duplicates_nothing() {
    let Ok(url) = std::env::var("HUSH_TEST_DATABASE_URL") else {
        eprintln!(
            "SKIPPED a_short_run_across_two_nodes_on_postgresql_loses_and_duplicates_nothing: \
             set HUSH_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
        );
        return;
    };
    let Some(report) = bench(&[
        "direct",
        "--clients",
        "4",
        "--rate",
        "100",
        "--seconds",
        "1",
        "--nodes",
        "2",
        "--database-url",
        &url,
    ]) else {
        return;
    };
    assert_all_once(&report);
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(report["database"], "postgresql", "{report}");
}
