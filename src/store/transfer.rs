//! `registrar export` and `registrar import`: every record, counter and the server key as JSON
//! lines, to move a registrar between backends (sled ⇄ PostgreSQL) or machines.
//!
//! The first line carries the server key (without it no exported registration access token
//! verifies), then one line per client in `client_id` order, then one per counter. Import is
//! idempotent: a client already present with the same content is skipped; one present with
//! other content is refused unless `replace` is set.

use super::{server_key, Change, ClientRecord, ClientStore, CounterOp, StoreError, WriteBatch};
use crate::settings::Settings;
use crate::tokens::TokenGenerator;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// Records read per page while exporting.
const PAGE: usize = 500;

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// The RAT server key, base64url.
    ServerKey { key: String },
    /// One client, as stored (credential hashes and the token tag, never plaintext).
    Client {
        #[serde(deserialize_with = "record_via_value")]
        record: Box<ClientRecord>,
    },
    /// One durable counter.
    Counter { key: String, value: u64 },
}

/// A client record inside a [`Line`]: through a `Value`, since the internally tagged enum
/// buffers its content, from which the record's metadata (kept as its JSON text,
/// [`crate::store::StoredMetadata`]) cannot be taken raw; a `Value` can give it.
fn record_via_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<ClientRecord>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    serde_json::from_value(value)
        .map(Box::new)
        .map_err(serde::de::Error::custom)
}

/// What an export or import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub clients: u64,
    pub counters: u64,
    /// Import: clients already present with the same content.
    pub unchanged: u64,
    /// Import: clients present with other content, refused (no `replace`).
    pub refused: Vec<String>,
}

/// Write the whole store to `out`.
pub async fn export(
    settings: &Settings,
    store: &dyn ClientStore,
    tokens: &dyn TokenGenerator,
    out: &mut dyn Write,
) -> Result<Summary, String> {
    let key = server_key::resolve(settings, store, tokens).await?;
    let mut summary = Summary::default();
    let mut write = |line: &Line| -> Result<(), String> {
        serde_json::to_writer(&mut *out, line).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())
    };
    write(&Line::ServerKey {
        key: server_key::encode(&key),
    })?;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .scan(after.as_deref(), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = Some(last.client_id.clone());
        for record in page {
            write(&Line::Client {
                record: Box::new(record),
            })?;
            summary.clients += 1;
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store
            .scan_counters(after.as_deref(), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, value) in page {
            write(&Line::Counter { key, value })?;
            summary.counters += 1;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(summary)
}

/// Read an export into `store`. A malformed line stops the import with its line number;
/// refused clients are listed in the summary.
pub async fn import(
    settings: &Settings,
    store: &dyn ClientStore,
    input: &mut dyn BufRead,
    replace: bool,
) -> Result<Summary, String> {
    let mut summary = Summary::default();
    let mut seen_key = false;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("line {n}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| format!("line {n}: {e}"))?;
        match parsed {
            Line::ServerKey { key } => {
                let key = server_key::decode(&key).map_err(|e| format!("line {n}: {e}"))?;
                server_key::adopt(settings, store, &key).await?;
                seen_key = true;
            }
            Line::Client { record } => {
                if !seen_key {
                    return Err(format!(
                        "line {n}: a client before the server_key line; the tokens could not be verified"
                    ));
                }
                let id = record.client_id.clone();
                match import_client(store, *record, replace).await {
                    Ok(Imported::New) => summary.clients += 1,
                    Ok(Imported::Unchanged) => summary.unchanged += 1,
                    Ok(Imported::Refused) => summary.refused.push(id),
                    Err(e) => return Err(format!("line {n} (client {id}): {e}")),
                }
            }
            Line::Counter { key, value } => {
                let batch = WriteBatch {
                    change: None,
                    counters: vec![CounterOp::Set { key, value }],
                    ..WriteBatch::default()
                };
                store
                    .commit(batch)
                    .await
                    .map_err(|e| format!("line {n}: {e}"))?;
                summary.counters += 1;
            }
        }
    }
    Ok(summary)
}

enum Imported {
    New,
    Unchanged,
    Refused,
}

async fn import_client(
    store: &dyn ClientStore,
    record: ClientRecord,
    replace: bool,
) -> Result<Imported, StoreError> {
    // Bounded: a conflict that persists (e.g. another client holding the same token tag) is an
    // error, not a loop.
    for _ in 0..8 {
        let batch = match store.get(&record.client_id).await? {
            None => WriteBatch::change(Change::Insert(record.clone())),
            Some(current) if same_content(&current, &record) => return Ok(Imported::Unchanged),
            Some(_) if !replace => return Ok(Imported::Refused),
            Some(current) => WriteBatch::change(Change::Update {
                expected_revision: current.revision,
                record: record.clone(),
            }),
        };
        match store.commit(batch).await {
            Ok(()) => return Ok(Imported::New),
            // Someone wrote the client meanwhile: look again.
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// Equal but for the revision, which counts changes in one store only.
fn same_content(a: &ClientRecord, b: &ClientRecord) -> bool {
    let mut a = a.clone();
    a.revision = b.revision;
    a == *b
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn a_client_line_round_trips_with_its_metadata() {
        let record = crate::store::contract::named("c1", "Name");
        let line = serde_json::to_string(&Line::Client {
            record: Box::new(record.clone()),
        })
        .unwrap();
        let Line::Client { record: back } = serde_json::from_str(&line).unwrap() else {
            panic!("not a client line: {line}");
        };
        assert_eq!(*back, record);
        assert_eq!(back.metadata["client_name"], "Name");
    }
}
