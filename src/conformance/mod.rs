//! The conformance runner: replays the spec cases of `conformance/cases/` against any live
//! registration server (RFC 7591 / RFC 7592 / OpenID Connect Dynamic Client Registration 1.0)
//! and reports, requirement by requirement, what passed.
//!
//! Nothing here knows about the registrar: the cases are data, the server is a URL. The binary
//! `conformance` (src/bin/conformance.rs) and the test `tests/conformance.rs` are thin callers.

pub mod case;
pub mod report;
pub mod template;

pub use case::{load_dir, Case, Level};
pub use report::{markdown, Summary};

use case::{Expect, Request, Step};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use template::{lookup, Recorded, Scope};

/// Where the cases' client ID metadata documents are published
/// (draft-ietf-oauth-client-id-metadata-document): an https server the target can reach. The
/// runner cannot be one itself (the target needs a certificate it trusts), so the caller that
/// starts the target provides it (`tests/conformance.rs` does, with its local HTTPS server).
pub trait DocumentHost: Send + Sync {
    /// The https URL documents are served under, without a trailing slash.
    fn base_url(&self) -> String;
    /// Serve `body` (JSON, `Content-Type: application/json`) at `path`, replacing what was there.
    fn publish(&self, path: &str, body: String);
}

/// What the runner needs to know about the target.
#[derive(Clone, Default)]
pub struct Target {
    /// The absolute registration endpoint URL.
    pub registration_endpoint: String,
    /// An initial access token sent with every registration request that does not set its own
    /// `Authorization` (RFC 7591 §3); also provides the `initial_access_token` capability.
    pub initial_access_token: Option<String>,
    /// Capabilities and values the target provides (`sector_identifier_uri=https://...`).
    pub provided: BTreeMap<String, String>,
    /// Per-request timeout.
    pub timeout: Option<Duration>,
    /// Where `documents` of the cases are published; provides the `metadata_documents`
    /// capability and the `{{provided.documents}}` (its base URL) and
    /// `{{provided.documents_encoded}}` (the same, percent-encoded for a path segment) values.
    pub documents: Option<std::sync::Arc<dyn DocumentHost>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("registration_endpoint", &self.registration_endpoint)
            .field("provided", &self.provided)
            .field("documents", &self.documents.as_ref().map(|d| d.base_url()))
            .finish_non_exhaustive()
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step met its expectation.
    Pass,
    /// A step did not; the message is short and free of random values (it goes in the matrix).
    Fail(String),
    /// The target cannot provide what the case requires.
    Skip(String),
}

/// A case with its outcome.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// What happened.
    pub outcome: Outcome,
    /// Extra diagnostic text for the console (the response body of a failing step).
    pub detail: Option<String>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The endpoint is not an absolute http(s) URL.
    #[error("registration endpoint {0:?} is not an absolute http(s) URL")]
    BadEndpoint(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Run `cases` one after another against `target` (sequentially: cases never share state, and
/// a quiet server makes failures easy to read in its log).
pub async fn run(target: &Target, cases: &[Case]) -> Result<Vec<CaseResult>, RunError> {
    let endpoint = url::Url::parse(&target.registration_endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| RunError::BadEndpoint(target.registration_endpoint.clone()))?;
    let origin = endpoint.origin().ascii_serialization();
    // Redirects are never followed: a registration endpoint answers itself (RFC 7591 §3).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(target.timeout.unwrap_or(Duration::from_secs(15)))
        .no_proxy()
        .build()
        .map_err(|e| RunError::Client(e.to_string()))?;
    let mut capabilities: BTreeSet<String> = target.provided.keys().cloned().collect();
    if target.initial_access_token.is_some() {
        capabilities.insert("initial_access_token".into());
    }
    let mut provided = target.provided.clone();
    if let Some(iat) = &target.initial_access_token {
        provided.insert("initial_access_token".into(), iat.clone());
    }
    if let Some(host) = &target.documents {
        capabilities.insert("metadata_documents".into());
        let base = host.base_url();
        let encoded = url::form_urlencoded::byte_serialize(base.as_bytes()).collect();
        provided.insert("documents".into(), base);
        provided.insert("documents_encoded".into(), encoded);
    }
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let missing: Vec<&str> = case
            .requires
            .iter()
            .filter(|r| !capabilities.contains(*r))
            .map(String::as_str)
            .collect();
        let result = if !missing.is_empty() {
            CaseResult {
                case: case.clone(),
                outcome: Outcome::Skip(format!(
                    "needs {} ({})",
                    missing.join(", "),
                    if missing[0] == "initial_access_token" {
                        "pass --initial-access-token TOKEN".to_owned()
                    } else if missing[0] == "metadata_documents" {
                        "an https host for the documents; tests/conformance.rs provides one"
                            .to_owned()
                    } else {
                        format!("pass --provide {}=...", missing[0])
                    }
                )),
                detail: None,
            }
        } else {
            let runner = CaseRunner {
                client: &client,
                target,
                endpoint: endpoint.as_str(),
                origin: &origin,
                provided: &provided,
            };
            runner.run(case).await
        };
        results.push(result);
    }
    Ok(results)
}

struct CaseRunner<'a> {
    client: &'a reqwest::Client,
    target: &'a Target,
    endpoint: &'a str,
    origin: &'a str,
    provided: &'a BTreeMap<String, String>,
}

