//! Python packages for the tests that check the registrar against a reference implementation
//! (the MCP Python SDK and Ory Hydra's SDK in tests/interop.rs, schemathesis in
//! tests/contract.rs, `standardwebhooks` in tests/api/webhooks.rs), installed by the test
//! itself so `cargo test` needs nothing set up beforehand.
//!
//! Each requirements file gets a venv under target/ (`CARGO_TARGET_TMPDIR/{name}-venv`), reused
//! while the requirements are unchanged (a copy of them is kept as a stamp). Where
//! `python3 -m venv` is unusable (Debian without python3-venv), the packages go to a plain
//! directory with `pip install --target` and are imported through `PYTHONPATH`. When neither
//! works the install fails with pip's output: a test that needs Python never skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One install at a time in a test binary: tests sharing a venv wait for the first to fill it.
static PIP: Mutex<()> = Mutex::new(());

/// How long one `python3 -m venv` or `pip install` may take before it is killed.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The copy of the requirements an install leaves behind, compared on the next use.
const STAMP: &str = "registrar-installed-requirements.txt";

/// How to run Python, or a console script of an installed package, with the requirements
/// importable.
pub struct Python {
    /// The interpreter: the venv's, or `python3` with `path` on `PYTHONPATH`.
    pub program: PathBuf,
    /// The `pip install --target` directory when no venv could be made.
    pub path: Option<PathBuf>,
}

impl Python {
    /// `python` (the venv's or `python3`) with `PYTHONPATH` set when needed.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        if let Some(path) = &self.path {
            cmd.env("PYTHONPATH", path);
        }
        cmd
    }

    /// A console script of an installed package (`st` of schemathesis): the venv's
    /// `bin/{name}`, or the `--target` directory's `bin/{name}` run by `python3`.
    pub fn script(&self, name: &str) -> Command {
        match &self.path {
            None => {
                let bin = self
                    .program
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                Command::new(bin.join(name))
            }
            Some(path) => {
                let mut cmd = self.command();
                cmd.arg(path.join("bin").join(name));
                cmd
            }
        }
    }
}

/// Run `cmd` to completion within `timeout`; its combined output, or an error that includes it.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<String, String> {
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
pub fn installed(lockfile: &Path, stamp: &Path) -> bool {
    matches!((std::fs::read(lockfile), std::fs::read(stamp)), (Ok(a), Ok(b)) if a == b)
}

/// The packages of `requirements` installed under target/ as `name` (see the module doc).
pub fn install(name: &str, requirements: &Path) -> Result<Python, String> {
    let _guard = PIP.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join(format!("{name}-venv"));
    let python = venv.join("bin/python");
    let target = root.join(format!("{name}-pip-target"));
    let in_venv = || Python {
        program: python.clone(),
        path: None,
    };
    let in_target = || Python {
        program: PathBuf::from("python3"),
        path: Some(target.clone()),
    };
    if installed(requirements, &venv.join(STAMP)) && python.exists() {
        return Ok(in_venv());
    }
    if installed(requirements, &target.join(STAMP)) {
        return Ok(in_target());
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
        .arg(requirements);
        run(cmd, INSTALL_TIMEOUT)
    };
    let stamp = |dir: &Path| {
        std::fs::copy(requirements, dir.join(STAMP))
            .map(drop)
            .map_err(|e| format!("stamp in {}: {e}", dir.display()))
    };
    let venv_made = python.exists() || {
        let mut cmd = Command::new("python3");
        cmd.arg("-m").arg("venv").arg(&venv);
        run(cmd, INSTALL_TIMEOUT).is_ok() && python.exists()
    };
    if venv_made {
        pip(&python, &[])?;
        stamp(&venv)?;
        return Ok(in_venv());
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
    stamp(&target)?;
    Ok(in_target())
}
