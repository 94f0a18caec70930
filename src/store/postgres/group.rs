//! Group commit: concurrent `ClientStore::commit` calls share one transaction and one COMMIT.
//!
//! Each `commit` queues its `WriteBatch` and waits. A committer task takes everything queued, up
//! to `GROUP_MAX` batches (a *group*), and applies them in ONE transaction: each batch under its
//! own `SAVEPOINT`, its statements pipelined (sent together, one round trip), so a batch whose
//! compare-and-swap, insert or counter check fails is rolled back alone and answered with its
//! own error (`Conflict`, `CounterExhausted`) while the others go on. Then the audit entries of
//! every batch applied are sealed onto the chain under ONE lock of `audit_head` and written with
//! one multi-row insert, the webhook outbox rows likewise (one `webhook_outbox_seq` lock for all),
//! and the transaction commits once. Only after that COMMIT returned is any waiter answered.
//!
//! Locks within a group are taken batch after batch, each batch in the store's order (its
//! counters in key order, then its client row), then the audit head, then the outbox sequence.
//! Two groups (of two committers or two replicas) can still wait on each other in a cycle when
//! they hold rows of each other's batches; PostgreSQL then aborts one (40P01). Whenever a group
//! transaction fails before its COMMIT (deadlock, serialization failure, lost connection, any
//! error not owned by one batch), nothing of it was committed and every batch of it is committed
//! alone on the single-batch path, with that path's retries. When the COMMIT's outcome is unknown
//! (connection lost during COMMIT, 40003), each batch applied in the group is settled by re-reading
//! its row (`settle`) and committed alone if it was not applied; a batch that failed within the
//! group was rolled back to its savepoint and is committed alone too.

use super::events::{self, Seal};
use super::{
    counter_key, describe, previous_tag, retryable, revision, store_error, tag, written, Attempt,
    Inner, PostgresStore, Prepared,
};
use crate::store::{Change, CounterOp, StoreError, WriteBatch};
use futures_util::future::{join_all, BoxFuture};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// The most batches one group transaction applies. Each batch is a subtransaction
/// (`SAVEPOINT`); PostgreSQL keeps up to 64 of them per transaction in shared memory, beyond
/// which other sessions' snapshots get slower (subtransaction overflow).
pub(super) const GROUP_MAX: usize = 64;

/// A waiting `commit`: its batch and where to send the outcome.
pub(super) struct Queued {
    pub(super) batch: WriteBatch,
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// How many groups one replica has in flight: one applies its batches while another waits for
/// its COMMIT (the audit head serializes the audited ones anyway).
pub(super) fn committers(pool_size: usize) -> usize {
    (pool_size / 8).clamp(1, 2)
}

/// Start `count` committer tasks on the queue; they end with the store (the last sender).
pub(super) fn spawn(inner: Weak<Inner>, queue: mpsc::UnboundedReceiver<Queued>, count: usize) {
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..count {
        let (inner, queue) = (inner.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                let mut group = Vec::new();
                {
                    let mut queue = queue.lock().await;
                    let Some(first) = queue.recv().await else {
                        return;
                    };
                    group.push(first);
                    while group.len() < GROUP_MAX {
                        match queue.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                }
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                PostgresStore { inner }.commit_group(group).await;
            }
        });
    }
}

/// How a group transaction ended, when not with its COMMIT returned.
enum GroupFailure {
    /// Known not committed: commit every batch alone.
    NotApplied(String),
    /// The COMMIT's outcome is unknown; the outcomes each batch had inside the group.
    Ambiguous(String, Vec<Result<(), StoreError>>),
}

fn not_applied(e: &tokio_postgres::Error) -> GroupFailure {
    GroupFailure::NotApplied(describe(e))
}

const NO_PARAMS: &[&(dyn ToSql + Sync)] = &[];

