//! Runs the daemon: the pipeline thread, the D-Bus connection and its publisher, the description
//! refresh, the systemd watchdog, and the signals (SIGHUP reloads the rules, SIGTERM/SIGINT stop).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use log::{error, info, warn};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Governor, Level};
use crate::config::{BusKind, Config, EndOfStream};
use crate::dbus::{
    self, Cockpit, Diagnostics, DiagnosticsSource, HmiRequest, HmiRunner, Published, Vehicle,
};
use crate::notify::Notifier;
use crate::pipeline::{Command, Pipeline, PipelineConfig, Shared, Snapshot, Update};
use crate::read_only::ReadOnly;
use crate::shutdown::{Done, Shutdown, ShutdownSignal};
use crate::stages::{
    AlertEvent, Answer, FrameFeed, MonitoringState, Perception, Policy, StageError, monotonic_now,
};
use crate::stats::{Stage, StageSummary};
use crate::vehicle::VehicleSignals;

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT.
    Signal,
    /// A finite source ended with `end_of_stream = "exit"`.
    SourceEnded,
    /// The D-Bus connection is gone (the bus daemon died or restarted): nothing can be published,
    /// so the process ends with a failure and the service manager restarts it on the new bus.
    BusLost,
}

impl Exit {
    /// Whether the process should exit with a failure status (systemd `Restart=on-failure`).
    pub fn is_failure(self) -> bool {
        self == Exit::BusLost
    }
}

/// How often the bus connection is checked when nothing is being published.
const BUS_CHECK: Duration = Duration::from_secs(1);

/// True when `e` means the connection itself is gone (socket closed), not that one call failed.
pub fn connection_lost(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::InputOutput(_) => true,
        zbus::Error::FDO(fdo) => match &**fdo {
            zbus::fdo::Error::ZBus(inner) => connection_lost(inner),
            zbus::fdo::Error::IOError(_) | zbus::fdo::Error::Disconnected(_) => true,
            _ => false,
        },
        _ => false,
    }
}

/// The diagnostics view of the shared state.
struct DiagnosticsView<F, P> {
    shared: Arc<Shared<F>>,
    perception: Arc<P>,
    source: (String, u64),
}

impl<F: Send + Sync + 'static, P: Perception<Frame = F>> DiagnosticsSource
    for DiagnosticsView<F, P>
{
    fn latency(&self) -> Vec<StageSummary> {
        self.shared
            .stats
            .lock()
            .map(|s| s.summary())
            .unwrap_or_default()
    }
    fn execution_providers(&self) -> Vec<(String, String)> {
        self.perception.execution_providers()
    }
    fn degradation(&self) -> (String, String) {
        let (level, reason) = self.shared.level();
        (level.name().to_string(), reason)
    }
    fn frames(&self) -> (u64, u64) {
        let processed = self.shared.frames_processed.load(Ordering::Relaxed);
        let dropped = self.shared.source_dropped.load(Ordering::Relaxed)
            + self.shared.frames_skipped.load(Ordering::Relaxed);
        (processed, dropped)
    }
    fn budgets(&self) -> Vec<(Stage, Duration)> {
        let g = self.shared.governor.lock();
        Stage::ALL
            .iter()
            .filter_map(|&s| g.as_ref().ok().and_then(|g| g.budget(s)).map(|b| (s, b)))
            .collect()
    }
    fn record(&self, stage: Stage, d: Duration) {
        self.shared.record(stage, d);
    }
    fn source(&self) -> (String, u64) {
        self.source.clone()
    }
}

/// Connects to the configured bus, serving the objects before the name is requested so that a
/// client that sees the name can call at once.
async fn connect(
    cfg: &Config,
    cockpit: Cockpit,
    diagnostics: Diagnostics,
    vehicle: Vehicle,
) -> anyhow::Result<zbus::Connection> {
    let builder = match cfg.bus.kind {
        BusKind::System => zbus::connection::Builder::system(),
        BusKind::Session => zbus::connection::Builder::session(),
        BusKind::Address => {
            let addr = cfg
                .bus
                .address
                .as_ref()
                .map(|a| a.get_ref().clone())
                .unwrap_or_default();
            zbus::connection::Builder::address(addr.as_str())
        }
    };
    builder
        // Every property is read-only: `Set` answers PropertyReadOnly (crate::read_only).
        .serve_at(dbus::OBJECT_PATH, ReadOnly(cockpit))
        .serve_at(dbus::OBJECT_PATH, ReadOnly(diagnostics))
        .serve_at(dbus::OBJECT_PATH, ReadOnly(vehicle))
        .name(dbus::BUS_NAME)
        .build()
        .await
        .with_context(|| {
            format!(
                "cannot own {} on the {:?} bus",
                dbus::BUS_NAME,
                cfg.bus.kind
            )
        })
}

