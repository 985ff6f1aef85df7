//! The container files checked without a Docker engine: `docker-compose.yml` is parsed as YAML and
//! its promises asserted (only the gateway publishes a port, the backend sits on internal networks
//! only, no secret literal, every referenced file exists), the mounted gateway config is validated
//! by the real binary, the `Dockerfile` and `.dockerignore` are parsed line by line, and both
//! healthcheck scripts are run with bash against real listeners.
//!
//! Each check is a function returning the list of problems it found, so the same function is run
//! on the repository's files (no problems expected) and on broken fixtures (problems expected):
//! a check that cannot fail proves nothing.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_yaml_ng::Value;

const COMPOSE_FILE: &str = "docker-compose.yml";
const DOCKERFILE: &str = "Dockerfile";
const DOCKERIGNORE: &str = ".dockerignore";
const GATEWAY_CONFIG: &str = "deploy/gateway.compose.toml";
const ENV_EXAMPLE: &str = "deploy/.env.example";
const GATEWAY: &str = "gateway";
const BACKEND: &str = "tasks";
const GATEWAY_PORT: u16 = 8080;
const CONFIG_IN_IMAGE: &str = "/etc/authgate/gateway.toml";
const SECRET_ENV: &str = "BETTER_AUTH_SECRET";
const FLEET_FILE: &str = "deploy/compose.fleet.yml";
const FLEET_CONFIG: &str = "deploy/gateway.fleet.toml";
const HAPROXY_CONFIG: &str = "deploy/haproxy.cfg";
const REDIS: &str = "redis";

/// Who is who in a compose file: the one service that publishes a port, and the gateways (the
/// only services that may share a network with the task backend).
struct Topology {
    file: &'static str,
    publisher: &'static str,
    gateways: &'static [&'static str],
}

/// docker-compose.yml: the gateway publishes and is the backend's only neighbour.
const SINGLE: Topology = Topology {
    file: COMPOSE_FILE,
    publisher: GATEWAY,
    gateways: &[GATEWAY],
};

/// deploy/compose.fleet.yml: HAProxy publishes; three replicas reach the backend.
const FLEET: Topology = Topology {
    file: FLEET_FILE,
    publisher: "lb",
    gateways: &["gateway-1", "gateway-2", "gateway-3"],
};
/// Environment variable names whose values must never be literals in the compose file.
const SECRET_NAME_PARTS: &[&str] = &[
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "PRIVATE_KEY",
    "API_KEY",
];

// ------------------------------------------------------------------------------------------------
// Reading the files
// ------------------------------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    fs::read_to_string(root().join(relative))
        .unwrap_or_else(|err| panic!("cannot read {relative} in the repository: {err}"))
}

fn parse_yaml(text: &str, name: &str) -> Value {
    let mut doc: Value = serde_yaml_ng::from_str(text)
        .unwrap_or_else(|err| panic!("{name} is not valid YAML: {err}"));
    doc.apply_merge()
        .unwrap_or_else(|err| panic!("{name}: bad `<<` merge key: {err}"));
    doc
}

fn compose_text() -> String {
    read(COMPOSE_FILE)
}

fn compose() -> Value {
    parse_yaml(&compose_text(), COMPOSE_FILE)
}

fn gateway_config() -> toml::Table {
    toml::from_str(&read(GATEWAY_CONFIG))
        .unwrap_or_else(|err| panic!("{GATEWAY_CONFIG} is not valid TOML: {err}"))
}

fn problems_message(what: &str, problems: &[String]) -> String {
    format!("{what}:\n  - {}", problems.join("\n  - "))
}

// ------------------------------------------------------------------------------------------------
// Compose helpers
// ------------------------------------------------------------------------------------------------

/// A key that is present and not null.
fn key<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.get(name).filter(|v| !v.is_null())
}

/// A scalar as text (compose accepts numbers and booleans where it means strings).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn services(doc: &Value) -> Vec<(String, &Value)> {
    let Some(services) = key(doc, "services").and_then(Value::as_mapping) else {
        return Vec::new();
    };
    services
        .iter()
        .map(|(name, service)| (scalar(name).unwrap_or_default(), service))
        .collect()
}

fn service<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    key(doc, "services").and_then(|services| key(services, name))
}

/// Items of a key that may be a single scalar or a sequence (an absent key is empty).
fn items<'a>(value: &'a Value, name: &str) -> Vec<&'a Value> {
    match key(value, name) {
        None => Vec::new(),
        Some(Value::Sequence(seq)) => seq.iter().collect(),
        Some(other) => vec![other],
    }
}

fn strings(value: &Value, name: &str) -> Vec<String> {
    items(value, name).into_iter().filter_map(scalar).collect()
}

/// The `ports:` entries of a service, as written.
fn published_ports(service: &Value) -> Vec<String> {
    items(service, "ports")
        .into_iter()
        .map(|entry| match scalar(entry) {
            Some(short) => short,
            None => serde_yaml_ng::to_string(entry)
                .unwrap_or_default()
                .trim()
                .replace('\n', ", "),
        })
        .collect()
}

/// The container ports a service publishes (short `[ip:][host:]container[/proto]` or long syntax).
fn published_container_ports(service: &Value) -> Vec<String> {
    items(service, "ports")
        .into_iter()
        .filter_map(|entry| match scalar(entry) {
            Some(short) => {
                let without_proto = short.split('/').next().unwrap_or_default().to_string();
                without_proto.rsplit(':').next().map(str::to_string)
            }
            None => key(entry, "target").and_then(scalar),
        })
        .collect()
}

