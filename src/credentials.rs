//! Every secret the registrar handles lives here: `client_secret` hashing (argon2id), the
//! optional recoverable (derived) secrets that `client_secret_jwt` and HS* algorithms need, and
//! the registration access token's keyed hash (HMAC-SHA-256). Plaintext values exist only in the
//! response that issues them; `Debug` never shows them.
//!
//! Recoverable secrets: `client_secret_jwt` (OIDC Core §9) and secret-keyed JOSE algorithms
//! (HS*, `dir`, `A*KW`; OIDC Core §10.1, §10.2) need the plaintext secret on the server, which an
//! argon2id hash cannot give back. When the operator configures a derivation key, such secrets
//! are *derived* instead of drawn: `secret = base64url(HMAC-SHA-256(key, label ‖ client_id ‖ nonce))`,
//! and the store keeps only the random nonce. Nothing reversible is stored; whoever holds the key
//! (this server, or a token endpoint given the same key) recomputes the secret with
//! [`SecretHasher::recover`].

use crate::error::{RegistrationError, Result};
use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Digest;
use sha2::Sha256;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// argon2id hashing of `client_secret` values (RFC 7591 §3.2.1 secrets are stored only hashed),
/// and, when a derivation key is configured, recoverable derived secrets (see the module docs).
///
/// Hashing runs on a pool of exactly `concurrency` long-lived hashing threads (started at the
/// first hash) behind a semaphore, so at most `concurrency` hashes run at once, each in its
/// thread's reused `m` KiB (warm: no page faults after the first), and the HTTP workers are never
/// blocked by it. Memory for argon2 is therefore bounded by `concurrency × m` KiB whatever the
/// load. A hash or verification whose cost is tiny (`m × t` ≤ [`INLINE_MAX_KIB_PASSES`]) runs on
/// the calling thread instead: it takes less time than the hand-off to a hashing thread and back. Callers beyond the
/// permits wait in the semaphore's queue (each holding only its request, at most the body limit);
/// with a queue limit set, callers beyond `concurrency + queue_limit` are refused at once with
/// `Overloaded` (503) instead of queueing, so a flood cannot pile up unbounded waiters.
#[derive(Clone)]
pub struct SecretHasher {
    params: Params,
    permits: Arc<Semaphore>,
    pool: Arc<HashPool>,
    derivation_key: Option<Arc<[u8]>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    concurrency: usize,
}

/// Counts one caller in `in_flight` until dropped (also when the request is cancelled).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHasher")
            .field("params", &self.params)
            .field("recoverable_secrets", &self.derivation_key.is_some())
            .finish()
    }
}

/// Prefix of the stored form of a derived secret: `$registrar-derived$v=1$<nonce>`. It cannot be
/// mistaken for an argon2 PHC string (`$argon2id$...`).
const DERIVED_PREFIX: &str = "$registrar-derived$v=1$";

/// Domain separation for derived secrets, so the key can never produce another kind of value.
const DERIVED_LABEL: &[u8] = b"registrar client_secret v1\0";

