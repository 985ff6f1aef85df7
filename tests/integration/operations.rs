//! Operations: hot reload under load, the admin endpoints, metrics, access logs, request ids.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::common::*;

const NOTES_ROUTE: &str = "\n[[route]]\npath = \"/api/{user_id}/notes\"\nowner = \"user_id\"\n";

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("authgate-{name}-{}.toml", std::process::id()))
}

/// The base config pointing at `backend`, as a file `authgate` can load (secret from the env).
fn config_file(backend: SocketAddr, extra_routes: &str) -> String {
    format!(
        "{}{extra_routes}",
        BASE_CONFIG.replace(
            "url = \"http://127.0.0.1:1\"",
            &format!("url = \"http://{backend}\"")
        )
    )
}

#[tokio::test]
async fn reload_under_load_loses_no_request_and_refuses_invalid_files() {
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string());
    let backend = Backend::start().await;
    let path = temp_path("reload");
    std::fs::write(&path, config_file(backend.addr, "")).unwrap();
    let gateway = start_gateway_with(
        authgate::config::Config::load_with(&path, &env).unwrap(),
        backend.addr,
    )
    .await;
    let auth = bearer(&token_for("alice"));

    // Load: four clients in a loop until told to stop; every answer must be 200.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, answered, auth, addr) = (
            stop.clone(),
            failures.clone(),
            answered.clone(),
            auth.clone(),
            gateway.addr,
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = request(
                    addr,
                    "GET",
                    "/api/alice/tasks",
                    &[("Authorization", &auth)],
                    b"",
                )
                .await;
                if response.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let notes = || async {
        request(
            gateway.addr,
            "GET",
            "/api/alice/notes",
            &[("Authorization", &auth)],
            b"",
        )
        .await
        .status
    };
    assert_eq!(notes().await, 404);
    for round in 0..10 {
        // A valid file that adds a route: in force after the reload.
        std::fs::write(&path, config_file(backend.addr, NOTES_ROUTE)).unwrap();
        gateway.live.reload_with(&path, &env).expect("valid config");
        assert_eq!(notes().await, 200, "round {round}");
        // An invalid file: refused with file, line and key; the running config stays.
        std::fs::write(
            &path,
            config_file(backend.addr, NOTES_ROUTE)
                .replace("owner = \"user_id\"\n", "owner = \"uid\"\n"),
        )
        .unwrap();
        let err = gateway
            .live
            .reload_with(&path, &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("`route[1].owner`"),
            "{err}"
        );
        assert_eq!(
            notes().await,
            200,
            "round {round}: the invalid file changed something"
        );
        // Back to the original: the route is gone again.
        std::fs::write(&path, config_file(backend.addr, "")).unwrap();
        gateway.live.reload_with(&path, &env).expect("valid config");
        assert_eq!(notes().await, 404, "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    let metrics = gateway.live.metrics().render();
    assert!(
        metrics.contains("authgate_config_reloads_total{outcome=\"ok\"} 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_config_reloads_total{outcome=\"failed\"} 10"),
        "{metrics}"
    );
    std::fs::remove_file(&path).ok();
}

/// Whether /readyz answers 200 within 5 s.
async fn turns_ready(admin: SocketAddr) -> bool {
    for _ in 0..100 {
        if admin_get(admin, "/readyz").await.status == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn admin_get(addr: SocketAddr, path: &str) -> RawResponse {
    request(addr, "GET", path, &[], b"").await
}

async fn start_admin(live: Arc<authgate::live::Live>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(authgate::admin::serve(
        listener,
        live,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn readyz_follows_the_key_sources() {
    let jwks_addr = unused_addr().await;
    let routes = &BASE_CONFIG[BASE_CONFIG.find("[[route]]").unwrap()..];
    let config = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\njwks_url = \"http://{jwks_addr}/jwks\"\nalgorithms = [\"EdDSA\"]\njwks_cooldown = \"200ms\"\njwks_timeout = \"500ms\"\n{routes}"
    );
    let backend = Backend::start().await;
    let gateway = start_gateway(&config, backend.addr).await;
    let admin = start_admin(gateway.live.clone()).await;
    assert_eq!(admin_get(admin, "/healthz").await.status, 200);
    let not_ready = admin_get(admin, "/readyz").await;
    assert_eq!(not_ready.status, 503);
    let body = not_ready.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["jwks_waiting"][0], format!("http://{jwks_addr}/jwks"));

    // The auth server comes up with a key: ready.
    let key = crate::keys::TestKey::generate("EdDSA", "k1");
    let document = crate::keys::jwks(&[&key]).to_string();
    let listener = TcpListener::bind(jwks_addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let document = document.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    assert!(turns_ready(admin).await, "readyz never turned 200");
    assert_eq!(admin_get(admin, "/nope").await.status, 404);
}

/// A replica that cannot find its backend takes no traffic: /readyz is 503 naming the upstream
/// while its host name has no address (src/proxy/upstream/dns.rs), and 200 once one is known.
#[tokio::test]
async fn readyz_waits_for_the_upstream_host_to_have_an_address() {
    let backend = Backend::start().await;
    let config = BASE_CONFIG.replace(
        "url = \"http://127.0.0.1:1\"",
        "url = \"http://backend.invalid:8000\"\nconnect_timeout = \"300ms\"",
    );
    let gateway = start_gateway_as_configured(parse_config(&config)).await;
    let admin = start_admin(gateway.live.clone()).await;
    let not_ready = admin_get(admin, "/readyz").await;
    assert_eq!(not_ready.status, 503);
    let body = not_ready.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(
        body["upstreams_unresolved"][0], "backend.invalid:8000",
        "{body}"
    );
    // A request meanwhile: 502 within connect_timeout, never a hang; nothing reached a backend.
    let auth = bearer(&token_for("alice"));
    let started = Instant::now();
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend.count(), 0);

    // The same backend by a name that resolves: ready.
    let config = BASE_CONFIG.replace(
        "url = \"http://127.0.0.1:1\"",
        &format!("url = \"http://localhost:{}\"", backend.addr.port()),
    );
    let gateway = start_gateway_as_configured(parse_config(&config)).await;
    let admin = start_admin(gateway.live.clone()).await;
    let mut ready = false;
    for _ in 0..100 {
        if admin_get(admin, "/readyz").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "readyz never turned 200 for an upstream named localhost"
    );
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.only().header_values("x-user-id"), ["alice"]);
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let (backend, gateway) = setup().await;
    let admin = start_admin(gateway.live.clone()).await;
    let auth = bearer(&token_for("alice"));
    for _ in 0..3 {
        assert_eq!(
            request(
                gateway.addr,
                "GET",
                "/api/alice/tasks",
                &[("Authorization", &auth)],
                b""
            )
            .await
            .status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            request(gateway.addr, "GET", "/api/alice/tasks", &[], b"")
                .await
                .status,
            401
        );
    }
    assert_eq!(
        request(
            gateway.addr,
            "GET",
            "/api/bob/tasks",
            &[("Authorization", &auth)],
            b""
        )
        .await
        .status,
        403
    );
    assert_eq!(
        request(gateway.addr, "GET", "/nope", &[], b"").await.status,
        404
    );
    assert_eq!(
        request(gateway.addr, "GET", "/api/a/../b", &[], b"")
            .await
            .status,
        400
    );
    assert_eq!(backend.count(), 3);
    let response = admin_get(admin, "/metrics").await;
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).unwrap();
    for expected in [
        "authgate_requests_total{route=\"/api/{user_id}/tasks\",method=\"GET\",status=\"2xx\"} 3",
        "authgate_requests_total{route=\"/api/{user_id}/tasks\",method=\"GET\",status=\"4xx\"} 3",
        "authgate_requests_total{route=\"none\",method=\"GET\",status=\"4xx\"} 2",
        "authgate_refusals_total{reason=\"no_token\"} 2",
        "authgate_refusals_total{reason=\"owner_mismatch\"} 1",
        "authgate_refusals_total{reason=\"no_route\"} 1",
        "authgate_refusals_total{reason=\"bad_target\"} 1",
        "authgate_request_duration_seconds_count 8",
        "authgate_upstream_duration_seconds_count 3",
        "authgate_open_connections",
        // Published at zero before their first event, as Prometheus users expect.
        "authgate_upstream_errors_total{reason=\"upstream_unavailable\"} 0",
        "authgate_upstream_errors_total{reason=\"upstream_timeout\"} 0",
        "authgate_config_reloads_total{outcome=\"ok\"} 0",
        "authgate_config_reloads_total{outcome=\"failed\"} 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_generated_forwarded_and_returned() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    // From an untrusted client, a supplied id is replaced.
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            ("X-Request-Id", "chosen-by-client"),
        ],
        b"",
    )
    .await;
    let id = response
        .header("x-request-id")
        .expect("x-request-id on the response")
        .to_string();
    assert_ne!(id, "chosen-by-client");
    assert_eq!(
        backend.only().header_values("x-request-id"),
        vec![id.as_str()]
    );
    // Refusals carry one too.
    let refused = request(gateway.addr, "GET", "/nope", &[], b"").await;
    assert!(refused.header("x-request-id").is_some());
    // A client cannot have the id dropped on the way by nominating it in Connection.
    for nominated in ["x-request-id", "X_Request_Id", "keep-alive, X-Request-ID"] {
        let refused = request(
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &auth), ("Connection", nominated)],
            b"",
        )
        .await;
        assert_eq!(refused.status, 400, "{nominated}");
        assert_eq!(refused.json()["error"], "bad_request");
    }
    assert_eq!(backend.count(), 1);

    // From a trusted proxy, a well-formed id is kept; a malformed one is replaced.
    let backend = Backend::start().await;
    let config = BASE_CONFIG.replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let trusted = start_gateway(&config, backend.addr).await;
    let kept = request(
        trusted.addr,
        "GET",
        "/health",
        &[("X-Request-Id", "lb-1234.abc_DEF")],
        b"",
    )
    .await;
    assert_eq!(kept.header("x-request-id"), Some("lb-1234.abc_DEF"));
    let replaced = request(
        trusted.addr,
        "GET",
        "/health",
        &[("X-Request-Id", "bad id with spaces")],
        b"",
    )
    .await;
    assert_ne!(replaced.header("x-request-id"), Some("bad id with spaces"));
    let ids: Vec<String> = backend
        .received()
        .iter()
        .map(|r| r.header_values("x-request-id").join(","))
        .collect();
    assert_eq!(ids[0], "lb-1234.abc_DEF");
    assert_eq!(Some(ids[1].as_str()), replaced.header("x-request-id"));
}

