//! `task-backend [LISTEN_ADDR]` — the bundled demo task API.
//!
//! Listen address: first CLI argument, else `$TASK_BACKEND_LISTEN`, else
//! `127.0.0.1:8000`. Log filtering follows `RUST_LOG` (default `info`).

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
const LISTEN_ENV: &str = "TASK_BACKEND_LISTEN";

fn usage() -> String {
    format!(
        "usage: task-backend [LISTEN_ADDR]\n\n\
         Serves the demo task API (trusts the X-User-Id header).\n\
         LISTEN_ADDR defaults to ${LISTEN_ENV} or {DEFAULT_LISTEN}."
    )
}

/// Resolves the listen address from CLI arguments and environment.
fn listen_addr() -> Result<Option<String>, String> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if args.next().is_some() {
        return Err(format!("too many arguments\n\n{}", usage()));
    }
    match first.as_deref() {
        Some("-h" | "--help") => Ok(None),
        Some(addr) => Ok(Some(addr.to_owned())),
        None => Ok(Some(
            std::env::var(LISTEN_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match listen_addr() {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("task-backend: {msg}");
            return ExitCode::from(2);
        }
    };

    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let listener = match tokio::net::TcpListener::bind(addr.as_str()).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("task-backend: failed to bind {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let shown = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    tracing::info!("task-backend listening on {shown}");

    tokio::select! {
        () = authgate::demo::serve(listener) => {}
        res = tokio::signal::ctrl_c() => {
            if let Err(err) = res {
                eprintln!("task-backend: failed to listen for Ctrl-C: {err}");
                return ExitCode::FAILURE;
            }
            tracing::info!("task-backend shutting down");
        }
    }
    ExitCode::SUCCESS
}
