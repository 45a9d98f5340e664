//! autoneural-daemon: `autoneurald`, the cockpit service, and `autoneuralctl`, its client.
//!
//! capture -> inference -> policies -> D-Bus. The scheduler (`pipeline`), the budgets (`budget`),
//! the D-Bus API (`dbus`) and the systemd integration (`notify`) work on the stage traits of
//! `stages`; `adapters` implements those with the project's camera, inference and policies crates.
//! See README.md (configuration, D-Bus API, troubleshooting) and ARCHITECTURE.md.

pub mod adapters;
pub mod budget;
pub mod client;
pub mod config;
pub mod dbus;
pub mod logging;
pub mod notify;
pub mod pipeline;
pub mod read_only;
pub mod service;
pub mod shutdown;
pub mod stages;
pub mod stats;
#[doc(hidden)]
pub mod testbus;
pub mod vehicle;
