//! Integration tests: the real gateway and real backends on 127.0.0.1 sockets. Each test asserts
//! both the answer and what the backend actually received (or that it received nothing).

mod common;

mod better_auth;
mod compose;
mod config_errors;
mod cors;
mod crud;
mod decision_tests;
mod hardening;
mod identity_headers;
mod jwks;
mod keepalive;
mod keys;
mod layering;
mod lenient_backend;
mod operations;
mod owner_rule;
mod policy;
mod properties;
mod rate_limits;
mod redis_server;
mod request_targets;
mod routing;
mod shared_store;
mod streaming;
mod tokens;
mod upstream_failures;
mod upstream_framing;
mod upstream_pool;
// TLS (issue 6), last to keep merges simple.
mod tls;
