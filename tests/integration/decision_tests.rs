//! `authgate test` and `authgate explain`, run as a user runs them: the real binary on real files.
//! The cases go through the real gateway in that process; its stand-ins (the recorder, Better
//! Auth's get-session) are on loopback, and nothing else is contacted, so the JWKS URL and Better
//! Auth address in these configs point at a closed port on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn authgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(args)
        .env_remove("BETTER_AUTH_SECRET")
        .env_remove("RUST_LOG")
        .output()
        .expect("run authgate")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("authgate-decision-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository ships decision tests for its own gateway.toml; they pass, with no secret in the
/// environment and no backend running.
#[test]
fn the_shipped_cases_pass_against_the_shipped_config() {
    let output = authgate(&[
        "test",
        "--config",
        &repo("gateway.toml"),
        &repo("examples/gateway.tests.toml"),
    ]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    let cases = std::fs::read_to_string(repo("examples/gateway.tests.toml"))
        .unwrap()
        .matches("[[case]]")
        .count();
    assert!(cases >= 10);
    assert!(
        report.contains(&format!("{cases} passed, 0 failed")),
        "{report}"
    );
    assert_eq!(report.matches("\nok   ").count() + 1, cases, "{report}");
}

/// A case that fails says which case, where, and every way it failed, and the run exits 1; the
/// JUnit file says the same for a CI system.
#[test]
fn a_failing_case_shows_what_differed() {
    let dir = temp_dir("failing");
    let cases = write(
        &dir,
        "cases.toml",
        r#"
[[case]]
name = "alice reads her tasks"
request = "GET /api/alice/tasks?limit=5"
caller = { user = "alice" }
expect = { status = 200, target = "/api/alice/tasks?limit=5", user_id = "alice" }

[[case]]
name = "bob reads alice's tasks (wrong on purpose)"
request = "GET /api/alice/tasks"
caller = { user = "bob" }
expect = { status = 200, user_id = "bob" }

[[case]]
name = "the backend sees another target (wrong on purpose)"
request = "GET /api/alice/tasks"
caller = { user = "alice" }
expect = { status = 200, target = "/api/alice/tasks/", headers = { "X-User-Role" = "admin" } }
"#,
    );
    let junit = dir.join("junit.xml");
    let output = authgate(&[
        "test",
        "--config",
        &repo("gateway.toml"),
        cases.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let file = cases.display().to_string();
    assert!(
        report.contains(&format!("ok   {file}:2: alice reads her tasks")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "FAIL {file}:8: bob reads alice's tasks (wrong on purpose)"
        )),
        "{report}"
    );
    assert!(
        report.contains(
            "status: expected 200, got 403 (owner_mismatch: this resource belongs to another user)"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "forwarded: expected the request to reach the backend, but the gateway answered itself"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "target: expected the backend to receive /api/alice/tasks/, got /api/alice/tasks"
        ),
        "{report}"
    );
    assert!(
        report.contains("X-User-Role: expected exactly \"admin\", the backend received []"),
        "{report}"
    );
    assert!(report.contains("1 passed, 2 failed"), "{report}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"3\" failures=\"2\""), "{xml}");
    assert!(
        xml.contains("name=\"bob reads alice&apos;s tasks (wrong on purpose)\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
}

/// JWKS issuers (EdDSA, ES256, RS256) and Better Auth sessions are testable offline: the test
/// issuer signs for them, and the claims of a case drive the claim rules and headers.
#[test]
fn jwks_and_session_configs_are_tested_offline() {
    let dir = temp_dir("offline");
    let config = write(
        &dir,
        "gateway.toml",
        r#"
[server]
listen = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:1"

[auth]
# Nothing listens on port 1: a test that fetched these would fail.
jwks_url = "http://127.0.0.1:1/api/auth/jwks"
issuer = "http://auth.example"
audience = "http://auth.example"
algorithms = ["EdDSA", "ES256", "RS256"]

[auth.session]
base_url = "http://127.0.0.1:1"

[[route]]
path = "/api/{user_id}/tasks"
owner = "user_id"
methods = ["GET", "POST"]
claim_headers = { "X-User-Role" = "role" }

[[route]]
path = "/admin/stats"
require = { role = "admin" }
auth_methods = ["bearer"]
"#,
    );
    let cases = write(
        &dir,
        "cases.toml",
        r#"
[[case]]
name = "EdDSA"
request = "GET /api/alice/tasks"
caller = { user = "alice", claims = { role = "member" } }
expect = { status = 200, user_id = "alice", headers = { "X-User-Role" = "member" } }

[[case]]
name = "ES256"
request = "GET /api/alice/tasks"
caller = { user = "alice", algorithm = "ES256" }
expect = { status = 200, user_id = "alice", absent_headers = ["X-User-Role"] }

[[case]]
name = "RS256"
request = "GET /api/alice/tasks"
caller = { user = "alice", algorithm = "RS256" }
expect = { status = 200, user_id = "alice" }

[[case]]
name = "a token from another issuer"
request = "GET /api/alice/tasks"
caller = { user = "alice", token = "wrong_issuer" }
expect = { status = 401 }

[[case]]
name = "a token for another audience"
request = "GET /api/alice/tasks"
caller = { user = "alice", token = "wrong_audience" }
expect = { status = 401 }

[[case]]
name = "a session cookie; the cookie never reaches the backend"
request = "GET /api/alice/tasks"
caller = { user = "alice", via = "session", claims = { role = "member" } }
expect = { status = 200, user_id = "alice", headers = { "X-User-Role" = "member" }, absent_headers = ["Cookie"] }

[[case]]
name = "a session that ended"
request = "GET /api/alice/tasks"
caller = { user = "alice", via = "session", token = "expired" }
expect = { status = 401, error = "session_expired" }

[[case]]
name = "a forged cookie"
request = "GET /api/alice/tasks"
caller = { user = "alice", via = "session", token = "bad_signature" }
expect = { status = 401 }

[[case]]
name = "a cookie POST from another site"
request = "POST /api/alice/tasks"
headers = ["Origin: https://evil.example", "Content-Type: application/json"]
body = "{}"
caller = { user = "alice", via = "session" }
expect = { status = 403, error = "csrf" }

[[case]]
name = "admins only, and only by bearer token"
request = "GET /admin/stats"
caller = { user = "root", claims = { role = "admin" } }
expect = { status = 200, target = "/admin/stats", user_id = "root" }

[[case]]
name = "not an admin"
request = "GET /admin/stats"
caller = { user = "alice", claims = { role = "member" } }
expect = { status = 403 }

[[case]]
name = "an admin session cookie is not accepted there"
request = "GET /admin/stats"
caller = { user = "root", via = "session", claims = { role = "admin" } }
expect = { status = 401 }
"#,
    );
    let output = authgate(&[
        "test",
        "--config",
        config.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("12 passed, 0 failed"), "{report}");
}

/// A case file that cannot be used stops the run (exit 2) with its name, line and what is wrong;
/// so does a bad config.
#[test]
fn a_bad_case_file_or_config_stops_the_run() {
    let dir = temp_dir("bad");
    let cases = write(
        &dir,
        "cases.toml",
        "[[case]]\nname = \"a\"\nrequest = \"GET /x\"\ncaller = { user = \"u\", token = \"stale\" }\nexpect = { status = 401 }\n",
    );
    let output = authgate(&[
        "test",
        "--config",
        &repo("gateway.toml"),
        cases.to_str().unwrap(),
    ]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(2), "{report}");
    assert!(
        report.contains(&format!(
            "{}:4: a: `caller`: token \"stale\"",
            cases.display()
        )),
        "{report}"
    );
    let config = write(&dir, "gateway.toml", "[server]\nlisten = 8080\n");
    let output = authgate(&[
        "test",
        "--config",
        config.to_str().unwrap(),
        &repo("examples/gateway.tests.toml"),
    ]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(2), "{report}");
    assert!(
        report.contains(&format!("invalid config: {}:2:", config.display())),
        "{report}"
    );
}

/// `explain` walks one request through: the target, every route, the chosen route's rules, and
/// the answer or what the backend receives.
#[test]
fn explain_shows_each_stage() {
    let output = authgate(&[
        "explain",
        "--config",
        &repo("gateway.toml"),
        "GET",
        "/api/alice/tasks",
        "--user",
        "bob",
    ]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    for line in [
        "request   GET /api/alice/tasks",
        "caller    bob (a bearer token from the test issuer)",
        "target    path \"/api/alice/tasks\"",
        "/health",
        "path does not match",
        "-> /api/{user_id}/tasks",
        "CHOSEN (user_id = \"alice\")",
        "owner     {user_id} must equal the caller's id: fails: \"alice\" is not \"bob\"",
        "answer    403 owner_mismatch",
        "the backend receives nothing",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    let output = authgate(&[
        "explain",
        "--config",
        &repo("gateway.toml"),
        "GET",
        "/api/alice/tasks",
        "--user",
        "alice",
        "-H",
        "X-User-Id: mallory",
    ]);
    let report = text(&output);
    assert!(
        report.contains("answer    forwarded; the backend receives:"),
        "{report}"
    );
    assert!(report.contains("x-user-id: alice"), "{report}");
    assert!(!report.contains("mallory"), "{report}");
    let output = authgate(&[
        "explain",
        "--config",
        &repo("gateway.toml"),
        "GET",
        "/api/bob/../alice/tasks",
    ]);
    let report = text(&output);
    assert!(
        report.contains("target    refused before routing: 400 bad_target"),
        "{report}"
    );
    assert!(report.contains("answer    400 bad_target"), "{report}");
}

/// `authgate token`: reserved claims have their own options (a `--claim` for one is refused, not
/// silently dropped), explicit times are honoured so an expired test token can be minted, and a
/// short secret is refused as at start-up.
#[test]
fn token_times_and_reserved_claims() {
    let token = |args: &[&str], secret: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
        command
            .args(["token", "--config", &repo("gateway.toml")])
            .args(args)
            .env("BETTER_AUTH_SECRET", secret)
            .env_remove("RUST_LOG");
        command.output().expect("run authgate token")
    };
    let secret = "s".repeat(32);
    for (claim, option) in [
        ("sub=bob", "--sub"),
        ("exp=1", "--exp"),
        ("iat=1", "--iat"),
        ("nbf=1", "--nbf"),
    ] {
        let output = token(&["--sub", "alice", "--claim", claim], &secret);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(text(&output).contains(option), "{}", text(&output));
    }
    let output = token(
        &[
            "--sub",
            "alice",
            "--iat",
            "1000",
            "--exp",
            "2000",
            "--nbf",
            "1500",
            "--claim",
            "role=admin",
        ],
        &secret,
    );
    assert!(output.status.success(), "{}", text(&output));
    let jwt = String::from_utf8(output.stdout).unwrap();
    let payload = jwt.trim().split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims,
        serde_json::json!({"sub": "alice", "iat": 1000, "exp": 2000, "nbf": 1500, "role": "admin"})
    );
    let output = token(&["--sub", "alice", "--ttl", "-1h"], &secret);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--exp"), "{}", text(&output));
    let output = token(&["--sub", "alice"], "short");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("needs at least 32 bytes"),
        "{}",
        text(&output)
    );
}

/// `demo` runs its bundled config: a `--config` would be ignored, so it is refused.
#[test]
fn demo_refuses_a_config_it_would_not_use() {
    let output = authgate(&["demo", "--config", "mine.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("authgate run --config"),
        "{}",
        text(&output)
    );
}

/// With 8080 taken, the demo still starts, on another port, and says so.
#[test]
fn the_demo_says_when_it_takes_another_port() {
    use std::io::{BufRead, BufReader};
    // Held for the test (or already held by something else: busy either way).
    let _busy = std::net::TcpListener::bind("127.0.0.1:8080");
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut head = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        head.push_str(&line);
        head.push('\n');
        if line.starts_with("tokens") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        head.contains("note         127.0.0.1:8080 is not free"),
        "{head}"
    );
    assert!(!head.contains("http://127.0.0.1:8080 "), "{head}");
}