/// The `environment:` of a service as (name, value) pairs; `None` is a pass-through from the
/// shell (`- NAME` or `NAME:` with no value).
fn environment(service: &Value) -> Vec<(String, Option<String>)> {
    match key(service, "environment") {
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(name, value)| (scalar(name).unwrap_or_default(), scalar(value)))
            .collect(),
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(scalar)
            .map(|entry| match entry.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (entry, None),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The networks a service joins (list or map form); `None` when it joins the implicit default.
fn service_networks(service: &Value) -> Option<Vec<String>> {
    match key(service, "networks") {
        Some(Value::Sequence(list)) => Some(list.iter().filter_map(scalar).collect()),
        Some(Value::Mapping(map)) => Some(map.keys().filter_map(scalar).collect()),
        _ => None,
    }
}

fn network_is_internal(doc: &Value, network: &str) -> bool {
    key(doc, "networks")
        .and_then(|networks| key(networks, network))
        .and_then(|n| key(n, "internal"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn network_is_declared(doc: &Value, network: &str) -> bool {
    key(doc, "networks")
        .and_then(Value::as_mapping)
        .is_some_and(|networks| {
            networks
                .keys()
                .any(|k| scalar(k).as_deref() == Some(network))
        })
}

/// The healthcheck `test` of a service as an argv, when it is the exec (`CMD`) form.
fn healthcheck_test(service: &Value) -> Option<Vec<String>> {
    let healthcheck = key(service, "healthcheck")?;
    match key(healthcheck, "test")? {
        Value::Sequence(list) => Some(list.iter().filter_map(scalar).collect()),
        Value::String(shell) => Some(vec!["CMD-SHELL".to_string(), shell.clone()]),
        _ => None,
    }
}

/// Whether a string is exactly one compose interpolation: `${NAME...}` spanning the whole value or
/// `$NAME`. `$$` is an escaped, literal dollar.
fn is_interpolation(value: &str) -> bool {
    let bytes = value.as_bytes();
    if value.starts_with("${") {
        let mut depth = 0usize;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
                depth += 1;
                i += 2;
                continue;
            }
            if bytes[i] == b'}' {
                depth -= 1;
                if depth == 0 {
                    return i == bytes.len() - 1;
                }
            }
            i += 1;
        }
        return false;
    }
    match value.strip_prefix('$') {
        Some(name) => {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// The text with every `${...}` interpolation removed (nested ones included); `$$` stays.
fn strip_interpolations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek() == Some(&'$') {
            chars.next();
            out.push_str("$$");
        } else if c == '$' && chars.peek() == Some(&'{') {
            chars.next();
            let mut depth = 1;
            while depth > 0 {
                match chars.next() {
                    Some('$') if chars.peek() == Some(&'{') => {
                        chars.next();
                        depth += 1;
                    }
                    Some('}') => depth -= 1,
                    Some(_) => {}
                    None => break,
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Compose checks: each returns what is wrong
// ------------------------------------------------------------------------------------------------

fn backend_exposure_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(backend) = service(doc, BACKEND) else {
        return vec![format!(
            "there is no `{BACKEND}` service (the task backend)"
        )];
    };
    let ports = published_ports(backend);
    if !ports.is_empty() {
        problems.push(format!(
            "service `{BACKEND}` publishes ports {ports:?}: the backend trusts X-User-Id and must \
             be reachable only through the gateway (use `expose:` at most)"
        ));
    }
    if let Some(mode) = key(backend, "network_mode").and_then(scalar) {
        problems.push(format!(
            "service `{BACKEND}` has `network_mode: {mode}`: it must sit on the internal network only"
        ));
    }
    problems
}

fn published_port_problems(doc: &Value, topology: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    let publisher = topology.publisher;
    for (name, service) in services(doc) {
        let ports = published_ports(service);
        if name != publisher && !ports.is_empty() {
            problems.push(format!(
                "service `{name}` publishes ports {ports:?}: only `{publisher}` may publish a port"
            ));
        }
        if name != publisher
            && key(service, "network_mode").and_then(scalar).as_deref() == Some("host")
        {
            problems.push(format!(
                "service `{name}` uses `network_mode: host`, which exposes every port it listens on"
            ));
        }
    }
    match service(doc, publisher) {
        None => problems.push(format!("there is no `{publisher}` service")),
        Some(service) => {
            let targets = published_container_ports(service);
            if !targets.contains(&GATEWAY_PORT.to_string()) {
                problems.push(format!(
                    "service `{publisher}` does not publish container port {GATEWAY_PORT} (its \
                     `ports` are {:?})",
                    published_ports(service)
                ));
            }
        }
    }
    problems
}

fn secret_problems(doc: &Value, text: &str, topology: &Topology) -> Vec<String> {
    let file = topology.file;
    let mut problems = Vec::new();
    for (name, service) in services(doc) {
        for (variable, value) in environment(service) {
            let secret_like = variable == SECRET_ENV
                || SECRET_NAME_PARTS
                    .iter()
                    .any(|part| variable.to_ascii_uppercase().contains(part));
            if !secret_like {
                continue;
            }
            if let Some(value) = value {
                if !is_interpolation(&value) {
                    problems.push(format!(
                        "service `{name}`: `environment.{variable}` is a literal value (not \
                         shown); it must be a `${{...}}` interpolation from the shell or .env"
                    ));
                }
            }
        }
    }
    // Anywhere in the file, comments included: `BETTER_AUTH_SECRET=` or `BETTER_AUTH_SECRET:`
    // followed by something other than an interpolation or a `$(...)` command.
    for (index, line) in strip_interpolations(text).lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(SECRET_ENV) {
            rest = &rest[at + SECRET_ENV.len()..];
            let after_name = rest.trim_start_matches(['"', '\'']).trim_start();
            let Some(value) = after_name
                .strip_prefix('=')
                .or_else(|| after_name.strip_prefix(':'))
            else {
                continue;
            };
            let value = value.trim_start().trim_start_matches(['"', '\'']);
            let literal = value
                .split(|c: char| c.is_whitespace() || "\"',]}#".contains(c))
                .next()
                .unwrap_or_default();
            let substituted = literal.starts_with('$') && !literal.starts_with("$$");
            if !literal.is_empty() && !substituted {
                problems.push(format!(
                    "{file}:{}: {SECRET_ENV} is given a literal value (not shown); \
                     secrets come from the environment or an untracked .env file",
                    index + 1
                ));
            }
        }
    }
    problems
}

/// Checks one path that the compose file references, relative to the compose file's directory.
fn check_path(base: &Path, what: &str, path: &str, problems: &mut Vec<String>) -> Option<PathBuf> {
    if path.contains('$') {
        problems.push(format!(
            "{what} `{path}` uses interpolation, so it cannot be checked"
        ));
        return None;
    }
    if path.starts_with('/') || path.starts_with('~') {
        problems.push(format!(
            "{what} `{path}` is outside the repository (absolute or home path)"
        ));
        return None;
    }
    let full = base.join(path);
    if !full.exists() {
        problems.push(format!(
            "{what} `{path}` does not exist (looked for {})",
            full.display()
        ));
        return None;
    }
    Some(full)
}

fn missing_file_problems(doc: &Value, base: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let declared_volumes: Vec<String> = key(doc, "volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(scalar).collect())
        .unwrap_or_default();
    for (name, service) in services(doc) {
        // build: a context string, or a mapping with context and dockerfile.
        if let Some(build) = key(service, "build") {
            let (context, dockerfile) = match scalar(build) {
                Some(context) => (context, Some("Dockerfile".to_string())),
                None => (
                    key(build, "context")
                        .and_then(scalar)
                        .unwrap_or_else(|| ".".to_string()),
                    match key(build, "dockerfile_inline") {
                        Some(_) => None,
                        None => Some(
                            key(build, "dockerfile")
                                .and_then(scalar)
                                .unwrap_or_else(|| "Dockerfile".to_string()),
                        ),
                    },
                ),
            };
            if context.contains("://") || context.starts_with("git@") {
                problems.push(format!(
                    "service `{name}`: build context `{context}` is remote, not in the repository"
                ));
            } else if let Some(dir) = check_path(
                base,
                &format!("service `{name}`: build context"),
                &context,
                &mut problems,
            ) {
                if let Some(dockerfile) = dockerfile {
                    let relative = dir.strip_prefix(base).unwrap_or(&dir).join(&dockerfile);
                    check_path(
                        base,
                        &format!("service `{name}`: dockerfile"),
                        &relative.to_string_lossy(),
                        &mut problems,
                    );
                }
            }
        }
        // env_file: a path, or a list of paths or {path, required}.
        for entry in items(service, "env_file") {
            let (path, required) = match scalar(entry) {
                Some(path) => (Some(path), true),
                None => (
                    key(entry, "path").and_then(scalar),
                    key(entry, "required")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                ),
            };
            match path {
                None => problems.push(format!("service `{name}`: an `env_file` entry has no path")),
                Some(path) if required => {
                    check_path(
                        base,
                        &format!("service `{name}`: required env_file"),
                        &path,
                        &mut problems,
                    );
                }
                Some(_) => {}
            }
        }
        // volumes: short `source:target[:mode]` or long syntax.
        for entry in items(service, "volumes") {
            let (kind, source) = match scalar(entry) {
                Some(short) => {
                    let parts: Vec<&str> = short.split(':').collect();
                    if parts.len() < 2 {
                        continue; // an anonymous volume: no source
                    }
                    let source = parts[0].to_string();
                    let bind = source.starts_with('.')
                        || source.starts_with('/')
                        || source.starts_with('~');
                    (if bind { "bind" } else { "volume" }.to_string(), source)
                }
                None => (
                    key(entry, "type")
                        .and_then(scalar)
                        .unwrap_or_else(|| "volume".to_string()),
                    key(entry, "source").and_then(scalar).unwrap_or_default(),
                ),
            };
            match kind.as_str() {
                "bind" => {
                    check_path(
                        base,
                        &format!("service `{name}`: bind-mount source"),
                        &source,
                        &mut problems,
                    );
                }
                "volume" if !source.is_empty() && !declared_volumes.contains(&source) => {
                    problems.push(format!(
                        "service `{name}`: named volume `{source}` is not declared under the \
                         top-level `volumes:`"
                    ));
                }
                _ => {}
            }
        }
        for label_file in strings(service, "label_file") {
            check_path(
                base,
                &format!("service `{name}`: label_file"),
                &label_file,
                &mut problems,
            );
        }
    }
    // Top-level configs and secrets that come from files.
    for section in ["configs", "secrets"] {
        if let Some(map) = key(doc, section).and_then(Value::as_mapping) {
            for (item, definition) in map {
                if let Some(file) = key(definition, "file").and_then(scalar) {
                    let item = scalar(item).unwrap_or_default();
                    check_path(
                        base,
                        &format!("{section}.{item}.file"),
                        &file,
                        &mut problems,
                    );
                }
            }
        }
    }
    problems
}

fn backend_network_problems(doc: &Value, topology: &Topology) -> Vec<String> {
    private_service_problems(doc, BACKEND, topology)
}

/// A service only the gateways may reach (the task backend; the fleet's Redis): it joins internal
/// networks only, shares them with nobody but the gateways, and every gateway shares one with it.
fn private_service_problems(doc: &Value, protected: &str, topology: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    let gateways = topology.gateways;
    let Some(backend) = service(doc, protected) else {
        return vec![format!("there is no `{protected}` service")];
    };
    let Some(networks) = service_networks(backend) else {
        return vec![format!(
            "service `{protected}` lists no `networks`, so it joins the default network, which is \
             not internal"
        )];
    };
    if networks.is_empty() {
        problems.push(format!("service `{protected}` joins no network"));
    }
    for network in &networks {
        if !network_is_declared(doc, network) {
            problems.push(format!(
                "service `{protected}` joins network `{network}`, which is not declared under the \
                 top-level `networks:`"
            ));
        } else if !network_is_internal(doc, network) {
            problems.push(format!(
                "service `{protected}` joins network `{network}`, which is not `internal: true`"
            ));
        }
        for (name, other) in services(doc) {
            if name == protected || gateways.contains(&name.as_str()) {
                continue;
            }
            if service_networks(other).is_some_and(|n| n.contains(network)) {
                problems.push(format!(
                    "service `{name}` shares the network `{network}`: only {gateways:?} \
                     may reach `{protected}`"
                ));
            }
        }
    }
    for &gateway in gateways {
        match service(doc, gateway).map(service_networks) {
            None => problems.push(format!("there is no `{gateway}` service")),
            Some(None) => problems.push(format!(
                "service `{gateway}` lists no `networks`, so it cannot reach `{protected}`'s \
                 internal network"
            )),
            Some(Some(gateway_networks)) => {
                if !networks.iter().any(|n| gateway_networks.contains(n)) {
                    problems.push(format!(
                        "service `{gateway}` (networks {gateway_networks:?}) shares no network \
                         with `{protected}` (networks {networks:?})"
                    ));
                }
                if gateway == topology.publisher
                    && gateway_networks.iter().all(|n| network_is_internal(doc, n))
                {
                    problems.push(format!(
                        "service `{gateway}` is only on internal networks, so its published port \
                         is unreachable; it needs a non-internal network such as `edge`"
                    ));
                }
            }
        }
    }
    problems
}

fn startup_and_hardening_problems(doc: &Value, topology: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    for &name in topology.gateways {
        let Some(gateway) = service(doc, name) else {
            continue;
        };
        let condition = key(gateway, "depends_on")
            .and_then(|d| key(d, BACKEND))
            .and_then(|d| key(d, "condition"))
            .and_then(scalar);
        if condition.as_deref() != Some("service_healthy") {
            problems.push(format!(
                "service `{name}` must `depends_on: {{{BACKEND}: {{condition: service_healthy}}}}` \
                 (found condition {condition:?})"
            ));
        }
    }
    if let Some(backend) = service(doc, BACKEND) {
        match healthcheck_test(backend) {
            None => problems.push(format!(
                "service `{BACKEND}` has no healthcheck `test`, so `service_healthy` never holds"
            )),
            Some(test) if test.first().map(String::as_str) == Some("NONE") => problems.push(
                format!("service `{BACKEND}` disables its healthcheck (`test: [NONE]`)"),
            ),
            Some(_) => {}
        }
        if key(backend, "healthcheck")
            .and_then(|h| key(h, "disable"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            problems.push(format!(
                "service `{BACKEND}` has `healthcheck.disable: true`"
            ));
        }
    }
    // Every service, the load balancer and Redis of the fleet included.
    for (name, service) in services(doc) {
        if key(service, "read_only").and_then(Value::as_bool) != Some(true) {
            problems.push(format!("service `{name}` is not `read_only: true`"));
        }
        if !strings(service, "cap_drop").iter().any(|c| c == "ALL") {
            problems.push(format!("service `{name}` does not `cap_drop: [ALL]`"));
        }
        if !strings(service, "security_opt")
            .iter()
            .any(|o| o == "no-new-privileges:true" || o == "no-new-privileges")
        {
            problems.push(format!(
                "service `{name}` lacks `security_opt: [\"no-new-privileges:true\"]`"
            ));
        }
        if key(service, "privileged").and_then(Value::as_bool) == Some(true) {
            problems.push(format!("service `{name}` is privileged"));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore parsing
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

/// Instructions with line continuations joined and comment lines dropped (also inside a
/// continuation, as Docker does).
fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        // Comment lines and empty lines are dropped, also inside a continuation.
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (continues, body) = match trimmed.strip_suffix('\\') {
            Some(body) => (true, body),
            None => (false, trimmed),
        };
        let (line, mut joined) = current.take().unwrap_or((index + 1, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body.trim());
        if continues {
            current = Some((line, joined));
        } else if !joined.trim().is_empty() {
            let (keyword, args) = joined
                .split_once(char::is_whitespace)
                .unwrap_or((&joined, ""));
            instructions.push(Instruction {
                line,
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
            });
        }
    }
    instructions
}

/// The stages: each starts at a FROM (instructions before the first FROM are dropped).
fn stages(instructions: &[Instruction]) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction.clone());
        }
    }
    stages
}

struct Copy {
    from_stage: bool,
    sources: Vec<String>,
    dest: String,
}

fn parse_copy(args: &str) -> Copy {
    let mut words: Vec<&str> = args.split_whitespace().collect();
    let mut from_stage = false;
    while words.first().is_some_and(|w| w.starts_with("--")) {
        from_stage |= words[0].starts_with("--from");
        words.remove(0);
    }
    let rest = words.join(" ");
    let mut paths: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(&rest).unwrap_or_default()
    } else {
        words.iter().map(|w| w.to_string()).collect()
    };
    let dest = paths.pop().unwrap_or_default();
    Copy {
        from_stage,
        sources: paths,
        dest,
    }
}

/// The exec-form (JSON array) arguments of a CMD-like instruction, if it is exec form.
fn exec_form(args: &str) -> Option<Vec<String>> {
    serde_json::from_str(args.trim()).ok()
}

/// The HEALTHCHECK command of the final stage as an argv.
fn dockerfile_healthcheck(text: &str) -> Option<Vec<String>> {
    let stages = stages(&parse_dockerfile(text));
    let healthcheck = stages
        .last()?
        .iter()
        .rev()
        .find(|i| i.keyword == "HEALTHCHECK")?;
    let (_, command) = healthcheck.args.split_once("CMD")?;
    exec_form(command)
}

fn dockerfile_problems(text: &str, base: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let instructions = parse_dockerfile(text);
    let stages = stages(&instructions);
    if stages.len() < 2 {
        problems.push(format!(
            "{DOCKERFILE} has {} FROM stage(s); it must be multi-stage (a builder and a small \
             runtime)",
            stages.len()
        ));
    }
    let Some(last) = stages.last() else {
        return problems;
    };
    let find_all = |keyword: &str| -> Vec<&Instruction> {
        last.iter().filter(|i| i.keyword == keyword).collect()
    };

    // A non-root user in the final stage.
    match find_all("USER").last() {
        None => problems.push(format!(
            "the final stage of {DOCKERFILE} has no USER line, so the container runs as root"
        )),
        Some(user) => {
            let name = user.args.split(':').next().unwrap_or_default().trim();
            if name.is_empty() || name == "root" || name == "0" {
                problems.push(format!(
                    "{DOCKERFILE}:{}: `USER {}` runs the final stage as root",
                    user.line, user.args
                ));
            }
        }
    }

    // A HEALTHCHECK hitting /healthz.
    match find_all("HEALTHCHECK").last() {
        None => problems.push(format!(
            "the final stage of {DOCKERFILE} has no HEALTHCHECK"
        )),
        Some(healthcheck) => {
            if healthcheck.args.trim().eq_ignore_ascii_case("NONE") {
                problems.push(format!(
                    "{DOCKERFILE}:{}: HEALTHCHECK NONE disables the health check",
                    healthcheck.line
                ));
            } else if !healthcheck.args.contains("/healthz") {
                problems.push(format!(
                    "{DOCKERFILE}:{}: the HEALTHCHECK does not probe /healthz",
                    healthcheck.line
                ));
            }
            match healthcheck.args.split_once("CMD") {
                Some((_, command)) if exec_form(command).is_none() => {
                    problems.push(format!(
                        "{DOCKERFILE}:{}: the HEALTHCHECK CMD is not a valid JSON array (exec \
                         form); Docker would run it with /bin/sh, which has no /dev/tcp",
                        healthcheck.line
                    ));
                }
                Some(_) => {}
                None if !healthcheck.args.trim().eq_ignore_ascii_case("NONE") => {
                    problems.push(format!(
                        "{DOCKERFILE}:{}: the HEALTHCHECK has no CMD",
                        healthcheck.line
                    ));
                }
                None => {}
            }
        }
    }

    // The config at /etc/authgate/gateway.toml, and both binaries in /usr/local/bin.
    let copies: Vec<(usize, Copy)> = find_all("COPY")
        .into_iter()
        .map(|i| (i.line, parse_copy(&i.args)))
        .collect();
    match copies.iter().find(|(_, c)| c.dest == CONFIG_IN_IMAGE) {
        None => problems.push(format!(
            "the final stage of {DOCKERFILE} does not COPY a config to {CONFIG_IN_IMAGE}"
        )),
        Some((line, copy)) if copy.from_stage || copy.sources != [GATEWAY_CONFIG] => {
            problems.push(format!(
                "{DOCKERFILE}:{line}: {CONFIG_IN_IMAGE} should be a copy of {GATEWAY_CONFIG} \
                 (the compose config), found sources {:?}",
                copy.sources
            ));
        }
        Some(_) => {}
    }
    for binary in ["authgate", "task-backend"] {
        let installed = copies.iter().any(|(_, c)| {
            c.from_stage
                && c.sources
                    .iter()
                    .any(|s| s.ends_with(&format!("/release/{binary}")))
                && (c.dest == "/usr/local/bin/" || c.dest == format!("/usr/local/bin/{binary}"))
        });
        if !installed {
            problems.push(format!(
                "the final stage of {DOCKERFILE} does not copy the release `{binary}` binary \
                 from the builder to /usr/local/bin/"
            ));
        }
    }

    // Entrypoint, command and port.
    let entrypoint = find_all("ENTRYPOINT")
        .last()
        .and_then(|i| exec_form(&i.args));
    if entrypoint.as_deref() != Some(&["/usr/local/bin/authgate".to_string()][..]) {
        problems.push(format!(
            "the final ENTRYPOINT must be [\"/usr/local/bin/authgate\"] (exec form), found {entrypoint:?}"
        ));
    }
    let cmd = find_all("CMD").last().and_then(|i| exec_form(&i.args));
    let expected_cmd = vec!["--config".to_string(), CONFIG_IN_IMAGE.to_string()];
    if cmd.as_ref() != Some(&expected_cmd) {
        problems.push(format!(
            "the final CMD must be {expected_cmd:?} (exec form), found {cmd:?}"
        ));
    }
    if !find_all("EXPOSE").iter().any(|i| {
        i.args
            .split_whitespace()
            .any(|p| p.split('/').next() == Some("8080"))
    }) {
        problems.push(format!(
            "the final stage of {DOCKERFILE} does not EXPOSE {GATEWAY_PORT}"
        ));
    }

    // The builder compiles both binaries with --release --locked.
    let builds_release_locked = instructions.iter().any(|i| {
        i.keyword == "RUN"
            && i.args.contains("cargo build")
            && i.args.contains("--release")
            && i.args.contains("--locked")
    });
    if !builds_release_locked {
        problems.push(format!(
            "{DOCKERFILE} never runs `cargo build --release --locked`"
        ));
    }

    // Every source copied from the build context exists.
    for instruction in instructions
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
    {
        let copy = parse_copy(&instruction.args);
        if copy.from_stage {
            continue;
        }
        for source in &copy.sources {
            if !base.join(source).exists() {
                problems.push(format!(
                    "{DOCKERFILE}:{}: COPY source `{source}` does not exist in the repository",
                    instruction.line
                ));
            }
        }
    }
    problems
}

/// The context paths the Dockerfile COPYs (not from another stage).
fn dockerfile_context_sources(text: &str) -> Vec<String> {
    parse_dockerfile(text)
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        .map(|i| parse_copy(&i.args))
        .filter(|c| !c.from_stage)
        .flat_map(|c| c.sources)
        .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect()
}

/// `*` and `?` within one path segment.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], text)
                || (!text.is_empty() && segment_matches(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => segment_matches(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Segment-wise match where `**` spans any number of segments.
fn path_matches(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(&"**") => (0..=path.len()).any(|skip| path_matches(&pattern[1..], &path[skip..])),
        Some(segment) => {
            !path.is_empty()
                && segment_matches(segment.as_bytes(), path[0].as_bytes())
                && path_matches(&pattern[1..], &path[1..])
        }
    }
}

/// Whether .dockerignore rules keep `path` out of the build context: the last matching rule
/// wins, and a rule matching a parent directory matches everything below it.
fn dockerignore_excludes(rules: &str, path: &str) -> bool {
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut excluded = false;
    for rule in rules.lines().map(str::trim) {
        if rule.is_empty() || rule.starts_with('#') {
            continue;
        }
        let (negated, pattern) = match rule.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, rule),
        };
        let pattern: Vec<&str> = pattern
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        let matches = (1..=path.len()).any(|len| path_matches(&pattern, &path[..len]));
        if matches {
            excluded = !negated;
        }
    }
    excluded
}

// ------------------------------------------------------------------------------------------------
// Running things
// ------------------------------------------------------------------------------------------------

fn run_with_timeout(mut command: Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command:?} did not finish within {timeout:?}");
            }
            Err(err) => panic!("waiting for {command:?}: {err}"),
        }
    }
    child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("collecting the output of {command:?}: {err}"))
}

fn bash_available() -> bool {
    Command::new("bash")
        .args(["-c", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a healthcheck argv of the form `bash -c SCRIPT`; true when it exits 0.
fn run_probe(argv: &[String]) -> bool {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    run_with_timeout(command, Duration::from_secs(10))
        .status
        .success()
}

/// Rewrites the probe's `/dev/tcp/127.0.0.1/PORT` to another port.
fn retarget(argv: &[String], from_port: u16, to_port: u16) -> Vec<String> {
    let from = format!("/dev/tcp/127.0.0.1/{from_port}");
    let to = format!("/dev/tcp/127.0.0.1/{to_port}");
    assert!(
        argv.iter().any(|a| a.contains(&from)),
        "the healthcheck {argv:?} does not connect to {from}"
    );
    argv.iter().map(|a| a.replace(&from, &to)).collect()
}

/// A listener that answers one request with `status_line` and returns the request head it read.
fn one_shot_http(status_line: &'static str) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = listener.local_addr().expect("listener address");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let handle = std::thread::spawn(move || {
        // Give up after a while, so a probe that never connects fails the test instead of
        // hanging it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return String::from("(the probe never connected)"),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let response = format!("{status_line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = stream.write_all(response.as_bytes());
        String::from_utf8_lossy(&head).into_owned()
    });
    (addr, handle)
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    listener.local_addr().expect("listener address").port()
}

fn authgate_check(config: &Path, secret: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
    command
        .arg("check")
        .arg("--config")
        .arg(config)
        .current_dir(root())
        .env_remove(SECRET_ENV);
    if let Some(secret) = secret {
        command.env(SECRET_ENV, secret);
    }
    run_with_timeout(command, Duration::from_secs(30))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(host, _)| host).unwrap_or(addr)
}

// ------------------------------------------------------------------------------------------------
// The repository's files
// ------------------------------------------------------------------------------------------------

#[test]
fn compose_backend_publishes_no_port() {
    let problems = backend_exposure_problems(&compose());
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(
            &format!("{COMPOSE_FILE}: the backend is exposed"),
            &problems
        )
    );
}