/// Whether a stored secret is a derived (recoverable) one rather than an argon2id hash.
pub fn is_recoverable(stored: &str) -> bool {
    stored.starts_with(DERIVED_PREFIX)
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
            pool: Arc::new(HashPool::new(concurrency.max(1))),
            derivation_key: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: 0,
            concurrency: concurrency.max(1),
        })
    }

    /// Refuse (with `Overloaded`) callers that would wait behind more than `queue_limit` others;
    /// 0 = wait without bound.
    pub fn with_queue_limit(mut self, queue_limit: usize) -> Self {
        self.max_in_flight = match queue_limit {
            0 => 0,
            n => n.saturating_add(self.permits.available_permits()),
        };
        self
    }

    /// Callers waiting for a hashing slot (those in flight minus those hashing); a snapshot for
    /// the `registrar_hash_queue_depth` gauge.
    pub fn queue_depth(&self) -> usize {
        let hashing = self
            .concurrency
            .saturating_sub(self.permits.available_permits());
        self.in_flight
            .load(Ordering::SeqCst)
            .saturating_sub(hashing)
    }

    /// Enter the hashing queue, or fail fast when it is full.
    async fn permit(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, InFlight)> {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        if self.max_in_flight > 0 && before >= self.max_in_flight {
            tracing::warn!("argon2 queue full; refusing request");
            return Err(RegistrationError::Overloaded);
        }
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RegistrationError::Internal("hash pool closed".into()))?;
        Ok((permit, guard))
    }

    /// Enable recoverable secrets with a base64url key of at least 32 bytes; an empty string
    /// leaves them disabled (the default: every secret is only an argon2id hash).
    pub fn with_derivation_key(mut self, encoded: &str) -> Result<Self> {
        let encoded = encoded.trim();
        if encoded.is_empty() {
            self.derivation_key = None;
            return Ok(self);
        }
        let key = URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|e| {
                RegistrationError::Internal(format!(
                    "client_secret_derivation_key is not base64url: {e}"
                ))
            })?;
        if key.len() < 32 {
            return Err(RegistrationError::Internal(
                "client_secret_derivation_key must be at least 32 bytes".into(),
            ));
        }
        self.derivation_key = Some(key.into());
        Ok(self)
    }

    /// Whether recoverable secrets are enabled.
    pub fn recoverable_secrets(&self) -> bool {
        self.derivation_key.is_some()
    }

    fn derived(key: &[u8], client_id: &str, nonce: &str) -> Plaintext {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(DERIVED_LABEL);
        mac.update(client_id.as_bytes());
        // NUL cannot occur in a client_id or a base64url nonce, so the split is unambiguous.
        mac.update(b"\0");
        mac.update(nonce.as_bytes());
        Plaintext::new(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Issue a recoverable secret for `client_id` from a fresh random `nonce`: returns the
    /// plaintext (for the one response that carries it) and the value to store (the nonce).
    /// Refused with `invalid_client_metadata` when recoverable secrets are not enabled.
    pub fn derive(&self, client_id: &str, nonce: &str) -> Result<(Plaintext, String)> {
        let key = self.derivation_key.as_ref().ok_or_else(|| {
            RegistrationError::metadata(
                "token_endpoint_auth_method client_secret_jwt and secret-keyed algorithms need a recoverable client_secret, which this server does not keep (credentials.client_secret_derivation_key is not set)",
            )
        })?;
        Ok((
            Self::derived(key, client_id, nonce),
            format!("{DERIVED_PREFIX}{nonce}"),
        ))
    }

    /// The plaintext of a recoverable secret (for a token endpoint verifying `client_secret_jwt`
    /// or signing with HS*); `None` for argon2id hashes or when no key is configured.
    pub fn recover(&self, client_id: &str, stored: &str) -> Option<Plaintext> {
        let nonce = stored.strip_prefix(DERIVED_PREFIX)?;
        let key = self.derivation_key.as_ref()?;
        Some(Self::derived(key, client_id, nonce))
    }

    /// Whether `presented` is the current secret of `client_id`, whichever way it is stored.
    /// Derived secrets are recomputed and compared in constant time.
    pub async fn verify_client_secret(
        &self,
        client_id: &str,
        presented: &str,
        stored: &str,
    ) -> Result<bool> {
        if is_recoverable(stored) {
            if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
                return Ok(false);
            }
            return Ok(self
                .recover(client_id, stored)
                .is_some_and(|s| bool::from(s.expose().as_bytes().ct_eq(presented.as_bytes()))));
        }
        self.verify(presented, stored).await
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `secret`.
    pub async fn hash(&self, secret: &Plaintext) -> Result<String> {
        let argon2 = self.argon2();
        let params = self.params.clone();
        let hash = move |secret: &Plaintext| {
            let salt = SaltString::generate(&mut OsRng);
            hash_reusing_memory(&argon2, &params, secret.expose().as_bytes(), &salt)
                .map_err(|e| RegistrationError::Internal(format!("argon2 hash: {e}")))
        };
        if runs_inline(&self.params) {
            return hash(secret);
        }
        let _permit = self.permit().await?;
        let secret = secret.clone();
        self.pool.run(move || hash(&secret)).await?
    }

    /// Whether `presented` matches the stored argon2id PHC string. argon2's verifier compares
    /// the derived tags in constant time. (Use `verify_client_secret` for a stored secret of
    /// either kind.)
    pub async fn verify(&self, presented: &str, phc: &str) -> Result<bool> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
            return Ok(false);
        }
        let argon2 = self.argon2();
        let verify = move |presented: &str, phc: &str| {
            let parsed = PasswordHash::new(phc)
                .map_err(|e| RegistrationError::Internal(format!("stored hash: {e}")))?;
            Ok(verify_reusing_memory(
                &argon2,
                presented.as_bytes(),
                &parsed,
            ))
        };
        // The cost is the stored hash's own, which may differ from the configured one.
        let stored_params = PasswordHash::new(phc)
            .ok()
            .and_then(|parsed| Params::try_from(&parsed).ok());
        if stored_params.as_ref().is_some_and(runs_inline) {
            return verify(presented, phc);
        }
        let _permit = self.permit().await?;
        let presented = presented.to_owned();
        let phc = phc.to_owned();
        self.pool.run(move || verify(&presented, &phc)).await?
    }
}

