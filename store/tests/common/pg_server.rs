//! A real PostgreSQL server for the tests: Debian's `postgresql` package's
//! binaries (the newest version under `/usr/lib/postgresql/`, else `initdb`
//! and `pg_ctl` on the PATH), a throwaway cluster (`initdb`, trust
//! authentication) in a temporary directory, listening on a free port on
//! 127.0.0.1 (its Unix socket in the same directory). One server serves a
//! whole test binary; each test gets its own database ([`database`]).
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the
//! package's `postgres` user and its programs run through `runuser`.
//!
//! Clean-up does not depend on the test binary ending well: a watchdog
//! shell, started first, waits for the binary's end of a pipe to close
//! (which happens however the binary ends, SIGKILL included), then stops
//! the server and removes the directory.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Server {
    pub port: u16,
    pub version: String,
    pub started_in: Duration,
    /// Serialises `CREATE DATABASE`s (they copy template1 and may not
    /// overlap on it).
    admin: Mutex<()>,
    /// Our end of the watchdog's pipe: closed when this process ends.
    _watchdog: Mutex<ChildStdin>,
}

enum Unavailable {
    /// The binaries are not installed: a skip, except under CI.
    Missing(String),
    /// They are there but the server would not start: a failure.
    Failed(String),
}

static SERVER: OnceLock<Result<Server, Unavailable>> = OnceLock::new();

/// The server, started on first use; `None` (after printing `SKIPPED:`) if
/// PostgreSQL is not installed. Under CI a missing PostgreSQL fails the
/// test, as does a server that will not start anywhere.
pub fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(start) {
        Ok(server) => Some(server),
        Err(Unavailable::Missing(reason)) => {
            if super::in_ci() {
                panic!("PostgreSQL is needed under CI (scripts/setup.sh installs it): {reason}");
            }
            println!("SKIPPED: {reason}");
            None
        }
        Err(Unavailable::Failed(reason)) => panic!("the test PostgreSQL server: {reason}"),
    }
}

/// A URL for a new, empty database named `name` on the test server.
pub fn database(name: &str) -> Option<String> {
    let server = server()?;
    let _turn = server.admin.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = postgres::Client::connect(&server.url("postgres"), postgres::NoTls)
        .expect("connect to the test server's postgres database");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    Some(server.url(name))
}

impl Server {
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

fn start() -> Result<Server, Unavailable> {
    let started = Instant::now();
    let (bin, version) = find_binaries().ok_or_else(|| {
        Unavailable::Missing(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on the \
             PATH; Debian: apt-get install postgresql)"
                .to_string(),
        )
    })?;
    let failed = |what: &str, detail: String| Unavailable::Failed(format!("{what}: {detail}"));
    let as_root = is_root();
    if as_root && !user_exists("postgres") {
        return Err(Unavailable::Missing(
            "running as root and there is no `postgres` user to run PostgreSQL as".to_string(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("vmbench-store-pg-")
        .tempdir()
        .map_err(|e| failed("create a temporary directory", e.to_string()))?
        .keep();
    if as_root {
        chown_to_postgres(&dir).map_err(|e| failed("chown the temporary directory", e))?;
    }
    let data = dir.join("data");
    let server_command = |program: &str| {
        let path = bin.join(program);
        if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    };

    // The watchdog first, so that the directory goes whatever happens next.
    let stop = server_command("pg_ctl");
    let mut watchdog = Command::new("sh");
    watchdog
        .arg("-c")
        .arg(
            r#"trap '' INT TERM HUP; read -r _; "$@" >/dev/null 2>&1; rm -rf -- "$VMBENCH_PG_DIR""#,
        )
        .arg("watchdog")
        .arg(stop.get_program())
        .args(stop.get_args())
        .args([Path::new("-D"), &data])
        .args(["-m", "immediate", "-w", "stop"])
        .env("VMBENCH_PG_DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut watchdog = watchdog
        .spawn()
        .map_err(|e| failed("start the clean-up watchdog", e.to_string()))?;
    let watchdog_stdin = watchdog.stdin.take().expect("piped stdin");

    let initdb_started = Instant::now();
    let out = server_command("initdb")
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .map_err(|e| failed("run initdb", e.to_string()))?;
    if !out.status.success() {
        return Err(failed("initdb", tail(&out.stderr)));
    }
    let initdb_took = initdb_started.elapsed();

    let log = dir.join("server.log");
    let mut last_error = String::new();
    for _attempt in 0..5 {
        let port = free_port().map_err(|e| failed("find a free port", e))?;
        let out = server_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-h 127.0.0.1 -p {port} -k {} -c max_connections=100",
                dir.display()
            ))
            .arg("start")
            .output()
            .map_err(|e| failed("run pg_ctl start", e.to_string()))?;
        if out.status.success() {
            let server = Server {
                port,
                version: version.clone(),
                started_in: started.elapsed(),
                admin: Mutex::new(()),
                _watchdog: Mutex::new(watchdog_stdin),
            };
            println!(
                "test PostgreSQL {version} on 127.0.0.1:{port}: ready in {} ms (initdb {} ms)",
                server.started_in.as_millis(),
                initdb_took.as_millis()
            );
            return Ok(server);
        }
        last_error = fs::read(&log).map(|l| tail(&l)).unwrap_or_default();
        if !last_error.contains("could not bind") && !last_error.contains("already in use") {
            break;
        }
    }
    drop(watchdog_stdin);
    Err(failed("pg_ctl start", last_error))
}

/// The bin directory of the newest PostgreSQL under /usr/lib/postgresql
/// (Debian's layout), else the one holding `initdb` on the PATH; and the
/// version.
fn find_binaries() -> Option<(PathBuf, String)> {
    let mut best: Option<((u32, u32), PathBuf, String)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.').map(str::parse::<u32>);
            let (Some(Ok(major)), minor) = (parts.next(), parts.next()) else {
                continue;
            };
            let key = (major, minor.and_then(Result::ok).unwrap_or(0));
            let bin = entry.path().join("bin");
            let complete = ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|p| bin.join(p).is_file());
            if complete && best.as_ref().is_none_or(|(k, _, _)| key > *k) {
                best = Some((key, bin, name));
            }
        }
    }
    if let Some((_, bin, version)) = best {
        return Some((bin, version));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .map(|dir| (dir, "(from PATH)".to_string()))
}

fn is_root() -> bool {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn chown_to_postgres(dir: &Path) -> Result<(), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                    "id {flag} postgres said {:?}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?)).map_err(|e| e.to_string())
}

/// A port nobody listens on right now (the server may still lose a race
/// for it; `start` then tries another).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
