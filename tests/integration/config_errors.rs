//! A bad config stops start-up with the file, the line and the key.

use std::process::Command;

use authgate::config::Config;

use crate::common::BASE_CONFIG;

fn parse_error(toml: &str) -> String {
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| "x".repeat(32));
    match Config::parse(toml, "bad.toml", &env) {
        Ok(_) => panic!("config should be invalid:\n{toml}"),
        Err(err) => err.to_string(),
    }
}

/// Replaces the first occurrence of `from` and returns the 1-based line where `to` now starts.
fn mutate(from: &str, to: &str) -> (String, usize) {
    let start = BASE_CONFIG
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} not in base config"));
    let line = BASE_CONFIG[..start].matches('\n').count() + 1;
    (BASE_CONFIG.replacen(from, to, 1), line)
}

#[test]
fn each_invalid_config_names_file_line_and_key() {
    let cases = [
        (
            "user_claim = \"sub\"",
            "user_clam = \"sub\"",
            "unknown field `user_clam`",
            "`auth.user_clam`",
        ),
        (
            "methods = [\"GET\", \"POST\"]",
            "methods = [\"GET\", 3]",
            "invalid type: integer `3`",
            "`route[1].methods[1]`",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "pin_workers = \"yes\"\nlisten = \"127.0.0.1:0\"",
            "expected a boolean",
            "`server.pin_workers`",
        ),
        (
            "path = \"/api/{user_id}/tasks\"",
            "path = \"/api//{user_id}/tasks\"",
            "empty segment",
            "`route[1].path`",
        ),
        (
            "path = \"/health\"",
            "path = \"/health/{*rest}/x\"",
            "must be the last segment",
            "`route[0].path`",
        ),
        (
            "owner = \"user_id\"",
            "owner = \"uid\"",
            "has no parameter `{uid}`",
            "`route[1].owner`",
        ),
        (
            "secret_env = \"BETTER_AUTH_SECRET\"",
            "secret_env = \"AUTHGATE_TEST_UNSET_VARIABLE\"",
            "AUTHGATE_TEST_UNSET_VARIABLE is not set",
            "`auth.secret_env`",
        ),
        (
            "leeway = \"30s\"",
            "leeway = \"30\"",
            "is not a duration",
            "`auth.leeway`",
        ),
        (
            "timeout = \"2s\"",
            "timeout = \"soon\"",
            "is not a duration",
            "`upstream.timeout`",
        ),
        (
            "algorithms = [\"HS256\"]",
            "algorithms = []",
            "the algorithm list is empty",
            "`auth.algorithms`",
        ),
        (
            "algorithms = [\"HS256\"]",
            "algorithms = [\"none\"]",
            "unknown or unsupported algorithm `none`",
            "`auth.algorithms`",
        ),
        (
            "methods = [\"GET\", \"POST\"]",
            "methods = [\"get\"]",
            "unsupported method `get`",
            "`route[1].methods`",
        ),
        (
            "auth = \"public\"",
            "auth = \"maybe\"",
            "expected \"required\", \"optional\" or \"public\"",
            "`route[0].auth`",
        ),
        (
            "identity_header = \"X-User-Id\"",
            "identity_header = \"Authorization\"",
            "reserved",
            "`auth.identity_header`",
        ),
        (
            "url = \"http://127.0.0.1:1\"",
            "url = \"ftp://127.0.0.1:1\"",
            "scheme must be http",
            "`upstream.url`",
        ),
    ];
    for (from, to, message, key) in cases {
        let (toml, line) = mutate(from, to);
        let error = parse_error(&toml);
        assert!(
            error.starts_with(&format!("bad.toml:{line}:")),
            "{to}: wrong location in {error:?} (want line {line})"
        );
        assert!(
            error.contains(message),
            "{to}: {error:?} should say {message:?}"
        );
        assert!(error.contains(key), "{to}: {error:?} should name {key}");
    }
}

