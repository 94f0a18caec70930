//! The audit trail and webhook outbox on PostgreSQL (`migrations/postgres/0008`–`0012`).
//!
//! - **One chain across replicas.** Appending locks the single `audit_head` row (an upsert, so
//!   no seed row is needed) inside the transaction of the change; a second replica's commit
//!   waits for it and then appends after it. The lock is held only to the end of a transaction
//!   that already writes the client row.
//! - **One replica per delivery.** `outbox_pending` claims the heads of the (hook, client) lines
//!   with `FOR UPDATE SKIP LOCKED` and a lease (`locked_until`, database time): another replica
//!   skips claimed rows, and takes a row over once its lease ran out (its replica died
//!   mid-delivery). Only line heads are claimed, so per-client order holds across replicas.

use super::{attempt_error, describe, store_error, Attempt, PostgresStore};
use crate::events::audit::{plan_prune, seal, AuditEntry, AuditRecord, ChainHead, Checkpoint};
use crate::events::webhook::{OutboxOp, OutboxRow};
use crate::events::{AuditLog, OutboxQueue, StoredAudit};
use crate::store::{BoxFuture, StoreError, WriteBatch};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

/// How long a claimed delivery is left to the replica that claimed it, in seconds: more than
/// one attempt's timeout, so a live replica is never overtaken.
const LEASE_SECS: i64 = 60;

const LOCK_HEAD: &str = "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, $1) \
     ON CONFLICT (id) DO UPDATE SET id = audit_head.id RETURNING seq, hash";
const NEXT_OUTBOX_SEQ: &str = "INSERT INTO webhook_outbox_seq (id, value) VALUES (1, 1) \
     ON CONFLICT (id) DO UPDATE SET value = webhook_outbox_seq.value + 1 RETURNING value";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| corrupt("sequence number", n))
}

/// Seal `entries` onto the chain inside `tx`.
async fn append(tx: &Transaction<'_>, entries: &[AuditEntry]) -> Result<(), Attempt> {
    if entries.is_empty() {
        return Ok(());
    }
    let genesis = ChainHead::default().hash;
    let row = tx
        .query_one(LOCK_HEAD, &[&genesis])
        .await
        .map_err(attempt_error)?;
    let seq: i64 = row.get(0);
    let mut head = ChainHead {
        seq: u64::try_from(seq).unwrap_or_default(),
        hash: row.get(1),
    };
    for entry in entries {
        let record = seal(&head, entry.clone());
        let json = serde_json::to_string(&record)
            .map_err(|e| Attempt::Failed(corrupt("audit record", e)))?;
        let seq = to_i64(record.seq).map_err(Attempt::Failed)?;
        tx.execute(
            "INSERT INTO audit_records (seq, time, record) VALUES ($1, $2, $3)",
            &[&seq, &record.time, &json],
        )
        .await
        .map_err(attempt_error)?;
        head = record.head();
    }
    let seq = to_i64(head.seq).map_err(Attempt::Failed)?;
    tx.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &head.hash],
    )
    .await
    .map_err(attempt_error)?;
    Ok(())
}

fn encode(row: &OutboxRow) -> Result<String, Attempt> {
    serde_json::to_string(row).map_err(|e| Attempt::Failed(corrupt("outbox row", e)))
}

fn decode(json: &str) -> Result<OutboxRow, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt("outbox row", e))
}

