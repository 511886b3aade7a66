//! `cargo xtask bench`: plinth serving `examples/hello` (a fresh instance per request, and on a
//! second server with instance reuse allowed) against a native axum server with the same route,
//! both release builds, over 127.0.0.1, measured with `wrk` in alternating runs; plinth's
//! `/healthz` (the HTTP stack with no plugin, to show what the wasm path adds); a plain
//! `wasi:http` route public and behind `auth = "user"` (a JWT verified per request), the same
//! component on `xtask/bare-embedder` (wasmtime-wasi-http and nothing else: the engine's own
//! cost, the `× bare` column) and under `wasmtime serve` when a `wasmtime` binary is on PATH;
//! the bare embedder and plinth's plain row again at 256 connections (tail latency); then plinth
//! routes that do one key-value read and one durable key-value write
//! (`tests/programs/kv-plain`, acknowledged only once on disk) at 64 connections, beside hello
//! at 64; the guarded route, hello and the kv rows again on hosts whose store is PostgreSQL,
//! with 1, 2 and 3 hosts on one database (one wrk per host at once, the connections split
//! between them, throughput summed, latency the slowest host's). Prints req/s, p50/p99 latency, server CPU per request, and the ratio to native; then
//! the cold paths: upload to serving, restart to ready with 100 plugins, and resident memory
//! with 1,000 (100 with `--quick`); last, what each stage of a request costs in process
//! (`host/cli/benches/request_path.rs`).
//!
//! Options: `--duration SECS` (default 10), `--connections N` for native and hello (default
//! 32), `--reps N` (default 3), `--quick` (2-second runs, one rep: a smoke test, figures only),
//! `--debug-build` (measure the dev-profile binaries instead of building release ones: CI's
//! smoke run). On two or more cores the server is pinned to core 0 and wrk to core 1, and idle
//! cores poll while it runs (see `IdlePoll`).

use crate::{cargo, guests, http, run, target_dir};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Options {
    duration: u64,
    connections: u32,
    reps: usize,
    /// `--quick`: the 2-second smoke.
    quick: bool,
    /// Plugins deployed for the resident-memory figure.
    many: usize,
    /// Measure the dev-profile binaries `cargo xtask test` already built (CI's smoke run, so
    /// the workspace is not built twice); figures are then not comparable with release ones.
    debug_build: bool,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        duration: 10,
        connections: 32,
        reps: 3,
        quick: false,
        many: 1000,
        debug_build: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            options.duration = 2;
            options.reps = 1;
            options.quick = true;
            options.many = 100;
            continue;
        }
        if flag == "--debug-build" {
            options.debug_build = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration" => options.duration = value.trim_end_matches('s').parse()?,
            "--connections" => options.connections = value.parse()?,
            "--reps" => options.reps = value.parse()?,
            other => bail!("unknown bench option {other}"),
        }
    }
    Ok(options)
}

/// Installs wrk from Debian's packages when it is missing.
fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("wrk is missing; installing it with apt-get");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A command pinned to `core` with taskset when the machine has a core to spare for wrk.
fn pinned(program: &Path, core: usize) -> Command {
    if cores() >= 2 {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(core.to_string()).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Starts a server and returns it with the address it printed.
fn spawn_server(mut cmd: Command) -> Result<(Child, String)> {
    let mut child = cmd
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a server")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let Some(line) = lines.next() else {
            bail!("the server exited before listening");
        };
        let line = line?;
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, addr))
}

/// Server CPU time (user + system) in seconds, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
    errors: bool,
}

fn parse_latency_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// Connections for the key-value rows (and the hello row beside them).
const KV_CONNECTIONS: u32 = 64;

/// Connections for the tail-latency rows.
const MANY_CONNECTIONS: u32 = 256;

/// The engine yardstick's row: `xtask/bare-embedder` on the plain component.
const BARE: &str = "bare wasmtime-wasi-http embedder (plain wasi:http, fresh instance)";

/// One measured row: which servers, what URL on each, how many connections in all, and an
/// optional wrk script.
struct Row {
    name: String,
    /// The server process and URL of each host the row loads: one wrk per host, at the
    /// same time, the connections split between them, their figures summed.
    targets: Vec<(u32, String)>,
    connections: u32,
    script: Option<std::path::PathBuf>,
    /// A header for every request (e.g. `Authorization: Bearer ...`).
    header: Option<String>,
}

