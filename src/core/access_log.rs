//! The JSON access log: one line per request, written without the general logging machinery.
//!
//! Why not a `tracing` event: formatting one through the JSON layer visits every field through
//! `dyn` formatting, writes floats with every digit, allocates, and hands each line to the writer
//! thread on its own. Here each serving thread appends the line to a buffer of its own (an
//! uncontended lock), formatting integers directly; a writer thread takes the buffers every
//! `FLUSH_EVERY`, or sooner when one fills, and writes them out in line-aligned pieces that the
//! kernel keeps whole (`Sink`), so lines never interleave with the other log lines on the same
//! stream.
//!
//! The line has the fields, order and values of the `tracing` line it replaces (`timestamp`,
//! `level`, `message`, the request fields, `target`), with times in milliseconds to the
//! microsecond and `upstream_ms` `null` when no upstream was asked. Logging never blocks a
//! request: when the writer falls behind by `MAX_PENDING_BYTES` on a thread, that thread's new
//! lines are dropped and counted.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a line may wait in a quiet thread's buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full wakes the writer.
const WAKE_AT_BYTES: usize = 32 * 1024;
/// A thread's lines are dropped past this much unwritten text.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;
/// Writes to a pipe up to this size are atomic (POSIX `PIPE_BUF`), so other writers' lines cannot
/// land inside ours.
const ATOMIC_WRITE_BYTES: usize = 4096;
/// One write to a regular file is never split by other writes (Linux moves the file offset and
/// copies the data under a lock), so there a piece can be as large as a whole buffer; the bound
/// keeps one system call short.
const FILE_WRITE_BYTES: usize = 256 * 1024;

/// One request, as logged.
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub reason: &'a str,
    pub user: &'a str,
    pub upstream: Option<Duration>,
    pub total: Duration,
}

struct ThreadBuffer {
    lines: Vec<u8>,
    /// The `"timestamp":"YYYY-MM-DDTHH:MM:SS.` text of `second`, reused within that second.
    second: u64,
    stamp: Vec<u8>,
}

struct Shared {
    buffers: Mutex<Vec<Arc<Mutex<ThreadBuffer>>>>,
    wake: Mutex<bool>,
    woken: Condvar,
    stop: AtomicBool,
}

static LOG: OnceLock<Arc<Shared>> = OnceLock::new();

thread_local! {
    static BUFFER: Arc<Mutex<ThreadBuffer>> = {
        let buffer = Arc::new(Mutex::new(ThreadBuffer {
            lines: Vec::with_capacity(WAKE_AT_BYTES * 2),
            second: u64::MAX,
            stamp: Vec::with_capacity(48),
        }));
        if let Some(shared) = LOG.get() {
            shared
                .buffers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(buffer.clone());
        }
        buffer
    };
}

/// How long exit waits for the last lines: a reader that stopped reading must not keep the
/// process from ending.
const EXIT_FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Stops the writer and writes what is left when dropped (at exit), waiting at most
/// `EXIT_FLUSH_WAIT`.
pub struct AccessLogGuard {
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Drop for AccessLogGuard {
    fn drop(&mut self) {
        if let Some(shared) = LOG.get() {
            shared.stop.store(true, Ordering::Release);
            *shared.wake.lock().unwrap_or_else(PoisonError::into_inner) = true;
            shared.woken.notify_one();
        }
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(EXIT_FLUSH_WAIT);
        }
    }
}

/// Where the lines go, and the largest piece one write may carry there.
pub struct Sink {
    out: Box<dyn Write + Send>,
    piece: usize,
}

impl Sink {
    /// Standard error: whole buffers at a time when it is a regular file, pieces of at most
    /// `PIPE_BUF` otherwise (a pipe, as under a container runtime, a terminal, a socket).
    pub fn stderr() -> Sink {
        use std::os::fd::AsFd;
        let stderr = std::io::stderr();
        let piece = stderr
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_or(ATOMIC_WRITE_BYTES, |file| write_piece_for(&file));
        Sink {
            out: Box::new(stderr),
            piece,
        }
    }
}

/// `FILE_WRITE_BYTES` for a regular file, `ATOMIC_WRITE_BYTES` for anything else or when unsure.
fn write_piece_for(file: &std::fs::File) -> usize {
    match file.metadata() {
        Ok(meta) if meta.file_type().is_file() => FILE_WRITE_BYTES,
        _ => ATOMIC_WRITE_BYTES,
    }
}

