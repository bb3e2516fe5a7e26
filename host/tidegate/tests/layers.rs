//! The dependency rule (ARCHITECTURE.md, "Layers"): each top-level module of the `tidegate`
//! crate imports only modules of its own layer or of layers below it, and the modules do not
//! import each other in a circle. Read from the source's `crate::` paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules and their layers, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("wire", 0),
    ("clock", 0),
    ("upstream", 1),
    ("policy", 2),
    ("cache", 2),
    ("audit", 2),
    ("timescale", 2),
    ("client", 3),
    ("http", 3),
    ("broker", 4),
    ("fuzzing", 4),
    ("cli", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`src/client/session.rs` → `client`).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every `crate::<module>` the text names, outside comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `tidegate_crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::x, b}`: each first segment.
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn no_module_imports_a_higher_layer_and_none_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(from) = owner(&src, file) else {
            continue;
        };
        let Some(from_layer) = layer(&from) else {
            wrong.push(format!(
                "{}: module {from} has no layer in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for to in imports(&text) {
            if to == from || to == "config" {
                continue;
            }
            match layer(&to) {
                None => wrong.push(format!("{}: crate::{to} has no layer", file.display())),
                Some(l) if l > from_layer => wrong.push(format!(
                    "{}: {from} (layer {from_layer}) imports {to} (layer {l})",
                    file.display()
                )),
                Some(_) => {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    // Same-layer imports must not close a circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            circles.push(format!("{} -> {m}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(m.to_owned()) {
            return;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    wrong.extend(circles.into_iter().map(|c| format!("circle: {c}")));
    assert!(
        wrong.is_empty(),
        "the dependency rule is broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_reader_sees_groups_and_skips_comments() {
    let text = "use crate::{wire::proto, upstream};\n// crate::cli in a comment\nlet x = crate::cache::Cache::new();";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["cache", "upstream", "wire"]);
}

/// Byte literals of letters and digits (`b'Z'`), outside comments: the form a protocol tag,
/// transaction status or field code takes when it is matched raw.
fn tag_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("").as_bytes();
        for w in code.windows(4) {
            if w[0] == b'b' && w[1] == b'\'' && w[2].is_ascii_alphanumeric() && w[3] == b'\'' {
                out.push(String::from_utf8_lossy(w).into_owned());
            }
        }
    }
    out
}

/// Modules that handle protocol messages: they name message kinds through `wire::kind`, and
/// no raw tag byte appears outside `wire/` (item "a typed enum: no raw tag bytes outside it").
#[test]
fn protocol_code_outside_wire_names_message_kinds_not_tag_bytes() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in ["client", "upstream", "cache", "policy", "audit", "broker"] {
        sources(&src.join(dir), &mut files);
    }
    files.push(src.join("http/wire.rs"));
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for lit in tag_literals(&text) {
            found.push(format!("{}: {lit}", file.display()));
        }
    }
    assert!(found.is_empty(), "raw tag bytes outside wire/: {found:#?}");
}

#[test]
fn the_tag_reader_finds_byte_literals_outside_comments() {
    let text = "match t { b'Z' => 1, _ => 0 } // b'Q' in a comment\nlet s = b\"Q\";";
    assert_eq!(tag_literals(text), vec!["b'Z'".to_owned()]);
}