fn wrk(row: &Row, seconds: u64) -> Result<Sample> {
    let pids: std::collections::BTreeSet<u32> = row.targets.iter().map(|(pid, _)| *pid).collect();
    let cpu_of = |pids: &std::collections::BTreeSet<u32>| -> Result<f64> {
        pids.iter().map(|pid| cpu_seconds(*pid)).sum()
    };
    let cpu_before = cpu_of(&pids)?;
    let hosts = u32::try_from(row.targets.len()).unwrap_or(1).max(1);
    let outputs: Vec<std::io::Result<std::process::Output>> = std::thread::scope(|scope| {
        let runs: Vec<_> = row
            .targets
            .iter()
            .enumerate()
            .map(|(i, (_, url))| {
                // The connections split between the hosts, the first taking any remainder.
                let share =
                    row.connections / hosts + if i == 0 { row.connections % hosts } else { 0 };
                let mut cmd = pinned(Path::new("wrk"), 1);
                cmd.args(["-t1", "--latency"])
                    .arg(format!("-c{share}"))
                    .arg(format!("-d{seconds}s"));
                if let Some(script) = &row.script {
                    cmd.arg("-s").arg(script);
                }
                if let Some(header) = &row.header {
                    cmd.arg("-H").arg(header);
                }
                cmd.arg(url);
                scope.spawn(move || cmd.output())
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("a wrk thread panicked"))
            .collect()
    });
    let cpu = cpu_of(&pids)? - cpu_before;
    let mut sample = Sample {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        cpu_us_per_req: 0.0,
        errors: false,
    };
    let mut requests = 0.0;
    for out in outputs {
        let out = out.context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        sample.errors |= text.contains("Non-2xx") || text.contains("Socket errors");
        // Throughput adds up over hosts; latency is the slowest host's.
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["Requests/sec:", n] => sample.rps += n.parse::<f64>()?,
                ["50%", v] => sample.p50_ms = sample.p50_ms.max(parse_latency_ms(v).unwrap_or(0.0)),
                ["99%", v] => sample.p99_ms = sample.p99_ms.max(parse_latency_ms(v).unwrap_or(0.0)),
                [n, "requests", "in", ..] => requests += n.parse::<f64>()?,
                _ => {}
            }
        }
    }
    if requests > 0.0 {
        sample.cpu_us_per_req = cpu * 1e6 / requests;
    }
    Ok(sample)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Kills the child on drop, so a failed bench leaves no server behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn measure(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    ensure_wrk()?;
    let guest_dir = guests::build_guests(root)?;
    if options.debug_build {
        // `cargo test --workspace` just built these in the dev profile.
        run(cargo().current_dir(root).args([
            "build",
            "-p",
            "plinth",
            "-p",
            "xtask",
            "-p",
            "bare-embedder",
            "--bin",
            "plinth",
            "--bin",
            "native-hello",
            "--bin",
            "bare-embedder",
        ]))?;
    } else {
        // The stage bench and, with it, the plinth binary in one build (a benchmark target
        // builds its package's binaries), so the workspace is not built twice with different
        // dev-dependency features.
        run(cargo().current_dir(root).args([
            "bench",
            "--no-run",
            "-p",
            "plinth",
            "--bench",
            "request_path",
        ]))?;
        run(cargo().current_dir(root).args([
            "build",
            "--release",
            "-p",
            "xtask",
            "-p",
            "bare-embedder",
            "--bin",
            "native-hello",
            "--bin",
            "bare-embedder",
        ]))?;
    }
    let release = target_dir(root).join(if options.debug_build {
        "debug"
    } else {
        "release"
    });
    let _idle_poll = IdlePoll::hold();
    let data_dir = std::env::temp_dir().join(format!("plinth-bench-{}", std::process::id()));
    let token = http::random_token();

    let (native, native_addr) = spawn_server(pinned(&release.join("native-hello"), 0))?;
    let native = Guard(native);
    // The engine alone on the plain component, for the `× bare` column.
    let mut bare_cmd = pinned(&release.join("bare-embedder"), 0);
    bare_cmd.arg(guest_dir.join("plain_http.wasm"));
    let (bare, bare_addr) = spawn_server(bare_cmd)?;
    let bare = Guard(bare);
    let password = http::random_token();
    // `plinth serve` on `dir`: pinned for the throughput rows; the cold paths use every core,
    // as a real server does.
    let serve = |pin: bool, dir: &Path| {
        let mut cmd = if pin {
            pinned(&release.join("plinth"), 0)
        } else {
            Command::new(release.join("plinth"))
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("PLINTH_ADMIN_TOKEN", &token)
            .env("RUST_LOG", "warn,plinth_host::server=info");
        cmd
    };
    let plinth_cmd = |pin: bool| {
        let mut cmd = serve(pin, &data_dir);
        cmd.env("PLINTH_ADMIN_EMAIL", "bench@example.com")
            .env("PLINTH_ADMIN_PASSWORD", &password);
        cmd
    };
    let (plinth, plinth_addr) = spawn_server(plinth_cmd(true))?;
    let mut plinth = Guard(plinth);
    let plinth_base = format!("http://{plinth_addr}");
    http::wait_ready(&plinth_base, &mut plinth.0)?;
    let hello = guests::examples(root)?
        .into_iter()
        .find(|e| e.crate_name == "hello")
        .context("examples/hello is missing")?;
    http::deploy(
        &plinth_base,
        &token,
        &hello.manifest,
        &guest_dir.join("hello.wasm"),
    )?;
    let (status, body) = http::get(&plinth_base, "/hello/bench")?;
    if status != 200 {
        bail!("plinth's hello route answered {status}: {body}");
    }
    // A second server whose operator allows instance reuse on public routes, with the same
    // hello asking for it: the reuse row, measured apart so the routes stay the same.
    let reuse_dir = data_dir.with_extension("reuse");
    let mut reuse_cmd = serve(true, &reuse_dir);
    reuse_cmd.args(["--instance-reuse", "public"]);
    let (reuse, reuse_addr) = spawn_server(reuse_cmd)?;
    let mut reuse = Guard(reuse);
    let reuse_base = format!("http://{reuse_addr}");
    http::wait_ready(&reuse_base, &mut reuse.0)?;
    let reuse_manifest = format!(
        "{}\n[limits]\ninstance_reuse = true\n",
        std::fs::read_to_string(&hello.manifest)?
    );
    http::deploy_bytes(
        &reuse_base,
        &token,
        &reuse_manifest,
        &std::fs::read(guest_dir.join("hello.wasm"))?,
    )?;
    http::deploy(
        &plinth_base,
        &token,
        &root.join("tests/programs/kv-plain/plinth.toml"),
        &guest_dir.join("kv_plain.wasm"),
    )?;
    // The value the kv-get row reads, written by the same PUT the kv-set row repeats.
    let put_script = data_dir.with_extension("put.lua");
    std::fs::write(
        &put_script,
        "wrk.method = \"PUT\"\nwrk.body = \"a 32-byte value for the kv bench!\"\n",
    )?;
    let kv_path = "/kv-plain/bench/key";
    let status = http::put(&plinth_base, kv_path, b"a 32-byte value for the kv bench!")?;
    if status != 200 {
        bail!("storing the kv bench value answered {status}");
    }
    let kv_url = format!("{plinth_base}{kv_path}");
    // The same plain wasi:http component public and behind `auth = "user"`.
    let plain = std::fs::read(guest_dir.join("plain_http.wasm"))?;
    http::deploy_bytes(
        &plinth_base,
        &token,
        "name = \"plain\"\n[[routes]]\npath = \"/plain/{*rest}\"\n",
        &plain,
    )?;
    http::deploy_bytes(
        &plinth_base,
        &token,
        "name = \"plain-user\"\n[[routes]]\npath = \"/plain-user/{*rest}\"\nauth = \"user\"\n",
        &plain,
    )?;
    let access = http::login(&plinth_base, "bench@example.com", &password)?;
    // The same plugins on a host whose store is PostgreSQL (a throwaway server, or the one
    // PLINTH_TEST_DATABASE_URL names), beside the sled figures: what a database round trip
    // costs per request.
    let postgres = plinth_test_postgres::TestPostgres::start()?;
    let pg_url = postgres.create_database(&format!("plinth_bench_{}", std::process::id()))?;
    let pg_dir = data_dir.with_extension("pg");
    let mut pg_cmd = serve(true, &pg_dir);
    pg_cmd
        .args(["--store", &pg_url])
        .env("PLINTH_ADMIN_EMAIL", "bench@example.com")
        .env("PLINTH_ADMIN_PASSWORD", &password);
    let (pg_host, pg_addr) = spawn_server(pg_cmd)?;
    let mut pg_host = Guard(pg_host);
    let pg_base = format!("http://{pg_addr}");
    http::wait_ready(&pg_base, &mut pg_host.0)?;
    http::deploy(
        &pg_base,
        &token,
        &hello.manifest,
        &guest_dir.join("hello.wasm"),
    )?;
    http::deploy(
        &pg_base,
        &token,
        &root.join("tests/programs/kv-plain/plinth.toml"),
        &guest_dir.join("kv_plain.wasm"),
    )?;
    http::deploy_bytes(
        &pg_base,
        &token,
        "name = \"plain-user\"\n[[routes]]\npath = \"/plain-user/{*rest}\"\nauth = \"user\"\n",
        &plain,
    )?;
    let status = http::put(&pg_base, kv_path, b"a 32-byte value for the kv bench!")?;
    if status != 200 {
        bail!("storing the kv bench value on PostgreSQL answered {status}");
    }
    let pg_access = http::login(&pg_base, "bench@example.com", &password)?;
    // Two more hosts on the same database (they load the plugins it holds), for the rows
    // with 2 and 3 hosts: one wrk per host, the figures summed.
    let mut pg_hosts = vec![(pg_host.0.id(), pg_base.clone())];
    let mut more_pg_hosts = Vec::new();
    for n in 2..=3 {
        let dir = data_dir.with_extension(format!("pg{n}"));
        let mut cmd = serve(true, &dir);
        cmd.args(["--store", &pg_url]);
        let (host, addr) = spawn_server(cmd)?;
        let mut host = Guard(host);
        let base = format!("http://{addr}");
        http::wait_ready(&base, &mut host.0)?;
        let (status, body) = http::get(&base, kv_path)?;
        if status != 200 {
            bail!("PostgreSQL host {n} answered {status} to the kv read: {body}");
        }
        pg_hosts.push((host.0.id(), base));
        more_pg_hosts.push((host, dir));
    }
    let wasmtime = wasmtime_serve(&guest_dir.join("plain_http.wasm"))?;

    let row = |name: &str, pid, url: String, connections, script: Option<&Path>| Row {
        name: name.to_string(),
        targets: vec![(pid, url)],
        connections,
        script: script.map(Path::to_path_buf),
        header: None,
    };
    let mut servers = vec![
        row(
            "native axum",
            native.0.id(),
            format!("http://{native_addr}/hello/bench"),
            options.connections,
            None,
        ),
        // The front door alone (hyper, axum, request id, span; no plugin): what the HTTP
        // stack costs before any wasm runs.
        row(
            "plinth /healthz (HTTP stack, no plugin)",
            plinth.0.id(),
            format!("{plinth_base}/healthz"),
            options.connections,
            None,
        ),
        row(
            "plinth hello (fresh instance)",
            plinth.0.id(),
            format!("{plinth_base}/hello/bench"),
            options.connections,
            None,
        ),
        row(
            "plinth hello (instance reuse)",
            reuse.0.id(),
            format!("{reuse_base}/hello/bench"),
            options.connections,
            None,
        ),
        row(
            BARE,
            bare.0.id(),
            format!("http://{bare_addr}/plain/bench"),
            options.connections,
            None,
        ),
        row(
            "plinth plain wasi:http (public)",
            plinth.0.id(),
            format!("{plinth_base}/plain/bench"),
            options.connections,
            None,
        ),
        Row {
            header: Some(format!("Authorization: Bearer {access}")),
            ..row(
                "plinth plain wasi:http (user, JWT checked)",
                plinth.0.id(),
                format!("{plinth_base}/plain-user/bench"),
                options.connections,
                None,
            )
        },
        row(
            "plinth hello (fresh instance)",
            plinth.0.id(),
            format!("{plinth_base}/hello/bench"),
            KV_CONNECTIONS,
            None,
        ),
        row(
            "plinth kv-get (1 read)",
            plinth.0.id(),
            kv_url.clone(),
            KV_CONNECTIONS,
            None,
        ),
        row(
            "plinth kv-set (1 durable write)",
            plinth.0.id(),
            kv_url.clone(),
            KV_CONNECTIONS,
            Some(&put_script),
        ),
        Row {
            header: Some(format!("Authorization: Bearer {pg_access}")),
            ..row(
                "plinth on PostgreSQL: plain wasi:http (user, JWT checked)",
                pg_host.0.id(),
                format!("{pg_base}/plain-user/bench"),
                options.connections,
                None,
            )
        },
        row(
            "plinth on PostgreSQL: hello (fresh instance)",
            pg_host.0.id(),
            format!("{pg_base}/hello/bench"),
            KV_CONNECTIONS,
            None,
        ),
        row(
            "plinth on PostgreSQL: kv-get (1 read)",
            pg_host.0.id(),
            format!("{pg_base}{kv_path}"),
            KV_CONNECTIONS,
            None,
        ),
        row(
            "plinth on PostgreSQL: kv-set (1 durable write)",
            pg_host.0.id(),
            format!("{pg_base}{kv_path}"),
            KV_CONNECTIONS,
            Some(&put_script),
        ),
    ];
    for hosts in 2..=pg_hosts.len() {
        let on = |path: &str| -> Vec<(u32, String)> {
            pg_hosts[..hosts]
                .iter()
                .map(|(pid, base)| (*pid, format!("{base}{path}")))
                .collect()
        };
        let named = |what: &str| format!("plinth on PostgreSQL, {hosts} hosts: {what}");
        servers.extend([
            Row {
                name: named("plain wasi:http (user, JWT checked)"),
                targets: on("/plain-user/bench"),
                connections: options.connections,
                script: None,
                header: Some(format!("Authorization: Bearer {pg_access}")),
            },
            Row {
                name: named("hello (fresh instance)"),
                targets: on("/hello/bench"),
                connections: KV_CONNECTIONS,
                script: None,
                header: None,
            },
            Row {
                name: named("kv-get (1 read)"),
                targets: on(kv_path),
                connections: KV_CONNECTIONS,
                script: None,
                header: None,
            },
            Row {
                name: named("kv-set (1 durable write)"),
                targets: on(kv_path),
                connections: KV_CONNECTIONS,
                script: Some(put_script.clone()),
                header: None,
            },
        ]);
    }
    servers.extend([
        // Tail latency under many connections: the engine alone and Plinth, same component.
        row(
            BARE,
            bare.0.id(),
            format!("http://{bare_addr}/plain/bench"),
            MANY_CONNECTIONS,
            None,
        ),
        row(
            "plinth plain wasi:http (public)",
            plinth.0.id(),
            format!("{plinth_base}/plain/bench"),
            MANY_CONNECTIONS,
            None,
        ),
    ]);
    if let Some((server, addr)) = &wasmtime {
        servers.push(row(
            "wasmtime serve (plain wasi:http, fresh instance)",
            server.0.id(),
            format!("http://{addr}/plain/bench"),
            options.connections,
            None,
        ));
    }
    eprintln!(
        "warming up; then {} alternating runs of {} s each, wrk -t1{}",
        options.reps,
        options.duration,
        if cores() >= 2 {
            ", server on core 0, wrk on core 1"
        } else {
            ""
        }
    );
    for row in &servers {
        wrk(row, 2)?;
    }
    let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
    for rep in 0..options.reps {
        for (i, row) in servers.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(500));
            let sample = wrk(row, options.duration)?;
            eprintln!(
                "  run {}: {} (-c{}): {:.0} req/s, p99 {:.2} ms",
                rep + 1,
                row.name,
                row.connections,
                sample.rps,
                sample.p99_ms
            );
            samples[i].push(sample);
        }
    }
    drop(native);
    drop(bare);
    drop(reuse);
    drop(pg_host);
    for (host, dir) in more_pg_hosts {
        drop(host);
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(postgres);
    let _ = std::fs::remove_dir_all(&reuse_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
    let measured_wasmtime = wasmtime.is_some();
    drop(wasmtime);
    let cold = cold_paths(
        &plinth_base,
        &token,
        &plain,
        options.many,
        plinth,
        plinth_cmd,
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(&put_script);
    let stages = request_stages(root, &guest_dir, &options);

    println!();
    println!(
        "| server | connections | req/s (median) | p50 ms | p99 ms | server CPU µs/req | × native | × bare |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let rps_of = |i: usize| median(samples[i].iter().map(|s| s.rps).collect());
    let ratio = |rps: f64, of: f64| if of > 0.0 { rps / of } else { 0.0 };
    let native_rps = rps_of(0);
    // Each row against the bare embedder at its own connection count.
    let bare_rps = |connections: u32| {
        servers
            .iter()
            .position(|r| r.name == BARE && r.connections == connections)
            .map_or(0.0, rps_of)
    };
    for (i, (row, runs)) in servers.iter().zip(&samples).enumerate() {
        let rps = rps_of(i);
        // Only rows at a connection count the bare embedder was measured at have a ratio.
        let bare = match bare_rps(row.connections) {
            0.0 => "-".to_string(),
            bare => format!("{:.2}", ratio(rps, bare)),
        };
        println!(
            "| {} | {} | {rps:.0} | {:.2} | {:.2} | {:.1} | {:.2} | {bare} |",
            row.name,
            row.connections,
            median(runs.iter().map(|s| s.p50_ms).collect()),
            median(runs.iter().map(|s| s.p99_ms).collect()),
            median(runs.iter().map(|s| s.cpu_us_per_req).collect()),
            ratio(rps, native_rps),
        );
    }
    println!();
    match cold {
        Ok(cold) => {
            println!("| cold path | figure |");
            println!("| --- | ---: |");
            for (what, figure) in cold {
                println!("| {what} | {figure} |");
            }
        }
        Err(e) => println!("cold paths not measured: {e:#}"),
    }
    println!();
    match stages {
        Ok(table) => print!("{table}"),
        Err(e) => println!("request stages not measured: {e:#}"),
    }
    if !measured_wasmtime {
        println!(
            "\n(no `wasmtime` on PATH, so no `wasmtime serve` row; install it with \
             `cargo install wasmtime-cli --locked --version 48.0.8`)"
        );
    }
    if options.debug_build {
        println!("\n(debug build: a smoke run; these figures say nothing about speed)");
    }
    if samples.iter().flatten().any(|s| s.errors) {
        bail!("some wrk runs saw socket errors or non-2xx responses");
    }
    Ok(())
}

/// The in-process table of what each stage of a request costs (`host/cli/benches/request_path.rs`),
/// on one core like the servers: route lookup, auth checks, metrics, access line, and the wasm
/// part with a fresh and with a reused instance.
fn request_stages(root: &Path, guest_dir: &Path, options: &Options) -> Result<String> {
    let mut cmd = if cores() >= 2 {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]).arg(crate::cargo_path());
        cmd
    } else {
        cargo()
    };
    // The test profile runs the dev-profile build `cargo xtask test` already made.
    cmd.current_dir(root)
        .arg(if options.debug_build { "test" } else { "bench" })
        .args(["-q", "-p", "plinth", "--bench", "request_path"])
        .env("PLINTH_GUEST_DIR", guest_dir)
        .env_remove("RUST_BACKTRACE");
    if options.quick {
        cmd.args(["--", "--quick"]);
    }
    let out = cmd.output().context("running the request-stage bench")?;
    if !out.status.success() {
        bail!(
            "the request-stage bench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Keeps idle cores polling instead of halting while the bench runs, by holding
/// `/dev/cpu_dma_latency` at 0 (what tuned's latency profiles do). On a VM whose idle vCPUs halt,
/// each wake-up of an idle wrk costs the server a VM exit, a cost that grows the slower a server
/// is, so without this the ratios mostly measure the hypervisor. Needs root; without it the bench
/// runs anyway and says so.
struct IdlePoll {
    /// Open while the bench runs: the kernel honours the request only while it is open.
    _held: Option<std::fs::File>,
}

impl IdlePoll {
    fn hold() -> Self {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .and_then(|mut file| file.write_all(&0i32.to_ne_bytes()).map(|()| file));
        match file {
            Ok(file) => {
                eprintln!("idle cores poll during the bench (/dev/cpu_dma_latency held at 0)");
                Self { _held: Some(file) }
            }
            Err(e) => {
                eprintln!(
                    "cannot hold /dev/cpu_dma_latency at 0 ({e}): idle wake-ups may dominate \
                     the slower servers' figures"
                );
                Self { _held: None }
            }
        }
    }
}

/// `wasmtime serve` on `component`, pinned like the other servers, when a `wasmtime` binary is
/// on PATH; returns it with its address.
fn wasmtime_serve(component: &Path) -> Result<Option<(Guard, String)>> {
    let version = Command::new("wasmtime").arg("--version").output();
    let Ok(version) = version else {
        return Ok(None);
    };
    eprintln!(
        "measuring {} as `wasmtime serve`",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    // A free port: bind to port 0, note it, let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cmd = pinned(Path::new("wasmtime"), 0);
    cmd.args(["serve", "-Scli", "--addr"])
        .arg(addr.to_string())
        .arg(component)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Guard(cmd.spawn().context("starting wasmtime serve")?);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("wasmtime serve did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some((server, addr.to_string())))
}

/// `component` with a custom section naming `variant` at its end: valid, and distinct bytes, so
/// the server compiles it afresh.
fn variant(component: &[u8], variant: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    let name = b"plinth-bench";
    let payload = format!("variant {variant}");
    let mut section = Vec::new();
    leb(name.len(), &mut section);
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb(section.len(), &mut out);
    out.extend_from_slice(&section);
    out
}

fn vm_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// The number of plugins the server at `base` serves, from `/readyz`.
fn plugins_loaded(base: &str) -> Result<u64> {
    let (_, ready) = http::get(base, "/readyz")?;
    Ok(
        serde_json::from_str::<serde_json::Value>(&ready).unwrap_or_default()["plugins"]
            .as_u64()
            .unwrap_or(0),
    )
}

/// Restart to ready with 100 plugins, upload to serving for a fresh component, and resident
/// memory with `many` plugins. Consumes the running server: it is restarted by `start(false)`,
/// unpinned, so compiling may use every core as it would on a real server.
fn cold_paths(
    base: &str,
    token: &str,
    plain: &[u8],
    many: usize,
    plinth: Guard,
    start: impl Fn(bool) -> Command,
) -> Result<Vec<(String, String)>> {
    let mut figures = Vec::new();
    let manifest =
        |name: &str| format!("name = \"{name}\"\n[[routes]]\npath = \"/{name}/{{*rest}}\"\n");
    for i in 1..100 {
        // Distinct components, so each restart load is a real artifact load.
        http::deploy_bytes(base, token, &manifest(&format!("p{i}")), &variant(plain, i))?;
    }
    drop(plinth);
    let started = std::time::Instant::now();
    let (child, addr) = spawn_server(start(false))?;
    let mut plinth = Guard(child);
    let base = format!("http://{addr}");
    http::wait_ready(&base, &mut plinth.0)?;
    let elapsed = started.elapsed();
    let loaded = plugins_loaded(&base)?;
    figures.push((
        format!("restart → ready with {loaded} plugins (cached artifacts)"),
        format!("{:.0} ms", elapsed.as_secs_f64() * 1000.0),
    ));
    figures.push((
        "resident memory after that restart".into(),
        format!("{:.0} MiB", vm_rss_mib(plinth.0.id())?),
    ));
    // Never-seen components (distinct bytes, so nothing cached), median of three.
    let mut uploads = Vec::new();
    let mut size = 0;
    for i in 0..3 {
        let fresh = variant(plain, 1000 + i);
        size = fresh.len();
        let name = format!("cold{i}");
        let started = std::time::Instant::now();
        http::deploy_bytes(&base, token, &manifest(&name), &fresh)?;
        let (status, _) = http::get(&base, &format!("/{name}/x"))?;
        if status != 200 {
            bail!("the fresh plugin answered {status}");
        }
        uploads.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    figures.push((
        format!(
            "upload → serving, new {} KiB component (compiled; median of 3)",
            size / 1024
        ),
        format!("{:.0} ms", median(uploads)),
    ));
    if many > 100 {
        let started = std::time::Instant::now();
        for i in 100..many {
            http::deploy_bytes(&base, token, &manifest(&format!("p{i}")), plain)?;
        }
        let (status, _) = http::get(&base, &format!("/p{}/x", many - 1))?;
        if status != 200 {
            bail!("plugin {} answered {status}", many - 1);
        }
        figures.push((
            format!(
                "{} more deploys of one component (its artifact reused)",
                many - 100
            ),
            format!("{:.1} s", started.elapsed().as_secs_f64()),
        ));
        let deployed = plugins_loaded(&base)?;
        figures.push((
            format!("resident memory with {deployed} plugins deployed"),
            format!("{:.0} MiB", vm_rss_mib(plinth.0.id())?),
        ));
    }
    Ok(figures)
}
