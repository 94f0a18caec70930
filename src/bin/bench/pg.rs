//! The PostgreSQL side of the bench: a private cluster (the test suites' own harness), the
//! schema applied with `registrar migrate`, two registrar replicas on one database, and the
//! two-replica runs (two wrk processes, one per replica, started together and summed).

use crate::pg_cluster::Cluster;
use crate::tools::{self, Res, Run, Server};
use crate::{Bench, AUDIT_OFF, HOOKED_PG, MIN_ARGON2, OFF_PG, REPLICAS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Names of the two replicas in the report; `A` also stands for "one replica".
pub const A: &str = "registrar on PostgreSQL (argon2 min)";
pub const B: &str = "registrar on PostgreSQL, replica B";
pub const BOTH: &str = "two replicas (A + B), one database";

/// The running PostgreSQL set-up.
pub struct Pg {
    cluster: Cluster,
    pub a: Server,
    pub b: Server,
    /// Clients registered on A (read and updated on either replica).
    pub pool: PathBuf,
    /// `--audit`: a registrar with one webhook on a database of its own, and its update pool.
    pub hooked: Option<Server>,
    pub hooked_pool: PathBuf,
    /// `--audit`: the baseline, a registrar with `audit.enabled = false` and no webhook on a
    /// database of its own, and its update pool.
    pub off: Option<(Server, PathBuf)>,
    /// `postgres --version` of the cluster's binaries.
    pub version: String,
    /// Each registrar's name and admin port, for its `/metrics` (group-commit sizes).
    admin: Vec<(String, u16)>,
}

/// Settings for an admin listener on a free port (a token is what turns it on), so `/metrics`
/// can be read; no request of the measured runs goes to it.
fn admin_env(name: &str, admin: &mut Vec<(String, u16)>) -> Res<Vec<(String, String)>> {
    let port = tools::free_port()?;
    admin.push((name.to_owned(), port));
    Ok(vec![
        ("REGISTRAR_ADMIN__PORT".to_owned(), port.to_string()),
        (
            "REGISTRAR_ADMIN__TOKENS".to_owned(),
            "[{name=\"bench\",token=\"bench-metrics-not-a-secret\",scopes=[\"metrics\"]}]"
                .to_owned(),
        ),
    ])
}

/// The harness panics (with a message that says how to install the binaries) where the tests
/// want a failure; here that becomes the bench's error.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Res<T> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| format!("{what} failed (the message above says why)"))
}

/// Settings of every registrar on the cluster: the bench's base settings, minimum argon2 (as
/// the sled instance it is compared with) and the database.
fn env(url: &str) -> Vec<(String, String)> {
    crate::with_base(&MIN_ARGON2)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([
            (
                "REGISTRAR_STORAGE__BACKEND".to_owned(),
                "postgres".to_owned(),
            ),
            (
                "REGISTRAR_STORAGE__POSTGRES__URL".to_owned(),
                url.to_owned(),
            ),
        ])
        .collect()
}

/// A registrar named `name` with the cluster settings plus `extra` on a new database of its
/// own (migrated), and a pool of `clients` registered through it (`pool-pg-<tag>`).
fn own_database(
    b: &mut Bench,
    cluster: &Cluster,
    name: &str,
    tag: &str,
    extra: &[(String, String)],
    clients: usize,
) -> Res<(Server, PathBuf)> {
    let url = guarded("creating the bench database", || cluster.new_database())?;
    let env: Vec<(String, String)> = self::env(&url)
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
    migrate(b, &env)?;
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = b.start_registrar(name, &b.work.join(format!("data-pg-{tag}")), &pairs)?;
    let pool = b.work.join(format!("pool-pg-{tag}"));
    b.populate_http(&server, clients, &pool)?;
    Ok((server, pool))
}

impl Pg {
    /// Start the cluster (fsync on: registrations are durable), create a database, migrate it
    /// and start both replicas on it; register `clients` through A for the read/update pool.
    /// With `hook_env` (`--audit`), also a third registrar with those settings (one webhook) and
    /// a fourth with the audit trail off, each on a database of its own with a pool of its own.
    pub fn start(b: &mut Bench, clients: usize, hook_env: Option<&[(String, String)]>) -> Res<Pg> {
        eprintln!("bench: starting a private PostgreSQL cluster");
        let cluster = guarded("starting a private PostgreSQL cluster", || {
            Cluster::private(true)
        })?;
        let url = guarded("creating the bench database", || cluster.new_database())?;
        let version = tools::sh(
            "\"${REGISTRAR_TEST_PG_BIN:-/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -1)/bin}/postgres\" --version",
        )
        .map(|v| v.replace("postgres (PostgreSQL)", "PostgreSQL"))
        .unwrap_or_else(|_| "PostgreSQL (version unknown)".into());
        b.report.command(format!(
            "initdb -U postgres --auth=trust -E UTF8 --locale=C; postgres -p <free port> -c listen_addresses=127.0.0.1 -c max_connections=300   # private PostgreSQL cluster ({version}, fsync on; as nobody when run as root; tests/support/postgres.rs)"
        ));
        let env = env(&url);
        migrate(b, &env)?;
        let mut admin = Vec::new();
        let mut started = Vec::new();
        for (name, dir) in [(A, "data-pg-a"), (B, "data-pg-b")] {
            let env: Vec<(String, String)> = env
                .iter()
                .cloned()
                .chain(admin_env(name, &mut admin)?)
                .collect();
            let pairs: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            started.push(b.start_registrar(name, &b.work.join(dir), &pairs)?);
        }
        let (Some(replica), Some(a)) = (started.pop(), started.pop()) else {
            return Err("two replicas".into());
        };
        let pool = b.work.join("pool-pg");
        b.populate_http(&a, clients, &pool)?;
        let (hooked, hooked_pool, off) = match hook_env {
            Some(extra) => {
                let extra: Vec<(String, String)> = extra
                    .iter()
                    .cloned()
                    .chain(admin_env(HOOKED_PG, &mut admin)?)
                    .collect();
                let (h, h_pool) = own_database(b, &cluster, HOOKED_PG, "hook", &extra, clients)?;
                let mut off = vec![(AUDIT_OFF.0.to_owned(), AUDIT_OFF.1.to_owned())];
                off.extend(admin_env(OFF_PG, &mut admin)?);
                let o = own_database(b, &cluster, OFF_PG, "off", &off, clients)?;
                (Some(h), h_pool, Some(o))
            }
            None => (None, b.work.join("pool-pg-hook"), None),
        };
        Ok(Pg {
            cluster,
            a,
            b: replica,
            pool,
            hooked,
            hooked_pool,
            off,
            version,
            admin,
        })
    }

