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

/// Every property of both interfaces as (interface, name, value), sorted.
pub async fn all_properties(conn: &Connection) -> zbus::Result<Vec<(String, String, String)>> {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(BUS_NAME)
        .path(OBJECT_PATH)
        .build()
        .await?;
    let mut out = vec![];
    for iface in [INTERFACE, crate::dbus::DIAGNOSTICS_INTERFACE] {
        let all = props.get_all(iface.try_into()?).await?;
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, val) in v {
            out.push((iface.to_string(), k.to_string(), show(&val)));
        }
    }
    Ok(out)
}