#[test]
fn compose_only_the_gateway_publishes_ports() {
    let problems = published_port_problems(&compose(), &SINGLE);
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(&format!("{COMPOSE_FILE}: published ports"), &problems)
    );
}

#[test]
fn compose_has_no_secret_literal() {
    let text = compose_text();
    let doc = parse_yaml(&text, COMPOSE_FILE);
    let problems = secret_problems(&doc, &text, &SINGLE);
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(&format!("{COMPOSE_FILE}: secrets"), &problems)
    );
    // The gateway gets the variable its config reads the HMAC secret from.
    let config = gateway_config();
    let secret_env = config
        .get("auth")
        .and_then(|auth| auth.get("secret_env"))
        .and_then(toml::Value::as_str);
    if let Some(secret_env) = secret_env {
        let gateway = service(&doc, GATEWAY).expect("a gateway service");
        assert!(
            environment(gateway)
                .iter()
                .any(|(name, _)| name == secret_env),
            "{GATEWAY_CONFIG} reads the secret from `{secret_env}`, but service `{GATEWAY}` in \
             {COMPOSE_FILE} has no `environment.{secret_env}`"
        );
    }
}

#[test]
fn compose_env_example_holds_no_secret() {
    let text = read(ENV_EXAMPLE);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{SECRET_ENV}=")))
        .unwrap_or_else(|| panic!("{ENV_EXAMPLE} does not document {SECRET_ENV}="));
    let value = line.trim_start()[SECRET_ENV.len() + 1..].trim();
    assert!(
        value.is_empty(),
        "{ENV_EXAMPLE}: {SECRET_ENV} has a value; the committed example must leave it empty"
    );
}

