//! Which protocol a plain connection speaks: its first bytes are peeked, the HTTP/2 preface means h2c, anything else HTTP/1.

use crate::runtime::keepalive::drained;
use std::time::Duration;

/// The HTTP/2 connection preface; a plain connection that starts with it speaks h2c.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(crate) enum FirstBytes {
    Http1,
    /// Starts like the h2 preface (or is too short to tell): hyper-util's auto builder decides.
    MaybeHttp2,
    /// Closed, idle too long, or the gateway is draining: nothing to serve.
    None,
}

/// Waits (without a buffer) for a new plain connection's first bytes and peeks at them to choose
/// the protocol. A client that sends nothing within `wait` is closed, as an idle keep-alive one is.
pub(crate) async fn first_bytes(
    stream: &tokio::net::TcpStream,
    wait: Duration,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> FirstBytes {
    let mut head = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        biased;
        () = drained(draining) => return FirstBytes::None,
        peeked = tokio::time::timeout(wait, stream.peek(&mut head)) => peeked,
    };
    match peeked {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => FirstBytes::None,
        Ok(Ok(n)) if H2_PREFACE.starts_with(&head[..n]) => FirstBytes::MaybeHttp2,
        Ok(Ok(_)) => FirstBytes::Http1,
    }
}