/// Largest argon2 cost, in KiB of memory × passes (`m × t`), that is hashed on the calling
/// thread rather than on a hashing thread. argon2id fills about 3 KiB-passes per microsecond
/// per core here (the default m=19456, t=2 takes ≈ 13 ms), so this bound is a hash of about
/// 20 µs; handing a job to another thread and waking the caller again costs two context
/// switches and their cache misses, tens of µs on these cores (the registration profile in
/// BENCHMARKS.md spent 30% in `finish_task_switch`). Memory stays bounded: at most one such
/// hash per calling thread, 64 KiB each. Any cost that a deployment would choose to protect
/// secrets (this server's default, m=19456 and t=2, is OWASP's minimum for argon2id) is far above it.
pub const INLINE_MAX_KIB_PASSES: u64 = 64;

/// Whether a hash with `params` is cheap enough to run on the calling thread.
fn runs_inline(params: &Params) -> bool {
    u64::from(params.m_cost()) * u64::from(params.t_cost()) <= INLINE_MAX_KIB_PASSES
}

type HashJob = Box<dyn FnOnce() + Send + 'static>;

/// The hashing threads: `size` long-lived threads started at the first job, taking jobs from
/// one queue. Each keeps its argon2 block memory between jobs ([`BLOCKS`]), so with exactly as
/// many threads as hashing permits every hash runs in warm memory; on tokio's blocking pool a
/// hash ran on whichever pool thread was free, often one whose memory was cold or gone (and
/// those threads also ran store work). The threads end when the hasher is dropped.
struct HashPool {
    size: usize,
    jobs: std::sync::OnceLock<std::result::Result<std::sync::mpsc::Sender<HashJob>, String>>,
}

impl HashPool {
    fn new(size: usize) -> Self {
        Self {
            size,
            jobs: std::sync::OnceLock::new(),
        }
    }

    fn start(size: usize) -> std::result::Result<std::sync::mpsc::Sender<HashJob>, String> {
        let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for n in 0..size {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    lower_hashing_thread_priority();
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        // A panicking job drops its answer channel (the caller gets an error);
                        // the thread goes on with the next one.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| format!("hashing thread: {e}"))?;
        }
        Ok(tx)
    }

