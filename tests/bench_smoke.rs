//! The benchmark harness must not rot: run `bench --smoke` (one short round, tiny populations,
//! no peer, no targets asserted) against the freshly built server and check the report it writes.
//! wrk is installed by the harness itself (apt-get) when missing; a failed install fails here.

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

#[test]
fn bench_smoke_run_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--smoke", "--out"])
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
    // Every smoke run asserts durability for real: SIGKILL after acknowledged registrations.
    let durability = section(&report, "## Durability");
    assert!(
        durability.contains("every acknowledged registration was in the store"),
        "{durability}"
    );
    // No request failed in any measured run (last column of every row is non-2xx = 0).
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
    let targets = section(&report, "## Targets");
    for target in [
        "registration throughput (argon2 default) ÷ argon2 bound",
        "read p99 under hashing load ÷ idle read p99",
        "resident memory with 300 clients (MB)",
        "ready to serve after start with 1,000 clients (s)",
    ] {
        assert!(
            targets.contains(target),
            "missing target {target}:\n{targets}"
        );
    }
    let scale = section(&report, "## Scale");
    assert!(scale.contains("| 1,000 | "), "{scale}");
}
