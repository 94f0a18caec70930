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
pub mod webhook;
pub mod worker;

pub use audit::{
    seal, Actor, ActorKind, AuditEntry, AuditRecord, ChainError, ChainHead, ChainVerifier,
    Checkpoint, EventType, Verified,
};
pub use webhook::{OutboxOp, OutboxRow, WebhookSecret, WebhookSettings};
pub use worker::{DeliveryWorker, OutboxQueue, WebhookTransport, WorkerHandle};

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
