//! Imports point down only, and no two files import each other: checked over
//! the sources' `use` lines and `crate::`/`super::` paths (tests excluded).
//!
//! Each top-level module has a layer; a module may import its own layer and
//! those below. The controllers share a layer and import none of each other;
//! the runtime imports nothing of the domain.
//! A new module gets a layer here, or the check fails naming it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The top-level modules, from the top down (docs/architecture.md, "The layers").
const LAYERS: &[(u8, &[&str])] = &[
    (5, &["cli", "registry"]),
    // The controllers: none imports another.
    (4, &["registration", "consent"]),
    (3, &["authserver"]),
    // The runtime and the read model over the caches.
    (2, &["runtime", "cluster"]),
    (1, &["credentials"]),
    (0, &["api"]),
];

const CONTROLLERS: &[&str] = &["registration", "consent"];

/// The runtime knows no domain type: it imports only itself and `api::keys`
/// (the contract's names).
const RUNTIME: &str = "runtime";

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(_, modules)| modules.contains(&module)).map(|(layer, _)| *layer)
}

/// Every source file of the library (not src/bin/), by its module path.
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            // This file is test code itself.
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("src/layering.rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src/").with_extension("");
            let mut module: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|last| last == "mod" || last == "lib") {
                module.pop();
            }
            files.insert(module, path);
        }
    }
    files
}

/// The code of a file without comments, string literals and its test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            ('"', _) => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                code.push_str("\"\"");
            }
            // A char literal ('"', '{') or a lifetime: skip a quoted char.
            ('\'', Some(_)) => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') || rest.chars().nth(1) == Some('\'') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                } else {
                    code.push(c);
                }
            }
            _ => code.push(c),
        }
    }
    code
}

/// Splits `a, b::{c, d}` at the commas outside braces.
fn split_top(list: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// The paths a `use` tree names, e.g. `crate::{a::B, c::{d, e}}`.
fn expand(prefix: &[String], tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut prefix = prefix.to_vec();
        prefix.extend(head.split("::").filter(|s| !s.is_empty()).map(str::to_owned));
        return split_top(inner).into_iter().flat_map(|part| expand(&prefix, part)).collect();
    }
    let leaf = tree.split(" as ").next().unwrap_or(tree);
    let mut path = prefix.to_vec();
    path.extend(leaf.split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
    vec![path]
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths `code` names that start at `crate`, `super` or `self`.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let squeezed: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut rest = squeezed.as_str();
    // `use` statements, whole trees.
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(is_ident) {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree = rest[..end].trim();
        if ["crate::", "super::", "self::"].iter().any(|root| tree.starts_with(root)) {
            paths.extend(expand(&[], tree));
        }
        rest = &rest[end..];
    }
    // Paths in code: `crate::a::b(..)`, `super::layout::X`.
    for root in ["crate::", "super::"] {
        let mut rest = squeezed.as_str();
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(is_ident(c) || c == ':')).unwrap_or(tail.len());
            if !before.is_some_and(|c| is_ident(c) || c == ':') {
                paths.push(tail[..end].split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
            }
            rest = &rest[at + root.len()..];
        }
    }
    paths
}

/// The file a path leads to: the longest prefix that is a module.
fn resolve(files: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|prefix| files.contains_key(prefix))
}

/// Which module each module's file imports (its own file excluded).
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_files(&src);
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        let code = code_of(&std::fs::read_to_string(file).expect("read"));
        let mut to = BTreeSet::new();
        for path in paths_in(&code) {
            let absolute: Vec<String> = match path.first().map(String::as_str) {
                Some("crate") => path[1..].to_vec(),
                Some("super") => {
                    let mut absolute = module[..module.len().saturating_sub(1)].to_vec();
                    absolute.extend(path[1..].iter().cloned());
                    absolute
                }
                Some("self") => {
                    let mut absolute = module.clone();
                    absolute.extend(path[1..].iter().cloned());
                    absolute
                }
                _ => continue,
            };
            if let Some(target) = resolve(&files, &absolute)
                && &target != module
                && !target.is_empty()
            {
                to.insert(target);
            }
        }
        graph.insert(module.clone(), to);
    }
    graph
}

#[test]
fn no_module_imports_upward_no_controller_another_and_the_runtime_no_domain() {
    let mut wrong = Vec::new();
    for (from, to) in imports() {
        let Some(from_top) = from.first() else { continue };
        let Some(from_layer) = layer(from_top) else {
            wrong.push(format!("src/{from_top}: no layer in src/layering.rs"));
            continue;
        };
        for target in to {
            let to_top = &target[0];
            if to_top == from_top {
                continue;
            }
            match layer(to_top) {
                None => wrong.push(format!("src/{to_top}: no layer in src/layering.rs")),
                Some(to_layer) if to_layer > from_layer => {
                    wrong.push(format!("{} imports {} (upward)", from.join("::"), target.join("::")))
                }
                Some(_) if from_top == RUNTIME && target.as_slice() != ["api", "keys"] => wrong.push(format!(
                    "{} imports {} (the runtime knows no domain type)",
                    from.join("::"),
                    target.join("::")
                )),
                Some(_) if CONTROLLERS.contains(&from_top.as_str()) && CONTROLLERS.contains(&to_top.as_str()) => wrong
                    .push(format!("{} imports {} (a controller imports another)", from.join("::"), target.join("::"))),
                Some(_) => {}
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports that do not point down:\n{}", wrong.join("\n"));
}

#[test]
fn no_files_import_each_other() {
    let graph = imports();
    // Depth-first search for a cycle, reporting the first found.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        trail: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = trail.iter().position(|n| n == node) {
            let mut cycle = trail[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        trail.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            // A file may use items of the modules above it (a parent's re-exports are not an import cycle).
            if node.starts_with(next) {
                continue;
            }
            if let Some(cycle) = visit(next, graph, trail, done) {
                return Some(cycle);
            }
        }
        trail.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("files import each other: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_parser_reads_use_trees_and_paths_in_code() {
    let code = code_of(
        "use crate::{api::{keys::X, Y}, credentials as c};\n// use crate::hidden;\nuse super::plan::Z;\n\
         fn f() { let s = \"crate::in_a_string\"; crate::runtime::metrics::count(); super::layout::M; }\n\
         #[cfg(test)]\nmod tests { use crate::only_in_tests; }",
    );
    let paths: BTreeSet<String> = paths_in(&code).iter().map(|p| p.join("::")).collect();
    let want = [
        "crate::api::keys::X",
        "crate::api::Y",
        "crate::credentials",
        "super::plan::Z",
        "crate::runtime::metrics::count",
        "super::layout::M",
    ];
    for path in want {
        assert!(paths.contains(path), "{path} not in {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.contains("hidden") || p.contains("in_a_string") || p.contains("only_in_tests")));
}
