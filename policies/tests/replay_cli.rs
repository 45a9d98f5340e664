//! The replay tool, run as a user runs it from the README.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::PathBuf;
use std::process::Command;

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoneural-policies"))
}

fn crate_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn replay_of_the_sample_drive_prints_the_alert_timeline() {
    let output = tool()
        .args(["replay", "--rules"])
        .arg(crate_file("rules/default.toml"))
        .arg("--observations")
        .arg(crate_file("examples/drive.jsonl"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let timeline: Vec<(String, String, String)> = stdout
        .lines()
        .filter(|l| l.contains("RAISED") || l.contains("CLEARED"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_owned(), cols[1].to_owned(), cols[2].to_owned())
        })
        .collect();
    let expected = [
        ("8.000", "RAISED", "long_distraction"),
        ("9.600", "CLEARED", "long_distraction"),
        ("14.000", "RAISED", "phone_use"),
        ("15.400", "CLEARED", "phone_use"),
        ("18.000", "RAISED", "microsleep"),
        ("19.400", "CLEARED", "microsleep"),
        ("34.800", "RAISED", "short_distraction"),
        ("37.800", "CLEARED", "short_distraction"),
        ("52.000", "RAISED", "monitoring_unavailable"),
        ("56.000", "CLEARED", "monitoring_unavailable"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(timeline, expected, "{stdout}");
    assert!(stdout.contains("state"), "driver state lines: {stdout}");
    assert!(
        stdout.contains("dropped 1 out of order and 1 duplicates"),
        "{stdout}"
    );
}

#[test]
fn json_output_is_one_object_per_line() {
    let output = tool()
        .args(["replay", "--json", "--state-every", "0", "--observations"])
        .arg(crate_file("examples/drive.jsonl"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every accepted observation has a state line, plus 10 events and the summary.
    assert_eq!(lines.len(), 290 + 10 + 1);
    let raised = lines
        .iter()
        .find(|v| v["event"] == "raised")
        .expect("a raised event");
    assert_eq!(raised["alert"]["id"], "long_distraction");
    assert_eq!(raised["t"], 8.0);
    assert_eq!(lines.last().unwrap()["summary"]["accepted"], 290);
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("autoneural-policies-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.toml");
    let text = autoneural_policies::DEFAULT_RULES_TOML.replace("window_s = 30.0", "windw_s = 30.0");
    std::fs::write(&rules, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("windw_s")).unwrap() + 1;

    let output = tool().arg("check").arg(&rules).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("rules.toml:{line}:")) && stderr.contains("windw_s"),
        "{stderr}"
    );

    let observations = dir.join("obs.jsonl");
    std::fs::write(
        &observations,
        "{\"t\": 0}\n{\"t\": 0.1, \"eyes_closed\": 7}\n",
    )
    .unwrap();
    let output = tool()
        .args(["replay", "--observations"])
        .arg(&observations)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("line 2") && stderr.contains("eyes_closed"),
        "{stderr}"
    );

    let output = tool().args(["replay"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
