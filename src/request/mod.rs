//! Per-request decisions, without I/O: the request-target, the route, header hygiene, the
//! client address, authentication and authorization, CORS, rate limits and method overrides.
//! Each takes what the request carries and the compiled config, and answers.

pub mod auth;
pub mod authz;
pub mod cors;
pub mod csrf;
pub(crate) mod forwarded;
pub mod headers;
pub mod method_override;
pub(crate) mod names;
pub mod ratelimit;
pub mod revocation;
pub mod routes;
pub mod target;
