//! `registrar audit verify` and `registrar audit list`: offline against the store the
//! configuration names (so they work on a stopped server), printing [`super::report`].
//!
//! The argument parsing is here, not in main.rs, so a clap front end only has to hand over the
//! words after `audit`.

use super::{report, AuditQuery, EventType};
use crate::settings::Settings;
use std::process::ExitCode;

/// The usage text of `registrar audit`.
pub const USAGE: &str = "usage: registrar [--config FILE] audit verify\n       \
registrar [--config FILE] audit list [--after SEQ] [--limit N] [--client-id ID] [--event NAME] [--json]\n\
  verify: check the stored trail's hash chain; exit 0 with `N records, chain intact, head <hash>`,\n\
          or 1 naming the first bad seq. list: one page of records (table, or JSON lines).";

/// One parsed `audit` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCommand {
    Verify,
    List { query: AuditQuery, json: bool },
}

/// Parse the words after `audit`.
pub fn parse(args: &[String]) -> Result<AuditCommand, String> {
    let mut words = args.iter();
    match words.next().map(String::as_str) {
        Some("verify") => match words.next() {
            None => Ok(AuditCommand::Verify),
            Some(other) => Err(format!("audit verify: unexpected argument {other:?}")),
        },
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
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let store = match crate::store::open(&settings.storage, now).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("registrar: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        AuditCommand::Verify => match report::verify(store.as_ref()).await {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("registrar: {e}");
                ExitCode::FAILURE
            }
        },
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