/// Runs the daemon until a signal, the end of a finite source or a lost bus: `start` wires the
/// stages, the bus and the tasks; `Service::serve` publishes and answers signals; `Service::stop`
/// triggers the one shutdown and joins every task and thread (bounded).
pub async fn run<S, P, L>(
    cfg: Config,
    source: S,
    perception: Arc<P>,
    policy: L,
    notifier: Arc<Notifier>,
) -> anyhow::Result<Exit>
where
    S: FrameFeed,
    P: Perception<Frame = S::Frame>,
    L: Policy,
{
    let mut service = start(cfg, source, perception, policy, notifier).await?;
    let exit = service.serve().await;
    service.stop(exit.as_ref().ok().copied()).await;
    exit
}

/// The running daemon: what serving and stopping need.
struct Service<F> {
    conn: zbus::Connection,
    /// The bus daemon itself, pinged to notice a lost connection while nothing is published.
    bus: zbus::fdo::PeerProxy<'static>,
    shared: Arc<Shared<F>>,
    published: Arc<Mutex<Published>>,
    notifier: Arc<Notifier>,
    /// Every task and thread below holds its signal and guard.
    shutdown: Shutdown,
    updates: mpsc::Receiver<Update>,
    commands: std_mpsc::Sender<Command>,
    /// CLOCK_MONOTONIC ms of the last observation that reached the bus (the watchdog's food).
    last_progress: Arc<AtomicU64>,
    rules_path: Option<std::path::PathBuf>,
    ready: bool,
    last_degradation: (String, String),
    last_monitoring: Option<MonitoringState>,
}

/// Wiring: the shared state, the D-Bus objects and connection, the pipeline thread, the watchdog
/// and description tasks, each with its part of the one shutdown.
async fn start<S, P, L>(
    cfg: Config,
    source: S,
    perception: Arc<P>,
    policy: L,
    notifier: Arc<Notifier>,
) -> anyhow::Result<Service<S::Frame>>
where
    S: FrameFeed,
    P: Perception<Frame = S::Frame>,
    L: Policy,
{
    let governor = Governor::new(&cfg.budgets);
    let vehicle = Arc::new(VehicleSignals::new(cfg.vehicle.speed_max_age_ms.ms()));
    let shared = Arc::new(Shared::new(governor, 256, Arc::clone(&vehicle)));
    let published = Arc::new(Mutex::new(Published::default()));
    let diag: Arc<dyn DiagnosticsSource> = Arc::new(DiagnosticsView {
        shared: Arc::clone(&shared),
        perception: Arc::clone(&perception),
        source: (
            source.describe(),
            source.epoch().map_or(0, |e| e.as_micros() as u64),
        ),
    });
    let runner = hmi_runner(
        &shared,
        &perception,
        cfg.hmi.max_answer_tokens.get() as usize,
        cfg.description.max_tokens.get() as usize,
    );
    let cockpit = Cockpit::new(
        Arc::clone(&published),
        runner,
        Arc::clone(&diag),
        cfg.hmi.clone(),
    );
    let conn = connect(
        &cfg,
        cockpit,
        Diagnostics::new(Arc::clone(&diag)),
        Vehicle::new(vehicle),
    )
    .await?;
    info!(
        "D-Bus: {} at {} on the {:?} bus",
        dbus::BUS_NAME,
        dbus::OBJECT_PATH,
        cfg.bus.kind
    );
    let bus = zbus::fdo::PeerProxy::builder(&conn)
        .destination("org.freedesktop.DBus")
        .path("/org/freedesktop/DBus")
        .build()
        .await
        .context("D-Bus peer proxy")?;

    let shutdown = Shutdown::new();

    // The pipeline thread.
    let (updates_tx, updates) = mpsc::channel::<Update>(4);
    let (commands, commands_rx) = std_mpsc::channel::<Command>();
    let (signal, done) = shutdown.subscribe();
    let pipeline = Pipeline {
        source,
        perception: Arc::clone(&perception),
        policy,
        shared: Arc::clone(&shared),
        config: PipelineConfig {
            fps: cfg.camera.fps.get() as u32,
            frame_timeout: cfg.camera.frame_timeout_ms.ms(),
            exit_at_end: cfg.camera.end_of_stream == EndOfStream::Exit,
        },
        updates: updates_tx,
        commands: commands_rx,
        pending_events: vec![],
        shutdown: signal,
    };
    std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || pipeline.run(done))
        .context("cannot start the pipeline thread")?;

    let last_progress = Arc::new(AtomicU64::new(0));
    if let Some(interval) = notifier.watchdog_interval() {
        let notifier = Arc::clone(&notifier);
        let last_progress = Arc::clone(&last_progress);
        let (signal, done) = shutdown.subscribe();
        tokio::spawn(feed_watchdog(
            notifier,
            interval,
            last_progress,
            signal,
            done,
        ));
    }
    if cfg.description.interval_ms.get() > 0 {
        let refresh = DescriptionRefresh {
            conn: conn.clone(),
            published: Arc::clone(&published),
            shared: Arc::clone(&shared),
            perception: Arc::clone(&perception),
            interval: cfg.description.interval_ms.ms(),
            max_tokens: cfg.description.max_tokens.get() as usize,
        };
        let (signal, done) = shutdown.subscribe();
        tokio::spawn(refresh.run(signal, done));
    }

    Ok(Service {
        conn,
        bus,
        shared,
        published,
        notifier,
        shutdown,
        updates,
        commands,
        last_progress,
        rules_path: cfg.policies.rules.clone(),
        ready: false,
        last_degradation: (Level::Full.name().to_string(), String::new()),
        last_monitoring: None,
    })
}