/// The real binary: JSON access log lines with every field and never the token; SIGHUP reloads.
#[test]
fn access_log_and_sighup_reload_with_the_binary() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start());
    let port = free_port();
    let path = temp_path("access");
    let write_config = |extra: &str| {
        let config = config_file(backend.addr, extra).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        std::fs::write(&path, config).unwrap();
    };
    write_config("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["--config", path.to_str().unwrap()])
        .env("BETTER_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let send = |target: &str, auth: &str| -> (u16, Option<String>) {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(stream, "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let response = parse_response(&raw);
        (
            response.status,
            response.header("x-request-id").map(String::from),
        )
    };
    wait_until_listening(addr);
    let token = token_for("alice");
    let (status, id) = send("/api/alice/tasks", &bearer(&token));
    assert_eq!(status, 200);
    let (status, _) = send("/api/alice/../bob/tasks", &bearer(&token));
    assert_eq!(status, 400);
    assert_eq!(send("/api/alice/notes", &bearer(&token)).0, 404);

    // SIGHUP after a config change: the new route is served.
    write_config(NOTES_ROUTE);
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while send("/api/alice/notes", &bearer(&token)).0 != 200 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!logs.contains(&token), "the token appears in the logs");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "authgate::access")
        .collect();
    let ok = access
        .iter()
        .find(|l| l["status"] == 200)
        .expect("an access line for the 200");
    for field in [
        "timestamp",
        "request_id",
        "client_ip",
        "method",
        "path",
        "route",
        "status",
        "reason",
        "user",
        "upstream_ms",
        "total_ms",
    ] {
        assert!(!ok[field].is_null(), "access line lacks {field}: {ok}");
    }
    assert_eq!(ok["request_id"].as_str(), id.as_deref());
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["path"], "/api/alice/tasks");
    assert_eq!(ok["route"], "/api/{user_id}/tasks");
    assert_eq!(ok["user"], "alice");
    assert_eq!(ok["reason"], "-");
    let refused = access
        .iter()
        .find(|l| l["status"] == 400)
        .expect("an access line for the 400");
    assert_eq!(refused["reason"], "bad_target");
    assert_eq!(refused["path"], "-", "a refused target is never logged raw");
    // Tidy values: no upstream asked is null, not -1; times to the microsecond; no Rust debug
    // text; every line JSON; one "shutting down" however many workers.
    assert!(refused["upstream_ms"].is_null(), "{refused}");
    assert!(ok["upstream_ms"].as_f64().unwrap() >= 0.0, "{ok}");
    for line in &access {
        let total = line["total_ms"].to_string();
        let decimals = total
            .split_once('.')
            .map_or(0, |(_, fraction)| fraction.len());
        assert!(decimals <= 3, "total_ms {total} in {line}");
    }
    assert_eq!(
        lines.len(),
        logs.lines().count(),
        "every log line is JSON:\n{logs}"
    );
    for debug_text in ["Some(", "\"None\""] {
        assert!(!logs.contains(debug_text), "{debug_text} in\n{logs}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["message"] == "shutting down: waiting for in-flight requests")
            .count(),
        1,
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "config reloaded"),
        "{logs}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["check", "--help"],
        vec!["demo", "--help"],
        vec!["token", "--help"],
        vec!["run", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Starts the real binary on `config` (a file at `path`) and waits until it accepts connections
/// on `port`.
fn start_binary(path: &std::path::Path, config: &str, port: u16) -> std::process::Child {
    start_binary_with_log(path, config, port, None)
}

/// `start_binary` with `RUST_LOG` set to `log_filter` (unset: the binary's default filter).
fn start_binary_with_log(
    path: &std::path::Path,
    config: &str,
    port: u16,
    log_filter: Option<&str>,
) -> std::process::Child {
    std::fs::write(path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
    if let Some(filter) = log_filter {
        command.env("RUST_LOG", filter);
    }
    let child = command
        .args(["--config", path.to_str().unwrap()])
        .env("BETTER_AUTH_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_listening(SocketAddr::from(([127, 0, 0, 1], port)));
    child
}

/// The CPUs a task may run on, from the `Cpus_allowed_list` line of its /proc status file
/// ("0-3,6").
fn allowed_cpus(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                cpus.extend(first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap())
            }
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

type Cpus = Vec<usize>;

/// The allowed CPUs of every thread of process `pid`, split into its `authgate-worker-N` threads
/// (the kernel cuts their names to 15 bytes: "authgate-worker") and all the others.
fn thread_cpus(pid: u32) -> (Vec<Cpus>, Vec<(String, Cpus)>) {
    let (mut workers, mut others) = (Vec::new(), Vec::new());
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread can end between read_dir and these reads.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue;
        };
        let cpus = allowed_cpus(&status);
        match name.trim_end() {
            "authgate-worker" => workers.push(cpus),
            other => others.push((other.to_string(), cpus)),
        }
    }
    workers.sort();
    (workers, others)
}

/// `server.pin_workers = true`: with one worker per CPU the process may use, each
/// worker thread is bound to a CPU of its own and together they cover all of them, while every
/// other thread, including the blocking threads a worker's runtime starts to resolve the
/// upstream's host name, keeps the whole mask; by default (false) no thread is bound.
/// Either way requests are served, with the identity from the token. (On a one-CPU machine both
/// cases look alike.)
#[cfg(target_os = "linux")]
#[test]
fn workers_are_bound_one_per_cpu_only_when_pin_workers_is_true() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start());
    let process_cpus = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap());
    let path = temp_path("pinning");
    let token = token_for("alice");
    for pin in [None, Some(true)] {
        let port = free_port();
        let setting = pin.map_or(String::new(), |pin| format!("\npin_workers = {pin}"));
        // A host name, not an address: the lean client resolves it on a blocking thread.
        let config = config_file(backend.addr, "")
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!(
                    "listen = \"127.0.0.1:{port}\"\nworkers = {}{setting}",
                    process_cpus.len()
                ),
            )
            .replace(
                &format!("url = \"http://{}\"", backend.addr),
                &format!("url = \"http://localhost:{}\"", backend.addr.port()),
            );
        let mut child = start_binary(&path, &config, port);

        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /api/alice/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        assert_eq!(parse_response(&raw).status, 200);
        let received = backend.received();
        let last = received.last().unwrap();
        assert_eq!(last.target, "/api/alice/tasks");
        assert_eq!(last.header_values("x-user-id"), ["alice"]);

        // The port accepts before the workers start: wait until they have, and have placed
        // themselves.
        let one_each: Vec<Vec<usize>> = process_cpus.iter().map(|&cpu| vec![cpu]).collect();
        let unbound = vec![process_cpus.clone(); process_cpus.len()];
        let want = if pin == Some(true) {
            &one_each
        } else {
            &unbound
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let (workers, others) = loop {
            let (workers, others) = thread_cpus(child.id());
            if workers == *want || Instant::now() > deadline {
                break (workers, others);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(workers, *want, "{pin:?}");
        assert!(
            others.iter().all(|(_, cpus)| *cpus == process_cpus),
            "threads other than the workers are not bound: {others:?}"
        );

        child.kill().unwrap();
        child.wait().unwrap();
    }
    let _ = std::fs::remove_file(&path);
}

/// The base config on `port` with two workers, for the real binary.
fn two_worker_config(backend: SocketAddr, port: u16) -> String {
    config_file(backend, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\"\nworkers = 2"),
    )
}

