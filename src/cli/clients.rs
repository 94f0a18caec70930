//! `registrar clients ...`: the operator commands, an HTTP client of the admin API. A readable
//! table (or `key: value` lines) by default, the API's JSON with `--json`.
//!
//! Exit status: 0 done, 1 the API refused (its JSON error on stderr) or could not be reached,
//! 2 bad arguments.

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use std::io::Read;
use std::process::ExitCode;

/// Where the admin API is and how to call it.
#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// Base URL of the admin listener.
    #[arg(
        long,
        global = true,
        env = "REGISTRAR_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    admin_url: String,
    /// An admin token with the scopes the command needs (required).
    #[arg(
        long,
        global = true,
        env = "REGISTRAR_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClientsCommand,
}

/// The filters of `list` and `prune` (the query parameters of `GET /admin/clients`).
#[derive(Debug, Args, Default)]
struct Filters {
    /// Exact software_id.
    #[arg(long)]
    software_id: Option<String>,
    /// Prefix of client_name.
    #[arg(long)]
    client_name: Option<String>,
    /// Admitting policy.
    #[arg(long)]
    policy: Option<String>,
    /// Admitting tier (anonymous, initial_access_token, software_statement, admin, ...).
    #[arg(long)]
    tier: Option<String>,
    /// registration or admin.
    #[arg(long)]
    source: Option<String>,
    /// Only disabled (true) or enabled (false) clients.
    #[arg(long)]
    disabled: Option<bool>,
    /// Created before this time (seconds since the epoch).
    #[arg(long)]
    created_before: Option<i64>,
    /// Created after this time (seconds since the epoch).
    #[arg(long)]
    created_after: Option<i64>,
    /// Never used, or last used at least this many seconds ago.
    #[arg(long)]
    unused_for_secs: Option<u64>,
}