#[test]
fn compose_references_only_existing_files() {
    let problems = missing_file_problems(&compose(), root());
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(
            &format!("{COMPOSE_FILE} references files that are missing"),
            &problems
        )
    );
}

#[test]
fn compose_backend_is_only_on_internal_networks() {
    let problems = backend_network_problems(&compose(), &SINGLE);
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(&format!("{COMPOSE_FILE}: networks"), &problems)
    );
}

#[test]
fn compose_waits_for_a_healthy_backend_and_drops_privileges() {
    let problems = startup_and_hardening_problems(&compose(), &SINGLE);
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(
            &format!("{COMPOSE_FILE}: start-up and hardening"),
            &problems
        )
    );
}

#[test]
fn compose_gateway_config_validates_with_the_real_binary() {
    let config = root().join(GATEWAY_CONFIG);
    let output = authgate_check(&config, Some(&"x".repeat(32)));
    assert!(
        output.status.success(),
        "`authgate check --config {GATEWAY_CONFIG}` with a 32-character {SECRET_ENV} failed: {}",
        describe(&output)
    );
    // The secret really comes from the environment: without it the same config is rejected.
    let output = authgate_check(&config, None);
    assert_eq!(
        output.status.code(),
        Some(2),
        "`authgate check --config {GATEWAY_CONFIG}` without {SECRET_ENV} should fail with exit \
         code 2: {}",
        describe(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(SECRET_ENV),
        "the error without a secret should name {SECRET_ENV}: {}",
        describe(&output)
    );
}

#[test]
fn compose_gateway_config_jwks_alternative_validates() {
    // The commented Better Auth block, applied as its comment says: drop `algorithms` and
    // `secret_env`, uncomment the block's keys.
    const KEYS: &[&str] = &[
        "jwks_url",
        "issuer",
        "audience",
        "algorithms",
        "jwks_refresh",
        "jwks_cooldown",
        "jwks_timeout",
        "jwks_file",
    ];
    let text = read(GATEWAY_CONFIG);
    let marker = text
        .find("Better Auth JWKS alternative")
        .unwrap_or_else(|| panic!("{GATEWAY_CONFIG} has no `Better Auth JWKS alternative` block"));
    let line_start = text[..marker].rfind('\n').map_or(0, |i| i + 1);
    let (before, after) = text.split_at(line_start);
    let mut out = String::new();
    for line in before.lines() {
        if line.starts_with("algorithms =") || line.starts_with("secret_env =") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let mut uncommented = 0;
    let mut in_block = true;
    for line in after.lines() {
        if line.trim().is_empty() || line.starts_with('[') {
            in_block = false;
        }
        let key_line = line
            .strip_prefix("# ")
            .filter(|rest| KEYS.iter().any(|k| rest.starts_with(&format!("{k} ="))));
        match key_line {
            Some(rest) if in_block => {
                uncommented += 1;
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(
        out.contains("\njwks_url ="),
        "the JWKS block in {GATEWAY_CONFIG} has no `# jwks_url = ...` line to uncomment \
         ({uncommented} lines uncommented)"
    );
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "authgate-compose-jwks-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).expect("create a temporary directory");
    let path = dir.join("gateway.jwks.toml");
    fs::write(&path, &out).expect("write the JWKS variant");
    let output = authgate_check(&path, None);
    let _ = fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "the Better Auth JWKS alternative in {GATEWAY_CONFIG}, uncommented, does not validate: \
         {}\n--- config ---\n{out}",
        describe(&output)
    );
}

#[test]
fn compose_gateway_config_matches_the_compose_wiring() {
    let doc = compose();
    let config = gateway_config();
    let mut problems = Vec::new();
    let get = |table: &str, field: &str| -> Option<String> {
        config
            .get(table)
            .and_then(|t| t.get(field))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
    };

    // The gateway listens on all interfaces of its container, on the published port.
    let listen = get("server", "listen").unwrap_or_default();
    if host_of(&listen) != "0.0.0.0" && host_of(&listen) != "[::]" {
        problems.push(format!(
            "{GATEWAY_CONFIG}: server.listen = {listen:?} is not reachable through the published \
             port; inside a container it must listen on 0.0.0.0"
        ));
    }
    if port_of(&listen) != Some(GATEWAY_PORT) {
        problems.push(format!(
            "{GATEWAY_CONFIG}: server.listen = {listen:?} is not port {GATEWAY_PORT}, the port \
             compose publishes and the image EXPOSEs"
        ));
    }

    // The upstream is the backend service, on the port the backend listens on.
    let upstream = get("upstream", "url").unwrap_or_default();
    let authority = upstream.strip_prefix("http://").unwrap_or_default();
    if host_of(authority) != BACKEND {
        problems.push(format!(
            "{GATEWAY_CONFIG}: upstream.url = {upstream:?} does not point at the `{BACKEND}` service"
        ));
    }
    match service(&doc, BACKEND).map(|s| strings(s, "command")) {
        Some(command) if command.len() == 1 => {
            let backend_listen = &command[0];
            if port_of(backend_listen) != port_of(authority) {
                problems.push(format!(
                    "service `{BACKEND}` listens on {backend_listen:?} but {GATEWAY_CONFIG} \
                     forwards to {upstream:?}"
                ));
            }
            if host_of(backend_listen).starts_with("127.") {
                problems.push(format!(
                    "service `{BACKEND}` listens on loopback ({backend_listen:?}); the gateway \
                     container cannot reach it"
                ));
            }
        }
        other => problems.push(format!(
            "service `{BACKEND}` should have `command: [\"0.0.0.0:PORT\"]` (its listen address), \
             found {other:?}"
        )),
    }
    if let Some(backend) = service(&doc, BACKEND) {
        let entrypoint = strings(backend, "entrypoint");
        if entrypoint != ["/usr/local/bin/task-backend"] {
            problems.push(format!(
                "service `{BACKEND}` should run `entrypoint: [\"/usr/local/bin/task-backend\"]`, \
                 found {entrypoint:?}"
            ));
        }
    }

    // The config is mounted read-only where the image's CMD reads it.
    let mount = format!("./{GATEWAY_CONFIG}:{CONFIG_IN_IMAGE}:ro");
    let mounted = service(&doc, GATEWAY)
        .map(|g| strings(g, "volumes"))
        .unwrap_or_default();
    if !mounted.contains(&mount) {
        problems.push(format!(
            "service `{GATEWAY}` should mount `{mount}`, found volumes {mounted:?}"
        ));
    }

    // Once the config has an admin listener, the image's HEALTHCHECK must probe it on loopback.
    if let Some(admin) = get("admin", "listen") {
        let healthcheck = dockerfile_healthcheck(&read(DOCKERFILE)).unwrap_or_default();
        let probe = format!("/dev/tcp/127.0.0.1/{}", port_of(&admin).unwrap_or(0));
        if !healthcheck.iter().any(|a| a.contains(&probe)) {
            problems.push(format!(
                "{GATEWAY_CONFIG}: admin.listen = {admin:?}, but the {DOCKERFILE} HEALTHCHECK \
                 does not connect to {probe}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(
            "the gateway config does not match the compose wiring",
            &problems
        )
    );
}

#[test]
fn compose_dockerfile_is_multi_stage_non_root_and_healthchecked() {
    let problems = dockerfile_problems(&read(DOCKERFILE), root());
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(DOCKERFILE, &problems)
    );
}

#[test]
fn compose_dockerignore_keeps_secrets_and_build_output_out_but_not_sources() {
    let rules = read(DOCKERIGNORE);
    let mut problems = Vec::new();
    for path in [
        "target",
        "target/release/authgate",
        "fuzz/target",
        "fuzz/corpus/seed",
        ".git",
        "bench/results/run.md",
        ".env",
        "deploy/.env",
    ] {
        if !dockerignore_excludes(&rules, path) {
            problems.push(format!("`{path}` is not excluded from the build context"));
        }
    }
    for source in dockerfile_context_sources(&read(DOCKERFILE)) {
        for path in [source.clone(), format!("{source}/main.rs")] {
            if dockerignore_excludes(&rules, &path) {
                problems.push(format!(
                    "`{path}` is excluded from the build context, but {DOCKERFILE} copies `{source}`"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(DOCKERIGNORE, &problems)
    );
}

#[test]
fn compose_backend_healthcheck_passes_against_the_real_backend() {
    if !bash_available() {
        eprintln!("skipped: bash is not available to run the healthcheck");
        return;
    }
    let doc = compose();
    let backend = service(&doc, BACKEND).expect("a backend service");
    let test = healthcheck_test(backend).expect("the backend has a healthcheck test");
    assert!(
        test.len() == 4 && test[0] == "CMD" && test[1] == "bash" && test[2] == "-c",
        "the `{BACKEND}` healthcheck must be [CMD, bash, -c, SCRIPT] (CMD-SHELL runs /bin/sh, \
         which has no /dev/tcp), found {test:?}"
    );
    assert!(
        !test[3].replace("$$", "").contains('$'),
        "the `{BACKEND}` healthcheck script contains `$`, which compose would interpolate; \
         write `$$`"
    );
    let argv: Vec<String> = test[1..].iter().map(|a| a.replace("$$", "$")).collect();
    let listen_port = strings(backend, "command")
        .first()
        .and_then(|addr| port_of(addr))
        .expect("the backend's command is its listen address");

    // The same serve loop `task-backend` runs, on an ephemeral loopback port.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the backend");
    let port = listener.local_addr().expect("backend address").port();
    runtime.spawn(authgate::demo_backend::serve(listener));

    let healthy = run_probe(&retarget(&argv, listen_port, port));
    let closed = run_probe(&retarget(&argv, listen_port, closed_port()));
    runtime.shutdown_background();
    assert!(
        healthy,
        "the `{BACKEND}` healthcheck {argv:?} fails against a running task backend"
    );
    assert!(
        !closed,
        "the `{BACKEND}` healthcheck {argv:?} passes when nothing listens"
    );
}

#[test]
fn compose_dockerfile_healthcheck_probes_healthz_and_needs_a_200() {
    if !bash_available() {
        eprintln!("skipped: bash is not available to run the healthcheck");
        return;
    }
    let argv = dockerfile_healthcheck(&read(DOCKERFILE))
        .expect("the final stage has an exec-form HEALTHCHECK CMD");
    assert!(
        argv.first().map(String::as_str) == Some("bash"),
        "the {DOCKERFILE} HEALTHCHECK should run bash (for /dev/tcp), found {argv:?}"
    );
    let admin_port = 9090;

    let (addr, server) = one_shot_http("HTTP/1.1 200 OK");
    let healthy = run_probe(&retarget(&argv, admin_port, addr.port()));
    let request = server.join().expect("the one-shot server");
    assert!(
        healthy,
        "the {DOCKERFILE} HEALTHCHECK {argv:?} fails against a 200 response"
    );
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "the {DOCKERFILE} HEALTHCHECK sent {request:?}, not `GET /healthz HTTP/1.1` with CRLF \
         line ends"
    );
    assert!(
        request.to_ascii_lowercase().contains("\r\nhost: "),
        "the {DOCKERFILE} HEALTHCHECK request has no Host header: {request:?}"
    );

    let (addr, server) = one_shot_http("HTTP/1.1 503 Service Unavailable");
    let unhealthy = run_probe(&retarget(&argv, admin_port, addr.port()));
    server.join().expect("the one-shot server");
    assert!(
        !unhealthy,
        "the {DOCKERFILE} HEALTHCHECK {argv:?} passes on a 503"
    );
    assert!(
        !run_probe(&retarget(&argv, admin_port, closed_port())),
        "the {DOCKERFILE} HEALTHCHECK {argv:?} passes when nothing listens"
    );
}

#[test]
fn compose_gives_the_gateway_time_to_drain() {
    let problems = stop_grace_problems(&compose(), &gateway_config(), &SINGLE);
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(&format!("{COMPOSE_FILE}: stop_grace_period"), &problems)
    );
}

#[test]
fn compose_dockerfile_stubs_every_cargo_target_before_the_dependency_build() {
    let problems = cargo_target_problems(&read(DOCKERFILE), &read("Cargo.toml"));
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(DOCKERFILE, &problems)
    );
}

// ------------------------------------------------------------------------------------------------
// The replicated fleet: deploy/compose.fleet.yml, deploy/gateway.fleet.toml, deploy/haproxy.cfg
// ------------------------------------------------------------------------------------------------

fn fleet_text() -> String {
    read(FLEET_FILE)
}

fn fleet() -> Value {
    parse_yaml(&fleet_text(), FLEET_FILE)
}

fn fleet_config() -> toml::Table {
    toml::from_str(&read(FLEET_CONFIG))
        .unwrap_or_else(|err| panic!("{FLEET_CONFIG} is not valid TOML: {err}"))
}

/// A duration as the config and compose write it: "250ms", "30s", "5m", "1h".
fn seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(number * scale)
}

fn config_str(config: &toml::Table, table: &str, field: &str) -> Option<String> {
    config
        .get(table)
        .and_then(|t| t.get(field))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
}

/// Every gateway's `stop_grace_period` is longer than the config's `limits.shutdown_grace` (30s
/// by default), so the engine never kills a gateway that is still draining.
fn stop_grace_problems(doc: &Value, config: &toml::Table, topology: &Topology) -> Vec<String> {
    let grace = config_str(config, "limits", "shutdown_grace").unwrap_or_else(|| "30s".into());
    let grace_secs = seconds(&grace).unwrap_or(30.0);
    let mut problems = Vec::new();
    for &name in topology.gateways {
        let Some(gateway) = service(doc, name) else {
            continue;
        };
        match key(gateway, "stop_grace_period").and_then(scalar) {
            None => problems.push(format!(
                "service `{name}` has no `stop_grace_period`: the engine's default (10s) kills it \
                 before limits.shutdown_grace ({grace}) lets requests in flight finish"
            )),
            Some(period) if seconds(&period).is_none_or(|p| p <= grace_secs) => {
                problems.push(format!(
                    "service `{name}`: stop_grace_period {period} is not longer than \
                     limits.shutdown_grace ({grace})"
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

/// Cargo reads every target the manifest names before it builds anything, so the dependency
/// layer needs a file at each path (`[[bin]]`, `[[bench]]`, `[[example]]`, `[[test]]`, the lib),
/// and the real build needs each one copied or left in place as a stub.
fn cargo_target_problems(dockerfile: &str, manifest: &str) -> Vec<String> {
    let manifest: toml::Table = match toml::from_str(manifest) {
        Ok(manifest) => manifest,
        Err(err) => return vec![format!("Cargo.toml is not valid TOML: {err}")],
    };
    let mut targets = vec!["src/lib.rs".to_string()];
    for (section, folder) in [
        ("bin", "src/bin"),
        ("bench", "benches"),
        ("example", "examples"),
        ("test", "tests"),
    ] {
        let entries = manifest.get(section).and_then(toml::Value::as_array);
        for entry in entries.into_iter().flatten() {
            let path = entry.get("path").and_then(toml::Value::as_str);
            let name = entry.get("name").and_then(toml::Value::as_str);
            match (path, name) {
                (Some(path), _) => targets.push(path.to_string()),
                (None, Some(name)) => targets.push(format!("{folder}/{name}.rs")),
                (None, None) => {}
            }
        }
    }
    let instructions = parse_dockerfile(dockerfile);
    let Some(first_build) = instructions
        .iter()
        .position(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
    else {
        return vec![format!("{DOCKERFILE} never runs `cargo build`")];
    };
    let run = &instructions[first_build].args;
    let removed: Vec<&str> = run
        .split("&&")
        .filter_map(|step| step.trim().strip_prefix("rm -rf"))
        .flat_map(str::split_whitespace)
        .map(|p| p.trim_end_matches('/'))
        .collect();
    let copied = dockerfile_context_sources(dockerfile);
    let copied_before: Vec<String> = instructions[..first_build]
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        .map(|i| parse_copy(&i.args))
        .filter(|c| !c.from_stage)
        .flat_map(|c| c.sources)
        .collect();
    let under = |path: &str, dirs: &[String]| {
        dirs.iter().any(|d| {
            let d = d.trim_start_matches("./").trim_end_matches('/');
            path == d || path.starts_with(&format!("{d}/"))
        })
    };
    let mut problems = Vec::new();
    for target in &targets {
        let stubbed =
            run.contains(&format!("> {target}")) || run.contains(&format!("touch {target}"));
        if !stubbed && !under(target, &copied_before) {
            problems.push(format!(
                "{DOCKERFILE}:{}: the dependency build has no file at `{target}`, which \
                 Cargo.toml names (cargo refuses the manifest); stub it there",
                instructions[first_build].line
            ));
        }
        let kept = stubbed
            && !removed
                .iter()
                .any(|r| *r == target || target.starts_with(&format!("{r}/")));
        if !kept && !under(target, &copied) {
            problems.push(format!(
                "{DOCKERFILE}: `{target}` (named by Cargo.toml) is neither copied into the \
                 builder nor kept as a stub, so the real build cannot read the manifest"
            ));
        }
    }
    problems
}

#[test]
fn compose_fleet_publishes_only_the_load_balancer_and_hides_backend_and_redis() {
    let text = fleet_text();
    let doc = fleet();
    let mut problems = backend_exposure_problems(&doc);
    problems.extend(published_port_problems(&doc, &FLEET));
    problems.extend(backend_network_problems(&doc, &FLEET));
    problems.extend(private_service_problems(&doc, REDIS, &FLEET));
    problems.extend(startup_and_hardening_problems(&doc, &FLEET));
    problems.extend(secret_problems(&doc, &text, &FLEET));
    problems.extend(missing_file_problems(&doc, &root().join("deploy")));
    problems.extend(stop_grace_problems(&doc, &fleet_config(), &FLEET));
    assert!(
        problems.is_empty(),
        "{}",
        problems_message(FLEET_FILE, &problems)
    );
}

#[test]
fn compose_fleet_config_validates_with_the_real_binary() {
    let output = authgate_check(&root().join(FLEET_CONFIG), Some(&"x".repeat(32)));
    assert!(
        output.status.success(),
        "`authgate check --config {FLEET_CONFIG}` failed: {}",
        describe(&output)
    );
}

/// The fleet's three files agree: replicas mount the fleet config, HAProxy balances exactly the
/// replicas on the port they listen on and checks /readyz on their admin port, the config
/// trusts HAProxy's subnet and names the compose services it talks to.
#[test]
fn compose_fleet_config_haproxy_and_compose_agree() {
    let doc = fleet();
    let config = fleet_config();
    let haproxy = read(HAPROXY_CONFIG);
    let mut problems = Vec::new();
    let mount = format!("./gateway.fleet.toml:{CONFIG_IN_IMAGE}:ro");
    for &name in FLEET.gateways {
        let volumes = service(&doc, name)
            .map(|s| strings(s, "volumes"))
            .unwrap_or_default();
        if !volumes.contains(&mount) {
            problems.push(format!(
                "service `{name}` should mount `{mount}`, found {volumes:?}"
            ));
        }
    }
    let listen = config_str(&config, "server", "listen").unwrap_or_default();
    let admin = config_str(&config, "admin", "listen").unwrap_or_default();
    if host_of(&admin) != "0.0.0.0" {
        problems.push(format!(
            "{FLEET_CONFIG}: admin.listen = {admin:?}: HAProxy checks /readyz from another \
             container, so it must listen on 0.0.0.0"
        ));
    }
    let lines: Vec<Vec<&str>> = haproxy
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect()
        })
        .filter(|words: &Vec<&str>| !words.is_empty())
        .collect();
    let servers: Vec<(String, String)> = lines
        .iter()
        .filter(|w| w[0] == "server" && w.len() >= 3)
        .map(|w| (w[1].to_string(), w[2].to_string()))
        .collect();
    let names: Vec<&str> = servers.iter().map(|(n, _)| n.as_str()).collect();
    if names != FLEET.gateways {
        problems.push(format!(
            "{HAPROXY_CONFIG} balances {names:?}, but the replicas are {:?}",
            FLEET.gateways
        ));
    }
    for (name, address) in &servers {
        if host_of(address) != name || port_of(address) != port_of(&listen) {
            problems.push(format!(
                "{HAPROXY_CONFIG}: server {name} at {address}, but the replica is the service \
                 `{name}` listening on {listen}"
            ));
        }
    }
    let check_port = lines
        .iter()
        .find(|w| w[0] == "default-server")
        .and_then(|w| w.windows(2).find(|p| p[0] == "port").map(|p| p[1]))
        .and_then(|p| p.parse::<u16>().ok());
    if check_port.is_none() || check_port != port_of(&admin) {
        problems.push(format!(
            "{HAPROXY_CONFIG}: health checks go to port {check_port:?}, but admin.listen is {admin:?}"
        ));
    }
    if !lines
        .iter()
        .any(|w| w[..] == ["option", "httpchk", "GET", "/readyz"])
    {
        problems.push(format!(
            "{HAPROXY_CONFIG} does not check `option httpchk GET /readyz`"
        ));
    }
    let bind_port = lines
        .iter()
        .find(|w| w[0] == "bind")
        .and_then(|w| port_of(w[1]));
    let published = service(&doc, FLEET.publisher)
        .map(published_container_ports)
        .unwrap_or_default();
    if !bind_port.is_some_and(|p| published.contains(&p.to_string())) {
        problems.push(format!(
            "{HAPROXY_CONFIG}'s first bind is on port {bind_port:?}, but `{}` publishes \
             container ports {published:?}",
            FLEET.publisher
        ));
    }
    // HAProxy's subnet is trusted for X-Forwarded-For, and nothing else is.
    let subnet = key(&doc, "networks")
        .and_then(|n| key(n, "lb"))
        .and_then(|n| key(n, "ipam"))
        .and_then(|i| key(i, "config"))
        .and_then(Value::as_sequence)
        .and_then(|c| c.first())
        .and_then(|c| key(c, "subnet"))
        .and_then(scalar);
    let trusted: Vec<String> = config
        .get("server")
        .and_then(|s| s.get("trusted_proxies"))
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match subnet {
        Some(subnet) if trusted == [subnet.clone()] => {}
        other => problems.push(format!(
            "{FLEET_CONFIG}: server.trusted_proxies = {trusted:?}, but the `lb` network's \
             subnet in {FLEET_FILE} is {other:?}; they must be the same one block"
        )),
    }
    let upstream = config_str(&config, "upstream", "url").unwrap_or_default();
    if host_of(upstream.trim_start_matches("http://")) != BACKEND {
        problems.push(format!(
            "{FLEET_CONFIG}: upstream.url = {upstream:?} is not the `{BACKEND}` service"
        ));
    }
    let redis_url = config_str(&config, "store", "redis_url").unwrap_or_default();
    let redis_host = redis_url
        .trim_start_matches("redis://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if redis_host != REDIS || service(&doc, REDIS).is_none() {
        problems.push(format!(
            "{FLEET_CONFIG}: store.redis_url = {redis_url:?} is not the `{REDIS}` service"
        ));
    }
    assert!(
        problems.is_empty(),
        "{}",
        problems_message("the fleet's files disagree", &problems)
    );
}

// ------------------------------------------------------------------------------------------------
// The checks themselves catch what they are for
// ------------------------------------------------------------------------------------------------

const BAD_COMPOSE: &str = r#"
services:
  gateway:
    build: { context: ., dockerfile: Missing.Dockerfile }
    environment:
      BETTER_AUTH_SECRET: not-a-variable-but-a-real-secret-value
    env_file: [no-such.env, { path: optional.env, required: false }]
    volumes:
      - ./no/such/gateway.toml:/etc/authgate/gateway.toml:ro
      - undeclared:/data
      - type: bind
        source: ./no/such/dir
        target: /x
    ports: ["8080:8080"]
    networks: [backend]
    depends_on: [tasks]
  tasks:
    environment:
      - BETTER_AUTH_SECRET=abcdef
      - API_TOKEN=$${NOT_INTERPOLATED}
      - PASSED_THROUGH_SECRET
    ports: ["8000:8000"]
    networks: [backend, edge]
  debug:
    networks: [backend]
networks:
  backend: {}
  edge: {}
"#;

#[test]
fn compose_checks_reject_a_bad_compose_file() {
    let doc = parse_yaml(BAD_COMPOSE, "the bad fixture");
    let expect = |problems: Vec<String>, needles: &[&str]| {
        for needle in needles {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "expected a problem mentioning {needle:?}, got {problems:#?}"
            );
        }
    };
    expect(
        backend_exposure_problems(&doc),
        &["`tasks` publishes ports"],
    );
    expect(
        published_port_problems(&doc, &SINGLE),
        &["`tasks` publishes ports"],
    );
    let secrets = secret_problems(&doc, BAD_COMPOSE, &SINGLE);
    expect(
        secrets.clone(),
        &[
            "service `gateway`: `environment.BETTER_AUTH_SECRET`",
            "service `tasks`: `environment.BETTER_AUTH_SECRET`",
            "service `tasks`: `environment.API_TOKEN`",
            "docker-compose.yml:6: BETTER_AUTH_SECRET",
            "docker-compose.yml:19: BETTER_AUTH_SECRET",
        ],
    );
    assert!(
        !secrets.iter().any(|p| p.contains("PASSED_THROUGH_SECRET")),
        "a pass-through variable is not a literal: {secrets:#?}"
    );
    assert!(
        !secrets
            .iter()
            .any(|p| p.contains("abcdef") || p.contains("real-secret")),
        "problem messages must not repeat the secret: {secrets:#?}"
    );
    expect(
        missing_file_problems(&doc, root()),
        &[
            "dockerfile `Missing.Dockerfile` does not exist",
            "required env_file `no-such.env`",
            "bind-mount source `./no/such/gateway.toml`",
            "bind-mount source `./no/such/dir`",
            "named volume `undeclared`",
        ],
    );
    assert!(
        !missing_file_problems(&doc, root())
            .iter()
            .any(|p| p.contains("optional.env")),
        "an optional env_file may be missing"
    );
    expect(
        backend_network_problems(&doc, &SINGLE),
        &[
            "network `backend`, which is not `internal: true`",
            "network `edge`, which is not `internal: true`",
            "service `debug` shares the network `backend`",
        ],
    );
    expect(
        startup_and_hardening_problems(&doc, &SINGLE),
        &[
            "condition: service_healthy",
            "`tasks` has no healthcheck",
            "`gateway` is not `read_only: true`",
            "`tasks` does not `cap_drop: [ALL]`",
        ],
    );
    // And the good forms pass.
    for good in [
        "${BETTER_AUTH_SECRET}",
        "${BETTER_AUTH_SECRET:?set it}",
        "${BETTER_AUTH_SECRET:-${FALLBACK}}",
        "$BETTER_AUTH_SECRET",
    ] {
        assert!(is_interpolation(good), "{good:?} is an interpolation");
    }
    for bad in ["literal", "${A}suffix", "$$A", "${A", "prefix${A}", "$"] {
        assert!(
            !is_interpolation(bad),
            "{bad:?} is not (only) an interpolation"
        );
    }
}

#[test]
fn compose_checks_reject_a_bad_dockerfile() {
    let bad = "FROM rust:1-slim-bookworm\n\
               RUN cargo build --release\n\
               COPY missing.toml /etc/authgate/gateway.toml\n\
               USER root\n\
               HEALTHCHECK CMD [\"bash\", \"-c\", 'broken']\n\
               ENTRYPOINT /usr/local/bin/authgate\n";
    let problems = dockerfile_problems(bad, root());
    for needle in [
        "1 FROM stage(s)",
        "`USER root` runs the final stage as root",
        "does not probe /healthz",
        "not a valid JSON array",
        "should be a copy of deploy/gateway.compose.toml",
        "release `task-backend` binary",
        "ENTRYPOINT must be",
        "CMD must be",
        "does not EXPOSE 8080",
        "cargo build --release --locked",
        "COPY source `missing.toml` does not exist",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem mentioning {needle:?}, got {problems:#?}"
        );
    }
    // Continuations and comments inside them are joined the way Docker does.
    let parsed = parse_dockerfile("RUN a \\\n # note\n && b\nUSER 10001:10001\n");
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(parsed[0].args, "a && b");
    assert_eq!(parsed[1].keyword, "USER");
}

#[test]
fn compose_checks_reject_unstubbed_targets_and_a_short_stop_grace() {
    let manifest = "[package]\nname = \"x\"\n[[bin]]\nname = \"tool\"\n[[bench]]\nname = \"hot\"\n";
    let dockerfile = "FROM rust AS builder\n\
                      COPY Cargo.toml Cargo.lock ./\n\
                      RUN mkdir -p src/bin && echo 'fn main() {}' > src/bin/tool.rs \\\n\
                      && touch src/lib.rs && cargo build --release --locked \\\n\
                      && rm -rf src\n\
                      COPY src ./src\n\
                      RUN cargo build --release --locked\n";
    let problems = cargo_target_problems(dockerfile, manifest);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no file at `benches/hot.rs`")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`benches/hot.rs` (named by Cargo.toml) is neither copied")),
        "{problems:#?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("src/bin/tool.rs")),
        "a stubbed and copied target is fine: {problems:#?}"
    );

    let doc = parse_yaml(
        "services:\n  gateway:\n    stop_grace_period: 10s\n",
        "the short grace fixture",
    );
    let config: toml::Table = toml::from_str("[limits]\nshutdown_grace = \"30s\"\n").unwrap();
    let problems = stop_grace_problems(&doc, &config, &SINGLE);
    assert!(
        problems.iter().any(|p| p.contains("is not longer than")),
        "{problems:#?}"
    );
    let doc = parse_yaml("services:\n  gateway: {}\n", "the no grace fixture");
    assert!(
        stop_grace_problems(&doc, &config, &SINGLE)
            .iter()
            .any(|p| p.contains("has no `stop_grace_period`")),
        "a missing stop_grace_period is a problem"
    );
    assert_eq!(seconds("250ms"), Some(0.25));
    assert_eq!(seconds("1m"), Some(60.0));
    assert_eq!(seconds("soon"), None);
}

#[test]
fn compose_dockerignore_matching_follows_docker_rules() {
    let rules = "target/\n**/target/\n.env\n**/.env.*\n!deploy/.env.example\n*.pem\n";
    for excluded in [
        "target",
        "target/x",
        "fuzz/target/y",
        ".env",
        "deploy/.env.local",
        "k.pem",
    ] {
        assert!(
            dockerignore_excludes(rules, excluded),
            "{excluded} should be excluded"
        );
    }
    for kept in [
        "src/main.rs",
        "deploy/.env.example",
        "deploy/k.pem",
        "Cargo.toml",
    ] {
        assert!(!dockerignore_excludes(rules, kept), "{kept} should be kept");
    }
}
