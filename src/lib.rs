//! authgate: a strict reverse-proxy authorization gateway.
//!
//! The binary is a thin CLI over this library; the integration tests drive the same library over
//! real sockets. `pipeline` is where to start reading.

pub mod admin;
pub mod auth;
pub mod authz;
pub mod body;
pub mod config;
pub mod cors;
pub mod demo_backend;
pub mod error;
pub mod forwarded;
pub mod headers;
pub mod identity_text;
pub mod json_scan;
pub mod keepalive;
pub mod live;
pub mod memory;
pub mod method_override;
pub mod metrics;
pub mod multipart;
pub mod pipeline;
pub mod placement;
pub mod policy;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod stream;
pub mod target;
pub mod tls;
pub mod token;
pub mod upstream;