#[test]
fn rate_limit_errors_name_the_key() {
    let cases = [
        (
            "per_user = \"10/d\"",
            "`rate_limit.per_user`",
            "is not a rate",
        ),
        (
            "per_user = \"0/s\"",
            "`rate_limit.per_user`",
            "between 1 and 1000000",
        ),
        (
            "per_ip = \"5/m\"\nper_ip_burst = 0",
            "`rate_limit.per_ip_burst`",
            "between 1 and 1000000",
        ),
        (
            "burst = 5",
            "`rate_limit.burst`",
            "a burst needs `per_user`",
        ),
        (
            "auth_failures = \"often\"",
            "`rate_limit.auth_failures`",
            "is not a rate",
        ),
        ("per_usr = \"1/s\"", "", "unknown field `per_usr`"),
    ];
    for (table, key, message) in cases {
        let toml = format!("{BASE_CONFIG}\n[rate_limit]\n{table}\n");
        let error = parse_error(&toml);
        assert!(
            error.contains(key) && error.contains(message),
            "{table}: {error}"
        );
    }
    let bad_proxy = BASE_CONFIG.replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
    );
    let error = parse_error(&bad_proxy);
    assert!(
        error.contains("`server.trusted_proxies`") && error.contains("prefix length"),
        "{error}"
    );
}

#[test]
fn unreachable_and_conflicting_routes_are_reported() {
    let duplicate = format!("{BASE_CONFIG}\n[[route]]\npath = \"/api/{{user_id}}/tasks\"\nmethods = [\"POST\"]\nowner = \"user_id\"\n");
    let error = parse_error(&duplicate);
    assert!(
        error.contains("`route[3]`") && error.contains("can never be reached"),
        "{error}"
    );
    let renamed = format!(
        "{BASE_CONFIG}\n[[route]]\npath = \"/api/{{uid}}/tasks\"\nmethods = [\"DELETE\"]\n"
    );
    let error = parse_error(&renamed);
    assert!(
        error.contains("`route[3]`") && error.contains("conflicts"),
        "{error}"
    );
}

#[test]
fn owner_on_a_public_route_is_refused() {
    let (toml, _) = mutate(
        "path = \"/health\"\nauth = \"public\"",
        "path = \"/u/{id}\"\nauth = \"public\"\nowner = \"id\"",
    );
    assert!(parse_error(&toml).contains("the owner rule needs auth = \"required\""));
}

fn authgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authgate"))
}

