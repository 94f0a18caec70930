//! The data format of a conformance case (`conformance/cases/**/*.json`) and its loader.
//!
//! A case proves one requirement of RFC 7591, RFC 7592 or OpenID Connect Dynamic Client
//! Registration 1.0. It is a sequence of HTTP steps; each step has a request and the outcome the
//! spec demands. Values of earlier responses are referenced with templates such as
//! `{{1.registration_access_token}}` (see [`super::template`]). The format is documented for
//! case authors in `conformance/README.md`.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// How strongly the spec words the requirement (RFC 2119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// MUST / MUST NOT / REQUIRED.
    #[serde(rename = "MUST")]
    Must,
    /// SHOULD / SHOULD NOT / RECOMMENDED.
    #[serde(rename = "SHOULD")]
    Should,
}

impl Level {
    /// `MUST` or `SHOULD`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        }
    }
}

/// One requirement and the steps that prove it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Stable identifier, unique across all cases (e.g. `rfc7592-read-without-token-401`).
    pub id: String,
    /// The requirement in one sentence.
    pub title: String,
    /// `RFC 7591`, `RFC 7592`, `OIDC Registration 1.0`, ...
    pub spec: String,
    /// The section, e.g. `§3.2.2`.
    pub section: String,
    /// MUST or SHOULD.
    pub level: Level,
    /// Capabilities the target must provide (`--provide NAME=VALUE` or
    /// `--initial-access-token`); without them the case is skipped with a reason.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Why the case exists or what it is modelled on (e.g. an OIDF conformance test name).
    #[serde(default)]
    pub note: Option<String>,
    /// Client ID metadata documents to publish before the steps run: path (under the
    /// document host's base URL, templated) → the JSON document (templated). Needs the
    /// `metadata_documents` capability (a [`super::DocumentHost`]).
    #[serde(default)]
    pub documents: std::collections::BTreeMap<String, serde_json::Value>,
    /// The requests, in order; templates may refer to earlier steps by 1-based number.
    pub steps: Vec<Step>,
    /// Directory under `cases/` the case was loaded from (its category); set by the loader.
    #[serde(skip)]
    pub category: String,
    /// File the case was loaded from; set by the loader.
    #[serde(skip)]
    pub file: PathBuf,
}

/// One HTTP exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Run the step only when this condition holds (otherwise it is skipped, not failed).
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
    /// The request.
    pub request: Request,
    /// The outcome the spec requires. Either `expect`, or `any_of` (one of several acceptable
    /// outcomes, for requirements where the spec allows to reject or to correct).
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Alternative acceptable outcomes.
    #[serde(default)]
    pub any_of: Vec<Expect>,
}

/// A condition over templated values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Both templates are present and render to different values.
    #[serde(default)]
    pub differ: Option<[String; 2]>,
    /// The template renders to a value (the referenced member exists).
    #[serde(default)]
    pub present: Option<String>,
}

/// An HTTP request; every string is a template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// HTTP method (default `POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Target URL (default `{{endpoint}}`, the registration endpoint).
    #[serde(default)]
    pub url: Option<String>,
    /// `Authorization` header value. Absent: the initial access token for a POST to the
    /// registration endpoint when one was given, else none. `""`: no header at all.
    #[serde(default)]
    pub auth: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// A JSON body (templated; sent as `application/json`).
    #[serde(default)]
    pub json: Option<Value>,
    /// Build the JSON body from the JSON response of an earlier step (1-based)...
    #[serde(default)]
    pub json_from: Option<usize>,
    /// ...with these members replaced or added...
    #[serde(default)]
    pub set: Map<String, Value>,
    /// ...and these members removed.
    #[serde(default)]
    pub remove: Vec<String>,
    /// A raw body (templated), sent with `content_type` (default `application/json`).
    #[serde(default)]
    pub body: Option<String>,
    /// The `Content-Type` of a raw body.
    #[serde(default)]
    pub content_type: Option<String>,
}

fn default_method() -> String {
    "POST".into()
}

/// Acceptable HTTP status: a code, a list of codes, or a class such as `"4xx"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// Exactly this code.
    One(u16),
    /// Any of these codes.
    Many(Vec<u16>),
    /// A class: `"2xx"`, `"4xx"`, ...
    Class(String),
}

