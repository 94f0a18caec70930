//! Injected randomness for identifiers and credentials.
//!
//! Production uses the operating system's CSPRNG; tests can use a seeded generator so that
//! responses are reproducible.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};
use std::sync::Mutex;

/// Number of random bytes in a `client_id` (128 bits, issue requirement).
pub const CLIENT_ID_BYTES: usize = 16;
/// Number of random bytes in a `client_secret` or registration access token (256 bits).
pub const SECRET_BYTES: usize = 32;

/// A source of URL-safe random tokens.
pub trait TokenGenerator: Send + Sync + 'static {
    /// Fill `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);

    /// `bytes` random bytes, base64url without padding (RFC 4648 §5): only unreserved URI
    /// characters, so the value is a valid RFC 7591 VSCHAR string and needs no escaping in paths.
    fn token(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.fill(&mut buf);
        URL_SAFE_NO_PAD.encode(buf)
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsTokens;

impl TokenGenerator for OsTokens {
    fn fill(&self, buf: &mut [u8]) {
        OsRng.fill_bytes(buf);
    }
}

/// A seeded generator for tests: the same seed gives the same tokens.
#[derive(Debug)]
pub struct SeededTokens(Mutex<StdRng>);

impl SeededTokens {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl TokenGenerator for SeededTokens {
    fn fill(&self, buf: &mut [u8]) {
        match self.0.lock() {
            Ok(mut rng) => rng.fill_bytes(buf),
            Err(poisoned) => poisoned.into_inner().fill_bytes(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_and_long_enough() {
        let t = OsTokens.token(SECRET_BYTES);
        assert_eq!(t.len(), 43);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(t, OsTokens.token(SECRET_BYTES));
    }

    #[test]
    fn seeded_tokens_repeat() {
        assert_eq!(
            SeededTokens::new(7).token(16),
            SeededTokens::new(7).token(16)
        );
    }
}
