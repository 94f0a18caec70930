//! Turning one client change into its events: the audit entry and the outbox rows, handed to
//! the store in the same write as the change (STYLE: the store decides atomicity, services
//! decide meaning).

use super::audit::{Actor, ActorKind, AuditEntry, EventType};
use super::webhook::{rows_for, OutboxOp, WebhookSettings};
use crate::store::ClientRecord;
use crate::tokens::TokenGenerator;
use std::sync::Arc;
use tokio::sync::Notify;

/// Random bytes in a `webhook-id` (after `msg_`).
const WEBHOOK_ID_BYTES: usize = 16;

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The caller's address (socket peer, or from a trusted proxy's header).
    pub source_ip: Option<String>,
    /// The request id, when the server assigned one.
    pub request_id: Option<String>,
}

/// The events of one change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBatch {
    pub audit: Vec<AuditEntry>,
    pub outbox: Vec<OutboxOp>,
}

impl EventBatch {
    /// Append the events of another change written in the same commit (after these).
    pub fn extend(&mut self, other: EventBatch) {
        self.audit.extend(other.audit);
        self.outbox.extend(other.outbox);
    }

    /// Whether it enqueues webhook deliveries (the worker is woken after the commit).
    pub fn has_deliveries(&self) -> bool {
        !self.outbox.is_empty()
    }
}

/// One change, described.
#[derive(Debug, Clone)]
pub struct ChangeEvent<'a> {
    pub time: i64,
    pub event: EventType,
    pub client_id: &'a str,
    pub actor: Actor,
    pub origin: &'a Origin,
    /// The client before the change (`None` for a new one).
    pub before: Option<&'a ClientRecord>,
    /// The client after the change (`None` once removed).
    pub after: Option<&'a ClientRecord>,
    /// Credential members that changed without showing in the client view
    /// (`client_secret`, `registration_access_token`).
    pub credentials_changed: &'a [&'a str],
}

/// Builds [`EventBatch`]es for the configured webhooks.
pub struct Events {
    hooks: Vec<WebhookSettings>,
    tokens: Arc<dyn TokenGenerator>,
    waker: Arc<Notify>,
    audit: bool,
}

impl Events {
    /// `hooks`: `[[webhooks]]`; `tokens` draws the `webhook-id`s.
    pub fn new(hooks: Vec<WebhookSettings>, tokens: Arc<dyn TokenGenerator>) -> Self {
        Self {
            hooks,
            tokens,
            waker: Arc::new(Notify::new()),
            audit: true,
        }
    }

    /// `audit.enabled`: when false, batches carry no audit entry (only their outbox rows),
    /// so the store appends nothing to the chain and, on PostgreSQL, does not lock its head.
    /// This is the one place audit entries are built (issue #17 point 6).
    pub fn with_audit(mut self, enabled: bool) -> Self {
        self.audit = enabled;
        self
    }

    /// The notifier the delivery worker waits on (`DeliveryWorker::spawn`).
    pub fn waker(&self) -> Arc<Notify> {
        self.waker.clone()
    }

    /// Tell the worker that a commit enqueued deliveries.
    pub fn committed(&self, batch_had_deliveries: bool) {
        if batch_had_deliveries {
            self.waker.notify_one();
        }
    }

    /// The audit entry of `change` alone, for changes no webhook hears of (a registration
    /// access token rotated on read or revoked: the client view is unchanged).
    pub fn audit_only(&self, change: ChangeEvent<'_>) -> EventBatch {
        let mut batch = self.change(change);
        batch.outbox.clear();
        batch
    }

    /// The audit entry of `change` and one outbox row per hook that wants it.
    pub fn change(&self, change: ChangeEvent<'_>) -> EventBatch {
        // With audit off the entry is not built at all: its views and digests are most of
        // what an event costs the request.
        let audit = self.audit.then(|| {
            AuditEntry::for_change(
                change.time,
                change.event,
                change.client_id,
                change.actor,
                change.before,
                change.after,
                change.credentials_changed,
            )
            .from_request(
                change.origin.source_ip.clone(),
                change.origin.request_id.clone(),
            )
        });
        let outbox = rows_for(
            &self.hooks,
            change.event,
            change.time,
            change.client_id,
            change.after,
            || format!("msg_{}", self.tokens.token(WEBHOOK_ID_BYTES)),
        )
        .into_iter()
        .map(OutboxOp::Enqueue)
        .collect();
        EventBatch {
            audit: audit.into_iter().collect(),
            outbox,
        }
    }
}