    /// Run `f` on a hashing thread and wait for its result without blocking the caller.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let jobs = self
            .jobs
            .get_or_init(|| Self::start(self.size))
            .as_ref()
            .map_err(|e| RegistrationError::Internal(e.clone()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        jobs.send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| RegistrationError::Internal("hashing threads stopped".into()))?;
        rx.await
            .map_err(|_| RegistrationError::Internal("hash job failed".into()))
    }
}

thread_local! {
    /// The argon2 block memory of this hashing thread, reused by every hash and verification
    /// it runs (see [`hash_reusing_memory`]).
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `presented` hashes to `phc` (an argon2 PHC string, with its own algorithm, version
/// and parameters), computed in this thread's reused block memory like
/// [`hash_reusing_memory`]: `verify_password` allocated and zeroed `m` KiB per call, which cost
/// admin `authenticate` the page faults the registrations no longer pay (BENCHMARKS.md, issue
/// #19). The derived tags are compared in constant time. A PHC string this build cannot
/// recompute (another algorithm, no salt or hash) falls back to argon2's own verifier.
fn verify_reusing_memory(argon2: &Argon2<'_>, presented: &[u8], phc: &PasswordHash<'_>) -> bool {
    let recomputed = (|| {
        let algorithm = Algorithm::try_from(phc.algorithm).ok()?;
        let version = match phc.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(phc).ok()?;
        let expected = phc.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = phc.salt?.decode_b64(&mut salt_buf).ok()?;
        let mut out = vec![0u8; expected.len()];
        let computed = Argon2::new(algorithm, version, params.clone());
        BLOCKS
            .with(|blocks| {
                let mut blocks = blocks.borrow_mut();
                blocks.resize(params.block_count(), Block::default());
                computed.hash_password_into_with_memory(presented, salt, &mut out, &mut blocks[..])
            })
            .ok()?;
        Some(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
    })();
    match recomputed {
        Some(matched) => matched,
        None => argon2.verify_password(presented, phc).is_ok(),
    }
}

/// The PHC string of argon2id(`secret`, `salt`), computed in this thread's reused block memory.
///
/// `hash_password` allocates (and zeroes) `m` KiB per hash; the allocator hands much of it back
/// to the kernel in between, so every hash paid for thousands of page faults again: about a
/// fifth of its CPU time (BENCHMARKS.md). The hash overwrites every block before reading it, so
/// reuse needs no clearing; the memory goes away with the thread.
fn hash_reusing_memory(
    argon2: &Argon2<'_>,
    params: &Params,
    secret: &[u8],
    salt: &SaltString,
) -> std::result::Result<String, argon2::password_hash::Error> {
    let salt = salt.as_salt();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf)?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        blocks.resize(params.block_count(), Block::default());
        Output::init_with(len, |out| {
            argon2
                .hash_password_into_with_memory(secret, salt_bytes, out, &mut blocks[..])
                .map_err(Into::into)
        })
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Nice value of the hashing threads (they run nothing else).
const HASHING_NICE: libc::c_int = 10;

/// Run the calling (hashing) thread at a lower CPU priority, once per thread, so that when
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

    /// Keystream for a grace seal: HMAC-SHA-256(key, label || source || block) per 32-byte
    /// block, `source` being the previous token itself when known (then only its holder, with
    /// the server key, can open the seal) or else its tag.
    fn seal_pad(&self, source: SealKey<'_>, len: usize) -> Vec<u8> {
        let (label, bytes): (&[u8], &[u8]) = match source {
            SealKey::PreviousToken(token) => {
                (b"registrar rat-grace seal v1 token\0", token.as_bytes())
            }
            SealKey::PreviousTag(tag) => (b"registrar rat-grace seal v1 tag\0", tag),
        };
        let mut pad = Vec::with_capacity(len + TAG_LEN);
        let mut block: u32 = 0;
        while pad.len() < len {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            mac.update(label);
            mac.update(bytes);
            mac.update(&block.to_be_bytes());
            pad.extend_from_slice(&mac.finalize().into_bytes());
            block += 1;
        }
        pad.truncate(len);
        pad
    }

    /// The current registration access token sealed for the grace period that follows a
    /// rotation (see `crate::lifecycle`), opened only when the previous token is presented, so
    /// a client that lost the rotating response gets the new token back.
    pub fn seal(&self, source: SealKey<'_>, token: &Plaintext) -> Vec<u8> {
        let bytes = token.expose().as_bytes();
        let pad = self.seal_pad(source, bytes.len());
        bytes.iter().zip(pad).map(|(b, p)| b ^ p).collect()
    }

    /// Open what [`RatKey::seal`] sealed to the `presented` previous token (either way it was
    /// keyed); `None` unless the result is the token whose tag is `current_tag`, so a stale,
    /// damaged or foreign seal never yields a token that does not work.
    pub fn unseal(&self, presented: &str, sealed: &[u8], current_tag: &[u8]) -> Option<Plaintext> {
        let tag = self.tag(presented);
        let sources = [
            SealKey::PreviousToken(presented),
            SealKey::PreviousTag(&tag),
        ];
        let opened = sources.into_iter().find_map(|source| {
            let pad = self.seal_pad(source, sealed.len());
            let bytes: Vec<u8> = sealed.iter().zip(pad).map(|(b, p)| b ^ p).collect();
            let token = String::from_utf8(bytes).ok()?;
            self.matches(&token, current_tag)
                .then(|| Plaintext::new(token))
        });
        opened
    }
}

/// What a grace seal ([`RatKey::seal`]) is keyed with, besides the server key.
#[derive(Debug, Clone, Copy)]
pub enum SealKey<'a> {
    /// The previous token, when the rotation saw it (RFC 7592 PUT or rotating GET): the
    /// records and the server key together still do not open the seal.
    PreviousToken(&'a str),
    /// Its tag, when the rotation did not see it (the admin API's reissue).
    PreviousTag(&'a [u8]),
}

/// SHA-256 digest of a static initial access token (RFC 7591 §3). Such tokens are long random
/// strings chosen by the operator, so a fast unkeyed hash suffices: it keeps the plaintext out of
/// memory after start-up and lets the configuration hold only the digest.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Index of the stored digest that `presented` hashes to. Every stored digest is compared in
/// constant time, and the scan never stops early, so timing reveals neither which token nor how
/// much of it matched.
pub fn find_token_digest(presented: &str, stored: &[[u8; 32]]) -> Option<usize> {
    if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
        return None;
    }
    let digest = token_digest(presented);
    let mut found = None;
    for (i, candidate) in stored.iter().enumerate() {
        if bool::from(candidate.ct_eq(&digest)) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_only_for_the_previous_token_and_the_current_tag() {
        let key = RatKey::new(vec![7; 32]).unwrap();
        let new = Plaintext::new("new-token-with-some-length-0123456789-abcdef".into());
        let new_tag = key.tag(new.expose());
        let old_tag = key.tag("old-token");
        for sealed in [
            key.seal(SealKey::PreviousToken("old-token"), &new),
            key.seal(SealKey::PreviousTag(&old_tag), &new),
        ] {
            assert_ne!(sealed, new.expose().as_bytes());
            let opened = key.unseal("old-token", &sealed, &new_tag).unwrap();
            assert_eq!(opened.expose(), new.expose());
            assert!(key.unseal("other-token", &sealed, &new_tag).is_none());
            assert!(key
                .unseal("old-token", &sealed, &key.tag("newer"))
                .is_none());
            let other_key = RatKey::new(vec![8; 32]).unwrap();
            assert!(other_key.unseal("old-token", &sealed, &new_tag).is_none());
        }
        // Keyed with the token, the seal does not open from the tag alone.
        let sealed = key.seal(SealKey::PreviousToken("old-token"), &new);
        let pad_from_tag = key.seal(SealKey::PreviousTag(&old_tag), &new);
        assert_ne!(sealed, pad_from_tag);
    }

    #[tokio::test]
    async fn hash_verifies_only_the_same_secret() {
        let hasher = SecretHasher::new(256, 1, 1, 2).unwrap();
        let phc = hasher.hash(&Plaintext::new("s3cret".into())).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert!(hasher.verify("s3cret", &phc).await.unwrap());
        assert!(!hasher.verify("s3creT", &phc).await.unwrap());
        assert!(!hasher.verify("", &phc).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_run_on_exactly_concurrency_long_lived_hashing_threads() {
        let hasher = SecretHasher::new(256, 1, 1, 2).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let name = hasher
                .pool
                .run(|| std::thread::current().name().map(str::to_owned))
                .await
                .unwrap();
            names.insert(name.unwrap_or_default());
        }
        assert!(!names.is_empty() && names.len() <= 2, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("argon2-")), "{names:?}");
        // A panicking job fails its caller only; the threads go on.
        assert!(hasher.pool.run(|| panic!("boom")).await.is_err());
        let phc = hasher.hash(&Plaintext::new("s".into())).await.unwrap();
        assert!(hasher.verify("s", &phc).await.unwrap());
    }

    #[test]
    fn only_a_tiny_argon2_cost_is_hashed_on_the_calling_thread() {
        let params = |m, t| Params::new(m, t, 1, None).unwrap();
        assert!(runs_inline(&params(8, 1)));
        assert!(runs_inline(&params(64, 1)));
        assert!(runs_inline(&params(32, 2)));
        assert!(!runs_inline(&params(64, 2)));
        assert!(!runs_inline(&params(19456, 2)));
    }

    #[test]
    fn a_cheap_hasher_verifies_a_costly_stored_hash_by_its_own_cost() {
        // The stored hash's parameters decide where it is verified, not the configured ones.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let costly = SecretHasher::new(256, 1, 1, 1).unwrap();
        let cheap = SecretHasher::new(8, 1, 1, 1).unwrap();
        runtime.block_on(async {
            let phc = costly.hash(&Plaintext::new("pw".into())).await.unwrap();
            assert!(!runs_inline(
                &Params::try_from(&PasswordHash::new(&phc).unwrap()).unwrap()
            ));
            assert!(cheap.verify("pw", &phc).await.unwrap());
            assert!(!cheap.verify("pW", &phc).await.unwrap());
            // At the cheap cost the hash is computed right here and agrees with argon2.
            let tiny = cheap.hash(&Plaintext::new("pw".into())).await.unwrap();
            assert!(tiny.starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
            assert!(cheap
                .argon2()
                .verify_password(b"pw", &PasswordHash::new(&tiny).unwrap())
                .is_ok());
        });
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

    #[tokio::test]
    async fn derived_secrets_are_recoverable_only_with_the_key() {
        let key = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let hasher = SecretHasher::new(64, 1, 1, 1)
            .unwrap()
            .with_derivation_key(&key)
            .unwrap();
        let (secret, stored) = hasher.derive("client-a", "nonce1").unwrap();
        assert_eq!(secret.expose().len(), 43);
        assert!(is_recoverable(&stored));
        assert!(
            !stored.contains(secret.expose()),
            "the secret is not stored"
        );
        assert_eq!(hasher.recover("client-a", &stored), Some(secret.clone()));
        // Bound to the client and the nonce.
        assert_ne!(hasher.recover("client-b", &stored), Some(secret.clone()));
        let (other, _) = hasher.derive("client-a", "nonce2").unwrap();
        assert_ne!(other, secret);
        assert!(hasher
            .verify_client_secret("client-a", secret.expose(), &stored)
            .await
            .unwrap());
        assert!(!hasher
            .verify_client_secret("client-b", secret.expose(), &stored)
            .await
            .unwrap());
        assert!(!hasher
            .verify_client_secret("client-a", "", &stored)
            .await
            .unwrap());
        // Another key recovers something else.
        let other_key = SecretHasher::new(64, 1, 1, 1)
            .unwrap()
            .with_derivation_key(&URL_SAFE_NO_PAD.encode([8u8; 32]))
            .unwrap();
        assert_ne!(other_key.recover("client-a", &stored), Some(secret));
        // argon2 hashes still verify through the same entry point, and are not recoverable.
        let phc = hasher.hash(&Plaintext::new("s".into())).await.unwrap();
        assert!(hasher.verify_client_secret("x", "s", &phc).await.unwrap());
        assert!(hasher.recover("x", &phc).is_none());
    }

    #[test]
    fn derivation_is_off_without_a_key_and_refuses_short_keys() {
        let hasher = SecretHasher::new(64, 1, 1, 1).unwrap();
        assert!(!hasher.recoverable_secrets());
        let err = hasher.derive("c", "n").unwrap_err();
        assert_eq!(err.code(), "invalid_client_metadata");
        let hasher = hasher.with_derivation_key("").unwrap();
        assert!(!hasher.recoverable_secrets());
        assert!(SecretHasher::new(64, 1, 1, 1)
            .unwrap()
            .with_derivation_key(&URL_SAFE_NO_PAD.encode([1u8; 16]))
            .is_err());
        assert!(SecretHasher::new(64, 1, 1, 1)
            .unwrap()
            .with_derivation_key("not base64!")
            .is_err());
    }

    #[test]
    fn token_digests_match_only_their_token() {
        let stored = [token_digest("alpha-token"), token_digest("beta-token")];
        assert_eq!(find_token_digest("beta-token", &stored), Some(1));
        assert_eq!(find_token_digest("alpha-token", &stored), Some(0));
        assert_eq!(find_token_digest("alpha-tokeN", &stored), None);
        assert_eq!(find_token_digest("", &stored), None);
    }

    #[tokio::test]
    async fn a_full_hash_queue_fails_fast() {
        let hasher = SecretHasher::new(256, 1, 1, 1).unwrap().with_queue_limit(1);
        let held = hasher.permit().await.unwrap();
        let waiting = hasher.clone();
        let queued = tokio::spawn(async move { waiting.hash(&Plaintext::new("a".into())).await });
        // Wait until the spawned hash is queued behind the held permit.
        for _ in 0..500 {
            if hasher.in_flight.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(hasher.in_flight.load(Ordering::SeqCst), 2);
        assert!(matches!(
            hasher.hash(&Plaintext::new("b".into())).await,
            Err(RegistrationError::Overloaded)
        ));
        drop(held);
        assert!(queued.await.unwrap().is_ok());
        assert!(hasher.hash(&Plaintext::new("c".into())).await.is_ok());
    }

    #[test]
    fn verification_in_reused_memory_agrees_with_argon2s_verifier() {
        let configured = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        // Stored hashes with other parameters than the configured ones, and another variant.
        for (algorithm, m, t, p) in [
            (Algorithm::Argon2id, 64, 1, 1),
            (Algorithm::Argon2id, 128, 2, 2),
            (Algorithm::Argon2i, 96, 1, 1),
        ] {
            let params = Params::new(m, t, p, None).unwrap();
            let salt = SaltString::generate(&mut OsRng);
            let phc = argon2::PasswordHasher::hash_password(
                &Argon2::new(algorithm, Version::V0x13, params),
                b"right",
                &salt,
            )
            .unwrap()
            .to_string();
            let parsed = PasswordHash::new(&phc).unwrap();
            for presented in [&b"right"[..], b"wrong", b"", b"righ"] {
                assert_eq!(
                    verify_reusing_memory(&configured, presented, &parsed),
                    configured.verify_password(presented, &parsed).is_ok(),
                    "{phc} with {presented:?}"
                );
            }
            assert!(verify_reusing_memory(&configured, b"right", &parsed));
        }
    }

    #[test]
    fn plaintext_debug_is_redacted() {
        let p = Plaintext::new("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
