//! The bottom layer: what every other layer may use, and which uses nothing above it. Errors
//! and their one mapping to HTTP, metrics, durations, IO wrappers, JOSE algorithms and keys,
//! certificates and TLS configurations, claim policies.

pub mod allowance;
pub mod duration;
pub mod error;
pub mod identity_text;
pub mod io;
pub mod ipnet;
pub mod jose;
pub mod metrics;
pub mod policy;
pub mod tls;
pub mod token_error;