/// The actor of an RFC 7591 registration, from the tier that admitted it
/// (`crate::policy::tier`): the token's short digest and the statement's `iss` where present.
pub fn registration_actor(
    tier: &str,
    initial_access_token: Option<&str>,
    statement_iss: Option<&str>,
) -> Actor {
    let kind = match tier {
        crate::policy::tier::INITIAL_ACCESS_TOKEN => ActorKind::InitialAccessToken,
        crate::policy::tier::SOFTWARE_STATEMENT => ActorKind::SoftwareStatement,
        _ => ActorKind::Anonymous,
    };
    Actor {
        kind,
        name: None,
        iss: statement_iss.map(str::to_owned),
        token_digest: initial_access_token
            .filter(|_| kind == ActorKind::InitialAccessToken)
            .map(Actor::token_digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::SeededTokens;

    use crate::events::webhook::tests::hook;
    use crate::store::contract::named as record_named;

    fn record(name: &str) -> ClientRecord {
        record_named("c1", name)
    }

    #[test]
    fn a_change_becomes_one_audit_entry_and_a_row_per_interested_hook() {
        let events = Events::new(
            vec![hook(&["*"]), hook(&["client.deleted"])],
            Arc::new(SeededTokens::new(1)),
        );
        let origin = Origin {
            source_ip: Some("198.51.100.4".into()),
            request_id: Some("r-9".into()),
        };
        let (a, b) = (record("A"), record("B"));
        let batch = events.change(ChangeEvent {
            time: 50,
            event: EventType::Updated,
            client_id: "c1",
            actor: Actor::new(ActorKind::RegistrationAccessToken),
            origin: &origin,
            before: Some(&a),
            after: Some(&b),
            credentials_changed: &["registration_access_token"],
        });
        assert_eq!(batch.audit.len(), 1);
        let e = &batch.audit[0];
        assert_eq!(e.source_ip.as_deref(), Some("198.51.100.4"));
        assert_eq!(e.request_id.as_deref(), Some("r-9"));
        assert_eq!(e.changed, ["client_name", "registration_access_token"]);
        assert_eq!(batch.outbox.len(), 1, "only the * hook wants updates");
        let OutboxOp::Enqueue(row) = &batch.outbox[0] else {
            panic!("not an enqueue")
        };
        assert!(
            row.id.starts_with("msg_") && row.id.len() > 20,
            "{}",
            row.id
        );
        assert!(batch.has_deliveries());
    }

    #[test]
    fn with_audit_off_a_change_has_no_audit_entry_but_keeps_its_outbox_rows() {
        let events =
            Events::new(vec![hook(&["*"])], Arc::new(SeededTokens::new(1))).with_audit(false);
        let origin = Origin::default();
        let b = record("B");
        let batch = events.change(ChangeEvent {
            time: 50,
            event: EventType::Registered,
            client_id: "c1",
            actor: Actor::new(ActorKind::Anonymous),
            origin: &origin,
            before: None,
            after: Some(&b),
            credentials_changed: &[],
        });
        assert!(batch.audit.is_empty());
        assert_eq!(batch.outbox.len(), 1);
        assert!(batch.has_deliveries());
    }

    #[test]
    fn registration_actors() {
        use crate::policy::tier;
        let a = registration_actor(tier::ANONYMOUS, None, None);
        assert_eq!(a.kind, ActorKind::Anonymous);
        let a = registration_actor(tier::ANONYMOUS_EXCEPTION, Some("t"), None);
        assert_eq!((a.kind, a.token_digest), (ActorKind::Anonymous, None));
        let a = registration_actor(tier::INITIAL_ACCESS_TOKEN, Some("tok"), Some("https://iss"));
        assert_eq!(a.kind, ActorKind::InitialAccessToken);
        assert_eq!(a.token_digest, Some(Actor::token_digest("tok")));
        assert_eq!(a.iss.as_deref(), Some("https://iss"));
        let a = registration_actor(tier::SOFTWARE_STATEMENT, None, Some("https://iss"));
        assert_eq!(a.kind, ActorKind::SoftwareStatement);
        assert_eq!(a.token_digest, None);
    }
}
