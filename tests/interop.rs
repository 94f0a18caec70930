//! Interop with the real client libraries, pinned with lockfiles: openid-client v6 and
//! oauth4webapi v3 (tests/interop/js, installed with `npm ci`), and Ory Hydra's Python SDK
//! ory-hydra-client (tests/interop/python/requirements.txt, installed into a venv under
//! target/). Each drives the registrar through register -> read -> update -> read -> delete ->
//! read-after-delete (must fail) and one invalid registration, and fails on any deviation.
//!
//! The installs run once and are reused while the lockfiles are unchanged (a copy of the
//! lockfile is kept next to the installed packages as a stamp).

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = false;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "support/postgres.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One install at a time per tool: the two JavaScript tests share one node_modules.
static NPM: Mutex<()> = Mutex::new(());
static PIP: Mutex<()> = Mutex::new(());

/// How long one install or one driver may take before it is killed.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Run `cmd` to completion within `timeout`; returns its combined output or an error that
/// includes it.
fn run(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e} (is it installed?)"))?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let output = format!("{}{}", join(stdout), join(stderr));
    if status.success() {
        Ok(output)
    } else {
        Err(format!("{shown} failed ({status}):\n{output}"))
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = pipe.read_to_string(&mut out);
        out
    })
}

/// Whether `stamp` holds exactly the content of `lockfile`.
fn installed(lockfile: &Path, stamp: &Path) -> bool {
    matches!((std::fs::read(lockfile), std::fs::read(stamp)), (Ok(a), Ok(b)) if a == b)
}

/// `npm ci` in tests/interop/js unless node_modules already matches package-lock.json.
fn npm_install() -> Result<PathBuf, String> {
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = interop_dir().join("js");
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.registrar-installed-lock.json");
    if !installed(&lock, &stamp) {
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir);
        run(cmd, INSTALL_TIMEOUT)?;
        std::fs::copy(&lock, &stamp).map_err(|e| format!("stamp: {e}"))?;
    }
    Ok(dir)
}

/// How to run Python with requirements.txt importable.
struct Python {
    program: PathBuf,
    /// Set as PYTHONPATH when the packages went to a plain directory instead of a venv.
    path: Option<PathBuf>,
}

/// A venv under target/ with requirements.txt installed. Where `python3 -m venv` is unusable
/// (Debian without python3-venv), the packages go to a plain directory with
/// `pip install --target` instead.
fn pip_install() -> Result<Python, String> {
    let _guard = PIP.lock().unwrap_or_else(|e| e.into_inner());
    let requirements = interop_dir().join("python/requirements.txt");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("interop-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("registrar-installed-requirements.txt");
    let target = root.join("interop-pip-target");
    let target_stamp = target.join("registrar-installed-requirements.txt");
    let in_venv = |program: PathBuf| Python {
        program,
        path: None,
    };
    let in_target = |target: PathBuf| Python {
        program: PathBuf::from("python3"),
        path: Some(target),
    };
    if installed(&requirements, &stamp) {
        return Ok(in_venv(python));
    }
    if installed(&requirements, &target_stamp) {
        return Ok(in_target(target));
    }
    let pip = |python: &Path, extra: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(python);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(extra)
        .arg("-r")
        .arg(&requirements);
        run(cmd, INSTALL_TIMEOUT)
    };
    let venv_made = python.exists() || {
        let mut cmd = Command::new("python3");
        cmd.arg("-m").arg("venv").arg(&venv);
        run(cmd, INSTALL_TIMEOUT).is_ok() && python.exists()
    };
    if venv_made {
        pip(&python, &[])?;
        std::fs::copy(&requirements, &stamp).map_err(|e| format!("stamp: {e}"))?;
        return Ok(in_venv(python));
    }
    pip(
        Path::new("python3"),
        &[
            "--target".as_ref(),
            target.as_os_str(),
            "--upgrade".as_ref(),
        ],
    )
    .map_err(|e| format!("no usable venv, and pip install --target failed: {e}"))?;
    std::fs::copy(&requirements, &target_stamp).map_err(|e| format!("stamp: {e}"))?;
    Ok(in_target(target))
}

/// Start the registrar, run `driver` (a command taking the issuer as last argument), and return
/// the driver's output; panics with the output on any failure.
async fn drive(
    name: &str,
    driver: impl FnOnce(&str) -> Result<Command, String> + Send + 'static,
) -> String {
    drive_with(name, driver, |s| s).await
}

/// `drive` against a registrar with `tweak`ed settings (e.g. on PostgreSQL).
async fn drive_with(
    name: &str,
    driver: impl FnOnce(&str) -> Result<Command, String> + Send + 'static,
    tweak: impl FnOnce(registrar::settings::Settings) -> registrar::settings::Settings,
) -> String {
    let app = helpers::spawn_app_with(tweak).await;
    let issuer = app.address.clone();
    // Installing and driving block; keep them off the runtime's workers.
    let result = tokio::task::spawn_blocking(move || run(driver(&issuer)?, DRIVER_TIMEOUT))
        .await
        .expect("driver thread");
    app.stop().await;
    match result {
        Ok(output) => {
            println!("{output}");
            assert!(
                output.contains(&format!("[{name}] PASS")),
                "{name} did not report PASS:\n{output}"
            );
            output
        }
        Err(e) => panic!("{name} deviated:\n{e}"),
    }
}

fn node_driver(script: &'static str) -> impl FnOnce(&str) -> Result<Command, String> {
    move |issuer| {
        let dir = npm_install()?;
        let mut cmd = Command::new("node");
        cmd.arg(dir.join(script)).arg(issuer).current_dir(dir);
        Ok(cmd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_v6_registers_reads_updates_and_deletes() {
    let out = drive("openid-client", node_driver("openid-client.mjs")).await;
    assert!(out.contains("read after delete refused"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
}

/// One client library against the PostgreSQL backend: the store is invisible to clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_v6_works_against_the_postgres_backend() {
    let url = pg::shared().new_database();
    let out = drive_with(
        "openid-client",
        node_driver("openid-client.mjs"),
        move |s| helpers::with_postgres(s, &url),
    )
    .await;
    assert!(out.contains("read after delete refused"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_v3_registers_reads_updates_and_deletes() {
    let out = drive("oauth4webapi", node_driver("oauth4webapi.mjs")).await;
    assert!(out.contains("read after delete refused"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ory_hydra_python_sdk_registers_reads_updates_and_deletes() {
    let out = drive("ory-hydra-client", |issuer| {
        let python = pip_install()?;
        let mut cmd = Command::new(python.program);
        if let Some(path) = python.path {
            cmd.env("PYTHONPATH", path);
        }
        cmd.arg(interop_dir().join("python/hydra_client.py"))
            .arg(issuer);
        Ok(cmd)
    })
    .await;
    assert!(out.contains("read after delete refused"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
}
