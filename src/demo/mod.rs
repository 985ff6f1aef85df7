//! Bundled demo "task backend".
//!
//! A stand-in for a user's FastAPI service that trusts the `X-User-Id`
//! header set by the gateway. It keeps an in-memory, per-user task store and
//! speaks HTTP/1.1 and h2c (prior knowledge) on the same listener.
//!
//! Even though it trusts the gateway, it still applies defense in depth on
//! every `/api/...` route: a missing `X-User-Id` is rejected with 401 and an
//! identity that differs from the `{user_id}` path segment with 403.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Maximum accepted request body size (1 MiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Pause after a failed `accept()` (e.g. EMFILE) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Name of the identity header injected by the gateway.
const USER_ID_HEADER: &str = "x-user-id";

type ResponseBody = Full<Bytes>;

/// Serves the task API on an already-bound listener until the future is dropped.
///
/// Each connection runs on its own tokio task; dropping this future also
/// aborts all connections it spawned.
pub async fn serve(listener: tokio::net::TcpListener) {
    let store = SharedStore::default();
    let mut connections = tokio::task::JoinSet::new();

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let store = store.clone();
                    connections.spawn(serve_connection(stream, peer, store));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "task-backend: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    store: SharedStore,
) {
    let service = hyper::service::service_fn(move |req| {
        let store = store.clone();
        async move { Ok::<_, Infallible>(handle(req, &store).await) }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(err) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %err, "task-backend: connection ended with error");
    }
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Task {
    id: u64,
    user_id: String,
    title: String,
    description: Option<String>,
    completed: bool,
}

#[derive(Debug)]
struct Store {
    next_id: u64,
    /// Tasks keyed by owner, then by id. Keeping users in separate maps makes
    /// cross-user access structurally impossible.
    by_user: HashMap<String, BTreeMap<u64, Task>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            next_id: 1,
            by_user: HashMap::new(),
        }
    }
}

impl Store {
    fn list(&self, user_id: &str) -> Vec<Task> {
        self.by_user
            .get(user_id)
            .map(|tasks| tasks.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Returns `None` only if the id space is exhausted.
    fn create(&mut self, user_id: &str, new: NewTask) -> Option<Task> {
        let id = self.next_id;
        self.next_id = id.checked_add(1)?;
        let task = Task {
            id,
            user_id: user_id.to_owned(),
            title: new.title,
            description: new.description,
            completed: false,
        };
        self.by_user
            .entry(user_id.to_owned())
            .or_default()
            .insert(id, task.clone());
        Some(task)
    }

    fn get(&self, user_id: &str, id: u64) -> Option<Task> {
        self.by_user.get(user_id)?.get(&id).cloned()
    }

    fn get_mut(&mut self, user_id: &str, id: u64) -> Option<&mut Task> {
        self.by_user.get_mut(user_id)?.get_mut(&id)
    }

    fn update(&mut self, user_id: &str, id: u64, patch: TaskPatch) -> Option<Task> {
        let task = self.get_mut(user_id, id)?;
        if let Some(title) = patch.title {
            task.title = title;
        }
        if let Some(description) = patch.description {
            task.description = description;
        }
        if let Some(completed) = patch.completed {
            task.completed = completed;
        }
        Some(task.clone())
    }

    fn toggle(&mut self, user_id: &str, id: u64) -> Option<Task> {
        let task = self.get_mut(user_id, id)?;
        task.completed = !task.completed;
        Some(task.clone())
    }

    fn delete(&mut self, user_id: &str, id: u64) -> bool {
        let Some(tasks) = self.by_user.get_mut(user_id) else {
            return false;
        };
        let removed = tasks.remove(&id).is_some();
        if tasks.is_empty() {
            self.by_user.remove(user_id);
        }
        removed
    }
}

#[derive(Debug, Clone, Default)]
struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    /// Locks the store, recovering from poisoning (the store has no
    /// invariants a panicking writer could break halfway).
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------
// Pure helpers: path decoding, routing, identity checks, body validation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one path segment. `+` is left alone (it only means space
/// in form-encoded query strings, not in paths).
fn percent_decode(segment: &str) -> Result<String, DecodeError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(DecodeError::BadEscape),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// Splits a request path (without query) on `/` and percent-decodes each
/// segment. The leading `/` is dropped, so `/api/a/tasks` yields
/// `["api", "a", "tasks"]`; a trailing `/` yields a final empty segment.
fn split_path(path: &str) -> Result<Vec<String>, DecodeError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split('/').map(percent_decode).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Tasks { user_id: String },
    Task { user_id: String, task_id: String },
    Complete { user_id: String, task_id: String },
}

impl Route {
    /// The `{user_id}` path segment for `/api/` routes.
    fn user_id(&self) -> Option<&str> {
        match self {
            Route::Health => None,
            Route::Tasks { user_id }
            | Route::Task { user_id, .. }
            | Route::Complete { user_id, .. } => Some(user_id),
        }
    }

