//! `registrar audit verify` and `registrar audit list`: offline against the store the
//! configuration names (so they work on a stopped server), printing [`super::report`];
//! `audit verify --admin-url URL` checks a running server's trail through its admin API
//! ([`super::remote`]).
//!
//! The argument parsing is here, not in main.rs, so a clap front end only has to hand over the
//! words after `audit`.

use super::{report, AuditQuery, EventType};
use crate::settings::Settings;
use std::process::ExitCode;

/// The usage text of `registrar audit`.
pub const USAGE: &str = "usage: registrar [--config FILE] audit verify [--admin-url URL [--admin-token TOKEN]]\n       \
registrar [--config FILE] audit list [--after SEQ] [--limit N] [--client-id ID] [--event NAME] [--json]\n\
  verify: check the stored trail's hash chain; exit 0 with `N records, chain intact, head <hash>`,\n\
          or 1 naming the first bad seq; with --admin-url, through a running server's admin API\n\
          (GET /admin/audit; token from --admin-token or REGISTRAR_ADMIN_TOKEN, scope audit:read).\n\
  list: one page of records (table, or JSON lines).";

/// One parsed `audit` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCommand {
    /// Against the store the configuration names.
    Verify,
    /// Through the admin API at `admin_url`; the token, when not given, from
    /// `REGISTRAR_ADMIN_TOKEN`.
    VerifyOnline {
        admin_url: String,
        admin_token: Option<String>,
    },
    List {
        query: AuditQuery,
        json: bool,
    },
}

/// Parse the words after `audit`.
pub fn parse(args: &[String]) -> Result<AuditCommand, String> {
    let mut words = args.iter();
    match words.next().map(String::as_str) {
        Some("verify") => {
            let (mut admin_url, mut admin_token) = (None, None);
            while let Some(word) = words.next() {
                let slot = match word.as_str() {
                    "--admin-url" => &mut admin_url,
                    "--admin-token" => &mut admin_token,
                    other => return Err(format!("audit verify: unexpected argument {other:?}")),
                };
                *slot = Some(
                    words
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("audit verify: {word} needs a value"))?,
                );
            }
            match (admin_url, admin_token) {
                (None, None) => Ok(AuditCommand::Verify),
                (None, Some(_)) => Err("audit verify: --admin-token needs --admin-url".into()),
                (Some(admin_url), admin_token) => Ok(AuditCommand::VerifyOnline {
                    admin_url,
                    admin_token,
                }),
            }
        }
        Some("list") => {
            let mut query = AuditQuery::default();
            let mut json = false;
            while let Some(word) = words.next() {
                let mut value = |name: &str| {
                    words
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("audit list: {name} needs a value"))
                };
                match word.as_str() {
                    "--after" => {
                        query.after = value("--after")?
                            .parse()
                            .map_err(|_| "audit list: --after must be a seq number".to_owned())?
                    }
                    "--limit" => {
                        query.limit = value("--limit")?
                            .parse()
                            .ok()
                            .filter(|n| (1..=1000).contains(n))
                            .ok_or("audit list: --limit must be 1..1000")?
                    }
                    "--client-id" => query.client_id = Some(value("--client-id")?),
                    "--event" => {
                        let name = value("--event")?;
                        query.event = Some(
                            EventType::parse(&name)
                                .ok_or(format!("audit list: unknown event {name:?}"))?,
                        )
                    }
                    "--json" => json = true,
                    other => return Err(format!("audit list: unexpected argument {other:?}")),
                }
            }
            Ok(AuditCommand::List { query, json })
        }
        Some(other) => Err(format!("audit: unknown command {other:?}")),
        None => Err("audit: verify or list?".into()),
    }
}

/// Run `command` against the store of `settings`; prints to stdout (results) and stderr
/// (errors). Exit 0 on success, 1 when the chain is broken or the store unreadable.
pub async fn run(settings: &Settings, command: AuditCommand) -> ExitCode {
    let offline = match command {
        AuditCommand::VerifyOnline {
            admin_url,
            admin_token,
        } => return verify_online(&admin_url, admin_token).await,
        offline => offline,
    };
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let store = match crate::store::open(&settings.storage, now).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("registrar: {e}");
            return ExitCode::FAILURE;
        }
    };
    match offline {
        AuditCommand::List { query, json } => {
            match report::list_page(store.as_ref(), &query, json).await {
                Ok((text, next)) => {
                    print!("{text}");
                    if let Some(after) = next {
                        eprintln!("registrar: more records: --after {after}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("registrar: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => print_verification(report::verify(store.as_ref()).await),
    }
}

/// `audit verify --admin-url URL`: the chain as the running server lists it. Needs no
/// configuration (the `REGISTRAR_ADMIN_*` variables are the CLI's, not the server's settings).
pub async fn verify_online(admin_url: &str, admin_token: Option<String>) -> ExitCode {
    let token = admin_token
        .or_else(|| std::env::var("REGISTRAR_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        eprintln!(
            "registrar: an admin token with audit:read is needed: --admin-token or REGISTRAR_ADMIN_TOKEN"
        );
        return ExitCode::from(2);
    };
    let log = super::remote::RemoteAuditLog::new(admin_url, &token);
    print_verification(report::verify(&log).await)
}

/// Print what `verify` found: the line on stdout (exit 0) or the failure on stderr (exit 1).
fn print_verification(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registrar: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn audit_arguments() {
        assert_eq!(parse(&words("verify")), Ok(AuditCommand::Verify));
        assert!(parse(&words("verify now")).is_err());
        assert_eq!(
            parse(&words("verify --admin-url http://a:8081 --admin-token t")),
            Ok(AuditCommand::VerifyOnline {
                admin_url: "http://a:8081".into(),
                admin_token: Some("t".into()),
            })
        );
        assert_eq!(
            parse(&words("verify --admin-url http://a:8081")),
            Ok(AuditCommand::VerifyOnline {
                admin_url: "http://a:8081".into(),
                admin_token: None,
            })
        );
        assert!(parse(&words("verify --admin-token t")).is_err());
        assert!(parse(&words("verify --admin-url")).is_err());
        assert_eq!(
            parse(&words(
                "list --after 5 --limit 10 --client-id abc --event client.deleted --json"
            )),
            Ok(AuditCommand::List {
                query: AuditQuery {
                    after: 5,
                    limit: 10,
                    client_id: Some("abc".into()),
                    event: Some(EventType::Deleted),
                },
                json: true,
            })
        );
        for bad in [
            "list --limit 0",
            "list --limit 5000",
            "list --after x",
            "list --event client.nope",
            "list --client-id",
            "list --what",
            "prune",
            "",
        ] {
            assert!(parse(&words(bad)).is_err(), "{bad}");
        }
    }
}
