//! The bottom layer: what every other layer may use, and which uses nothing above it. Errors
//! and their one mapping to HTTP, metrics, durations, IO wrappers, JOSE algorithms and keys,
//! certificates and TLS configurations, claim policies.

pub mod access_log;
pub(crate) mod allowance;
pub(crate) mod duration;
pub(crate) mod error;
pub(crate) mod identity_text;
pub(crate) mod io;
pub(crate) mod ipnet;
pub mod jose;
pub(crate) mod metrics;
pub(crate) mod policy;
pub mod tls;
pub(crate) mod token_error;
