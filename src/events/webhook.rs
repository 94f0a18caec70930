//! Webhooks in the Standard Webhooks format (standardwebhooks.com, spec v1): the secret, the
//! signature, the payload, the durable outbox row and the `[[webhooks]]` settings.
//!
//! A delivery is a POST of `{"type", "timestamp", "data"}` with
//! `webhook-id` (stable across retries and restarts, so receivers can deduplicate),
//! `webhook-timestamp` (seconds, of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//! the base64 part of the `whsec_…` secret.

use super::audit::{ClientViewRef, EventType};
use crate::store::ClientRecord;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// The default of `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// A webhook signing secret (`whsec_` + base64 of at least 24 bytes). Never logged.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parse `whsec_<base64>`; the key must decode to 24..=64 bytes (Standard Webhooks).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or("must start with whsec_ (Standard Webhooks secret format)")?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "the part after whsec_ is not base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "the key must be 24 to 64 bytes, it is {} (Standard Webhooks)",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The three Standard Webhooks headers for one attempt.
    pub fn headers(&self, id: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.sign(id, timestamp, body)),
        ]
    }
}

/// One `[[webhooks]]` entry.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where to POST; `https` only, under the `[fetch]` address rules.
    pub url: String,
    /// `whsec_` + base64 key.
    pub secret: String,
    /// Event names (`client.registered`, …) or `*` for every client event.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Attempts before the event is dead-lettered (`GET /admin/webhooks/dead`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl WebhookSettings {
    /// Check one entry: https URL without userinfo, a valid secret, known event names.
    pub fn check(&self) -> Result<(), String> {
        // The address rules are applied again on every attempt; here only the form.
        crate::fetch::check_url(&self.url, true)
            .map_err(|e| format!("webhooks.url {:?} {e}", self.url))?;
        WebhookSecret::parse(&self.secret)
            .map_err(|e| format!("webhooks.secret of {}: {e}", self.url))?;
        for name in &self.events {
            if name != "*" && !EventType::CLIENT_EVENTS.iter().any(|e| e.as_str() == name) {
                return Err(format!(
                    "webhooks.events of {}: unknown event {name:?}",
                    self.url
                ));
            }
        }
        if self.max_attempts == 0 {
            return Err(format!("webhooks.max_attempts of {} must be > 0", self.url));
        }
        Ok(())
    }

    /// Whether this hook wants `event` (checkpoints are never sent).
    pub fn wants(&self, event: EventType) -> bool {
        event != EventType::Checkpoint
            && self.events.iter().any(|n| n == "*" || n == event.as_str())
    }
}

/// A durable webhook delivery, written in the same atomic write as the change it reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Queue order, assigned by the store in the write (0 before). Deliveries for one
    /// `(hook, client_id)` go strictly in this order.
    pub seq: u64,
    /// The `webhook-id`: the same on every attempt, after a restart, and on redelivery.
    pub id: String,
    /// The hook's `url`, which identifies it in `[[webhooks]]`.
    pub hook: String,
    pub client_id: String,
    pub event: EventType,
    /// The exact JSON body, fixed at commit time so every attempt signs the same bytes.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (seconds since the epoch).
    pub next_attempt_at: i64,
    /// Why the last attempt failed (a status code or a transport error, never the response body).
    pub last_error: Option<String>,
    /// Given up after `max_attempts`; listed at `GET /admin/webhooks/dead`.
    #[serde(default)]
    pub dead: bool,
}

impl OutboxRow {
    /// After a failed attempt that will be retried.
    pub fn retried(&mut self, attempts: u32, next_attempt_at: i64, last_error: &str) {
        self.attempts = attempts;
        self.next_attempt_at = next_attempt_at;
        self.last_error = Some(last_error.to_owned());
    }

    /// After the last allowed attempt failed.
    pub fn dead_lettered(&mut self, attempts: u32, last_error: &str) {
        self.attempts = attempts;
        self.last_error = Some(last_error.to_owned());
        self.dead = true;
    }

