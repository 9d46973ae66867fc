//! The test harness for lienthong's end-to-end scenarios.
//!
//! Every scenario in `tests/tests/` runs against real services — Apache Kafka (KRaft), PostgreSQL,
//! Prometheus and a Python environment with clients nobody here wrote — that `ops/test` installs
//! and starts, then describes to the tests through environment variables (see
//! `ops/services.sh`). This crate finds those services, gives each test its own topic and its own
//! database so that tests run in parallel, and makes a test **fail**, naming the command to run,
//! when a service it needs is not there. Nothing here ever lets a test pass silently.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The command that starts every service for tests run by hand with `cargo test`.
pub const START_SERVICES: &str = "eval \"$(ops/services.sh up)\"";
/// The command that installs and starts everything, runs every test, and stops the services.
pub const TEST_COMMAND: &str = "ops/test";

/// Environment variable naming the single-node broker's bootstrap address.
pub const ENV_KAFKA: &str = "LIENTHONG_KAFKA_BOOTSTRAP";
/// Environment variable naming the three-broker cluster's bootstrap addresses.
pub const ENV_KAFKA_CLUSTER: &str = "LIENTHONG_KAFKA_CLUSTER_BOOTSTRAP";
/// Environment variable naming the three-broker cluster's instance name for `ops/kafka.sh`.
pub const ENV_KAFKA_CLUSTER_NAME: &str = "LIENTHONG_KAFKA_CLUSTER_NAME";
/// Environment variable with the PostgreSQL admin URL.
pub const ENV_POSTGRES: &str = "LIENTHONG_PG_URL";
/// Environment variable with the base URL of Apicurio Registry's Confluent-compatible API.
pub const ENV_APICURIO: &str = "LIENTHONG_APICURIO_URL";
/// Environment variable with the path of the interoperability venv's Python.
pub const ENV_PYTHON: &str = "LIENTHONG_PYTHON";

/// Why a service a test needs cannot be used.
#[derive(Debug)]
pub enum ServiceError {
    /// The environment variable that describes the service is not set.
    NotConfigured {
        /// Which service.
        service: &'static str,
        /// The variable that was expected.
        var: &'static str,
    },
    /// The variable is set but nothing answers at the address.
    Unreachable {
        /// Which service.
        service: &'static str,
        /// The address tried.
        address: String,
        /// What the connection attempt said.
        reason: String,
    },
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::NotConfigured { service, var } => write!(
                f,
                "{service} is needed by this test but {var} is not set. Run the whole suite with \
                 `{TEST_COMMAND}`, or start the services for `cargo test` with `{START_SERVICES}`."
            ),
            ServiceError::Unreachable {
                service,
                address,
                reason,
            } => write!(
                f,
                "{service} is needed by this test but nothing answers at {address} ({reason}). \
                 Run the whole suite with `{TEST_COMMAND}`, or restart the services with \
                 `{START_SERVICES}`."
            ),
        }
    }
}

impl std::error::Error for ServiceError {}

fn env_var(service: &'static str, var: &'static str) -> Result<String, ServiceError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(ServiceError::NotConfigured { service, var }),
    }
}

/// Check that every `host:port` in a comma-separated list accepts a TCP connection.
fn check_reachable(service: &'static str, addresses: &str) -> Result<(), ServiceError> {
    for address in addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let unreachable = |reason: String| ServiceError::Unreachable {
            service,
            address: address.to_string(),
            reason,
        };
        let addr = address
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the address resolves to nothing".into()))?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| unreachable(e.to_string()))?;
    }
    Ok(())
}

/// Unwrap a service lookup, failing the test with the message that names the command to run.
fn require<T>(found: Result<T, ServiceError>) -> T {
    match found {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// A unique suffix for names of per-test resources (topics, groups, databases).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The repository root, for calling the scripts under `ops/` (found at run time: see
/// [`lienthong_contract::repo_root`]).
pub fn repo_root() -> PathBuf {
    lienthong_contract::repo_root()
}

mod broker;
pub use broker::*;
mod secured;
pub use secured::*;

pub mod prometheus;

pub mod browser;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `lienthong --config CONFIG up`, with `bin` the `lienthong` binary
/// (`assert_cmd::cargo::cargo_bin("lienthong")`), run from the repository root on `kafka`'s
/// cluster, with `RUST_LOG` unset and stdout piped: the tests read the addresses it prints.
/// Stderr is the caller's choice.
pub fn up_command(
    bin: impl AsRef<std::path::Path>,
    config: &std::path::Path,
    kafka: &Kafka,
) -> std::process::Command {
    let mut command = std::process::Command::new(bin.as_ref());
    command
        .current_dir(repo_root())
        .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config)
        .arg("up")
        .stdout(std::process::Stdio::piped());
    command
}

/// A child process (a `lienthong` under test) that is killed if the test ends without
/// stopping it, so that a failed test leaves no process behind holding ports and pipes.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port that was free a moment ago (for a component's listen address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// SIGINT to `child`, then wait at most `within` for it to end; its exit status.
pub fn interrupt_and_wait(child: &mut ChildGuard, within: Duration) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .arg("-INT")
        .arg(child.0.id().to_string())
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -INT failed");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().ok().flatten() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within {within:?} of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Helpers shared by the benchmarks (which print medians of several rounds and ratios).
pub mod bench;

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub payload: Option<Vec<u8>>,
}

