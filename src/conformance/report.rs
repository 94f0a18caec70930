//! Reporting: one console line per case, the summary, and the Markdown matrix.

use super::{CaseResult, Level, Outcome};
use std::fmt::Write as _;

/// Counts per level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases skipped for a missing capability.
    pub skipped: usize,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(_) => self.failed += 1,
            Outcome::Skip(_) => self.skipped += 1,
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// MUST and SHOULD counts, and the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// MUST cases.
    pub must: Counts,
    /// SHOULD cases.
    pub should: Counts,
    /// All cases.
    pub total: Counts,
}

impl Summary {
    /// Count `results`.
    pub fn of(results: &[CaseResult]) -> Self {
        let mut s = Summary::default();
        for r in results {
            match r.case.level {
                Level::Must => s.must.add(&r.outcome),
                Level::Should => s.should.add(&r.outcome),
            }
            s.total.add(&r.outcome);
        }
        s
    }

    /// Whether every MUST case that ran passed.
    pub fn musts_pass(&self) -> bool {
        self.must.failed == 0
    }

    /// The summary block; its last line is `N passed, M failed, K skipped`.
    pub fn lines(&self) -> String {
        format!(
            "MUST:   {}\nSHOULD: {}\n{}",
            self.must, self.should, self.total
        )
    }
}

/// One console line for a result (plus an indented detail line for failures).
pub fn line(r: &CaseResult, verbose: bool) -> String {
    let (tag, why) = match &r.outcome {
        Outcome::Pass => ("PASS", String::new()),
        Outcome::Fail(m) => ("FAIL", format!(": {m}")),
        Outcome::Skip(m) => ("SKIP", format!(": {m}")),
    };
    let mut out = format!(
        "{tag} {:<6} {} ({} {}){why}",
        r.case.level.as_str(),
        r.case.id,
        r.case.spec,
        r.case.section
    );
    if verbose {
        if let (Outcome::Fail(_), Some(d)) = (&r.outcome, &r.detail) {
            let _ = write!(out, "\n       {d}");
        }
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown matrix: a summary, then one table per category, one row per requirement.
/// Deterministic for a deterministic server (no times, ports or random values), so the
/// committed file only changes when a result changes.
pub fn markdown(title: &str, preamble: &str, results: &[CaseResult]) -> String {
    let summary = Summary::of(results);
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    if !preamble.is_empty() {
        let _ = writeln!(out, "{preamble}\n");
    }
    let _ = writeln!(out, "| level | passed | failed | skipped |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (name, c) in [
        ("MUST", summary.must),
        ("SHOULD", summary.should),
        ("all", summary.total),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            c.passed, c.failed, c.skipped
        );
    }
    let mut categories: Vec<&str> = results.iter().map(|r| r.case.category.as_str()).collect();
    categories.dedup();
    for category in categories {
        let _ = writeln!(out, "\n## {category}\n");
        let _ = writeln!(out, "| case | requirement | spec | level | result |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for r in results.iter().filter(|r| r.case.category == category) {
            let result = match &r.outcome {
                Outcome::Pass => "pass".to_owned(),
                Outcome::Fail(m) => format!("**FAIL**: {}", cell(m)),
                Outcome::Skip(m) => format!("skipped: {}", cell(m)),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} {} | {} | {} |",
                r.case.id,
                cell(&r.case.title),
                cell(&r.case.spec),
                cell(&r.case.section),
                r.case.level.as_str(),
                result
            );
        }
    }
    out
}
