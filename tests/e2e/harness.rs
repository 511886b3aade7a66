//! Starts the real `plinth` binary on a free 127.0.0.1 port with its own data directory, waits
//! for `/readyz`, fails fast if it exits, and kills it on drop. Every request has a timeout.

use crate::memory_cage::MemoryCage;
use reqwest::multipart::{Form, Part};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin token test servers run with.
pub(crate) const TOKEN: &str = "e2e-admin-token-0123456789";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) async fn read(resp: reqwest::Response) -> Reply {
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.unwrap().to_vec(),
        }
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The stable error code of a JSON error response.
    pub(crate) fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not a JSON error: {}", self.text()))
            .to_string()
    }
}

/// How to start a server.
#[derive(Clone, Default)]
pub(crate) struct Options {
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run without `PLINTH_ADMIN_TOKEN` (so one is generated).
    pub no_env_token: bool,
    /// Pass --listen and --data-dir through the environment instead of flags.
    pub settings_in_env: bool,
    /// Run the server in a memory cgroup of this many bytes where the machine allows one
    /// (see [`MemoryCage`]).
    pub memory_limit: Option<u64>,
}

impl Options {
    /// Default options plus these command-line arguments after `serve`.
    pub(crate) fn with_args(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Self::default()
        }
    }
}

/// A running `plinth serve`.
pub(crate) struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    /// What the server printed on standard output (generated tokens), apart from its log.
    printed: Arc<Mutex<Vec<String>>>,
    client: Client,
    /// Remove the data directory on drop.
    owns_dir: bool,
    /// The memory cgroup the server runs in, if any (removed after the server exits).
    cage: Option<MemoryCage>,
}

/// A plain blocking `GET /readyz` (usable from sync and async tests alike).
fn readyz_ok(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// A temporary directory removed on drop. Declare it before the server using it, so the server
/// is dropped (killed) first.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        Self(fresh_data_dir())
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fresh_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plinth-e2e-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command line of `plinth serve` on `data_dir` with `options`; its output is discarded
/// unless the caller redirects it.
pub(crate) fn command(data_dir: &Path, options: &Options) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plinth"));
    cmd.arg("serve");
    if options.settings_in_env {
        cmd.env("PLINTH_LISTEN", "127.0.0.1:0")
            .env("PLINTH_DATA_DIR", data_dir);
    } else {
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
    }
    cmd.args(&options.args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("PLINTH_ADMIN_TOKEN")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !options.no_env_token {
        cmd.env("PLINTH_ADMIN_TOKEN", TOKEN);
    }
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    /// A server on a fresh data directory.
    pub(crate) fn start() -> Server {
        Self::start_fresh(Options::default())
    }

    /// A server with `options` on a fresh data directory (removed on drop).
    pub(crate) fn start_fresh(options: Options) -> Server {
        let mut server = Self::start_with(fresh_data_dir(), options);
        server.owns_dir = true;
        server
    }

    /// A server on `data_dir` with `options`. The caller owns (and removes) `data_dir`.
    pub(crate) fn start_with(data_dir: PathBuf, options: Options) -> Server {
        let mut cmd = command(&data_dir, &options);
        cmd.stderr(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("starting plinth");
        let cage = options.memory_limit.and_then(|limit| {
            let cage = MemoryCage::create(limit);
            match &cage {
                Some(cage) => {
                    if let Err(e) = cage.enter(child.id()) {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("entering the memory cgroup: {e}");
                    }
                }
                None => eprintln!(
                    "no memory cgroup can be made here: the test bounds peak resident memory only"
                ),
            }
            cage
        });
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let printed = Arc::new(Mutex::new(Vec::new()));
        {
            let printed = printed.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    printed.lock().unwrap().push(line);
                }
            });
        }
        let (addr_tx, addr_rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[plinth] {line}");
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr: String = rest
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != '"')
                            .collect();
                        let _ = addr_tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("plinth exited during start-up with {status}");
            }
            match addr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => break addr,
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("plinth did not start listening within {START_TIMEOUT:?}");
                }
            }
        };
        let server = Server {
            child,
            base: format!("http://{addr}"),
            data_dir,
            logs,
            printed,
            // No pooled connections: a server may close a connection after answering early
            // (e.g. 401 before reading an upload), and a reused one would then fail the next
            // request at random.
            client: Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            owns_dir: false,
            cage,
        };
        server.wait_ready(deadline);
        server
    }

    fn wait_ready(&self, deadline: Instant) {
        let addr: std::net::SocketAddr = self.base.trim_start_matches("http://").parse().unwrap();
        while !readyz_ok(addr) {
            assert!(Instant::now() < deadline, "plinth never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops this server (SIGKILL) and starts a new one on the same data directory.
    pub(crate) fn restart(mut self) -> Server {
        let owns_dir = std::mem::take(&mut self.owns_dir);
        let dir = self.data_dir.clone();
        drop(self);
        let mut server = Self::start_with(dir, Options::default());
        server.owns_dir = owns_dir;
        server
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "plinth ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stderr line so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (bounded) until some log line contains every one of `needles`.
    pub(crate) fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .logs()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} in:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the server prints a line on standard output containing `needle`.
    pub(crate) fn wait_for_printed(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .printed
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "nothing printed with {needle:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server process, in bytes (from /proc).
    pub(crate) fn rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmRSS:")
    }

    /// The most memory the server ever held, in bytes: its memory cgroup's peak where it runs
    /// in one, else the process's peak resident memory (from /proc).
    pub(crate) fn peak_memory_bytes(&self) -> u64 {
        self.cage
            .as_ref()
            .and_then(MemoryCage::peak_bytes)
            .unwrap_or_else(|| self.proc_status_bytes("VmHWM:"))
    }

    /// Whether the server process is still running (not killed, for one, by its cgroup).
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn proc_status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        Reply::read(req.send().await.expect("request failed")).await
    }

    /// Sends a JSON body with `method`, optionally with a bearer token.
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Value,
        token: Option<&str>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::read(req.send().await.expect("request failed")).await
    }

    /// `POST` a JSON body, optionally with a bearer token.
    pub(crate) async fn post_json(&self, path: &str, body: Value, token: Option<&str>) -> Reply {
        self.send_json(Method::POST, path, body, token).await
    }

    /// `GET` with a bearer token.
    pub(crate) async fn get_as(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, None).await
    }

    pub(crate) async fn admin(&self, method: Method, path: &str) -> Reply {
        self.request(method, path, Some(TOKEN), None).await
    }

    /// `PUT /admin/plugins/{name}` with parts `manifest` and `component`.
    pub(crate) async fn deploy(&self, name: &str, manifest: &str, component: &[u8]) -> Reply {
        self.deploy_with_token(name, manifest, component, Some(TOKEN))
            .await
    }

    pub(crate) async fn deploy_with_token(
        &self,
        name: &str,
        manifest: &str,
        component: &[u8],
        token: Option<&str>,
    ) -> Reply {
        let form = Form::new()
            .part("manifest", Part::text(manifest.to_string()))
            .part(
                "component",
                Part::bytes(component.to_vec()).file_name("plugin.wasm"),
            );
        let mut req = self
            .client
            .put(format!("{}/admin/plugins/{name}", self.base))
            .multipart(form);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::read(req.send().await.expect("deploy request failed")).await
    }

    /// Deploys a guest built from the repository with its own `plinth.toml`, asserting success.
    pub(crate) async fn deploy_guest(&self, guest: Guest) -> Value {
        let reply = self
            .deploy(guest.name(), &guest.manifest(), &guest.component())
            .await;
        assert!(
            reply.status.is_success(),
            "deploying {} failed: {} {}",
            guest.name(),
            reply.status,
            reply.text()
        );
        reply.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.cage.take());
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// The guest components the tests use, built by `cargo xtask build-guests`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Guest {
    Hello,
    PlainHttp,
    Trap,
    WhoAmI,
    KvPlain,
    ConfigReader,
    Counter,
    Todo,
    Shortener,
    Misbehave,
    Outbound,
    Webhooks,
    Relay,
    Hostile,
}

