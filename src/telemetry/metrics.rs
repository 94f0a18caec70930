//! The Prometheus registry and every instrument of the registrar.
//!
//! Why the `prometheus` crate and not `metrics` + its exporter: `metrics` records into one
//! process-global recorder, while a `prometheus::Registry` is a value that each `Application`
//! owns (convention 9, no globals), so two servers in one process (every API test) count only
//! their own work, and the scrape of one is exactly what it did. The crate also ships the
//! standard `process_*` collector.
//!
//! Names follow the Prometheus naming practices: base units (`_seconds`), `_total` on counters,
//! and bounded label values only (route patterns, never raw paths; RFC error codes; fixed kinds).
//! Every instrument is one method here, so the code being measured carries a one-line call.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The content type of the Prometheus text exposition format, version 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets (seconds) for requests and store writes: 0.5 ms to 10 s, covering a cached
/// read, an fsync and a slow outbound fetch.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Writers per group commit (one fsync): powers of two up to the largest batches observed.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The methods counted by name; anything else is `OTHER`, so a client inventing methods cannot
/// create series.
const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// The metrics of one running registrar.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    registrations: IntCounterVec,
    clients: IntGauge,
    authentications: IntCounterVec,
    store_write: Histogram,
    commit_batch: Histogram,
    hash_queue: IntGauge,
    fetches: IntCounterVec,
    webhook_deliveries: IntCounterVec,
    db_retries: IntCounter,
    db_group_redos: IntCounter,
    authentication_cache_hits: IntCounter,
    /// `registrar_store_record_cache_lookups_total` by (tree, outcome), resolved once: a read
    /// counts one or two of these.
    record_cache: [[IntCounter; 2]; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// The definitions below are constants: a failure is a bug in this file (an invalid name or a
// duplicate), caught by every test that builds an Application, never something input can cause.
const STATIC: &str = "static metric definition";

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect(STATIC);
    registry.register(Box::new(c.clone())).expect(STATIC);
    c
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect(STATIC);
    registry.register(Box::new(c.clone())).expect(STATIC);
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect(STATIC);
    registry.register(Box::new(g.clone())).expect(STATIC);
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect(STATIC);
    registry.register(Box::new(h.clone())).expect(STATIC);
    h
}

