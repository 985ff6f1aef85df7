//! The structure rule of `src/`: layers import only themselves and the layers below them, and no
//! folder has an import cycle among its files and subfolders. Read from the source text: every
//! `crate::`, `super::` and `self::` path outside comments counts, in `use` lines and inline.
//!
//! Layers, bottom up: core, config, request, proxy, runtime, demo, tools. `lib.rs`, `main.rs` and
//! `bin/` stand above them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 7] = [
    "core", "config", "request", "proxy", "runtime", "demo", "tools",
];

/// A source file as a module path: `src/request/authz/json.rs` is `request::authz::json`,
/// `src/request/authz/mod.rs` is `request::authz`.
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    /// `mod.rs`: its module is its folder.
    is_folder_root: bool,
    text: String,
}

fn source_files(root: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under src/");
            let mut module: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let is_folder_root = module.last().is_some_and(|last| last == "mod");
            if is_folder_root {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            files.push(SourceFile {
                path,
                module,
                is_folder_root,
                text,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The code of a line without its `//` comment (string literals holding `//` only lose their
/// tail, which never holds a path).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// Every module path a line refers to, made absolute (`crate::` dropped), with the `{...}` of a
/// `use` group expanded.
fn references(line: &str, module: &[String], is_folder_root: bool) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let mut index = 0;
    while index < line.len() {
        let rest = &line[index..];
        let starts_word = index == 0
            || !(bytes[index - 1].is_ascii_alphanumeric()
                || bytes[index - 1] == b'_'
                || bytes[index - 1] == b':');
        let base: Option<(Vec<String>, usize)> = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") || rest.starts_with("self::") {
            // `self` of a file is its module; `super` its parent (for mod.rs, the folder's).
            let mut here = module.to_vec();
            let mut consumed = 0;
            if rest.starts_with("self::") {
                consumed = "self::".len();
            } else {
                while line[index + consumed..].starts_with("super::") {
                    here.pop();
                    consumed += "super::".len();
                }
            }
            let _ = is_folder_root;
            Some((here, consumed))
        } else {
            None
        };
        let Some((prefix, consumed)) = base else {
            index += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let tail = &line[index + consumed..];
        for path in expand(tail) {
            let mut full = prefix.clone();
            full.extend(path);
            if !full.is_empty() {
                found.push(full);
            }
        }
        index += consumed;
    }
    found
}

/// `a::b::C`, or `{a::b, c::{d, e}}`, into the paths it names.
fn expand(tail: &str) -> Vec<Vec<String>> {
    let ident_end = |text: &str| {
        text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len())
    };
    let mut path = Vec::new();
    let mut rest = tail;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (at, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = at;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &group[..end];
            let mut items = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            for (at, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..at]);
                        start = at + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            return items
                .into_iter()
                .map(str::trim)
                .filter(|item| !item.is_empty() && *item != "self")
                .flat_map(|item| {
                    expand(item).into_iter().map(|sub| {
                        let mut full = path.clone();
                        full.extend(sub);
                        full
                    })
                })
                .chain(std::iter::once(path.clone()))
                .collect();
        }
        let end = ident_end(rest);
        if end == 0 {
            return vec![path];
        }
        path.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => return vec![path],
        }
    }
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

fn layer_of(module: &[String]) -> Option<usize> {
    let first = module.first()?;
    LAYERS.iter().position(|layer| layer == first)
}

struct Findings {
    upward: Vec<String>,
    /// Folder -> edges between its children (a child module or subfolder, or `mod` for the
    /// folder's own mod.rs), each with one place that makes it.
    edges: BTreeMap<Vec<String>, BTreeMap<(String, String), String>>,
}

fn check(files: &[SourceFile]) -> Findings {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|file| file.module.clone()).collect();
    let mut findings = Findings {
        upward: Vec::new(),
        edges: BTreeMap::new(),
    };
    for file in files {
        let own_layer = layer_of(&file.module);
        let top = own_layer.is_none();
        for (number, line) in file.text.lines().enumerate() {
            let code = code_of(line);
            for reference in references(code, &file.module, file.is_folder_root) {
                let target = resolve(&reference, &modules);
                let place = format!(
                    "{}:{}: {}",
                    file.path.display(),
                    number + 1,
                    reference.join("::")
                );
                // A path through a `lib.rs` re-export hides which layer it reaches.
                if !top
                    && !reference.is_empty()
                    && target.is_empty()
                    && LAYERS.iter().all(|l| *l != reference[0])
                {
                    findings.upward.push(format!(
                        "{place} (not a layer's path: import it from the layer that defines it)"
                    ));
                }
                if let (false, Some(own), Some(theirs)) = (top, own_layer, layer_of(&target)) {
                    if theirs > own {
                        findings.upward.push(format!(
                            "{place} ({} imports {}, a higher layer)",
                            LAYERS[own], LAYERS[theirs]
                        ));
                    }
                }
                // Within each folder that holds this file: its child (or `mod`) -> the child the
                // reference lands in.
                for depth in 0..file.module.len() + usize::from(file.is_folder_root) {
                    let folder = &file.module[..depth.min(file.module.len())];
                    let own_node = match file.module.get(depth) {
                        Some(child) => child.clone(),
                        None => "mod".to_string(),
                    };
                    if !target.starts_with(folder) {
                        continue;
                    }
                    let their_node = match target.get(depth) {
                        Some(child) => child.clone(),
                        None => "mod".to_string(),
                    };
                    if own_node != their_node {
                        findings
                            .edges
                            .entry(folder.to_vec())
                            .or_default()
                            .entry((own_node, their_node))
                            .or_insert_with(|| place.clone());
                    }
                }
            }
        }
    }
    findings
}