/// Rewrite one row after `edit`, clearing its lease; nothing when the row is gone.
async fn edit_row(
    tx: &Transaction<'_>,
    seq: u64,
    edit: impl FnOnce(&mut OutboxRow),
) -> Result<(), Attempt> {
    let key = to_i64(seq).map_err(Attempt::Failed)?;
    let Some(found) = tx
        .query_opt(
            "SELECT row FROM webhook_outbox WHERE seq = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(attempt_error)?
    else {
        return Ok(());
    };
    let mut row = decode(&found.get::<_, String>(0)).map_err(Attempt::Failed)?;
    edit(&mut row);
    tx.execute(
        "UPDATE webhook_outbox SET dead = $2, locked_until = 0, row = $3 WHERE seq = $1",
        &[&key, &row.dead, &encode(&row)?],
    )
    .await
    .map_err(attempt_error)?;
    Ok(())
}

/// Delete the delivered rows `seqs` in one statement (a worker round reports up to its whole
/// batch at once; one `DELETE` per row was a round trip each under the same transaction).
async fn delete_delivered(tx: &Transaction<'_>, seqs: &mut Vec<i64>) -> Result<(), Attempt> {
    if seqs.is_empty() {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM webhook_outbox WHERE seq = ANY($1::INT8[])",
        &[&*seqs],
    )
    .await
    .map_err(attempt_error)?;
    seqs.clear();
    Ok(())
}

/// Apply outbox operations inside `tx` (semantics of the memory store's `EventState::apply`).
/// A run of `Delivered` is one statement; any other operation first applies the run before it,
/// so operations still take effect in order.
pub(super) async fn apply_outbox(tx: &Transaction<'_>, ops: &[OutboxOp]) -> Result<(), Attempt> {
    let mut delivered = Vec::new();
    for op in ops {
        if !matches!(op, OutboxOp::Delivered { .. }) {
            delete_delivered(tx, &mut delivered).await?;
        }
        match op {
            OutboxOp::Enqueue(row) => {
                let seq: i64 = tx
                    .query_one(NEXT_OUTBOX_SEQ, &[])
                    .await
                    .map_err(attempt_error)?
                    .get(0);
                let mut row = row.clone();
                row.seq = u64::try_from(seq).unwrap_or_default();
                row.dead = false;
                tx.execute(
                    "INSERT INTO webhook_outbox (seq, hook, client_id, dead, locked_until, row) \
                     VALUES ($1, $2, $3, false, 0, $4)",
                    &[&seq, &row.hook, &row.client_id, &encode(&row)?],
                )
                .await
                .map_err(attempt_error)?;
            }
            OutboxOp::Delivered { seq } => delivered.push(to_i64(*seq).map_err(Attempt::Failed)?),
            OutboxOp::Retry {
                seq,
                attempts,
                next_attempt_at,
                last_error,
            } => {
                edit_row(tx, *seq, |r| {
                    r.retried(*attempts, *next_attempt_at, last_error)
                })
                .await?
            }
            OutboxOp::DeadLetter {
                seq,
                attempts,
                last_error,
            } => edit_row(tx, *seq, |r| r.dead_lettered(*attempts, last_error)).await?,
            OutboxOp::Redeliver { seq, now } => {
                edit_row(tx, *seq, |r| {
                    if r.dead {
                        r.redelivered(*now)
                    }
                })
                .await?
            }
        }
    }
    delete_delivered(tx, &mut delivered).await
}

const ALLOCATE_OUTBOX_SEQS: &str = "INSERT INTO webhook_outbox_seq (id, value) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET value = webhook_outbox_seq.value + $1 RETURNING value";
const INSERT_AUDIT_RECORDS: &str = "INSERT INTO audit_records (seq, time, record) \
     SELECT * FROM UNNEST($1::INT8[], $2::INT8[], $3::TEXT[])";
const UPDATE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
const INSERT_OUTBOX_ROWS: &str = "INSERT INTO webhook_outbox (seq, hook, client_id, dead, \
     locked_until, row) SELECT s, h, c, false, 0, r \
     FROM UNNEST($1::INT8[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) AS u (s, h, c, r)";

/// The audit entries and enqueued outbox rows of a group's applied batches (`super::group`),
/// written together: the audit head locked once and the entries sealed onto it in batch order,
/// one sequence range taken for the outbox rows, each table one multi-row insert.
#[derive(Default)]
pub(super) struct Seal<'a> {
    entries: Vec<&'a AuditEntry>,
    rows: Vec<&'a OutboxRow>,
}

impl<'a> Seal<'a> {
    /// Add the events of an applied batch (its outbox enqueues; other outbox operations are
    /// applied with the batch).
    pub(super) fn add(&mut self, batch: &'a WriteBatch) {
        self.entries.extend(&batch.audit);
        self.rows
            .extend(batch.outbox.iter().filter_map(|op| match op {
                OutboxOp::Enqueue(row) => Some(row),
                _ => None,
            }));
    }

