//! The regression guard of the load generator (issue 11): a short, bounded `direct`
//! run against a real hushd must deliver everything once. It asserts counts, never
//! speed.
use std::process::Command;

#[test]
fn a_short_direct_run_loses_and_duplicates_nothing() {
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
        return;
    }
    let out = Command::new(&bench)
        .args([
            "direct",
            "--clients",
            "4",
            "--rate",
            "200",
            "--seconds",
            "2",
            "--json",
        ])
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
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert!(report["delivered"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["delivered"], report["sent"], "{report}");
}