/// The real binary with two workers (each its own socket of an SO_REUSEPORT group): 64 concurrent
/// keep-alive clients are all answered, the backend sees each request once with the right
/// identity, and a second instance on the same port is refused instead of joining the group.
#[test]
fn two_workers_serve_concurrent_clients_and_a_second_instance_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start());
    let port = free_port();
    let path = temp_path("workers");
    let config = two_worker_config(backend.addr, port);
    let mut first = start_binary(&path, &config, port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let second = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["--config", path.to_str().unwrap()])
        .env("BETTER_AUTH_SECRET", SECRET)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    let token = token_for("alice");
    let clients: Vec<_> = (0..64)
        .map(|client| {
            let token = token.clone();
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                let mut statuses = Vec::new();
                for round in 0..5 {
                    let close = if round == 4 {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    write!(
                        stream,
                        "GET /api/alice/tasks/{client}-{round} HTTP/1.1\r\nHost: x\r\n\
                         Authorization: Bearer {token}\r\n{close}\r\n"
                    )
                    .unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        stream.read_exact(&mut byte).unwrap();
                        head.push(byte[0]);
                    }
                    let response = parse_response(&head);
                    let length: usize = response.header("content-length").unwrap().parse().unwrap();
                    let mut body = vec![0u8; length];
                    stream.read_exact(&mut body).unwrap();
                    statuses.push(response.status);
                }
                statuses
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), [200; 5]);
    }
    let received = backend.received();
    assert_eq!(received.len(), 64 * 5);
    let mut targets: Vec<String> = received.iter().map(|r| r.target.clone()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(
        targets.len(),
        64 * 5,
        "every request reached the backend exactly once"
    );
    assert!(received
        .iter()
        .all(|r| r.header_values("x-user-id") == ["alice"]));

    assert!(Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_file(&path);
}

/// The resident memory of process `pid` in KiB (`VmRSS` in its /proc status file).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Raises this process's soft open-file limit to at least `wanted` (children inherit it).
fn raise_open_file_limit(wanted: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= wanted,
        "this test needs {wanted} open files; the hard limit is {hard}"
    );
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).unwrap();
    }
}

