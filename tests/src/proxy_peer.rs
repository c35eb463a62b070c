//! A private tinyproxy (Debian `tinyproxy`, installed by `scripts/peers.sh`) on
//! a free loopback port, logging every request it relays.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// A running tinyproxy; killed on drop.
pub struct Tinyproxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Tinyproxy {
    /// Starts one that relays anything from 127.0.0.1 (CONNECT to any port).
    pub fn start() -> anyhow::Result<Tinyproxy> {
        let bin = PathBuf::from("/usr/bin/tinyproxy");
        anyhow::ensure!(bin.exists(), "tinyproxy is not installed: run `bash scripts/peers.sh`");
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let log = dir.path().join("proxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        // No ConnectPort lines: CONNECT is allowed to every port.
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\nMaxClients 100\nAllow 127.0.0.1\n",
                log.display()
            ),
        )?;
        let child = Command::new(&bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let p = Tinyproxy { port, dir, child };
        wait_for("tinyproxy to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        Ok(p)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines it relayed so far (`CONNECT host:port HTTP/1.1`,
    /// `GET http://… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                l.split_once("): ")
                    .filter(|_| l.contains("Request (file descriptor"))
                    .map(|(_, r)| r.to_string())
            })
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