impl Filters {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |name, value: Option<String>| {
            if let Some(v) = value {
                out.push((name, v));
            }
        };
        put("software_id", self.software_id.clone());
        put("client_name", self.client_name.clone());
        put("policy", self.policy.clone());
        put("tier", self.tier.clone());
        put("source", self.source.clone());
        put("disabled", self.disabled.map(|b| b.to_string()));
        put("created_before", self.created_before.map(|n| n.to_string()));
        put("created_after", self.created_after.map(|n| n.to_string()));
        put(
            "unused_for_secs",
            self.unused_for_secs.map(|n| n.to_string()),
        );
        out
    }
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// List clients (every page; --limit caps the total).
    List {
        #[command(flatten)]
        filters: Filters,
        /// At most this many clients.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one client.
    Show {
        /// The client (may start with "-": client ids are base64url).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Create a pre-registered client from RFC 7591 metadata (JSON); prints its credentials
    /// once.
    Create {
        /// The metadata as JSON, or @FILE, or @- for standard input.
        metadata: String,
        /// Register it under this policy.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Disable a client: it can no longer authenticate or change itself.
    Disable {
        /// The client (may start with "-": client ids are base64url).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Enable a disabled client.
    Enable {
        /// The client (may start with "-": client ids are base64url).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Delete one client.
    Delete {
        /// The client (may start with "-": client ids are base64url).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Delete every client matching the filters (at least one).
    Prune {
        #[command(flatten)]
        filters: Filters,
        /// Only count the matches.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a client secret as the authorization server would.
    Authenticate {
        /// The client (may start with "-": client ids are base64url).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        /// The secret; default: read from standard input (keeps it out of the process list).
        #[arg(
            long,
            env = "REGISTRAR_CLIENT_SECRET",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        secret: Option<String>,
    },
}

/// Run one `clients` command.
pub fn run(args: ClientsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("registrar: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Api(msg)) => fail(&msg),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("registrar: {msg}");
    ExitCode::FAILURE
}

enum Failure {
    Usage(String),
    Api(String),
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        ok: StatusCode,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Api(format!("cannot reach the admin API at {url}: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Failure::Api(format!("reading the answer of {url}: {e}")))?;
        if status != ok {
            return Err(Failure::Api(format!("{status}: {text}")));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::Api(format!("{url} answered with invalid JSON: {e}")))
    }
}

fn client_path(client_id: &str) -> String {
    format!(
        "/admin/clients/{}",
        url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>()
    )
}

async fn execute(args: ClientsArgs) -> Result<(), Failure> {
    let Some(token) = args.admin_token.filter(|t| !t.is_empty()) else {
        return Err(Failure::Usage(
            "an admin token is needed: --admin-token or REGISTRAR_ADMIN_TOKEN".into(),
        ));
    };
    let admin = Admin {
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| Failure::Api(format!("HTTP client: {e}")))?,
        base: args.admin_url,
        token,
    };
    let json = args.json;
    match args.command {
        ClientsCommand::List { filters, limit } => {
            let mut clients = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = filters.pairs();
                let want = limit.map_or(1000, |l| (l - clients.len()).clamp(1, 1000));
                query.push(("limit", want.to_string()));
                if let Some(c) = &cursor {
                    query.push(("cursor", c.clone()));
                }
                let page = admin
                    .call(Method::GET, "/admin/clients", &query, None, StatusCode::OK)
                    .await?;
                if let Some(Value::Array(items)) = page.get("clients") {
                    clients.extend(items.iter().cloned());
                }
                cursor = page
                    .get("next_cursor")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if cursor.is_none() || limit.is_some_and(|l| clients.len() >= l) {
                    break;
                }
            }
            if json {
                print_json(&Value::from(clients));
            } else {
                print_table(&clients);
            }
        }
        ClientsCommand::Show { client_id } => {
            let client = admin
                .call(
                    Method::GET,
                    &client_path(&client_id),
                    &[],
                    None,
                    StatusCode::OK,
                )
                .await?;
            print_object(&client, json);
        }
        ClientsCommand::Create { metadata, policy } => {
            let mut body = read_metadata(&metadata)?;
            if let Some(p) = policy {
                body.insert("policy".into(), Value::from(p));
            }
            let client = admin
                .call(
                    Method::POST,
                    "/admin/clients",
                    &[],
                    Some(Value::Object(body)),
                    StatusCode::CREATED,
                )
                .await?;
            if !json {
                eprintln!("registrar: the credentials below are shown only this once");
            }
            print_object(&client, json);
        }
        ClientsCommand::Disable { client_id } => {
            set_disabled(&admin, &client_id, true, json).await?;
        }
        ClientsCommand::Enable { client_id } => {
            set_disabled(&admin, &client_id, false, json).await?;
        }
        ClientsCommand::Delete { client_id } => {
            admin
                .call(
                    Method::DELETE,
                    &client_path(&client_id),
                    &[],
                    None,
                    StatusCode::NO_CONTENT,
                )
                .await?;
            if json {
                print_json(&serde_json::json!({"deleted": 1}));
            } else {
                println!("deleted {client_id}");
            }
        }
        ClientsCommand::Prune { filters, dry_run } => {
            let mut query = filters.pairs();
            if query.is_empty() {
                return Err(Failure::Usage(
                    "prune needs at least one filter (e.g. --unused-for-secs 2592000)".into(),
                ));
            }
            if dry_run {
                query.push(("dry_run", "true".into()));
            }
            let result = admin
                .call(
                    Method::DELETE,
                    "/admin/clients",
                    &query,
                    None,
                    StatusCode::OK,
                )
                .await?;
            if json {
                print_json(&result);
            } else if dry_run {
                println!("would delete {}", result["matched"]);
            } else {
                println!("deleted {}", result["deleted"]);
            }
        }
        ClientsCommand::Authenticate { client_id, secret } => {
            let secret = match secret {
                Some(s) => s,
                None => read_stdin()?.trim_end_matches(['\r', '\n']).to_owned(),
            };
            let result = admin
                .call(
                    Method::POST,
                    &format!("{}/authenticate", client_path(&client_id)),
                    &[],
                    Some(serde_json::json!({ "client_secret": secret })),
                    StatusCode::OK,
                )
                .await?;
            if json {
                print_json(&result);
            } else {
                println!("authenticated {client_id}");
            }
        }
    }
    Ok(())
}

async fn set_disabled(
    admin: &Admin,
    client_id: &str,
    disabled: bool,
    json: bool,
) -> Result<(), Failure> {
    let client = admin
        .call(
            Method::PATCH,
            &client_path(client_id),
            &[],
            Some(serde_json::json!({ "disabled": disabled })),
            StatusCode::OK,
        )
        .await?;
    if json {
        print_json(&client);
    } else {
        println!(
            "{} {client_id}",
            if disabled { "disabled" } else { "enabled" }
        );
    }
    Ok(())
}

fn read_metadata(arg: &str) -> Result<Map<String, Value>, Failure> {
    let text = match arg.strip_prefix('@') {
        Some("-") => read_stdin()?,
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("reading {path}: {e}")))?,
        None => arg.to_owned(),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::Usage("the metadata must be a JSON object".into())),
        Err(e) => Err(Failure::Usage(format!("the metadata is not JSON: {e}"))),
    }
}

fn read_stdin() -> Result<String, Failure> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
    Ok(s)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn print_object(value: &Value, json: bool) {
    if json {
        return print_json(value);
    }
    if let Value::Object(map) = value {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            println!("{k:width$}  {}", cell(k, v));
        }
    }
}

/// One value as table text: times as UTC dates, strings bare, the rest as JSON.
fn cell(name: &str, v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if name.ends_with("_at") && n.as_i64().is_some_and(|t| t > 0) => {
            n.as_i64().map(utc).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

const COLUMNS: &[(&str, &str)] = &[
    ("client_id", "CLIENT_ID"),
    ("client_name", "NAME"),
    ("source", "SOURCE"),
    ("tier", "TIER"),
    ("policy", "POLICY"),
    ("disabled", "DISABLED"),
    ("created_at", "CREATED"),
    ("last_used_at", "LAST_USED"),
];

fn print_table(clients: &[Value]) {
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            COLUMNS
                .iter()
                .map(|(name, _)| cell(name, c.get(*name).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, title))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(COLUMNS.iter().map(|(_, t)| *t).collect());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    eprintln!("{} client(s)", rows.len());
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (the one formatter the webhooks' timestamps use).
fn utc(t: i64) -> String {
    crate::events::webhook::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ids_and_secrets_may_start_with_a_hyphen() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "registrar",
            "clients",
            "authenticate",
            "-Yx1",
            "--secret",
            "-Zs2",
        ])
        .unwrap();
        let Some(crate::cli::Command::Clients(args)) = cli.command else {
            panic!("not clients")
        };
        match args.command {
            ClientsCommand::Authenticate { client_id, secret } => {
                assert_eq!(client_id, "-Yx1");
                assert_eq!(secret.as_deref(), Some("-Zs2"));
            }
            other => panic!("{other:?}"),
        }
        for sub in ["show", "disable", "enable", "delete"] {
            assert!(
                crate::cli::Cli::try_parse_from(["registrar", "clients", sub, "-Yx1"]).is_ok(),
                "{sub}"
            );
        }
    }

    #[test]
    fn filters_become_query_parameters() {
        let f = Filters {
            client_name: Some("mcp".into()),
            disabled: Some(false),
            unused_for_secs: Some(60),
            ..Default::default()
        };
        assert_eq!(
            f.pairs(),
            [
                ("client_name", "mcp".to_owned()),
                ("disabled", "false".to_owned()),
                ("unused_for_secs", "60".to_owned())
            ]
        );
    }
}
