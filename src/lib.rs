//! authgate: a strict reverse-proxy authorization gateway.
//!
//! The binary is a thin CLI over this library; the integration tests drive the same library over
//! real sockets. `proxy::pipeline` is where to start reading.
//!
//! Layers, bottom up; each imports only itself and the layers below it (tests/integration/
//! layering.rs keeps the rule):
//! `core` -> `config` -> `request` -> `proxy` -> `runtime` -> `demo` -> `tools`, then `main.rs`.

pub mod config;
pub mod core;
pub mod demo;
pub mod proxy;
pub mod request;
pub mod runtime;
pub mod tools;

// The module paths from before the layers, for the tests, benches and fuzz targets.
pub use crate::demo as demo_backend;
pub use crate::proxy::{pipeline, upstream};
pub use crate::request::authz::{json_scan, multipart};
pub use crate::request::{auth, authz, cors, headers, method_override, ratelimit, routes, target};
pub use crate::runtime::{admin, keepalive, live, server, tls};
