//! The shipped systemd unit passes `systemd-analyze verify` and keeps its exposure level low.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

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

/// The shipped configs pass `--check-config`, which checks them against the machine: the
/// production one with its install paths pointed at this tree (models/, an ONNX Runtime directory).
#[test]
fn shipped_configs_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("onnxruntime");
    std::fs::create_dir_all(&runtime).unwrap();
    // check-config looks for the library; loading it is start-up's job.
    std::fs::write(runtime.join("libonnxruntime.so"), b"").unwrap();
    let production = std::fs::read_to_string(repo().join("systemd/autoneurald.toml"))
        .unwrap()
        .replace(
            "/usr/share/autoneural/models",
            &repo().join("models").display().to_string(),
        )
        .replace(
            "/usr/lib/autoneural/onnxruntime",
            &runtime.display().to_string(),
        );
    let installed = dir.path().join("autoneurald.toml");
    std::fs::write(&installed, production).unwrap();
    for cfg in [installed, repo().join("examples/demo.toml")] {
        let out = Command::new(env!("CARGO_BIN_EXE_autoneurald"))
            .arg("--check-config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            cfg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 16, item 5: check-config fails on every config that cannot start, naming the key's line.
#[test]
fn check_config_rejects_configs_that_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let models = repo().join("models");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let camera = "[camera]\nsource = \"synthetic\"\nscenario = \"phone-use\"\n";
    let model = |extra: &str| {
        format!(
            "{camera}[model]\nbundle = \"{}\"\n{extra}",
            models.join("autoneural-cabin").display()
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{camera}[model]\nbundle = \"/nonexistent/model\"\n"),
            ":5:",
            "does not exist",
        ),
        (
            format!("{camera}[model]\nbundle = \"{}\"\n", file.display()),
            ":5:",
            "is a file",
        ),
        (model("variant = \"w3a1\"\n"), ":6:", "w3a1"),
        (model("probes = [\"eyes\", \"mood\"]\n"), ":6:", "mood"),
        (
            model("runtime_dir = \"/nonexistent\"\n"),
            ":6:",
            "libonnxruntime.so",
        ),
        (
            model("[model.qnn]\nperformance_mode = \"warp\"\n"),
            ":7:",
            "performance_mode",
        ),
        (
            format!(
                "{}[policies]\nrules = \"/nonexistent/rules.toml\"\n",
                model("")
            ),
            ":7:",
            "rules",
        ),
        (
            model("").replace("phone-use", "no-such-scenario"),
            ":3:",
            "no shipped scenario",
        ),
        (
            format!(
                "[camera]\nsource = \"v4l2\"\ndevice = \"{}\"\n[model]\nbundle = \"{}\"\n",
                file.display(),
                models.join("autoneural-cabin").display()
            ),
            ":3:",
            "not a device node",
        ),
        (
            format!(
                "[camera]\nsource = \"v4l2\"\ndevice = \"/dev/video9\"\nformats = [\"RGB3\", \"BOGUS\"]\n[model]\nbundle = \"{}\"\n",
                models.join("autoneural-cabin").display()
            ),
            ":4:",
            "BOGUS",
        ),
        (
            format!(
                "{}[face]\nbundle = \"{}\"\n",
                model(""),
                models.join("autoneural-cabin").display()
            ),
            ":7:",
            "face.bundle",
        ),
        (
            format!(
                "{}[description]\nprompt = \"{}\"\n",
                model(""),
                "Look at the driver and the cabin. ".repeat(30)
            ),
            ":7:",
            "context positions",
        ),
    ];
    for (i, (text, line, what)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_autoneurald"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i} passed:\n{text}");
        assert!(
            err.contains(&format!("case{i}.toml{line}")) && err.contains(what),
            "case {i}: want line {line} and {what:?}, got: {err}"
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
