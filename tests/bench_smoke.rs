//! The benchmark harness must not rot: run `bench --smoke` (one short round, tiny populations,
//! no peer, no targets asserted) against the freshly built server and check the report it writes.
//! wrk is installed by the harness itself (apt-get) when missing; a failed install fails here.
//! The run includes PostgreSQL (a private cluster, as the PostgreSQL test suites start one):
//! missing server binaries fail here with the message that says how to install them.

use std::process::Command;

fn section<'a>(report: &'a str, heading: &str) -> &'a str {
    let start = report
        .find(heading)
        .unwrap_or_else(|| panic!("report has no {heading:?} section:\n{report}"));
    let rest = &report[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The req/s cell of the table row for `workload` on `server`, as a number.
fn rps(table: &str, workload: &str, server: &str) -> f64 {
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| {workload} | {server}")))
        .unwrap_or_else(|| panic!("no row for {workload} on {server}:\n{table}"));
    let cell = row.split('|').nth(3).unwrap_or_default().trim();
    let first = cell.split_whitespace().next().unwrap_or_default();
    first
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("req/s cell {cell:?} is not a number in {row}"))
}

/// No request failed in any measured run of `table` (last column of every row is non-2xx = 0).
fn assert_no_failures(table: &str) {
    for row in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("argon2id bound"))
    {
        if row.starts_with("| workload") || row.starts_with("| ---") {
            continue;
        }
        let last = row
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default()
            .trim();
        assert_eq!(last, "0", "a run had failures: {row}");
    }
}

