//! The schema of the PostgreSQL backend and its migrator (`registrar migrate`).
//!
//! Plain SQL files under `migrations/postgres/`, one statement each: CockroachDB has no
//! transactional DDL, so a step cannot be grouped with others, and every step is written to be
//! re-runnable (`IF NOT EXISTS`) in case a run stopped between a step and its bookkeeping row.
//! No advisory locks (CockroachDB has none; the reason sqlx's migrator is not used): run
//! `registrar migrate` from one place before starting replicas.

use super::{describe, Client};
use crate::store::OpenError;

/// One schema step.
pub struct Migration {
    /// Strictly increasing; recorded in `registrar_schema_migrations` once applied.
    pub version: i64,
    /// File name, for the record and the log.
    pub name: &'static str,
    /// Exactly one SQL statement.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:expr, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../../../migrations/postgres/", $file)),
        }
    };
}

/// Every step, in order. The first creates the table that records the others.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_schema_migrations.sql"),
    migration!(2, "0002_clients.sql"),
    migration!(3, "0003_clients_rat_tag.sql"),
    migration!(4, "0004_counters.sql"),
    migration!(5, "0005_server_keys.sql"),
    migration!(6, "0006_clients_previous_rat_tag.sql"),
    migration!(7, "0007_clients_previous_rat_tag_index.sql"),
    migration!(8, "0008_audit_records.sql"),
    migration!(9, "0009_audit_head.sql"),
    migration!(10, "0010_webhook_outbox.sql"),
    migration!(11, "0011_webhook_outbox_seq.sql"),
    migration!(12, "0012_webhook_outbox_line.sql"),
];

/// The schema version this build needs.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Apply every step not yet recorded; returns the names of those applied now (empty when the
/// schema was current: running it again is harmless).
pub async fn apply(client: &Client, now: i64) -> Result<Vec<&'static str>, OpenError> {
    let failed = |m: &Migration, e: tokio_postgres::Error| {
        OpenError::Database(format!("migration {}: {}", m.name, describe(&e)))
    };
    let first = &MIGRATIONS[0];
    client
        .batch_execute(first.sql)
        .await
        .map_err(|e| failed(first, e))?;
    let applied: Vec<i64> = client
        .query("SELECT version FROM registrar_schema_migrations", &[])
        .await
        .map_err(|e| failed(first, e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(newer) = applied.iter().copied().filter(|v| *v > latest()).max() {
        return Err(newer_schema(newer));
    }
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        client
            .batch_execute(m.sql)
            .await
            .map_err(|e| failed(m, e))?;
        client
            .execute(
                "INSERT INTO registrar_schema_migrations (version, name, applied_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
                &[&m.version, &m.name, &now],
            )
            .await
            .map_err(|e| failed(m, e))?;
        tracing::info!(migration = m.name, "applied");
        done.push(m.name);
    }
    Ok(done)
}

fn newer_schema(version: i64) -> OpenError {
    OpenError::Schema(format!(
        "the database schema is at version {version}, newer than this registrar knows ({}); run a registrar at least as new as the one that migrated it",
        latest()
    ))
}

/// Refuse to serve on a schema that is missing, behind or ahead of this build.
pub async fn check(client: &Client) -> Result<(), OpenError> {
    let version: Option<i64> = match client
        .query_one("SELECT max(version) FROM registrar_schema_migrations", &[])
        .await
    {
        Ok(row) => row.get(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(e) => return Err(OpenError::Database(describe(&e))),
    };
    match version {
        None => Err(OpenError::Schema(
            "the database has no registrar schema yet; run `registrar migrate` (or set storage.postgres.migrate_on_start = true)".into(),
        )),
        Some(v) if v < latest() => Err(OpenError::Schema(format!(
            "the database schema is at version {v}, this registrar needs {}; run `registrar migrate`",
            latest()
        ))),
        Some(v) if v > latest() => Err(newer_schema(v)),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_is_one_statement_in_version_order_and_portable() {
        let mut previous = 0;
        for m in MIGRATIONS {
            assert!(m.version > previous, "{} out of order", m.name);
            previous = m.version;
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{} does not carry its version",
                m.name
            );
            let code: String = m
                .sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(code.matches(';').count(), 1, "{}: one statement", m.name);
            assert!(code.trim_end().ends_with(';'), "{}", m.name);
            // CockroachDB: INT is 64-bit there and 32-bit in PostgreSQL; SERIAL differs too.
            let upper = code.to_uppercase();
            for banned in [" INT ", " INT,", " INTEGER", "SERIAL", "ADVISORY"] {
                assert!(!upper.contains(banned), "{} uses {banned}", m.name);
            }
        }
    }
}
