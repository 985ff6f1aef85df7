//! Micro-benchmarks of the per-request hot path, through the public library API only:
//! request-target validation, route lookup, token verification (with and without the
//! verified-token cache, HS256 and EdDSA) and the request header rewrite. The `reference` group
//! times ed25519-dalek alone, the floor under an uncached EdDSA verification.
//!
//! ```sh
//! cargo bench --bench hot_path                                        # full criterion run
//! cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3
//! cargo bench --bench hot_path -- token/                              # one group (a filter)
//! AUTHGATE_BENCH_COUNT_ALLOCS=1 cargo bench --bench hot_path          # allocations per call
//! ```
//!
//! `AUTHGATE_BENCH_COUNT_ALLOCS` is read at compile time (`option_env!`; cargo rebuilds the bench
//! when it changes). Unset, the global allocator below is a plain pass-through to the system
//! allocator (the same malloc Rust uses by default) and the counting code is compiled out, so timing
//! runs pay nothing. Set, the bench prints allocations and bytes per call and does no timing.
//!
//! `Authenticator::verify` is async but awaits only when a remote JWKS must be fetched; none is
//! configured here, so one poll with a no-op waker completes it and the numbers carry no executor
//! overhead. `token/hs256_cached_tokio_block_on` shows what a current-thread tokio `block_on`
//! would add.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use authgate::auth::Authenticator;
use authgate::config::Config;
use authgate::headers::{ClientInfo, Forwarding, HeaderPolicy};
use authgate::routes::RouteTable;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{BatchSize, Criterion};
use ed25519_dalek::{Signer, Verifier};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

// ---------------------------------------------------------------------------------------------
// Allocation counting (compiled in only with AUTHGATE_BENCH_COUNT_ALLOCS set at build time).

