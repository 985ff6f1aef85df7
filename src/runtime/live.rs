//! The running configuration and its hot reload.
//!
//! The current `Gateway` sits in an `ArcSwap`: each request takes an `Arc` to the gateway of the
//! moment and keeps it until it is done, so a reload never changes the rules under a request in
//! flight, and taking it is one atomic operation, no lock. A reload parses and validates the whole
//! file first; an invalid file changes nothing and is reported with file, line and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::core::metrics::Metrics;
use crate::proxy::pipeline::Gateway;

pub struct Live {
    gateway: ArcSwap<Gateway>,
    metrics: Arc<Metrics>,
    /// The config the process started with: what settings needing a restart are compared with.
    started_with: Config,
}

impl Live {
    pub fn new(config: Config) -> Result<Arc<Live>, ConfigError> {
        let metrics = Metrics::new();
        let gateway = Gateway::with_metrics(&config, metrics.clone(), None)?;
        Ok(Arc::new(Live {
            gateway: ArcSwap::from_pointee(gateway),
            metrics,
            started_with: config,
        }))
    }

    /// The gateway for a new request.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Swaps in a gateway built from `config`, keeping what can be kept (JWKS sources and keys).
    pub(crate) fn apply(&self, config: &Config) -> Result<(), ConfigError> {
        for setting in restart_only_changes(&self.started_with, config) {
            tracing::warn!(
                setting,
                "changed in the config file; it takes effect only after a restart"
            );
        }
        let current = self.gateway.load_full();
        let next = Gateway::with_metrics(config, self.metrics.clone(), Some(&current))?;
        self.gateway.store(Arc::new(next));
        Ok(())
    }

    /// Reloads from `path`: on any error the running config stays in force.
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        self.reload_with(path, &|name| std::env::var(name).ok())
    }

    /// `reload`, resolving secrets with `env`.
    pub fn reload_with(
        &self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let outcome = Config::load_with(path, env).and_then(|config| self.apply(&config));
        match &outcome {
            Ok(()) => tracing::info!(file = %path.display(), "config reloaded"),
            Err(err) => {
                tracing::error!(file = %path.display(), "config reload refused, keeping the running config: {err}")
            }
        }
        self.metrics.record_reload(outcome.is_ok());
        outcome
    }
}

/// Settings read once at start-up (listeners, runtime, per-connection limits).
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let tls_changed = match (&old.server.tls, &new.server.tls) {
        (Some(old), Some(new)) => !old.same_settings(new),
        (old, new) => old.is_some() != new.is_some(),
    };
    let checks: [(&'static str, bool); 12] = [
        ("server.listen", old.server.listen != new.server.listen),
        // Certificate *contents* reload on their own (src/runtime/tls.rs); paths, names, HSTS do not.
        ("server.tls", tls_changed),
        (
            "server.redirect_http",
            old.server.redirect_http != new.server.redirect_http,
        ),
        ("server.workers", old.server.workers != new.server.workers),
        (
            "server.pin_workers",
            old.server.pin_workers != new.server.pin_workers,
        ),
        ("admin.listen", old.admin_listen != new.admin_listen),
        ("log.format", old.log.format != new.log.format),
        (
            "limits.header_read_timeout",
            old.limits.header_read_timeout != new.limits.header_read_timeout,
        ),
        (
            "limits.idle_timeout",
            old.limits.idle_timeout != new.limits.idle_timeout,
        ),
        (
            "limits.max_header_bytes",
            old.limits.max_header_bytes != new.limits.max_header_bytes,
        ),
        (
            "limits.max_connections",
            old.limits.max_connections != new.limits.max_connections,
        ),
        (
            "limits.max_concurrent_streams",
            old.limits.max_concurrent_streams != new.limits.max_concurrent_streams,
        ),
    ];
    for (setting, differs) in checks {
        if differs {
            changed.push(setting);
        }
    }
    changed
}

/// Reloads on SIGHUP, and when the file's modification time or size changes (checked every
/// `poll`). Runs until the task is dropped.
pub async fn watch(live: Arc<Live>, path: PathBuf, poll: Duration) {
    watch_files(vec![path.clone()], poll, move || {
        let _ = live.reload(&path);
    })
    .await
}

/// Calls `changed` on SIGHUP, and whenever any of `files` changes modification time or size
/// (checked every `poll`). Shared by the config and the certificate reloads. Runs until dropped.
pub(crate) async fn watch_files(files: Vec<PathBuf>, poll: Duration, mut changed: impl FnMut()) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        files
            .iter()
            .map(|path: &PathBuf| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    };
    let mut seen = stamp(&files);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let by_signal = tokio::select! {
            () = signalled => true,
            () = tokio::time::sleep(poll) => false,
        };
        let now = stamp(&files);
        if by_signal || now != seen {
            seen = now;
            changed();
        }
    }
}
