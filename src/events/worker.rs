//! The webhook delivery worker: a background task that drains the durable outbox.
//!
//! - **At least once.** A row leaves the outbox only after the receiver answered 2xx; a crash
//!   or stop in between means the row is sent again (same `webhook-id`) after the restart.
//! - **In order per client.** Of the rows for one `(hook, client_id)` only the oldest is ever in
//!   flight; the next waits until it was delivered or dead-lettered.
//! - **Backoff.** A failed attempt is retried after `2^(attempts-1)` × [`BACKOFF_BASE_SECS`]
//!   (at most [`BACKOFF_MAX_SECS`]); after the hook's `max_attempts` the row is dead-lettered.
//! - **Injected clock.** Due-ness and the `webhook-timestamp` come from `Clock`, so tests move
//!   time instead of sleeping; the task itself only wakes up every `poll` (or when told a
//!   change was committed) to look.
//! - **SSRF rules.** [`HttpsTransport`] sends through the same client rules as `crate::fetch`
//!   (https only, reserved addresses refused unless `fetch.allow_private_addresses`, no proxy,
//!   no redirects, `fetch.extra_root_ca_file` trusted).

use super::webhook::{OutboxOp, OutboxRow, WebhookSecret, WebhookSettings};
use crate::clock::Clock;
use crate::settings::FetchSettings;
use crate::store::{BoxFuture, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Delay after the first failed attempt, in seconds.
pub const BACKOFF_BASE_SECS: i64 = 2;
/// Longest delay between attempts, in seconds.
pub const BACKOFF_MAX_SECS: i64 = 3600;
/// Rows looked at per round.
const BATCH: usize = 256;

/// Seconds to wait after `attempts` failed attempts (1, 2, …).
pub fn backoff_secs(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(30);
    (BACKOFF_BASE_SECS << shift).min(BACKOFF_MAX_SECS)
}

/// The durable outbox as the worker sees it; implemented by the store.
pub trait OutboxQueue: Send + Sync + 'static {
    /// Up to `limit` rows that are not dead, in `seq` order: at least the oldest row of each
    /// (hook, client) line. A store shared by replicas (PostgreSQL) returns only those heads and
    /// claims them for a lease, so that one replica sends each; memory and sled may list the
    /// rows behind a head too (the worker sends heads only).
    fn outbox_pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>>;
    /// Up to `limit` dead rows with `seq > after`, in `seq` order.
    fn outbox_dead(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>>;
    /// Apply the operations atomically; resolves once durable.
    fn outbox_apply(&self, ops: Vec<OutboxOp>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Sends one signed POST; `Err` carries a short reason (status or transport error) for
/// `last_error`, never the response body.
pub trait WebhookTransport: Send + Sync + 'static {
    fn post<'a>(
        &'a self,
        url: &'a str,
        headers: Vec<(&'static str, String)>,
        body: String,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The real transport: reqwest under the `crate::fetch` SSRF rules.
pub struct HttpsTransport {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl HttpsTransport {
    /// Build from `[fetch]` (timeout, private addresses, extra roots).
    pub fn new(fetch: &FetchSettings) -> Result<Self, crate::fetch::BuildError> {
        let timeout = Duration::from_millis(fetch.timeout_ms);
        let client = crate::fetch::safe_client_builder(fetch, timeout)?
            .build()
            .map_err(|e| crate::fetch::BuildError(e.to_string()))?;
        Ok(Self {
            client,
            allow_private: fetch.allow_private_addresses,
            timeout,
        })
    }
}

impl WebhookTransport for HttpsTransport {
    fn post<'a>(
        &'a self,
        url: &'a str,
        headers: Vec<(&'static str, String)>,
        body: String,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let url =
                crate::fetch::check_url(url, self.allow_private).map_err(|e| e.to_string())?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let mut request = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| crate::fetch::classify(&host, self.timeout, e).to_string())?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        })
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

struct Hook {
    secret: WebhookSecret,
    max_attempts: u32,
}

/// The delivery worker; [`DeliveryWorker::spawn`] runs it in the background.
pub struct DeliveryWorker {
    queue: Arc<dyn OutboxQueue>,
    transport: Arc<dyn WebhookTransport>,
    clock: Arc<dyn Clock>,
    hooks: HashMap<String, Hook>,
}

impl DeliveryWorker {
    /// A worker for the configured hooks (checked by `WebhookSettings::check`).
    pub fn new(
        queue: Arc<dyn OutboxQueue>,
        transport: Arc<dyn WebhookTransport>,
        clock: Arc<dyn Clock>,
        hooks: &[WebhookSettings],
    ) -> Result<Self, String> {
        let hooks = hooks
            .iter()
            .map(|h| {
                Ok((
                    h.url.clone(),
                    Hook {
                        secret: WebhookSecret::parse(&h.secret)?,
                        max_attempts: h.max_attempts,
                    },
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            queue,
            transport,
            clock,
            hooks,
        })
    }

    /// Send every row that is due now and at the head of its `(hook, client_id)` line, then
    /// record the outcomes in one durable write.
    pub async fn run_once(&self) -> Result<Round, StoreError> {
        let rows = self.queue.outbox_pending(BATCH).await?;
        let now = self.clock.now();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut due = Vec::new();
        for row in &rows {
            // Only the oldest row of a line may go; a later one waits even when it is due.
            if seen.insert((row.hook.as_str(), row.client_id.as_str()))
                && row.next_attempt_at <= now
            {
                due.push(row);
            }
        }
        if due.is_empty() {
            return Ok(Round::default());
        }
        let sends = due.iter().map(|row| self.attempt(row, now));
        let outcomes = futures_util::future::join_all(sends).await;
        let mut round = Round::default();
        let ops: Vec<OutboxOp> = due
            .iter()
            .zip(outcomes)
            .map(|(row, outcome)| self.outcome(row, outcome, now, &mut round))
            .collect();
        self.queue.outbox_apply(ops).await?;
        Ok(round)
    }

    async fn attempt(&self, row: &OutboxRow, now: i64) -> Result<(), String> {
        let Some(hook) = self.hooks.get(&row.hook) else {
            return Err("webhook no longer configured".into());
        };
        let headers = hook.secret.headers(&row.id, now, &row.body);
        self.transport
            .post(&row.hook, headers, row.body.clone())
            .await
    }

    fn outcome(
        &self,
        row: &OutboxRow,
        outcome: Result<(), String>,
        now: i64,
        round: &mut Round,
    ) -> OutboxOp {
        let error = match outcome {
            Ok(()) => {
                round.delivered += 1;
                tracing::debug!(id = %row.id, event = %row.event, "webhook delivered");
                return OutboxOp::Delivered { seq: row.seq };
            }
            Err(e) => e,
        };
        let attempts = row.attempts.saturating_add(1);
        let max = self.hooks.get(&row.hook).map_or(0, |h| h.max_attempts);
        if attempts >= max {
            round.dead += 1;
            tracing::warn!(id = %row.id, hook = %row.hook, attempts, error = %error, "webhook dead-lettered");
            OutboxOp::DeadLetter {
                seq: row.seq,
                attempts,
                last_error: error,
            }
        } else {
            round.retried += 1;
            tracing::info!(id = %row.id, hook = %row.hook, attempts, error = %error, "webhook attempt failed; will retry");
            OutboxOp::Retry {
                seq: row.seq,
                attempts,
                next_attempt_at: now + backoff_secs(attempts),
                last_error: error,
            }
        }
    }

    /// Run in the background: a round whenever [`WorkerHandle::wake`] is called or `poll`
    /// passed, at once again after a round that delivered something. Store errors are logged
    /// and retried on the next round.
    /// `wake` is the notifier commits poke (`Events::waker`).
    pub fn spawn(self, poll: Duration, wake: Arc<Notify>) -> WorkerHandle {
        let worker = Arc::new(self);
        spawn_loop(poll, wake, move || {
            let worker = worker.clone();
            async move {
                match worker.run_once().await {
                    Ok(round) => round.delivered > 0,
                    Err(e) => {
                        tracing::error!(error = %e, "webhook outbox unreadable");
                        false
                    }
                }
            }
        })
    }
}

/// Run `round` in a background task until stopped: again at once when it returns true, else
/// after `poll` or a [`WorkerHandle::wake`].
pub fn spawn_loop<F, Fut>(poll: Duration, wake: Arc<Notify>, round: F) -> WorkerHandle
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let (stop, mut stopped) = watch::channel(false);
    let woken = wake.clone();
    let task = tokio::spawn(async move {
        loop {
            let again = round().await;
            if *stopped.borrow() {
                break;
            }
            if again {
                continue;
            }
            tokio::select! {
                _ = stopped.changed() => break,
                _ = woken.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    });
    WorkerHandle { wake, stop, task }
}

/// Audit retention in the background: every `every`, prune what `settings` says is too old
/// (`AuditLog::audit_prune` writes the checkpoint in the same write). Returns `None` when
/// retention is off.
pub fn spawn_retention(
    log: Arc<dyn crate::events::AuditLog>,
    settings: crate::events::audit::AuditSettings,
    clock: Arc<dyn Clock>,
    every: Duration,
) -> Option<WorkerHandle> {
    settings.cutoff(0)?;
    Some(spawn_loop(every, Arc::new(Notify::new()), move || {
        let (log, clock, settings) = (log.clone(), clock.clone(), settings.clone());
        async move {
            let now = clock.now();
            let Some(cutoff) = settings.cutoff(now) else {
                return false;
            };
            match log.audit_prune(cutoff, now).await {
                Ok(Some(cp)) => tracing::info!(
                    pruned = cp.pruned_count,
                    through = cp.pruned_through,
                    "audit records pruned; checkpoint appended"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "audit retention failed"),
            }
            false
        }
    }))
}

/// A running background task (the delivery worker, retention).
pub struct WorkerHandle {
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Look at the outbox now (called after a commit that enqueued rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A cheap waker to hand to the service.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stop after the current round (undelivered rows stay in the outbox) and wait for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use std::sync::Mutex;

    type Queue = crate::store::MemoryStore;

    async fn push(queue: &Queue, client: &str, id: &str) {
        let row = crate::store::event_log::contract::row(client, id);
        queue
            .outbox_apply(vec![OutboxOp::Enqueue(row)])
            .await
            .unwrap();
    }

    /// The row with this `webhook-id`, live or dead.
    async fn row(queue: &Queue, id: &str) -> Option<OutboxRow> {
        let live = queue.outbox_pending(100).await.unwrap();
        let dead = queue.outbox_dead(0, 100).await.unwrap();
        live.into_iter().chain(dead).find(|r| r.id == id)
    }

    async fn is_empty(queue: &Queue) -> bool {
        queue.outbox_pending(100).await.unwrap().is_empty()
    }

    /// One received POST: url, headers, body.
    type Received = (String, Vec<(&'static str, String)>, String);

    /// A receiver that records what it got and is up or down on command.
    #[derive(Default)]
    struct Receiver {
        up: Mutex<bool>,
        got: Mutex<Vec<Received>>,
    }

    impl WebhookTransport for Receiver {
        fn post<'a>(
            &'a self,
            url: &'a str,
            headers: Vec<(&'static str, String)>,
            body: String,
        ) -> BoxFuture<'a, Result<(), String>> {
            let up = *self.up.lock().unwrap();
            if up {
                self.got
                    .lock()
                    .unwrap()
                    .push((url.to_owned(), headers, body));
            }
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("HTTP 503".into())
                }
            })
        }
    }

    fn setup(max_attempts: u32) -> (Arc<Queue>, Arc<Receiver>, Arc<FixedClock>, DeliveryWorker) {
        let queue = Arc::new(Queue::new());
        let receiver = Arc::new(Receiver::default());
        let clock = Arc::new(FixedClock::new(1000));
        let hooks = [WebhookSettings {
            url: "https://hooks.example/in".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: vec!["*".into()],
            max_attempts,
        }];
        let worker =
            DeliveryWorker::new(queue.clone(), receiver.clone(), clock.clone(), &hooks).unwrap();
        (queue, receiver, clock, worker)
    }

    fn ids(receiver: &Receiver) -> Vec<String> {
        receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, h, _)| h[0].1.clone())
            .collect()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(
            (1..=4).map(backoff_secs).collect::<Vec<_>>(),
            vec![2, 4, 8, 16]
        );
        assert_eq!(backoff_secs(30), BACKOFF_MAX_SECS);
        assert_eq!(backoff_secs(u32::MAX), BACKOFF_MAX_SECS);
    }

    #[tokio::test]
    async fn delivers_signed_and_removes_only_after_success() {
        let (queue, receiver, _clock, worker) = setup(3);
        push(&queue, "a", "msg_1").await;
        *receiver.up.lock().unwrap() = true;
        let round = worker.run_once().await.unwrap();
        assert_eq!(round.delivered, 1);
        assert!(is_empty(&queue).await);
        let got = receiver.got.lock().unwrap();
        let (url, headers, body) = &got[0];
        assert_eq!(url, "https://hooks.example/in");
        assert_eq!(headers[1], ("webhook-timestamp", "1000".into()));
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(headers[2].1, secret.sign("msg_1", 1000, body));
    }

    #[tokio::test]
    async fn one_line_per_client_in_order_and_other_clients_go_on() {
        let (queue, receiver, clock, worker) = setup(10);
        push(&queue, "a", "a1").await;
        push(&queue, "b", "b1").await;
        push(&queue, "a", "a2").await;
        // Down: the first of each line fails and is rescheduled; a2 is not even tried.
        worker.run_once().await.unwrap();
        assert_eq!(row(&queue, "a1").await.unwrap().attempts, 1);
        assert_eq!(row(&queue, "a1").await.unwrap().next_attempt_at, 1002);
        assert_eq!(
            row(&queue, "a1").await.unwrap().last_error.as_deref(),
            Some("HTTP 503")
        );
        assert_eq!(row(&queue, "a2").await.unwrap().attempts, 0);
        // Before the backoff has passed nothing is tried, even a2 which is "due".
        *receiver.up.lock().unwrap() = true;
        assert_eq!(worker.run_once().await.unwrap(), Round::default());
        clock.advance(2);
        assert_eq!(worker.run_once().await.unwrap().delivered, 2);
        assert_eq!(worker.run_once().await.unwrap().delivered, 1);
        assert_eq!(ids(&receiver), vec!["a1", "b1", "a2"]);
        assert!(is_empty(&queue).await);
    }

    #[tokio::test]
    async fn dead_letters_after_max_attempts_and_redelivers_with_the_same_id() {
        let (queue, receiver, clock, worker) = setup(3);
        push(&queue, "a", "a1").await;
        push(&queue, "a", "a2").await;
        for _ in 0..3 {
            worker.run_once().await.unwrap();
            clock.advance(BACKOFF_MAX_SECS);
        }
        let dead = queue.outbox_dead(0, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("a1", 3));
        // The line moves on past the dead row.
        *receiver.up.lock().unwrap() = true;
        worker.run_once().await.unwrap();
        assert_eq!(ids(&receiver), vec!["a2"]);
        queue
            .outbox_apply(vec![OutboxOp::Redeliver {
                seq: dead[0].seq,
                now: clock.now(),
            }])
            .await
            .unwrap();
        worker.run_once().await.unwrap();
        assert_eq!(ids(&receiver), vec!["a2", "a1"]);
        assert!(queue.outbox_dead(0, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_row_for_a_removed_hook_is_dead_lettered() {
        let (queue, _receiver, _clock, worker) = setup(1);
        let mut gone = crate::store::event_log::contract::row("a", "a1");
        gone.hook = "https://gone.example/".into();
        queue
            .outbox_apply(vec![OutboxOp::Enqueue(gone)])
            .await
            .unwrap();
        assert_eq!(worker.run_once().await.unwrap().dead, 1);
        assert_eq!(
            row(&queue, "a1").await.unwrap().last_error.as_deref(),
            Some("webhook no longer configured")
        );
    }

    #[tokio::test]
    async fn the_background_task_delivers_when_woken_and_stops() {
        let (queue, receiver, _clock, worker) = setup(3);
        *receiver.up.lock().unwrap() = true;
        let handle = worker.spawn(Duration::from_secs(3600), Arc::new(Notify::new()));
        push(&queue, "a", "a1").await;
        handle.wake();
        for _ in 0..200 {
            if !ids(&receiver).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ids(&receiver), vec!["a1"]);
        handle.stop().await;
        push(&queue, "a", "a2").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ids(&receiver), vec!["a1"]);
    }

    #[tokio::test]
    async fn retention_runs_in_the_background_when_on() {
        use crate::events::audit::{AuditSettings, EventType};
        use crate::store::event_log::contract;
        use crate::store::MemoryStore;
        let clock = Arc::new(FixedClock::new(10 * 86_400));
        let off = AuditSettings {
            retention_days: 0,
            ..AuditSettings::default()
        };
        let store = Arc::new(MemoryStore::new());
        assert!(
            spawn_retention(store.clone(), off, clock.clone(), Duration::from_millis(5)).is_none()
        );
        store.append_for_tests([
            contract::entry(86_400, "a", EventType::Registered),
            contract::entry(9 * 86_400, "a", EventType::Updated),
        ]);
        let on = AuditSettings {
            retention_days: 2,
            ..AuditSettings::default()
        };
        let handle = spawn_retention(store.clone(), on, clock, Duration::from_millis(5)).unwrap();
        let mut first = 0;
        for _ in 0..200 {
            first = crate::events::AuditLog::audit_scan(store.as_ref(), 0, 1)
                .await
                .unwrap()[0]
                .key;
            if first == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.stop().await;
        assert_eq!(first, 2);
        let v = crate::events::verify_log(store.as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((v.count, v.head.seq), (2, 3));
    }

    #[tokio::test]
    async fn https_transport_refuses_reserved_and_plain_http_targets_before_sending() {
        let fetch = crate::settings::Settings::defaults().unwrap().fetch;
        let t = HttpsTransport::new(&fetch).unwrap();
        let e = t
            .post("https://127.0.0.1:9/x", vec![], "{}".into())
            .await
            .unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        let e = t
            .post("http://example.com/x", vec![], "{}".into())
            .await
            .unwrap_err();
        assert!(e.contains("https"), "{e}");
    }
}
