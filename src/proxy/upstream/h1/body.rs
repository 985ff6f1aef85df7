//! The lean HTTP/1.1 client's response body (`LeanBody`): read off the socket as it is polled, chunked framing decoded strictly, and the connection given back only at the body's exact end with nothing after it.

use super::Pools;
use crate::proxy::upstream::h1::conn::Conn;
use crate::proxy::upstream::h1::framing::decode_chunked;
use crate::proxy::upstream::h1::framing::Decoded;
use crate::proxy::upstream::h1::framing::Framing;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// The response body, read from the connection as it is polled. At its exact end the connection
/// goes back to the pool; dropped before that, the connection is closed.
pub struct LeanBody {
    pub(crate) conn: Option<Conn>,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) pools: Arc<Pools>,
    /// When the exchange began: a body read in the first poll (nearly all of them) dates the
    /// connection's return to the pool from here, with no clock read; a longer one reads the clock.
    pub(crate) started: tokio::time::Instant,
    pub(crate) polled: bool,
}

impl LeanBody {
    pub fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.keep_alive && conn.buffer.is_empty() && conn.has_nothing_buffered() {
                let now = if self.polled {
                    tokio::time::Instant::now()
                } else {
                    self.started
                };
                self.pools.put_lean(conn, now);
            }
        }
    }

    /// Drops the connection: the body will not be read to its end.
    pub(crate) fn forfeit(&mut self) {
        self.framing = Framing::Done;
        self.conn = None;
    }

    pub(crate) fn broken(
        &mut self,
        why: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.forfeit();
        Poll::Ready(Some(Err(BodyError(why))))
    }
}

/// The backend's body broke off or was malformed; the client's response is cut short.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body: {0}")]
pub struct BodyError(&'static str);

impl Body for LeanBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let result = this.poll_body(cx);
        this.polled = true;
        result
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl LeanBody {
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) => {
                    if !conn.buffer.is_empty() {
                        let take = conn
                            .buffer
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        *remaining -= take as u64;
                        let data = conn.buffer.split_to(take).freeze();
                        if *remaining == 0 {
                            // hyper may not poll again once it has the declared length.
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::UntilClose => {
                    if !conn.buffer.is_empty() {
                        let data = conn.buffer.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx)) {
                        Ok(true) => continue,
                        Ok(false) => {
                            self.keep_alive = false;
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Err(_) => return self.broken("the connection broke"),
                    }
                }
                Framing::Chunked(state) => match decode_chunked(state, &mut conn.buffer) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End(trailers)) => {
                        self.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(why) => return self.broken(why),
                },
            }
            // The buffer holds nothing usable: read more.
            match ready!(conn.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => return self.broken("the backend closed before the end of the body"),
                Err(_) => return self.broken("the connection broke"),
            }
        }
    }
}