/// A step failure: the short, deterministic message and the diagnostic detail.
struct StepFailure {
    message: String,
    detail: Option<String>,
}

impl CaseRunner<'_> {
    async fn run(&self, case: &Case) -> CaseResult {
        if let Err(message) = self.publish(case) {
            return CaseResult {
                case: case.clone(),
                outcome: Outcome::Fail(format!("documents: {message}")),
                detail: None,
            };
        }
        let mut recorded: Vec<Recorded> = Vec::new();
        for (i, step) in case.steps.iter().enumerate() {
            let n = i + 1;
            match self.step(case, step, &recorded).await {
                Ok(Some(r)) => recorded.push(r),
                // a skipped step records nothing a later step could use
                Ok(None) => recorded.push(Recorded::default()),
                Err(f) => {
                    return CaseResult {
                        case: case.clone(),
                        outcome: Outcome::Fail(format!("step {n}: {}", f.message)),
                        detail: f.detail,
                    }
                }
            }
        }
        CaseResult {
            case: case.clone(),
            outcome: Outcome::Pass,
            detail: None,
        }
    }

    /// Publish the case's documents (templates rendered) on the target's document host.
    fn publish(&self, case: &Case) -> Result<(), String> {
        let Some(host) = &self.target.documents else {
            return Ok(());
        };
        let scope = Scope {
            endpoint: self.endpoint,
            origin: self.origin,
            case_id: &case.id,
            provided: self.provided,
            steps: &[],
        };
        for (path, document) in &case.documents {
            let path = scope.render_text(path)?;
            host.publish(&path, scope.render(document)?.to_string());
        }
        Ok(())
    }

    async fn step(
        &self,
        case: &Case,
        step: &Step,
        recorded: &[Recorded],
    ) -> Result<Option<Recorded>, StepFailure> {
        let scope = Scope {
            endpoint: self.endpoint,
            origin: self.origin,
            case_id: &case.id,
            provided: self.provided,
            steps: recorded,
        };
        let broken = |message: String| StepFailure {
            message,
            detail: None,
        };
        if let Some(cond) = &step.condition {
            if let Some([a, b]) = &cond.differ {
                match (scope.render_str(a), scope.render_str(b)) {
                    (Ok(a), Ok(b)) if a != b => {}
                    _ => return Ok(None),
                }
            }
            if let Some(p) = &cond.present {
                if scope.render_str(p).is_err() {
                    return Ok(None);
                }
            }
        }
        let request = self
            .build(&step.request, &scope, recorded)
            .map_err(broken)?;
        let response = request.send().await.map_err(|e| StepFailure {
            message: "no HTTP response".into(),
            detail: Some(e.to_string()),
        })?;
        let status = response.status().as_u16();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_ascii_lowercase())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str::<Value>(&text).ok();
        let got = Recorded {
            status,
            headers,
            json,
        };
        let alternatives: Vec<&Expect> = step.expect.iter().chain(step.any_of.iter()).collect();
        let mut failures = Vec::new();
        for expect in &alternatives {
            match check(expect, &got, &scope) {
                Ok(()) => return Ok(Some(got)),
                Err(msg) => failures.push(msg),
            }
        }
        let body: String = text.chars().take(600).collect();
        Err(StepFailure {
            message: failures.join("; or "),
            detail: Some(format!(
                "{} {} -> {status} {body}",
                step.request.method,
                step.request.url.as_deref().unwrap_or("{{endpoint}}")
            )),
        })
    }

    fn build(
        &self,
        spec: &Request,
        scope: &Scope<'_>,
        recorded: &[Recorded],
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = match &spec.url {
            Some(u) => scope.render_text(u)?,
            None => self.endpoint.to_owned(),
        };
        let method = reqwest::Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("bad method {:?}", spec.method))?;
        let is_registration = method == reqwest::Method::POST && url == self.endpoint;
        let mut req = self
            .client
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/json");
        match &spec.auth {
            Some(a) if a.is_empty() => {}
            Some(a) => req = req.header(reqwest::header::AUTHORIZATION, scope.render_text(a)?),
            None => {
                if let (true, Some(iat)) = (is_registration, &self.target.initial_access_token) {
                    req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {iat}"));
                }
            }
        }
        for (name, value) in &spec.headers {
            let value = match value {
                Value::String(s) => scope.render_text(s)?,
                other => other.to_string(),
            };
            req = req.header(name.as_str(), value);
        }
        if let Some(from) = spec.json_from {
            let base = recorded
                .get(from - 1)
                .and_then(|r| r.json.as_ref())
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| format!("step {from} did not answer with a JSON object"))?;
            let mut body: Map<String, Value> = base;
            for name in &spec.remove {
                body.remove(name);
            }
            for (k, v) in &spec.set {
                body.insert(k.clone(), scope.render(v)?);
            }
            req = req.json(&Value::Object(body));
        } else if let Some(json) = &spec.json {
            req = req.json(&scope.render(json)?);
        } else if let Some(body) = &spec.body {
            let content_type = spec.content_type.as_deref().unwrap_or("application/json");
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(scope.render_text(body)?);
        }
        Ok(req)
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_json_content_type(got: &Recorded) -> bool {
    got.headers.get("content-type").is_some_and(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence == "application/json" || essence.ends_with("+json")
    })
}

