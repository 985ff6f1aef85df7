//! The lean upstream client's response reader (src/proxy/upstream/h1/): heads, framing and the
//! chunked decoder, on whatever a backend might send. The first byte picks the piece size the
//! bytes arrive in and whether the request was HEAD; the rest is the response.
//!
//! Invariants: no panic; the answer does not depend on how the bytes were split; a body is never
//! longer than the input; a chunked body decodes to the same bytes when re-encoded; a response
//! with bytes after its end is never reusable.

#![no_main]

use authgate::upstream::h1::read_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, response)) = data.split_first() else {
        return;
    };
    let head_request = control & 0x80 != 0;
    let piece = usize::from(control & 0x7f) + 1;
    let whole = read_response(response, head_request, usize::MAX);
    let split = read_response(response, head_request, piece);
    assert_eq!(whole, split, "split into pieces of {piece}");
    let Ok(read) = whole else {
        return;
    };
    assert!(read.body.len() <= response.len());
    assert!(
        read.leftover == 0 || !read.reusable,
        "bytes after the end, yet reusable"
    );
    assert!(head_request || read.status >= 200, "a final status");
    let chunked = response
        .windows(b"transfer-encoding".len())
        .any(|window| window.eq_ignore_ascii_case(b"transfer-encoding"));
    if chunked && !read.body.is_empty() {
        let mut again = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        again.extend_from_slice(format!("{:x}\r\n", read.body.len()).as_bytes());
        again.extend_from_slice(&read.body);
        again.extend_from_slice(b"\r\n0\r\n\r\n");
        let reread = read_response(&again, false, piece).expect("a re-encoded body reads back");
        assert_eq!(reread.body, read.body);
    }
});