    fn task_id(&self) -> Option<&str> {
        match self {
            Route::Task { task_id, .. } | Route::Complete { task_id, .. } => Some(task_id),
            Route::Health | Route::Tasks { .. } => None,
        }
    }

    fn allowed_methods(&self) -> &'static [Method] {
        match self {
            Route::Health => &[Method::GET],
            Route::Tasks { .. } => &[Method::GET, Method::POST],
            Route::Task { .. } => &[Method::GET, Method::PUT, Method::DELETE],
            Route::Complete { .. } => &[Method::PATCH],
        }
    }
}

/// Matches decoded path segments against the known routes.
fn match_route(segments: &[String]) -> Option<Route> {
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["health"] => Some(Route::Health),
        ["api", user_id, "tasks"] => Some(Route::Tasks {
            user_id: (*user_id).to_owned(),
        }),
        ["api", user_id, "tasks", task_id] => Some(Route::Task {
            user_id: (*user_id).to_owned(),
            task_id: (*task_id).to_owned(),
        }),
        ["api", user_id, "tasks", task_id, "complete"] => Some(Route::Complete {
            user_id: (*user_id).to_owned(),
            task_id: (*task_id).to_owned(),
        }),
        _ => None,
    }
}

/// Parses a task id path segment: plain ASCII digits only.
fn parse_task_id(segment: &str) -> Option<u64> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdentityError {
    /// No `X-User-Id` header, or an empty one.
    Missing,
    /// More than one `X-User-Id` header: ambiguous, refuse to guess.
    Ambiguous,
    /// `X-User-Id` differs from the `{user_id}` path segment.
    Mismatch,
}

/// Defense in depth: the trusted identity header must be present, unique and
/// equal (byte for byte) to the decoded `{user_id}` path segment.
fn check_identity(headers: &HeaderMap, path_user_id: &str) -> Result<(), IdentityError> {
    let mut values = headers.get_all(USER_ID_HEADER).iter();
    let Some(value) = values.next() else {
        return Err(IdentityError::Missing);
    };
    if values.next().is_some() {
        return Err(IdentityError::Ambiguous);
    }
    if value.as_bytes().is_empty() {
        return Err(IdentityError::Missing);
    }
    if value.as_bytes() != path_user_id.as_bytes() {
        return Err(IdentityError::Mismatch);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NewTask {
    title: String,
    description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TaskPatch {
    title: Option<String>,
    /// `Some(None)` clears the description.
    description: Option<Option<String>>,
    completed: Option<bool>,
}

fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("request body must be a JSON object".to_owned()),
        Err(err) => Err(format!("invalid JSON body: {err}")),
    }
}

fn parse_title(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err("title must be a non-empty string".to_owned()),
    }
}

fn parse_description(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err("description must be a string or null".to_owned()),
    }
}

/// Validates a create body: `{"title": str, "description"?: str|null}`.
fn parse_new_task(body: &[u8]) -> Result<NewTask, String> {
    let map = parse_json_object(body)?;
    let title = match map.get("title") {
        Some(value) => parse_title(value)?,
        None => return Err("title is required".to_owned()),
    };
    let description = match map.get("description") {
        Some(value) => parse_description(value)?,
        None => None,
    };
    Ok(NewTask { title, description })
}

/// Validates an update body; every field is optional. A `null` title or
/// completed flag means "unchanged"; a `null` description clears it.
fn parse_task_patch(body: &[u8]) -> Result<TaskPatch, String> {
    let map = parse_json_object(body)?;
    let title = match map.get("title") {
        None | Some(Value::Null) => None,
        Some(value) => Some(parse_title(value)?),
    };
    let description = match map.get("description") {
        None => None,
        Some(value) => Some(parse_description(value)?),
    };
    let completed = match map.get("completed") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("completed must be a boolean".to_owned()),
    };
    Ok(TaskPatch {
        title,
        description,
        completed,
    })
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-backend", HeaderValue::from_static("task-backend"));
    resp
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, Bytes::from(body)),
        Err(err) => {
            tracing::error!(error = %err, "task-backend: failed to serialize response");
            response(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"detail":"internal error"}"#),
            )
        }
    }
}