    /// Back in the queue, due at `now`, attempts counted afresh.
    pub fn redelivered(&mut self, now: i64) {
        self.attempts = 0;
        self.next_attempt_at = now;
        self.dead = false;
    }
}

/// A change to the outbox, applied by the store.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOp {
    /// Add a row (its `seq` is assigned by the store).
    Enqueue(OutboxRow),
    /// The receiver acknowledged (2xx): remove the row.
    Delivered { seq: u64 },
    /// An attempt failed; try again at `next_attempt_at`.
    Retry {
        seq: u64,
        attempts: u32,
        next_attempt_at: i64,
        last_error: String,
    },
    /// `max_attempts` reached: keep the row as dead, out of the delivery order.
    DeadLetter {
        seq: u64,
        attempts: u32,
        last_error: String,
    },
    /// Put a dead row back in the queue, due at `now`, with its attempts reset.
    Redeliver { seq: u64, now: i64 },
}

/// The outbox rows for one change: one per configured hook that wants `event`. `id` gives
/// each row its `webhook-id` (random, from the injected generator); `after` is the client after
/// the change (`None` once removed).
pub fn rows_for(
    hooks: &[WebhookSettings],
    event: EventType,
    time: i64,
    client_id: &str,
    after: Option<&ClientRecord>,
    mut id: impl FnMut() -> String,
) -> Vec<OutboxRow> {
    let hooks: Vec<&WebhookSettings> = hooks.iter().filter(|h| h.wants(event)).collect();
    if hooks.is_empty() {
        return Vec::new();
    }
    let body = payload_text(event, time, client_id, after);
    hooks
        .into_iter()
        .map(|h| OutboxRow {
            seq: 0,
            id: id(),
            hook: h.url.clone(),
            client_id: client_id.to_owned(),
            event,
            body: body.clone(),
            attempts: 0,
            next_attempt_at: time,
            last_error: None,
            dead: false,
        })
        .collect()
}