impl StatusSpec {
    /// Whether `status` is acceptable.
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusSpec::One(s) => *s == status,
            StatusSpec::Many(list) => list.contains(&status),
            StatusSpec::Class(c) => c
                .strip_suffix("xx")
                .and_then(|d| d.parse::<u16>().ok())
                .is_some_and(|d| status / 100 == d),
        }
    }

    /// Human-readable form.
    pub fn describe(&self) -> String {
        match self {
            StatusSpec::One(s) => s.to_string(),
            StatusSpec::Many(list) => list
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            StatusSpec::Class(c) => c.clone(),
        }
    }
}

/// One or several acceptable strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// Exactly this.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The acceptable values.
    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The expected outcome of a step. Member paths are dotted (`jwks.keys.0.kid`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Acceptable status.
    #[serde(default)]
    pub status: Option<StatusSpec>,
    /// The body is an RFC 7591 §3.2.2 error object (`application/json`, non-empty string
    /// `error`) whose `error` is one of these codes.
    #[serde(default)]
    pub error: Option<OneOrMany>,
    /// The body is a JSON object (`application/json`).
    #[serde(default)]
    pub json: bool,
    /// Members that must be present (and not null).
    #[serde(default)]
    pub present: Vec<String>,
    /// Members that must be absent (or null).
    #[serde(default)]
    pub absent: Vec<String>,
    /// Members that must equal these values (templated).
    #[serde(default)]
    pub equals: Map<String, Value>,
    /// Members that must differ from these values (templated); an absent member differs.
    #[serde(default)]
    pub not_equals: Map<String, Value>,
    /// Array members that must contain these values.
    #[serde(default)]
    pub contains: Map<String, Value>,
    /// Array members that must not contain these values (an absent member passes).
    #[serde(default)]
    pub not_contains: Map<String, Value>,
    /// JSON types of members: `string`, `integer`, `number`, `boolean`, `array`, `object`,
    /// `url` (an absolute http(s) URL string); a trailing `?` allows the member to be absent.
    #[serde(default)]
    pub types: Map<String, Value>,
    /// `{"a": "b"}`: when member `a` is present, member `b` must be present too.
    #[serde(default)]
    pub implies: Map<String, Value>,
    /// Response headers that must contain these substrings (case-insensitive); `""` = present.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// Response headers whose value must not contain these substrings (case-insensitive); an
    /// absent header passes. `""` = the header must be absent.
    #[serde(default)]
    pub headers_not: Map<String, Value>,
}

/// Why the cases could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A file is not a valid case (or array of cases).
    #[error("{0}: {1}")]
    Parse(PathBuf, serde_json::Error),
    /// The cases are inconsistent (duplicate id, bad step reference, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Load every `*.json` under `dir` (recursively, in path order). A file holds one case or an
/// array of cases; the category of a case is its directory relative to `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, LoadError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| LoadError::Io(file.clone(), e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| LoadError::Parse(file.clone(), e))?;
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let category = file
            .parent()
            .and_then(|p| p.strip_prefix(dir).ok())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "general".into());
        for item in items {
            let mut case: Case =
                serde_json::from_value(item).map_err(|e| LoadError::Parse(file.clone(), e))?;
            case.category = category.clone();
            case.file = file.clone();
            cases.push(case);
        }
    }
    check(&cases)?;
    Ok(cases)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError::Io(dir.to_path_buf(), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| LoadError::Io(dir.to_path_buf(), e))?
            .path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Catch authoring mistakes before anything is sent.
fn check(cases: &[Case]) -> Result<(), LoadError> {
    let mut ids = std::collections::HashSet::new();
    for case in cases {
        if !ids.insert(case.id.as_str()) {
            return Err(LoadError::Invalid(format!(
                "duplicate case id {:?}",
                case.id
            )));
        }
        if case.steps.is_empty() {
            return Err(LoadError::Invalid(format!("{}: no steps", case.id)));
        }
        for (i, step) in case.steps.iter().enumerate() {
            if step.expect.is_none() && step.any_of.is_empty() {
                return Err(LoadError::Invalid(format!(
                    "{} step {}: needs \"expect\" or \"any_of\"",
                    case.id,
                    i + 1
                )));
            }
            if let Some(from) = step.request.json_from {
                if from == 0 || from > i {
                    return Err(LoadError::Invalid(format!(
                        "{} step {}: json_from must name an earlier step",
                        case.id,
                        i + 1
                    )));
                }
            }
        }
    }
    Ok(())
}