/// Sends access lines to `sink` from now on (once per process; later calls change nothing).
pub fn start(sink: Sink) -> AccessLogGuard {
    let shared = Arc::new(Shared {
        buffers: Mutex::new(Vec::new()),
        wake: Mutex::new(false),
        woken: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    if LOG.set(shared.clone()).is_err() {
        return AccessLogGuard { done: None };
    }
    let (finished, done) = std::sync::mpsc::channel();
    let started = std::thread::Builder::new()
        .name("authgate-access-log".into())
        .spawn(move || {
            write_loop(&shared, sink);
            let _ = finished.send(());
        });
    AccessLogGuard {
        done: started.ok().map(|_| done),
    }
}

/// Whether `start` was called: otherwise the caller logs through `tracing`.
pub fn is_started() -> bool {
    LOG.get().is_some()
}

/// Lines dropped because the writer fell behind, for `/metrics`.
pub(crate) static DROPPED_LINES: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

/// Appends one line to this thread's buffer.
pub fn record(record: &AccessRecord<'_>) {
    let Some(shared) = LOG.get() else { return };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let full = BUFFER.with(|buffer| {
        let mut buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
        if buffer.lines.len() > MAX_PENDING_BYTES {
            DROPPED_LINES.inc();
            return false;
        }
        let ThreadBuffer {
            lines,
            second,
            stamp,
        } = &mut *buffer;
        format_line(lines, second, stamp, now, record);
        lines.len() >= WAKE_AT_BYTES
    });
    if full {
        *shared.wake.lock().unwrap_or_else(PoisonError::into_inner) = true;
        shared.woken.notify_one();
    }
}

fn write_loop(shared: &Shared, mut sink: Sink) {
    let mut spare = Vec::with_capacity(WAKE_AT_BYTES * 2);
    loop {
        {
            let woken = shared.wake.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut woken, _) = shared
                .woken
                .wait_timeout_while(woken, FLUSH_EVERY, |woken| !*woken)
                .unwrap_or_else(PoisonError::into_inner);
            *woken = false;
        }
        let stopping = shared.stop.load(Ordering::Acquire);
        let buffers: Vec<_> = shared
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for buffer in buffers {
            {
                let mut buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
                if buffer.lines.is_empty() {
                    continue;
                }
                std::mem::swap(&mut buffer.lines, &mut spare);
            }
            write_lines(&mut *sink.out, &spare, sink.piece);
            spare.clear();
        }
        let _ = sink.out.flush();
        if stopping {
            return;
        }
    }
}

/// Writes whole lines in pieces of at most `piece` bytes (a longer line alone).
fn write_lines(sink: &mut dyn Write, mut lines: &[u8], piece: usize) {
    while !lines.is_empty() {
        let window = &lines[..lines.len().min(piece)];
        let end = match window.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) if lines.len() > piece => last_newline + 1,
            _ if lines.len() <= piece => lines.len(),
            // One line longer than the window: up to its end.
            _ => lines
                .iter()
                .position(|&b| b == b'\n')
                .map_or(lines.len(), |newline| newline + 1),
        };
        if sink.write_all(&lines[..end]).is_err() {
            return;
        }
        lines = &lines[end..];
    }
}

fn format_line(
    out: &mut Vec<u8>,
    second: &mut u64,
    stamp: &mut Vec<u8>,
    now: Duration,
    record: &AccessRecord<'_>,
) {
    if now.as_secs() != *second {
        *second = now.as_secs();
        stamp.clear();
        stamp.extend_from_slice(b"{\"timestamp\":\"");
        write_date_time(stamp, *second);
        stamp.push(b'.');
    }
    let mut integers = itoa::Buffer::new();
    out.extend_from_slice(stamp);
    let micros = now.subsec_micros();
    out.extend_from_slice(&[
        b'0' + (micros / 100_000) as u8,
        b'0' + (micros / 10_000 % 10) as u8,
        b'0' + (micros / 1_000 % 10) as u8,
        b'0' + (micros / 100 % 10) as u8,
        b'0' + (micros / 10 % 10) as u8,
        b'0' + (micros % 10) as u8,
    ]);
    out.extend_from_slice(b"Z\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":\"");
    escape_into(out, record.request_id);
    out.extend_from_slice(b"\",\"client_ip\":\"");
    write_ip(out, record.client_ip);
    out.extend_from_slice(b"\",\"method\":\"");
    escape_into(out, record.method);
    out.extend_from_slice(b"\",\"path\":\"");
    escape_into(out, record.path);
    out.extend_from_slice(b"\",\"route\":\"");
    escape_into(out, record.route);
    out.extend_from_slice(b"\",\"status\":");
    out.extend_from_slice(integers.format(record.status).as_bytes());
    out.extend_from_slice(b",\"reason\":\"");
    escape_into(out, record.reason);
    out.extend_from_slice(b"\",\"user\":\"");
    escape_into(out, record.user);
    out.extend_from_slice(b"\",\"upstream_ms\":");
    match record.upstream {
        Some(upstream) => write_millis(out, upstream),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"total_ms\":");
    write_millis(out, record.total);
    out.extend_from_slice(b",\"target\":\"authgate::access\"}\n");
}