/// `{"type", "timestamp", "data"}` (Standard Webhooks payload structure): `data` is the client
/// view, or `{client_id}` when the client is gone.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: PayloadData<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PayloadData<'a> {
    View(ClientViewRef<'a>),
    Gone { client_id: &'a str },
}

impl<'a> Payload<'a> {
    fn new(
        event: EventType,
        time: i64,
        client_id: &'a str,
        after: Option<&'a ClientRecord>,
    ) -> Self {
        let data = match after {
            Some(record) if !event.removes_client() => PayloadData::View(ClientViewRef(record)),
            _ => PayloadData::Gone { client_id },
        };
        Self {
            kind: event.as_str(),
            timestamp: rfc3339(time),
            data,
        }
    }
}

/// The payload of a change as a JSON value (see [`Payload`]).
pub fn payload(
    event: EventType,
    time: i64,
    client_id: &str,
    after: Option<&ClientRecord>,
) -> Value {
    // String keys and JSON values only: serialising cannot fail.
    serde_json::to_value(Payload::new(event, time, client_id, after)).unwrap_or_default()
}

/// [`payload`] as the text that is sent, written from the record without building the view
/// first (the same bytes: a unit test compares the two).
pub fn payload_text(
    event: EventType,
    time: i64,
    client_id: &str,
    after: Option<&ClientRecord>,
) -> String {
    // String keys and JSON values only: serialising cannot fail.
    serde_json::to_string(&Payload::new(event, time, client_id, after)).unwrap_or_default()
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339), by the civil-from-days
/// algorithm (H. Hinnant), to avoid a date crate for one format.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The example of the Standard Webhooks reference libraries (python/tests, js/src/index.test.ts).
    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let headers = secret.headers("msg_1", 5, "{}");
        assert_eq!(headers[0], ("webhook-id", "msg_1".into()));
        assert_eq!(headers[1], ("webhook-timestamp", "5".into()));
        assert!(headers[2].1.starts_with("v1,"));
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_a_sane_length() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_%%%").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        assert_eq!(
            format!(
                "{:?}",
                WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
            ),
            "WebhookSecret(..)"
        );
    }

    /// A hook for `https://hooks.example/in` with the test-vector secret (shared fixture).
    pub(crate) fn hook(events: &[&str]) -> WebhookSettings {
        WebhookSettings {
            url: "https://hooks.example/in".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: events.iter().map(|s| (*s).to_owned()).collect(),
            max_attempts: 3,
        }
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(hook(&["*"]).check(), Ok(()));
        assert!(hook(&["client.nope"])
            .check()
            .unwrap_err()
            .contains("client.nope"));
        let mut h = hook(&["*"]);
        h.url = "http://hooks.example/in".into();
        assert!(h.check().is_err());
        h.url = "https://u:p@hooks.example/in".into();
        assert!(h.check().is_err());
        let mut h = hook(&["*"]);
        h.secret = "plain".into();
        let e = h.check().unwrap_err();
        assert!(e.contains("whsec_") && !e.contains("plain"), "{e}");
        let mut h = hook(&["*"]);
        h.max_attempts = 0;
        assert!(h.check().is_err());
        assert!(!format!("{:?}", hook(&["*"])).contains("MfKQ"));
    }

    #[test]
    fn hooks_get_the_events_they_subscribe_to_and_never_checkpoints() {
        assert!(hook(&["*"]).wants(EventType::Deleted));
        assert!(!hook(&["*"]).wants(EventType::Checkpoint));
        let h = hook(&["client.registered"]);
        assert!(h.wants(EventType::Registered));
        assert!(!h.wants(EventType::Updated));
        let rows = rows_for(
            std::slice::from_ref(&h),
            EventType::Updated,
            1,
            "c",
            None,
            || "x".into(),
        );
        assert!(rows.is_empty());
    }

    #[test]
    fn payloads_carry_the_view_or_only_the_client_id() {
        let record = crate::store::contract::named("c1", "A");
        let p = payload(EventType::Registered, 0, "c1", Some(&record));
        assert_eq!(p["type"], "client.registered");
        assert_eq!(p["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(p["data"]["client_name"], "A");
        assert!(!p.to_string().contains("argon2"));
        let p = payload(EventType::Deleted, 0, "c1", None);
        assert_eq!(p["data"], json!({"client_id": "c1"}));
        // What is sent is the same text, member for member, written without the map.
        let mut full = record.clone();
        full.client_secret_expires_at = Some(0);
        full.software_statement = Some("e.y.j".into());
        full.metadata
            .insert("redirect_uris".into(), json!(["https://a/\u{e9}\"q"]));
        full.metadata
            .insert("jwks".into(), json!({"keys": [{"kty": "EC", "n": 1.5}]}));
        for (event, after) in [
            (EventType::Registered, Some(&record)),
            (EventType::Updated, Some(&full)),
            (EventType::Deleted, Some(&full)),
            (EventType::Deleted, None),
        ] {
            assert_eq!(
                payload_text(event, 1_764_000_000, "c1", after),
                payload(event, 1_764_000_000, "c1", after).to_string()
            );
        }

        let mut n = 0;
        let rows = rows_for(
            &[
                hook(&["*"]),
                WebhookSettings {
                    url: "https://b.example/".into(),
                    ..hook(&["*"])
                },
            ],
            EventType::Registered,
            7,
            "c1",
            Some(&record),
            || {
                n += 1;
                format!("msg_{n}")
            },
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id.as_str(), rows[1].id.as_str()),
            ("msg_1", "msg_2")
        );
        assert_eq!(rows[0].body, rows[1].body);
        assert_eq!(rows[1].hook, "https://b.example/");
        assert_eq!(rows[0].next_attempt_at, 7);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_614_265_330), "2021-02-25T15:02:10Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
