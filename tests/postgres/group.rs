//! Group commit (`src/store/postgres/group.rs`): concurrent commits share one transaction, and
//! each still gets exactly its own outcome: a lost compare-and-swap, an exhausted counter or a
//! refused insert rolls back that batch alone, the others commit with their audit entries and
//! outbox rows, and the audit chain verifies.

use crate::fresh_store;
use registrar::events::audit::{Actor, AuditEntry};
use registrar::events::{verify_log, EventType, OutboxOp, OutboxQueue};
use registrar::store::contract::record;
use registrar::store::{
    Change, ClientRecord, ClientStore, CounterOp, StoreError, StoreEvents, WriteBatch,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The batch of a change with one audit entry and one outbox row naming `id`.
fn audited(change: Change, id: &str) -> WriteBatch {
    let mut batch = WriteBatch::change(change);
    batch.audit.push(AuditEntry::for_change(
        1,
        EventType::Registered,
        id,
        Actor::system(),
        None,
        None,
        &[],
    ));
    batch.outbox.push(OutboxOp::Enqueue(
        registrar::store::event_log::contract::row(id, &format!("msg_{id}")),
    ));
    batch
}

fn renamed(r: &ClientRecord, name: &str) -> ClientRecord {
    let mut r = r.clone();
    r.metadata.insert("client_name".into(), name.into());
    r
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// One of many updates of the same client at the same revision: one wins.
    Racing,
    /// Takes one use of a counter with a limit of 3, with an insert: three win.
    Quota,
    /// An insert whose token tag another client holds (a unique violation in SQL).
    TagTaken,
    /// An insert of its own client.
    Plain,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_sharing_groups_each_get_their_own_outcome() {
    let (store, _) = fresh_store().await;
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let retries = Arc::new(AtomicUsize::new(0));
    let counted = retries.clone();
    store.observe(Arc::new(StoreEvents {
        commit_batch: Box::new(move |n| seen.lock().unwrap().push(n)),
        retry: Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }),
        record_cache: Box::new(|_, _| {}),
    }));
    let shared = record("shared", 200);
    store
        .commit(WriteBatch::change(Change::Insert(shared.clone())))
        .await
        .unwrap();

    let mut writers = Vec::new();
    let start = Arc::new(tokio::sync::Barrier::new(120));
    for w in 0..120u32 {
        let kind = match w % 4 {
            0 => Kind::Racing,
            1 => Kind::Quota,
            2 if w % 8 == 2 => Kind::TagTaken,
            _ => Kind::Plain,
        };
        let id = format!("w{w}");
        let batch = match kind {
            Kind::Racing => audited(
                Change::Update {
                    expected_revision: 1,
                    record: renamed(&shared, &id),
                },
                "shared",
            ),
            Kind::Quota => audited(Change::Insert(record(&id, w as u8)), &id).with_counters([
                CounterOp::Take {
                    key: "quota".into(),
                    limit: 3,
                },
            ]),
            // Tag 200 is the shared client's.
            Kind::TagTaken => audited(Change::Insert(record(&id, 200)), &id),
            Kind::Plain => audited(Change::Insert(record(&id, w as u8)), &id),
        };
        let (store, start) = (store.clone(), start.clone());
        writers.push(tokio::spawn(async move {
            start.wait().await;
            (w, kind, store.commit(batch).await)
        }));
    }
    let mut won = Vec::new();
    let (mut racing_won, mut quota_won) = (0, 0);
    for writer in writers {
        let (w, kind, outcome) = writer.await.unwrap();
        match (kind, &outcome) {
            (Kind::Racing, Ok(())) => racing_won += 1,
            (Kind::Racing, Err(StoreError::Conflict)) => {}
            (Kind::Quota, Ok(())) => quota_won += 1,
            (Kind::Quota, Err(StoreError::CounterExhausted(key))) => assert_eq!(key, "quota"),
            (Kind::TagTaken, Err(StoreError::Conflict)) => {}
            (Kind::Plain, Ok(())) => {}
            other => panic!("writer {w}: {other:?}"),
        }
        let id = format!("w{w}");
        let stored = store.get(&id).await.unwrap();
        // All or nothing: the record exists exactly when its commit succeeded.
        if kind != Kind::Racing {
            assert_eq!(stored.is_some(), outcome.is_ok(), "writer {w}: {outcome:?}");
        }
        if outcome.is_ok() {
            won.push(if kind == Kind::Racing {
                "shared".into()
            } else {
                id
            });
        }
    }
    assert_eq!(racing_won, 1, "one update at revision 1 wins");
    assert_eq!(quota_won, 3, "the counter's limit");
    assert_eq!(store.counter("quota").await.unwrap(), 3);
    let shared_now = store.get("shared").await.unwrap().unwrap();
    assert_eq!(shared_now.revision, 2);

    let sizes = sizes.lock().unwrap().clone();
    assert!(
        sizes.iter().any(|&n| n > 1),
        "the writers shared groups: {sizes:?}"
    );
    assert_eq!(
        sizes.iter().sum::<usize>(),
        121,
        "every batch in one group: {sizes:?}"
    );
    assert_eq!(retries.load(Ordering::Relaxed), 0, "no group was redone");

    // One audit record per successful commit (plus none for the failed), chained.
    let verified = verify_log(&store).await.unwrap().unwrap();
    assert_eq!(verified.count as usize, won.len());
    // One outbox row per successful commit, each its own seq.
    let pending = store.outbox_pending(1000).await.unwrap();
    let seqs: HashSet<u64> = pending.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), pending.len());
    // Pending lists the head of each (hook, client) line: one per distinct client.
    let clients: HashSet<String> = won.into_iter().collect();
    assert_eq!(pending.len(), clients.len());
    for row in &pending {
        assert!(clients.contains(&row.client_id), "{row:?}");
        assert_eq!(row.id, format!("msg_{}", row.client_id));
    }
}