    /// Stop both replicas, then the cluster; first print each registrar's mean group-commit
    /// size over the whole run (`registrar_store_commit_batch_size`).
    pub fn stop(self) {
        for (name, port) in &self.admin {
            group_sizes(name, *port);
        }
        self.a.stop();
        self.b.stop();
        if let Some(h) = self.hooked {
            h.stop();
        }
        if let Some((o, _)) = self.off {
            o.stop();
        }
        let cluster = self.cluster;
        let _ = guarded("stopping the PostgreSQL cluster", || {
            cluster.stop_immediate()
        });
    }

    /// `script` on both replicas at once: two wrk processes, each with half of the threads and
    /// connections of a one-replica run, started together; requests summed, latency the worse
    /// of the two. Recorded in the replicas table.
    pub fn both(
        &self,
        b: &mut Bench,
        workload: &str,
        script: &str,
        pool: Option<&Path>,
    ) -> Res<Run> {
        let mut wrks = [b.wrk(script, &self.a, pool), b.wrk(script, &self.b, pool)];
        for w in wrks.iter_mut() {
            w.threads = (w.threads / 2).max(1);
            w.connections = (w.connections / 2).max(1);
        }
        let children = wrks.iter().map(|w| w.start()).collect::<Res<Vec<_>>>()?;
        let runs = children
            .into_iter()
            .map(tools::finish)
            .collect::<Res<Vec<_>>>()?;
        let sum = combine(&runs);
        eprintln!(
            "bench: {workload:<28} {BOTH:<22} {:>9.0} req/s  p99 {:>7.2} ms  non2xx {}",
            sum.rps, sum.p99, sum.non2xx
        );
        let cmd = format!("{}   & {}", wrks[0].command(), wrks[1].command());
        b.report.add_in(REPLICAS, workload, BOTH, sum.clone(), cmd);
        Ok(sum)
    }
}

/// Print the mean size of the group commits `server` made (its `/metrics`), when it made any.
fn group_sizes(name: &str, admin_port: u16) {
    let Ok(text) = tools::sh(&format!(
        "curl -s http://127.0.0.1:{admin_port}/metrics | grep '^registrar_store_commit_batch_size_' || true"
    )) else {
        return;
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        value("registrar_store_commit_batch_size_sum"),
        value("registrar_store_commit_batch_size_count"),
    );
    if count > 0.0 {
        eprintln!(
            "bench: {name:<50} {count:.0} group commits of {:.2} writes on average",
            sum / count
        );
    }
}

/// Two runs taken at the same time as one: throughput and counts add up, each latency figure
/// is the larger of the two (a bound, since the histograms cannot be merged from summaries).
fn combine(runs: &[Run]) -> Run {
    let max = |f: fn(&Run) -> f64| runs.iter().map(f).fold(0.0, f64::max);
    Run {
        rps: runs.iter().map(|r| r.rps).sum(),
        p50: max(|r| r.p50),
        p99: max(|r| r.p99),
        p999: max(|r| r.p999),
        max: max(|r| r.max),
        requests: runs.iter().map(|r| r.requests).sum(),
        non2xx: runs.iter().map(|r| r.non2xx).sum(),
        sockerr: runs.iter().map(|r| r.sockerr).sum(),
        ok: runs.iter().map(|r| r.ok).sum(),
        active_s: max(|r| r.active_s),
        duration_s: max(|r| r.duration_s),
        line: runs
            .iter()
            .map(|r| r.line.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

/// `registrar migrate` on the bench database, as an operator runs it before the replicas.
fn migrate(b: &mut Bench, env: &[(String, String)]) -> Res<()> {
    let out = std::process::Command::new(&b.bin)
        .arg("migrate")
        .env(
            "REGISTRAR_STORAGE__DATA_DIR",
            b.work.join("data-pg-migrate"),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .map_err(|e| format!("cannot run {} migrate: {e}", b.bin.display()))?;
    tools::succeeded("registrar migrate", out)?;
    b.report.command(
        "REGISTRAR_STORAGE__BACKEND=postgres REGISTRAR_STORAGE__POSTGRES__URL=postgres://postgres@127.0.0.1:<cluster port>/<fresh database> target/release/registrar migrate"
            .into(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_simultaneous_runs_add_throughput_and_keep_the_worse_latency() {
        let a = Run {
            rps: 100.0,
            p99: 2.0,
            requests: 500,
            non2xx: 1,
            ..Run::default()
        };
        let b = Run {
            rps: 50.0,
            p99: 3.0,
            requests: 250,
            ..Run::default()
        };
        let sum = combine(&[a, b]);
        assert_eq!(sum.rps, 150.0);
        assert_eq!(sum.p99, 3.0);
        assert_eq!(sum.requests, 750);
        assert_eq!(sum.non2xx, 1);
    }
}