/// A duration as milliseconds with three decimals (`12.345`), or `-` when there is none: the
/// same numbers in `tracing`'s human-readable lines.
pub struct Millis(pub Option<Duration>);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(duration) => {
                let mut text = Vec::with_capacity(16);
                write_millis(&mut text, duration);
                f.write_str(std::str::from_utf8(&text).unwrap_or("?"))
            }
            None => f.write_str("-"),
        }
    }
}

/// An IP address as `Display` writes it; IPv4, the common case, without `core::fmt`.
fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut integers = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(integers.format(octet).as_bytes());
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Milliseconds with three decimals (microseconds): `12.345`.
fn write_millis(out: &mut Vec<u8>, duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let mut integers = itoa::Buffer::new();
    out.extend_from_slice(integers.format(micros / 1000).as_bytes());
    let fraction = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ]);
}

/// Bytes a JSON string cannot hold as they are: control characters, DEL, `"` and `\`. One table
/// lookup per byte: every field of every access-log line goes through here.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] =
            byte < 0x20 || byte == 0x7f || byte == b'"' as usize || byte == b'\\' as usize;
        byte += 1;
    }
    table
};

/// Whether one of the eight bytes of `word` is below 0x20, `"`, `\\` or DEL (exact for bytes below
/// 0x80; a byte of 0x80 or more is never flagged, and never needs escaping).
fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space
        | has_zero(word ^ (ONES * u64::from(b'"')))
        | has_zero(word ^ (ONES * u64::from(b'\\')))
        | has_zero(word ^ (ONES * 0x7f))
        != 0
}

/// A JSON string's contents: quotes, backslashes and control characters escaped; other text,
/// UTF-8 included, as is (copied in runs between the bytes that need escaping).
fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Eight bytes at a time (a short tail padded with a byte that needs nothing) up to the first
    // word that may hold one to escape: most fields have none, and are copied in one piece.
    let mut clean = 0;
    while clean < bytes.len() {
        let take = (bytes.len() - clean).min(8);
        let mut word = [b'a'; 8];
        word[..take].copy_from_slice(&bytes[clean..clean + take]);
        if may_need_escape(u64::from_le_bytes(word)) {
            break;
        }
        clean += take;
    }
    out.extend_from_slice(&bytes[..clean]);
    if clean == bytes.len() {
        return;
    }
    let mut run_start = clean;
    for (at, &b) in bytes.iter().enumerate().skip(clean) {
        if !NEEDS_ESCAPE[usize::from(b)] {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..at]);
        run_start = at + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for a unix time.
