//! A connection lost during COMMIT: the outcome is unknown to the client, and the store settles
//! it by re-reading, never by guessing. A proxy between the store and the database cuts the
//! connection at the first COMMIT it sees, after passing it on (the commit happened) or
//! instead of passing it on (it did not); either way the batch must end applied exactly once.

use crate::{fresh_store, pg_settings};
use registrar::store::contract::record;
use registrar::store::{Change, ClientStore, CounterOp, PostgresStore, WriteBatch};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASS: u8 = 0;
/// Forward the COMMIT, then cut the connection before its answer.
const CUT_AFTER: u8 = 1;
/// Cut the connection instead of forwarding the COMMIT.
const CUT_BEFORE: u8 = 2;

/// A loopback proxy to `upstream`; `mode` arms it for one COMMIT.
async fn proxy(upstream: String, mode: Arc<AtomicU8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = TcpStream::connect(&upstream).await.unwrap();
            let mode = mode.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let commit = chunk.windows(7).any(|w| w == b"COMMIT\0");
                    let armed = if commit {
                        mode.swap(PASS, Ordering::SeqCst)
                    } else {
                        PASS
                    };
                    if armed == CUT_BEFORE {
                        break;
                    }
                    if sw.write_all(chunk).await.is_err() {
                        break;
                    }
                    if armed == CUT_AFTER {
                        // Let the server finish the commit, then cut before the answer.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        break;
                    }
                }
                down.abort();
            });
        }
    });
    port
}

#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_settled_by_re_reading() {
    let (_, url) = fresh_store().await;
    let parsed = url::Url::parse(&url).unwrap();
    let upstream = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let mode = Arc::new(AtomicU8::new(PASS));
    let port = proxy(upstream, mode.clone()).await;
    let mut through = parsed.clone();
    through.set_port(Some(port)).unwrap();
    let store = PostgresStore::connect(&pg_settings(through.as_str()))
        .await
        .unwrap();

    let mut r = record("amb", 1);
    store
        .commit(WriteBatch::change(Change::Insert(r.clone())))
        .await
        .unwrap();
    for (i, cut) in [CUT_AFTER, CUT_BEFORE].into_iter().enumerate() {
        let expected_revision = 1 + i as u64;
        r.metadata
            .insert("client_name".into(), format!("v{i}").into());
        let batch = WriteBatch::change(Change::Update {
            expected_revision,
            record: r.clone(),
        })
        .with_counters([CounterOp::Take {
            key: "uses".into(),
            limit: 10,
        }]);
        mode.store(cut, Ordering::SeqCst);
        store
            .commit(batch)
            .await
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(
            mode.load(Ordering::SeqCst),
            PASS,
            "the proxy never saw the COMMIT"
        );
        let stored = store.get("amb").await.unwrap().unwrap();
        assert_eq!(
            stored.revision,
            expected_revision + 1,
            "cut {cut}: applied once"
        );
        assert_eq!(stored.metadata["client_name"], format!("v{i}"));
        assert_eq!(
            store.counter("uses").await.unwrap(),
            1 + i as u64,
            "cut {cut}: the counter moved with the record, once"
        );
    }
}