impl<F: Send + Sync + 'static> Service<F> {
    /// Serving: publishes every snapshot, checks the bus, reloads the rules on SIGHUP; returns why
    /// it ended.
    async fn serve(&mut self) -> anyhow::Result<Exit> {
        let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut bus_check = tokio::time::interval(BUS_CHECK);
        bus_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = bus_check.tick() => {
                    if let Some(exit) = self.check_bus().await {
                        return Ok(exit);
                    }
                }
                update = self.updates.recv() => match update {
                    Some(Update::Snapshot(snap)) => {
                        if let Some(exit) = self.publish(&snap).await {
                            return Ok(exit);
                        }
                    }
                    Some(Update::Ended) => return Ok(Exit::SourceEnded),
                    None => {
                        error!("pipeline: stopped unexpectedly");
                        anyhow::bail!("the pipeline thread stopped");
                    }
                },
                _ = sighup.recv() => self.reload_rules().await,
                _ = sigterm.recv() => return Ok(Exit::Signal),
                _ = sigint.recv() => return Ok(Exit::Signal),
            }
        }
    }

    /// A lost bus is seen within a second even when no property changes.
    async fn check_bus(&self) -> Option<Exit> {
        match tokio::time::timeout(BUS_CHECK * 2, self.bus.ping()).await {
            Ok(Err(e)) if connection_lost(&e) => {
                error!(
                    "D-Bus: the connection to the bus is lost; exiting so the service manager restarts the daemon on the new bus"
                );
                Some(Exit::BusLost)
            }
            Ok(_) => None,
            Err(_) => {
                warn!(
                    "D-Bus: the bus daemon did not answer a ping within {} s",
                    (BUS_CHECK * 2).as_secs()
                );
                None
            }
        }
    }

    /// Publishes one snapshot: properties and alert signals, readiness and status for the service
    /// manager, the watchdog's progress (only when the observation reached the bus).
    async fn publish(&mut self, snap: &Snapshot) -> Option<Exit> {
        let degradation = {
            let (l, r) = self.shared.level();
            (l.name().to_string(), r)
        };
        match dbus::publish(
            &self.conn,
            &self.published,
            &mut self.last_degradation,
            degradation,
            snap,
        )
        .await
        {
            Ok(()) => self
                .last_progress
                .store(monotonic_now().as_millis() as u64, Ordering::Relaxed),
            Err(e) if connection_lost(&e) => {
                error!(
                    "D-Bus: the connection to the bus is lost ({e}); exiting so the service manager restarts the daemon on the new bus"
                );
                return Some(Exit::BusLost);
            }
            Err(e) => warn!("D-Bus: cannot publish: {e}"),
        }
        if let Some(captured) = snap.captured_at {
            self.shared.record(
                Stage::CaptureToObservation,
                monotonic_now().saturating_sub(captured),
            );
        }
        if self.last_monitoring != Some(snap.monitoring) {
            let status = status_line(snap.monitoring, &snap.reason);
            if snap.monitoring == MonitoringState::Active
                || snap.monitoring == MonitoringState::Starting
            {
                info!("monitoring: {status}");
            } else {
                warn!("monitoring: {status}");
            }
            if !self.ready {
                self.ready = true;
                let _ = self.notifier.ready(&status);
            } else {
                let _ = self.notifier.status(&status);
            }
            self.last_monitoring = Some(snap.monitoring);
        }
        for event in &snap.events {
            let alert = event.alert();
            match event {
                AlertEvent::Raised { .. } | AlertEvent::Escalated { .. } => warn!(
                    "alert raised: {} (level {}): {}",
                    alert.id, alert.level, alert.message
                ),
                AlertEvent::Cleared { .. } => info!("alert cleared: {}", alert.id),
            }
        }
        None
    }

    /// SIGHUP: the pipeline reloads the rules file; a broken file keeps the running rules.
    async fn reload_rules(&self) {
        let _ = self.notifier.reloading();
        let (tx, rx) = oneshot::channel();
        let result = if self.commands.send(Command::ReloadRules(tx)).is_ok() {
            rx.await
                .unwrap_or_else(|_| Err("the pipeline is gone".into()))
        } else {
            Err("the pipeline is gone".into())
        };
        match (&result, &self.rules_path) {
            (Ok(summary), _) => info!("SIGHUP: rules reloaded: {summary}"),
            (Err(e), Some(p)) => error!(
                "SIGHUP: keeping the running rules; {} is invalid: {e}",
                p.display()
            ),
            (Err(e), None) => error!("SIGHUP: keeping the running rules: {e}"),
        }
        let status = self
            .last_monitoring
            .map(|m| status_line(m, ""))
            .unwrap_or_else(|| "starting".into());
        let _ = self.notifier.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Stopping: one trigger for every task and thread, joined within 1.2 s (the pipeline is never
    /// longer than one model call or the camera's bounded close); then the name is released.
    async fn stop(self, exit: Option<Exit>) {
        info!(
            "stopping ({})",
            exit.map_or("an error".to_string(), |e| format!("{e:?}"))
        );
        let _ = self.notifier.stopping();
        // A pipeline waiting to hand over an update must see the channel close.
        drop(self.updates);
        let running = self.shutdown.join(Duration::from_millis(1200)).await;
        if running > 0 {
            warn!(
                "{running} task(s) did not stop in time (the pipeline thread is {}); exiting without them",
                self.shared.activity().describe()
            );
        }
        if exit != Some(Exit::BusLost) {
            let _ = self.conn.release_name(dbus::BUS_NAME).await;
        }
    }
}

fn status_line(m: MonitoringState, reason: &str) -> String {
    if reason.is_empty() {
        format!("Monitoring {}", m.as_str())
    } else {
        format!("Monitoring {}: {reason}", m.as_str())
    }
}

/// Pings the watchdog at half its interval, but only while observations keep being published.
async fn feed_watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    last_progress: Arc<AtomicU64>,
    mut shutdown: ShutdownSignal,
    _done: Done,
) {
    let mut tick = tokio::time::interval(interval / 2);
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            _ = tick.tick() => {}
        }
        let last = last_progress.load(Ordering::Relaxed);
        let age = (monotonic_now().as_millis() as u64).saturating_sub(last);
        if last > 0 && age < interval.as_millis() as u64 / 2 {
            if stalled {
                info!("watchdog: observations flow again");
                stalled = false;
            }
            let _ = notifier.watchdog_ping();
        } else if last > 0 && !stalled {
            error!("watchdog: no observation for {age} ms; not feeding the watchdog");
            stalled = true;
        }
    }
}

