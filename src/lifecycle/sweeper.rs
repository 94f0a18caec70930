//! The sweeper: a background task that deletes abandoned registrations (`[lifecycle]`).
//!
//! Several replicas may sweep the same store at once: every delete is a compare-and-delete of
//! the record as read (`Registrar::remove_record`), so a client is deleted, audited and counted
//! by exactly one of them, and a client used or changed since it was read is judged again on
//! its new state instead of being deleted.

use super::{audit_reaped, reap_reason, LifecycleSettings};
use crate::error::Result;
use crate::registration::{store_error, Registrar};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a client that changed under the sweeper is re-read before it is left for the
/// next sweep.
const MAX_RETRIES: usize = 4;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Clients read.
    pub examined: u64,
    /// Clients deleted by this sweep (not those another replica deleted first).
    pub reaped: u64,
}

/// Deletes clients never used or inactive past the `[lifecycle]` TTLs.
pub struct Sweeper {
    registrar: Arc<Registrar>,
    settings: LifecycleSettings,
    reaped_total: AtomicU64,
}

impl Sweeper {
    /// A sweeper over the registrar's store, clock and policies.
    pub fn new(registrar: Arc<Registrar>, settings: LifecycleSettings) -> Self {
        Self {
            registrar,
            settings,
            reaped_total: AtomicU64::new(0),
        }
    }

    /// Clients reaped by this sweeper since it was built.
    pub fn reaped_total(&self) -> u64 {
        self.reaped_total.load(Ordering::Relaxed)
    }

    /// One pass over the store at the clock's "now", in keyset pages of `sweep_batch`.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let store = self.registrar.store();
        let mut report = SweepReport::default();
        let mut after: Option<String> = None;
        loop {
            let batch = store
                .scan(after.as_deref(), self.settings.sweep_batch)
                .await
                .map_err(store_error)?;
            let Some(last) = batch.last() else { break };
            after = Some(last.client_id.clone());
            for record in batch {
                report.examined += 1;
                if self.reap(record).await? {
                    report.reaped += 1;
                }
            }
            // A long sweep must not hold a worker thread.
            tokio::task::yield_now().await;
        }
        self.reaped_total
            .fetch_add(report.reaped, Ordering::Relaxed);
        if report.reaped > 0 {
            tracing::info!(
                examined = report.examined,
                reaped = report.reaped,
                "lifecycle sweep"
            );
        }
        Ok(report)
    }

    /// Delete `record` if it is due; false when it is not, or another writer got there first.
    async fn reap(&self, mut record: crate::store::ClientRecord) -> Result<bool> {
        let now = self.registrar.clock().now();
        let policies = self.registrar.policy();
        // A policy no longer configured: keep its clients (a delete cannot be undone).
        let exempt = |name: &str| {
            policies
                .policy_named(Some(name))
                .map_or(true, |p| p.is_none_or(|p| p.lifecycle_exempt()))
        };
        for _ in 0..MAX_RETRIES {
            let Some(reason) = reap_reason(&record, now, &self.settings, exempt) else {
                return Ok(false);
            };
            let who = (
                crate::events::audit::EventType::Reaped,
                crate::events::audit::Actor::system(),
                crate::events::Origin::default(),
            );
            if self.registrar.remove_record(&record, &who).await? {
                audit_reaped(&record, reason);
                return Ok(true);
            }
            // Changed or deleted since it was read (a use, or another replica's sweep).
            match self
                .registrar
                .store()
                .get(&record.client_id)
                .await
                .map_err(store_error)?
            {
                Some(newer) => record = newer,
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Sweep every `sweep_interval_secs` until the handle is stopped.
    pub fn spawn(self: Arc<Self>) -> SweeperHandle {
        let (stop, mut stopped) = watch::channel(false);
        let period = Duration::from_secs(self.settings.sweep_interval_secs.max(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if let Err(e) = self.sweep().await {
                            tracing::warn!(error = %e, "lifecycle sweep failed; retrying at the next interval");
                        }
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        SweeperHandle { stop, task }
    }
}

/// The running sweeper task.
pub struct SweeperHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SweeperHandle {
    /// Stop after the sweep in progress, if any.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