    /// Write them in `tx`: three round trips whatever the group's size (head lock and sequence
    /// range together, then the inserts and the head update together).
    pub(super) async fn write(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), Attempt> {
        if self.entries.is_empty() && self.rows.is_empty() {
            return Ok(());
        }
        let genesis = ChainHead::default().hash;
        let lock_head = tx.prepare_cached(LOCK_HEAD).await.map_err(attempt_error)?;
        let allocate = tx
            .prepare_cached(ALLOCATE_OUTBOX_SEQS)
            .await
            .map_err(attempt_error)?;
        let insert_audit = tx
            .prepare_cached(INSERT_AUDIT_RECORDS)
            .await
            .map_err(attempt_error)?;
        let update_head = tx
            .prepare_cached(UPDATE_HEAD)
            .await
            .map_err(attempt_error)?;
        let insert_outbox = tx
            .prepare_cached(INSERT_OUTBOX_ROWS)
            .await
            .map_err(attempt_error)?;
        let count = i64::try_from(self.rows.len())
            .map_err(|e| Attempt::Failed(corrupt("outbox rows", e)))?;
        // Head first, then the outbox sequence: the lock order of the single-batch path.
        let head = async {
            match self.entries.is_empty() {
                true => Ok(None),
                false => tx.query_one(&lock_head, &[&genesis]).await.map(Some),
            }
        };
        let last = async {
            match self.rows.is_empty() {
                true => Ok(None),
                false => tx.query_one(&allocate, &[&count]).await.map(Some),
            }
        };
        let (head, last) = futures_util::future::join(head, last).await;
        let (head, last) = (head.map_err(attempt_error)?, last.map_err(attempt_error)?);

        let (mut seqs, mut times, mut records) = (Vec::new(), Vec::new(), Vec::new());
        let mut new_head = None;
        if let Some(row) = head {
            let seq: i64 = row.get(0);
            let mut chain = ChainHead {
                seq: u64::try_from(seq).unwrap_or_default(),
                hash: row.get(1),
            };
            for entry in &self.entries {
                let record = seal(&chain, (*entry).clone());
                records.push(
                    serde_json::to_string(&record)
                        .map_err(|e| Attempt::Failed(corrupt("audit record", e)))?,
                );
                seqs.push(to_i64(record.seq).map_err(Attempt::Failed)?);
                times.push(record.time);
                chain = record.head();
            }
            new_head = Some((to_i64(chain.seq).map_err(Attempt::Failed)?, chain.hash));
        }
        let (mut out_seqs, mut hooks, mut clients, mut bodies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Some(row) = last {
            let last: i64 = row.get(0);
            for (i, row) in self.rows.iter().enumerate() {
                let seq = last - count + 1 + i64::try_from(i).unwrap_or(i64::MAX);
                let mut row = (*row).clone();
                row.seq = u64::try_from(seq).unwrap_or_default();
                row.dead = false;
                bodies.push(encode(&row)?);
                out_seqs.push(seq);
                hooks.push(row.hook);
                clients.push(row.client_id);
            }
        }
        let audit = async {
            match &new_head {
                None => Ok(0),
                Some((seq, hash)) => {
                    let rows: [&(dyn ToSql + Sync); 3] = [&seqs, &times, &records];
                    let head: [&(dyn ToSql + Sync); 2] = [seq, hash];
                    let insert = tx.execute(&insert_audit, &rows);
                    let update = tx.execute(&update_head, &head);
                    let (a, b) = futures_util::future::join(insert, update).await;
                    a.and(b)
                }
            }
        };
        let outbox = async {
            match out_seqs.is_empty() {
                true => Ok(0),
                false => {
                    tx.execute(&insert_outbox, &[&out_seqs, &hooks, &clients, &bodies])
                        .await
                }
            }
        };
        let (a, b) = futures_util::future::join(audit, outbox).await;
        a.map_err(attempt_error)?;
        b.map_err(attempt_error)?;
        Ok(())
    }
}

/// The events of a commit, inside its transaction (called by `try_commit`).
pub(super) async fn write(tx: &Transaction<'_>, batch: &WriteBatch) -> Result<(), Attempt> {
    append(tx, &batch.audit).await?;
    apply_outbox(tx, &batch.outbox).await
}

impl PostgresStore {
    /// Run `f` in one transaction, committed; serialization failures are not retried here
    /// (the callers, the worker and retention, come back on their next round).
    async fn in_transaction<T>(
        &self,
        f: impl for<'a> FnOnce(&'a Transaction<'a>) -> BoxFuture<'a, Result<T, Attempt>>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| store_error(&e))?;
        let out = f(&tx).await.map_err(|a| match a {
            Attempt::Failed(e) => e,
            Attempt::Retry(c) | Attempt::Ambiguous(c) => StoreError::Unavailable(c),
        })?;
        tx.commit()
            .await
            .map_err(|e| StoreError::Unavailable(format!("commit: {}", describe(&e))))?;
        Ok(out)
    }
}