/// One cycle in a folder's graph, as the places that make its edges.
fn find_cycle(edges: &BTreeMap<(String, String), String>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = stack.iter().position(|on| *on == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for to in next.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(to, next, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for start in next.keys() {
        if let Some(cycle) = visit(start, &next, &mut Vec::new(), &mut done) {
            return Some(
                cycle
                    .windows(2)
                    .map(|pair| edges[&(pair[0].to_string(), pair[1].to_string())].clone())
                    .collect(),
            );
        }
    }
    None
}

#[test]
fn layers_import_only_downwards_and_no_folder_has_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&src);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let findings = check(&files);
    let mut problems = findings.upward;
    for (folder, edges) in &findings.edges {
        if let Some(cycle) = find_cycle(edges) {
            problems.push(format!(
                "a cycle in src/{}: {}",
                folder.join("/"),
                cycle.join("  ->  ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} structure problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker itself finds what it must: an upward import, and a cycle between two files.
#[test]
fn the_checker_finds_upward_imports_and_cycles() {
    let file = |path: &str, text: &str| {
        let mut module: Vec<String> = path
            .trim_end_matches(".rs")
            .split('/')
            .map(String::from)
            .collect();
        let is_folder_root = module.last().is_some_and(|last| last == "mod");
        if is_folder_root {
            module.pop();
        }
        SourceFile {
            path: PathBuf::from(path),
            module,
            is_folder_root,
            text: text.to_string(),
        }
    };
    let files = [
        file(
            "core/error.rs",
            "use crate::request::auth::TokenError; // upward\n",
        ),
        file(
            "request/auth/mod.rs",
            "pub use crate::core::error::GatewayError;\n",
        ),
        file("request/a.rs", "use crate::request::{b::X, auth};\n"),
        file("request/b.rs", "fn f() { super::a::g() }\n"),
        file("request/c.rs", "// use crate::proxy::x; in a comment\n"),
        file("proxy/x.rs", "use crate::request::a;\n"),
        file(
            "proxy/y.rs",
            "use crate::upstream::h1; // a lib.rs re-export\n",
        ),
    ];
    let findings = check(&files);
    assert_eq!(findings.upward.len(), 2, "{:?}", findings.upward);
    assert!(findings.upward[0].starts_with("core/error.rs:1: request::auth::TokenError"));
    assert!(findings.upward[1].contains("not a layer's path"));
    let request = &findings.edges[&vec!["request".to_string()]];
    let cycle = find_cycle(request).expect("a <-> b is a cycle");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
    // The upward import also closes a cycle between the layers themselves.
    let layers = find_cycle(&findings.edges[&Vec::new()]).expect("core <-> request");
    assert_eq!(layers.len(), 2, "{layers:?}");
}