fn error_response(status: StatusCode, detail: &str) -> Response<ResponseBody> {
    json_response(status, &json!({ "detail": detail }))
}

fn method_not_allowed(route: &Route) -> Response<ResponseBody> {
    let mut resp = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    let allow = route
        .allowed_methods()
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(ALLOW, value);
    }
    resp
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

/// Reads the whole body, capped at [`MAX_BODY_BYTES`].
async fn read_body<B>(headers: &HeaderMap, body: B) -> Result<Bytes, Response<ResponseBody>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ));
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Err(err) => {
            tracing::debug!(error = %err, "task-backend: failed to read request body");
            Err(error_response(
                StatusCode::BAD_REQUEST,
                "failed to read request body",
            ))
        }
    }
}

async fn handle<B>(req: Request<B>, store: &SharedStore) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = route_request(req, store).await;
    tracing::info!(%method, %path, status = resp.status().as_u16(), "task-backend request");
    resp
}

async fn route_request<B>(req: Request<B>, store: &SharedStore) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let segments = match split_path(req.uri().path()) {
        Ok(segments) => segments,
        Err(_) => {
            return error_response(StatusCode::BAD_REQUEST, "invalid percent-encoding in path")
        }
    };
    let Some(route) = match_route(&segments) else {
        return error_response(StatusCode::NOT_FOUND, "not found");
    };

    // Defense in depth, before anything else on /api/ routes.
    if let Some(user_id) = route.user_id() {
        match check_identity(req.headers(), user_id) {
            Ok(()) => {}
            Err(IdentityError::Missing) => {
                return error_response(StatusCode::UNAUTHORIZED, "missing X-User-Id")
            }
            Err(IdentityError::Ambiguous) => {
                return error_response(StatusCode::BAD_REQUEST, "multiple X-User-Id headers")
            }
            Err(IdentityError::Mismatch) => {
                return error_response(StatusCode::FORBIDDEN, "forbidden")
            }
        }
    }

    if !route.allowed_methods().contains(req.method()) {
        return method_not_allowed(&route);
    }

    let task_id = match route.task_id().map(parse_task_id) {
        None => None,
        Some(Some(id)) => Some(id),
        Some(None) => {
            return error_response(StatusCode::UNPROCESSABLE_ENTITY, "invalid task id");
        }
    };

    let (parts, body) = req.into_parts();
    let method = parts.method;
    let body = if method == Method::POST || method == Method::PUT {
        match read_body(&parts.headers, body).await {
            Ok(bytes) => bytes,
            Err(resp) => return resp,
        }
    } else {
        Bytes::new()
    };

    let not_found = || error_response(StatusCode::NOT_FOUND, "task not found");
    let user_id = route.user_id().unwrap_or_default();

    match (&route, method, task_id) {
        (Route::Health, Method::GET, _) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (Route::Tasks { .. }, Method::GET, _) => {
            let tasks = store.lock().list(user_id);
            json_response(StatusCode::OK, &tasks)
        }
        (Route::Tasks { .. }, Method::POST, _) => {
            let new = match parse_new_task(&body) {
                Ok(new) => new,
                Err(detail) => return error_response(StatusCode::UNPROCESSABLE_ENTITY, &detail),
            };
            let created = store.lock().create(user_id, new);
            match created {
                Some(task) => json_response(StatusCode::CREATED, &task),
                None => error_response(StatusCode::INSUFFICIENT_STORAGE, "task id space exhausted"),
            }
        }
        (Route::Task { .. }, Method::GET, Some(id)) => {
            let task = store.lock().get(user_id, id);
            task.map_or_else(not_found, |t| json_response(StatusCode::OK, &t))
        }
        (Route::Task { .. }, Method::PUT, Some(id)) => {
            let patch = match parse_task_patch(&body) {
                Ok(patch) => patch,
                Err(detail) => return error_response(StatusCode::UNPROCESSABLE_ENTITY, &detail),
            };
            let task = store.lock().update(user_id, id, patch);
            task.map_or_else(not_found, |t| json_response(StatusCode::OK, &t))
        }
        (Route::Task { .. }, Method::DELETE, Some(id)) => {
            let deleted = store.lock().delete(user_id, id);
            if deleted {
                response(StatusCode::NO_CONTENT, Bytes::new())
            } else {
                not_found()
            }
        }
        (Route::Complete { .. }, Method::PATCH, Some(id)) => {
            let task = store.lock().toggle(user_id, id);
            task.map_or_else(not_found, |t| json_response(StatusCode::OK, &t))
        }
        // Unreachable given the method check above, but never panic.
        _ => method_not_allowed(&route),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn percent_decode_plain_and_escapes() {
        assert_eq!(percent_decode("alice").as_deref(), Ok("alice"));
        assert_eq!(percent_decode("a%20b").as_deref(), Ok("a b"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Ok("a/b"));
        assert_eq!(percent_decode("%c3%A9").as_deref(), Ok("é"));
        assert_eq!(percent_decode("a+b").as_deref(), Ok("a+b"));
        assert_eq!(percent_decode("").as_deref(), Ok(""));
    }

    #[test]
    fn percent_decode_rejects_bad_input() {
        assert_eq!(percent_decode("%"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("%2"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("%zz"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("a%g1"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("%ff"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn split_path_decodes_each_segment() {
        assert_eq!(
            split_path("/api/alice/tasks"),
            Ok(segs(&["api", "alice", "tasks"]))
        );
        // An encoded slash stays inside its segment.
        assert_eq!(
            split_path("/api/a%2Fb/tasks"),
            Ok(segs(&["api", "a/b", "tasks"]))
        );
        assert_eq!(
            split_path("/api/alice/tasks/"),
            Ok(segs(&["api", "alice", "tasks", ""]))
        );
        assert_eq!(split_path("/"), Ok(segs(&[""])));
        assert_eq!(split_path("/api/%zz/tasks"), Err(DecodeError::BadEscape));
    }

    #[test]
    fn routes_match() {
        assert_eq!(match_route(&segs(&["health"])), Some(Route::Health));
        assert_eq!(
            match_route(&segs(&["api", "bob", "tasks"])),
            Some(Route::Tasks {
                user_id: "bob".into()
            })
        );
        assert_eq!(
            match_route(&segs(&["api", "bob", "tasks", "7"])),
            Some(Route::Task {
                user_id: "bob".into(),
                task_id: "7".into()
            })
        );
        assert_eq!(
            match_route(&segs(&["api", "bob", "tasks", "7", "complete"])),
            Some(Route::Complete {
                user_id: "bob".into(),
                task_id: "7".into()
            })
        );
        assert_eq!(
            match_route(&segs(&["api", "bob", "tasks", ""]))
                .map(|r| r.task_id().map(str::to_owned)),
            Some(Some(String::new()))
        );
        assert_eq!(match_route(&segs(&["api", "bob"])), None);
        assert_eq!(match_route(&segs(&["api", "bob", "tasks", "", ""])), None);
        assert_eq!(match_route(&segs(&["health", ""])), None);
        assert_eq!(match_route(&segs(&[""])), None);
    }

    #[test]
    fn task_ids() {
        assert_eq!(parse_task_id("1"), Some(1));
        assert_eq!(parse_task_id("0042"), Some(42));
        assert_eq!(parse_task_id(""), None);
        assert_eq!(parse_task_id("+1"), None);
        assert_eq!(parse_task_id("-1"), None);
        assert_eq!(parse_task_id("1a"), None);
        assert_eq!(parse_task_id("99999999999999999999999"), None);
    }

    #[test]
    fn identity_checks() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_identity(&headers, "alice"),
            Err(IdentityError::Missing)
        );
        headers.insert(USER_ID_HEADER, HeaderValue::from_static(""));
        assert_eq!(
            check_identity(&headers, "alice"),
            Err(IdentityError::Missing)
        );
        headers.insert(USER_ID_HEADER, HeaderValue::from_static("alice"));
        assert_eq!(check_identity(&headers, "alice"), Ok(()));
        assert_eq!(
            check_identity(&headers, "bob"),
            Err(IdentityError::Mismatch)
        );
        assert_eq!(
            check_identity(&headers, "Alice"),
            Err(IdentityError::Mismatch)
        );
        headers.append(USER_ID_HEADER, HeaderValue::from_static("alice"));
        assert_eq!(
            check_identity(&headers, "alice"),
            Err(IdentityError::Ambiguous)
        );
    }

    #[test]
    fn body_validation() {
        assert_eq!(
            parse_new_task(br#"{"title":"x"}"#),
            Ok(NewTask {
                title: "x".into(),
                description: None
            })
        );
        assert_eq!(
            parse_new_task(br#"{"title":"x","description":"d"}"#),
            Ok(NewTask {
                title: "x".into(),
                description: Some("d".into())
            })
        );
        assert!(parse_new_task(br#"{}"#).is_err());
        assert!(parse_new_task(br#"{"title":""}"#).is_err());
        assert!(parse_new_task(br#"{"title":5}"#).is_err());
        assert!(parse_new_task(br#"{"title":"x","description":1}"#).is_err());
        assert!(parse_new_task(br#"["title"]"#).is_err());
        assert!(parse_new_task(b"not json").is_err());

        assert_eq!(parse_task_patch(b"{}"), Ok(TaskPatch::default()));
        assert_eq!(
            parse_task_patch(br#"{"description":null,"completed":true}"#),
            Ok(TaskPatch {
                title: None,
                description: Some(None),
                completed: Some(true)
            })
        );
        assert!(parse_task_patch(br#"{"completed":"yes"}"#).is_err());
        assert!(parse_task_patch(b"").is_err());
    }

    fn request(method: Method, path: &str, user: Option<&str>, body: &str) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(user) = user {
            builder = builder.header(USER_ID_HEADER, user);
        }
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("valid test request")
    }

    async fn call(store: &SharedStore, req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let resp = handle(req, store).await;
        assert_eq!(
            resp.headers().get("x-backend").map(|v| v.as_bytes()),
            Some(&b"task-backend"[..])
        );
        assert_eq!(
            resp.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        (status, value)
    }

    #[tokio::test]
    async fn handler_flow_and_isolation() {
        let store = SharedStore::default();
        let (s, v) = call(&store, request(Method::GET, "/health", None, "")).await;
        assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));

        let (s, v) = call(
            &store,
            request(
                Method::POST,
                "/api/alice/tasks",
                Some("alice"),
                r#"{"title":"a"}"#,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(
            v,
            json!({"id": 1, "user_id": "alice", "title": "a", "description": null, "completed": false})
        );

        // Bob cannot see alice's task even via his own path.
        let (s, _) = call(
            &store,
            request(Method::GET, "/api/bob/tasks/1", Some("bob"), ""),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            &store,
            request(Method::DELETE, "/api/bob/tasks/1", Some("bob"), ""),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, v) = call(
            &store,
            request(Method::GET, "/api/alice/tasks/1", Some("bob"), ""),
        )
        .await;
        assert_eq!(
            (s, v),
            (StatusCode::FORBIDDEN, json!({"detail": "forbidden"}))
        );
        let (s, v) = call(&store, request(Method::GET, "/api/alice/tasks", None, "")).await;
        assert_eq!(
            (s, v),
            (
                StatusCode::UNAUTHORIZED,
                json!({"detail": "missing X-User-Id"})
            )
        );

        let (s, v) = call(
            &store,
            request(
                Method::PATCH,
                "/api/alice/tasks/1/complete",
                Some("alice"),
                "",
            ),
        )
        .await;
        assert_eq!((s, v["completed"].clone()), (StatusCode::OK, json!(true)));
        let (s, _) = call(
            &store,
            request(Method::POST, "/api/alice/tasks/1", Some("alice"), ""),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let (s, _) = call(
            &store,
            request(Method::POST, "/api/alice/tasks", Some("alice"), "{}"),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) = call(
            &store,
            request(Method::GET, "/api/al%zzice/tasks", Some("alice"), ""),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, v) = call(
            &store,
            request(Method::DELETE, "/api/alice/tasks/1", Some("alice"), ""),
        )
        .await;
        assert_eq!((s, v), (StatusCode::NO_CONTENT, Value::Null));
        let (s, v) = call(
            &store,
            request(Method::GET, "/api/alice/tasks", Some("alice"), ""),
        )
        .await;
        assert_eq!((s, v), (StatusCode::OK, json!([])));
    }

    #[tokio::test]
    async fn oversized_body_is_rejected() {
        let store = SharedStore::default();
        let big = format!(r#"{{"title":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let (s, _) = call(
            &store,
            request(Method::POST, "/api/alice/tasks", Some("alice"), &big),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
