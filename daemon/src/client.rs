//! Client side of the D-Bus API: proxies for `autoneuralctl` and the end-to-end tests, and the
//! `watch` loop.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use zbus::{Connection, MessageStream, OwnedVariant, proxy};

use crate::dbus::{BUS_NAME, INTERFACE, OBJECT_PATH};

#[proxy(
    interface = "org.autoneural.Cockpit1",
    default_service = "org.autoneural.Cockpit1",
    default_path = "/org/autoneural/Cockpit1"
)]
pub trait Cockpit {
    fn ask(&self, question: &str) -> zbus::Result<String>;
    fn describe(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn is_eyes_on_road(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn attentive_probability(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn distraction_level(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn fatigue_level(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn is_hands_on_wheel(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn phone_in_use(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn eyes_closed(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn face_visible(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_alerts(&self) -> zbus::Result<Vec<(String, u32, String, u64)>>;
    #[zbus(property)]
    fn monitoring_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn monitoring_reason(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_observation(&self) -> zbus::Result<u64>;
}

#[proxy(
    interface = "org.autoneural.Cockpit1.Diagnostics",
    default_service = "org.autoneural.Cockpit1",
    default_path = "/org/autoneural/Cockpit1"
)]
pub trait Diagnostics {
    #[zbus(property)]
    fn latency(&self) -> zbus::Result<Vec<(String, f64, f64, u64)>>;
    #[zbus(property)]
    fn budgets(&self) -> zbus::Result<HashMap<String, f64>>;
    #[zbus(property)]
    fn execution_providers(&self) -> zbus::Result<HashMap<String, String>>;
    #[zbus(property)]
    fn degradation_level(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn degradation_reason(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn source(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn source_epoch(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn frames_processed(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn frames_dropped(&self) -> zbus::Result<u64>;
}

#[proxy(
    interface = "org.autoneural.Cockpit1.Vehicle",
    default_service = "org.autoneural.Cockpit1",
    default_path = "/org/autoneural/Cockpit1"
)]
pub trait Vehicle {
    fn set_speed(&self, speed_kmh: f64) -> zbus::Result<()>;
    #[zbus(property)]
    fn speed(&self) -> zbus::Result<f64>;
}

pub async fn vehicle(conn: &Connection) -> zbus::Result<VehicleProxy<'static>> {
    VehicleProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Proxies that read every property from the service: some are not signalled (they change with
/// every frame), so a cached value would go stale.
pub async fn cockpit(conn: &Connection) -> zbus::Result<CockpitProxy<'static>> {
    CockpitProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

pub async fn diagnostics(conn: &Connection) -> zbus::Result<DiagnosticsProxy<'static>> {
    DiagnosticsProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Which bus to talk to.
#[derive(Debug, Clone)]
pub enum Bus {
    System,
    Session,
    Address(String),
}

pub async fn connect(bus: &Bus) -> zbus::Result<Connection> {
    match bus {
        Bus::System => Connection::system().await,
        Bus::Session => Connection::session().await,
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()).build().await,
    }
}

/// The next item of a stream (zbus 6 brings no stream combinators).
pub async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// One thing `watch` saw.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Changed(String, String),
    AlertRaised {
        id: String,
        level: u32,
        message: String,
        timestamp: u64,
    },
    AlertCleared {
        id: String,
        timestamp: u64,
    },
    ServiceGone,
}

/// Subscribes to the service's signals (and to its name going away).
pub async fn watch_stream(conn: &Connection) -> zbus::Result<MessageStream> {
    let rule = format!("type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}'");
    let stream = MessageStream::for_match_rule(rule.as_str(), conn, None).await?;
    Ok(stream)
}

pub async fn owner_gone_stream(conn: &Connection) -> zbus::Result<MessageStream> {
    let rule = format!(
        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{BUS_NAME}'"
    );
    MessageStream::for_match_rule(rule.as_str(), conn, None).await
}

/// Turns a signal message into watch events (PropertiesChanged gives one per property).
pub fn decode(msg: &zbus::Message) -> Vec<WatchEvent> {
    let header = msg.header();
    let member = header
        .member()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let body = msg.body();
    match member.as_str() {
        "AlertRaised" => match body.deserialize::<(String, u32, String, u64)>() {
            Ok((id, level, message, timestamp)) => vec![WatchEvent::AlertRaised {
                id,
                level,
                message,
                timestamp,
            }],
            Err(_) => vec![],
        },
        "AlertCleared" => match body.deserialize::<(String, u64)>() {
            Ok((id, timestamp)) => vec![WatchEvent::AlertCleared { id, timestamp }],
            Err(_) => vec![],
        },
        "PropertiesChanged" => {
            match body.deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>() {
                Ok((_iface, changed, _)) => {
                    let mut v: Vec<(String, OwnedVariant)> = changed.into_iter().collect();
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    v.into_iter()
                        .map(|(k, val)| WatchEvent::Changed(k, show(&val)))
                        .collect()
                }
                Err(_) => vec![],
            }
        }
        "NameOwnerChanged" => match body.deserialize::<(String, String, String)>() {
            Ok((name, _, new)) if name == BUS_NAME && new.is_empty() => {
                vec![WatchEvent::ServiceGone]
            }
            _ => vec![],
        },
        _ => vec![],
    }
}

/// A property value for people: strings bare, numbers short, alerts as `id(level)`.
pub fn show(v: &zbus::Variant<'_>) -> String {
    if let Ok(s) = <&str>::try_from(v) {
        return format!("{s:?}");
    }
    if let Ok(b) = bool::try_from(v) {
        return b.to_string();
    }
    if let Ok(d) = f64::try_from(v) {
        return format!("{d:.0}");
    }
    if let Ok(t) = u64::try_from(v) {
        return t.to_string();
    }
    if let Ok(owned) = v.try_clone()
        && let Ok(alerts) = Vec::<(String, u32, String, u64)>::try_from(owned)
    {
        let ids: Vec<String> = alerts
            .iter()
            .map(|(id, l, _, _)| format!("{id}({l})"))
            .collect();
        return format!("[{}]", ids.join(", "));
    }
    format!("{v:?}")
}

/// The D-Bus error name of a failed call (`org.autoneural.Cockpit1.Error.Busy`, ...), or the
/// error itself when it is not a D-Bus error reply.
pub fn error_name(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => format!("{other:?}"),
    }
}

/// Waits until the service owns its name on `conn`'s bus, or the timeout passes.
pub async fn wait_for_service(conn: &Connection, timeout: Duration) -> zbus::Result<bool> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if dbus.name_has_owner(BUS_NAME.try_into()?).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every property of the three interfaces as (interface, name, value), sorted.
pub async fn all_properties(conn: &Connection) -> zbus::Result<Vec<(String, String, String)>> {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(BUS_NAME)
        .path(OBJECT_PATH)
        .build()
        .await?;
    let mut out = vec![];
    for iface in [
        INTERFACE,
        crate::dbus::DIAGNOSTICS_INTERFACE,
        crate::dbus::VEHICLE_INTERFACE,
    ] {
        let all = props.get_all(iface.try_into()?).await?;
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, val) in v {
            out.push((iface.to_string(), k.to_string(), show(&val)));
        }
    }
    Ok(out)
}

/// The properties that move with nearly every frame (whole percent).
const LEVELS: [(&str, &str); 3] = [
    ("AttentiveProbability", "attentive"),
    ("DistractionLevel", "distraction"),
    ("FatigueLevel", "fatigue"),
];

/// What `autoneuralctl watch` prints for each event: alerts and every change of a state
/// (booleans, monitoring state and reason, active alerts, description) at once; the levels, which
/// move by a percent with nearly every frame, only as one `levels` line at most once per
/// `level_interval` (when one of them changed since the last such line).
pub struct WatchPrinter {
    level_interval: Duration,
    levels: [Option<String>; 3],
    levels_changed: bool,
    last_levels_line: Option<std::time::Instant>,
}

impl WatchPrinter {
    pub fn new(level_interval: Duration) -> Self {
        Self {
            level_interval,
            levels: [None, None, None],
            levels_changed: false,
            last_levels_line: None,
        }
    }

    /// Records a level's current value (read at start) without printing it.
    pub fn know_level(&mut self, name: &str, value: String) {
        if let Some(i) = LEVELS.iter().position(|(n, _)| *n == name) {
            self.levels[i] = Some(value);
        }
    }

    /// The lines to print for `event`, seen at `now`.
    pub fn lines(&mut self, event: &WatchEvent, now: std::time::Instant) -> Vec<String> {
        match event {
            WatchEvent::Changed(name, value) => {
                if let Some(i) = LEVELS.iter().position(|(n, _)| n == name) {
                    if self.levels[i].as_deref() != Some(value.as_str()) {
                        self.levels[i] = Some(value.clone());
                        self.levels_changed = true;
                    }
                    return self.levels_line(now).into_iter().collect();
                }
                vec![format!("{name} = {value}")]
            }
            WatchEvent::AlertRaised {
                id, level, message, ..
            } => vec![format!("ALERT RAISED  {id} (level {level}): {message}")],
            WatchEvent::AlertCleared { id, .. } => vec![format!("ALERT CLEARED {id}")],
            WatchEvent::ServiceGone => vec!["the service left the bus".into()],
        }
    }

    /// The levels line, if a level changed and the last line is old enough.
    pub fn levels_line(&mut self, now: std::time::Instant) -> Option<String> {
        let due = self
            .last_levels_line
            .is_none_or(|t| now.duration_since(t) >= self.level_interval);
        if !(self.levels_changed && due) {
            return None;
        }
        self.levels_changed = false;
        self.last_levels_line = Some(now);
        let parts: Vec<String> = LEVELS
            .iter()
            .zip(&self.levels)
            .filter_map(|((_, short), v)| v.as_ref().map(|v| format!("{short} {v} %")))
            .collect();
        Some(format!("levels: {}", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn changed(name: &str, value: &str) -> WatchEvent {
        WatchEvent::Changed(name.into(), value.into())
    }

    #[test]
    fn watch_prints_states_and_alerts_at_once_and_levels_at_a_low_rate() {
        let mut p = WatchPrinter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let mut printed = vec![];
        // Ten seconds at 10 fps with a level moving every frame and one state change.
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(100 * i);
            let level = changed("DistractionLevel", &(i % 7).to_string());
            printed.extend(p.lines(&level, now));
            if i == 42 {
                printed.extend(p.lines(&changed("IsEyesOnRoad", "false"), now));
                printed.extend(p.lines(
                    &WatchEvent::AlertRaised {
                        id: "long_distraction".into(),
                        level: 1,
                        message: "Eyes on the road".into(),
                        timestamp: 0,
                    },
                    now,
                ));
            }
        }
        let levels = printed.iter().filter(|l| l.starts_with("levels:")).count();
        assert!((1..=2).contains(&levels), "{printed:#?}");
        assert!(printed.contains(&"IsEyesOnRoad = false".to_string()));
        assert!(
            printed
                .iter()
                .any(|l| l.starts_with("ALERT RAISED  long_distraction")),
            "{printed:#?}"
        );
        assert_eq!(printed.len(), levels + 2, "{printed:#?}");
        assert!(
            printed[0].starts_with("levels: distraction 0 %"),
            "{printed:#?}"
        );
    }

    #[test]
    fn an_unchanged_level_prints_nothing() {
        let mut p = WatchPrinter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(p.lines(&changed("FatigueLevel", "3"), t0).len(), 1);
        let later = t0 + Duration::from_secs(60);
        assert!(p.lines(&changed("FatigueLevel", "3"), later).is_empty());
        p.know_level("DistractionLevel", "12".into());
        assert_eq!(
            p.lines(&changed("FatigueLevel", "4"), later),
            ["levels: distraction 12 %, fatigue 4 %"]
        );
    }
}
