//! systemd's notify protocol, written out: one datagram per message to the socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), and the watchdog interval from
//! `$WATCHDOG_USEC` / `$WATCHDOG_PID`. Outside systemd every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The sending socket, non-blocking: the notifier is called from the async runtime's threads,
/// and a service manager that does not read (busy, or a test harness) must not stall them — a
/// full datagram queue would otherwise block `send` until it drains.
fn nonblocking_socket() -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Sends notify messages to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads the environment. The variables are left in place (tests and children may read them);
    /// a malformed `$NOTIFY_SOCKET` is an error so that a misconfigured unit is noticed at start.
    pub fn from_env() -> io::Result<Self> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let target = match socket {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => {
                let s = s.to_string_lossy().into_owned();
                let addr = parse_address(&s)?;
                Some((nonblocking_socket()?, addr))
            }
        };
        Ok(Self {
            target,
            watchdog: watchdog_from_env(),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    /// A notifier for a socket path with a watchdog interval (tests of the service).
    #[cfg(test)]
    pub(crate) fn for_test(path: &std::path::Path, watchdog: Duration) -> Self {
        Self {
            target: Some((
                nonblocking_socket().expect("socket"),
                SocketAddr::from_pathname(path).expect("path"),
            )),
            watchdog: Some(watchdog),
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The interval systemd expects pings within, when the watchdog is on for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (newline-separated `KEY=VALUE` assignments). Never blocks: when the
    /// service manager's queue is full the message is dropped with `WouldBlock` (a watchdog ping
    /// comes again at half the interval; a status is superseded by the next one).
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    pub fn watchdog_ping(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\nSTATUS=Shutting down")
    }

    pub fn reloading(&self) -> io::Result<()> {
        self.send("RELOADING=1\nSTATUS=Reloading rules")
    }
}

/// A STATUS= value must stay on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn parse_address(s: &str) -> io::Result<SocketAddr> {
    if let Some(name) = s.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if s.starts_with('/') {
        SocketAddr::from_pathname(s)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={s:?} is neither an absolute path nor an @abstract name"),
        ))
    }
}

/// The watchdog interval, if it is meant for this process.
fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier_for(addr: SocketAddr) -> Notifier {
        Notifier {
            target: Some((nonblocking_socket().unwrap(), addr)),
            watchdog: None,
        }
    }

    /// A service manager that never reads: the datagram queue fills (about 10 messages) and every
    /// later send fails at once with WouldBlock instead of blocking the async runtime's thread
    /// (which once hung the daemon's shutdown in a long test: its notify socket was never read).
    #[test]
    fn a_full_queue_drops_messages_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _server = UnixDatagram::bind(&path).unwrap();
        let n = notifier_for(parse_address(path.to_str().unwrap()).unwrap());
        let mut dropped = 0;
        for _ in 0..1000 {
            match n.watchdog_ping() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dropped += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // A blocking socket would hang here instead of reporting WouldBlock.
        assert!(dropped > 0, "the queue never filled");
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = notifier_for(parse_address(path.to_str().unwrap()).unwrap());
        n.ready("Monitoring\nactive").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=Monitoring active");
        n.watchdog_ping().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("autoneural-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = notifier_for(parse_address(&format!("@{name}")).unwrap());
        n.status("Loading model").unwrap();
        assert_eq!(recv(&server), "STATUS=Loading model");
    }

    #[test]
    fn relative_socket_names_are_rejected() {
        assert!(parse_address("notify.sock").is_err());
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        n.ready("x").unwrap();
    }
}
