//! Record format 3 of the embedded store: the members of a [`ClientRecord`] in a positional
//! binary form (postcard: varint integers, length-prefixed strings and bytes, one byte per
//! `Option`), after the packed header of the coded metadata members
//! (`stored_metadata::write_coded`).
//!
//! Why: bytes on disk per client (issue #19, BENCHMARKS.md). Format 2 wrote the record as JSON:
//! member names, the registration access token's 32-byte tag as a JSON array of numbers (about
//! 120 bytes) and the argon2id PHC string as text; that was 575 bytes for the bench's client,
//! and sled spends about 1.6 bytes of disk per record byte. Format 3 writes the same client in
//! about 250 bytes. The metadata stays the JSON text the RFC 7592 read splices into its
//! response (`StoredMetadata`), so a read still does not decode it.
//!
//! The form is positional: a member added to [`ClientRecord`] needs a new format (a new
//! version byte, this one still read), never a change to [`Packed`]. Only the embedded store
//! uses it; PostgreSQL and exports keep the JSON form.

use super::stored_metadata::{read_coded, write_coded};
use super::{ClientRecord, StoreError, StoredMetadata};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A client secret's argon2id PHC string, as its numbers and bytes when it is in the one form
/// the server writes (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`, standard base64 without padding)
/// and writing them back gives the same string; any other string as it is.
#[derive(Debug, Serialize, Deserialize)]
enum Secret<'a> {
    Argon2id {
        m: u32,
        t: u32,
        p: u32,
        salt: Cow<'a, [u8]>,
        hash: Cow<'a, [u8]>,
    },
    Phc(Cow<'a, str>),
}

impl<'a> Secret<'a> {
    fn pack(phc: &'a str) -> Self {
        let argon2id = || {
            let rest = phc.strip_prefix("$argon2id$v=19$m=")?;
            let (m, rest) = rest.split_once(",t=")?;
            let (t, rest) = rest.split_once(",p=")?;
            let (p, rest) = rest.split_once('$')?;
            let (salt, hash) = rest.split_once('$')?;
            let packed = Secret::Argon2id {
                m: m.parse().ok()?,
                t: t.parse().ok()?,
                p: p.parse().ok()?,
                salt: STANDARD_NO_PAD.decode(salt).ok()?.into(),
                hash: STANDARD_NO_PAD.decode(hash).ok()?.into(),
            };
            // Lossless or not at all: a sign, a leading zero or non-canonical base64 would not
            // come back as written.
            (packed.unpack() == phc).then_some(packed)
        };
        argon2id().unwrap_or(Secret::Phc(Cow::Borrowed(phc)))
    }

    fn unpack(&self) -> String {
        match self {
            Secret::Argon2id {
                m,
                t,
                p,
                salt,
                hash,
            } => format!(
                "$argon2id$v=19$m={m},t={t},p={p}${}${}",
                STANDARD_NO_PAD.encode(salt),
                STANDARD_NO_PAD.encode(hash)
            ),
            Secret::Phc(phc) => phc.clone().into_owned(),
        }
    }
}

/// The members of [`ClientRecord`] in format 3's order; `metadata` is the compacted text.
#[derive(Debug, Serialize, Deserialize)]
struct Packed<'a> {
    client_id: Cow<'a, str>,
    client_id_issued_at: i64,
    client_secret_hash: Option<Secret<'a>>,
    client_secret_expires_at: Option<i64>,
    rat_tag: Cow<'a, [u8]>,
    metadata: Cow<'a, str>,
    updated_at: i64,
    policy: Option<Cow<'a, str>>,
    tier: Option<Cow<'a, str>>,
    software_statement: Option<Cow<'a, str>>,
    revision: u64,
    created_at: i64,
    last_used_at: Option<i64>,
    disabled: bool,
    source: Option<Cow<'a, str>>,
    previous_secret_hash: Option<Secret<'a>>,
    previous_secret_expires_at: Option<i64>,
    previous_rat_tag: Option<Cow<'a, [u8]>>,
    previous_rat_expires_at: Option<i64>,
    sealed_rat: Option<Cow<'a, [u8]>>,
    software_key: Option<Cow<'a, str>>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Append format 3's body (everything after the version byte) of `record`, with `revision`.
