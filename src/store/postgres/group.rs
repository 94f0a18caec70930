//! Group commit: concurrent `ClientStore::commit` calls share one transaction and one COMMIT.
//!
//! Each `commit` queues its `WriteBatch` and waits. A committer task takes everything queued, up
//! to `GROUP_MAX` batches (a *group*), and applies them in ONE transaction.
//!
//! First as a *bulk*: all the group's takes of one counter as one statement, all its inserts
//! as one multi-row statement, its updates and deletes one statement each, all pipelined (one
//! round trip), with no savepoints. That holds when every batch applies, which is nearly always;
//! statements and subtransactions were most of PostgreSQL's CPU per registration. If anything in
//! it would refuse a batch (a statement touched fewer rows than it must, or was refused), the
//! transaction is rolled back and nothing of it answered, since what it saw was judged against
//! batches that are not committed. The group is then applied *with savepoints*: each batch under
//! its own `SAVEPOINT`, the statements of all of them pipelined, so a batch whose
//! compare-and-swap, insert or counter check fails is rolled back alone (to its savepoint, the
//! batches after it sent again) and answered with its own error (`Conflict`,
//! `CounterExhausted`) while the others go on. After such a redo the next `BULK_PAUSE` groups
//! are applied with savepoints straight away (refusals come in runs: a quota reached, a
//! replayed statement retried), until one of them has no refused batch. Then the audit entries of
//! every batch applied are sealed onto the chain under ONE lock of `audit_head` and written with
//! one multi-row insert, the webhook outbox rows likewise (one `webhook_outbox_seq` lock for all),
//! and the transaction commits once. Only after that COMMIT returned is any waiter answered.
//!
//! Locks within a group are taken in the store's order: in a bulk, the group's counters in key
//! order, then its client rows; with savepoints, batch after batch, each batch's counters in key
//! order, then its client row; then the audit head, then the outbox sequence.
//! Two groups (of two committers or two replicas) can still wait on each other in a cycle when
//! they hold rows of each other's batches; PostgreSQL then aborts one (40P01). Whenever a group
//! transaction fails before its COMMIT (deadlock, serialization failure, lost connection, any
//! error not owned by one batch), nothing of it was committed and every batch of it is committed
//! alone on the single-batch path, with that path's retries. When the COMMIT's outcome is unknown
//! (connection lost during COMMIT, 40003), each batch applied in the group is settled by re-reading
//! its row (`settle`) and committed alone if it was not applied; a batch that failed within the
//! group was rolled back to its savepoint and is committed alone too.

use super::events::Seal;
use super::{
    counter_key, describe, previous_tag, retryable, revision, store_error, tag, written, Attempt,
    Inner, PostgresStore, Prepared,
};
use crate::store::{Change, ClientRecord, CounterOp, StoreError, WriteBatch};
use futures_util::future::{join_all, BoxFuture};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// The most batches one group transaction applies. Each batch is a subtransaction
/// (`SAVEPOINT`); PostgreSQL keeps up to 64 of them per transaction in shared memory, beyond
/// which other sessions' snapshots get slower (subtransaction overflow).
pub(super) const GROUP_MAX: usize = 64;

/// Groups applied with savepoints straight away after a bulk was redone, unless one of them
/// has no refused batch first.
const BULK_PAUSE: u32 = 16;

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
        let result = group_transaction(&mut client, ps, &self.inner).await;
        if client.is_closed() {
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }
}

