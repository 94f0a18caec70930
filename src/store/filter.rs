//! Which clients a listing is about: plain predicates on single record fields, so a SQL store
//! can put them in the `WHERE` clause next to the keyset condition (`client_id > $after`).

use super::{source, ClientRecord};

/// A filter on clients (the admin API's listing and bulk deletion). Empty = every client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientFilter {
    /// RFC 7591 `software_id`, exact.
    pub software_id: Option<String>,
    /// Prefix of `client_name`.
    pub client_name: Option<String>,
    /// The admitting policy's name, exact.
    pub policy: Option<String>,
    /// The admitting tier, exact.
    pub tier: Option<String>,
    /// `registration` or `admin` (a record without `source` is `registration`).
    pub source: Option<String>,
    /// Disabled or not.
    pub disabled: Option<bool>,
    /// Created strictly before (seconds since the epoch; see [`ClientRecord::created`]).
    pub created_before: Option<i64>,
    /// Created strictly after.
    pub created_after: Option<i64>,
    /// Never used, or last used at least this many seconds before `now`.
    pub unused_for_secs: Option<i64>,
}

impl ClientFilter {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `record` is one of the clients meant, at time `now`.
    pub fn matches(&self, record: &ClientRecord, now: i64) -> bool {
        let text = |name: &str| record.metadata.get(name).and_then(|v| v.as_str());
        let created = record.created();
        self.software_id
            .as_deref()
            .is_none_or(|s| text("software_id") == Some(s))
            && self
                .client_name
                .as_deref()
                .is_none_or(|p| text("client_name").is_some_and(|n| n.starts_with(p)))
            && self
                .policy
                .as_deref()
                .is_none_or(|p| record.policy.as_deref() == Some(p))
            && self
                .tier
                .as_deref()
                .is_none_or(|t| record.tier.as_deref() == Some(t))
            && self
                .source
                .as_deref()
                .is_none_or(|s| record.source.as_deref().unwrap_or(source::REGISTRATION) == s)
            && self.disabled.is_none_or(|d| record.disabled == d)
            && self.created_before.is_none_or(|t| created < t)
            && self.created_after.is_none_or(|t| created > t)
            && self.unused_for_secs.is_none_or(|secs| {
                record
                    .last_used_at
                    .is_none_or(|at| now.saturating_sub(at) >= secs)
            })
    }
}

/// One page of [`super::ClientStore::list`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// The matching records, in `client_id` order.
    pub records: Vec<ClientRecord>,
    /// Where the next page starts (the last `client_id` examined); `None` at the end.
    pub next: Option<String>,
}
