//! The audit trail and webhook outbox of the in-memory store, and the behaviour every store's
//! events must show (`contract`).
//!
//! A store holds this state next to its clients and applies it in the same critical section
//! as the change it describes: [`EventState::append`] seals entries onto the chain,
//! [`EventState::apply`] runs outbox operations.

use crate::events::audit::{plan_prune, seal, AuditEntry, AuditRecord, ChainHead, Checkpoint};
use crate::events::webhook::{OutboxOp, OutboxRow};
use crate::events::StoredAudit;
use std::collections::BTreeMap;

/// The events of one store.
#[derive(Debug, Default)]
pub(crate) struct EventState {
    head: ChainHead,
    audit: BTreeMap<u64, AuditRecord>,
    outbox: BTreeMap<u64, OutboxRow>,
    dead: BTreeMap<u64, OutboxRow>,
    outbox_seq: u64,
}

impl EventState {
    /// Seal `entries` onto the chain, in order.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = AuditEntry>) {
        for entry in entries {
            let record = seal(&self.head, entry);
            self.head = record.head();
            self.audit.insert(record.seq, record);
        }
    }

    /// Apply outbox operations in order; operations on rows that are gone do nothing (a
    /// redelivered row delivered twice, a row removed meanwhile).
    pub(crate) fn apply(&mut self, ops: impl IntoIterator<Item = OutboxOp>) {
        for op in ops {
            match op {
                OutboxOp::Enqueue(mut row) => {
                    self.outbox_seq += 1;
                    row.seq = self.outbox_seq;
                    row.dead = false;
                    self.outbox.insert(row.seq, row);
                }
                OutboxOp::Delivered { seq } => {
                    self.outbox.remove(&seq);
                }
                OutboxOp::Retry {
                    seq,
                    attempts,
                    next_attempt_at,
                    last_error,
                } => {
                    if let Some(row) = self.outbox.get_mut(&seq) {
                        row.retried(attempts, next_attempt_at, &last_error);
                    }
                }
                OutboxOp::DeadLetter {
                    seq,
                    attempts,
                    last_error,
                } => {
                    if let Some(mut row) = self.outbox.remove(&seq) {
                        row.dead_lettered(attempts, &last_error);
                        self.dead.insert(seq, row);
                    }
                }
                OutboxOp::Redeliver { seq, now } => {
                    if let Some(mut row) = self.dead.remove(&seq) {
                        row.redelivered(now);
                        self.outbox.insert(seq, row);
                    }
                }
            }
        }
    }

    pub(crate) fn scan(&self, after: u64, limit: usize) -> Vec<StoredAudit> {
        self.audit
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(k, r)| StoredAudit {
                key: *k,
                record: Ok(r.clone()),
            })
            .collect()
    }

    pub(crate) fn pending(&self, limit: usize) -> Vec<OutboxRow> {
        self.outbox.values().take(limit).cloned().collect()
    }

    pub(crate) fn dead(&self, after: u64, limit: usize) -> Vec<OutboxRow> {
        self.dead
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub(crate) fn prune(&mut self, cutoff: i64, now: i64) -> Option<Checkpoint> {
        let plan = plan_prune(self.audit.values(), cutoff)?;
        self.audit.retain(|seq, _| *seq > plan.pruned_through);
        self.append([AuditEntry::checkpoint(now, plan.clone())]);
        Some(plan)
    }

    /// Tests: edit the stored trail as an attacker with access to the store would.
    #[cfg(test)]
    pub(crate) fn tamper(&mut self) -> &mut BTreeMap<u64, AuditRecord> {
        &mut self.audit
    }
}

/// What every store's audit log and outbox must do; each implementation runs these. Public
/// (but hidden) so every backend's tests, the PostgreSQL ones included, run it.
#[doc(hidden)]
pub mod contract {
    use crate::events::audit::{Actor, ActorKind, AuditEntry, EventType};
    use crate::events::webhook::{OutboxOp, OutboxRow};
    use crate::events::{verify_log, AuditLog, AuditQuery, OutboxQueue};

    pub fn entry(time: i64, client: &str, event: EventType) -> AuditEntry {
        AuditEntry {
            time,
            event,
            client_id: Some(client.into()),
            actor: Actor::new(ActorKind::Anonymous),
            source_ip: Some("192.0.2.1".into()),
            request_id: None,
            changed: vec!["client_name".into()],
            before: None,
            after: Some("0".repeat(64)),
            checkpoint: None,
        }
    }

