//! The audit trail of a running server, read through its admin API (`GET /admin/audit`, scope
//! `audit:read`), for `registrar audit verify --admin-url URL`: the same verification as
//! offline, over the records the server lists.
//!
//! What the API cannot show: a stored row that no longer decodes is skipped by the listing, so
//! online it appears as a gap at the next `seq` (offline names the row itself).

use super::{AuditLog, AuditRecord, Checkpoint, StoredAudit};
use crate::store::{BoxFuture, StoreError};

/// The admin API's `GET /admin/audit` as an [`AuditLog`] (reading only).
pub struct RemoteAuditLog {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl RemoteAuditLog {
    /// The trail of the admin listener at `base` (e.g. `http://127.0.0.1:8081`), read with an
    /// admin `token` that has `audit:read`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: format!("{}/admin/audit", base.trim_end_matches('/')),
            token: token.to_owned(),
        }
    }
}

#[derive(serde::Deserialize)]
struct Page {
    records: Vec<AuditRecord>,
}

impl AuditLog for RemoteAuditLog {
    fn audit_scan(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
        Box::pin(async move {
            let url = &self.url;
            let limit = limit.clamp(1, crate::directory::MAX_EVENTS_LIMIT);
            let response = self
                .http
                .get(url)
                .bearer_auth(&self.token)
                .query(&[("after", after.to_string()), ("limit", limit.to_string())])
                .send()
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot reach the admin API at {url}: {e}"))
                })?;
            let status = response.status();
            let text = response.text().await.map_err(|e| {
                StoreError::Unavailable(format!("reading the answer of {url}: {e}"))
            })?;
            if !status.is_success() {
                return Err(StoreError::Unavailable(format!(
                    "{url} answered {status}: {text}"
                )));
            }
            let page: Page = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("{url} answered with a bad page: {e}")))?;
            Ok(page
                .records
                .into_iter()
                .map(|r| StoredAudit {
                    key: r.seq,
                    record: Ok(r),
                })
                .collect())
        })
    }

    fn audit_prune(
        &self,
        _cutoff: i64,
        _now: i64,
    ) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        Box::pin(async {
            Err(StoreError::Unavailable(
                "retention runs on the server (audit.retention_days), not through the admin API"
                    .into(),
            ))
        })
    }
}
