//! `conformance --registration-endpoint URL [--cases DIR] [--markdown FILE] ...`: replay the spec
//! cases of `conformance/cases/` against any live registration server and report per
//! requirement. Exit status: 0 when every MUST case that ran passed, 1 when one failed, 2 on a
//! usage or loading error.

use registrar::conformance::{self, report, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: conformance --registration-endpoint URL [options]\n\
\n\
Replays the RFC 7591 / RFC 7592 / OpenID Connect Dynamic Client Registration cases against a\n\
live server; prints one line per case and a summary \"N passed, M failed, K skipped\".\n\
\n\
  --registration-endpoint URL   the server's registration endpoint (required)\n\
  --cases DIR                   case directory (default: conformance/cases of this crate)\n\
  --markdown FILE               also write the results as a Markdown matrix\n\
  --title TEXT                  title of the Markdown matrix\n\
  --initial-access-token TOKEN  send this bearer token with every registration request\n\
  --provide NAME=VALUE          a capability the target provides (e.g.\n\
                                sector_identifier_uri=https://.../sector.json); repeatable\n\
  --only TEXT                   run only cases whose id contains TEXT\n\
  --timeout-secs N              per-request timeout (default 15)\n\
  -v, --verbose                 show the response of each failing step";

fn main() -> ExitCode {
    let mut target = Target::default();
    let mut cases_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/cases");
    let mut markdown: Option<PathBuf> = None;
    let mut title = String::from("Conformance matrix");
    let mut only: Option<String> = None;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let result: Result<(), String> = match arg.as_str() {
            "--registration-endpoint" | "-e" => {
                value(&arg).map(|v| target.registration_endpoint = v)
            }
            "--cases" => value(&arg).map(|v| cases_dir = PathBuf::from(v)),
            "--markdown" => value(&arg).map(|v| markdown = Some(PathBuf::from(v))),
            "--title" => value(&arg).map(|v| title = v),
            "--initial-access-token" => value(&arg).map(|v| target.initial_access_token = Some(v)),
            "--only" => value(&arg).map(|v| only = Some(v)),
            "--timeout-secs" => value(&arg).and_then(|v| {
                v.parse::<u64>()
                    .map(|s| target.timeout = Some(Duration::from_secs(s)))
                    .map_err(|_| format!("--timeout-secs: {v:?} is not a number"))
            }),
            "--provide" => value(&arg).and_then(|v| match v.split_once('=') {
                Some((k, val)) if !k.is_empty() => {
                    target.provided.insert(k.to_owned(), val.to_owned());
                    Ok(())
                }
                _ => Err(format!("--provide needs NAME=VALUE, got {v:?}")),
            }),
            "-v" | "--verbose" => {
                verbose = true;
                Ok(())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = result {
            eprintln!("conformance: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    // `--provide initial_access_token=T` is the same as `--initial-access-token T`.
    if target.initial_access_token.is_none() {
        target.initial_access_token = target.provided.get("initial_access_token").cloned();
    }
    if target.registration_endpoint.is_empty() {
        eprintln!("conformance: --registration-endpoint is required\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut cases = match conformance::load_dir(&cases_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conformance: cannot load cases: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(filter) = &only {
        cases.retain(|c| c.id.contains(filter.as_str()));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let results = match runtime.block_on(conformance::run(&target, &cases)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("conformance: {e}");
            return ExitCode::from(2);
        }
    };
    for r in &results {
        println!("{}", report::line(r, verbose));
    }
    let summary = conformance::Summary::of(&results);
    println!("\n{}", summary.lines());
    if let Some(path) = markdown {
        let preamble = format!(
            "Target: `{}`. Generated by `cargo run --bin conformance`.",
            target.registration_endpoint
        );
        if let Err(e) = std::fs::write(&path, conformance::markdown(&title, &preamble, &results)) {
            eprintln!("conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if summary.musts_pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