    pub fn row(client: &str, id: &str) -> OutboxRow {
        OutboxRow {
            seq: 0,
            id: id.into(),
            hook: "https://hooks.example/in".into(),
            client_id: client.into(),
            event: EventType::Registered,
            body: "{}".into(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            dead: false,
        }
    }

    /// After `append` wrote records with times 10, 20, 30 for clients a, b, a (events
    /// registered, updated, deleted): the chain verifies, lists, filters and prunes.
    pub async fn audit_log_holds(log: &dyn AuditLog) {
        let v = verify_log(log).await.unwrap().unwrap();
        assert_eq!(v.count, 3);
        assert_eq!(v.head.seq, 3);
        let page = crate::events::list(
            log,
            &AuditQuery {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(page.next_cursor, Some(2));
        let rest = crate::events::list(
            log,
            &AuditQuery {
                after: 2,
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(rest.records.len(), 1);
        assert_eq!(rest.next_cursor, None);
        let a = crate::events::list(
            log,
            &AuditQuery {
                client_id: Some("a".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(a.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3]);
        let upd = crate::events::list(
            log,
            &AuditQuery {
                event: Some(EventType::Updated),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(upd.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);

        assert_eq!(log.audit_prune(5, 100).await.unwrap(), None);
        let cp = log.audit_prune(25, 100).await.unwrap().unwrap();
        assert_eq!((cp.pruned_through, cp.pruned_count), (2, 2));
        let v = verify_log(log).await.unwrap().unwrap();
        assert_eq!((v.count, v.head.seq), (2, 4));
        let first = log.audit_scan(0, 1).await.unwrap();
        assert_eq!(first[0].key, 3);
    }

    /// An outbox with rows a1, b1, a2 enqueued in that order.
    pub async fn outbox_holds(q: &dyn OutboxQueue) {
        // The head of each (hook, client) line, in `seq` order; a store may list the rows
        // behind a head too (memory, sled) or only the heads (PostgreSQL, which claims them).
        let pending = q.outbox_pending(10).await.unwrap();
        let ids: Vec<_> = pending.iter().map(|r| r.id.as_str()).collect();
        assert!(ids == ["a1", "b1", "a2"] || ids == ["a1", "b1"], "{ids:?}");
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
        let (a1, b1) = (pending[0].seq, pending[1].seq);
        q.outbox_apply(vec![
            OutboxOp::Retry {
                seq: a1,
                attempts: 1,
                next_attempt_at: 50,
                last_error: "HTTP 500".into(),
            },
            OutboxOp::Delivered { seq: b1 },
        ])
        .await
        .unwrap();
        let pending = q.outbox_pending(10).await.unwrap();
        assert_eq!(pending[0].id, "a1");
        assert!(
            pending.iter().all(|r| r.id != "b1"),
            "delivered rows are gone"
        );
        assert_eq!((pending[0].attempts, pending[0].next_attempt_at), (1, 50));
        assert_eq!(pending[0].last_error.as_deref(), Some("HTTP 500"));
        q.outbox_apply(vec![OutboxOp::DeadLetter {
            seq: a1,
            attempts: 2,
            last_error: "HTTP 500".into(),
        }])
        .await
        .unwrap();
        assert_eq!(q.outbox_pending(10).await.unwrap().len(), 1);
        let dead = q.outbox_dead(0, 10).await.unwrap();
        assert_eq!(
            (dead[0].id.as_str(), dead[0].dead, dead[0].attempts),
            ("a1", true, 2)
        );
        assert!(q.outbox_dead(a1, 10).await.unwrap().is_empty());
        assert!(!crate::events::redeliver(q, "no-such-id", 70).await.unwrap());
        assert!(crate::events::redeliver(q, "a1", 70).await.unwrap());
        let pending = q.outbox_pending(10).await.unwrap();
        assert_eq!(pending[0].id, "a1");
        assert_eq!(
            (
                pending[0].attempts,
                pending[0].next_attempt_at,
                pending[0].dead
            ),
            (0, 70, false)
        );
        assert!(q.outbox_dead(0, 10).await.unwrap().is_empty());
    }
}
