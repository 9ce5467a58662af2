//! A real PostgreSQL server for the ledger tests: `initdb` into a fresh temporary directory
//! and `postgres` on a free local port, killed on drop. Debian's server binaries live in
//! `/usr/lib/postgresql/<version>/bin`; PostgreSQL refuses to run as root, so as root (CI)
//! both run as the `postgres` user through `runuser`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A `postgres` child process with its own data directory, trusting local connections.
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_root: bool,
    child: Option<Child>,
}

/// The newest `/usr/lib/postgresql/<version>/bin`. Panics (never skips) when PostgreSQL is
/// not installed: `apt-get install -y postgresql`.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed for these tests (apt-get install -y postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/<version>/bin/postgres (apt-get install -y postgresql)")
        .1
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PostgresServer {
    /// Initializes a cluster and starts it; returns once it accepts connections.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "ag-postgres-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data directory");
        let mut server = Self {
            port,
            dir,
            bin: server_bin(),
            as_root: is_root(),
            child: None,
        };
        if server.as_root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.dir)
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown the data directory to postgres");
        }
        let out = server
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(server.data())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.spawn();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `tool` from the server binaries, as the `postgres` user when running as root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn spawn(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .command("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} did not become ready",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`; the server trusts local
    /// connections, so the password only shows that it never leaks.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            super::LEDGER_PASSWORD,
            self.port
        )
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`, as a crash would; `runuser`
    /// does not pass signals on) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            self.wait_gone();
        }
    }

    fn wait_gone(&self) {
        let pid_file: &Path = &self.data().join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while (pid_file.exists() || TcpStream::connect(("127.0.0.1", self.port)).is_ok())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
