//! The proxy: the pipeline that runs the request decisions in order, the request and response
//! bodies, the WebSocket splice, the upstream clients, and the JWKS fetcher.

pub(crate) mod body;
pub(crate) mod fetch;
pub mod jwks;
pub(crate) mod lifetime;
pub mod pipeline;
pub(crate) mod revocation_sync;
pub mod session;
pub mod store;
pub(crate) mod stream;
pub mod upstream;