/// The periodic cabin description (`description.interval_ms`), published as `Description`.
struct DescriptionRefresh<F, P> {
    conn: zbus::Connection,
    published: Arc<Mutex<Published>>,
    shared: Arc<Shared<F>>,
    perception: Arc<P>,
    interval: Duration,
    max_tokens: usize,
}

impl<F: Send + Sync + 'static, P: Perception<Frame = F>> DescriptionRefresh<F, P> {
    /// One description at a time, on the newest frame, while the degradation level allows it.
    /// The shutdown drops a description in progress (which cancels its model job).
    async fn run(self, mut shutdown: ShutdownSignal, _done: Done) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tick.tick() => {}
            }
            if !self.shared.level().0.description_enabled() {
                continue;
            }
            let Some(frame) = self.shared.latest_frame() else {
                continue;
            };
            let started = std::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.triggered() => return,
                r = self.perception.describe(&frame.frame, self.max_tokens) => r,
            };
            self.shared.record(Stage::Description, started.elapsed());
            match result {
                Ok(text) => {
                    if let Err(e) =
                        dbus::publish_description(&self.conn, &self.published, text).await
                    {
                        warn!("D-Bus: cannot publish the description: {e}");
                    }
                }
                Err(e) => warn!("description: {e}"),
            }
        }
    }
}

