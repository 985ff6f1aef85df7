//! The tools around the gateway: `authgate test` (decision cases for a config, run through the
//! real pipeline in this process) and `authgate explain` (one request, stage by stage). The top
//! layer: nothing in the serving path imports it.

pub mod cases;
pub mod explain;
pub mod harness;
pub mod issuer;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use cases::Case;
use harness::{Harness, Outcome};

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// One case's result.
pub struct CaseResult {
    pub file: String,
    pub case: Case,
    /// What did not match; empty when the case passed.
    pub failures: Vec<String>,
    pub seconds: f64,
}

/// Compares what happened with what the case expects; one message per difference.
pub fn check(case: &Case, outcome: &Outcome, identity_header: &str) -> Vec<String> {
    let expect = &case.expect;
    let mut failures = Vec::new();
    let refusal = |outcome: &Outcome| match &outcome.error {
        Some((code, message)) => format!(" ({code}: {message})"),
        None => String::new(),
    };
    if outcome.status != expect.status {
        failures.push(format!(
            "status: expected {}, got {}{}",
            expect.status,
            outcome.status,
            refusal(outcome)
        ));
    }
    if let Some(code) = &expect.error {
        match &outcome.error {
            Some((got, _)) if got == code => {}
            Some((got, _)) => failures.push(format!("error: expected {code}, got {got}")),
            None => failures.push(format!("error: expected {code}, got no JSON refusal")),
        }
    }
    match (&outcome.received, expect.forwarded) {
        (Some(received), false) => failures.push(format!(
            "forwarded: expected nothing to reach the backend, but it received {} {}",
            received.method, received.target
        )),
        (None, true) => failures.push(format!(
            "forwarded: expected the request to reach the backend, but the gateway answered itself{}",
            refusal(outcome)
        )),
        _ => {}
    }
    let Some(received) = &outcome.received else {
        return failures;
    };
    if let Some(target) = &expect.target {
        if &received.target != target {
            failures.push(format!(
                "target: expected the backend to receive {target}, got {}",
                received.target
            ));
        }
    }
    if let Some(user_id) = &expect.user_id {
        let got = received.values(identity_header);
        if got != [user_id.as_str()] {
            failures.push(format!(
                "{identity_header}: expected exactly {user_id:?}, the backend received {got:?}"
            ));
        }
    }
    for (name, value) in &expect.headers {
        let got = received.values(name);
        if got != [value.as_str()] {
            failures.push(format!(
                "{name}: expected exactly {value:?}, the backend received {got:?}"
            ));
        }
    }
    for name in &expect.absent_headers {
        let got = received.values(name);
        if !got.is_empty() {
            failures.push(format!(
                "{name}: expected absent, the backend received {got:?}"
            ));
        }
    }
    failures
}

/// Runs every case of every file against the config at `config_path`.
pub async fn run_files(
    config_path: &Path,
    case_files: &[std::path::PathBuf],
) -> Result<Vec<CaseResult>, String> {
    let mut loaded = Vec::new();
    for path in case_files {
        let cases = cases::load(path).map_err(|err| err.to_string())?;
        loaded.push((path.display().to_string(), cases));
    }
    let config = harness::load_config(config_path)?;
    let harness = Harness::start(config).await?;
    let mut results = Vec::new();
    for (file, cases) in loaded {
        for case in cases {
            let started = Instant::now();
            let failures = match harness.run(&case).await {
                Ok(outcome) => check(&case, &outcome, &harness.identity_header),
                Err(why) => vec![format!("could not run: {why}")],
            };
            results.push(CaseResult {
                file: file.clone(),
                case,
                failures,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(results)
}

/// The test-runner report: one line per case, the failures under it, and `N passed, N failed`.
pub fn report(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for result in results {
        let status = if result.failures.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        let _ = writeln!(
            out,
            "{status} {}:{}: {}",
            result.file, result.case.line, result.case.name
        );
        for failure in &result.failures {
            let _ = writeln!(out, "       {failure}");
        }
    }
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    let _ = writeln!(out, "{} passed, {failed} failed", results.len() - failed);
    out
}

/// The results as JUnit XML, for CI systems.
pub fn junit(results: &[CaseResult]) -> String {
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    let total: f64 = results.iter().map(|r| r.seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"authgate test\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{total:.3}\">",
        results.len()
    );
    for result in results {
        let _ = write!(
            out,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml(&result.file),
            xml(&result.case.name),
            result.seconds
        );
        if result.failures.is_empty() {
            out.push_str("/>\n");
        } else {
            let _ = writeln!(
                out,
                ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>",
                xml(&result.failures[0]),
                xml(&result.failures.join("\n"))
            );
        }
    }
    out.push_str("</testsuite>\n");
    out
}

fn xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                let _ = write!(escaped, "&#{};", c as u32);
            }
            c => escaped.push(c),
        }
    }
    escaped
}
