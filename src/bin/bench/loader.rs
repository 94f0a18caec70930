//! Bench-only population of a data directory: N clients written straight through the library's
//! `SledStore::apply_unflushed` of an insert batch (the server's own write path minus HTTP and hashing), each
//! with a real RAT tag under the server key the server will load from `{data_dir}/server.key`.
//! Much faster than N HTTP registrations, and the records are byte-for-byte what the server
//! writes for the bench's registration body.

use crate::tools::Res;
use argon2::password_hash::{rand_core::OsRng, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use registrar::credentials::RatKey;
use registrar::settings::Settings;
use registrar::store::{Change, ClientRecord, SledStore, WriteBatch};
use registrar::tokens::{OsTokens, TokenGenerator, CLIENT_ID_BYTES, SECRET_BYTES};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What a population run produced.
pub struct Loaded {
    pub secs: f64,
    pub disk_mb: f64,
    /// Size of one loaded client's encoded record (`ClientRecord::encode`), bytes.
    pub record_bytes: usize,
}

/// Fill `dir` (must not exist) with `n` clients; write every k-th one's "client_id rat" to
/// `pool` so that about `sample` clients spread over the whole key space can be read back.
pub fn populate(dir: &Path, n: usize, sample: usize, pool: &Path) -> Res<Loaded> {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let store = Arc::new(SledStore::open(dir, 256 << 20).map_err(|e| e.to_string())?);
    let mut key = [0u8; 32];
    OsTokens.fill(&mut key);
    let encoded = URL_SAFE_NO_PAD.encode(key);
    std::fs::write(dir.join("server.key"), &encoded).map_err(|e| e.to_string())?;
    let rat_key = RatKey::from_base64(&encoded).map_err(|e| e.to_string())?;

    let settings = Settings::defaults().map_err(|e| e.to_string())?;
    let body = serde_json::json!({
        "redirect_uris": ["https://client.example.org/cb"],
        "client_name": "wrk"
    });
    let request = body.as_object().cloned().unwrap_or_default();
    let metadata = registrar::metadata::validate(&request, &settings.metadata)
        .map_err(|e| format!("bench body invalid: {e}"))?;
    // One real argon2id PHC string (default parameters) shared by every loaded client: reads
    // never verify it, and its size is what matters for the store.
    let params = Params::new(19456, 2, 1, None).map_err(|e| e.to_string())?;
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(b"bench-loader-secret", &SaltString::generate(&mut OsRng))
        .map_err(|e| e.to_string())?
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);

    let record_bytes = ClientRecord {
        client_id: OsTokens.token(CLIENT_ID_BYTES),
        client_id_issued_at: now,
        client_secret_hash: Some(phc.clone()),
        client_secret_expires_at: Some(0),
        rat_tag: rat_key.tag(&OsTokens.token(SECRET_BYTES)).to_vec(),
        metadata: metadata.clone().into(),
        updated_at: now,
        tier: Some(registrar::policy::tier::ANONYMOUS.to_owned()),
        revision: 1,
        created_at: now,
        ..Default::default()
    }
    .encode()
    .map_err(|e| e.to_string())?
    .len();
    let every = (n / sample.max(1)).max(1);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let mut handles = Vec::new();
    for t in 0..threads {
        let store = store.clone();
        let rat_key = rat_key.clone();
        let metadata = metadata.clone();
        let phc = phc.clone();
        handles.push(std::thread::spawn(move || -> Res<Vec<String>> {
            let mut picked = Vec::new();
            let mut i = t;
            while i < n {
                let rat = OsTokens.token(SECRET_BYTES);
                let record = ClientRecord {
                    client_id: OsTokens.token(CLIENT_ID_BYTES),
                    client_id_issued_at: now,
                    client_secret_hash: Some(phc.clone()),
                    client_secret_expires_at: Some(0),
                    rat_tag: rat_key.tag(&rat).to_vec(),
                    metadata: metadata.clone().into(),
                    updated_at: now,
                    policy: None,
                    tier: Some(registrar::policy::tier::ANONYMOUS.to_owned()),
                    software_statement: None,
                    revision: 1,
                    created_at: now,
                    ..Default::default()
                };
                let client_id = record.client_id.clone();
                store
                    .apply_unflushed(&WriteBatch::change(Change::Insert(record)))
                    .map_err(|e| e.to_string())?;
                if i % every == 0 {
                    picked.push(format!("{client_id} {rat}"));
                }
                i += threads;
            }
            Ok(picked)
        }));
    }
    let mut out = std::fs::File::create(pool).map_err(|e| e.to_string())?;
    for h in handles {
        let picked = h
            .join()
            .map_err(|_| "loader thread panicked".to_string())??;
        for line in picked {
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    store.flush().map_err(|e| e.to_string())?;
    drop(store);
    Ok(Loaded {
        secs: started.elapsed().as_secs_f64(),
        disk_mb: dir_size(dir) as f64 / 1e6,
        record_bytes,
    })
}

/// Number of clients in a (closed) data directory, e.g. after the server was SIGKILLed.
pub fn count(dir: &Path) -> Res<usize> {
    let store = SledStore::open(dir, 8 << 20).map_err(|e| e.to_string())?;
    Ok(store.len())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The argon2 bound: hashes per second that `threads` threads reach with the server's
/// parameters (same crate, same algorithm, random salt per hash), over `secs`.
pub fn argon2_rate(m: u32, t: u32, p: u32, threads: usize, secs: f64) -> Res<f64> {
    let params = Params::new(m, t, p, None).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let params = params.clone();
            std::thread::spawn(move || {
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                let mut n = 0u64;
                while started.elapsed().as_secs_f64() < secs {
                    let secret = OsTokens.token(SECRET_BYTES);
                    if argon2
                        .hash_password(secret.as_bytes(), &SaltString::generate(&mut OsRng))
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "hash thread panicked".to_string())?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
