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
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(admin) = raw.map(Spanned::get_ref) else {
        return Ok(None);
    };
    admin.listen.get_ref().parse().map(Some).map_err(|_| {
        ctx.error(
            &admin.listen,
            "admin.listen",
            "expected a socket address such as \"127.0.0.1:9090\"",
        )
    })
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
