//! `{{...}}` templates in case files.
//!
//! Names: `endpoint` (the registration endpoint), `origin` (its scheme://host:port), `case`
//! (the case id), `provided.NAME` (a `--provide NAME=VALUE` value), and `N.PATH`: member `PATH`
//! (dotted, array indexes allowed) of the JSON body of step `N` (1-based); `N.header.NAME` is a
//! response header, `N.status` the status code. A JSON string that is exactly one template is
//! replaced by the referenced JSON value (so arrays, numbers and objects keep their type);
//! anywhere else the value is inserted as text.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a step left behind for later templates.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// HTTP status.
    pub status: u16,
    /// Response headers, names in lower case (repeated headers joined with ", ").
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, if it was JSON.
    pub json: Option<Value>,
}

/// Everything a template can refer to.
pub struct Scope<'a> {
    /// The registration endpoint.
    pub endpoint: &'a str,
    /// `scheme://host[:port]` of the endpoint.
    pub origin: &'a str,
    /// The current case id.
    pub case_id: &'a str,
    /// `--provide` values.
    pub provided: &'a BTreeMap<String, String>,
    /// Earlier steps (index 0 = step 1).
    pub steps: &'a [Recorded],
}

/// Follow a dotted path into a JSON value.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(value);
    }
    let mut current = value;
    for part in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

impl Scope<'_> {
    /// The value a template expression names, or an error naming what is missing.
    pub fn resolve(&self, expr: &str) -> Result<Value, String> {
        let expr = expr.trim();
        match expr {
            "endpoint" => return Ok(Value::from(self.endpoint)),
            "origin" => return Ok(Value::from(self.origin)),
            "case" => return Ok(Value::from(self.case_id)),
            _ => {}
        }
        if let Some(name) = expr.strip_prefix("provided.") {
            return self
                .provided
                .get(name)
                .map(|v| Value::from(v.clone()))
                .ok_or_else(|| format!("nothing provided for {name:?}"));
        }
        let (step, path) = expr.split_once('.').unwrap_or((expr, ""));
        let n: usize = step
            .parse()
            .map_err(|_| format!("unknown template {{{{{expr}}}}}"))?;
        let recorded = n
            .checked_sub(1)
            .and_then(|i| self.steps.get(i))
            .ok_or_else(|| format!("{{{{{expr}}}}} refers to step {n}, which has not run"))?;
        if path == "status" {
            return Ok(Value::from(recorded.status));
        }
        if let Some(name) = path.strip_prefix("header.") {
            return recorded
                .headers
                .get(&name.to_ascii_lowercase())
                .map(|v| Value::from(v.clone()))
                .ok_or_else(|| format!("step {n} had no {name} header"));
        }
        let json = recorded
            .json
            .as_ref()
            .ok_or_else(|| format!("step {n} did not answer with JSON"))?;
        lookup(json, path)
            .filter(|v| !v.is_null())
            .cloned()
            .ok_or_else(|| format!("step {n} answered without {path:?}"))
    }

    /// Render a string: one whole template gives its JSON value, otherwise text.
    pub fn render_str(&self, s: &str) -> Result<Value, String> {
        let trimmed = s.trim();
        if trimmed.starts_with("{{")
            && trimmed.ends_with("}}")
            && trimmed.matches("{{").count() == 1
        {
            return self.resolve(&trimmed[2..trimmed.len() - 2]);
        }
        self.render_text(s).map(Value::from)
    }

    /// Render a string as text.
    pub fn render_text(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed template in {s:?}"))?;
            match self.resolve(&after[..end])? {
                Value::String(v) => out.push_str(&v),
                other => out.push_str(&other.to_string()),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Render every string inside a JSON value.
    pub fn render(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => self.render_str(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    out.insert(self.render_text(k)?, self.render(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_templates_keep_their_type_and_text_templates_interpolate() {
        let provided = BTreeMap::from([("sector".to_owned(), "https://s.example/".to_owned())]);
        let steps = vec![Recorded {
            status: 201,
            headers: BTreeMap::from([("cache-control".to_owned(), "no-store".to_owned())]),
            json: Some(json!({"client_id": "abc", "redirect_uris": ["https://a/cb"], "n": 3})),
        }];
        let scope = Scope {
            endpoint: "http://h/register",
            origin: "http://h",
            case_id: "c",
            provided: &provided,
            steps: &steps,
        };
        assert_eq!(
            scope.render_str("{{1.redirect_uris}}").unwrap(),
            json!(["https://a/cb"])
        );
        assert_eq!(scope.render_str("{{ 1.n }}").unwrap(), json!(3));
        assert_eq!(
            scope.render_str("{{endpoint}}/{{1.client_id}}").unwrap(),
            json!("http://h/register/abc")
        );
        assert_eq!(
            scope.render_str("{{1.redirect_uris.0}}").unwrap(),
            json!("https://a/cb")
        );
        assert_eq!(scope.render_str("{{1.status}}").unwrap(), json!(201));
        assert_eq!(
            scope.render_str("{{1.header.Cache-Control}}").unwrap(),
            json!("no-store")
        );
        assert_eq!(
            scope.render_str("{{provided.sector}}").unwrap(),
            json!("https://s.example/")
        );
        assert!(scope.render_str("{{2.client_id}}").is_err());
        assert!(scope.render_str("{{1.missing}}").is_err());
        assert!(scope.render_str("{{provided.other}}").is_err());
        assert!(scope.render_str("{{1.client_id").is_err());
    }
}
