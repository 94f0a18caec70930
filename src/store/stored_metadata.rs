//! [`StoredMetadata`]: a client's registered metadata as read from the store, kept as the JSON
//! text it was stored as until something asks for a member.
//!
//! The common RFC 7592 §2.1 read only echoes the metadata, so decoding it into a map and
//! encoding the map again was a tenth of the read path's CPU (BENCHMARKS.md, issue #19). With
//! the text kept, [`StoredMetadata::as_json`] hands the stored object to the response as is;
//! everything that looks at members (`Deref` to the map) parses it once, on first use.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

/// The registered metadata of a client (defaults applied, schema order), read lazily.
///
/// Reads (`Deref`) parse the stored text on first use; a write (`DerefMut`) drops the text, so
/// the record is encoded from the map afterwards. The text is only ever a JSON object (checked
/// when the record is decoded), so the parse cannot fail.
#[derive(Default)]
pub struct StoredMetadata {
    /// The stored JSON object, while the map has not been changed.
    raw: Option<Box<RawValue>>,
    map: OnceLock<Map<String, Value>>,
}

impl StoredMetadata {
    /// The metadata as one JSON object's text, when it is still exactly what was stored: the
    /// bytes a response can splice in without a decode and an encode.
    pub fn as_json(&self) -> Option<&str> {
        self.raw.as_deref().map(RawValue::get)
    }

    /// The metadata as a map, parsed if needed.
    pub fn into_map(mut self) -> Map<String, Value> {
        self.force();
        self.map.take().unwrap_or_default()
    }

    fn force(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            self.raw
                .as_deref()
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_default()
        })
    }
}

impl From<Map<String, Value>> for StoredMetadata {
    fn from(map: Map<String, Value>) -> Self {
        Self {
            raw: None,
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
        // `force` has just filled it.
        self.map.get_mut().expect("metadata parsed")
    }
}

impl Clone for StoredMetadata {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            map: self.map.clone(),
        }
    }
}

impl PartialEq for StoredMetadata {
    fn eq(&self, other: &Self) -> bool {
        match (self.as_json(), other.as_json()) {
            (Some(a), Some(b)) if a == b => true,
            _ => **self == **other,
        }
    }
}

impl fmt::Debug for StoredMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl Serialize for StoredMetadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.raw {
            Some(raw) => raw.serialize(serializer),
            None => self.force().serialize(serializer),
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
        assert_eq!(m.as_json(), Some(text));
        assert_eq!(m["client_name"], "A");
        // Reading a member keeps the text: a response can still splice it.
        assert_eq!(m.as_json(), Some(text));
        assert_eq!(serde_json::to_string(&m).unwrap(), text);
        m.insert("client_name".into(), json!("B"));
        assert_eq!(m.as_json(), None);
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
}