pub(crate) fn write_date_time(out: &mut Vec<u8>, unix: u64) {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let seconds = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(record: &AccessRecord<'_>, now: Duration) -> String {
        let mut out = Vec::new();
        let (mut second, mut stamp) = (u64::MAX, Vec::new());
        format_line(&mut out, &mut second, &mut stamp, now, record);
        String::from_utf8(out).unwrap()
    }

    fn record<'a>(user: &'a str, upstream: Option<Duration>) -> AccessRecord<'a> {
        AccessRecord {
            request_id: "81f3f08422a193a4-000000000000",
            client_ip: "2001:db8::1".parse().unwrap(),
            method: "GET",
            path: "/api/alice/tasks",
            route: "/api/{user_id}/tasks",
            status: 200,
            reason: "-",
            user,
            upstream,
            total: Duration::from_micros(12_345),
        }
    }

    #[test]
    fn a_line_is_the_json_the_tracing_line_was_with_tidy_numbers() {
        let now = Duration::new(1_796_457_600, 870_058_000);
        let text = line(&record("alice", Some(Duration::from_nanos(489_367))), now);
        assert_eq!(
            text,
            "{\"timestamp\":\"2026-12-05T08:00:00.870058Z\",\"level\":\"INFO\",\"message\":\"request\",\
             \"request_id\":\"81f3f08422a193a4-000000000000\",\"client_ip\":\"2001:db8::1\",\
             \"method\":\"GET\",\"path\":\"/api/alice/tasks\",\"route\":\"/api/{user_id}/tasks\",\
             \"status\":200,\"reason\":\"-\",\"user\":\"alice\",\"upstream_ms\":0.489,\
             \"total_ms\":12.345,\"target\":\"authgate::access\"}\n"
        );
        let refused = line(&record("-", None), now);
        let parsed: serde_json::Value = serde_json::from_str(&refused).unwrap();
        assert!(parsed["upstream_ms"].is_null());
        assert_eq!(parsed["total_ms"], 12.345);
    }

    #[test]
    fn whatever_a_user_id_holds_the_line_stays_one_json_object() {
        for user in [
            "a\"b",
            "back\\slash",
            "new\nline",
            "\u{1}\u{7f}",
            "ünï",
            "\"}\n{\"x\":1",
        ] {
            let text = line(&record(user, None), Duration::from_secs(0));
            assert_eq!(text.matches('\n').count(), 1, "{text}");
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed["user"], user);
        }
    }

    #[test]
    fn a_character_to_escape_is_found_at_any_position() {
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}'] {
            for at in 0..24 {
                for filler in ['a', 'é', '~', ' '] {
                    let mut piece: String = std::iter::repeat_n(filler, 24).collect();
                    let index = piece.char_indices().nth(at).map(|(i, _)| i).unwrap();
                    piece.insert(index, special);
                    let mut out = b"\"".to_vec();
                    escape_into(&mut out, &piece);
                    out.push(b'"');
                    let back: String = serde_json::from_slice(&out)
                        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out)));
                    assert_eq!(back, piece);
                }
            }
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.201.99.255",
            "::1",
            "2001:db8::8:800:200c:417a",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn every_character_escapes_to_json_that_reads_back_the_same() {
        let mut text: String = (0u8..=127).map(char::from).collect();
        text.push_str("ünï\u{2028}end\"");
        for piece in [text.as_str(), "", "plain", "\"", "a\\", "\u{0}x"] {
            let mut out = b"\"".to_vec();
            escape_into(&mut out, piece);
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, piece);
        }
    }

    #[test]
    fn lines_are_written_in_whole_pieces_of_at_most_a_pipe_buffer() {
        struct Pieces(Vec<Vec<u8>>);
        impl Write for Pieces {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut lines = Vec::new();
        for n in 0..500 {
            lines.extend_from_slice(format!("{{\"n\":{n}}}\n").as_bytes());
        }
        lines.extend_from_slice(&[b'x'; 5000]);
        lines.push(b'\n');
        let mut pieces = Pieces(Vec::new());
        write_lines(&mut pieces, &lines, ATOMIC_WRITE_BYTES);
        assert_eq!(pieces.0.concat(), lines);
        for piece in &pieces.0 {
            assert!(piece.ends_with(b"\n"));
            assert!(
                piece.len() <= ATOMIC_WRITE_BYTES || !piece[..piece.len() - 1].contains(&b'\n')
            );
        }
        let mut whole = Pieces(Vec::new());
        write_lines(&mut whole, &lines, FILE_WRITE_BYTES);
        assert_eq!(whole.0, vec![lines]);
    }

    #[test]
    fn a_regular_file_takes_whole_buffers_and_a_pipe_pipe_sized_pieces() {
        let dir = std::env::temp_dir().join(format!("authgate-sink-{}", std::process::id()));
        let file = std::fs::File::create(&dir).unwrap();
        assert_eq!(write_piece_for(&file), FILE_WRITE_BYTES);
        drop(file);
        std::fs::remove_file(&dir).unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let writer = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        assert_eq!(write_piece_for(&writer), ATOMIC_WRITE_BYTES);
        drop(reader);
    }
}
