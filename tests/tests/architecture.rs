//! The runtime crate's layout, checked: every `crate::` or `super::` path in
//! `eventrabbit/src` points down the layers (or within its own folder), no module imports
//! through `lib.rs`'s re-exports, and no two modules import each other, directly or in a
//! ring. A failure names the modules and the path that breaks the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders (and root modules) of the runtime, bottom first. A module may use what a
/// lower layer holds and what its own folder holds; never a higher layer or a sibling
/// folder of the same rank.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("wire", 1),
    ("config", 2),
    ("handler", 3),
    ("telemetry", 4),
    ("contract", 4),
    ("pipeline", 5),
    ("sourcing", 5),
    ("amqp", 6),
    ("testing", 6),
    ("stream", 6),
    ("api", 7),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../eventrabbit/src")
}

/// `amqp/publisher.rs` → `["amqp", "publisher"]`; `amqp/mod.rs` → `["amqp"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts at `crate::` or `super::` in `code`, with `{..}` groups
/// expanded: `crate::a::{b, c::D}` → `[crate, a, b]`, `[crate, a, c, D]`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let head = ["crate::", "super::"]
            .into_iter()
            .find(|h| rest.starts_with(h));
        match head {
            Some(h) if starts_word => {
                let root = h.trim_end_matches("::").to_owned();
                let (tree, used) = parse_tree(&rest[h.len()..]);
                for mut p in tree {
                    p.insert(0, root.clone());
                    out.push(p);
                }
                i += h.len() + used.max(1);
            }
            _ => i += 1,
        }
    }
    out
}

/// Parses `a::b::{c, d::e}` at the start of `s`: the paths and how many bytes were read.
fn parse_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            i += 1;
            let mut all = Vec::new();
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (sub, used) = parse_tree(&s[i..]);
                i += used.max(1);
                for p in sub {
                    let mut full = prefix.clone();
                    full.extend(p);
                    all.push(full);
                }
            }
            return (all, i);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(s[start..i].to_owned());
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

struct Layout {
    /// Every module of the crate, as its path.
    modules: BTreeSet<Vec<String>>,
    /// Module → the modules it uses, with the path that shows it.
    uses: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
    /// Paths that do not resolve to a module (through `lib.rs`'s re-exports).
    through_root: Vec<(Vec<String>, String)>,
}

fn layout() -> Layout {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut modules = BTreeSet::new();
    let mut texts = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&root).expect("under src").to_path_buf();
        if rel == Path::new("lib.rs") {
            continue;
        }
        let module = module_of(&rel);
        let is_mod_file = rel.file_name().is_some_and(|f| f == "mod.rs");
        modules.insert(module.clone());
        texts.push((
            module,
            is_mod_file,
            std::fs::read_to_string(&path).expect("read"),
        ));
    }
    let mut uses: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    let mut through_root = Vec::new();
    for (module, is_mod_file, text) in &texts {
        let edges = uses.entry(module.clone()).or_default();
        for path in paths(&code(text)) {
            // `super` of `a/b.rs` is `a`; of `a/mod.rs`, the crate root: one step up either way.
            let mut resolved: Vec<String> = match path[0].as_str() {
                "crate" => Vec::new(),
                _ => {
                    let mut parent = module.clone();
                    parent.pop();
                    parent
                }
            };
            resolved.extend(path[1..].iter().cloned());
            // The deepest prefix that is a module of the crate.
            let target = (1..=resolved.len())
                .rev()
                .map(|n| resolved[..n].to_vec())
                .find(|p| modules.contains(p));
            let shown = path.join("::");
            match target {
                Some(t) if t != *module => {
                    // A folder's `mod.rs` declares and re-exports its own children.
                    let own_child = *is_mod_file && t.starts_with(module) && t.len() > module.len();
                    if !own_child {
                        edges.entry(t).or_insert(shown);
                    }
                }
                Some(_) => {}
                None if path[0] == "crate" => through_root.push((module.clone(), shown)),
                None => {}
            }
        }
    }
    Layout {
        modules,
        uses,
        through_root,
    }
}

fn rank(module: &[String]) -> u8 {
    let top = module.first().map(String::as_str).unwrap_or("");
    LAYERS
        .iter()
        .find(|(name, _)| *name == top)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("module `{top}` is in no layer: add it to LAYERS"))
}

#[test]
fn every_module_belongs_to_a_layer_and_imports_point_down() {
    let layout = layout();
    assert!(
        layout.modules.len() > 20,
        "the check found the sources: {:?}",
        layout.modules
    );
    let mut wrong = Vec::new();
    for (from, targets) in &layout.uses {
        for (to, shown) in targets {
            let same_folder = from[0] == to[0];
            if !same_folder && rank(to) >= rank(from) {
                wrong.push(format!(
                    "{} (layer {}) uses {} (layer {}) via `{shown}`",
                    from.join("::"),
                    rank(from),
                    to.join("::"),
                    rank(to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_through_the_crate_root() {
    let layout = layout();
    let wrong: Vec<String> = layout
        .through_root
        .iter()
        .map(|(m, p)| {
            format!(
                "{} uses `{p}`: import it from the module that defines it",
                m.join("::")
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn there_is_no_import_cycle() {
    let layout = layout();
    // Depth-first search for a back edge; the cycle is reported in full.
    fn visit(
        node: &Vec<String>,
        uses: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in uses.get(node).into_iter().flat_map(|t| t.keys()) {
            if let Some(c) = visit(next, uses, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in layout.uses.keys() {
        if let Some(cycle) = visit(node, &layout.uses, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_path_parser_expands_groups() {
    let got = paths("use crate::a::{b, c::{D, e}};\nlet x = super::f::G::new();");
    let shown: Vec<String> = got.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        [
            "crate::a::b",
            "crate::a::c::D",
            "crate::a::c::e",
            "super::f::G::new"
        ]
    );
}