const COUNT_ALLOCS: bool = option_env!("AUTHGATE_BENCH_COUNT_ALLOCS").is_some();

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`; the counters have no effect on memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_ALLOCS {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNT_ALLOCS {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNT_ALLOCS {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A fixed clock, so the tokens never expire during a run.
const NOW: u64 = 1_700_000_000;
const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

const UPSTREAM_AND_AUTH: &str = r#"
[upstream]
url = "http://127.0.0.1:8000"

[auth]
algorithms = ["HS256"]
secret_env = "BETTER_AUTH_SECRET"
"#;

/// The routes of gateway.toml followed by a dozen more of the kind a task/project app has.
const ROUTES: &str = r#"
[[route]]
path = "/health"
auth = "public"
methods = ["GET", "HEAD"]

[[route]]
path = "/api/{user_id}/tasks"
methods = ["GET", "POST"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/tasks/{*rest}"
owner = "user_id"

[[route]]
path = "/api/auth/{*rest}"
auth = "public"

[[route]]
path = "/api/{user_id}/profile"
methods = ["GET", "PUT", "PATCH"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/projects"
methods = ["GET", "POST"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/projects/{project_id}"
methods = ["GET", "PUT", "PATCH", "DELETE"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/projects/{project_id}/members"
methods = ["GET", "POST", "DELETE"]
owner = "user_id"
owner_bypass = { role = ["admin"] }

[[route]]
path = "/api/{user_id}/notifications"
methods = ["GET", "DELETE"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/settings"
methods = ["GET", "PUT"]
owner = "user_id"
body_owner_fields = ["user_id", "userId"]

[[route]]
path = "/api/admin/users"
methods = ["GET"]
require = { role = ["admin", "support"] }

[[route]]
path = "/api/admin/users/{id}"
methods = ["GET", "PATCH", "DELETE"]
require = { role = ["admin"] }

[[route]]
path = "/api/search"
methods = ["GET"]
auth = "optional"

[[route]]
path = "/api/teams/{team_id}/members"
methods = ["GET"]
require = { emailVerified = true }

[[route]]
path = "/api/webhooks/{provider}"
methods = ["POST"]
auth = "public"

[[route]]
path = "/docs/{*rest}"
auth = "public"
methods = ["GET", "HEAD"]
"#;

fn env(_name: &str) -> Option<String> {
    Some(SECRET.to_string())
}

fn parse(toml: &str) -> Config {
    Config::parse(toml, "bench.toml", &env).unwrap_or_else(|err| panic!("bench config: {err}"))
}

fn route_config() -> Config {
    parse(&format!("{UPSTREAM_AND_AUTH}{ROUTES}"))
}

/// A claims set shaped like a Better Auth JWT plugin token.
fn claims(iss_aud: bool) -> String {
    let mut claims = format!(
        r#"{{"sub":"alice","id":"alice","name":"Alice Example","email":"alice@example.com","emailVerified":true,"image":null,"role":"user","createdAt":"2026-01-02T03:04:05.000Z","updatedAt":"2026-11-20T10:11:12.000Z","iat":{},"exp":{}"#,
        NOW - 60,
        NOW + 840
    );
    if iss_aud {
        claims.push_str(r#","iss":"http://localhost:3000","aud":"http://localhost:3000""#);
    }
    claims.push('}');
    claims
}

fn hs256_token() -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(false))
    );
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("HS256 signing");
    format!("{signing_input}.{signature}")
}

fn hs256_authenticator(cache: bool) -> Authenticator {
    let cache_size = if cache { "" } else { "token_cache_size = 0\n" };
    let config = parse(&format!("{UPSTREAM_AND_AUTH}{cache_size}"));
    Authenticator::new(&config.auth)
}

/// An EdDSA token and an authenticator that reads the matching public key from a `jwks_file`.
struct EdDsa {
    token: String,
    cached: Authenticator,
    uncached: Authenticator,
    key: ed25519_dalek::SigningKey,
}

fn eddsa() -> EdDsa {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"k","alg":"EdDSA","use":"sig"}}]}}"#,
        URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
    );
    let path =
        std::env::temp_dir().join(format!("authgate-bench-{}.jwks.json", std::process::id()));
    std::fs::write(&path, jwks).expect("write the temporary JWKS file");
    let authenticator = |cache_size: &str| {
        let toml = format!(
            "[upstream]\nurl = \"http://127.0.0.1:8000\"\n[auth]\nalgorithms = [\"EdDSA\"]\njwks_file = '{}'\n{cache_size}",
            path.display()
        );
        Authenticator::new(&parse(&toml).auth)
    };
    // The config keeps the file's bytes, so the file is not needed past this point.
    let (cached, uncached) = (authenticator(""), authenticator("token_cache_size = 0"));
    let _ = std::fs::remove_file(&path);

    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(claims(true))
    );
    let signature = key.sign(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    );
    EdDsa {
        token,
        cached,
        uncached,
        key,
    }
}

/// Completes a future that never waits. `verify` awaits only for a remote JWKS, which no bench
/// configures, so one poll finishes it.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("verify waited: the bench must not configure a jwks_url"),
    }
}

fn verify_ok(authenticator: &Authenticator, token: &str) {
    let identity = ready(authenticator.verify(black_box(token), black_box(NOW)))
        .unwrap_or_else(|err| panic!("bench token refused: {err:?}"));
    black_box(identity);
}

/// A browser-ish request with every spoofing attempt the rewrite must undo.
fn request_headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut add = |name: &'static str, value: &str| {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("header value"),
        );
    };
    add("host", "tasks.example.com");
    add(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    );
    add("accept", "application/json, text/plain, */*");
    add("accept-language", "en-US,en;q=0.5");
    add("accept-encoding", "gzip, deflate, br, zstd");
    add("referer", "https://tasks.example.com/alice/board");
    add(
        "cookie",
        "better-auth.session_token=abcdefghijklmnopqrstuvwxyz0123456789.SIGNATURE; theme=dark",
    );
    add("authorization", &format!("Bearer {token}"));
    add("connection", "keep-alive");
    add("x-user-id", "bob");
    add("x_user_id", "bob");
    add("x-forwarded-for", "10.0.0.1");
    add("x-request-id", "7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b");
    add(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    headers
}

struct Rewrite {
    policy: HeaderPolicy,
    client: ClientInfo,
    identity: HeaderValue,
    headers: HeaderMap,
}

fn rewrite_fixture() -> Rewrite {
    let config = route_config();
    let peer: SocketAddr = "203.0.113.7:51234".parse().expect("peer address");
    Rewrite {
        policy: HeaderPolicy::new(&config.auth, std::iter::empty()),
        client: ClientInfo::new(peer, false),
        identity: HeaderValue::from_static("alice"),
        headers: request_headers(&hs256_token()),
    }
}

impl Rewrite {
    fn run(&self, headers: &mut HeaderMap) {
        let forwarding = Forwarding {
            client: &self.client,
            forwarded_for: &self.client.forwarded_for,
            version: Version::HTTP_11,
            authority: None,
            identity: Some(&self.identity),
            claim_headers: &[],
        };
        self.policy
            .rewrite_request(headers, &forwarding)
            .expect("the rewrite accepts the bench request");
    }
}

/// `alice` starts with the same byte as the static `/api/admin` and `/api/auth`, so matchit first
/// tries those, remembering `{user_id}` for backtracking (in a heap-allocated stack); `bob` starts
/// with no static sibling's first byte and goes straight to `{user_id}`.
const HIT: &str = "/api/alice/tasks/42";
const HIT_NO_BACKTRACK: &str = "/api/bob/tasks/42";

const PLAIN: &str = "/api/alice/tasks";
const ENCODED: &str = "/api/al%69ce/tasks/caf%C3%A9";
const WITH_QUERY: &str = "/api/alice/tasks?user_id=alice&status=open&sort=-updatedAt&limit=50";
const DOT_SEGMENT: &str = "/api/alice/../bob/tasks";
const ENCODED_SLASH: &str = "/api/alice%2f..%2fbob/tasks";

// ---------------------------------------------------------------------------------------------
// Timing benches.

fn bench_target(c: &mut Criterion) {
    let mut group = c.benchmark_group("target");
    for (name, target) in [
        ("validate_plain", PLAIN),
        ("validate_encoded", ENCODED),
        ("validate_query", WITH_QUERY),
    ] {
        let uri = Uri::from_static(target);
        authgate::target::validate(&uri, Version::HTTP_11).expect("valid bench target");
        group.bench_function(name, |b| {
            b.iter(|| {
                let target = authgate::target::validate(black_box(&uri), Version::HTTP_11);
                black_box(target.is_ok())
            })
        });
    }
    for (name, path) in [
        ("decode_refused_dot_segment", DOT_SEGMENT),
        ("decode_refused_encoded_slash", ENCODED_SLASH),
    ] {
        authgate::target::decode_path(path).expect_err("refused bench target");
        group.bench_function(name, |b| {
            b.iter(|| black_box(authgate::target::decode_path(black_box(path)).is_err()))
        });
    }
    group.finish();
}

fn bench_routes(c: &mut Criterion) {
    let config = route_config();
    let table = RouteTable::compile(&config.routes).expect("bench routes compile");
    let missing = "/api/alice/archive/2026";
    assert!(table.lookup(&Method::GET, missing).is_err());
    let mut group = c.benchmark_group("route");
    for (name, found) in [
        ("lookup_hit", HIT),
        ("lookup_hit_no_backtrack", HIT_NO_BACKTRACK),
    ] {
        assert!(table.lookup(&Method::GET, found).is_ok());
        group.bench_function(name, |b| {
            b.iter(|| {
                let matched = table.lookup(black_box(&Method::GET), black_box(found));
                black_box(matched.map(|m| m.route.index).ok())
            })
        });
    }
    group.bench_function("lookup_404", |b| {
        b.iter(|| {
            let matched = table.lookup(black_box(&Method::GET), black_box(missing));
            black_box(matched.is_err())
        })
    });
    group.finish();
}

fn bench_tokens(c: &mut Criterion) {
    let hs_token = hs256_token();
    let hs_cached = hs256_authenticator(true);
    let hs_uncached = hs256_authenticator(false);
    let ed = eddsa();
    // Fill the caches (and check every combination verifies).
    verify_ok(&hs_cached, &hs_token);
    verify_ok(&hs_uncached, &hs_token);
    verify_ok(&ed.cached, &ed.token);
    verify_ok(&ed.uncached, &ed.token);

    let mut group = c.benchmark_group("token");
    group.bench_function("hs256_cached", |b| {
        b.iter(|| verify_ok(&hs_cached, &hs_token))
    });
    group.bench_function("hs256_uncached", |b| {
        b.iter(|| verify_ok(&hs_uncached, &hs_token))
    });
    group.bench_function("eddsa_cached", |b| {
        b.iter(|| verify_ok(&ed.cached, &ed.token))
    });
    group.bench_function("eddsa_uncached", |b| {
        b.iter(|| verify_ok(&ed.uncached, &ed.token))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime");
    group.bench_function("hs256_cached_tokio_block_on", |b| {
        b.iter(|| {
            let identity = runtime
                .block_on(hs_cached.verify(black_box(&hs_token), black_box(NOW)))
                .expect("bench token accepted");
            black_box(identity)
        })
    });
    group.finish();

    // The floor under `eddsa_uncached`: ed25519-dalek alone, on the same signing input. The
    // verifier jsonwebtoken builds per call decompresses the public key (`from_bytes`) each time.
    let (signing_input, signature) = ed.token.rsplit_once('.').expect("a compact JWS");
    let signature = ed25519_dalek::Signature::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signature)
            .expect("base64url signature"),
    )
    .expect("a 64-byte signature");
    let public = ed.key.verifying_key().to_bytes();
    let verifying_key = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("public key");
    verifying_key
        .verify(signing_input.as_bytes(), &signature)
        .expect("the reference signature verifies");
    let mut group = c.benchmark_group("reference");
    group.bench_function("ed25519_public_key_from_bytes", |b| {
        b.iter(|| black_box(ed25519_dalek::VerifyingKey::from_bytes(black_box(&public)).is_ok()))
    });
    group.bench_function("ed25519_verify", |b| {
        b.iter(|| {
            black_box(
                verifying_key
                    .verify(black_box(signing_input.as_bytes()), &signature)
                    .is_ok(),
            )
        })
    });
    group.finish();
}

fn bench_headers(c: &mut Criterion) {
    let fixture = rewrite_fixture();
    let mut group = c.benchmark_group("headers");
    group.bench_function("rewrite_request", |b| {
        b.iter_batched(
            || fixture.headers.clone(),
            |mut headers| {
                fixture.run(&mut headers);
                headers
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// What the bench backend (nginx) answers, as the lean upstream client reads it.
const BACKEND_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Mon, 24 Nov 2026 06:00:00 GMT\r\nContent-Type: application/json\r\n\
Content-Length: 42\r\nConnection: keep-alive\r\n\r\n{\"path\":\"/api/alice/tasks\",\"user\":\"alice\"}";

const CHUNKED_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
transfer-encoding: chunked\r\n\r\n14\r\n{\"path\":\"/api/alice/\r\n16\r\ntasks\",\"user\":\"alice\"}\r\n0\r\n\r\n";

fn bench_upstream(c: &mut Criterion) {
    let mut group = c.benchmark_group("upstream");
    for (name, answer) in [
        ("read_response_sized", BACKEND_ANSWER),
        ("read_response_chunked", CHUNKED_ANSWER),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    authgate::upstream::h1::read_response(black_box(answer), false, usize::MAX)
                        .expect("a well-formed answer"),
                )
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Allocation report.

/// Allocations and bytes per call of `f`, averaged over `calls` after a short warm-up.
fn per_call(calls: u64, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..16 {
        f();
    }
    let (allocs, bytes) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..calls {
        f();
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
    let bytes = ALLOC_BYTES.load(Ordering::Relaxed) - bytes;
    (allocs as f64 / calls as f64, bytes as f64 / calls as f64)
}

fn alloc_report() {
    const CALLS: u64 = 1000;
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();

    let uris = [PLAIN, ENCODED, WITH_QUERY].map(Uri::from_static);
    for (name, uri) in [
        "target/validate_plain",
        "target/validate_encoded",
        "target/validate_query",
    ]
    .into_iter()
    .zip(&uris)
    {
        rows.push((
            name,
            per_call(CALLS, || {
                black_box(authgate::target::validate(black_box(uri), Version::HTTP_11).is_ok());
            }),
        ));
    }
    for (name, path) in [
        ("target/decode_refused_dot_segment", DOT_SEGMENT),
        ("target/decode_refused_encoded_slash", ENCODED_SLASH),
    ] {
        rows.push((
            name,
            per_call(CALLS, || {
                black_box(authgate::target::decode_path(black_box(path)).is_err());
            }),
        ));
    }

    let config = route_config();
    let table = RouteTable::compile(&config.routes).expect("bench routes compile");
    for (name, path) in [
        ("route/lookup_hit", HIT),
        ("route/lookup_hit_no_backtrack", HIT_NO_BACKTRACK),
        ("route/lookup_404", "/api/alice/archive/2026"),
    ] {
        rows.push((
            name,
            per_call(CALLS, || {
                black_box(table.lookup(&Method::GET, black_box(path)).is_ok());
            }),
        ));
    }

    let hs_token = hs256_token();
    let hs_cached = hs256_authenticator(true);
    let hs_uncached = hs256_authenticator(false);
    let ed = eddsa();
    for (name, authenticator, token) in [
        ("token/hs256_cached", &hs_cached, &hs_token),
        ("token/hs256_uncached", &hs_uncached, &hs_token),
        ("token/eddsa_cached", &ed.cached, &ed.token),
        ("token/eddsa_uncached", &ed.uncached, &ed.token),
    ] {
        rows.push((name, per_call(CALLS, || verify_ok(authenticator, token))));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime");
    rows.push((
        "token/hs256_cached_tokio_block_on",
        per_call(CALLS, || {
            let identity = runtime
                .block_on(hs_cached.verify(black_box(&hs_token), black_box(NOW)))
                .expect("bench token accepted");
            black_box(identity);
        }),
    ));

    // Fresh maps are cloned beforehand and dropped afterwards, outside the counted calls.
    let fixture = rewrite_fixture();
    let mut fresh: Vec<HeaderMap> = (0..CALLS + 16).map(|_| fixture.headers.clone()).collect();
    let mut maps = fresh.iter_mut();
    rows.push((
        "headers/rewrite_request",
        per_call(CALLS, || {
            fixture.run(maps.next().expect("enough fresh header maps"));
        }),
    ));
    drop(fresh);

    println!(
        "{:<40} {:>12} {:>14}",
        "function", "allocs/call", "bytes/call"
    );
    for (name, (allocs, bytes)) in rows {
        println!("{name:<40} {allocs:>12.2} {bytes:>14.1}");
    }
}

fn main() {
    if COUNT_ALLOCS {
        alloc_report();
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench_target(&mut criterion);
    bench_routes(&mut criterion);
    bench_tokens(&mut criterion);
    bench_headers(&mut criterion);
    bench_upstream(&mut criterion);
    criterion.final_summary();
}