fn hmi_runner<F: Send + Sync + 'static, P: Perception<Frame = F>>(
    shared: &Arc<Shared<F>>,
    perception: &Arc<P>,
    max_answer_tokens: usize,
    max_description_tokens: usize,
) -> HmiRunner {
    let shared = Arc::clone(shared);
    let perception = Arc::clone(perception);
    Arc::new(move |request: &HmiRequest| -> Answer {
        let Some(frame) = shared.latest_frame() else {
            return Box::pin(std::future::ready(Err(StageError::unavailable(
                "no camera frame yet",
            ))));
        };
        match request {
            HmiRequest::Ask(q) => perception.ask(&frame.frame, q, max_answer_tokens),
            HmiRequest::Describe => perception.describe(&frame.frame, max_description_tokens),
        }
    })
}

#[cfg(test)]
mod tests {
    //! The scheduler, the publisher and the D-Bus API with test doubles for the three stages,
    //! on a private dbus-daemon. The end-to-end tests in daemon/tests/ use the real stages.
    use super::*;
    use crate::client::{self, WatchEvent, error_name};
    use crate::config::{Bounded, BusKind};
    use crate::stages::{
        Alert, AlertId, Captured, DriverState, Observation, Perceived, ProbeAnswer, SourceEvent,
    };
    use crate::testbus::PrivateBus;
    use crate::vehicle::VehicleState;
    use autoneural_policies::ClearReason;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    /// Frame i at 50 ms intervals; the "phone" is in use for frames 10..30; `fail` stops frames.
    struct Frames {
        i: u64,
        fail: Arc<AtomicBool>,
        next_at: Duration,
        /// When the last frame was made.
        last: Option<Duration>,
    }

    impl FrameFeed for Frames {
        type Frame = u64;
        fn next(&mut self, timeout: Duration) -> SourceEvent<u64> {
            if self.fail.load(Ordering::Relaxed) {
                std::thread::sleep(timeout);
                return SourceEvent::Failed("test camera unplugged".into());
            }
            let now = monotonic_now();
            if self.next_at > now {
                std::thread::sleep(self.next_at - now);
            }
            self.next_at = monotonic_now() + Duration::from_millis(50);
            self.last = Some(monotonic_now());
            self.i += 1;
            SourceEvent::Frame(Captured {
                frame: Arc::new(self.i),
                timestamp: monotonic_now(),
                sequence: self.i,
            })
        }
        fn dropped(&self) -> u64 {
            0
        }
        fn last_delivery(&self) -> Option<Duration> {
            self.last
        }
        fn describe(&self) -> String {
            "test frames".into()
        }
    }

    struct Model;