impl AuditLog for PostgresStore {
    fn audit_scan(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
        Box::pin(async move {
            let after = to_i64(after)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .query(
                    "SELECT seq, record FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|row| StoredAudit {
                    key: u64::try_from(row.get::<_, i64>(0)).unwrap_or_default(),
                    record: serde_json::from_str::<AuditRecord>(&row.get::<_, String>(1))
                        .map_err(|e| e.to_string()),
                })
                .collect())
        })
    }

    fn audit_prune(
        &self,
        cutoff: i64,
        now: i64,
    ) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        Box::pin(async move {
            self.in_transaction(move |tx| {
                Box::pin(async move {
                    // The head first: appends wait, so the prefix read below is stable.
                    let genesis = ChainHead::default().hash;
                    tx.query_one(LOCK_HEAD, &[&genesis])
                        .await
                        .map_err(attempt_error)?;
                    let rows = tx
                        .query(
                            "SELECT record FROM audit_records WHERE time < $1 ORDER BY seq \
                             LIMIT 10000",
                            &[&cutoff],
                        )
                        .await
                        .map_err(attempt_error)?;
                    let old: Vec<AuditRecord> = rows
                        .iter()
                        .map_while(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
                        .collect();
                    let Some(plan) = plan_prune(&old, cutoff) else {
                        return Ok(None);
                    };
                    let through = to_i64(plan.pruned_through).map_err(Attempt::Failed)?;
                    tx.execute("DELETE FROM audit_records WHERE seq <= $1", &[&through])
                        .await
                        .map_err(attempt_error)?;
                    append(tx, &[AuditEntry::checkpoint(now, plan.clone())]).await?;
                    Ok(Some(plan))
                })
            })
            .await
        })
    }
}

impl OutboxQueue for PostgresStore {
    fn outbox_pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .query(
                    "UPDATE webhook_outbox SET locked_until = \
                       CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS INT8) + $2 \
                     WHERE seq = ANY(ARRAY(\
                       SELECT o.seq FROM webhook_outbox o \
                       WHERE NOT o.dead \
                         AND o.locked_until <= CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS INT8) \
                         AND o.seq = (SELECT min(p.seq) FROM webhook_outbox p \
                                      WHERE p.hook = o.hook AND p.client_id = o.client_id \
                                        AND NOT p.dead) \
                       ORDER BY o.seq LIMIT $1 FOR UPDATE SKIP LOCKED)) \
                     RETURNING row",
                    &[&limit, &LEASE_SECS],
                )
                .await?;
            let mut out = rows
                .iter()
                .map(|r| decode(&r.get::<_, String>(0)))
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by_key(|r| r.seq);
            Ok(out)
        })
    }

    fn outbox_dead(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        Box::pin(async move {
            let after = to_i64(after)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .query(
                    "SELECT row FROM webhook_outbox WHERE dead AND seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            rows.iter()
                .map(|r| decode(&r.get::<_, String>(0)))
                .collect()
        })
    }

    fn outbox_apply(&self, ops: Vec<OutboxOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.in_transaction(move |tx| Box::pin(async move { apply_outbox(tx, &ops).await }))
                .await
        })
    }
}
