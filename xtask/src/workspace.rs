//! What the workspace holds right now, discovered rather than hard-coded: member crates under
//! `crates/*`, their loom tests, cargo-fuzz dirs and fuzz targets.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::Cmd;

#[derive(Debug)]
pub struct Workspace {
    /// Absolute path of the workspace root; every command runs from here.
    pub root: PathBuf,
    /// Cargo's target dir: `$CARGO_TARGET_DIR` or `<root>/target`.
    pub target_dir: PathBuf,
    /// Name of the facade package in the root `Cargo.toml` (its sources are `src/`).
    pub facade: Option<String>,
    pub crates: Vec<Crate>,
}

#[derive(Debug, Clone)]
pub struct Crate {
    pub name: String,
    /// Relative to the root, with `/`: `crates/ferry-ring`.
    pub dir: String,
    pub has_loom_tests: bool,
    pub fuzz: Option<FuzzDir>,
}

#[derive(Debug, Clone)]
pub struct FuzzDir {
    /// Relative to the root: `crates/ferry-ring/fuzz`.
    pub dir: String,
    pub targets: Vec<String>,
}

impl Workspace {
    pub fn discover() -> Result<Self, String> {
        // xtask lives in `<root>/xtask`.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask's manifest dir has no parent")?
            .to_path_buf();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        let facade = fs::read_to_string(root.join("Cargo.toml"))
            .ok()
            .and_then(|text| package_name(&text));
        let mut crates = Vec::new();
        let entries = fs::read_dir(root.join("crates"))
            .map_err(|e| format!("cannot list {}/crates: {e}", root.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(manifest) = fs::read_to_string(path.join("Cargo.toml")) else {
                continue;
            };
            let Some(name) = package_name(&manifest) else {
                continue;
            };
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let dir = format!("crates/{dir_name}");
            let fuzz = fs::read_to_string(path.join("fuzz/Cargo.toml"))
                .ok()
                .map(|text| FuzzDir {
                    dir: format!("{dir}/fuzz"),
                    targets: bin_names(&text),
                });
            crates.push(Crate {
                name,
                has_loom_tests: path.join("tests/loom.rs").is_file(),
                dir,
                fuzz,
            });
        }
        crates.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            root,
            target_dir,
            facade,
            crates,
        })
    }

    pub fn has_crate(&self, name: &str) -> bool {
        self.crates.iter().any(|c| c.name == name)
    }

    /// The crates of `wanted` that exist in this workspace, in `wanted`'s order.
    pub fn present<'a>(&self, wanted: &[&'a str]) -> Vec<&'a str> {
        wanted
            .iter()
            .copied()
            .filter(|c| self.has_crate(c))
            .collect()
    }

    /// A path for command lines: relative to the root when it is inside it.
    pub fn show(&self, path: &Path) -> String {
        let shown = path.strip_prefix(&self.root).unwrap_or(path);
        shown.to_string_lossy().replace('\\', "/")
    }
}

/// The host's target triple, from `rustc -vV`.
pub fn host_triple() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Cmd::new(&rustc).arg("-vV").read()?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
}

/// `name = "…"` of the `[package]` table (a deliberately tiny TOML reader: the manifests are ours).
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = key_value(line, "name") {
            return Some(value);
        }
    }
    None
}

/// The `name`s of all `[[bin]]` tables: cargo-fuzz declares one per fuzz target.
pub fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = key_value(line, "name") {
            names.push(value);
        }
    }
    names
}

/// `key = "value"` → `value` (also accepts single quotes; ignores a trailing comment).
fn key_value(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    if k.trim() != key {
        return None;
    }
    let v = v.trim();
    let quote = v.chars().next().filter(|&c| c == '"' || c == '\'')?;
    let inner = &v[1..];
    inner.find(quote).map(|end| inner[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUZZ_MANIFEST: &str = r#"
[package]
name = "ferry-ring-fuzz"
version = "0.0.0"

[package.metadata]
cargo-fuzz = true

[dependencies]
libfuzzer-sys = "0.4"
ferry-ring = { path = ".." }

[workspace]
members = ["."]

[[bin]]
name = "ring_ops"   # comment
path = "fuzz_targets/ring_ops.rs"
test = false

[[bin]]
path = "fuzz_targets/peer_garbage.rs"
name = 'peer_garbage'
"#;

    #[test]
    fn reads_package_and_fuzz_target_names() {
        assert_eq!(
            package_name(FUZZ_MANIFEST).as_deref(),
            Some("ferry-ring-fuzz")
        );
        assert_eq!(bin_names(FUZZ_MANIFEST), vec!["ring_ops", "peer_garbage"]);
        assert_eq!(package_name("[workspace]\nname = \"x\"\n"), None);
        assert!(bin_names("[package]\nname = \"x\"\n").is_empty());
    }

    #[test]
    fn discovers_this_workspace() {
        let ws = Workspace::discover().unwrap();
        assert!(ws.root.join("Cargo.toml").is_file());
        assert!(ws.crates.iter().all(|c| c.dir.starts_with("crates/")));
        assert_eq!(ws.show(&ws.root.join("target/loom")), "target/loom");
    }
}