/// Opens `count` keep-alive connections to `addr`, sends `GET /api/alice/tasks/{n}` on each
/// (at most 128 at a time), reads each 200 answer to its end and keeps the connections open.
async fn open_idle_connections(
    addr: SocketAddr,
    token: &str,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limit = Arc::new(tokio::sync::Semaphore::new(128));
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let limit = limit.clone();
            let request = format!(
                "GET /api/alice/tasks/{n} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.unwrap();
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let read = stream.read(&mut chunk).await.unwrap();
                    assert!(read > 0, "connection {n} closed before its answer");
                    answer.extend_from_slice(&chunk[..read]);
                    if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let response = parse_response(&answer);
                        assert_eq!(response.status, 200, "connection {n}");
                        let length: usize =
                            response.header("content-length").unwrap().parse().unwrap();
                        if answer.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                stream
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(count);
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    streams
}

/// glibc keeps memory a burst of connections freed unless it is asked to give it back
/// (src/runtime/memory.rs): after 5,000 idle keep-alive connections close, the gateway's RSS must fall
/// at least halfway back to where it was before them, within seconds. Without the trim it stays
/// where it was while they were open.
#[test]
fn memory_a_burst_of_connections_freed_goes_back_to_the_os() {
    const CONNECTIONS: usize = 5000;
    raise_open_file_limit(CONNECTIONS as u64 * 2 + 1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start());
    let port = free_port();
    let path = temp_path("trim");
    let config = two_worker_config(backend.addr, port);
    let mut child = start_binary_with_log(
        &path,
        &config,
        port,
        Some("info,authgate::runtime::memory=debug"),
    );
    let pid = child.id();
    // 5,000 access-log lines would fill the stderr pipe and queue up in the gateway's memory.
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let token = token_for("alice");

    drop(runtime.block_on(open_idle_connections(addr, &token, 1)));
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let held = runtime.block_on(open_idle_connections(addr, &token, CONNECTIONS));
    std::thread::sleep(Duration::from_millis(300));
    let holding = rss_kib(pid);
    assert!(
        holding > before + 8 * 1024,
        "{CONNECTIONS} connections should cost megabytes: {before} KiB before, {holding} KiB with them"
    );
    drop(held);

    let halfway = before + (holding - before) / 2;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = rss_kib(pid);
    while now > halfway {
        assert!(
            Instant::now() < deadline,
            "RSS still {now} KiB 15 s after the connections closed \
             ({before} KiB before them, {holding} KiB with them)"
        );
        std::thread::sleep(Duration::from_millis(200));
        now = rss_kib(pid);
    }

    let received = backend.received();
    assert_eq!(received.len(), CONNECTIONS + 1);
    assert!(received
        .iter()
        .all(|r| r.header_values("x-user-id") == ["alice"]));
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = log.join().unwrap();
    assert_eq!(
        log.matches("\"status\":200").count(),
        CONNECTIONS + 1,
        "{log:.2000}"
    );
    // The drop is the trim's doing (glibc alone gives back only the top of each heap).
    assert!(
        log.contains("returned freed heap memory to the OS"),
        "no trim logged"
    );
    let _ = std::fs::remove_file(&path);
}
