//! The audit trail and webhook outbox on sled, for `SledStore`.
//!
//! Trees: `audit` maps big-endian `seq` → JSON audit record; `outbox` and `outbox_dead` map
//! big-endian outbox `seq` → JSON row; `events` holds the chain head (`audit_head`) and the
//! last outbox `seq` (`outbox_seq`). The head lives in its own key, not as "the last record",
//! because a sled transaction can read keys but not iterate: reading and rewriting it inside
//! the transaction of the change is what makes concurrent commits line up in one chain (the
//! loser of a race on that key is re-run by sled with the winner's head).

// Wired into `SledStore::commit` once the async store (#13) is on main.
#![cfg_attr(not(test), allow(dead_code))]

use super::StoreError;
use crate::events::audit::{plan_prune, seal, AuditEntry, AuditRecord, ChainHead, Checkpoint};
use crate::events::webhook::{OutboxOp, OutboxRow};
use crate::events::StoredAudit;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use sled::Tree;

const HEAD: &[u8] = b"audit_head";
const OUTBOX_SEQ: &[u8] = b"outbox_seq";

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn corrupt<T>(what: &str, e: impl std::fmt::Display) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(StoreError::Corrupt(
        format!("{what}: {e}"),
    )))
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The event trees of one database.
#[derive(Clone)]
pub(crate) struct EventTrees {
    pub(crate) audit: Tree,
    pub(crate) outbox: Tree,
    pub(crate) dead: Tree,
    pub(crate) meta: Tree,
}

impl EventTrees {
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Self {
            audit: db.open_tree("audit")?,
            outbox: db.open_tree("outbox")?,
            dead: db.open_tree("outbox_dead")?,
            meta: db.open_tree("events")?,
        })
    }
}

/// Seal `entries` onto the chain inside the caller's transaction.
pub(crate) fn append(
    audit: &TransactionalTree,
    meta: &TransactionalTree,
    entries: &[AuditEntry],
) -> TxResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut head = match meta.get(HEAD)? {
        Some(bytes) => match serde_json::from_slice::<ChainHead>(&bytes) {
            Ok(h) => h,
            Err(e) => return corrupt("audit head", e),
        },
        None => ChainHead::default(),
    };
    for entry in entries {
        let record = seal(&head, entry.clone());
        let bytes = match serde_json::to_vec(&record) {
            Ok(b) => b,
            Err(e) => return corrupt("audit record", e),
        };
        audit.insert(&record.seq.to_be_bytes(), bytes)?;
        head = record.head();
    }
    let bytes = match serde_json::to_vec(&head) {
        Ok(b) => b,
        Err(e) => return corrupt("audit head", e),
    };
    meta.insert(HEAD, bytes)?;
    Ok(())
}

fn encode_row(row: &OutboxRow) -> TxResult<Vec<u8>> {
    serde_json::to_vec(row).or_else(|e| corrupt("outbox row", e))
}

fn decode_row(bytes: &[u8]) -> Result<OutboxRow, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("outbox row: {e}")))
}

fn get_row(tree: &TransactionalTree, seq: u64) -> TxResult<Option<OutboxRow>> {
    match tree.get(seq.to_be_bytes())? {
        Some(bytes) => decode_row(&bytes)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// Apply outbox operations inside the caller's transaction (same semantics as the memory
/// store's `EventState::apply`).
pub(crate) fn apply_outbox(
    outbox: &TransactionalTree,
    dead: &TransactionalTree,
    meta: &TransactionalTree,
    ops: &[OutboxOp],
) -> TxResult<()> {
    for op in ops {
        match op {
            OutboxOp::Enqueue(row) => {
                let last = meta
                    .get(OUTBOX_SEQ)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes);
                let seq = last + 1;
                meta.insert(OUTBOX_SEQ, &seq.to_be_bytes())?;
                let mut row = row.clone();
                row.seq = seq;
                row.dead = false;
                outbox.insert(&seq.to_be_bytes(), encode_row(&row)?)?;
            }
            OutboxOp::Delivered { seq } => {
                outbox.remove(&seq.to_be_bytes())?;
            }
            OutboxOp::Retry {
                seq,
                attempts,
                next_attempt_at,
                last_error,
            } => {
                if let Some(mut row) = get_row(outbox, *seq)? {
                    row.retried(*attempts, *next_attempt_at, last_error);
                    outbox.insert(&seq.to_be_bytes(), encode_row(&row)?)?;
                }
            }
            OutboxOp::DeadLetter {
                seq,
                attempts,
                last_error,
            } => {
                if let Some(mut row) = get_row(outbox, *seq)? {
                    row.dead_lettered(*attempts, last_error);
                    outbox.remove(&seq.to_be_bytes())?;
                    dead.insert(&seq.to_be_bytes(), encode_row(&row)?)?;
                }
            }
            OutboxOp::Redeliver { seq, now } => {
                if let Some(mut row) = get_row(dead, *seq)? {
                    row.redelivered(*now);
                    dead.remove(&seq.to_be_bytes())?;
                    outbox.insert(&seq.to_be_bytes(), encode_row(&row)?)?;
                }
            }
        }
    }
    Ok(())
}

/// Outbox operations alone (the worker's outcomes, a redelivery) in their own transaction.
/// Not yet durable: the caller flushes.
pub(crate) fn apply_outbox_alone(trees: &EventTrees, ops: &[OutboxOp]) -> Result<(), StoreError> {
    (&trees.outbox, &trees.dead, &trees.meta)
        .transaction(|(outbox, dead, meta)| apply_outbox(outbox, dead, meta, ops))
        .map_err(tx_error)
}

pub(crate) fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => io(e),
    }
}

