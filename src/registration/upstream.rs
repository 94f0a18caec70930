//! The background task that keeps the authorization server's metadata in the discovery
//! documents (`discovery.authorization_server_metadata_url`; RFC 8414 §3, OpenID Connect
//! Discovery §4). It fetches through the SSRF-safe [`Fetcher`] (so `fetch.allow_private_addresses`
//! and `fetch.extra_root_ca_file` apply), at start and then every refresh interval. A failure
//! keeps the last good metadata and is retried with a backoff: an authorization server that is
//! down when the registrar starts is a warning, never a crash.

use super::discovery::Discovery;
use crate::fetch::Fetcher;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Longest wait between two attempts after failures, whatever the refresh interval.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// When to fetch.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// After a successful fetch (`discovery.authorization_server_metadata_refresh_secs`).
    pub refresh: Duration,
    /// First wait after a failure; doubled per failure up to the refresh interval (and at most
    /// five minutes). Not shorter than the fetcher's negative cache (`fetch.failure_ttl_ms`),
    /// which would refuse an earlier attempt anyway.
    pub first_retry: Duration,
}

/// The running refresh task; stopped by [`UpstreamTask::stop`] or when dropped.
pub struct UpstreamTask {
    handle: Option<JoinHandle<()>>,
}

impl UpstreamTask {
    /// Start fetching `url` into `discovery` on the current Tokio runtime.
    pub fn spawn(
        runtime: &tokio::runtime::Handle,
        discovery: Arc<Discovery>,
        fetcher: Fetcher,
        url: String,
        schedule: Schedule,
    ) -> Self {
        let handle = runtime.spawn(run(discovery, fetcher, url, schedule));
        Self {
            handle: Some(handle),
        }
    }

    /// Stop the task and wait until it has ended.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for UpstreamTask {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

async fn run(discovery: Arc<Discovery>, fetcher: Fetcher, url: String, schedule: Schedule) {
    let max_retry = schedule.refresh.min(MAX_RETRY);
    let first_retry = schedule
        .first_retry
        .max(Duration::from_secs(1))
        .min(max_retry);
    let mut retry = first_retry;
    let mut last = None;
    loop {
        let problem = match fetcher.get_json(&url).await {
            Ok(Value::Object(metadata)) => {
                if last.as_ref() != Some(&metadata) {
                    for warning in discovery.apply_upstream(&metadata) {
                        tracing::warn!(url = %url, "{warning}");
                    }
                    tracing::info!(
                        url = %url,
                        members = metadata.len(),
                        "authorization server metadata published in discovery"
                    );
                    last = Some(metadata);
                }
                retry = first_retry;
                tokio::time::sleep(schedule.refresh).await;
                continue;
            }
            Ok(_) => "is not a JSON object".to_owned(),
            Err(e) => e.to_string(),
        };
        let kept = if last.is_some() {
            "the documents keep the last metadata fetched"
        } else {
            "the documents lack the authorization server's endpoints until it answers"
        };
        tracing::warn!(
            url = %url,
            "discovery.authorization_server_metadata_url {problem}; {kept}; retrying in {} s",
            retry.as_secs()
        );
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(max_retry);
    }
}
