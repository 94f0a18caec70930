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
        group_redo: Box::new(|| {}),
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

/// Commit every batch at once (released together by a barrier); the outcomes in batch order.
async fn commit_together<S: ClientStore + Clone>(
    store: &S,
    batches: Vec<WriteBatch>,
) -> Vec<Result<(), StoreError>> {
    let start = Arc::new(tokio::sync::Barrier::new(batches.len()));
    let writers: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.commit(batch).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.unwrap());
    }
    outcomes
}

/// A group whose batches all apply runs without savepoints, in one plain transaction: the rows
/// of its batches share that transaction's id (`xmin`). Under a savepoint each batch would write
/// in its own subtransaction, with its own id. (Groups holding a refused batch are redone with
/// savepoints; the test above checks their outcomes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_where_every_batch_applies_commit_without_savepoints() {
    let (store, url) = fresh_store().await;
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sizes.clone();
    store.observe(Arc::new(StoreEvents {
        commit_batch: Box::new(move |n| seen.lock().unwrap().push(n)),
        retry: Box::new(|| {}),
        group_redo: Box::new(|| {}),
        record_cache: Box::new(|_, _| {}),
    }));
    let batches = (0..96u32)
        .map(|w| {
            let id = format!("g{w}");
            audited(Change::Insert(record(&id, w as u8)), &id).with_counters([CounterOp::Take {
                key: "quota".into(),
                limit: 1000,
            }])
        })
        .collect();
    for outcome in commit_together(&store, batches).await {
        outcome.unwrap();
    }
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 96, "{sizes:?}");
    assert!(
        sizes.iter().any(|&n| n > 1),
        "the writers shared groups: {sizes:?}"
    );
    assert_eq!(store.counter("quota").await.unwrap(), 96);

    let (sql, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = sql
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text) FROM clients WHERE client_id LIKE 'g%'",
            &[],
        )
        .await
        .unwrap();
    let (rows, transactions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows, 96);
    assert_eq!(
        transactions as usize,
        sizes.len(),
        "one transaction id per group, none per batch: {sizes:?}"
    );
    let verified = verify_log(&store).await.unwrap().unwrap();
    assert_eq!(verified.count, 96);
}

/// Takes and releases of one counter in the same groups are applied one by one in batch order
/// (not merged), so the count comes out exact; a set among them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_and_releases_of_one_counter_sharing_groups_count_exactly() {
    let (store, _) = fresh_store().await;
    store
        .commit(WriteBatch::default().with_counters([CounterOp::Set {
            key: "mixed".into(),
            value: 100,
        }]))
        .await
        .unwrap();
    let batches = (0..80u32)
        .map(|w| {
            let id = format!("m{w}");
            let op = match w % 2 {
                0 => CounterOp::Take {
                    key: "mixed".into(),
                    limit: 1000,
                },
                _ => CounterOp::Release {
                    key: "mixed".into(),
                },
            };
            // Each also takes a counter of its own kind, merged across the group.
            audited(Change::Insert(record(&id, w as u8)), &id).with_counters([
                op,
                CounterOp::Take {
                    key: format!("kind{}", w % 2),
                    limit: 1000,
                },
            ])
        })
        .collect();
    for outcome in commit_together(&store, batches).await {
        outcome.unwrap();
    }
    assert_eq!(store.counter("mixed").await.unwrap(), 100);
    assert_eq!(store.counter("kind0").await.unwrap(), 40);
    assert_eq!(store.counter("kind1").await.unwrap(), 40);
    assert_eq!(verify_log(&store).await.unwrap().unwrap().count, 80);
}

/// An update racing the insert of the same client may share its group; whichever order it
/// takes, its outcome, the stored row and the audit trail agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_racing_its_clients_insert_agrees_with_what_is_stored() {
    let (store, _) = fresh_store().await;
    let mut batches = Vec::new();
    for c in 0..40u32 {
        let id = format!("r{c}");
        let inserted = record(&id, c as u8);
        let update = Change::Update {
            expected_revision: 1,
            record: renamed(&inserted, "after"),
        };
        batches.push(audited(Change::Insert(inserted), &id));
        batches.push(audited(update, &id));
    }
    let outcomes = commit_together(&store, batches).await;
    let mut updated = 0;
    for c in 0..40usize {
        let (insert, update) = (&outcomes[2 * c], &outcomes[2 * c + 1]);
        assert!(insert.is_ok(), "client {c}: {insert:?}");
        let stored = store.get(&format!("r{c}")).await.unwrap().unwrap();
        match update {
            Ok(()) => {
                updated += 1;
                assert_eq!(stored.revision, 2, "client {c}");
                assert_eq!(stored.metadata.get("client_name").unwrap(), "after");
            }
            Err(StoreError::Conflict) => {
                assert_eq!(stored.revision, 1, "client {c}");
                assert_eq!(stored.metadata.get("client_name").unwrap(), "x");
            }
            Err(e) => panic!("client {c}: {e:?}"),
        }
    }
    assert_eq!(
        verify_log(&store).await.unwrap().unwrap().count as usize,
        40 + updated
    );
}

/// A refused batch makes its bulk redo with savepoints (`registrar_db_group_redos_total`); the
/// refusals right after it go straight to savepoints, with no bulk to redo, until a group
/// applies with nothing refused, after which the bulk is tried again. One commit at a time, so
/// each group is one batch.
#[tokio::test]
async fn after_a_redo_the_next_groups_skip_the_bulk_until_one_applies_cleanly() {
    let (store, _) = fresh_store().await;
    let redos = Arc::new(AtomicUsize::new(0));
    let counted = redos.clone();
    store.observe(Arc::new(StoreEvents {
        commit_batch: Box::new(|_| {}),
        retry: Box::new(|| {}),
        group_redo: Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }),
        record_cache: Box::new(|_, _| {}),
    }));
    let capped = |id: &str, tag: u8| {
        audited(Change::Insert(record(id, tag)), id).with_counters([CounterOp::Take {
            key: "cap".into(),
            limit: 1,
        }])
    };
    let refused = |outcome: Result<(), StoreError>| {
        assert!(
            matches!(&outcome, Err(StoreError::CounterExhausted(k)) if k == "cap"),
            "{outcome:?}"
        )
    };
    store.commit(capped("c0", 1)).await.unwrap();
    assert_eq!(redos.load(Ordering::Relaxed), 0, "a bulk that applies");
    refused(store.commit(capped("c1", 2)).await);
    assert_eq!(redos.load(Ordering::Relaxed), 1, "the bulk was redone");
    refused(store.commit(capped("c2", 3)).await);
    refused(store.commit(capped("c3", 4)).await);
    assert_eq!(
        redos.load(Ordering::Relaxed),
        1,
        "no bulk tried while paused"
    );
    store
        .commit(audited(Change::Insert(record("p0", 5)), "p0"))
        .await
        .unwrap();
    refused(store.commit(capped("c4", 6)).await);
    assert_eq!(
        redos.load(Ordering::Relaxed),
        2,
        "after a clean group the bulk is tried again"
    );
    for id in ["c1", "c2", "c3", "c4"] {
        assert!(store.get(id).await.unwrap().is_none(), "{id}");
    }
    assert_eq!(store.counter("cap").await.unwrap(), 1);
    assert_eq!(verify_log(&store).await.unwrap().unwrap().count, 2);
}
