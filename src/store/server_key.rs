//! The key registration access tokens are tagged with (HMAC-SHA-256, `credentials::RatKey`):
//! where it comes from for each backend.
//!
//! - sled (one process): `credentials.server_key` if set, else the key file, created with 256
//!   random bits on first start (mode 0600, fsynced before use). Changing the configured key
//!   revokes every token, as documented.
//! - PostgreSQL (shared by replicas): stored once in the database. The first replica to start
//!   stores its configured key, or a random one; every other replica uses the stored key, and
//!   one configured with a different key refuses to start, since its tokens would not verify
//!   on the others.

use super::{Backend, ClientStore};
use crate::settings::Settings;
use crate::tokens::TokenGenerator;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::io::Write;
use std::path::PathBuf;

/// Decode a base64url key (padding optional) of at least 32 bytes.
pub fn decode(encoded: &str) -> Result<Vec<u8>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded.trim().trim_end_matches('='))
        .map_err(|e| format!("not base64url: {e}"))?;
    if bytes.len() < 32 {
        return Err("must be at least 32 bytes".into());
    }
    Ok(bytes)
}

/// The base64url form (no padding), as written to the key file and by `registrar export`.
pub fn encode(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// The raw server key this registrar serves with (see the module documentation).
pub async fn resolve(
    settings: &Settings,
    store: &dyn ClientStore,
    tokens: &dyn TokenGenerator,
) -> Result<Vec<u8>, String> {
    let configured = &settings.credentials.server_key;
    match settings.storage.backend {
        Backend::Sled if !configured.is_empty() => decode(configured),
        Backend::Sled => from_file(settings, || random_key(tokens)),
        Backend::Postgres => {
            let proposed = if configured.is_empty() {
                random_key(tokens)
            } else {
                decode(configured).map_err(|e| format!("credentials.server_key: {e}"))?
            };
            let stored = store
                .server_key(proposed.clone())
                .await
                .map_err(|e| format!("reading the stored key: {e}"))?;
            if !configured.is_empty() && stored != proposed {
                return Err("the database holds a different server key than credentials.server_key; every replica must use the same key (or leave credentials.server_key empty to use the stored one)".into());
            }
            decode(&encode(&stored)).map_err(|e| format!("the stored key: {e}"))
        }
    }
}

/// Make `key` (from `registrar import`) the server key of the configured store: refused when
/// another key is already in use, since the imported tokens would not verify with it.
pub async fn adopt(settings: &Settings, store: &dyn ClientStore, key: &[u8]) -> Result<(), String> {
    let configured = &settings.credentials.server_key;
    let current = match settings.storage.backend {
        Backend::Sled if !configured.is_empty() => decode(configured)?,
        Backend::Sled => from_file(settings, || key.to_vec())?,
        Backend::Postgres => {
            if !configured.is_empty() && decode(configured)? != key {
                return Err("credentials.server_key differs from the imported key".into());
            }
            store
                .server_key(key.to_vec())
                .await
                .map_err(|e| e.to_string())?
        }
    };
    if current != key {
        return Err("the target already uses another server key; the imported registration access tokens would not verify (import into an empty target, or configure the exported key)".into());
    }
    Ok(())
}

fn random_key(tokens: &dyn TokenGenerator) -> Vec<u8> {
    let mut key = vec![0u8; 32];
    tokens.fill(&mut key);
    key
}

/// The key file's key, creating the file with `new_key()` when missing.
fn from_file(settings: &Settings, new_key: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, String> {
    let c = &settings.credentials;
    let path = if c.server_key_file.is_empty() {
        settings.storage.data_dir.join("server.key")
    } else {
        PathBuf::from(&c.server_key_file)
    };
    let shown = path.display();
    match std::fs::read_to_string(&path) {
        Ok(text) => decode(&text).map_err(|e| format!("{shown}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = new_key();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{shown}: {e}"))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&path).map_err(|e| format!("{shown}: {e}"))?;
            file.write_all(encode(&key).as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("{shown}: {e}"))?;
            tracing::info!(path = %shown, "generated a new server key");
            Ok(key)
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}
