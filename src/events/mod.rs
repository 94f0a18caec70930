//! Events: the tamper-evident audit trail of every client change, and the webhook outbox with
//! its delivery worker.
//!
//! Framework-free. The service describes a change as an [`AuditEntry`] (and, for each
//! subscribed webhook, an [`OutboxRow`]); the store writes both in the same atomic write as the
//! change and assigns `seq`, `prev_hash` and `hash` there ([`seal`]), so a change without its
//! record, a record without its change, or two records with one `seq` cannot exist. Nothing here
//! opens a transaction.
//!
//! - [`audit`]: the record, its canonical form, `hash = SHA-256(prev_hash ‖ canonical record)`,
//!   chain verification and retention checkpoints.
//! - [`webhook`]: Standard Webhooks signing (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), the outbox row, the
//!   payload and the `[[webhooks]]` settings.
//! - [`worker`]: the background delivery task (at least once, in order per client, exponential
//!   backoff, then dead letter), sending under the SSRF rules of `crate::fetch`.

pub mod audit;
pub mod cli;
pub mod emit;
pub mod remote;
pub mod report;
pub mod webhook;
pub mod worker;

pub use audit::{
    seal, Actor, ActorKind, AuditEntry, AuditRecord, ChainError, ChainHead, ChainVerifier,
    Checkpoint, EventType, Verified,
};
pub use emit::{ChangeEvent, EventBatch, Events, Origin};
pub use webhook::{OutboxOp, OutboxRow, WebhookSecret, WebhookSettings};
pub use worker::{DeliveryWorker, OutboxQueue, WebhookTransport, WorkerHandle};

use crate::store::{BoxFuture, StoreError};

/// One stored audit row as read back: the `seq` it is stored under, and the record or why it
/// does not decode (which verification reports at that `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAudit {
    pub key: u64,
    pub record: Result<AuditRecord, String>,
}

/// The stored audit trail as readers see it; implemented by the store.
pub trait AuditLog: Send + Sync + 'static {
    /// Up to `limit` stored rows with `seq > after`, in `seq` order.
    fn audit_scan(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>>;
    /// Remove the records before `cutoff` (a prefix of the chain, see
    /// [`audit::plan_prune`]) and append their checkpoint, in one atomic write; the checkpoint
    /// is `None` when nothing was old enough.
    fn audit_prune(
        &self,
        cutoff: i64,
        now: i64,
    ) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>>;
}

/// Rows read per page while verifying or listing.
const PAGE: usize = 1000;

/// Verify the whole stored trail (issue #17 point 2): `Ok(Ok(verified))` when intact,
/// `Ok(Err(first bad seq))` when not, `Err` when the store cannot be read.
pub async fn verify_log(log: &dyn AuditLog) -> Result<Result<Verified, ChainError>, StoreError> {
    let mut verifier = ChainVerifier::new();
    let mut after = 0;
    loop {
        let page = log.audit_scan(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.key;
        for row in page {
            let record = match row.record {
                Ok(r) => r,
                Err(why) => {
                    return Ok(Err(ChainError {
                        seq: row.key,
                        reason: format!("the stored record does not decode: {why}"),
                    }))
                }
            };
            if record.seq != row.key {
                return Ok(Err(ChainError {
                    seq: row.key,
                    reason: format!("stored under seq {} but says seq {}", row.key, record.seq),
                }));
            }
            if let Err(e) = verifier.push(&record) {
                return Ok(Err(e));
            }
        }
    }
    Ok(verifier.finish())
}

/// A listing request (`GET /admin/audit`, `registrar audit list`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with `seq` above this (the previous page's `next_cursor`).
    pub after: u64,
    /// Page size, 1..=1000 (0 = 100).
    pub limit: usize,
    pub client_id: Option<String>,
    pub event: Option<EventType>,
}

/// One page of records, keyset paginated by `seq`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// The `after` of the next page; `None` on the last page.
    pub next_cursor: Option<u64>,
}

/// Most rows examined for one page when filters skip most of them; the page then ends early
/// with a cursor, so a filtered listing never walks the whole trail in one request.
const SCAN_BUDGET: usize = 10_000;

/// One page of the trail matching `query`. Undecodable rows are skipped here (`verify`
/// reports them).
pub async fn list(log: &dyn AuditLog, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    let limit = match query.limit {
        0 => 100,
        n => n.min(PAGE),
    };
    let mut records = Vec::new();
    let mut after = query.after;
    let mut scanned = 0;
    loop {
        let page = log.audit_scan(after, PAGE).await?;
        let exhausted = page.len() < PAGE;
        for row in page {
            after = row.key;
            scanned += 1;
            let Ok(record) = row.record else { continue };
            let wanted = query
                .client_id
                .as_ref()
                .is_none_or(|c| record.client_id.as_ref() == Some(c))
                && query.event.is_none_or(|e| record.event == e);
            if wanted {
                records.push(record);
                if records.len() == limit {
                    return Ok(AuditPage {
                        records,
                        next_cursor: Some(after),
                    });
                }
            }
        }
        if exhausted {
            return Ok(AuditPage {
                records,
                next_cursor: None,
            });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(AuditPage {
                records,
                next_cursor: Some(after),
            });
        }
    }
}

/// Put the dead-lettered delivery with this `webhook-id` back in the queue, due at `now`
/// (`POST /admin/webhooks/dead/{id}/redeliver`); `false` when no dead row has that id.
pub async fn redeliver(
    queue: &dyn OutboxQueue,
    webhook_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let mut after = 0;
    loop {
        let page = queue.outbox_dead(after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        after = last.seq;
        if let Some(row) = page.iter().find(|r| r.id == webhook_id) {
            queue
                .outbox_apply(vec![OutboxOp::Redeliver { seq: row.seq, now }])
                .await?;
            return Ok(true);
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
