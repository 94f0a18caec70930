//! The checks on registered metadata that need the network: the `sector_identifier_uri` document
//! (OpenID Connect Registration §5, Core §8.1) and the `jwks_uri` JWK Set (RFC 7591 §2).
//! Runs after `metadata::validate`, so every URL here is already a syntactically valid https URL.

use super::{FetchError, Fetcher};
use crate::error::{RegistrationError, Result};
use crate::metadata::jwks;
use serde_json::{Map, Value};

/// Grant types for which the `jwks_uri` must also be listed in the sector document
/// (OpenID Connect CIBA Core §4; node-oidc-provider does the same for the device grant).
const GRANTS_NEEDING_JWKS_URI_IN_SECTOR: &[&str] = &[
    "urn:openid:params:grant-type:ciba",
    "urn:ietf:params:oauth:grant-type:device_code",
];

/// The network checks of client metadata, built once at start.
pub struct RemoteMetadata {
    fetcher: Fetcher,
    fetch_jwks_uri: bool,
}

impl RemoteMetadata {
    /// `fetch_jwks_uri`: whether `jwks_uri` is dereferenced (setting `fetch.fetch_jwks_uri`).
    pub fn new(fetcher: Fetcher, fetch_jwks_uri: bool) -> Self {
        Self {
            fetcher,
            fetch_jwks_uri,
        }
    }

    /// The SSRF-safe fetcher these checks use (client ID metadata documents share it, its
    /// slots and its negative cache).
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// Check the validated metadata of a registration (RFC 7591 §3.1) or an update
    /// (RFC 7592 §2.2). Failures are `invalid_client_metadata` naming the field and the problem,
    /// never quoting the fetched document.
    pub async fn check(&self, metadata: &Map<String, Value>) -> Result<()> {
        self.check_changes(metadata, None).await
    }

    /// [`RemoteMetadata::check`] for an update from `previous` (RFC 7592 §2.2): a document is
    /// fetched again only when what it is checked against changed — the `jwks_uri`, or for the
    /// sector document its URL, the redirect URIs it must list and the members its CIBA/device
    /// rule reads. An update replayed with the same URLs costs no fetch (issue #12 item 1).
    pub async fn check_changes(
        &self,
        metadata: &Map<String, Value>,
        previous: Option<&Map<String, Value>>,
    ) -> Result<()> {
        let changed = |names: &[&str]| {
            previous.is_none_or(|p| names.iter().any(|n| p.get(*n) != metadata.get(*n)))
        };
        if let Some(uri) = metadata
            .get("sector_identifier_uri")
            .and_then(Value::as_str)
        {
            let inputs: &[&str] = if lists_jwks_uri(metadata) {
                &[
                    "sector_identifier_uri",
                    "redirect_uris",
                    "grant_types",
                    "jwks_uri",
                ]
            } else {
                &["sector_identifier_uri", "redirect_uris", "grant_types"]
            };
            if changed(inputs) {
                self.check_sector(uri, metadata).await?;
            }
        }
        if self.fetch_jwks_uri && changed(&["jwks_uri"]) {
            if let Some(uri) = metadata.get("jwks_uri").and_then(Value::as_str) {
                let doc = self
                    .fetcher
                    .get_json(uri)
                    .await
                    .map_err(|e| fetch_error("jwks_uri", e))?;
                jwks::check(&doc).map_err(|problem| {
                    RegistrationError::metadata(format!(
                        "jwks_uri: the document {problem} (RFC 7591 §2, RFC 7517 §5)"
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// OpenID Connect Registration §5: the document is a JSON array of URIs that must contain
    /// every registered `redirect_uri` (compared as exact strings).
    async fn check_sector(&self, uri: &str, metadata: &Map<String, Value>) -> Result<()> {
        let doc = self
            .fetcher
            .get_json(uri)
            .await
            .map_err(|e| fetch_error("sector_identifier_uri", e))?;
        let invalid = |msg: String| {
            RegistrationError::metadata(format!(
                "sector_identifier_uri: {msg} (OpenID Connect Registration §5)"
            ))
        };
        let listed: Vec<&str> = match &doc {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        invalid(format!(
                            "the document must be a JSON array of strings; item {i} is not a string"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(invalid(
                    "the document must be a JSON array of redirect URIs".into(),
                ))
            }
        };
        let redirect_uris = metadata
            .get("redirect_uris")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for redirect in redirect_uris.iter().filter_map(Value::as_str) {
            if !listed.contains(&redirect) {
                return Err(invalid(format!(
                    "the document does not list the redirect URI {redirect:?}"
                )));
            }
        }
        if lists_jwks_uri(metadata) {
            if let Some(jwks_uri) = metadata.get("jwks_uri").and_then(Value::as_str) {
                if !listed.contains(&jwks_uri) {
                    return Err(invalid(format!(
                        "the document does not list the jwks_uri {jwks_uri:?}, which the CIBA and device grants require"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether the sector document must also list the `jwks_uri` (CIBA and device grants).
fn lists_jwks_uri(metadata: &Map<String, Value>) -> bool {
    metadata
        .get("grant_types")
        .and_then(Value::as_array)
        .is_some_and(|grants| {
            grants
                .iter()
                .filter_map(Value::as_str)
                .any(|g| GRANTS_NEEDING_JWKS_URI_IN_SECTOR.contains(&g))
        })
}

fn fetch_error(field: &str, e: FetchError) -> RegistrationError {
    match e {
        // Not the client's fault: the server is saturated. Ask it to come back shortly.
        FetchError::Busy => RegistrationError::TooManyRequests(1),
        e => RegistrationError::metadata(format!("{field}: {e}")),
    }
}
