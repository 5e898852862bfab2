//! House rules, checked on every test run: each source file opens with a `//!` doc saying what
//! it is for, no debugging or placeholder macros in `src/`, and `unsafe` only in the kernels.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

fn sources(folder: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join(folder), &mut files);
    files.sort();
    files.into_iter().map(|path| (path.clone(), fs::read_to_string(&path).unwrap())).collect()
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for folder in ["src", "tests", "benches", "loadgen/src", "loadgen/tests"] {
        if !Path::new(env!("CARGO_MANIFEST_DIR")).join(folder).exists() {
            continue;
        }
        for (path, text) in sources(folder) {
            if !text.trim_start().starts_with("//!") {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "files without a leading `//!` doc: {missing:#?}");
}

#[test]
fn no_placeholder_or_debug_macros_in_src() {
    let banned = [concat!("todo", "!("), concat!("unimplemented", "!("), concat!("dbg", "!(")];
    let mut offenders = Vec::new();
    for (path, text) in sources("src").into_iter().chain(sources("loadgen/src")) {
        for (line_idx, line) in text.lines().enumerate() {
            if banned.iter().any(|macro_call| line.contains(macro_call)) {
                offenders.push(format!("{}:{}: {}", path.display(), line_idx + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn unsafe_only_in_kernels() {
    let keyword = concat!("unsafe", " ");
    let mut offenders = Vec::new();
    for (path, text) in sources("src") {
        let in_kernels = path.components().any(|part| part.as_os_str() == "kernels");
        if !in_kernels && text.lines().any(|line| !line.trim_start().starts_with("//") && line.contains(keyword)) {
            offenders.push(path.display().to_string());
        }
    }
    assert!(offenders.is_empty(), "`unsafe` outside src/store/kernels: {offenders:#?}");
}