/// Check one expectation; the error is short and deterministic.
fn check(expect: &Expect, got: &Recorded, scope: &Scope<'_>) -> Result<(), String> {
    let error_code = got
        .json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str);
    if let Some(status) = &expect.status {
        if !status.matches(got.status) {
            let code = error_code.map(|c| format!(" {c}")).unwrap_or_default();
            return Err(format!(
                "expected status {}, got {}{code}",
                status.describe(),
                got.status
            ));
        }
    }
    let body = got.json.as_ref().and_then(Value::as_object);
    let needs_json = expect.json
        || expect.error.is_some()
        || !expect.present.is_empty()
        || !expect.equals.is_empty()
        || !expect.contains.is_empty()
        || !expect.types.is_empty();
    if needs_json {
        if !is_json_content_type(got) {
            return Err(format!(
                "expected Content-Type application/json, got {:?}",
                got.headers
                    .get("content-type")
                    .map(String::as_str)
                    .unwrap_or("none")
            ));
        }
        if body.is_none() {
            return Err("expected a JSON object body".into());
        }
    }
    let empty = Map::new();
    let body = body.unwrap_or(&empty);
    let root = Value::Object(body.clone());
    let member = |path: &str| lookup(&root, path).filter(|v| !v.is_null());
    if let Some(codes) = &expect.error {
        let allowed = codes.values();
        match error_code {
            Some(c) if !c.is_empty() && allowed.contains(&c) => {}
            Some(c) => {
                return Err(format!(
                    "expected error {}, got {c:?}",
                    allowed.join(" or ")
                ))
            }
            None => return Err("expected an \"error\" member".into()),
        }
    }
    for path in &expect.present {
        if member(path).is_none() {
            return Err(format!("expected {path} in the response"));
        }
    }
    for path in &expect.absent {
        if member(path).is_some() {
            return Err(format!("expected no {path} in the response"));
        }
    }
    for (path, want) in &expect.equals {
        let want = scope.render(want)?;
        match member(path) {
            Some(v) if *v == want => {}
            Some(v) => {
                return Err(format!(
                    "expected {path} = {}, got {}",
                    short(&want),
                    short(v)
                ))
            }
            None => return Err(format!("expected {path} = {}, got nothing", short(&want))),
        }
    }
    for (path, unwanted) in &expect.not_equals {
        let unwanted = scope.render(unwanted)?;
        if member(path) == Some(&unwanted) {
            return Err(format!(
                "expected {path} to differ from {}",
                short(&unwanted)
            ));
        }
    }
    for (path, item) in &expect.contains {
        let item = scope.render(item)?;
        match member(path).and_then(Value::as_array) {
            Some(items) if items.contains(&item) => {}
            _ => return Err(format!("expected {path} to contain {}", short(&item))),
        }
    }
    for (path, item) in &expect.not_contains {
        let item = scope.render(item)?;
        if member(path)
            .and_then(Value::as_array)
            .is_some_and(|items| items.contains(&item))
        {
            return Err(format!("expected {path} not to contain {}", short(&item)));
        }
    }
    for (path, ty) in &expect.types {
        let ty = ty.as_str().unwrap_or("");
        let (ty, optional) = match ty.strip_suffix('?') {
            Some(t) => (t, true),
            None => (ty, false),
        };
        match member(path) {
            None if optional => {}
            None => return Err(format!("expected {path} ({ty}) in the response")),
            Some(v) => {
                let ok = match ty {
                    "url" => v.as_str().is_some_and(|s| {
                        url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                    }),
                    "number" => v.is_number(),
                    other => type_of(v) == other,
                };
                if !ok {
                    return Err(format!("expected {path} to be {ty}, got {}", type_of(v)));
                }
            }
        }
    }
    for (when, then) in &expect.implies {
        let then = then.as_str().unwrap_or("");
        if member(when).is_some() && member(then).is_none() {
            return Err(format!("{when} is present, so {then} must be too"));
        }
    }
    for (name, want) in &expect.headers {
        let want = want.as_str().unwrap_or("").to_ascii_lowercase();
        match got.headers.get(&name.to_ascii_lowercase()) {
            Some(v) if v.to_ascii_lowercase().contains(&want) => {}
            Some(_) => return Err(format!("expected header {name} to contain {want:?}")),
            None => return Err(format!("expected header {name}")),
        }
    }
    for (name, unwanted) in &expect.headers_not {
        let unwanted = unwanted.as_str().unwrap_or("").to_ascii_lowercase();
        if let Some(v) = got.headers.get(&name.to_ascii_lowercase()) {
            if unwanted.is_empty() {
                return Err(format!("expected no {name} header"));
            }
            if v.to_ascii_lowercase().contains(&unwanted) {
                return Err(format!(
                    "expected header {name} not to contain {unwanted:?}"
                ));
            }
        }
    }
    Ok(())
}