/// Run `ops/<script> args...`, failing with its output if it exits non-zero.
pub fn run_ops(script: &str, args: &[&str]) -> Result<()> {
    let path = repo_root().join("ops").join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Run `ops/<script> args...` and return its stdout, failing with its output if it exits
/// non-zero.
pub fn run_ops_output(script: &str, args: &[&str]) -> Result<String> {
    let path = repo_root().join("ops").join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running PostgreSQL server.
#[derive(Debug, Clone)]
pub struct Postgres {
    admin_url: String,
}

/// Look up PostgreSQL, without failing.
pub fn try_postgres() -> Result<Postgres, ServiceError> {
    let service = "PostgreSQL";
    let admin_url = env_var(service, ENV_POSTGRES)?;
    let hostport = admin_url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    check_reachable(service, &hostport)?;
    Ok(Postgres { admin_url })
}

/// PostgreSQL; the test fails, naming the command to run, if it is not there.
pub fn postgres() -> Postgres {
    require(try_postgres())
}

impl Postgres {
    /// The URL of the administrative database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => format!("{}/{db}", self.admin_url),
        }
    }

    /// Create a fresh, empty database for one test and return its URL.
    pub async fn fresh_database(&self, prefix: &str) -> Result<String> {
        let db = format!("{prefix}_{}", unique_suffix());
        let client = connect(&self.admin_url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .await
            .with_context(|| format!("CREATE DATABASE {db}"))?;
        Ok(self.url_of(&db))
    }

    /// Drop the database at `url` (one [`Postgres::fresh_database`] made), closing its
    /// sessions: a bench that leaves its databases behind has their autovacuum run during its
    /// later rounds.
    pub async fn drop_database(&self, url: &str) -> Result<()> {
        let db = url
            .rsplit_once('/')
            .map(|(_, db)| db.split('?').next().unwrap_or(db))
            .with_context(|| format!("no database in {url}"))?;
        let client = connect(&self.admin_url).await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("DROP DATABASE {db}"))?;
        Ok(())
    }
}

/// Connect to PostgreSQL at `url`, driving the connection on a background task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection closed with error: {e}");
        }
    });
    Ok(client)
}

/// Look up the interoperability venv's Python, without failing.
pub fn try_python() -> Result<PathBuf, ServiceError> {
    let service = "The Python interoperability environment";
    let path = PathBuf::from(env_var(service, ENV_PYTHON)?);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ServiceError::Unreachable {
            service,
            address: path.display().to_string(),
            reason: "no such file".into(),
        })
    }
}

/// The interoperability venv's Python; the test fails if it is not there.
pub fn python() -> PathBuf {
    require(try_python())
}

/// Serve `router` on a free loopback port for the rest of the test; returns its base URL.
pub async fn serve(router: axum::Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("test server stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

/// Apicurio Registry (an external Confluent-compatible registry), without failing.
pub fn try_apicurio() -> Result<String, ServiceError> {
    let service = "Apicurio Registry";
    let url = env_var(service, ENV_APICURIO)?;
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    check_reachable(service, &hostport)?;
    Ok(url)
}

/// Apicurio's Confluent-compatible API URL; the test fails if it is not running.
pub fn apicurio() -> String {
    require(try_apicurio())
}

/// Count occurrences, for duplicate checks.
pub fn counts<T: std::hash::Hash + Eq, I: IntoIterator<Item = T>>(items: I) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_service_names_the_command_to_run() {
        let err = env_var("Apache Kafka", "LIENTHONG_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("LIENTHONG_TEST_SURELY_UNSET_VARIABLE"),
            "{msg}"
        );
        assert!(
            msg.contains(TEST_COMMAND) && msg.contains(START_SERVICES),
            "{msg}"
        );
    }

    #[test]
    fn an_unreachable_service_is_an_error_not_a_pass() {
        // Bind then drop a listener: the port is then (almost surely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let err = check_reachable("Apache Kafka", &format!("127.0.0.1:{port}")).unwrap_err();
        assert!(matches!(err, ServiceError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(TEST_COMMAND));
    }

    #[test]
    fn database_urls_keep_the_server_and_change_the_database() {
        let pg = Postgres {
            admin_url: "postgres://lienthong@127.0.0.1:5433/postgres".into(),
        };
        assert_eq!(pg.url_of("t_1"), "postgres://lienthong@127.0.0.1:5433/t_1");
    }
}