fn seq_of(key: &[u8]) -> u64 {
    <[u8; 8]>::try_from(key).map_or(0, u64::from_be_bytes)
}

/// Up to `limit` stored audit rows after `after`.
pub(crate) fn scan(audit: &Tree, after: u64, limit: usize) -> Result<Vec<StoredAudit>, StoreError> {
    let start = after.saturating_add(1).to_be_bytes();
    audit
        .range(start..)
        .take(limit)
        .map(|item| {
            let (k, v) = item.map_err(io)?;
            Ok(StoredAudit {
                key: seq_of(&k),
                record: serde_json::from_slice::<AuditRecord>(&v).map_err(|e| e.to_string()),
            })
        })
        .collect()
}

fn rows(tree: &Tree, after: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
    let start = after.saturating_add(1).to_be_bytes();
    tree.range(start..)
        .take(limit)
        .map(|item| decode_row(&item.map_err(io)?.1))
        .collect()
}

/// Up to `limit` rows waiting for delivery, in `seq` order.
pub(crate) fn pending(trees: &EventTrees, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
    rows(&trees.outbox, 0, limit)
}

/// Up to `limit` dead-lettered rows after `after`.
pub(crate) fn dead(
    trees: &EventTrees,
    after: u64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    rows(&trees.dead, after, limit)
}

/// Retention: remove the prefix older than `cutoff` and append its checkpoint, in one
/// transaction. Not yet durable: the caller flushes.
pub(crate) fn prune(
    trees: &EventTrees,
    cutoff: i64,
    now: i64,
) -> Result<Option<Checkpoint>, StoreError> {
    let mut old = Vec::new();
    for item in trees.audit.iter() {
        let (_, v) = item.map_err(io)?;
        let Ok(record) = serde_json::from_slice::<AuditRecord>(&v) else {
            // An undecodable record stops pruning: verification must still see it.
            break;
        };
        if record.time >= cutoff {
            break;
        }
        old.push(record);
    }
    let Some(plan) = plan_prune(&old, cutoff) else {
        return Ok(None);
    };
    let keys: Vec<[u8; 8]> = old.iter().map(|r| r.seq.to_be_bytes()).collect();
    (&trees.audit, &trees.meta)
        .transaction(|(audit, meta)| {
            for k in &keys {
                audit.remove(k)?;
            }
            append(audit, meta, &[AuditEntry::checkpoint(now, plan.clone())])
        })
        .map_err(tx_error)?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::audit::EventType;
    use crate::events::{AuditLog, OutboxQueue};
    use crate::store::event_log::contract;
    use crate::store::BoxFuture;

    /// The event trees alone behind the two traits, for the contract.
    struct Events(EventTrees);

    impl AuditLog for Events {
        fn audit_scan(
            &self,
            after: u64,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
            let r = scan(&self.0.audit, after, limit);
            Box::pin(async move { r })
        }
        fn audit_prune(
            &self,
            cutoff: i64,
            now: i64,
        ) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
            let r = prune(&self.0, cutoff, now);
            Box::pin(async move { r })
        }
    }

    impl OutboxQueue for Events {
        fn outbox_pending(
            &self,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
            let r = pending(&self.0, limit);
            Box::pin(async move { r })
        }
        fn outbox_dead(
            &self,
            after: u64,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
            let r = dead(&self.0, after, limit);
            Box::pin(async move { r })
        }
        fn outbox_apply(&self, ops: Vec<OutboxOp>) -> BoxFuture<'_, Result<(), StoreError>> {
            let r = apply_outbox_alone(&self.0, &ops);
            Box::pin(async move { r })
        }
    }

    fn open() -> (tempfile::TempDir, sled::Db, EventTrees) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let trees = EventTrees::open(&db).unwrap();
        (dir, db, trees)
    }

    #[tokio::test]
    async fn sled_events_meet_the_contract() {
        let (_dir, _db, trees) = open();
        let entries = [
            contract::entry(10, "a", EventType::Registered),
            contract::entry(20, "b", EventType::Updated),
            contract::entry(30, "a", EventType::Deleted),
        ];
        // Two transactions, as two commits would be.
        (&trees.audit, &trees.meta)
            .transaction(|(a, m)| append(a, m, &entries[..1]))
            .unwrap();
        (&trees.audit, &trees.meta)
            .transaction(|(a, m)| append(a, m, &entries[1..]))
            .unwrap();
        let events = Events(trees.clone());
        contract::audit_log_holds(&events).await;
        let ops = ["a1", "b1", "a2"]
            .iter()
            .map(|id| OutboxOp::Enqueue(contract::row(&id[..1], id)))
            .collect::<Vec<_>>();
        apply_outbox_alone(&trees, &ops).unwrap();
        contract::outbox_holds(&events).await;
    }

    #[tokio::test]
    async fn concurrent_appends_make_one_chain() {
        let (_dir, _db, trees) = open();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let trees = trees.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let e = contract::entry(i, &format!("c{t}"), EventType::Updated);
                        (&trees.audit, &trees.meta)
                            .transaction(|(a, m)| append(a, m, std::slice::from_ref(&e)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = crate::events::verify_log(&Events(trees))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.count, 100);
    }

    #[tokio::test]
    async fn an_undecodable_record_is_named_by_verify() {
        let (_dir, _db, trees) = open();
        let entries: Vec<_> = (0..3)
            .map(|i| contract::entry(i, "a", EventType::Updated))
            .collect();
        (&trees.audit, &trees.meta)
            .transaction(|(a, m)| append(a, m, &entries))
            .unwrap();
        trees
            .audit
            .insert(2u64.to_be_bytes(), b"not json".to_vec())
            .unwrap();
        let e = crate::events::verify_log(&Events(trees))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.seq, 2, "{e}");
    }
}