impl Metrics {
    /// A fresh registry with every instrument (and, on Linux, the `process_*` metrics).
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "registrar_http_request_duration_seconds",
                "Time from the request head to the response head, by route pattern.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["listener", "route", "method"],
        )
        .expect(STATIC);
        registry
            .register(Box::new(http_duration.clone()))
            .expect(STATIC);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect(STATIC);
        Self {
            http_requests: counter(
                &registry,
                "registrar_http_requests_total",
                "HTTP requests answered, by listener, route pattern, method and status.",
                &["listener", "route", "method", "status"],
            ),
            http_duration,
            registrations: counter(
                &registry,
                "registrar_registrations_total",
                "Registration requests (RFC 7591 §3), by outcome (created or the error code) and admitting tier.",
                &["outcome", "tier"],
            ),
            clients: gauge(&registry, "registrar_clients", "Registered clients."),
            authentications: counter(
                &registry,
                "registrar_authentications_total",
                "Client authentications (registration access tokens, RFC 7592 §2), by outcome.",
                &["outcome"],
            ),
            store_write: histogram(
                &registry,
                "registrar_store_write_duration_seconds",
                "Time a write waits until the store reports it durable (the group commit's sync included).",
                LATENCY_BUCKETS,
            ),
            commit_batch: histogram(
                &registry,
                "registrar_store_commit_batch_size",
                "Writers made durable by one group commit (one sync).",
                BATCH_BUCKETS,
            ),
            hash_queue: gauge(
                &registry,
                "registrar_hash_queue_depth",
                "Requests waiting for an argon2id hashing slot.",
            ),
            fetches: counter(
                &registry,
                "registrar_fetch_total",
                "Outbound fetches, by kind (sector, jwks, cimd) and outcome (ok or the failure class).",
                &["kind", "outcome"],
            ),
            webhook_deliveries: counter(
                &registry,
                "registrar_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome.",
                &["outcome"],
            ),
            db_retries: plain_counter(
                &registry,
                "registrar_db_retries_total",
                "Database transactions retried after a serialization failure (SQLSTATE 40001).",
            ),
            db_group_redos: plain_counter(
                &registry,
                "registrar_db_group_redos_total",
                "PostgreSQL group commits whose savepoint-free bulk met a batch it would refuse (a conflict, a counter at its limit), so the group was applied again with a savepoint per batch.",
            ),
            authentication_cache_hits: plain_counter(
                &registry,
                "registrar_authentication_cache_hits_total",
                "Admin client authentications (RFC 6749 §2.3.1) answered from the cache of recently verified secrets, without argon2id.",
            ),
            record_cache: {
                let v = counter(
                    &registry,
                    "registrar_store_record_cache_lookups_total",
                    "Lookups of the sled store (tree clients: a record; rat: a token's index entry), by whether its record cache answered them (outcome hit or miss).",
                    &["tree", "outcome"],
                );
                let pair = |tree: &str| {
                    [
                        v.with_label_values(&[tree, "hit"]),
                        v.with_label_values(&[tree, "miss"]),
                    ]
                };
                [pair("clients"), pair("rat")]
            },
            registry,
        }
    }

    /// One answered HTTP request. `route` is the matched pattern (or `unmatched`).
    pub fn http_request(&self, listener: &str, route: &str, method: &str, status: u16, secs: f64) {
        let method = KNOWN_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(method))
            .copied()
            .unwrap_or("OTHER");
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[listener, route, method, &status])
            .inc();
        self.http_duration
            .with_label_values(&[listener, route, method])
            .observe(secs);
    }

    /// One registration request: `outcome` is `created` or the RFC 7591 §3.2.2 (or transport)
    /// error code; `tier` one of `policy::tier`, or `none` when admission did not get that far.
    pub fn registration(&self, outcome: &str, tier: &str) {
        self.registrations.with_label_values(&[outcome, tier]).inc();
    }

    /// One authentication of a client (`success` or `failure`).
    pub fn authentication(&self, outcome: &str) {
        self.authentications.with_label_values(&[outcome]).inc();
    }

    /// One write made durable after `secs`.
    pub fn store_write(&self, secs: f64) {
        self.store_write.observe(secs);
    }

    /// One group commit that answered `writers` waiters.
    pub fn commit_batch(&self, writers: usize) {
        self.commit_batch.observe(writers as f64);
    }

    /// One outbound fetch of `kind` (`sector`, `jwks`, `cimd`) with a bounded `outcome`.
    pub fn fetch(&self, kind: &str, outcome: &str) {
        self.fetches.with_label_values(&[kind, outcome]).inc();
    }

    /// One webhook delivery attempt (`delivered`, `failed`, ...).
    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries.with_label_values(&[outcome]).inc();
    }

    /// One admin authentication answered from the cache of verified secrets
    /// (`admin.authenticate_cache_ttl_secs`).
    pub fn authentication_cache_hit(&self) {
        self.authentication_cache_hits.inc();
    }

    /// One sled lookup in `tree` (`clients` or `rat`) answered from the record cache or not.
    pub fn record_cache(&self, tree: &str, hit: bool) {
        let t = usize::from(tree != "clients");
        self.record_cache[t][usize::from(!hit)].inc();
    }

    /// One database transaction retried (PostgreSQL backend).
    pub fn db_retry(&self) {
        self.db_retries.inc();
    }

    /// One PostgreSQL group commit redone with savepoints after its bulk.
    pub fn db_group_redo(&self) {
        self.db_group_redos.inc();
    }

    /// Set `registrar_clients` (read at scrape time rather than tracked on every change).
    pub fn set_clients(&self, clients: u64) {
        self.clients.set(i64::try_from(clients).unwrap_or(i64::MAX));
    }

    /// Set `registrar_hash_queue_depth` (read at scrape time).
    pub fn set_hash_queue_depth(&self, depth: usize) {
        self.hash_queue
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Everything in the Prometheus text format ([`TEXT_CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed family, which this file cannot build.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn unknown_methods_share_one_series_and_statuses_are_codes() {
        let m = Metrics::new();
        m.http_request("public", "/register", "BREW", 404, 0.001);
        m.http_request("public", "/register", "COFFEE", 404, 0.001);
        m.http_request("public", "/register", "post", 201, 0.001);
        let text = m.render();
        assert!(
            line(&text, r#"registrar_http_requests_total{listener="public",method="OTHER",route="/register",status="404"} 2"#).is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"registrar_http_requests_total{listener="public",method="POST",route="/register",status="201"} 1"#).is_some(),
            "{text}"
        );
    }

    #[test]
    fn gauges_and_batches_render() {
        let m = Metrics::new();
        m.set_clients(7);
        m.set_hash_queue_depth(2);
        m.commit_batch(3);
        m.record_cache("clients", true);
        m.record_cache("clients", true);
        m.record_cache("rat", false);
        let text = m.render();
        for expected in [
            r#"registrar_store_record_cache_lookups_total{outcome="hit",tree="clients"} 2"#,
            r#"registrar_store_record_cache_lookups_total{outcome="miss",tree="clients"} 0"#,
            r#"registrar_store_record_cache_lookups_total{outcome="miss",tree="rat"} 1"#,
        ] {
            assert!(line(&text, expected).is_some(), "{expected} in {text}");
        }
        assert!(line(&text, "registrar_clients 7").is_some(), "{text}");
        assert!(
            line(&text, "registrar_hash_queue_depth 2").is_some(),
            "{text}"
        );
        assert!(
            line(
                &text,
                r#"registrar_store_commit_batch_size_bucket{le="4"} 1"#
            )
            .is_some(),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        assert!(
            line(&text, "process_resident_memory_bytes").is_some(),
            "{text}"
        );
    }
}