#[test]
fn bench_smoke_run_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--smoke", "--audit", "--out"])
        .arg(&out)
        .env("BENCH_SERVER_BIN", env!("CARGO_BIN_EXE_registrar"))
        .env("BENCH_WORK", dir.path().join("work"))
        .output()
        .expect("the bench binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench --smoke failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).expect("the report was written");

    assert!(report.starts_with("# Benchmarks"));
    assert!(report.contains("**Smoke run**"));
    for heading in [
        "## Machine",
        "## Targets",
        "## Scale",
        "## Memory",
        "## Commands",
    ] {
        assert!(report.contains(heading), "missing {heading}:\n{report}");
    }
    let machine = section(&report, "## Machine");
    assert!(machine.contains("| nproc | "), "{machine}");
    assert!(machine.contains("| kernel | Linux"), "{machine}");

    let table = section(&report, "## Throughput and latency");
    let min = "registrar (argon2 min)";
    for workload in ["registration", "read", "update", "delete", "mix 80/15/5"] {
        let r = rps(table, workload, min);
        assert!(r > 0.0, "{workload}: {r} req/s");
    }
    assert!(rps(table, "registration", "registrar (argon2 default)") > 0.0);
    // The admin API's authenticate on the default-argon2 instance, against the argon2 bound.
    assert!(
        rps(
            table,
            "authenticate (admin API)",
            "registrar (argon2 default)"
        ) > 0.0
    );
    // The loopback ceiling, measured with the read run's settings, serving one read's bytes.
    assert!(rps(table, "read", "loopback ceiling: static JSON (") > 0.0);
    // --audit: the instances with the audit trail off and with one webhook, registrations
    // and updates.
    for server in [
        "registrar (argon2 min), audit off",
        "registrar (argon2 min), audit + webhook",
    ] {
        for workload in ["registration", "update"] {
            assert!(rps(table, workload, server) > 0.0, "{workload} on {server}");
        }
    }
    // Every smoke run asserts durability for real: SIGKILL after acknowledged registrations.
    let durability = section(&report, "## Durability");
    assert!(
        durability.contains("every acknowledged registration was in the store"),
        "{durability}"
    );
    assert_no_failures(table);
    let targets = section(&report, "## Targets");
    for target in [
        "registration throughput (argon2 default) ÷ argon2 bound",
        "read p99 under hashing load ÷ idle read p99",
        "resident memory with 300 clients (MB)",
        "ready to serve after start with 1,000 clients (s)",
        "admin authenticate throughput (argon2 default) ÷ argon2 bound",
        "read throughput, registrar ÷ loopback ceiling (static-JSON actix handler, same round)",
        "audit + one webhook on ÷ off, sled: registration throughput",
        "audit + one webhook on ÷ off, sled: update throughput",
        "audit on ÷ off, sled: registration throughput",
        "audit on ÷ off, sled: update throughput",
    ] {
        assert!(
            targets.contains(target),
            "missing target {target}:\n{targets}"
        );
    }
    let scale = section(&report, "## Scale");
    assert!(scale.contains("| 1,000 | "), "{scale}");

    // The default run measures PostgreSQL too: a private cluster, `registrar migrate`, one
    // replica next to sled, then two replicas on the same database.
    assert!(machine.contains("| database | PostgreSQL"), "{machine}");
    let pg = section(&report, "## PostgreSQL");
    for workload in ["registration", "read", "update"] {
        let r = rps(pg, workload, "registrar on PostgreSQL (argon2 min)");
        assert!(r > 0.0, "PostgreSQL {workload}: {r} req/s");
    }
    for server in [
        "registrar on PostgreSQL (argon2 min), audit off",
        "registrar on PostgreSQL (argon2 min), audit + webhook",
    ] {
        for workload in ["registration", "update"] {
            let r = rps(pg, workload, server);
            assert!(r > 0.0, "PostgreSQL {workload} on {server}: {r} req/s");
        }
    }
    assert_no_failures(pg);
    let replicas = section(&report, "## Two replicas on one database");
    for workload in ["read", "registration"] {
        let r = rps(replicas, workload, "two replicas (A + B), one database");
        assert!(r > 0.0, "two replicas {workload}: {r} req/s");
    }
    assert_no_failures(replicas);
    for target in [
        "PostgreSQL backend: registration throughput, PostgreSQL ÷ sled",
        "PostgreSQL backend: read throughput, PostgreSQL ÷ sled",
        "PostgreSQL backend: update throughput, PostgreSQL ÷ sled",
        "PostgreSQL, two replicas on one database ÷ one replica: read throughput",
        "PostgreSQL, two replicas on one database ÷ one replica: registration throughput",
        "audit + one webhook on ÷ off, PostgreSQL: registration throughput",
        "audit + one webhook on ÷ off, PostgreSQL: update throughput",
        "audit on ÷ off, PostgreSQL: registration throughput",
        "audit on ÷ off, PostgreSQL: update throughput",
    ] {
        assert!(
            targets.contains(target),
            "missing target {target}:\n{targets}"
        );
    }
    // The webhook was really on: the receiver got deliveries (registrations and updates).
    let audit = section(&report, "## Audit trail and webhooks");
    let delivered: u64 = audit
        .split("**")
        .nth(3)
        .unwrap_or_default()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no delivery count in {audit}"));
    assert!(
        delivered > 0,
        "the receiver got no webhook delivery: {audit}"
    );
    let commands = section(&report, "## Commands");
    assert!(
        commands.contains("target/release/registrar migrate"),
        "{commands}"
    );
}

/// Run the bench with `args` (refused before it starts anything): exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .output()
        .expect("the bench binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn bench_rejects_an_unknown_backend() {
    let (code, stderr) = refused(&["--backend", "mysql"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--backend takes both, sled or postgres"),
        "{stderr}"
    );
}

/// `bench --receiver DIR` ends when it is sent SIGTERM (actix stops its server), printing its
/// final count, instead of outliving its run and writing into the next run's output file.
#[test]
fn bench_receiver_exits_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--receiver")
        .arg(dir.path().join("tls"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench --receiver");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("utf-8");
    assert!(first.starts_with("port "), "first line: {first:?}");
    // actix installs its signal handlers when the server is first polled, which may be just
    // after the port line; the first periodic count (5 s later) proves the server is running.
    let second = lines.next().expect("a second line").expect("utf-8");
    assert_eq!(second, "delivered 0");
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench --receiver still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("delivered 0"),
        "{rest:?}"
    );
}