pub(crate) fn repo_root() -> PathBuf {
    // The binary's crate is host/cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

pub(crate) fn guest_dir() -> PathBuf {
    std::env::var_os("PLINTH_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/guests"))
}

impl Guest {
    /// The plugin name in its manifest.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Guest::Hello => "hello",
            Guest::PlainHttp => "plain",
            Guest::Trap => "trap",
            Guest::WhoAmI => "whoami",
            Guest::KvPlain => "kv-plain",
            Guest::ConfigReader => "config-reader",
            Guest::Counter => "counter",
            Guest::Todo => "todo",
            Guest::Shortener => "shortener",
            Guest::Misbehave => "misbehave",
            Guest::Outbound => "outbound",
            Guest::Webhooks => "webhooks",
            Guest::Relay => "relay",
            Guest::Hostile => "hostile",
        }
    }

    pub(crate) fn source_dir(self) -> PathBuf {
        let root = repo_root();
        match self {
            Guest::Hello => root.join("examples/hello"),
            Guest::PlainHttp => root.join("tests/programs/plain-http"),
            Guest::Trap => root.join("tests/programs/trap"),
            Guest::WhoAmI => root.join("examples/whoami"),
            Guest::KvPlain => root.join("tests/programs/kv-plain"),
            Guest::ConfigReader => root.join("tests/programs/config-reader"),
            Guest::Counter => root.join("examples/counter"),
            Guest::Todo => root.join("examples/todo"),
            Guest::Shortener => root.join("examples/shortener"),
            Guest::Misbehave => root.join("tests/programs/misbehave"),
            Guest::Outbound => root.join("tests/programs/outbound"),
            Guest::Webhooks => root.join("plugins/webhooks"),
            Guest::Relay => root.join("plugins/relay"),
            Guest::Hostile => root.join("tests/programs/hostile"),
        }
    }

    fn file(self) -> &'static str {
        match self {
            Guest::Hello => "hello.wasm",
            Guest::PlainHttp => "plain_http.wasm",
            Guest::Trap => "trap.wasm",
            Guest::WhoAmI => "whoami.wasm",
            Guest::KvPlain => "kv_plain.wasm",
            Guest::ConfigReader => "config_reader.wasm",
            Guest::Counter => "counter.wasm",
            Guest::Todo => "todo.wasm",
            Guest::Shortener => "shortener.wasm",
            Guest::Misbehave => "misbehave.wasm",
            Guest::Outbound => "outbound.wasm",
            Guest::Webhooks => "webhooks.wasm",
            Guest::Relay => "relay.wasm",
            Guest::Hostile => "hostile.wasm",
        }
    }

    pub(crate) fn manifest(self) -> String {
        std::fs::read_to_string(self.source_dir().join("plinth.toml")).unwrap()
    }

    /// Where the built component is.
    pub(crate) fn wasm_path(self) -> PathBuf {
        guest_dir().join(self.file())
    }

    pub(crate) fn component(self) -> Vec<u8> {
        let path = guest_dir().join(self.file());
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): run `cargo xtask build-guests` (or `cargo xtask test`)",
                path.display()
            )
        })
    }
}
