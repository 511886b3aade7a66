//! A throwaway PostgreSQL for the tests and the bench: Debian's `postgresql` (installed when
//! missing), a cluster in a temporary directory on a free loopback port, stopped and removed
//! when the guard goes. `PLINTH_TEST_DATABASE_URL`, when set, names a server to use instead.
//!
//! `cargo xtask test` starts one server every test shares; a test that stops and starts its
//! server (a database restart under load) starts a private one, so no other test sees it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running test server; dropping it stops the cluster and removes its directory (unless it
/// was given from outside).
#[derive(Debug)]
pub struct TestPostgres {
    /// `postgres://` URL of a superuser on the server's `postgres` database.
    pub url: String,
    cluster: Option<Cluster>,
}

#[derive(Debug)]
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl TestPostgres {
    /// The server named by `PLINTH_TEST_DATABASE_URL`, or a new throwaway one (installing
    /// PostgreSQL first when it is missing).
    pub fn start() -> Result<Self> {
        if let Ok(url) = std::env::var("PLINTH_TEST_DATABASE_URL") {
            return Ok(Self { url, cluster: None });
        }
        let bin = match newest_server() {
            Some(bin) => bin,
            None => install()?,
        };
        Self::start_cluster(bin)
    }

    /// A new throwaway server of this test's own, or `None` when PostgreSQL is not installed.
    pub fn start_private() -> Result<Option<Self>> {
        newest_server().map(Self::start_cluster).transpose()
    }

    fn start_cluster(bin: PathBuf) -> Result<Self> {
        // initdb refuses to run as root: as root, the cluster belongs to Debian's `postgres`
        // user (the package creates it).
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "plinth-test-postgres-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let cluster = Cluster {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
        };
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]))?;
        let server = Self {
            url: format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port),
            cluster: Some(cluster),
        };
        server.start_server()?;
        Ok(server)
    }

    /// Creates the database `name` on the server and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let psql = match &self.cluster {
            Some(cluster) => cluster.bin.join("psql"),
            None => PathBuf::from("psql"),
        };
        run(Command::new(psql).arg(&self.url).args([
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ]))?;
        let base = self.url.split('?').next().unwrap_or_default();
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        Ok(format!("{server}/{name}"))
    }

    /// Stops the server the way an operator restarting it would (`pg_ctl stop -m fast`:
    /// connections cut, transactions in flight rolled back).
    pub fn stop_server(&self) -> Result<()> {
        let cluster = self.owned()?;
        run(cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(cluster.data())
            .args(["-m", "fast", "-w", "stop"]))
    }

    /// Starts the (stopped) server again, on the same port.
    pub fn start_server(&self) -> Result<()> {
        let cluster = self.owned()?;
        // Enough connections for every test's pools at once (each host keeps up to 16).
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=400",
            cluster.port,
            cluster.dir.display()
        );
        run(cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(cluster.data())
            .args(["-o", &options, "-l"])
            .arg(cluster.dir.join("server.log"))
            .args(["-w", "start"]))
    }

    fn owned(&self) -> Result<&Cluster> {
        self.cluster
            .as_ref()
            .context("the server was given by PLINTH_TEST_DATABASE_URL, not started here")
    }
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` from the server's bin directory, as the cluster's owner, its chatter on
    /// standard output dropped (errors still reach standard error).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.stdout(std::process::Stdio::null());
        cmd
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster {
            let _ = cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(cluster.data())
                .args(["-m", "immediate", "-w", "stop"])
                .status();
            let _ = std::fs::remove_dir_all(&cluster.dir);
        }
    }
}

/// Runs `cmd` to completion; its failure is an error naming it.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs Debian's `postgresql` and returns its server's bin directory.
fn install() -> Result<PathBuf> {
    eprintln!("PostgreSQL is missing; installing Debian's postgresql with apt-get");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    newest_server().context("postgresql was installed but no server binaries were found")
}

/// The newest installed server's bin directory.
fn newest_server() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    if port == 0 {
        bail!("no free port");
    }
    Ok(port)
}
