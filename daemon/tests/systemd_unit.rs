//! The shipped systemd unit passes `systemd-analyze verify` and keeps its exposure level low.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// The unit with ExecStart pointing at the binary this test run built (verify checks it exists).
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(repo().join("systemd/autoneurald.service")).unwrap();
    let unit = unit.replace("/usr/bin/autoneurald", env!("CARGO_BIN_EXE_autoneurald"));
    let path = dir.join("autoneurald.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("autoneurald.service:"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn unit_exposure_is_at_most_two() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in: {text}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"));
    assert!(level <= 2.0, "{line}");
}

#[test]
fn shipped_configs_are_valid() {
    for cfg in ["systemd/autoneurald.toml", "examples/demo.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_autoneurald"))
            .arg("--check-config")
            .arg(repo().join(cfg))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cfg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_config_reports_the_line_of_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[camera]\nsource = \"v4l2\"\ndevice = \"/dev/video0\"\nfsp = 30\n[model]\nbundle = \"m\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoneurald"))
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:") && err.contains("fsp"), "{err}");
}
