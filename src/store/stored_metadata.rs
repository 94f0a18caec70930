//! [`StoredMetadata`]: a client's registered metadata as read from the store, kept as the JSON
//! text it was stored as until something asks for a member.
//!
//! The common RFC 7592 §2.1 read only echoes the metadata, so decoding it into a map and
//! encoding the map again was a tenth of the read path's CPU (BENCHMARKS.md, issue #19). With
//! the text kept, [`StoredMetadata::write_members`] hands the stored members to the response
//! as they are; everything that looks at members (`Deref` to the map) parses them once, on
//! first use.
//!
//! The embedded store also keeps the text small (record format 2, `ClientRecord::encode`):
//! a member found in [`COMMON_MEMBERS`] (schema defaults such as `"require_auth_time":false`,
//! and the usual `grant_types`) is written as its entry number and the place it goes, not as
//! text. Two thirds of a typical client's metadata are such members (issue #19: bytes per
//! client, and how many clients sled's page cache holds). The coding is lossless and does not
//! depend on configuration or on the schema: putting the members back gives the same text,
//! byte for byte and in the same order, so a response spliced from it is what it was before.

use super::StoreError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

/// Members the embedded store writes as an entry number (record format 2). Each is the exact
/// compact JSON text of one member. The index of an entry is on disk: **append only**; never
/// change, reorder or remove an entry (a changed one needs a new record format).
pub const COMMON_MEMBERS: &[&str] = &[
    r#""token_endpoint_auth_method":"client_secret_basic""#,
    r#""token_endpoint_auth_method":"none""#,
    r#""token_endpoint_auth_method":"client_secret_post""#,
    r#""token_endpoint_auth_method":"private_key_jwt""#,
    r#""grant_types":["authorization_code"]"#,
    r#""grant_types":["authorization_code","refresh_token"]"#,
    r#""grant_types":["client_credentials"]"#,
    r#""response_types":["code"]"#,
    r#""response_types":[]"#,
    r#""application_type":"web""#,
    r#""application_type":"native""#,
    r#""subject_type":"public""#,
    r#""subject_type":"pairwise""#,
    r#""id_token_signed_response_alg":"RS256""#,
    r#""require_auth_time":false"#,
    r#""post_logout_redirect_uris":[]"#,
    r#""frontchannel_logout_session_required":false"#,
    r#""backchannel_logout_session_required":false"#,
    r#""tls_client_certificate_bound_access_tokens":false"#,
    r#""use_mtls_endpoint_aliases":false"#,
    r#""dpop_bound_access_tokens":false"#,
    r#""require_pushed_authorization_requests":false"#,
    r#""require_signed_request_object":false"#,
    r#""authorization_details_types":[]"#,
    r#""authorization_signed_response_alg":"RS256""#,
    r#""introspection_signed_response_alg":"RS256""#,
    r#""backchannel_user_code_parameter":false"#,
    r#""allowed_cors_origins":[]"#,
    r#""audience":[]"#,
    r#""owner":"""#,
    r#""metadata":{}"#,
    r#""skip_consent":false"#,
];

/// One member left out of the stored text: its [`COMMON_MEMBERS`] entry and the byte offset,
/// inside the stored object's braces, of the member it goes before (or the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Coded {
    entry: u8,
    offset: u32,
}

/// The registered metadata of a client (defaults applied, schema order), read lazily.
///
/// Reads (`Deref`) parse the stored text on first use; a write (`DerefMut`) drops the text, so
/// the record is encoded from the map afterwards. The text is only ever a JSON object (checked
/// when the record is decoded), so the parse cannot fail.
#[derive(Default)]
pub struct StoredMetadata {
    /// The stored JSON object, while the map has not been changed; without the `coded`
    /// members.
    raw: Option<Box<RawValue>>,
    /// The members of `raw` written as [`COMMON_MEMBERS`] entries, by offset.
    coded: Vec<Coded>,
    map: OnceLock<Map<String, Value>>,
}

impl StoredMetadata {
    /// Metadata that is `text`, a JSON object, as it is (no coded members).
    pub(crate) fn from_text(text: Box<RawValue>) -> Self {
        Self {
            raw: Some(text),
            coded: Vec::new(),
            map: OnceLock::new(),
        }
    }

    /// The stored text without its [`COMMON_MEMBERS`] (none of them is named
    /// `software_statement` or any other server-managed member), when the map is unchanged.
    pub fn stored_text(&self) -> Option<&str> {
        self.raw.as_deref().map(RawValue::get)
    }

