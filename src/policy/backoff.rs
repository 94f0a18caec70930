//! Back-off after failed `client_secret` checks, per client (security.md §3: "rate-limit failed
//! attempts per client_id"; issue #12 item 1).
//!
//! A PUT that sends back a wrong `client_secret` fails before the compare-and-swap, so its
//! registration access token is not rotated and the same request can be replayed at will; each
//! replay costs one argon2id verification (19 MiB, tens of ms). After `free_failures` failures
//! in a row, each further failure blocks the client's secret checks for twice as long as the
//! one before (1 s, 2 s, 4 s, ... up to `max_secs`), and a blocked check is refused before any
//! hashing. A correct secret clears the record.
//!
//! Time comes from the injected clock (seconds), so tests move it instead of sleeping.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most clients remembered at once; past it, records whose block has expired are dropped, and
/// if none has, the new failure is not remembered (memory stays bounded).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: i64,
    last_failure: i64,
}

/// Failed-secret records per client.
#[derive(Debug)]
pub struct FailureBackoff {
    free_failures: u32,
    max_secs: u64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl FailureBackoff {
    /// `free_failures` = 0 turns the back-off off.
    pub fn new(free_failures: u32, max_secs: u64) -> Self {
        Self {
            free_failures,
            max_secs: max_secs.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(seconds to wait)` while `client_id`'s secret checks are blocked at `now`.
    pub fn check(&self, client_id: &str, now: i64) -> Result<(), u64> {
        if self.free_failures == 0 {
            return Ok(());
        }
        match self.entries().get(client_id) {
            Some(e) if e.blocked_until > now => Err((e.blocked_until - now) as u64),
            _ => Ok(()),
        }
    }

    /// Record a failed check of `client_id`'s secret at `now`.
    pub fn failed(&self, client_id: &str, now: i64) {
        if self.free_failures == 0 {
            return;
        }
        let max = self.max_secs as i64;
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(client_id) {
            // A record whose last failure is older than the longest block has no effect left.
            entries.retain(|_, e| e.blocked_until > now || e.last_failure + max > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        let e = entries.entry(client_id.to_owned()).or_insert(Entry {
            failures: 0,
            blocked_until: 0,
            last_failure: now,
        });
        // A client that stayed quiet for the longest block starts over.
        if e.last_failure + max <= now {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures > self.free_failures {
            let doublings = (e.failures - self.free_failures - 1).min(62);
            let secs = (1i64 << doublings).min(max);
            e.blocked_until = now.saturating_add(secs);
        }
    }

    /// A correct secret: forget the client's failures.
    pub fn succeeded(&self, client_id: &str) {
        if self.free_failures > 0 {
            self.entries().remove(client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_block_for_doubling_times() {
        let b = FailureBackoff::new(3, 60);
        for _ in 0..3 {
            assert_eq!(b.check("c", 100), Ok(()));
            b.failed("c", 100);
        }
        assert_eq!(b.check("c", 100), Ok(()), "three free failures");
        b.failed("c", 100);
        assert_eq!(b.check("c", 100), Err(1));
        assert_eq!(b.check("other", 100), Ok(()), "per client");
        assert_eq!(b.check("c", 101), Ok(()));
        b.failed("c", 101);
        assert_eq!(b.check("c", 101), Err(2));
        b.failed("c", 103);
        assert_eq!(b.check("c", 103), Err(4));
        for t in 104..120 {
            b.failed("c", t);
        }
        assert_eq!(b.check("c", 119), Err(60), "capped at max_secs");
        b.succeeded("c");
        assert_eq!(b.check("c", 119), Ok(()));
    }

    #[test]
    fn a_quiet_client_starts_over_and_zero_turns_it_off() {
        let b = FailureBackoff::new(1, 10);
        b.failed("c", 0);
        b.failed("c", 0);
        assert!(b.check("c", 0).is_err());
        b.failed("c", 20);
        assert_eq!(b.check("c", 20), Ok(()), "the count restarted");
        let off = FailureBackoff::new(0, 10);
        for _ in 0..10 {
            off.failed("c", 0);
        }
        assert_eq!(off.check("c", 0), Ok(()));
    }
}
