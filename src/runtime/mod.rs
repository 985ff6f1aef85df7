//! The runtime: worker threads, accepting connections (TCP and TLS), protocol detection,
//! keep-alive and HTTP/2 rules, the redirect and admin listeners, reloads, placement and memory.

pub mod admin;
pub(crate) mod detect;
pub(crate) mod handoff;
pub(crate) mod http2;
pub mod keepalive;
pub mod live;
pub mod memory;
pub(crate) mod placement;
pub mod redirect;
pub mod server;
pub mod tls;
pub mod workers;
