//! JOSE: the signature algorithms authgate verifies, JWK sets parsed into verifiers, and minting
//! HS* tokens for local testing.

mod algorithm;
mod keys;
pub mod mint;

pub use algorithm::JwsAlgorithm;
pub use keys::{KeySet, Lookup};