/// The group in one transaction: as a bulk when every batch applies, else with a savepoint per
/// batch; then the events, then COMMIT.
///
/// With savepoints, all the batches from the first still undecided are sent at once (one round
/// trip). The first that fails (a lost compare-and-swap, an exhausted counter, a statement
/// refused) is rolled back to its savepoint, which also undoes the batches sent after it; those
/// are sent again. So that costs one round trip plus two per failed batch.
async fn group_transaction(
    client: &mut deadpool_postgres::Client,
    ps: &[Prepared<'_>],
    inner: &Inner,
) -> Result<Vec<Result<(), StoreError>>, GroupFailure> {
    // After a redo, refusals tend to come in runs (a quota reached, a replayed statement
    // retried): the next groups go straight to savepoints rather than paying for a bulk each.
    let paused = inner
        .bulk_pause
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if let Some(bulk) = Bulk::of(ps).filter(|_| !paused) {
        let tx = client.transaction().await.map_err(|e| not_applied(&e))?;
        if bulk.apply(&tx).await? {
            return finish(tx, ps, ps.iter().map(|_| Ok(())).collect()).await;
        }
        tx.rollback().await.map_err(|e| not_applied(&e))?;
        inner.bulk_pause.store(BULK_PAUSE, Ordering::Relaxed);
        if let Some(events) = inner.events.get() {
            (events.group_redo)();
        }
        tracing::debug!(
            size = ps.len(),
            "a batch of a bulk group would fail; applying the group with savepoints"
        );
    }
    let tx = client.transaction().await.map_err(|e| not_applied(&e))?;
    let mut plans = Vec::with_capacity(ps.len());
    for (i, p) in ps.iter().enumerate() {
        plans.push(plan(&tx, i, p).await?);
    }
    let mut outcomes: Vec<Result<(), StoreError>> = Vec::with_capacity(ps.len());
    while outcomes.len() < ps.len() {
        let start = outcomes.len();
        let failed = pipeline(&tx, &plans[start..], &ps[start..]).await?;
        match failed {
            None => outcomes.extend(ps[start..].iter().map(|_| Ok(()))),
            Some((k, error)) => {
                let k = start + k;
                outcomes.extend((start..k).map(|_| Ok(())));
                tx.execute(&plans[k].rollback, NO_PARAMS)
                    .await
                    .map_err(|e| not_applied(&e))?;
                outcomes.push(Err(error));
            }
        }
    }
    if outcomes.iter().all(Result::is_ok) {
        // Nothing refused: the next group tries the bulk again.
        inner.bulk_pause.store(0, Ordering::Relaxed);
    }
    finish(tx, ps, outcomes).await
}

/// Seal the audit entries and outbox rows of the batches applied, then COMMIT.
async fn finish(
    tx: deadpool_postgres::Transaction<'_>,
    ps: &[Prepared<'_>],
    outcomes: Vec<Result<(), StoreError>>,
) -> Result<Vec<Result<(), StoreError>>, GroupFailure> {
    let mut seal = Seal::default();
    for (p, outcome) in ps.iter().zip(&outcomes) {
        if outcome.is_ok() {
            seal.add(p.batch);
        }
    }
    seal.write(&tx).await.map_err(|a| match a {
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

/// A batch's statements, prepared, with the values they bind that are not in the batch.
struct Plan {
    savepoint: tokio_postgres::Statement,
    rollback: tokio_postgres::Statement,
    /// Batch index of the counter operation, its statement and its bound value, in key order.
    counters: Vec<(usize, tokio_postgres::Statement, Option<i64>)>,
    /// The first counter in batch order known exhausted without asking (a limit of 0).
    exhausted: Option<usize>,
    record: Option<tokio_postgres::Statement>,
    expected: Option<i64>,
}

/// Whether an error is the batch's own outcome (the batch alone is rolled back) rather than
/// the group's (the whole group is redone).
fn batch_own(e: &tokio_postgres::Error) -> bool {
    !retryable(e) && e.code().is_some() && e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
}

async fn plan(
    tx: &deadpool_postgres::Transaction<'_>,
    i: usize,
    p: &Prepared<'_>,
) -> Result<Plan, GroupFailure> {
    let batch = p.batch;
    let prepare =
        |sql: String| async move { tx.prepare_cached(&sql).await.map_err(|e| not_applied(&e)) };
    let savepoint = prepare(format!("SAVEPOINT batch_{i}")).await?;
    let rollback = prepare(format!("ROLLBACK TO SAVEPOINT batch_{i}")).await?;
    // Counter rows in key order, as on the single-batch path.
    let (steps, exhausted) = super::counter_plan(batch);
    let mut counters = Vec::with_capacity(steps.len());
    for (c, sql, value) in steps {
        counters.push((c, prepare(sql.to_owned()).await?, value));
    }
    let expected = match &batch.change {
        Some(Change::Update {
            expected_revision, ..
        })
        | Some(Change::Delete {
            expected_revision, ..
        }) => Some(revision(*expected_revision).unwrap_or(i64::MAX)),
        _ => None,
    };
    let record = match &batch.change {
        None => None,
        Some(Change::Insert(_)) => Some(prepare(super::INSERT_CLIENT.to_owned()).await?),
        Some(Change::Update { .. }) => Some(prepare(super::UPDATE_CLIENT.to_owned()).await?),
        Some(Change::Delete { .. }) => Some(prepare(super::DELETE_CLIENT.to_owned()).await?),
    };
    Ok(Plan {
        savepoint,
        rollback,
        counters,
        exhausted,
        record,
        expected,
    })
}

/// What a pipelined statement was.
#[derive(Clone, Copy)]
enum Step {
    Savepoint,
    Counter(usize),
    Record,
}

/// Send the statements of `ps` at once, each batch after its savepoint; the first batch that
/// failed (its index in `ps`) and its error, or `None` when all were applied.
async fn pipeline(
    tx: &deadpool_postgres::Transaction<'_>,
    plans: &[Plan],
    ps: &[Prepared<'_>],
) -> Result<Option<(usize, StoreError)>, GroupFailure> {
    // The parameters, owned here for the pipelined statements to borrow.
    let mut tags = Vec::with_capacity(ps.len());
    for p in ps {
        tags.push(match &p.batch.change {
            Some(Change::Insert(r)) | Some(Change::Update { record: r, .. }) => {
                (tag(r), previous_tag(r))
            }
            _ => (None, None),
        });
    }
    let keys: Vec<Vec<&[u8]>> = plans
        .iter()
        .zip(ps)
        .map(|(plan, p)| {
            plan.counters
                .iter()
                .map(|(c, _, _)| counter_key(&p.batch.counters[*c]).as_bytes())
                .collect()
        })
        .collect();
    type Bound<'b> = Vec<&'b (dyn ToSql + Sync)>;
    let mut params: Vec<(usize, Step, &tokio_postgres::Statement, Bound<'_>)> = Vec::new();
    for (b, (((plan, p), (tag_now, tag_before)), keys)) in
        plans.iter().zip(ps).zip(&tags).zip(&keys).enumerate()
    {
        params.push((b, Step::Savepoint, &plan.savepoint, Vec::new()));
        for ((c, statement, value), key) in plan.counters.iter().zip(keys) {
            let mut v: Bound<'_> = vec![key];
            if let Some(value) = value {
                v.push(value);
            }
            params.push((b, Step::Counter(*c), statement, v));
        }
        let record: Option<Bound<'_>> = match (&p.batch.change, &p.written) {
            (Some(Change::Insert(r)), Some((json, rev))) => Some(vec![
                &r.client_id,
                rev,
                tag_now,
                json,
                &r.client_id_issued_at,
                &r.updated_at,
                tag_before,
            ]),
            (Some(Change::Update { record: r, .. }), Some((json, rev))) => Some(vec![
                &r.client_id,
                &plan.expected,
                rev,
                tag_now,
                json,
                &r.updated_at,
                tag_before,
            ]),
            (Some(Change::Delete { client_id, .. }), _) => Some(vec![client_id, &plan.expected]),
            (None, _) => None,
            // An insert or update without its encoding (`written` never builds one): the
            // single-batch path answers it.
            _ => {
                return Err(GroupFailure::NotApplied(
                    "record change without its encoding".into(),
                ))
            }
        };
        if let (Some(record), Some(statement)) = (record, &plan.record) {
            params.push((b, Step::Record, statement, record));
        }
    }
    let pipeline: Vec<BoxFuture<'_, Result<u64, tokio_postgres::Error>>> = params
        .iter()
        .map(|(_, _, statement, values)| {
            Box::pin(tx.execute(*statement, values)) as BoxFuture<'_, _>
        })
        .collect();
    let results = join_all(pipeline).await;

    // Per batch, in order: the first refused statement, the first exhausted counter, a record
    // statement that changed nothing.
    let mut refused: Option<tokio_postgres::Error> = None;
    let mut exhausted = plans.first().and_then(|p| p.exhausted);
    let mut conflict = false;
    let mut current = 0;
    let verdict = |b: usize,
                   refused: Option<tokio_postgres::Error>,
                   exhausted: Option<usize>,
                   conflict: bool|
     -> Result<Option<(usize, StoreError)>, GroupFailure> {
        let batch = ps[b].batch;
        Ok(match (refused, exhausted) {
            (Some(e), _) => Some((b, store_error(&e))),
            // The first exhausted counter in batch order is the one reported, as on every store.
            (None, Some(i)) => Some((
                b,
                StoreError::CounterExhausted(counter_key(&batch.counters[i]).to_owned()),
            )),
            (None, None) if conflict => Some((b, StoreError::Conflict)),
            (None, None) => None,
        })
    };
    for ((b, step, _, _), result) in params.iter().zip(results) {
        if *b != current {
            if let Some(failed) = verdict(current, refused.take(), exhausted, conflict)? {
                return Ok(Some(failed));
            }
            current = *b;
            exhausted = plans[*b].exhausted;
            conflict = false;
        }
        match result {
            Err(e) if refused.is_none() => {
                if matches!(step, Step::Savepoint) || !batch_own(&e) {
                    return Err(not_applied(&e));
                }
                refused = Some(e);
            }
            // After the first error the rest only say the transaction is aborted.
            Err(_) => {}
            Ok(0) => match step {
                Step::Counter(i) if matches!(ps[*b].batch.counters[*i], CounterOp::Take { .. }) => {
                    exhausted = Some(exhausted.map_or(*i, |e| e.min(*i)));
                }
                Step::Record => conflict = true,
                _ => {}
            },
            Ok(_) => {}
        }
    }
    verdict(current, refused, exhausted, conflict)
}

/// All the takes of one counter by a group, as one statement: they all succeed exactly when
/// the counter has room for all of them under the smallest limit among them (`$3` is that limit
/// less their number; a new row starts at their number, checked against the limit before).
const TAKE_MANY: &str = "INSERT INTO counters (key, value) VALUES ($1, $2) ON CONFLICT (key) \
     DO UPDATE SET value = counters.value + $2 WHERE counters.value <= $3";
/// All the inserts of a group, as one statement.
const INSERT_MANY: &str = "INSERT INTO clients \
     (client_id, revision, rat_tag, record, created_at, updated_at, previous_rat_tag) \
     SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::text[], $5::int8[], \
     $6::int8[], $7::bytea[]) ON CONFLICT (client_id) DO NOTHING";

/// One counter statement of a bulk: its SQL, the key and the values it binds, and whether it
/// must touch a row (a take; a release at zero or a set may touch none).
struct CounterStep<'a> {
    sql: &'static str,
    key: &'a [u8],
    values: Vec<i64>,
    must_touch: bool,
}

/// The group's inserts as the columns of `INSERT_MANY`.
#[derive(Default)]
struct InsertColumns<'a> {
    client_id: Vec<&'a str>,
    revision: Vec<i64>,
    rat_tag: Vec<Option<&'a [u8]>>,
    record: Vec<&'a str>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    previous_rat_tag: Vec<Option<&'a [u8]>>,
}

/// An update or a delete of a bulk, with what it binds.
enum RowChange<'a> {
    Update {
        record: &'a ClientRecord,
        expected: i64,
        json: &'a str,
        revision: i64,
        tag: Option<&'a [u8]>,
        previous_tag: Option<&'a [u8]>,
    },
    Delete {
        client_id: &'a str,
        expected: i64,
    },
}

impl RowChange<'_> {
    fn client_id(&self) -> &str {
        match self {
            Self::Update { record, .. } => &record.client_id,
            Self::Delete { client_id, .. } => client_id,
        }
    }
}

/// A group as a bulk (see the module doc); `None` when it cannot be one.
struct Bulk<'a> {
    counters: Vec<CounterStep<'a>>,
    inserts: InsertColumns<'a>,
    /// Updates and deletes, in batch order.
    changes: Vec<RowChange<'a>>,
}

impl<'a> Bulk<'a> {
    /// The bulk of `ps`, unless a batch is known to fail without asking (a counter limit of
    /// 0), lacks its encoding, or changes a client that another batch of the group inserts
    /// (the bulk inserts before it updates, which could apply what batch order would refuse).
    fn of(ps: &'a [Prepared<'a>]) -> Option<Self> {
        let mut by_key: BTreeMap<&str, Vec<&CounterOp>> = BTreeMap::new();
        let mut inserts = InsertColumns::default();
        let mut changes = Vec::new();
        for p in ps {
            for op in &p.batch.counters {
                by_key.entry(counter_key(op)).or_default().push(op);
            }
            match (&p.batch.change, &p.written) {
                (Some(Change::Insert(r)), Some((json, rev))) => {
                    inserts.client_id.push(&r.client_id);
                    inserts.revision.push(*rev);
                    inserts.rat_tag.push(tag(r));
                    inserts.record.push(json);
                    inserts.created_at.push(r.client_id_issued_at);
                    inserts.updated_at.push(r.updated_at);
                    inserts.previous_rat_tag.push(previous_tag(r));
                }
                (
                    Some(Change::Update {
                        expected_revision,
                        record,
                    }),
                    Some((json, rev)),
                ) => changes.push(RowChange::Update {
                    record,
                    expected: revision(*expected_revision).unwrap_or(i64::MAX),
                    json,
                    revision: *rev,
                    tag: tag(record),
                    previous_tag: previous_tag(record),
                }),
                (
                    Some(Change::Delete {
                        client_id,
                        expected_revision,
                    }),
                    _,
                ) => changes.push(RowChange::Delete {
                    client_id,
                    expected: revision(*expected_revision).unwrap_or(i64::MAX),
                }),
                (None, _) => {}
                _ => return None,
            }
        }
        let inserted: HashSet<&str> = inserts.client_id.iter().copied().collect();
        if changes.iter().any(|c| inserted.contains(c.client_id())) {
            return None;
        }
        let mut counters = Vec::with_capacity(by_key.len());
        for (key, ops) in by_key {
            let key = key.as_bytes();
            let limits: Option<Vec<u64>> = ops
                .iter()
                .map(|op| match op {
                    CounterOp::Take { limit, .. } => Some(*limit),
                    _ => None,
                })
                .collect();
            match limits {
                // Takes only: one statement, with room for all of them under the smallest
                // limit from zero; else the exact path decides.
                Some(limits) => {
                    let n = i64::try_from(limits.len()).ok()?;
                    let limit = limits
                        .iter()
                        .map(|l| i64::try_from(*l).unwrap_or(i64::MAX))
                        .min()?;
                    if limit < n {
                        return None;
                    }
                    counters.push(CounterStep {
                        sql: TAKE_MANY,
                        key,
                        values: vec![n, limit - n],
                        must_touch: true,
                    });
                }
                // A key with releases or sets too: each operation alone, in batch order.
                None => {
                    for op in ops {
                        let (sql, value) = super::counter_statement(op)?;
                        counters.push(CounterStep {
                            sql,
                            key,
                            values: value.into_iter().collect(),
                            must_touch: matches!(op, CounterOp::Take { .. }),
                        });
                    }
                }
            }
        }
        Some(Self {
            counters,
            inserts,
            changes,
        })
    }

    /// Send every statement at once, in the store's lock order (counters in key order, then
    /// client rows); whether every one touched the rows it must. `false` leaves the
    /// transaction to be rolled back.
    async fn apply(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<bool, GroupFailure> {
        let prepare = |sql: &'static str| async move {
            tx.prepare_cached(sql).await.map_err(|e| not_applied(&e))
        };
        type Bound<'b> = Vec<&'b (dyn ToSql + Sync)>;
        // (statement, values, rows it must touch)
        let mut sends: Vec<(tokio_postgres::Statement, Bound<'_>, Option<u64>)> = Vec::new();
        for c in &self.counters {
            let mut v: Bound<'_> = vec![&c.key];
            v.extend(c.values.iter().map(|x| x as &(dyn ToSql + Sync)));
            sends.push((prepare(c.sql).await?, v, c.must_touch.then_some(1)));
        }
        let i = &self.inserts;
        if !i.client_id.is_empty() {
            let v: Bound<'_> = vec![
                &i.client_id,
                &i.revision,
                &i.rat_tag,
                &i.record,
                &i.created_at,
                &i.updated_at,
                &i.previous_rat_tag,
            ];
            let rows = i.client_id.len() as u64;
            sends.push((prepare(INSERT_MANY).await?, v, Some(rows)));
        }
        for change in &self.changes {
            let (sql, v): (_, Bound<'_>) = match change {
                RowChange::Update {
                    record,
                    expected,
                    json,
                    revision,
                    tag,
                    previous_tag,
                } => (
                    super::UPDATE_CLIENT,
                    vec![
                        &record.client_id,
                        expected,
                        revision,
                        tag,
                        json,
                        &record.updated_at,
                        previous_tag,
                    ],
                ),
                RowChange::Delete {
                    client_id,
                    expected,
                } => (super::DELETE_CLIENT, vec![client_id, expected]),
            };
            sends.push((prepare(sql).await?, v, Some(1)));
        }
        let results = join_all(
            sends
                .iter()
                .map(|(statement, values, _)| tx.execute(statement, values)),
        )
        .await;
        let mut all = true;
        // The first error is the cause; the statements after it only say the transaction is
        // aborted.
        for ((_, _, rows), result) in sends.iter().zip(results) {
            match result {
                Err(e) if batch_own(&e) => return Ok(false),
                Err(e) => return Err(not_applied(&e)),
                Ok(n) => all &= rows.is_none_or(|r| r == n),
            }
        }
        Ok(all)
    }
}