#[test]
fn check_command_exit_codes() {
    let repo_config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let ok = authgate()
        .args(["check", "--config", repo_config])
        .env("BETTER_AUTH_SECRET", "x".repeat(32))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (3 routes"));

    let unset = authgate()
        .args(["check", "--config", repo_config])
        .env_remove("BETTER_AUTH_SECRET")
        .output()
        .unwrap();
    assert_eq!(unset.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(
        stderr.contains("gateway.toml:")
            && stderr.contains("`auth.secret_env`")
            && stderr.contains("BETTER_AUTH_SECRET is not set"),
        "{stderr}"
    );

    let missing = authgate()
        .args(["check", "--config", "/nonexistent/authgate.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read config file"));
}

#[test]
fn token_command_mints_a_token_the_gateway_accepts() {
    let repo_config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let secret = "y".repeat(40);
    let out = authgate()
        .args([
            "token",
            "--config",
            repo_config,
            "--sub",
            "carol",
            "--ttl",
            "15m",
            "--claim",
            "role=\"admin\"",
        ])
        .env("BETTER_AUTH_SECRET", &secret)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| secret.clone());
    let config = Config::parse(
        &std::fs::read_to_string(repo_config).unwrap(),
        "gateway.toml",
        &env,
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let authenticator = authgate::auth::Authenticator::new(&config.auth);
    let identity = runtime
        .block_on(authenticator.verify(&token, crate::common::now()))
        .unwrap();
    assert_eq!(identity.user_id, "carol");
    assert_eq!(identity.claims["role"], "admin");
}

#[test]
fn cors_errors_name_the_line_and_key() {
    let cases = [
        (
            "allow_origins = [\"*\"]\nallow_credentials = true",
            2,
            "`cors.allow_credentials`",
            "cannot be true with allow_origins = [\"*\"]",
        ),
        (
            "allow_origins = [\"https://app.test/\"]",
            1,
            "`cors.allow_origins[0]`",
            "scheme, host and port only",
        ),
        (
            "allow_origins = [\"https://a.test\", \"null\"]",
            1,
            "`cors.allow_origins[1]`",
            "sandboxed frames",
        ),
        (
            "allow_origins = [\"ftp://a.test\"]",
            1,
            "`cors.allow_origins[0]`",
            "must be http or https",
        ),
        (
            "allow_origins = [\"https://user@a.test\"]",
            1,
            "`cors.allow_origins[0]`",
            "scheme, host and port only",
        ),
        (
            "allow_origins = [\"https://a.test:443\"]",
            1,
            "`cors.allow_origins[0]`",
            "leave out the default port 443",
        ),
        (
            "allow_origins = [\"http://a.test:08080\"]",
            1,
            "`cors.allow_origins[0]`",
            "leading zero",
        ),
        (
            "allow_origins = [\"http://%61.test\"]",
            1,
            "`cors.allow_origins[0]`",
            "scheme, host and port only",
        ),
        (
            "allow_origins = []",
            1,
            "`cors.allow_origins`",
            "at least one origin",
        ),
        (
            "allow_origins = [\"*\", \"https://a.test\"]",
            1,
            "`cors.allow_origins`",
            "cannot be combined",
        ),
        (
            "allow_origins = [\"https://a.test\"]\nmax_age = \"48h\"",
            2,
            "`cors.max_age`",
            "at most 24h",
        ),
        (
            "allow_origins = [\"https://a.test\"]\nallow_headers = [\"bad header\"]",
            2,
            "`cors.allow_headers`",
            "not a valid header name",
        ),
        (
            "allow_origin = [\"https://a.test\"]",
            1,
            "`cors.allow_origin`",
            "unknown field",
        ),
    ];
    let prefix = format!("{BASE_CONFIG}\n[cors]\n");
    let first = prefix.matches('\n').count() + 1;
    for (body, line, key, message) in cases {
        let error = parse_error(&format!("{prefix}{body}\n"));
        let line = first + line - 1;
        assert!(
            error.starts_with(&format!("bad.toml:{line}:")),
            "{body}: wrong location in {error:?} (want line {line})"
        );
        assert!(error.contains(key), "{body}: {error:?} should name {key}");
        assert!(
            error.contains(message),
            "{body}: {error:?} should say {message}"
        );
    }
    // Valid: the origins are kept lower-case, as browsers send them.
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| "x".repeat(32));
    let config = Config::parse(
        &format!("{prefix}allow_origins = [\"https://App.Example.com:8443\", \"http://localhost:3000\"]\n"),
        "ok.toml",
        &env,
    )
    .unwrap();
    let cors = config.cors.unwrap();
    assert_eq!(
        cors.allow_origins.unwrap(),
        ["https://app.example.com:8443", "http://localhost:3000"]
    );
    assert_eq!(cors.max_age, std::time::Duration::from_secs(600));
}

#[test]
fn bad_session_and_admin_settings_name_their_key() {
    let with = |auth_extra: &str, route_extra: &str| {
        BASE_CONFIG
            .replacen(
                "strip_headers = [\"X-User-Email\", \"X-User-Role\"]",
                &format!("strip_headers = [\"X-User-Email\", \"X-User-Role\"]\n{auth_extra}"),
                1,
            )
            .replacen(
                "owner = \"user_id\"",
                &format!("owner = \"user_id\"\n{route_extra}"),
                1,
            )
    };
    let session = |body: &str| format!("[auth.session]\n{body}");
    let cases = [
        (
            with(&session("base_url = \"auth:3000\""), ""),
            "`auth.session.base_url`",
            "http",
        ),
        (
            with(&session("base_url = \"http://auth:3000/api/auth\""), ""),
            "`auth.session.base_url`",
            "without a path",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\"\ncache_ttl = \"2h\""),
                "",
            ),
            "`auth.session.cache_ttl`",
            "at most 1h",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\"\ncookie_prefix = \"a b\""),
                "",
            ),
            "`auth.session.cookie_prefix`",
            "cookiePrefix",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\"\nsecret_env = \"NOT_SET\""),
                "",
            ),
            "`auth.session.secret_env`",
            "NOT_SET is not set",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\"\ncache_size = -1"),
                "",
            ),
            "`auth.session.cache_size`",
            "between 0",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\"\ncache_tll = \"1s\""),
                "",
            ),
            "`auth.session.cache_tll`",
            "unknown field",
        ),
        (
            with("", "auth_methods = [\"session\"]"),
            "`route[1].auth_methods`",
            "[auth.session]",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\""),
                "auth_methods = [\"cookie\"]",
            ),
            "`route[1].auth_methods`",
            "expected \"bearer\" or \"session\"",
        ),
        (
            with(
                &session("base_url = \"http://auth:3000\""),
                "auth_methods = []",
            ),
            "`route[1].auth_methods`",
            "empty",
        ),
        (
            with("", "forward_session_cookie = true"),
            "`route[1].forward_session_cookie`",
            "[auth.session]",
        ),
        (
            BASE_CONFIG.replacen(
                "[upstream]",
                "[admin]\nlisten = \"127.0.0.1:9091\"\ntoken_env = \"NOT_SET\"\n\n[upstream]",
                1,
            ),
            "`admin.token_env`",
            "NOT_SET is not set",
        ),
    ];
    for (toml, key, message) in cases {
        let error = parse_error(&toml);
        assert!(error.contains("bad.toml:"), "{error}");
        assert!(error.contains(key), "{key} in {error}");
        assert!(error.contains(message), "{message:?} in {error}");
    }
    // A short Better Auth secret is refused: Better Auth itself needs 32 bytes.
    let short = |name: &str| match name {
        "BETTER_AUTH_SECRET" => Some("x".repeat(32)),
        "SESSION_SECRET" => Some("short".to_string()),
        _ => None,
    };
    let toml = with(
        &session("base_url = \"http://auth:3000\"\nsecret_env = \"SESSION_SECRET\""),
        "",
    );
    let error = Config::parse(&toml, "bad.toml", &short)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("auth.session.secret_env") && error.contains("at least 32"),
        "{error}"
    );
}

