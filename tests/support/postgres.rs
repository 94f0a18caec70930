//! A private PostgreSQL cluster for the tests, or the server `REGISTRAR_TEST_DATABASE_URL`
//! names; one database per test.
//!
//! When the variable is unset, one cluster per test binary is made with the installed server
//! binaries (`initdb` into a temporary directory, a free loopback port, run as `nobody` when the
//! tests run as root, since PostgreSQL refuses to run as root). The postmaster is started by a
//! thread that lives as long as it does, with a parent-death signal (SIGQUIT, PostgreSQL's
//! immediate shutdown), so it stops when the test process exits however it exits. Missing
//! binaries are a test failure that says how to install them, never a silent skip.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INSTALL: &str = "the PostgreSQL tests need the PostgreSQL server binaries (initdb, postgres, pg_ctl): install them with `apt-get install postgresql` (Debian/Ubuntu), or point REGISTRAR_TEST_DATABASE_URL at a server the tests may create databases on";

/// A PostgreSQL server the tests may create databases on.
pub struct Cluster {
    /// `postgres://user@host:port` (no database).
    base: String,
    /// Our own cluster: its data directory, port and binaries (None for an external server).
    own: Option<Own>,
    next: AtomicU32,
}

struct Own {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// More `postgres` arguments, given at every start.
    extra: Vec<String>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

/// The cluster shared by every test of this binary.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| match std::env::var("REGISTRAR_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Cluster {
            base: strip_database(&url),
            own: None,
            next: AtomicU32::new(0),
        },
        _ => Cluster::private(false),
    })
}

fn strip_database(url: &str) -> String {
    let mut u = url::Url::parse(url).expect("REGISTRAR_TEST_DATABASE_URL is a URL");
    u.set_path("");
    u.set_query(None);
    u.to_string().trim_end_matches('/').to_owned()
}

/// The directory of the server binaries: `REGISTRAR_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` with `initdb` in it. Where there is none and the tests run as root
/// with apt-get (a fresh CI machine), Debian's `postgresql` package is installed first, once, so
/// that `cargo test` sets up what it needs; otherwise the test fails saying how to install it.
fn binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("REGISTRAR_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(|| installed().map(Ok).unwrap_or_else(install)) {
        Ok(bin) => bin.clone(),
        Err(why) => panic!("{INSTALL} ({why})"),
    }
}

fn installed() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn install() -> Result<PathBuf, String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Err("not installed, and not running as root to install it".into());
    }
    let sh =
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql";
    eprintln!("PostgreSQL server binaries missing: running `{sh}`");
    let status = Command::new("sh")
        .args(["-c", sh])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("`{sh}` failed: {status}"));
    }
    installed().ok_or_else(|| "apt-get installed postgresql but no initdb was found".into())
}

/// uid and gid of `nobody` when running as root (PostgreSQL will not run as root).
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions; getpwnam returns a pointer into static storage that
    // is read before any other call that could overwrite it.
    unsafe {
        if libc::getuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"nobody".as_ptr());
        assert!(!pw.is_null(), "running as root and there is no user nobody");
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn command(own: &Own, program: &str) -> Command {
    let mut cmd = Command::new(own.bin.join(program));
    if let Some((uid, gid)) = own.user {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Remove the data directories of clusters whose test process is gone.
fn sweep_leftovers() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("registrar-pg-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// A new private cluster. `durable`: with fsync (the fault tests); the shared one runs
    /// with fsync off, which loses nothing when only the server (not the machine) stops.
    pub fn private(durable: bool) -> Cluster {
        Self::private_with(durable, |_| Vec::new())
    }

    /// A new private cluster; `setup` gets the data directory after `initdb` (files written
    /// there are handed to the cluster's user) and returns more `postgres` arguments.
    pub fn private_with(durable: bool, setup: impl FnOnce(&Path) -> Vec<String>) -> Cluster {
        let bin = binaries();
        for tool in ["initdb", "postgres", "pg_ctl"] {
            assert!(
                bin.join(tool).exists(),
                "{INSTALL} ({tool} missing in {})",
                bin.display()
            );
        }
        sweep_leftovers();
        let dir = std::env::temp_dir().join(format!(
            "registrar-pg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The directory outlives this process otherwise (statics are never dropped): a
        // detached watchdog removes it once the process is gone and the postmaster with it.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; sleep 2; rm -rf "$2""#)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let user = unprivileged();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let mut own = Own {
            dir: dir.clone(),
            port: free_port(),
            bin,
            user,
            extra: Vec::new(),
        };
        let out = command(&own, "initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("{INSTALL}: initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let data = dir.join("data");
        let before: Vec<PathBuf> = std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        own.extra = setup(&data);
        for entry in std::fs::read_dir(&data).unwrap().flatten() {
            if let (false, Some((uid, gid))) = (before.contains(&entry.path()), user) {
                std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid)).unwrap();
            }
        }
        let cluster = Cluster {
            base: format!("postgres://postgres@127.0.0.1:{}", own.port),
            own: Some(own),
            next: AtomicU32::new(0),
        };
        cluster.start(durable);
        cluster
    }

    fn own(&self) -> &Own {
        self.own
            .as_ref()
            .expect("this test needs its own cluster (binaries), not REGISTRAR_TEST_DATABASE_URL")
    }

    /// Start the postmaster and wait until it accepts connections.
    pub fn start(&self, durable: bool) {
        let own = self.own();
        let mut cmd = command(own, "postgres");
        cmd.arg("-D")
            .arg(own.dir.join("data"))
            .args([
                "-p",
                &own.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(&own.dir)
            .args(["-c", "max_connections=300", "-c", "log_min_messages=fatal"])
            .args(&own.extra);
        if !durable {
            cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe. Runs after the uid change above (which would
        // clear the setting), so the postmaster gets SIGQUIT when its spawning thread ends.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                // Live exactly as long as the postmaster: this thread is its "parent".
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        });
        rx.recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("{INSTALL}: postgres: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(own.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &own.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pg_ctl stop -m immediate`: the server dies at once, as in a crash (no shutdown
    /// checkpoint); the WAL keeps every committed transaction.
    pub fn stop_immediate(&self) {
        let own = self.own();
        let out = command(own, "pg_ctl")
            .arg("-D")
            .arg(own.dir.join("data"))
            .args(["stop", "-m", "immediate", "-w"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A URL for a new, empty database.
    pub fn new_database(&self) -> String {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let admin = format!("{}/postgres", self.base);
        let sql = format!("CREATE DATABASE {name}");
        // On a thread with its own runtime, so that sync and async callers alike can use it.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
                tokio::spawn(connection);
                client.batch_execute(&sql).await.unwrap();
            })
        })
        .join()
        .unwrap();
        format!("{}/{name}", self.base)
    }

    /// The loopback port of our own cluster.
    pub fn port(&self) -> u16 {
        self.own().port
    }
}
