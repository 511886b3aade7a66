//! The `plinth` CLI against a real server: deploys from a .wasm and from a crate, listings as
//! tables and JSON, logs (and `-f`), rollback, config with masked secrets, login with a stored
//! session, and one-line errors with a non-zero exit.

use crate::harness::{Guest, Options, Server, TOKEN, TempDir, guest_dir};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A CLI invocation against `server`, with its own credentials file.
struct Cli<'a> {
    server: &'a Server,
    token: Option<String>,
    credentials: PathBuf,
}

impl<'a> Cli<'a> {
    fn new(server: &'a Server, home: &Path) -> Self {
        Self {
            server,
            token: Some(TOKEN.to_string()),
            credentials: home.join("credentials.json"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plinth"));
        cmd.args(args)
            .env("PLINTH_SERVER", &self.server.base)
            .env("PLINTH_CREDENTIALS", &self.credentials)
            // A crate deploy reuses the guests' build (`cargo xtask build-guests`).
            .env(
                "CARGO_TARGET_DIR",
                guest_dir().parent().unwrap().join("wasm"),
            )
            .env_remove("PLINTH_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = &self.token {
            cmd.env("PLINTH_TOKEN", token);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running plinth")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "plinth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

/// Asserts a failed run: non-zero exit, one line on stderr starting `error:`; returns it.
fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn deploys_from_a_wasm_and_from_a_crate_and_lists_them() {
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    let manifest = Guest::Hello.source_dir().join("plinth.toml");
    let wasm = Guest::Hello.wasm_path();
    let out = cli.ok(&[
        "deploy",
        wasm.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(out.contains("deployed hello version 1"), "{out}");
    assert!(out.contains("/hello/{name}"), "{out}");
    assert_eq!(
        server.get("/hello/cli").await.json()["message"],
        "hello, cli"
    );

    // A crate folder: built for wasm32-wasip2, then uploaded with its plinth.toml.
    let counter = crate::harness::repo_root().join("examples/counter");
    let out = cli.ok(&["deploy", counter.to_str().unwrap()]);
    assert!(out.contains("deployed counter version 1"), "{out}");
    let counted = server
        .request(reqwest::Method::POST, "/counters/cli", None, None)
        .await;
    assert_eq!(counted.json()["value"], 1);

    let table = cli.ok(&["plugins", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("hello")), "{table}");
    let listed = cli.json(&["plugins", "list"]);
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["counter", "hello"]);
    let shown = cli.json(&["plugins", "show", "hello"]);
    assert_eq!(shown["version"], 1);

    // Deleting through the CLI.
    cli.ok(&["plugins", "delete", "counter"]);
    let listed = cli.json(&["plugins", "list"]);
    assert_eq!(listed["plugins"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn versions_roll_back_and_config_secrets_stay_masked() {
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    let wasm = Guest::Hello.wasm_path();
    for revision in 1..=2 {
        let manifest = home.path().join(format!("hello-{revision}.toml"));
        std::fs::write(
            &manifest,
            format!("# revision {revision}\n{}", Guest::Hello.manifest()),
        )
        .unwrap();
        cli.ok(&[
            "deploy",
            wasm.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
    }
    let versions = cli.ok(&["plugins", "versions", "hello"]);
    assert!(versions.starts_with("VERSION"), "{versions}");
    let out = cli.ok(&["rollback", "hello"]);
    assert_eq!(out.trim(), "hello: version 1 is active");
    let out = cli.ok(&["rollback", "hello", "--to", "2"]);
    assert_eq!(out.trim(), "hello: version 2 is active");
    let err = one_line_error(&cli.run(&["rollback", "hello", "--to", "7"]));
    assert!(err.contains("version_not_found"), "{err}");

    cli.ok(&["config", "set", "hello", "api_base", "https://example.test"]);
    cli.ok(&[
        "config",
        "set",
        "hello",
        "api_key",
        "s3cret-value",
        "--secret",
    ]);
    let shown = cli.ok(&["config", "get", "hello"]);
    assert!(shown.contains("https://example.test"), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert_eq!(
        cli.ok(&["config", "get", "hello", "api_key"]).trim(),
        "********"
    );
    let json = cli.json(&["config", "get", "hello"]);
    assert!(!json.to_string().contains("s3cret-value"));
    cli.ok(&["config", "unset", "hello", "api_base"]);
    let json = cli.json(&["config", "get", "hello"]);
    assert_eq!(json["config"].as_array().unwrap().len(), 1);

    let audit = cli.json(&["audit", "--target", "hello"]);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[0], "config.unset");
    assert!(actions.contains(&"plugin.rollback"));
}

#[tokio::test]
async fn logs_print_and_follow_new_lines() {
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    let wasm = Guest::PlainHttp.wasm_path();
    let manifest = Guest::PlainHttp.source_dir().join("plinth.toml");
    cli.ok(&[
        "deploy",
        wasm.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    server.get("/plain/before").await;
    let out = cli.ok(&["logs", "plain"]);
    assert!(out.contains("plain-http served GET /plain/before"), "{out}");
    assert!(out.contains("GET /plain/before → 200"), "{out}");

    let mut follower = cli
        .command(&["logs", "plain", "-f", "--limit", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The follower shows the newest line first; then a request made after it started.
    received.recv_timeout(Duration::from_secs(10)).unwrap();
    server.get("/plain/after").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("plain-http served GET /plain/after"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the follower printed no new line: {seen:?}"),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
}

#[tokio::test]
async fn login_stores_a_private_session_that_later_commands_use() {
    let dir = TempDir::new();
    let options = Options {
        env: vec![
            ("PLINTH_ADMIN_EMAIL".into(), "ops@example.com".into()),
            (
                "PLINTH_ADMIN_PASSWORD".into(),
                "correct horse battery staple".into(),
            ),
        ],
        ..Default::default()
    };
    let server = Server::start_with(dir.path(), options);
    let home = TempDir::new();
    let mut cli = Cli::new(&server, &home.path());
    cli.token = None;
    // Without a token or a session: a one-line error.
    let err = one_line_error(&cli.run(&["plugins", "list"]));
    assert!(err.contains("plinth login"), "{err}");

    let mut login = cli
        .command(&["login", "--email", "ops@example.com", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&cli.credentials).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let wasm = Guest::Hello.wasm_path();
    let manifest = Guest::Hello.source_dir().join("plinth.toml");
    cli.ok(&[
        "deploy",
        wasm.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    let audit = cli.json(&["audit", "--action", "plugin.deploy"]);
    let actor = audit["entries"][0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("user:"), "{actor}");
    assert!(actor.contains("ops@example.com"), "{actor}");

    cli.ok(&["logout"]);
    one_line_error(&cli.run(&["plugins", "list"]));
}

#[tokio::test]
async fn a_wrong_server_or_credential_is_one_line_and_a_non_zero_exit() {
    let server = Server::start();
    let home = TempDir::new();
    let mut cli = Cli::new(&server, &home.path());
    cli.token = Some("not-a-valid-token-at-all".into());
    let err = one_line_error(&cli.run(&["plugins", "list"]));
    assert!(err.contains("401"), "{err}");

    cli.token = Some(TOKEN.into());
    let out = cli
        .command(&["plugins", "list", "--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("cannot reach http://127.0.0.1:1"), "{err}");

    let err = one_line_error(&cli.run(&["deploy", "/nonexistent/plugin"]));
    assert!(err.contains("does not exist"), "{err}");
    let err = one_line_error(&cli.run(&["plugins", "show", "nope"]));
    assert!(err.contains("plugin_not_found"), "{err}");
}

#[tokio::test]
async fn every_new_plugin_template_builds_and_deploys_as_it_is() {
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    for template in ["http", "kv", "webhook"] {
        let name = format!("new-{template}");
        let dir = home.path().join(&name);
        let out = cli.ok(&[
            "new",
            &name,
            "--template",
            template,
            "--dir",
            dir.to_str().unwrap(),
        ]);
        assert!(out.contains("created"), "{out}");
        assert!(dir.join("README.md").is_file());
        let out = cli.ok(&["deploy", dir.to_str().unwrap()]);
        assert!(out.contains(&format!("deployed {name} version 1")), "{out}");
    }
    let hello = server.get("/new-http/hello/you").await;
    assert_eq!(hello.json()["message"], "hello, you");
    let saved = server
        .send_json(
            reqwest::Method::PUT,
            "/new-kv/notes/first",
            serde_json::json!({ "text": "hi" }),
            None,
        )
        .await;
    assert_eq!(saved.status, reqwest::StatusCode::OK, "{}", saved.text());
    assert_eq!(
        server.get("/new-kv/notes").await.json()["notes"][0],
        "first"
    );
    // The webhook template waits for its secret, as its manifest says.
    let waiting = server
        .request(
            reqwest::Method::POST,
            "/new-webhook/webhook",
            None,
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(waiting.code(), "config_missing");
    let bad = one_line_error(&cli.run(&["new", "Bad Name"]));
    assert!(bad.contains("name"), "{bad}");
}

/// A folder with one subfolder per plugin: its plinth.toml and its .wasm.
fn plugin_folder(root: &Path, guests: &[Guest]) {
    for guest in guests {
        let dir = root.join(guest.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plinth.toml"), guest.manifest()).unwrap();
        std::fs::copy(
            guest.wasm_path(),
            dir.join(format!("{}.wasm", guest.name())),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn apply_plans_converges_and_prunes_only_when_asked() {
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    let folder = home.path().join("plugins");
    plugin_folder(&folder, &[Guest::Hello, Guest::PlainHttp]);
    let dir = folder.to_str().unwrap();

    let plan = cli.ok(&["apply", dir, "--dry-run"]);
    assert!(plan.contains("+ hello (new)"), "{plan}");
    assert!(plan.contains("+ plain (new)"), "{plan}");
    let listed = cli.json(&["plugins", "list"]);
    assert!(
        listed["plugins"].as_array().unwrap().is_empty(),
        "a dry run changed the server"
    );

    let applied = cli.ok(&["apply", dir]);
    assert!(applied.contains("deployed hello version 1"), "{applied}");
    assert_eq!(server.get("/plain/x").await.text(), "plain GET /plain/x");
    // Twice is a no-op.
    let again = cli.json(&["apply", dir]);
    assert_eq!(again["applied"], false);
    assert!(
        again["plan"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "unchanged"),
        "{again}"
    );

    // A changed manifest replaces; a plugin not in the folder stays unless --prune.
    let manifest = folder.join("hello/plinth.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("# changed\n{text}")).unwrap();
    server.deploy_guest(Guest::Trap).await;
    let replaced = cli.ok(&["apply", dir]);
    assert!(
        replaced.contains("~ hello (replaces version 1)"),
        "{replaced}"
    );
    assert!(!replaced.contains("- trap"), "{replaced}");
    let pruned = cli.ok(&["apply", dir, "--prune"]);
    assert!(pruned.contains("- trap"), "{pruned}");
    let names: Vec<String> = cli.json(&["plugins", "list"])["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["hello", "plain"]);
}

#[tokio::test]
async fn serve_apply_deploys_the_folder_before_ready_and_only_once() {
    let data = TempDir::new();
    let folder = TempDir::new();
    plugin_folder(&folder.path(), &[Guest::Hello]);
    let options = Options {
        args: vec!["--apply".into(), folder.path().to_str().unwrap().into()],
        ..Default::default()
    };
    let server = Server::start_with(data.path(), options.clone());
    // Ready means applied: the route answers at once.
    assert_eq!(
        server.get("/hello/applied").await.status,
        reqwest::StatusCode::OK
    );
    drop(server);
    let server = Server::start_with(data.path(), options);
    let versions = server
        .admin(reqwest::Method::GET, "/admin/plugins/hello/versions")
        .await
        .json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    let audit = server
        .admin(reqwest::Method::GET, "/admin/audit")
        .await
        .json();
    assert_eq!(audit["entries"][0]["actor"], "plinth serve --apply");
}

#[tokio::test]
async fn dev_serves_the_crate_and_redeploys_when_a_source_changes() {
    // A server to borrow the CLI helper's environment from; `plinth dev` runs its own.
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    let dir = home.path().join("dev-app");
    cli.ok(&["new", "dev-app", "--dir", dir.to_str().unwrap()]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut dev = cli
        .command(&["dev", "--dir", dir.to_str().unwrap(), "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("http://{listen}/dev-app/hello/you");
    let wait_for = |expected: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                if let Ok(reply) = client.get(&url).send().await
                    && let Ok(body) = reply.json::<Value>().await
                    && body["message"] == expected
                {
                    return;
                }
                assert!(Instant::now() < deadline, "never served {expected:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_for("hello, you").await;
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("\"hello, {who}\"", "\"hi, {who}\"")).unwrap();
    wait_for("hi, you").await;

    // SIGTERM stops dev and its server.
    Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "plinth dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_ok() {
        assert!(Instant::now() < deadline, "the dev server kept running");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn account_commands_read_the_servers_answers_as_its_types() {
    let server = Server::start();
    let home = TempDir::new();
    let cli = Cli::new(&server, &home.path());
    let registered = server
        .post_json(
            "/auth/register",
            serde_json::json!({ "email": "ops@example.com", "password": "a long passphrase" }),
            None,
        )
        .await;
    assert!(registered.status.is_success(), "{:?}", registered.body);

    let listed = cli.ok(&["users", "list"]);
    let row = listed
        .lines()
        .find(|l| l.contains("ops@example.com"))
        .unwrap_or_else(|| panic!("{listed}"));
    let id = row.split_whitespace().next().unwrap().to_string();
    let disabled = cli.ok(&["users", "disable", &id]);
    assert!(disabled.starts_with("ID"), "{disabled}");
    assert!(
        disabled.lines().nth(1).unwrap().trim_end().ends_with("yes"),
        "{disabled}"
    );
    let roles = cli.ok(&["users", "roles", &id, "operator", "user"]);
    let row = roles.lines().nth(1).unwrap();
    assert!(row.contains("operator") && row.contains("user"), "{roles}");

    let created = cli.ok(&["api-keys", "create", "ci deploys", "--role", "operator"]);
    let key = created.lines().next().unwrap();
    assert!(key.starts_with("plinth_"), "{created}");
    assert!(
        created.contains("role operator; the key is shown only now"),
        "{created}"
    );
    let keys = cli.ok(&["api-keys", "list"]);
    assert!(keys.starts_with("ID"), "{keys}");
    assert!(keys.contains("ci deploys") && !keys.contains(key), "{keys}");

    let signing = cli.ok(&["keys", "list"]);
    assert!(signing.starts_with("signing key: "), "{signing}");

    let audit = cli.ok(&["audit"]);
    assert!(audit.starts_with("AT"), "{audit}");
    for action in ["user.disable", "user.roles", "api_key.create"] {
        assert!(audit.contains(action), "{action} missing from:\n{audit}");
    }
    let only = cli.ok(&["audit", "--action", "api_key.create"]);
    assert_eq!(only.lines().count(), 2, "{only}");
}