    /// Append every member, as the JSON text it was stored as, to `out`, each preceded by a
    /// comma (`,"a":1,"b":2`): what a response writing its own members first splices in.
    /// `false`, with nothing written, when the map has been changed (no stored text).
    pub fn write_members(&self, out: &mut String) -> bool {
        let Some(body) = self.body() else {
            return false;
        };
        if !body.is_empty() || !self.coded.is_empty() {
            out.push(',');
            write_body(body, &self.coded, out);
        }
        true
    }

    /// The metadata as a map, parsed if needed.
    pub fn into_map(mut self) -> Map<String, Value> {
        self.force();
        self.map.take().unwrap_or_default()
    }

    /// The stored object's text between its braces.
    fn body(&self) -> Option<&str> {
        let text = self.raw.as_deref()?.get().trim();
        Some(
            text.strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .unwrap_or_default()
                .trim(),
        )
    }

    /// The whole object's text, coded members put back.
    fn full_text(&self) -> Option<String> {
        let body = self.body()?;
        let mut out = String::with_capacity(body.len() + 2 + self.coded.len() * 32);
        out.push('{');
        write_body(body, &self.coded, &mut out);
        out.push('}');
        Some(out)
    }

    fn force(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            let parsed = match self.coded.is_empty() {
                true => self
                    .raw
                    .as_deref()
                    .and_then(|raw| serde_json::from_str(raw.get()).ok()),
                false => self
                    .full_text()
                    .and_then(|text| serde_json::from_str(&text).ok()),
            };
            parsed.unwrap_or_default()
        })
    }

    /// The form record format 2 stores: the object's text without its [`COMMON_MEMBERS`], and
    /// where each of those goes. Reuses the stored text when the map is unchanged.
    pub(crate) fn compact(&self) -> Result<(Vec<Coded>, Box<RawValue>), StoreError> {
        if let Some(raw) = &self.raw {
            if !self.coded.is_empty() {
                return Ok((self.coded.clone(), raw.clone()));
            }
        }
        let index = common_index();
        let mut body = String::with_capacity(256);
        let mut coded = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut member = Vec::with_capacity(128);
        for (name, value) in self.force() {
            member.clear();
            serde_json::to_writer(&mut member, name).map_err(corrupt)?;
            member.push(b':');
            serde_json::to_writer(&mut member, value).map_err(corrupt)?;
            // serde_json writes UTF-8 only.
            let member = std::str::from_utf8(&member).map_err(corrupt)?;
            match index.get(member) {
                Some(&entry) if coded.len() + pending.len() < usize::from(u8::MAX) => {
                    pending.push(entry)
                }
                _ => {
                    if !body.is_empty() {
                        body.push(',');
                    }
                    let offset = u32::try_from(body.len()).map_err(corrupt)?;
                    coded.extend(pending.drain(..).map(|entry| Coded { entry, offset }));
                    body.push_str(member);
                }
            }
        }
        let offset = u32::try_from(body.len()).map_err(corrupt)?;
        coded.extend(pending.drain(..).map(|entry| Coded { entry, offset }));
        let raw = RawValue::from_string(format!("{{{body}}}")).map_err(corrupt)?;
        Ok((coded, raw))
    }

    /// Attach the coded members read from a format 2 record to the text read with it, checking
    /// that each goes at a member boundary of that text.
    pub(crate) fn attach(&mut self, coded: Vec<Coded>) -> Result<(), StoreError> {
        let body = self.body().unwrap_or_default();
        for c in &coded {
            let at = c.offset as usize;
            let boundary =
                at == 0 || at == body.len() || (at < body.len() && body.as_bytes()[at - 1] == b',');
            if !boundary || usize::from(c.entry) >= COMMON_MEMBERS.len() {
                return Err(StoreError::Corrupt(format!(
                    "coded metadata member {} at {at} of {}",
                    c.entry,
                    body.len()
                )));
            }
        }
        self.coded = coded;
        Ok(())
    }
}

/// Bit of a packed header's entry byte (record format 3): the member goes at the same offset as
/// the one before it, and no distance follows. Most coded members are schema defaults that sit
/// together, so this halves the header.
const SAME_OFFSET: u8 = 0x80;
// Entry numbers must leave `SAME_OFFSET` free.
const _: () = assert!(COMMON_MEMBERS.len() <= SAME_OFFSET as usize);

