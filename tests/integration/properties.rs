//! Placeholder: the property tests are being written.
