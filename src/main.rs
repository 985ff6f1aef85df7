//! The `authgate` command line. Exit codes: 0 success, 1 runtime failure (cannot bind, ...),
//! 2 invalid configuration or usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use authgate::config::{parse_duration, Config, LogFormat};
use authgate::runtime::live::Live;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "A strict JWT authorization gateway in front of a REST backend"
)]
struct Cli {
    /// Config file [default: gateway.toml]
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default)
    Run,
    /// Validate the config file and exit: 0 when valid, 2 with file, line and key when not
    Check,
    /// Run the gateway with the bundled task backend and a fresh secret, on loopback
    Demo,
    /// Mint an HS* token from the configured secret, for local testing
    Token {
        /// The user id (the configured user claim)
        #[arg(long)]
        sub: String,
        /// Lifetime from --iat, e.g. 15m or 1h
        #[arg(long, default_value = "1h", allow_hyphen_values = true)]
        ttl: String,
        /// Issued-at, unix seconds [default: now]
        #[arg(long, allow_negative_numbers = true)]
        iat: Option<i64>,
        /// Expiry, unix seconds (instead of --iat + --ttl); a past value mints an expired token
        #[arg(long, allow_negative_numbers = true)]
        exp: Option<i64>,
        /// Not-before, unix seconds
        #[arg(long, allow_negative_numbers = true)]
        nbf: Option<i64>,
        /// Extra claim as key=value; the value is read as JSON when it parses, else as a string.
        /// The user claim, iat, exp and nbf have their own options
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
    },
    /// Run decision test cases (TOML) through the gateway in process; exit 1 when one fails
    Test {
        /// Case files
        #[arg(required = true, value_name = "CASES")]
        cases: Vec<PathBuf>,
        /// Also write the results as JUnit XML to this file
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Show, stage by stage, what the gateway does with one request
    Explain {
        /// The request method, e.g. GET
        method: String,
        /// The raw request-target, e.g. /api/alice/tasks?limit=5
        target: String,
        /// The caller's user id (a test credential is minted); no caller without it
        #[arg(long)]
        user: Option<String>,
        /// A claim of the caller as key=value (JSON when it parses, else a string)
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// A request header as "Name: value"
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Send a Better Auth session cookie instead of a bearer token
        #[arg(long)]
        session: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if matches!(command, Command::Demo) && cli.config.is_some() {
        eprintln!(
            "authgate demo: runs its bundled config (gateway.toml as shipped) with a fresh secret and \
             takes no --config; to run your own config: authgate run --config FILE"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("gateway.toml"));
    // The format comes from the config's [log] table, read before full validation so that
    // validation warnings already use it. The guard flushes buffered lines at exit.
    let format = match command {
        Command::Run => peek_log_format(&config_path),
        _ => LogFormat::Pretty,
    };
    // The tools print a report on stdout; the gateway they start inside says only what is wrong.
    let default_filter = match command {
        Command::Test { .. } | Command::Explain { .. } => "warn,rustls=error",
        _ => DEFAULT_LOG_FILTER,
    };
    let _log_guard = init_tracing(format, default_filter);
    // JSON access lines have a writer of their own (src/core/access_log.rs); dropped after the
    // gateway stops, it writes what is left.
    let _access_log_guard = (matches!(command, Command::Run) && format == LogFormat::Json)
        .then(|| authgate::core::access_log::start(authgate::core::access_log::Sink::stderr()));
    match command {
        Command::Run => match Config::load(&config_path) {
            Ok(config) => run_gateway(config, config_path),
            Err(err) => config_error(err),
        },
        Command::Check => match Config::load(&config_path) {
            Ok(config) => {
                let routes = config.routes.len();
                println!(
                    "{}: ok ({routes} route{}, upstream {})",
                    config_path.display(),
                    if routes == 1 { "" } else { "s" },
                    config.upstream_summary()
                );
                if let Some(tls) = &config.server.tls {
                    println!("TLS with {} certificate(s)", 1 + tls.sni.len());
                }
                ExitCode::SUCCESS
            }
            Err(err) => config_error(err),
        },
        Command::Demo => demo(),
        Command::Token {
            sub,
            ttl,
            iat,
            exp,
            nbf,
            claims,
        } => match Config::load(&config_path) {
            Ok(config) => mint(&config, &sub, &ttl, TimeClaims { iat, exp, nbf }, &claims),
            Err(err) => config_error(err),
        },
        Command::Test { cases, junit } => decision_tests(&config_path, &cases, junit.as_deref()),
        Command::Explain {
            method,
            target,
            user,
            claims,
            headers,
            session,
        } => explain(
            &config_path,
            method,
            target,
            user,
            &claims,
            &headers,
            session,
        ),
    }
}

/// `authgate test`: exit 0 when every case passed, 1 when one failed, 2 when the config or a
/// case file is unusable.
fn decision_tests(
    config: &std::path::Path,
    cases: &[PathBuf],
    junit: Option<&std::path::Path>,
) -> ExitCode {
    let runtime = match runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authgate: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let results = match runtime.block_on(authgate::tools::run_files(config, cases)) {
        Ok(results) => results,
        Err(err) => {
            eprintln!("authgate test: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    print!("{}", authgate::tools::report(&results));
    if let Some(path) = junit {
        if let Err(err) = std::fs::write(path, authgate::tools::junit(&results)) {
            eprintln!("authgate test: cannot write {}: {err}", path.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    if results.iter().all(|result| result.failures.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn explain(
    config_path: &std::path::Path,
    method: String,
    target: String,
    user: Option<String>,
    claims: &[String],
    headers: &[String],
    session: bool,
) -> ExitCode {
    let claims = match parse_claims(claims) {
        Ok(claims) => claims,
        Err(err) => {
            eprintln!("authgate explain: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut parsed_headers = Vec::new();
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            eprintln!("authgate explain: --header `{header}`: expected \"Name: value\"");
            return ExitCode::from(EXIT_CONFIG);
        };
        parsed_headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let config = match authgate::tools::harness::load_config(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("authgate explain: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let question = authgate::tools::explain::Question {
        method,
        target,
        headers: parsed_headers,
        user,
        claims,
        via: if session {
            authgate::tools::cases::Via::Session
        } else {
            authgate::tools::cases::Via::Bearer
        },
    };
    let runtime = match runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authgate: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(authgate::tools::explain::explain(config, question)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("authgate explain: {err}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `--claim KEY=VALUE` options: the value as JSON when it parses, else as a string.
fn parse_claims(claims: &[String]) -> Result<Map<String, Value>, String> {
    let mut parsed = Map::new();
    for claim in claims {
        let Some((key, value)) = claim.split_once('=') else {
            return Err(format!("--claim `{claim}`: expected KEY=VALUE"));
        };
        if key.is_empty() {
            return Err(format!("--claim `{claim}`: the key is empty"));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        parsed.insert(key.to_string(), value);
    }
    Ok(parsed)
}

fn peek_log_format(path: &std::path::Path) -> LogFormat {
    let format = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            let log = table.get("log")?.as_table()?;
            Some(log.get("format")?.as_str()? == "pretty")
        });
    if format == Some(true) {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    }
}

/// Logs go to stderr through a non-blocking writer: a slow log consumer must never stall requests.
/// The level comes from `RUST_LOG` (default `DEFAULT_LOG_FILTER`).
fn init_tracing(
    format: LogFormat,
    default_filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Colours only for a terminal: not into a file or a pipe.
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}

/// `info`, except rustls below `error`: its warnings are about what a TLS client sent (an IP
/// address as SNI, which wrk and others do, logs "Illegal SNI extension" on every handshake), so
/// at `warn` any client could make the gateway write a log line per connection. Handshake
/// failures reach our own code as errors and are answered there; `RUST_LOG` brings them back.
const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

fn config_error(err: authgate::config::ConfigError) -> ExitCode {
    eprintln!("authgate: invalid config: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

/// The main thread's runtime: signals, reloads, JWKS refreshes, the admin and redirect listeners.
/// Requests are served by the worker threads (`authgate::runtime::workers::spawn_workers`), not here.
fn control_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn run_gateway(config: Config, config_path: PathBuf) -> ExitCode {
    let runtime = match control_runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authgate: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let workers = config.server.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let listeners =
            match authgate::runtime::workers::bind_workers(config.server.listen, workers) {
                Ok(listeners) => listeners,
                Err(err) => {
                    eprintln!("authgate: cannot listen on {}: {err}", config.server.listen);
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
        let admin = match config.admin_listen {
            None => None,
            Some(address) => match TcpListener::bind(address).await {
                Ok(listener) => Some(listener),
                Err(err) => {
                    eprintln!("authgate: cannot listen on {address} (admin): {err}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            },
        };
        // TLS (src/runtime/tls.rs): the plain listener that redirects to HTTPS, and the acceptor.
        let redirect = match config.server.redirect_http {
            None => None,
            Some(address) => match TcpListener::bind(address).await {
                Ok(listener) => Some(listener),
                Err(err) => {
                    eprintln!("authgate: cannot listen on {address} (redirect_http): {err}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            },
        };
        let live = match Live::new(config.clone()) {
            Ok(live) => live,
            Err(err) => return config_error(err),
        };
        let tls = match config.server.tls.as_ref() {
            None => None,
            Some(tls) => match authgate::runtime::tls::TlsListener::new(tls, live.metrics()) {
                Ok(tls) => Some(std::sync::Arc::new(tls)),
                Err(err) => {
                    eprintln!("authgate: cannot set up TLS: {err}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            },
        };
        tracing::info!(
            listen = %config.server.listen,
            tls = tls.is_some(),
            redirect_http = config
                .server
                .redirect_http
                .map_or_else(|| "off".to_string(), |addr| addr.to_string()),
            admin = config
                .admin_listen
                .map_or_else(|| "off".to_string(), |addr| addr.to_string()),
            upstream = %config.upstream_summary(),
            routes = config.routes.len(),
            "authgate listening"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Some(admin) = admin {
            tokio::spawn(authgate::runtime::admin::serve(
                admin,
                live.clone(),
                until_stopped(stopped.clone()),
            ));
        }
        let watcher = tokio::spawn(authgate::runtime::live::watch(
            live.clone(),
            config_path,
            Duration::from_secs(2),
        ));
        if let Some(redirect) = redirect {
            tokio::spawn(authgate::runtime::redirect::serve_redirect(
                redirect,
                config.limits,
                config.server.listen.port(),
                until_stopped(stopped.clone()),
            ));
        }
        let trimmer = tokio::spawn(authgate::runtime::memory::run());
        // Certificates reload on SIGHUP and when their files change, on their own.
        let certs = tls.as_ref().map(|tls| {
            tokio::spawn(authgate::runtime::tls::watch_certs(
                tls.store.clone(),
                Duration::from_secs(2),
            ))
        });
        let served = authgate::runtime::workers::spawn_workers(
            listeners,
            live,
            tls,
            stopped,
            config.server.pin_workers,
        );
        let code = match served {
            // The workers drain and stop once `stopped` turns; this thread keeps running the
            // control tasks (reloads, JWKS refreshes) until they have.
            Ok(workers) => match tokio::task::spawn_blocking(move || workers.join()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(EXIT_RUNTIME),
            },
            Err(err) => {
                eprintln!("authgate: cannot start the worker threads: {err}");
                ExitCode::from(EXIT_RUNTIME)
            }
        };
        if let Some(certs) = certs {
            certs.abort();
        }
        watcher.abort();
        trimmer.abort();
        code
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--iat`, `--exp`, `--nbf`: explicit times win over now and `--ttl`.
struct TimeClaims {
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

fn mint(config: &Config, sub: &str, ttl: &str, times: TimeClaims, claims: &[String]) -> ExitCode {
    let Some((secret, algorithm)) = config.auth.hmac_secret() else {
        eprintln!(
            "authgate: `token` needs an HS* algorithm and its secret (secret_env) in the config"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(algorithm) = algorithm.primitive() else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let ttl = match parse_duration(ttl) {
        Ok(ttl) => ttl,
        Err(err) => {
            eprintln!("authgate: --ttl: {err} (for an expired token, give --exp with a past time)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut extra = match parse_claims(claims) {
        Ok(extra) => extra,
        Err(err) => {
            eprintln!("authgate: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The user claim and the times have options of their own: a --claim for one of them would
    // either be silently overwritten or silently win, so it is refused.
    for (reserved, option) in [
        (config.auth.user_claim.as_str(), "--sub"),
        ("iat", "--iat"),
        ("exp", "--exp (or --ttl)"),
        ("nbf", "--nbf"),
    ] {
        if extra.contains_key(reserved) {
            eprintln!("authgate: --claim {reserved}=...: use {option} for `{reserved}`");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let iat = times
        .iat
        .unwrap_or_else(|| i64::try_from(now).unwrap_or(i64::MAX));
    let exp = times
        .exp
        .unwrap_or_else(|| iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)));
    extra.insert("iat".into(), Value::from(iat));
    extra.insert("exp".into(), Value::from(exp));
    if let Some(nbf) = times.nbf {
        extra.insert("nbf".into(), Value::from(nbf));
    }
    match authgate::core::jose::mint::mint_hmac_claims(
        &secret.0,
        algorithm,
        &config.auth.user_claim,
        sub,
        extra,
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("authgate: cannot sign: {err}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The bundled demo: the task backend on an ephemeral loopback port, the gateway in front of it on
/// 127.0.0.1:8080 (or an ephemeral port when 8080 is taken), a fresh random secret, and tokens and
/// curl lines to try.
fn demo() -> ExitCode {
    let runtime = match runtime(None) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authgate: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        match run_demo().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("authgate demo: {err}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

const DEMO_CONFIG: &str = include_str!("../gateway.toml");

async fn run_demo() -> Result<(), String> {
    let mut secret_bytes = [0u8; 32];
    getrandom::fill(&mut secret_bytes).map_err(|err| format!("no randomness: {err}"))?;
    let secret: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();

    let backend = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|err| format!("cannot bind the task backend: {err}"))?;
    let backend_addr = backend.local_addr().map_err(|err| err.to_string())?;
    tokio::spawn(authgate::demo::serve(backend));

    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| secret.clone());
    let mut config =
        Config::parse(DEMO_CONFIG, "gateway.toml (demo)", &env).map_err(|err| err.to_string())?;
    let Some(upstream) = config.upstream.as_mut() else {
        return Err("the demo config has no [upstream]".into());
    };
    upstream.authority = backend_addr
        .to_string()
        .parse()
        .map_err(|_| "bad backend address".to_string())?;
    let (listener, port_note) = match TcpListener::bind(config.server.listen).await {
        Ok(listener) => (listener, String::new()),
        Err(err) => (
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|err| format!("cannot bind the gateway: {err}"))?,
            format!(
                "  note         {} is not free ({err}), so the gateway took another port\n",
                config.server.listen
            ),
        ),
    };
    let gateway_addr = listener.local_addr().map_err(|err| err.to_string())?;
    let live = Live::new(config).map_err(|err| err.to_string())?;

    let mint = |sub: &str| {
        authgate::core::jose::mint::mint_hmac(
            secret.as_bytes(),
            jsonwebtoken::Algorithm::HS256,
            "sub",
            sub,
            Duration::from_secs(3600),
            Map::new(),
        )
        .map_err(|err| err.to_string())
    };
    let alice = mint("alice")?;
    let bob = mint("bob")?;
    let base = format!("http://{gateway_addr}");
    println!(
        "authgate demo\n\
         \x20 gateway      {base}  (forwarding to the task backend on {backend_addr})\n\
         \x20 secret       a fresh random HS256 secret for this run\n\
         {port_note}\n\
         tokens (valid for 1 hour):\n\
         \x20 ALICE={alice}\n\
         \x20 BOB={bob}\n\n\
         try:\n\
         \x20 # 201: alice creates a task; 200: alice lists her tasks\n\
         \x20 curl -i -X POST -H \"Authorization: Bearer $ALICE\" -H 'content-type: application/json' -d '{{\"title\":\"buy milk\"}}' {base}/api/alice/tasks\n\
         \x20 curl -i -H \"Authorization: Bearer $ALICE\" {base}/api/alice/tasks\n\
         \x20 # 401: no token\n\
         \x20 curl -i {base}/api/alice/tasks\n\
         \x20 # 403: bob on alice's tasks\n\
         \x20 curl -i -H \"Authorization: Bearer $BOB\" {base}/api/alice/tasks\n\
         \x20 # 400: a dot-segment trick\n\
         \x20 curl -i --path-as-is -H \"Authorization: Bearer $BOB\" {base}/api/bob/../alice/tasks\n\n\
         Ctrl-C to stop."
    );
    authgate::runtime::server::serve(listener, live, shutdown_signal()).await;
    Ok(())
}