/// Write the coded members' header: their count, then per member its entry and the distance of
/// its offset from the previous one (LEB128). `packed` (record format 3) writes a distance of 0
/// as the entry's [`SAME_OFFSET`] bit instead (format 2 always writes the distance).
pub(crate) fn write_coded(coded: &[Coded], out: &mut Vec<u8>, packed: bool) {
    // `compact` codes at most 255 members.
    out.push(u8::try_from(coded.len()).unwrap_or(u8::MAX));
    let mut last = 0u32;
    for c in coded.iter().take(usize::from(u8::MAX)) {
        let mut delta = c.offset.saturating_sub(last);
        last = c.offset;
        if packed && delta == 0 {
            out.push(c.entry | SAME_OFFSET);
            continue;
        }
        out.push(c.entry);
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
}

/// Read what [`write_coded`] wrote (with the same `packed`); the rest of `bytes` follows.
pub(crate) fn read_coded(bytes: &[u8], packed: bool) -> Result<(Vec<Coded>, &[u8]), StoreError> {
    let truncated = || StoreError::Corrupt("truncated coded metadata header".into());
    let (&n, mut rest) = bytes.split_first().ok_or_else(truncated)?;
    let mut coded = Vec::with_capacity(usize::from(n));
    let mut offset = 0u32;
    for _ in 0..n {
        let (&entry, after) = rest.split_first().ok_or_else(truncated)?;
        rest = after;
        if packed && entry & SAME_OFFSET != 0 {
            coded.push(Coded {
                entry: entry & !SAME_OFFSET,
                offset,
            });
            continue;
        }
        let mut delta = 0u32;
        for shift in (0..35).step_by(7) {
            let (&byte, after) = rest.split_first().ok_or_else(truncated)?;
            rest = after;
            delta |= u32::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                break;
            }
        }
        offset = offset.checked_add(delta).ok_or_else(truncated)?;
        coded.push(Coded { entry, offset });
    }
    Ok((coded, rest))
}

/// `body` (members between braces) with the coded members put back where they were.
fn write_body(body: &str, coded: &[Coded], out: &mut String) {
    let mut wrote = false;
    // A comma goes between pieces unless the piece before ended with the text's own one.
    let mut put = |piece: &str, out: &mut String| {
        if piece.is_empty() {
            return;
        }
        if wrote && !out.ends_with(',') {
            out.push(',');
        }
        out.push_str(piece);
        wrote = true;
    };
    let mut cursor = 0;
    for c in coded {
        let at = (c.offset as usize).clamp(cursor, body.len());
        put(body.get(cursor..at).unwrap_or_default(), out);
        put(
            COMMON_MEMBERS
                .get(usize::from(c.entry))
                .copied()
                .unwrap_or_default(),
            out,
        );
        cursor = at;
    }
    put(body.get(cursor..).unwrap_or_default(), out);
}

fn common_index() -> &'static HashMap<&'static str, u8> {
    static INDEX: OnceLock<HashMap<&'static str, u8>> = OnceLock::new();
    INDEX.get_or_init(|| {
        COMMON_MEMBERS
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((*m, u8::try_from(i).ok()?)))
            .collect()
    })
}

fn corrupt(e: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl From<Map<String, Value>> for StoredMetadata {
    fn from(map: Map<String, Value>) -> Self {
        Self {
            raw: None,
            coded: Vec::new(),
            map: OnceLock::from(map),
        }
    }
}

impl Deref for StoredMetadata {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        self.force()
    }
}

impl DerefMut for StoredMetadata {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.force();
        self.raw = None;
        self.coded.clear();
        // `force` has just filled it.
        self.map.get_mut().expect("metadata parsed")
    }
}

impl Clone for StoredMetadata {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            coded: self.coded.clone(),
            map: self.map.clone(),
        }
    }
}

impl PartialEq for StoredMetadata {
    fn eq(&self, other: &Self) -> bool {
        match (self.stored_text(), other.stored_text()) {
            (Some(a), Some(b)) if a == b && self.coded == other.coded => true,
            _ => **self == **other,
        }
    }
}

