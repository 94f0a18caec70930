//! Everything the bench drives from outside: wrk, the servers (registrar and the peer), the
//! installs they need, readiness probes, resident memory and machine facts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

/// The wrk scripts, embedded so the harness is one binary; `common.lua` is prepended to each.
pub const COMMON_LUA: &str = include_str!("common.lua");
pub const SCRIPTS: [(&str, &str); 7] = [
    ("register", include_str!("register.lua")),
    ("read", include_str!("read.lua")),
    ("update", include_str!("update.lua")),
    ("delete", include_str!("delete.lua")),
    ("mix", include_str!("mix.lua")),
    ("populate", include_str!("populate.lua")),
    ("authenticate", include_str!("authenticate.lua")),
];

/// Write every script into `dir`; returns nothing, scripts are found by name with `script()`.
pub fn write_scripts(dir: &Path) -> Res<()> {
    for (name, body) in SCRIPTS {
        let text = format!("{COMMON_LUA}\n{body}");
        std::fs::write(dir.join(format!("{name}.lua")), text)
            .map_err(|e| format!("writing {name}.lua: {e}"))?;
    }
    Ok(())
}

/// A free loopback port (bound and released; the servers bind it right after).
pub fn free_port() -> Res<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Status of `GET path` on 127.0.0.1:port, or None if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// `GET path` on 127.0.0.1:port with a bearer token: (status, body). For one look at a response
/// (the size of a client read), not for load.
pub fn http_get(port: u16, path: &str, bearer: &str) -> Res<(u16, Vec<u8>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("GET {path}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("GET {path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!(
            "GET {path}: chunked answer, expected a Content-Length"
        ));
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {head:?}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// Run `cmd` through `sh -c`, failing with its output.
pub fn sh(cmd: &str) -> Res<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    succeeded(&format!("`{cmd}`"), out)
}

/// The trimmed stdout of a finished command, or an error naming `what` with everything it printed.
pub fn succeeded(what: &str, out: std::process::Output) -> Res<String> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// wrk, installed with apt-get when missing (the bench runs as root, like CI).
pub fn ensure_wrk() -> Res<String> {
    let present = || Command::new("wrk").arg("-v").output().ok();
    if present().is_none() {
        eprintln!("bench: wrk not found; installing it with apt-get");
        sh("(apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null 2>&1")
            .map_err(|e| format!("wrk is missing and apt-get could not install it: {e}"))?;
    }
    let out = present().ok_or("wrk is still missing after apt-get install")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Ok(text.lines().next().unwrap_or("wrk").trim().to_owned())
}

/// Where the peer lives and is installed.
pub struct PeerInstall {
    /// ../shared/peers beside the repository: the server script.
    pub src: PathBuf,
    /// The npm install root (`PEERS_DIR`).
    pub dir: PathBuf,
    pub version: String,
    pub node: String,
}

/// Install node-oidc-provider with npm into `dir` as ../shared/peers/install.sh does (only the
/// npm part: the bench needs neither the Python client nor the JS clients).
pub fn ensure_peer(repo: &Path, dir: &Path) -> Res<PeerInstall> {
    let src = std::env::var_os("BENCH_PEERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/peers"));
    let script = src.join("oidc-provider-server.mjs");
    if !script.is_file() {
        return Err(format!(
            "the peer server {} is missing: node-oidc-provider comes from ../shared/peers beside \
             the repository (set BENCH_PEERS_SRC to its folder, or pass --no-peer)",
            script.display()
        ));
    }
    let install = std::fs::read_to_string(src.join("install.sh")).unwrap_or_default();
    // Follow install.sh's pinned version; fall back to the one it pinned when this was written.
    let pin = install
        .split_whitespace()
        .find(|w| w.starts_with("oidc-provider@"))
        .unwrap_or("oidc-provider@9.13.3")
        .to_owned();
    let node_dir = dir.join("oidc-provider");
    let installed = node_dir.join("node_modules/oidc-provider/package.json");
    if !installed.is_file() {
        eprintln!(
            "bench: installing {pin} with npm into {}",
            node_dir.display()
        );
        std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        sh(&format!(
            "cd '{}' && ([ -f package.json ] || npm init -y >/dev/null) && npm install --no-audit --no-fund {pin} >/dev/null 2>&1",
            node_dir.display()
        ))
        .map_err(|e| format!("npm could not install the peer: {e}"))?;
    }
    let pkg = std::fs::read_to_string(&installed).map_err(|e| e.to_string())?;
    let version = serde_json::from_str::<serde_json::Value>(&pkg)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let node = sh("node --version").map_err(|e| format!("node is required for the peer: {e}"))?;
    Ok(PeerInstall {
        src,
        dir: dir.to_owned(),
        version,
        node,
    })
}

