//! A private `dbus-daemon` on a socket in a temporary directory, for tests (and nothing else):
//! each test gets its own bus, optionally with the project's bus policy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running private bus; killed when dropped.
pub struct PrivateBus {
    child: Child,
    pub dir: PathBuf,
    pub address: String,
}

impl PrivateBus {
    /// Starts a bus where everyone may do everything, plus `extra_policy` (busconfig XML
    /// elements such as `<policy>`s, or an `<include>`), which comes after and so wins.
    pub fn start(dir: &Path, extra_policy: &str) -> std::io::Result<Self> {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
  {extra_policy}
</busconfig>
"#,
                socket.display()
            ),
        )?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--print-address")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().to_string();
        if address.is_empty() {
            let _ = child.kill();
            return Err(std::io::Error::other("dbus-daemon printed no address"));
        }
        Ok(Self {
            child,
            dir: dir.to_path_buf(),
            address,
        })
    }
}

impl PrivateBus {
    /// Kills the bus daemon (a bus crash, for fault tests).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