/// RFC 7518 §3.2: an HS* secret at least as long as the hash output, else start-up (and `check`)
/// stops on the `secret_env` line, naming the variable, its length and the algorithm.
#[test]
fn a_short_hmac_secret_is_refused() {
    let line = BASE_CONFIG
        .lines()
        .position(|line| line.starts_with("secret_env"))
        .unwrap()
        + 1;
    for (algorithms, secret_bytes, strictest, min_bytes) in [
        ("[\"HS256\"]", 31, "HS256", 32),
        ("[\"HS256\"]", 1, "HS256", 32),
        ("[\"HS256\", \"HS384\"]", 47, "HS384", 48),
        ("[\"HS512\", \"HS256\"]", 63, "HS512", 64),
    ] {
        let toml = BASE_CONFIG.replacen(
            "algorithms = [\"HS256\"]",
            &format!("algorithms = {algorithms}"),
            1,
        );
        assert!(toml.contains(&format!("algorithms = {algorithms}")));
        let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| "k".repeat(secret_bytes));
        let error = Config::parse(&toml, "gateway.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("gateway.toml:{line}: `auth.secret_env`")),
            "{error}"
        );
        assert!(
            error.contains(&format!(
                "BETTER_AUTH_SECRET holds a {secret_bytes}-byte secret"
            )),
            "{error}"
        );
        assert!(
            error.contains(&format!("{strictest} needs at least {min_bytes} bytes")),
            "{error}"
        );
        let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| "k".repeat(min_bytes));
        assert!(
            Config::parse(&toml, "gateway.toml", &env).is_ok(),
            "{algorithms}"
        );
    }
}

/// What a new user tripped over: an Express-style `/:id` path (which would 404 every request), a
/// duration written as a bare number, and a config file that does not exist.
#[test]
fn common_slips_get_a_message_that_says_what_to_write() {
    let express = BASE_CONFIG.replacen("path = \"/health\"", "path = \"/users/:id/profile\"", 1);
    let error = parse_error(&express);
    assert!(
        error.contains("`route[0].path`: segment `:id` is a literal `:` segment here; parameters are written `{id}`"),
        "{error}"
    );
    let bare = BASE_CONFIG.replacen("timeout = \"2s\"", "timeout = 30", 1);
    assert_ne!(bare, BASE_CONFIG);
    let error = parse_error(&bare);
    assert!(error.contains("`upstream.timeout`"), "{error}");
    assert!(
        error.contains("a duration is a string with its unit: \"250ms\", \"30s\""),
        "{error}"
    );
    let missing = Config::load(std::path::Path::new("/nonexistent/gateway.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("/nonexistent/gateway.toml: cannot read config file: "),
        "{missing}"
    );
}