/// A running server; killed when dropped.
pub struct Server {
    pub name: String,
    pub child: Child,
    pub port: u16,
    /// Registration path (`/register` or `/reg`).
    pub base: String,
    /// Seconds from spawn to the first 200 on the readiness path.
    pub ready_s: f64,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.base)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// SIGTERM (graceful stop, final flush) and wait.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// SIGKILL: no shutdown code runs (durability check).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(
    mut child: Child,
    name: &str,
    port: u16,
    path: &str,
    started: Instant,
) -> Res<(Child, f64)> {
    let deadline = started + Duration::from_secs(60);
    loop {
        if http_status(port, path) == Some(200) {
            return Ok((child, started.elapsed().as_secs_f64()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{name} exited during start ({status}); see its log"
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{name} did not answer {path} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Start the registrar binary with `env` (REGISTRAR_* settings) on `port`.
pub fn start_registrar(
    bin: &Path,
    name: &str,
    data_dir: &Path,
    port: u16,
    env: &[(String, String)],
    log: &Path,
) -> Res<Server> {
    let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new(bin)
        .env("REGISTRAR_SERVER__PORT", port.to_string())
        .env("REGISTRAR_SERVER__HOST", "127.0.0.1")
        .env("REGISTRAR_ISSUER", "")
        .env("REGISTRAR_STORAGE__DATA_DIR", data_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let (child, ready_s) = wait_ready(child, name, port, "/readyz", started)?;
    Ok(Server {
        name: name.into(),
        child,
        port,
        base: "/register".into(),
        ready_s,
    })
}

/// Start node-oidc-provider (unbounded in-memory store, RAT kept on PUT) on `port`.
pub fn start_peer(peer: &PeerInstall, port: u16, log: &Path) -> Res<Server> {
    let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new("node")
        .arg("oidc-provider-server.mjs")
        .current_dir(&peer.src)
        .env("PORT", port.to_string())
        .env("PEERS_DIR", &peer.dir)
        .env("STORE", "map")
        .env("ROTATE_RAT", "0")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start node: {e}"))?;
    let (child, ready_s) = wait_ready(
        child,
        "node-oidc-provider",
        port,
        "/.well-known/openid-configuration",
        started,
    )?;
    Ok(Server {
        name: "node-oidc-provider".into(),
        child,
        port,
        base: "/reg".into(),
        ready_s,
    })
}

/// (VmRSS, VmHWM) of `pid` in MB (10^6 bytes).
pub fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb * 1024.0 / 1e6)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One wrk run's figures (from the SUMMARY line common.lua prints).
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub requests: u64,
    pub non2xx: u64,
    pub sockerr: u64,
    /// Successes counted by the script itself (delete, populate), with their active time.
    pub ok: u64,
    pub active_s: f64,
    pub duration_s: f64,
    pub line: String,
}

fn parse_summary(stdout: &str) -> Res<Run> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SUMMARY "))
        .ok_or_else(|| format!("wrk printed no SUMMARY line:\n{stdout}"))?;
    let get = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let mut run = Run {
        p50: get("p50_ms"),
        p99: get("p99_ms"),
        p999: get("p999_ms"),
        max: get("max_ms"),
        requests: get("requests") as u64,
        non2xx: get("non2xx") as u64,
        sockerr: get("sockerr") as u64,
        ok: get("ok") as u64,
        active_s: get("active_s"),
        duration_s: get("duration_s"),
        line: line.trim_start_matches("SUMMARY ").to_owned(),
        ..Run::default()
    };
    run.rps = if run.ok > 0 && run.active_s > 0.0 {
        run.ok as f64 / run.active_s
    } else if run.duration_s > 0.0 {
        run.requests as f64 / run.duration_s
    } else {
        0.0
    };
    Ok(run)
}

/// A wrk invocation.
#[derive(Clone)]
pub struct Wrk {
    pub threads: u32,
    pub connections: u32,
    pub secs: f64,
    pub script: PathBuf,
    pub url: String,
    pub env: Vec<(String, String)>,
}

impl Wrk {
    /// The command line, as it appears in the report.
    pub fn command(&self) -> String {
        let env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k != "MARK" && k != "OUT")
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    Path::new(v)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        // Only file arguments are shortened to their name (BASE is a URL path).
                        .filter(|_| k == "POOL")
                        .unwrap_or_else(|| v.clone())
                )
            })
            .collect();
        format!(
            "{}wrk -t{} -c{} -d{}s --timeout 10s -s {} {}",
            if env.is_empty() {
                String::new()
            } else {
                env.join(" ") + " "
            },
            self.threads,
            self.connections,
            self.secs,
            self.script
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.url
        )
    }

    fn spawn(&self) -> Res<Child> {
        Command::new("wrk")
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.secs.ceil() as u64))
            .arg("--timeout")
            .arg("10s")
            .arg("-s")
            .arg(&self.script)
            .arg(&self.url)
            .env("THREADS", self.threads.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run wrk: {e}"))
    }

    /// Run to the end of its duration.
    pub fn run(&self) -> Res<Run> {
        let out = self
            .spawn()?
            .wait_with_output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_summary(&stdout).map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Start in the background (a load running beside another measurement).
    pub fn start(&self) -> Res<Child> {
        self.spawn()
    }

    /// Run a script that stops itself (delete, populate): once every thread has left its mark
    /// file `{mark}.{tid}`, interrupt wrk so it reports at once instead of sleeping out `-d`.
    pub fn run_until_marked(&self, mark: &Path) -> Res<Run> {
        let mut child = self.spawn()?;
        let deadline = Instant::now() + Duration::from_secs_f64(self.secs + 5.0);
        loop {
            let done = (1..=self.threads)
                .filter(|t| Path::new(&format!("{}.{t}", mark.display())).exists())
                .count() as u32;
            if done == self.threads || Instant::now() > deadline {
                let _ = Command::new("kill")
                    .arg("-INT")
                    .arg(child.id().to_string())
                    .status();
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_summary(&stdout).map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Collect the background wrk's figures.
pub fn finish(child: Child) -> Res<Run> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    parse_summary(&String::from_utf8_lossy(&out.stdout))
}

/// Machine facts for the report.
pub fn machine() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let virt = sh("systemd-detect-virt 2>/dev/null || lscpu | sed -n 's/^Hypervisor vendor: *//p'")
        .unwrap_or_default();
    vec![
        ("nproc".into(), nproc),
        ("memory".into(), mem),
        ("CPU".into(), cpu),
        ("kernel".into(), sh("uname -sr").unwrap_or_default()),
        (
            "virtualisation".into(),
            if virt.is_empty() {
                "none detected".into()
            } else {
                virt
            },
        ),
        (
            "load average at start".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "rustc".into(),
            sh("rustc --version").unwrap_or_else(|_| "?".into()),
        ),
    ]
}
