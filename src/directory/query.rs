//! The query of `GET /admin/clients` and `DELETE /admin/clients`: filters (a
//! `store::ClientFilter`), `limit`, `cursor`, `dry_run`, parsed from the query pairs.

use crate::error::{RegistrationError, Result};
use crate::events::{AuditQuery, EventType};
use crate::store::ClientFilter;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// What the query is for; each accepts its own parameters besides the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `GET /admin/clients`: `limit`, `cursor`.
    List,
    /// `DELETE /admin/clients`: `dry_run`.
    Delete,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Which clients.
    pub filter: ClientFilter,
    /// Page size (1 to [`MAX_LIMIT`]).
    pub limit: usize,
    /// Start after this `client_id` (decoded from the opaque cursor).
    pub cursor: Option<String>,
    /// Only count (bulk deletion).
    pub dry_run: bool,
}

fn invalid(name: &str, why: &str) -> RegistrationError {
    RegistrationError::InvalidRequest(format!("query parameter {name}: {why}"))
}

fn integer(name: &str, value: &str) -> Result<i64> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| invalid(name, "must be a non-negative integer (seconds)"))
}

fn boolean(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, "must be true or false")),
    }
}

/// The `client_id` a cursor stands for.
fn decode_cursor(value: &str) -> Result<String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| !id.is_empty() && id.len() <= 512)
        .ok_or_else(|| {
            invalid(
                "cursor",
                "malformed; pass next_cursor of the previous page unchanged",
            )
        })
}

/// Largest page of `GET /admin/audit` and `GET /admin/webhooks/dead`.
pub const MAX_EVENTS_LIMIT: usize = 1000;

fn events_limit(name: &str, value: &str) -> Result<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_EVENTS_LIMIT).contains(n))
        .ok_or_else(|| {
            invalid(
                name,
                &format!("must be an integer from 1 to {MAX_EVENTS_LIMIT}"),
            )
        })
}

/// A `seq` cursor: 0 to 2^63 − 1 (a `seq` is a BIGINT on PostgreSQL).
fn cursor(name: &str, value: &str) -> Result<u64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| {
            invalid(
                name,
                "must be an integer from 0 to 2^63 - 1 (the next_cursor of the previous page)",
            )
        })
}

/// Each pair once: the first repeated name, refused.
fn once(pairs: &[(String, String)]) -> Result<()> {
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(invalid(name, "given more than once"));
        }
    }
    Ok(())
}

/// Parse the query of `GET /admin/audit` (issue #17 point 3): `after` (a `seq`, the previous
/// page's `next_cursor`), `limit` (1 to 1000, default 100), `client_id`, `event` (a client
/// event name or `audit.checkpoint`). Unknown, repeated and malformed parameters are refused,
/// naming them.
pub fn audit_query(pairs: &[(String, String)]) -> Result<AuditQuery> {
    once(pairs)?;
    let mut query = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    for (name, value) in pairs {
        match name.as_str() {
            "after" => query.after = cursor(name, value)?,
            "limit" => query.limit = events_limit(name, value)?,
            "client_id" if value.is_empty() => return Err(invalid(name, "must not be empty")),
            "client_id" => query.client_id = Some(value.clone()),
            "event" => {
                query.event = Some(EventType::parse(value).ok_or_else(|| {
                    let names: Vec<&str> = EventType::CLIENT_EVENTS
                        .iter()
                        .chain(&[EventType::Checkpoint])
                        .map(|e| e.as_str())
                        .collect();
                    invalid(name, &format!("unknown event; one of {}", names.join(", ")))
                })?)
            }
            _ => {
                return Err(invalid(
                    name,
                    "unknown; accepted: after, limit, client_id, event",
                ))
            }
        }
    }
    Ok(query)
}

/// The query of `GET /admin/webhooks/dead`: keyset by the outbox `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadQuery {
    /// Only deliveries with `seq` above this (the previous page's `next_cursor`).
    pub after: u64,
    /// Page size (1 to 1000).
    pub limit: usize,
}

impl DeadQuery {
    /// Parse `after` and `limit` (default 100); anything else is refused, naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self> {
        once(pairs)?;
        let mut query = DeadQuery {
            after: 0,
            limit: DEFAULT_LIMIT,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "after" => query.after = cursor(name, value)?,
                "limit" => query.limit = events_limit(name, value)?,
                _ => return Err(invalid(name, "unknown; accepted: after, limit")),
            }
        }
        Ok(query)
    }
}

impl ListQuery {
    /// Parse decoded query pairs. Unknown and repeated parameters are refused, naming them.
    pub fn parse(pairs: &[(String, String)], purpose: Purpose) -> Result<Self> {
        let mut query = ListQuery {
            filter: ClientFilter::default(),
            limit: DEFAULT_LIMIT,
            cursor: None,
            dry_run: false,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(invalid(name, "given more than once"));
            }
            seen.push(name);
            let text = || -> Result<Option<String>> {
                if value.is_empty() {
                    return Err(invalid(name, "must not be empty"));
                }
                Ok(Some(value.clone()))
            };
            let f = &mut query.filter;
            match (name.as_str(), purpose) {
                ("software_id", _) => f.software_id = text()?,
                ("client_name", _) => f.client_name = text()?,
                ("policy", _) => f.policy = text()?,
                ("tier", _) => f.tier = text()?,
                ("source", _) => f.source = text()?,
                ("disabled", _) => f.disabled = Some(boolean(name, value)?),
                ("created_before", _) => f.created_before = Some(integer(name, value)?),
                ("created_after", _) => f.created_after = Some(integer(name, value)?),
                ("unused_for_secs", _) => f.unused_for_secs = Some(integer(name, value)?),
                ("limit", Purpose::List) => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            invalid(name, &format!("must be an integer from 1 to {MAX_LIMIT}"))
                        })?;
                }
                ("cursor", Purpose::List) => query.cursor = Some(decode_cursor(value)?),
                ("dry_run", Purpose::Delete) => query.dry_run = boolean(name, value)?,
                _ => {
                    let accepted = match purpose {
                        Purpose::List => "limit, cursor",
                        Purpose::Delete => "dry_run",
                    };
                    return Err(invalid(
                        name,
                        &format!("unknown; accepted: software_id, client_name, policy, tier, source, disabled, created_before, created_after, unused_for_secs, {accepted}"),
                    ));
                }
            }
        }
        if purpose == Purpose::Delete && query.filter.is_empty() {
            // A bare DELETE /admin/clients would empty the directory; make that deliberate.
            return Err(RegistrationError::InvalidRequest(
                "DELETE /admin/clients needs at least one filter (created_after=0 matches every client, if that is what you mean)".into(),
            ));
        }
        Ok(query)
    }
}
