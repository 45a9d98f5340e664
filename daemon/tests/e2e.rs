//! End-to-end: the real autoneurald binary (real camera source, model and policies) on a private
//! dbus-daemon, driven by a real D-Bus client, with systemd's notify protocol on a test socket.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoneural_daemon::client;
use autoneural_daemon::dbus::{BUS_NAME, OBJECT_PATH};
use autoneural_daemon::testbus::PrivateBus;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The bundle the daemon runs in these tests: the default model when it is in the tree.
fn bundle() -> PathBuf {
    let cabin = repo().join("models/autoneural-cabin");
    if cabin.join("manifest.toml").exists() {
        cabin
    } else {
        repo().join("models/tiny-random")
    }
}

struct Daemon {
    child: Child,
    bus: PrivateBus,
    notify: UnixDatagram,
    rules: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `extra`: TOML appended to the config; `policy`: busconfig XML for the private bus.
    fn start(extra: &str, policy: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the bus policy test's clients) must reach the bus socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let bus = PrivateBus::start(dir.path(), policy).unwrap();
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, autoneural_policies::DEFAULT_RULES_TOML).unwrap();
        let config = dir.path().join("autoneurald.toml");
        std::fs::write(
            &config,
            format!(
                "[camera]\nsource = \"synthetic\"\nscenario = \"phone-use\"\nwidth = 160\nheight = 120\nloop = true\n\
                 [model]\nbundle = \"{}\"\nvariant = \"fp32\"\ncpu_threads = 1\n\
                 [policies]\nrules = \"{}\"\n\
                 [bus]\nkind = \"address\"\naddress = \"{}\"\n{extra}",
                bundle().display(),
                rules.display(),
                bus.address
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_autoneurald"))
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon {
            child,
            bus,
            notify,
            rules,
            _dir: dir,
        }
    }

    /// Notify messages until one contains `want` (panics after `limit`).
    fn notify_until(&self, want: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = vec![];
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.contains(want);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
        panic!("no notify message with {want:?} within {limit:?}; saw {seen:?}");
    }

    async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.bus.address.as_str())
            .build()
            .await
            .unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    /// Stops the daemon with SIGTERM; returns (exit status success, time taken, stderr).
    fn terminate(mut self) -> (bool, Duration, String) {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        let deadline = t + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = t.elapsed();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.success(), took, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn error_name(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_state_questions_and_diagnostics_under_systemd_notify() {
    let d = Daemon::start(
        "[budgets]\nprobes_ms = 3000\ncapture_to_observation_ms = 3000\n[hmi]\nmax_pending = 2\nrate_per_minute = 600\n",
        "",
    );
    // READY=1 comes after the model loaded and the first observation was published.
    let first = d.notify_until("READY=1", Duration::from_secs(60));
    assert!(first.iter().any(|m| m.contains("STATUS=")), "{first:?}");
    let conn = d.connect().await;
    let cockpit = client::cockpit(&conn).await.unwrap();
    let diag = client::diagnostics(&conn).await.unwrap();
    assert!(cockpit.last_observation().await.unwrap() > 0);
    assert_ne!(cockpit.monitoring_state().await.unwrap(), "starting");
    // The watchdog is fed while observations flow.
    d.notify_until("WATCHDOG=1", Duration::from_secs(5));

    // The committed introspection is what the live object serves.
    let xml = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination(BUS_NAME)
        .path(OBJECT_PATH)
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    let committed =
        std::fs::read_to_string(repo().join("daemon/dbus/org.autoneural.Cockpit1.xml")).unwrap();
    assert_eq!(autoneural_daemon::dbus::our_interfaces(&xml), committed);

    let eps = diag.execution_providers().await.unwrap();
    assert_eq!(
        eps.get("vision").map(String::as_str),
        Some("cpu"),
        "{eps:?}"
    );
    assert!(diag.source().await.unwrap().contains("synthetic"));
    assert!(diag.source_epoch().await.unwrap() > 0);

    // Questions: an answer, and named errors for bad input.
    assert!(
        cockpit
            .ask("Is the driver wearing a seat belt?")
            .await
            .is_ok()
    );
    let invalid = "org.autoneural.Cockpit1.Error.InvalidQuestion";
    assert_eq!(error_name(cockpit.ask("").await.unwrap_err()), invalid);
    assert_eq!(
        error_name(cockpit.ask(&"why ".repeat(100)).await.unwrap_err()),
        invalid
    );
    assert_eq!(
        error_name(cockpit.ask("clear\u{1b}[2J screen").await.unwrap_err()),
        invalid
    );

    // A flood of questions: the excess is refused, observations keep flowing and the safety
    // probes stay within their budget.
    let before = diag.frames_processed().await.unwrap();
    let asks = (0..12).map(|i| {
        let c = cockpit.clone();
        async move { c.ask(&format!("Question number {i}?")).await }
    });
    let results = futures_join_all(asks).await;
    let refused: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(error_name)
        .collect();
    assert!(refused.iter().any(|n| n.ends_with(".Busy")), "{refused:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        diag.frames_processed().await.unwrap() > before,
        "observations stopped during the flood"
    );
    let probes = diag
        .latency()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.0 == "probes")
        .expect("probe latency");
    assert!(
        probes.2 <= 3000.0,
        "probes p99 {} ms over budget during the flood",
        probes.2
    );

    // SIGHUP with a broken rules file keeps the running rules.
    std::fs::write(&d.rules, "[alerts.phone_use\nbroken").unwrap();
    d.signal(libc::SIGHUP);
    d.notify_until("RELOADING=1", Duration::from_secs(5));
    d.notify_until("READY=1", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        client::wait_for_service(&conn, Duration::ZERO)
            .await
            .unwrap()
    );
    let last = cockpit.last_observation().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        cockpit.last_observation().await.unwrap() > last,
        "the pipeline stopped after SIGHUP"
    );

    // SIGTERM: a clean exit within 2 s.
    let (ok, took, stderr) = d.terminate();
    assert!(ok, "exit status; stderr:\n{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(stderr.contains("keeping the running rules"), "{stderr}");
    assert!(stderr.contains("rules.toml"), "{stderr}");
}

/// Runs futures concurrently (zbus 6 brings no join_all; tokio's JoinSet needs 'static).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

/// The project's bus policy with the test's names: the service user is this test's user, the HMI
/// group is `users` (gid 100).
fn project_policy() -> String {
    let policy =
        std::fs::read_to_string(repo().join("systemd/org.autoneural.Cockpit1.conf")).unwrap();
    let body = policy
        .split("<busconfig>")
        .nth(1)
        .and_then(|b| b.split("</busconfig>").next())
        .expect("busconfig body");
    let me = std::env::var("USER").unwrap_or_else(|_| "root".into());
    body.replace("user=\"autoneural\"", &format!("user=\"{me}\""))
        .replace("group=\"autoneural-hmi\"", "group=\"users\"")
}

fn busctl_as(bus: &str, groups: Option<&str>, member: &str) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534"]);
    match groups {
        Some(g) => cmd.arg(format!("--groups={g}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.args([
        "busctl",
        &format!("--address={bus}"),
        "call",
        BUS_NAME,
        OBJECT_PATH,
        "org.freedesktop.DBus.Properties",
        member,
    ])
    .args(["ss", "org.autoneural.Cockpit1", "MonitoringState"])
    .output()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_policy_admits_only_the_hmi_group() {
    let d = Daemon::start("", &project_policy());
    d.notify_until("READY=1", Duration::from_secs(60));
    let outsider = busctl_as(&d.bus.address, None, "Get");
    assert!(!outsider.status.success());
    let err = String::from_utf8_lossy(&outsider.stderr);
    assert!(
        err.contains("Access denied") || err.contains("AccessDenied"),
        "{err}"
    );
    let hmi = busctl_as(&d.bus.address, Some("100"), "Get");
    assert!(
        hmi.status.success(),
        "{}",
        String::from_utf8_lossy(&hmi.stderr)
    );
    assert!(
        String::from_utf8_lossy(&hmi.stdout).contains('"'),
        "a string property"
    );
    let (ok, _, stderr) = d.terminate();
    assert!(ok, "{stderr}");
}
