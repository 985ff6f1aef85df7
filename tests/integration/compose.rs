//! Placeholder: the compose checks are being written.
