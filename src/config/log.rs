//! `[log]` and `[admin]`: the log format, the access log, the admin listener.

use raw::{RawAdmin, RawLog};
use std::net::SocketAddr;
use toml::Spanned;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One line per request on the `authgate::access` target.
    pub access: bool,
}

pub(super) fn validate_admin(
    ctx: &Ctx,
    raw: Option<&Spanned<RawAdmin>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<SocketAddr>, Option<Secret>), ConfigError> {
    let Some(admin) = raw.map(Spanned::get_ref) else {
        return Ok((None, None));
    };
    let listen = admin.listen.get_ref().parse().map_err(|_| {
        ctx.error(
            &admin.listen,
            "admin.listen",
            "expected a socket address such as \"127.0.0.1:9090\"",
        )
    })?;
    let token = match &admin.token_env {
        None => None,
        Some(name) => match env(name.get_ref()) {
            Some(value) if value.len() >= 16 => Some(Secret(value.into_bytes())),
            Some(value) => {
                return Err(ctx.error(
                    name,
                    "admin.token_env",
                    format!(
                        "environment variable {} holds {} bytes; an admin token needs at least 16",
                        name.get_ref(),
                        value.len()
                    ),
                ))
            }
            None => {
                return Err(ctx.error(
                    name,
                    "admin.token_env",
                    format!("environment variable {} is not set", name.get_ref()),
                ))
            }
        },
    };
    Ok((Some(listen), token))
}

pub(super) fn validate_log(
    ctx: &Ctx,
    raw: Option<&Spanned<RawLog>>,
) -> Result<LogConfig, ConfigError> {
    let mut log = LogConfig {
        format: LogFormat::Json,
        access: true,
    };
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return Ok(log);
    };
    if let Some(format) = &raw.format {
        log.format = match format.get_ref().as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => return Err(ctx.error(format, "log.format", "expected \"json\" or \"pretty\"")),
        };
    }
    log.access = raw.access.unwrap_or(true);
    Ok(log)
}