pub(super) fn write(
    record: &ClientRecord,
    revision: u64,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let (coded, compacted) = record.metadata.compact()?;
    write_coded(&coded, out, true);
    // Spelled out (no `..`) so that a member added to the record cannot be left out.
    let ClientRecord {
        client_id,
        client_id_issued_at,
        client_secret_hash,
        client_secret_expires_at,
        rat_tag,
        metadata: _,
        updated_at,
        policy,
        tier,
        software_statement,
        revision: _,
        created_at,
        last_used_at,
        disabled,
        source,
        previous_secret_hash,
        previous_secret_expires_at,
        previous_rat_tag,
        previous_rat_expires_at,
        sealed_rat,
        software_key,
    } = record;
    fn text(s: &Option<String>) -> Option<Cow<'_, str>> {
        s.as_deref().map(Cow::Borrowed)
    }
    fn bytes(b: &Option<Vec<u8>>) -> Option<Cow<'_, [u8]>> {
        b.as_deref().map(Cow::Borrowed)
    }
    let packed = Packed {
        client_id: Cow::Borrowed(client_id),
        client_id_issued_at: *client_id_issued_at,
        client_secret_hash: client_secret_hash.as_deref().map(Secret::pack),
        client_secret_expires_at: *client_secret_expires_at,
        rat_tag: Cow::Borrowed(rat_tag),
        metadata: Cow::Borrowed(compacted.get()),
        updated_at: *updated_at,
        policy: text(policy),
        tier: text(tier),
        software_statement: text(software_statement),
        revision,
        created_at: *created_at,
        last_used_at: *last_used_at,
        disabled: *disabled,
        source: text(source),
        previous_secret_hash: previous_secret_hash.as_deref().map(Secret::pack),
        previous_secret_expires_at: *previous_secret_expires_at,
        previous_rat_tag: bytes(previous_rat_tag),
        previous_rat_expires_at: *previous_rat_expires_at,
        sealed_rat: bytes(sealed_rat),
        software_key: text(software_key),
    };
    // Straight into `out` (postcard's `to_extend` takes the writer by value and hands it back).
    *out = postcard::to_extend(&packed, std::mem::take(out)).map_err(corrupt)?;
    Ok(())
}

/// Read what [`write`] wrote (`bytes` after the version byte). Anything malformed, trailing
/// bytes included, is `Corrupt`.
pub(super) fn read(bytes: &[u8]) -> Result<ClientRecord, StoreError> {
    let (coded, rest) = read_coded(bytes, true)?;
    let (packed, trailing): (Packed, _) = postcard::take_from_bytes(rest).map_err(corrupt)?;
    if !trailing.is_empty() {
        return Err(corrupt(format!(
            "{} bytes after a format 3 record",
            trailing.len()
        )));
    }
    if !packed.metadata.trim_start().starts_with('{') {
        return Err(corrupt("stored metadata is not a JSON object"));
    }
    let raw = RawValue::from_string(packed.metadata.into_owned()).map_err(corrupt)?;
    let mut metadata = StoredMetadata::from_text(raw);
    metadata.attach(coded)?;
    let text = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
    let bytes = |b: Option<Cow<'_, [u8]>>| b.map(Cow::into_owned);
    Ok(ClientRecord {
        client_id: packed.client_id.into_owned(),
        client_id_issued_at: packed.client_id_issued_at,
        client_secret_hash: packed.client_secret_hash.as_ref().map(Secret::unpack),
        client_secret_expires_at: packed.client_secret_expires_at,
        rat_tag: packed.rat_tag.into_owned(),
        metadata,
        updated_at: packed.updated_at,
        policy: text(packed.policy),
        tier: text(packed.tier),
        software_statement: text(packed.software_statement),
        revision: packed.revision,
        created_at: packed.created_at,
        last_used_at: packed.last_used_at,
        disabled: packed.disabled,
        source: text(packed.source),
        previous_secret_hash: packed.previous_secret_hash.as_ref().map(Secret::unpack),
        previous_secret_expires_at: packed.previous_secret_expires_at,
        previous_rat_tag: bytes(packed.previous_rat_tag),
        previous_rat_expires_at: packed.previous_rat_expires_at,
        sealed_rat: bytes(packed.sealed_rat),
        software_key: text(packed.software_key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_phc_strings_pack_to_their_bytes_and_back() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let packed = Secret::pack(phc);
        assert!(matches!(
            packed,
            Secret::Argon2id {
                m: 19456,
                t: 2,
                p: 1,
                ..
            }
        ));
        assert_eq!(packed.unpack(), phc);
    }

    #[test]
    fn other_strings_are_kept_as_they_are() {
        for phc in [
            "$argon2id$v=19$secret-hash",
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",
            "$argon2id$v=19$m=+19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",
            "$argon2id$v=19$m=019456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaB",
            "$argon2id$v=19$m=19456,t=2,p=1,keyid=x$c2FsdA$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA$extra",
            "",
        ] {
            let packed = Secret::pack(phc);
            assert!(matches!(packed, Secret::Phc(_)), "{phc}");
            assert_eq!(packed.unpack(), phc);
        }
    }
}
