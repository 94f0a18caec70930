//! Every secret the registrar handles lives here: `client_secret` hashing (argon2id) and the
//! registration access token's keyed hash (HMAC-SHA-256). Plaintext values exist only in the
//! response that issues them; `Debug` never shows them.

use crate::error::{RegistrationError, Result};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Longest presented secret or token we will hash; anything longer cannot be ours and is
/// refused before it costs CPU.
pub const MAX_PRESENTED_LEN: usize = 512;

/// A plaintext secret or token. Its `Debug` is redacted so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(String);

impl Plaintext {
    /// Wrap a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The value, for the one response that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext(<redacted>)")
    }
}

/// argon2id hashing of `client_secret` values (RFC 7591 §3.2.1 secrets are stored only hashed).
///
/// Hashing runs on tokio's blocking pool behind a semaphore, so at most `concurrency` hashes
/// (each allocating `m` KiB) run at once and the HTTP workers are never blocked by it.
#[derive(Clone)]
pub struct SecretHasher {
    params: Params,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHasher")
            .field("params", &self.params)
            .finish()
    }
}

impl SecretHasher {
    /// A hasher with the given argon2id cost parameters and concurrency bound.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        concurrency: usize,
    ) -> Result<Self> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| RegistrationError::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `secret`.
    pub async fn hash(&self, secret: &Plaintext) -> Result<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RegistrationError::Internal("hash pool closed".into()))?;
        let argon2 = self.argon2();
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || {
            lower_hashing_thread_priority();
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(secret.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| RegistrationError::Internal(format!("argon2 hash: {e}")))
        })
        .await
        .map_err(|e| RegistrationError::Internal(format!("hash task: {e}")))?
    }

    /// Whether `presented` matches the stored PHC string. argon2's verifier compares the
    /// derived tags in constant time.
    pub async fn verify(&self, presented: &str, phc: &str) -> Result<bool> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
            return Ok(false);
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RegistrationError::Internal("hash pool closed".into()))?;
        let argon2 = self.argon2();
        let presented = presented.to_owned();
        let phc = phc.to_owned();
        tokio::task::spawn_blocking(move || {
            lower_hashing_thread_priority();
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| RegistrationError::Internal(format!("stored hash: {e}")))?;
            Ok(argon2
                .verify_password(presented.as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(|e| RegistrationError::Internal(format!("verify task: {e}")))?
    }
}

/// Nice value of the threads that run argon2 (the blocking pool runs nothing else).
const HASHING_NICE: libc::c_int = 10;

/// Run the calling (blocking-pool) thread at a lower CPU priority, once per thread, so that when
/// the cores are saturated the HTTP workers win them: a burst of registrations slows other
/// registrations, never reads (measured in BENCHMARKS.md). When the cores are otherwise idle the
/// hashes still get all of them, so the registration rate is unchanged.
fn lower_hashing_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        LOWERED.with(|lowered| {
            if !lowered.replace(true) {
                // SAFETY: plain syscall wrapper touching no memory. On Linux the nice value is
                // per thread, and `who = 0` with PRIO_PROCESS names the calling thread only.
                // Failure (e.g. a seccomp filter) just leaves the priority as it was.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICE);
                }
            }
        });
    }
}

/// The server key under which registration access tokens are stored as HMAC-SHA-256 tags
/// (the approach Hydra takes: a 256-bit random token needs no slow hash, and a keyed hash
/// is useless to someone who steals only the store).
#[derive(Clone)]
pub struct RatKey(Arc<[u8]>);

impl fmt::Debug for RatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RatKey(<redacted>)")
    }
}

/// Length of a stored token tag in bytes.
pub const TAG_LEN: usize = 32;

impl RatKey {
    /// Build from raw key bytes (at least 32).
    pub fn new(key: Vec<u8>) -> Result<Self> {
        if key.len() < 32 {
            return Err(RegistrationError::Internal(
                "server key must be at least 32 bytes".into(),
            ));
        }
        Ok(Self(key.into()))
    }

    /// Decode a base64url key (padding optional).
    pub fn from_base64(encoded: &str) -> Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .map_err(|e| {
                RegistrationError::Internal(format!("server key is not base64url: {e}"))
            })?;
        Self::new(bytes)
    }

    /// The tag stored for `token`.
    pub fn tag(&self, token: &str) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of `presented` against a stored tag.
    pub fn matches(&self, presented: &str, stored: &[u8]) -> bool {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
            return false;
        }
        let tag = self.tag(presented);
        stored.len() == TAG_LEN && bool::from(tag.as_slice().ct_eq(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verifies_only_the_same_secret() {
        let hasher = SecretHasher::new(256, 1, 1, 2).unwrap();
        let phc = hasher.hash(&Plaintext::new("s3cret".into())).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert!(hasher.verify("s3cret", &phc).await.unwrap());
        assert!(!hasher.verify("s3creT", &phc).await.unwrap());
        assert!(!hasher.verify("", &phc).await.unwrap());
    }

    #[test]
    fn rat_tags_are_keyed() {
        let a = RatKey::new(vec![1; 32]).unwrap();
        let b = RatKey::new(vec![2; 32]).unwrap();
        let tag = a.tag("token");
        assert!(a.matches("token", &tag));
        assert!(!a.matches("token2", &tag));
        assert!(!b.matches("token", &tag));
        assert!(!a.matches("token", &tag[..31]));
    }

    #[test]
    fn plaintext_debug_is_redacted() {
        let p = Plaintext::new("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