/// A JSON value shortened for messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded(status: u16, headers: &[(&str, &str)], body: Value) -> Recorded {
        Recorded {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            json: Some(body),
        }
    }

    fn expect(v: Value) -> Expect {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expectations_catch_each_kind_of_deviation() {
        let provided = BTreeMap::new();
        let scope = Scope {
            endpoint: "http://h/r",
            origin: "http://h",
            case_id: "c",
            provided: &provided,
            steps: &[],
        };
        let got = recorded(
            400,
            &[
                ("content-type", "application/json"),
                ("www-authenticate", "Bearer error=\"invalid_token\""),
            ],
            json!({"error": "invalid_redirect_uri", "client_secret": "s", "list": ["a"]}),
        );
        let ok = |v: Value| check(&expect(v), &got, &scope);
        assert!(ok(json!({"status": "4xx", "error": ["invalid_redirect_uri", "x"]})).is_ok());
        assert!(ok(json!({"status": [201, 200]})).is_err());
        assert!(ok(json!({"error": "invalid_client_metadata"})).is_err());
        assert!(ok(json!({"implies": {"client_secret": "client_secret_expires_at"}})).is_err());
        assert!(ok(json!({"types": {"client_secret": "string", "n": "integer?"}})).is_ok());
        assert!(ok(json!({"types": {"client_secret": "integer"}})).is_err());
        assert!(ok(json!({"contains": {"list": "a"}, "not_contains": {"list": "b"}})).is_ok());
        assert!(ok(json!({"headers": {"WWW-Authenticate": "bearer"}})).is_ok());
        assert!(ok(json!({"headers_not": {"www-authenticate": "error="}})).is_err());
        assert!(ok(json!({"absent": ["client_secret"]})).is_err());
        let text = recorded(
            400,
            &[("content-type", "text/plain")],
            json!({"error": "x"}),
        );
        assert!(check(&expect(json!({"error": "x"})), &text, &scope).is_err());
    }
}
