//! `[server]`: listen address, workers and their placement, trusted proxies, TLS.

use std::net::SocketAddr;

use super::*;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Tokio worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Bind each worker thread to a CPU of its own when there are exactly as many workers as
    /// CPUs the process may run on (`server::spawn_workers`).
    pub pin_workers: bool,
    /// Peers whose X-Forwarded-For we believe. Empty: we believe nobody.
    pub trusted_proxies: Vec<IpNet>,
    /// `[server.tls]`: TLS on `listen` (see src/runtime/tls.rs).
    pub tls: Option<crate::core::tls::ServerTlsConfig>,
    /// A plain-HTTP listener answering 308 redirects to HTTPS.
    pub redirect_http: Option<SocketAddr>,
}

pub(super) fn validate_server(
    ctx: &Ctx,
    raw: Option<raw::RawServer>,
) -> Result<ServerConfig, ConfigError> {
    let mut server = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        workers: None,
        pin_workers: false,
        trusted_proxies: Vec::new(),
        tls: None,
        redirect_http: None,
    };
    let Some(raw) = raw else { return Ok(server) };
    if let Some(listen) = &raw.listen {
        server.listen = listen.get_ref().parse().map_err(|_| {
            ctx.error(
                listen,
                "server.listen",
                "expected a socket address such as \"127.0.0.1:8080\"",
            )
        })?;
    }
    if let Some(workers) = &raw.workers {
        let count = *workers.get_ref();
        if !(1..=1024).contains(&count) {
            return Err(ctx.error(workers, "server.workers", "must be between 1 and 1024"));
        }
        server.workers = Some(count as usize);
    }
    if let Some(pin) = &raw.pin_workers {
        server.pin_workers = *pin.get_ref();
    }
    for net in raw.trusted_proxies.iter().flatten() {
        let parsed = net.get_ref().parse().map_err(|why| {
            ctx.error(
                net,
                "server.trusted_proxies",
                format!("`{}`: {why}", net.get_ref()),
            )
        })?;
        server.trusted_proxies.push(parsed);
    }
    server.tls = tls::validate_server_tls(ctx, raw.tls.as_ref())?;
    server.redirect_http = tls::validate_redirect(
        ctx,
        raw.redirect_http.as_ref(),
        server.listen,
        server.tls.is_some(),
    )?;
    Ok(server)
}