/// What each pipelined statement of a batch was.
#[derive(Clone, Copy)]
enum Step {
    /// Releasing the previous batch's savepoint, or taking this one's: the group's own.
    Savepoint,
    Counter(usize),
    Record,
}

impl PostgresStore {
    /// Apply `group` and answer each waiter (after the COMMIT returned, or its batch failed).
    async fn commit_group(&self, group: Vec<Queued>) {
        let mut batches = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut encoded = Vec::with_capacity(group.len());
        for q in group {
            match written(&q.batch) {
                Ok(w) => {
                    encoded.push(w);
                    batches.push(q.batch);
                    replies.push(q.reply);
                }
                Err(e) => {
                    let _ = q.reply.send(Err(e));
                }
            }
        }
        if batches.is_empty() {
            return;
        }
        if let Some(events) = self.inner.events.get() {
            (events.commit_batch)(batches.len());
        }
        let prepared: Vec<Prepared<'_>> = batches
            .iter()
            .zip(encoded)
            .map(|(batch, written)| Prepared { batch, written })
            .collect();
        let outcomes = self.group_outcomes(&prepared).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    async fn group_outcomes(&self, ps: &[Prepared<'_>]) -> Vec<Result<(), StoreError>> {
        let failure = match self.try_group(ps).await {
            Ok(outcomes) => return outcomes,
            Err(f) => f,
        };
        if let Some(events) = self.inner.events.get() {
            (events.retry)();
        }
        match failure {
            GroupFailure::NotApplied(cause) => {
                tracing::debug!(%cause, size = ps.len(), "group transaction failed; committing its batches alone");
                join_all(ps.iter().map(|p| self.commit_alone(p))).await
            }
            GroupFailure::Ambiguous(cause, inside) => {
                tracing::warn!(%cause, size = ps.len(), "group commit outcome unknown; re-reading");
                join_all(ps.iter().zip(inside).map(|(p, inside)| async move {
                    if inside.is_ok() {
                        match self.settle(p).await {
                            Ok(true) => return Ok(()),
                            Ok(false) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    // Not applied: rolled back (to its savepoint, or with the group).
                    self.commit_alone(p).await
                }))
                .await
            }
        }
    }

    async fn try_group(
        &self,
        ps: &[Prepared<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, GroupFailure> {
        let mut client = match self.client().await {
            Ok(c) => c,
            // No connection: nothing was tried, and the single-batch path would only wait again.
            Err(e) => return Ok(ps.iter().map(|_| Err(e.clone())).collect()),
        };
        let result = group_transaction(&mut client, ps).await;
        if client.is_closed() {
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }
}

/// The group in one transaction: each batch under a savepoint, then the events, then COMMIT.
async fn group_transaction(
    client: &mut deadpool_postgres::Client,
    ps: &[Prepared<'_>],
) -> Result<Vec<Result<(), StoreError>>, GroupFailure> {
    let tx = client.transaction().await.map_err(|e| not_applied(&e))?;
    let savepoint = tx
        .prepare_cached("SAVEPOINT batch")
        .await
        .map_err(|e| not_applied(&e))?;
    let release = tx
        .prepare_cached("RELEASE SAVEPOINT batch")
        .await
        .map_err(|e| not_applied(&e))?;
    let rollback = tx
        .prepare_cached("ROLLBACK TO SAVEPOINT batch")
        .await
        .map_err(|e| not_applied(&e))?;
    let mut outcomes = Vec::with_capacity(ps.len());
    let mut seal = Seal::default();
    for (i, p) in ps.iter().enumerate() {
        let release = (i > 0).then_some(&release);
        let outcome = batch_in_group(&tx, p, release, &savepoint, &rollback).await?;
        if outcome.is_ok() {
            seal.add(p.batch);
        }
        outcomes.push(outcome);
    }
    let release = tx.execute(&release, NO_PARAMS);
    let (released, sealed) = futures_util::future::join(release, seal.write(&tx)).await;
    released.map_err(|e| not_applied(&e))?;
    sealed.map_err(|a| match a {
        Attempt::Failed(e) => GroupFailure::NotApplied(e.to_string()),
        Attempt::Retry(c) | Attempt::Ambiguous(c) => GroupFailure::NotApplied(c),
    })?;
    match tx.commit().await {
        Ok(()) => Ok(outcomes),
        Err(e)
            if !retryable(&e)
                && (e.code().is_none()
                    || e.code() == Some(&SqlState::T_R_STATEMENT_COMPLETION_UNKNOWN)) =>
        {
            Err(GroupFailure::Ambiguous(describe(&e), outcomes))
        }
        Err(e) => Err(not_applied(&e)),
    }
}

/// One batch inside the group: its statements pipelined under a fresh savepoint (after
/// releasing the previous batch's), then its own outcome; rolled back to the savepoint when
/// it fails. `Err` only for a failure that is the group's (the whole group is then redone).
async fn batch_in_group(
    tx: &deadpool_postgres::Transaction<'_>,
    p: &Prepared<'_>,
    release: Option<&tokio_postgres::Statement>,
    savepoint: &tokio_postgres::Statement,
    rollback: &tokio_postgres::Statement,
) -> Result<Result<(), StoreError>, GroupFailure> {
    let batch = p.batch;
    // Counter rows in key order (stable), as on the single-batch path.
    let mut order: Vec<usize> = (0..batch.counters.len()).collect();
    order.sort_by(|&a, &b| counter_key(&batch.counters[a]).cmp(counter_key(&batch.counters[b])));
    let mut exhausted: Option<usize> = None;
    let mut counters = Vec::new();
    for i in order {
        let (sql, value): (&str, Option<i64>) = match &batch.counters[i] {
            CounterOp::Take { limit: 0, .. } => {
                exhausted = Some(exhausted.map_or(i, |e| e.min(i)));
                continue;
            }
            CounterOp::Take { limit, .. } => (
                super::TAKE_COUNTER,
                Some(i64::try_from(*limit).unwrap_or(i64::MAX)),
            ),
            CounterOp::Release { .. } => (super::RELEASE_COUNTER, None),
            CounterOp::Set { value, .. } => (
                super::SET_COUNTER,
                Some(i64::try_from(*value).unwrap_or(i64::MAX)),
            ),
        };
        let statement = tx.prepare_cached(sql).await.map_err(|e| not_applied(&e))?;
        counters.push((
            i,
            statement,
            counter_key(&batch.counters[i]).as_bytes(),
            value,
        ));
    }
    let expected = match &batch.change {
        Some(Change::Update {
            expected_revision, ..
        })
        | Some(Change::Delete {
            expected_revision, ..
        }) => match revision(*expected_revision) {
            Ok(r) => Some(r),
            Err(e) => return Ok(Err(e)),
        },
        _ => None,
    };
    let record_sql = match (&batch.change, &p.written) {
        (None, _) => None,
        (Some(Change::Insert(_)), Some(_)) => Some(super::INSERT_CLIENT),
        (Some(Change::Update { .. }), Some(_)) => Some(super::UPDATE_CLIENT),
        (Some(Change::Delete { .. }), _) => Some(super::DELETE_CLIENT),
        _ => {
            return Ok(Err(StoreError::Corrupt(
                "record change without its encoding".into(),
            )))
        }
    };
    let record_statement = match record_sql {
        Some(sql) => Some(tx.prepare_cached(sql).await.map_err(|e| not_applied(&e))?),
        None => None,
    };
    // The parameters, owned here for the pipelined statements to borrow.
    let counter_params: Vec<Vec<&(dyn ToSql + Sync)>> = counters
        .iter()
        .map(|(_, _, key, value)| {
            let mut v: Vec<&(dyn ToSql + Sync)> = vec![key];
            if let Some(value) = value {
                v.push(value);
            }
            v
        })
        .collect();
    let (tag_now, tag_before) = match &batch.change {
        Some(Change::Insert(r)) | Some(Change::Update { record: r, .. }) => {
            (tag(r), previous_tag(r))
        }
        _ => (None, None),
    };
    let record_params: Vec<&(dyn ToSql + Sync)> = match (&batch.change, &p.written) {
        (Some(Change::Insert(r)), Some((json, rev))) => vec![
            &r.client_id,
            rev,
            &tag_now,
            json,
            &r.client_id_issued_at,
            &r.updated_at,
            &tag_before,
        ],
        (Some(Change::Update { record: r, .. }), Some((json, rev))) => vec![
            &r.client_id,
            &expected,
            rev,
            &tag_now,
            json,
            &r.updated_at,
            &tag_before,
        ],
        (Some(Change::Delete { client_id, .. }), _) => vec![client_id, &expected],
        _ => Vec::new(),
    };

    let mut steps = Vec::new();
    let mut pipeline: Vec<BoxFuture<'_, Result<u64, tokio_postgres::Error>>> = Vec::new();
    if let Some(release) = release {
        steps.push(Step::Savepoint);
        pipeline.push(Box::pin(tx.execute(release, NO_PARAMS)));
    }
    steps.push(Step::Savepoint);
    pipeline.push(Box::pin(tx.execute(savepoint, NO_PARAMS)));
    for ((i, statement, _, _), params) in counters.iter().zip(&counter_params) {
        steps.push(Step::Counter(*i));
        pipeline.push(Box::pin(tx.execute(statement, params)));
    }
    if let Some(statement) = &record_statement {
        steps.push(Step::Record);
        pipeline.push(Box::pin(tx.execute(statement, &record_params)));
    }
    let results = join_all(pipeline).await;

    let mut refused: Option<tokio_postgres::Error> = None;
    let mut conflict = false;
    for (step, result) in steps.into_iter().zip(results) {
        match result {
            Err(e) if refused.is_none() => {
                let batch_own = matches!(step, Step::Counter(_) | Step::Record)
                    && !retryable(&e)
                    && e.code().is_some()
                    && e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION);
                if !batch_own {
                    return Err(not_applied(&e));
                }
                refused = Some(e);
            }
            // After the first error the rest only say the subtransaction is aborted.
            Err(_) => {}
            Ok(0) => match step {
                Step::Counter(i) if matches!(batch.counters[i], CounterOp::Take { .. }) => {
                    exhausted = Some(exhausted.map_or(i, |e| e.min(i)));
                }
                Step::Record => conflict = true,
                _ => {}
            },
            Ok(_) => {}
        }
    }
    let mut outcome = match (refused, exhausted) {
        (Some(e), _) => Err(store_error(&e)),
        // The first exhausted counter in batch order is the one reported, as on every store.
        (None, Some(i)) => Err(StoreError::CounterExhausted(
            counter_key(&batch.counters[i]).to_owned(),
        )),
        (None, None) if conflict => Err(StoreError::Conflict),
        (None, None) => Ok(()),
    };
    if outcome.is_ok() {
        // Outbox edits other than enqueues (client commits carry none today), in the savepoint.
        let edits: Vec<_> = batch
            .outbox
            .iter()
            .filter(|op| !matches!(op, crate::events::OutboxOp::Enqueue(_)))
            .cloned()
            .collect();
        if !edits.is_empty() {
            match events::apply_outbox(tx, &edits).await {
                Ok(()) => {}
                Err(Attempt::Failed(e)) => outcome = Err(e),
                Err(Attempt::Retry(c) | Attempt::Ambiguous(c)) => {
                    return Err(GroupFailure::NotApplied(c))
                }
            }
        }
    }
    if outcome.is_err() {
        tx.execute(rollback, NO_PARAMS)
            .await
            .map_err(|e| not_applied(&e))?;
    }
    Ok(outcome)
}
