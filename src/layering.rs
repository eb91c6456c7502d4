//! The module tree's import rule, checked on the source so a cycle fails the
//! build's tests instead of growing quietly.
//!
//! Every top-level module has a layer; a module may import (`crate::X`)
//! only modules of a lower layer, so imports run one way and no cycle can
//! form. The layers, bottom to top, follow a credential's path:
//!
//! 0. leaves that import nothing of rekey's: `fs` (bounded reads, atomic
//!    writes), `timestamp`, `exec`, `failpoint`, `heap`, `journald`,
//!    `logfmt`;
//! 1. `config`: the validated config. Its one import is `fs`, which config
//!    needs to read its files safely; `fs` itself imports nothing;
//! 2. values over the config: `cert`, `budget`, `status`, `token`;
//! 3. `keystore`, `schedule`, `certview`, `watched`;
//! 4. `store` (every byte on disk), `net` (outbound connections),
//!    `metrics`;
//! 5. the backends: `issuer`, `handoff`, `alert`;
//! 6. `audit`;
//! 7. `engine`;
//! 8. `monitor`, `watch`;
//! 9. `server`;
//! 10. `daemon` (the composition root);
//! 11. `cli`, whose only user is `main.rs`.
//!
//! Unit tests (`tests.rs`, `*_tests.rs`, `tests_*.rs`, `tests/`, and a
//! file's `mod tests` block) may import anything. `anyhow` is allowed only
//! in `main.rs` and `cli/`: everything below reports typed errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layer of each top-level module (see the module doc).
const LAYERS: &[(&str, u8)] = &[
    ("exec", 0),
    ("failpoint", 0),
    ("fs", 0),
    ("heap", 0),
    ("journald", 0),
    ("timestamp", 0),
    ("logfmt", 0),
    ("config", 1),
    ("budget", 2),
    ("cert", 2),
    ("status", 2),
    ("token", 2),
    ("certview", 3),
    ("keystore", 3),
    ("schedule", 3),
    ("watched", 3),
    ("metrics", 4),
    ("net", 4),
    ("store", 4),
    ("alert", 5),
    ("handoff", 5),
    ("issuer", 5),
    ("audit", 6),
    ("engine", 7),
    ("monitor", 8),
    ("watch", 8),
    ("server", 9),
    ("daemon", 10),
    ("cli", 11),
];

/// Files included with `#[path]` by another top-level module.
const INCLUDED: &[(&str, &str)] = &[("metrics_watch", "metrics")];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(rel: &Path) -> bool {
    let name = rel.file_name().unwrap().to_string_lossy();
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name.starts_with("tests_")
        || rel
            .parent()
            .is_some_and(|d| d.components().any(|c| c.as_os_str() == "tests"))
}

/// The top-level module a file under `src/` belongs to (`None` for the
/// crate roots).
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    if name == "lib" || name == "main" {
        return None;
    }
    Some(
        INCLUDED
            .iter()
            .find(|(file, _)| *file == name)
            .map_or(name, |(_, owner)| owner.to_string()),
    )
}

/// The source without comment lines and without a trailing `mod tests` block.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names as `crate::X` or `crate::{X, ...}`.
fn imports(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for part in code.split("crate::").skip(1) {
        if let Some(group) = part.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(group.split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            out.push(ident(part));
        }
    }
    out
}

/// Every import that breaks the layer order, as "file: X imports Y".
fn violations() -> Vec<String> {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut bad = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&root).unwrap().to_path_buf();
        if is_test_file(&rel) || rel == Path::new("layering.rs") {
            continue;
        }
        let Some(module) = top_module(&rel) else {
            continue;
        };
        let Some(&own) = layers.get(module.as_str()) else {
            bad.push(format!(
                "{}: module `{module}` has no layer; add it to LAYERS in src/layering.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for dep in imports(&code(&text)) {
            if dep == module {
                continue;
            }
            match layers.get(dep.as_str()) {
                Some(&layer) if layer < own => {}
                Some(&layer) => bad.push(format!(
                    "{}: `{module}` (layer {own}) imports `{dep}` (layer {layer}); imports must go to a lower layer",
                    rel.display()
                )),
                None => bad.push(format!(
                    "{}: `{module}` imports `crate::{dep}`, which has no layer",
                    rel.display()
                )),
            }
        }
    }
    bad
}

#[test]
fn imports_only_go_down_the_layers() {
    let bad = violations();
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn every_module_in_lib_rs_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    for line in lib.lines() {
        let decl = line
            .trim()
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ");
        if let Some(name) = decl.strip_prefix("mod ") {
            let name = name.trim_end_matches(';');
            if name == "layering" {
                continue;
            }
            assert!(
                LAYERS.iter().any(|(m, _)| *m == name),
                "lib.rs declares `{name}`, which has no layer in src/layering.rs"
            );
        }
    }
}

#[test]
fn anyhow_only_at_the_top() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for path in files {
        let rel = path.strip_prefix(&root).unwrap();
        if rel == Path::new("main.rs") || rel.starts_with("cli") || rel == Path::new("layering.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !code(&text).contains("anyhow"),
            "{} uses anyhow; below cli/ errors are typed (thiserror)",
            rel.display()
        );
    }
}

#[test]
fn the_parser_sees_both_import_forms() {
    let src = "use crate::config::Config;\n// use crate::engine::X;\nuse crate::{cert, store::Store};\nlet t = crate::timestamp::rfc3339(now);";
    assert_eq!(
        imports(&code(src)),
        ["config", "cert", "store", "timestamp"]
    );
}