    impl Perception for Model {
        type Frame = u64;
        fn probe(&self, frame: &u64, _: VehicleState) -> Result<Perceived, StageError> {
            let phone = (10..30).contains(frame);
            Ok(Perceived {
                answers: vec![ProbeAnswer {
                    id: "phone".into(),
                    field: "phone_in_use".into(),
                    answer: if phone { "in hand" } else { "none" }.into(),
                    probabilities: vec![],
                    field_probability: if phone { 0.9 } else { 0.1 },
                }],
                vision: Some(Duration::from_millis(1)),
                probes: Some(Duration::from_millis(1)),
                face: None,
            })
        }
        fn describe(&self, frame: &u64, _: usize) -> Answer {
            let text = format!("frame {frame}");
            Box::pin(async move { Ok(text) })
        }
        fn ask(&self, _: &u64, q: &str, _: usize) -> Answer {
            let text = format!("you asked: {q}");
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(text)
            })
        }
        fn execution_providers(&self) -> Vec<(String, String)> {
            vec![("vision".into(), "cpu".into())]
        }
    }

    /// Phone alert after 200 ms of phone use, cleared at the first frame without it.
    #[derive(Default)]
    struct Rules {
        since: Option<Duration>,
        active: bool,
    }

    impl Rules {
        fn alert(&self, cleared_at: Option<Duration>) -> Alert {
            Alert {
                id: AlertId::PhoneUse,
                level: 2,
                message: "Phone in use".into(),
                raised_at: self.since.unwrap_or_default(),
                cleared_at,
            }
        }
    }

    impl Policy for Rules {
        fn update(&mut self, o: &Observation) -> (DriverState, Vec<AlertEvent>) {
            let phone = o.probabilities.phone_in_use.is_some_and(|p| p > 0.5);
            let mut events = vec![];
            if phone {
                let since = *self.since.get_or_insert(o.timestamp);
                if !self.active && o.timestamp - since >= Duration::from_millis(200) {
                    self.active = true;
                    events.push(AlertEvent::Raised {
                        alert: self.alert(None),
                    });
                }
            } else {
                if self.active {
                    self.active = false;
                    events.push(AlertEvent::Cleared {
                        alert: self.alert(Some(o.timestamp)),
                        reason: ClearReason::ConditionEnded,
                    });
                }
                self.since = None;
            }
            let state = DriverState {
                phone_in_use: Some(phone),
                face_visible: Some(o.is_valid()),
                ..DriverState::default()
            };
            (state, events)
        }
        fn active_alerts(&self) -> Vec<Alert> {
            if self.active {
                vec![self.alert(None)]
            } else {
                vec![]
            }
        }
        fn reload(&mut self) -> Result<(String, Vec<AlertEvent>), StageError> {
            Err(StageError::new("test rules cannot be reloaded"))
        }
    }

    fn config(address: &str) -> Config {
        let src = format!(
            "[camera]\nsource = \"synthetic\"\nscenario = \"test\"\nfps = 20\nframe_timeout_ms = 300\n\
             [model]\nbundle = \"x\"\n[description]\ninterval_ms = 200\n\
             [hmi]\nmax_question_chars = 20\nmax_pending = 1\n\
             [bus]\nkind = \"address\"\naddress = \"{address}\"\n"
        );
        Config::parse(&src, Path::new("/t/c.toml")).unwrap()
    }

    async fn wait_for<F: Fn(&WatchEvent) -> bool>(s: &mut zbus::MessageStream, f: F) -> WatchEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, client::next(s))
                .await
                .expect("event in time")
                .expect("stream open")
                .unwrap();
            if let Some(e) = client::decode(&msg).into_iter().find(|e| f(e)) {
                return e;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_state_alerts_and_answers_on_a_private_bus() {
        let dir = tempfile::tempdir().unwrap();
        let bus = PrivateBus::start(dir.path(), "").unwrap();
        let mut cfg = config(&bus.address);
        cfg.budgets.window = Bounded(5);
        assert_eq!(cfg.bus.kind, BusKind::Address);
        let fail = Arc::new(AtomicBool::new(false));
        let source = Frames {
            i: 0,
            fail: Arc::clone(&fail),
            next_at: Duration::ZERO,
            last: None,
        };
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let mut signals = client::watch_stream(&conn).await.unwrap();
        let service = tokio::spawn(run(
            cfg,
            source,
            Arc::new(Model),
            Rules::default(),
            Arc::new(Notifier::disabled()),
        ));
        assert!(
            client::wait_for_service(&conn, Duration::from_secs(10))
                .await
                .unwrap()
        );
        let cockpit = client::cockpit(&conn).await.unwrap();

        wait_for(
            &mut signals,
            |e| matches!(e, WatchEvent::Changed(n, v) if n == "PhoneInUse" && v == "true"),
        )
        .await;
        let raised = wait_for(&mut signals, |e| {
            matches!(e, WatchEvent::AlertRaised { .. })
        })
        .await;
        assert!(
            matches!(raised, WatchEvent::AlertRaised { ref id, level: 2, .. } if id == "phone_use"),
            "{raised:?}"
        );
        assert_eq!(cockpit.active_alerts().await.unwrap()[0].0, "phone_use");
        wait_for(
            &mut signals,
            |e| matches!(e, WatchEvent::AlertCleared { id, .. } if id == "phone_use"),
        )
        .await;
        assert!(!cockpit.phone_in_use().await.unwrap());
        assert_eq!(cockpit.monitoring_state().await.unwrap(), "active");

        // Questions: answered; bad input gets a named error.
        assert_eq!(
            cockpit.ask("Is it raining?").await.unwrap(),
            "you asked: Is it raining?"
        );
        let invalid = "org.autoneural.Cockpit1.Error.InvalidQuestion";
        assert_eq!(error_name(cockpit.ask("").await.unwrap_err()), invalid);
        assert_eq!(
            error_name(cockpit.ask(&"x".repeat(21)).await.unwrap_err()),
            invalid
        );
        assert_eq!(
            error_name(cockpit.ask("a\u{1b}[2J").await.unwrap_err()),
            invalid
        );
        // max_pending = 1: of two concurrent questions one is refused as busy.
        let (a, b) = tokio::join!(cockpit.ask("one"), cockpit.ask("two"));
        let busy: Vec<String> = [a, b]
            .into_iter()
            .filter_map(|r| r.err())
            .map(error_name)
            .collect();
        assert_eq!(busy, ["org.autoneural.Cockpit1.Error.Busy"]);
        wait_for(
            &mut signals,
            |e| matches!(e, WatchEvent::Changed(n, _) if n == "Description"),
        )
        .await;

        let diag = client::diagnostics(&conn).await.unwrap();
        let stages: Vec<String> = diag
            .latency()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.0)
            .collect();
        assert!(
            stages.contains(&"capture_to_observation".to_string()),
            "{stages:?}"
        );
        assert_eq!(diag.execution_providers().await.unwrap()["vision"], "cpu");

        // The committed introspection matches the live object.
        let xml = zbus::fdo::IntrospectableProxy::builder(&conn)
            .destination(crate::dbus::BUS_NAME)
            .path(crate::dbus::OBJECT_PATH)
            .build()
            .await
            .unwrap()
            .introspect()
            .await
            .unwrap();
        let committed_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.autoneural.Cockpit1.xml");
        let live = crate::dbus::our_interfaces(&xml);
        if std::env::var_os("AUTONEURAL_UPDATE_INTROSPECTION").is_some() {
            std::fs::write(&committed_path, &live).unwrap();
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap();
        assert_eq!(
            live, committed,
            "update with AUTONEURAL_UPDATE_INTROSPECTION=1 if the change is intended"
        );

        // Camera failure: unavailable with the reason, then recovery.
        fail.store(true, Ordering::Relaxed);
        wait_for(&mut signals, |e| matches!(e, WatchEvent::Changed(n, v) if n == "MonitoringState" && v == "\"unavailable\"")).await;
        assert!(
            cockpit
                .monitoring_reason()
                .await
                .unwrap()
                .contains("unplugged")
        );
        assert!(!cockpit.is_eyes_on_road().await.unwrap());
        fail.store(false, Ordering::Relaxed);
        wait_for(&mut signals, |e| matches!(e, WatchEvent::Changed(n, v) if n == "MonitoringState" && v == "\"active\"")).await;
        service.abort();
    }

    /// The test model, remembering the vehicle state of each frame it probes.
    struct SpeedSeen(Mutex<Vec<Option<f32>>>);

    impl Perception for SpeedSeen {
        type Frame = u64;
        fn probe(&self, frame: &u64, vehicle: VehicleState) -> Result<Perceived, StageError> {
            self.0.lock().unwrap().push(vehicle.speed_kmh);
            Model.probe(frame, vehicle)
        }
        fn describe(&self, frame: &u64, n: usize) -> Answer {
            Model.describe(frame, n)
        }
        fn ask(&self, frame: &u64, q: &str, n: usize) -> Answer {
            Model.ask(frame, q, n)
        }
        fn execution_providers(&self) -> Vec<(String, String)> {
            Model.execution_providers()
        }
    }

    /// The test rules, remembering the vehicle speed of each observation.
    struct SpeedRules(Arc<Mutex<Vec<Option<f32>>>>, Rules);

    impl Policy for SpeedRules {
        fn update(&mut self, o: &Observation) -> (DriverState, Vec<AlertEvent>) {
            self.0.lock().unwrap().push(o.vehicle_speed_kmh);
            self.1.update(o)
        }
        fn active_alerts(&self) -> Vec<Alert> {
            self.1.active_alerts()
        }
        fn reload(&mut self) -> Result<(String, Vec<AlertEvent>), StageError> {
            self.1.reload()
        }
    }

    /// Waits until the last of `seen` is `want`.
    async fn last_is(seen: &Mutex<Vec<Option<f32>>>, want: Option<f32>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().last() != Some(&want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never saw {want:?}: {:?}",
                seen.lock().unwrap().last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The service with the test frames on a private bus, configured by `edit`: (the bus, a
    /// client connection once the service is on the bus, the service task).
    async fn serve<P: Perception<Frame = u64>, L: Policy>(
        dir: &Path,
        edit: impl FnOnce(&mut Config),
        perception: Arc<P>,
        policy: L,
    ) -> (
        PrivateBus,
        zbus::Connection,
        tokio::task::JoinHandle<anyhow::Result<Exit>>,
    ) {
        let bus = PrivateBus::start(dir, "").unwrap();
        let mut cfg = config(&bus.address);
        cfg.description.interval_ms = Bounded(0);
        edit(&mut cfg);
        let source = Frames {
            i: 0,
            fail: Arc::new(AtomicBool::new(false)),
            next_at: Duration::ZERO,
            last: None,
        };
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let service = tokio::spawn(run(
            cfg,
            source,
            perception,
            policy,
            Arc::new(Notifier::disabled()),
        ));
        assert!(
            client::wait_for_service(&conn, Duration::from_secs(10))
                .await
                .unwrap()
        );
        (bus, conn, service)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_vehicle_speed_from_the_bus_reaches_perception_and_policies_until_it_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let perceived = Arc::new(SpeedSeen(Mutex::new(vec![])));
        let observed = Arc::new(Mutex::new(vec![]));
        let (_bus, conn, service) = serve(
            dir.path(),
            |cfg| cfg.vehicle.speed_max_age_ms = Bounded(1500),
            Arc::clone(&perceived),
            SpeedRules(Arc::clone(&observed), Rules::default()),
        )
        .await;
        let vehicle = client::vehicle(&conn).await.unwrap();
        assert_eq!(vehicle.speed().await.unwrap(), -1.0, "no report yet");
        last_is(&observed, None).await;

        vehicle.set_speed(42.5).await.unwrap();
        assert_eq!(vehicle.speed().await.unwrap(), 42.5);
        last_is(&perceived.0, Some(42.5)).await;
        last_is(&observed, Some(42.5)).await;

        // Out-of-range reports are refused by name and change nothing.
        for bad in [-3.0, f64::NAN, f64::INFINITY, 401.0] {
            let e = vehicle.set_speed(bad).await.unwrap_err();
            assert_eq!(
                error_name(e),
                "org.autoneural.Cockpit1.Error.InvalidArgument"
            );
        }
        assert_eq!(vehicle.speed().await.unwrap(), 42.5);

        // The gateway stops reporting: after the maximum age the speed is unknown, never stale.
        last_is(&perceived.0, None).await;
        last_is(&observed, None).await;
        assert_eq!(vehicle.speed().await.unwrap(), -1.0);
        service.abort();
    }

    /// Sets its flag when dropped: tells whether the daemon let go of an answer's future.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// The test model whose answers never come (a model stuck on a long generation).
    struct Hanging(Arc<AtomicBool>);

    impl Perception for Hanging {
        type Frame = u64;
        fn probe(&self, frame: &u64, vehicle: VehicleState) -> Result<Perceived, StageError> {
            Model.probe(frame, vehicle)
        }
        fn describe(&self, frame: &u64, n: usize) -> Answer {
            Model.describe(frame, n)
        }
        fn ask(&self, _: &u64, _: &str, _: usize) -> Answer {
            let job = DropFlag(Arc::clone(&self.0));
            Box::pin(async move {
                let _job = job;
                std::future::pending::<()>().await;
                Ok(String::new())
            })
        }
        fn execution_providers(&self) -> Vec<(String, String)> {
            Model.execution_providers()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_question_that_times_out_lets_go_of_its_model_job() {
        let dir = tempfile::tempdir().unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let (_bus, conn, service) = serve(
            dir.path(),
            |cfg| {
                cfg.hmi.timeout_ms = Bounded(100);
                cfg.hmi.max_pending = Bounded(1);
            },
            Arc::new(Hanging(Arc::clone(&released))),
            Rules::default(),
        )
        .await;
        let cockpit = client::cockpit(&conn).await.unwrap();
        // Wait for a frame, then ask: the model never answers, the caller gets Timeout and the
        // job is let go (dropping it cancels it in the inference worker).
        let mut answer = cockpit.ask("Anyone there?").await;
        while matches!(&answer, Err(e) if error_name(e.clone()).ends_with("Unavailable")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer = cockpit.ask("Anyone there?").await;
        }
        assert_eq!(
            error_name(answer.unwrap_err()),
            "org.autoneural.Cockpit1.Error.Timeout"
        );
        assert!(released.load(Ordering::Relaxed), "the job is still held");
        // max_pending = 1: the slot of the timed-out question is free again at once.
        assert_eq!(
            error_name(cockpit.ask("Still there?").await.unwrap_err()),
            "org.autoneural.Cockpit1.Error.Timeout"
        );
        service.abort();
    }

    #[tokio::test]
    async fn watchdog_is_fed_only_while_observations_flow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let interval = Duration::from_millis(200);
        let notifier = Arc::new(Notifier::for_test(&path, interval));
        let progress = Arc::new(AtomicU64::new(monotonic_now().as_millis() as u64));
        let shutdown = Shutdown::new();
        let (signal, done) = shutdown.subscribe();
        let task = tokio::spawn(feed_watchdog(
            notifier,
            interval,
            Arc::clone(&progress),
            signal,
            done,
        ));
        let count = |sock: &std::os::unix::net::UnixDatagram| {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while let Ok(len) = sock.recv(&mut buf) {
                assert_eq!(&buf[..len], b"WATCHDOG=1");
                n += 1;
            }
            n
        };
        // Observations keep coming: pings.
        for _ in 0..6 {
            progress.store(monotonic_now().as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(count(&sock) >= 1);
        // The pipeline stalls: the pings stop.
        tokio::time::sleep(Duration::from_millis(150)).await;
        count(&sock);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(count(&sock), 0);
        // The shutdown ends the task by itself.
        assert_eq!(shutdown.join(Duration::from_secs(5)).await, 0);
        task.await.unwrap();
    }
}