impl fmt::Debug for StoredMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Always the whole object (coded members put back): what PostgreSQL, exports and every other
/// reader of the JSON form see does not depend on how the embedded store codes it.
impl Serialize for StoredMetadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.raw, self.coded.is_empty()) {
            (Some(raw), true) => raw.serialize(serializer),
            (Some(_), false) => match self.full_text().map(RawValue::from_string) {
                Some(Ok(raw)) => raw.serialize(serializer),
                _ => self.force().serialize(serializer),
            },
            (None, _) => self.force().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StoredMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("metadata is not a JSON object"));
        }
        Ok(Self {
            raw: Some(raw),
            coded: Vec::new(),
            map: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(text: &str) -> StoredMetadata {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_stored_text_is_kept_until_a_member_changes() {
        let text = r#"{"client_name":"A","redirect_uris":["https://a.example/cb"]}"#;
        let mut m = stored(text);
        assert_eq!(m.stored_text(), Some(text));
        assert_eq!(m["client_name"], "A");
        // Reading a member keeps the text: a response can still splice it.
        assert_eq!(m.stored_text(), Some(text));
        assert_eq!(serde_json::to_string(&m).unwrap(), text);
        m.insert("client_name".into(), json!("B"));
        assert_eq!(m.stored_text(), None);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"client_name":"B","redirect_uris":["https://a.example/cb"]}"#
        );
    }

    #[test]
    fn only_an_object_decodes() {
        for bad in ["[1]", "\"x\"", "3", "null"] {
            let err = serde_json::from_str::<StoredMetadata>(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a JSON object"),
                "{bad}: {err}"
            );
        }
        assert!(serde_json::from_str::<StoredMetadata>("{\"a\":").is_err());
    }

    #[test]
    fn equality_and_clones_follow_the_members() {
        let a = stored(r#"{"a":1,"b":2}"#);
        let b: StoredMetadata = json!({"a": 1, "b": 2}).as_object().unwrap().clone().into();
        assert_eq!(a, b);
        assert_eq!(a.clone(), a);
        assert_ne!(a, stored(r#"{"a":1}"#));
        assert_eq!(a.clone().into_map(), b.into_map());
    }

    /// What the embedded store writes and reads back: (header, text) → metadata, with the
    /// header of format 2 and of format 3 (packed), which must agree.
    fn through_both_headers(m: &StoredMetadata) -> StoredMetadata {
        let (coded, text) = m.compact().unwrap();
        let mut backs = [false, true].map(|packed| {
            let mut header = Vec::new();
            write_coded(&coded, &mut header, packed);
            header.extend_from_slice(b"tail");
            let (read, rest) = read_coded(&header, packed).unwrap();
            assert_eq!(rest, b"tail");
            assert_eq!(read, coded);
            let mut back = StoredMetadata::from_text(text.clone());
            back.attach(read).unwrap();
            back
        });
        assert_eq!(backs[0], backs[1]);
        std::mem::take(&mut backs[1])
    }

    #[test]
    fn the_packed_header_is_smaller_when_members_sit_together() {
        let map = json!({"client_name": "A", "require_auth_time": false, "owner": "",
                         "skip_consent": false});
        let (coded, _) = StoredMetadata::from(map.as_object().unwrap().clone())
            .compact()
            .unwrap();
        let [two, three] = [false, true].map(|packed| {
            let mut header = Vec::new();
            write_coded(&coded, &mut header, packed);
            header
        });
        // Count, then (entry, distance) for the first and entry|SAME_OFFSET for the others.
        assert_eq!(two.len(), 7);
        assert_eq!(three, [3, 14, 17, 29 | SAME_OFFSET, 31 | SAME_OFFSET]);
    }

    #[test]
    fn coded_members_come_back_as_the_same_text_in_the_same_place() {
        let cases = [
            json!({}),
            json!({"client_name": "A"}),
            json!({"require_auth_time": false}),
            json!({"require_auth_time": false, "audience": [], "owner": ""}),
            json!({"require_auth_time": false, "client_name": "A", "audience": []}),
            json!({"client_name": "A", "require_auth_time": false, "b": 1, "owner": "", "c": [1]}),
            json!({"owner": "", "metadata": {}, "x": "a,b", "skip_consent": false}),
            // Same names, other values: not coded.
            json!({"require_auth_time": true, "owner": "me", "metadata": {"a": 1}}),
            json!({"client_name#ja": "名前", "grant_types": ["authorization_code", "refresh_token"],
                   "note": "\"owner\":\"\"", "token_endpoint_auth_method": "none"}),
        ];
        for case in cases {
            let map = case.as_object().unwrap().clone();
            let expected = serde_json::to_string(&map).unwrap();
            let back = through_both_headers(&StoredMetadata::from(map.clone()));
            assert_eq!(*back, map, "{expected}");
            assert_eq!(serde_json::to_string(&back).unwrap(), expected);
            let mut spliced = String::from("{\"client_id\":\"c\"");
            assert!(back.write_members(&mut spliced));
            spliced.push('}');
            let mut with_id = Map::new();
            with_id.insert("client_id".into(), json!("c"));
            with_id.extend(map.clone());
            assert_eq!(spliced, serde_json::to_string(&with_id).unwrap());
            // Written again unchanged, the stored form is reused as it is.
            let again = through_both_headers(&back);
            assert_eq!(again.stored_text(), back.stored_text());
            assert_eq!(again, back);
        }
    }

    #[test]
    fn schema_defaults_are_not_stored_as_text() {
        let map = json!({
            "redirect_uris": ["https://a.example/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "client_name": "A",
            "require_auth_time": false,
            "post_logout_redirect_uris": [],
            "skip_consent": false
        });
        let (coded, text) = StoredMetadata::from(map.as_object().unwrap().clone())
            .compact()
            .unwrap();
        assert_eq!(
            text.get(),
            r#"{"redirect_uris":["https://a.example/cb"],"client_name":"A"}"#
        );
        assert_eq!(coded.len(), 6);
    }

    /// Pins the entry numbers on disk: a format 2 record written by this version must read the
    /// same forever (`COMMON_MEMBERS` is append only).
    #[test]
    fn a_stored_header_reads_as_it_was_written() {
        // Entries 0 and 14 before the first member; 31 at the end (offset 15 = 5 + 10).
        let header = [3u8, 0, 0, 14, 0, 31, 15];
        // The same in format 3: entry 14 has the SAME_OFFSET bit.
        let packed = [3u8, 0, 0, 14 | SAME_OFFSET, 31, 15];
        for (header, packed) in [(&header[..], false), (&packed[..], true)] {
            let (coded, _) = read_coded(header, packed).unwrap();
            let mut m = stored(r#"{"a":1,"b":"xyz"}"#);
            m.attach(coded).unwrap();
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                r#"{"token_endpoint_auth_method":"client_secret_basic","require_auth_time":false,"a":1,"b":"xyz","skip_consent":false}"#
            );
        }
    }

    #[test]
    fn a_damaged_header_is_corrupt_not_a_panic() {
        let attach = |header: &[u8], text: &str| {
            let (coded, _) = read_coded(header, false)?;
            let mut m = stored(text);
            m.attach(coded)
        };
        assert!(attach(&[], "{}").is_err());
        assert!(attach(&[1, 0], "{}").is_err());
        assert!(attach(&[1, 0, 0x80], "{}").is_err());
        // An entry past the table.
        assert!(attach(&[1, 200, 0], "{}").is_err());
        // Past the end, or inside a member.
        assert!(attach(&[1, 0, 9], r#"{"a":1}"#).is_err());
        assert!(attach(&[1, 0, 2], r#"{"a":1}"#).is_err());
        assert!(attach(&[1, 0, 5], r#"{"a":1}"#).is_ok());
        assert!(attach(&[2, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0xff], "{}").is_err());
        // Packed: an entry past the table with or without the bit.
        for header in [&[1u8, 100 | SAME_OFFSET][..], &[1, 0x7f | SAME_OFFSET]] {
            let (coded, _) = read_coded(header, true).unwrap();
            assert!(stored("{}").attach(coded).is_err(), "{header:?}");
        }
        assert!(read_coded(&[2, SAME_OFFSET], true).is_err());
    }

    #[test]
    fn a_change_drops_the_coding_too() {
        let map = json!({"client_name": "A", "require_auth_time": false});
        let mut m = through_both_headers(&StoredMetadata::from(map.as_object().unwrap().clone()));
        m.insert("client_name".into(), json!("B"));
        assert_eq!(m.stored_text(), None);
        let back = through_both_headers(&m);
        assert_eq!(back["client_name"], "B");
        assert_eq!(back["require_auth_time"], false);
    }

    #[test]
    fn common_members_are_members_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in COMMON_MEMBERS {
            let v: Value = serde_json::from_str(&format!("{{{m}}}")).unwrap();
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                format!("{{{m}}}"),
                "{m}"
            );
            assert!(seen.insert(*m), "{m} twice");
        }
        assert!(COMMON_MEMBERS.len() < usize::from(u8::MAX));
    }
}
