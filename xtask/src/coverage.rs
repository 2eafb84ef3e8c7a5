//! Line coverage per crate from an LCOV file (written by `cargo llvm-cov --lcov`), checked against
//! the floors in `xtask/coverage-floors.toml`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::workspace::Workspace;

pub const FLOORS_FILE: &str = "xtask/coverage-floors.toml";

/// A crate without a floor gets one suggested once its coverage reaches this.
const SUGGEST_FLOOR_FROM: f64 = 90.0;

pub const RAISING_FLOORS: &str = "\
Coverage floors only go up. When a crate's line coverage rises, raise its floor in
xtask/coverage-floors.toml to the new figure rounded DOWN to a whole percent, in the same
commit. Never lower a floor to get CI green: add tests for the uncovered lines instead
(`cargo llvm-cov --open -p <crate>` shows them).";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    pub found: u64,
    pub hit: u64,
}

impl Lines {
    pub fn percent(self) -> Option<f64> {
        (self.found > 0).then(|| 100.0 * self.hit as f64 / self.found as f64)
    }
}

/// Per-file `(path, lines)` from LCOV `SF:`, `LF:` and `LH:` records.
pub fn parse_lcov(text: &str) -> Vec<(String, Lines)> {
    let mut files = Vec::new();
    let mut current: Option<(String, Lines)> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(path) = line.strip_prefix("SF:") {
            current = Some((path.replace('\\', "/"), Lines::default()));
        } else if let Some(n) = line.strip_prefix("LF:") {
            if let (Some((_, lines)), Ok(n)) = (current.as_mut(), n.parse()) {
                lines.found = n;
            }
        } else if let Some(n) = line.strip_prefix("LH:") {
            if let (Some((_, lines)), Ok(n)) = (current.as_mut(), n.parse()) {
                lines.hit = n;
            }
        } else if line == "end_of_record"
            && let Some(file) = current.take()
        {
            files.push(file);
        }
    }
    files
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A library crate under `crates/`: floors apply, a missing floor is warned about.
    Crate,
    /// The facade (`src/`), `xtask/` and anything else: listed, floors apply only if recorded.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub kind: Kind,
    pub lines: Lines,
}

/// Sums per-file lines into groups by directory: `crates/<dir>/` → that crate's package name,
/// `src/` → the facade, `xtask/` → xtask, anything else in the workspace → `other (<dir>/)`.
pub fn group(files: &[(String, Lines)], ws: &Workspace) -> Vec<Group> {
    let root = format!(
        "{}/",
        ws.root
            .to_string_lossy()
            .replace('\\', "/")
            .trim_end_matches('/')
    );
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (path, lines) in files {
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let (name, kind) = if let Some(krate) = ws
            .crates
            .iter()
            .find(|c| rel.starts_with(&format!("{}/", c.dir)))
        {
            (krate.name.clone(), Kind::Crate)
        } else if rel.starts_with("src/") {
            (
                ws.facade
                    .clone()
                    .unwrap_or_else(|| "facade (src/)".to_owned()),
                Kind::Other,
            )
        } else if rel.starts_with("xtask/") {
            ("xtask".to_owned(), Kind::Other)
        } else {
            let top = rel.split('/').next().unwrap_or(rel);
            (format!("other ({top}/)"), Kind::Other)
        };
        let group = groups.entry(name.clone()).or_insert(Group {
            name,
            kind,
            lines: Lines::default(),
        });
        group.lines.found += lines.found;
        group.lines.hit += lines.hit;
    }
    // Crates first, then the rest, each by name.
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by_key(|g| (g.kind != Kind::Crate, g.name.clone()));
    groups
}

/// Reads `name = 90.0` lines; `#` comments, blank lines and `[table]` headers are ignored.
pub fn parse_floors(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut floors = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('[') {
            continue;
        }
        let bad = || {
            format!(
                "{FLOORS_FILE}:{}: expected `crate-name = <percent>`, got `{raw}`",
                i + 1
            )
        };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let key = key.trim().trim_matches('"').to_owned();
        let value: f64 = value.trim().parse().map_err(|_| bad())?;
        if key.is_empty() || !(0.0..=100.0).contains(&value) {
            return Err(bad());
        }
        if floors.insert(key.clone(), value).is_some() {
            return Err(format!("{FLOORS_FILE}:{}: `{key}` is listed twice", i + 1));
        }
    }
    Ok(floors)
}

#[derive(Debug, Default)]
pub struct Report {
    pub table: String,
    pub warnings: Vec<String>,
    pub below_floor: Vec<String>,
}

pub fn check(groups: &[Group], floors: &BTreeMap<String, f64>) -> Report {
    let mut report = Report::default();
    let _ = writeln!(
        report.table,
        "{:<24} {:>15} {:>8} {:>7}  verdict",
        "line coverage", "covered/total", "percent", "floor"
    );
    for g in groups {
        let counts = format!("{}/{}", g.lines.hit, g.lines.found);
        let Some(pct) = g.lines.percent() else {
            let _ = writeln!(
                report.table,
                "{:<24} {counts:>15} {:>8} {:>7}  no instrumented lines",
                g.name, "-", "-"
            );
            continue;
        };
        let floor = floors.get(&g.name).copied();
        let verdict = match floor {
            Some(floor) if pct < floor => {
                report.below_floor.push(format!(
                    "{}: {pct:.2}% of lines covered, below its floor of {floor:.1}%",
                    g.name
                ));
                "BELOW FLOOR"
            }
            Some(_) => "ok",
            None if g.kind == Kind::Crate => {
                let mut warning = format!("{} has no coverage floor in {FLOORS_FILE}", g.name);
                if pct >= SUGGEST_FLOOR_FROM {
                    let _ = write!(warning, "; suggested: `{} = {:.1}`", g.name, pct.floor());
                }
                report.warnings.push(warning);
                "no floor"
            }
            None => "",
        };
        let floor = floor.map_or_else(|| "-".to_owned(), |f| format!("{f:.1}"));
        let _ = writeln!(
            report.table,
            "{:<24} {counts:>15} {pct:>7.2}% {floor:>7}  {verdict}",
            g.name
        );
    }
    for name in floors.keys() {
        if !groups.iter().any(|g| &g.name == name) {
            report.warnings.push(format!(
                "{FLOORS_FILE} has a floor for `{name}`, which had no lines in this coverage run"
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Crate;
    use std::path::PathBuf;

    fn workspace() -> Workspace {
        let krate = |name: &str| Crate {
            name: name.to_owned(),
            dir: format!("crates/{name}"),
            has_loom_tests: false,
            fuzz: None,
        };
        Workspace {
            root: PathBuf::from("/w/ferry"),
            target_dir: PathBuf::from("/w/ferry/target"),
            facade: Some("ferry".to_owned()),
            crates: vec![krate("ferry-ring"), krate("ferry-frame")],
        }
    }

    const LCOV: &str = "\
SF:/w/ferry/crates/ferry-ring/src/lib.rs
FN:1,f
DA:1,1
LF:100
LH:95
end_of_record
SF:/w/ferry/crates/ferry-ring/src/layout.rs
LF:100
LH:85
end_of_record
SF:/w/ferry/crates/ferry-frame/src/codec.rs
LF:50
LH:49
end_of_record
SF:/w/ferry/src/lib.rs
LF:0
LH:0
end_of_record
SF:/w/ferry/xtask/src/main.rs
LF:10
LH:5
end_of_record
";

    #[test]
    fn groups_files_by_crate_directory() {
        let files = parse_lcov(LCOV);
        assert_eq!(files.len(), 5);
        assert_eq!(
            files[0],
            (
                "/w/ferry/crates/ferry-ring/src/lib.rs".to_owned(),
                Lines {
                    found: 100,
                    hit: 95
                }
            )
        );
        let groups = group(&files, &workspace());
        let summary: Vec<(&str, u64, u64)> = groups
            .iter()
            .map(|g| (g.name.as_str(), g.lines.hit, g.lines.found))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("ferry-frame", 49, 50),
                ("ferry-ring", 180, 200),
                ("ferry", 0, 0),
                ("xtask", 5, 10)
            ]
        );
        assert_eq!(groups[1].lines.percent(), Some(90.0));
        assert_eq!(groups[2].lines.percent(), None);
    }

    #[test]
    fn floors_fail_below_and_warn_when_missing() {
        let groups = group(&parse_lcov(LCOV), &workspace());
        let floors = parse_floors("# floors\nferry-ring = 91.0\ngone = 50\n").unwrap();
        let report = check(&groups, &floors);
        assert_eq!(report.below_floor.len(), 1, "{report:?}");
        assert!(
            report.below_floor[0].starts_with("ferry-ring: 90.00%"),
            "{report:?}"
        );
        // ferry-frame: no floor, 98% → a suggestion; xtask has no floor but is not a crate.
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("`ferry-frame = 98.0`")),
            "{report:?}"
        );
        assert!(
            !report.warnings.iter().any(|w| w.starts_with("xtask has")),
            "{report:?}"
        );
        assert!(
            report.warnings.iter().any(|w| w.contains("`gone`")),
            "{report:?}"
        );
        assert!(report.table.contains("BELOW FLOOR"));

        let at_floor = parse_floors("ferry-ring = 90\nferry-frame = 98").unwrap();
        let report = check(&groups, &at_floor);
        assert!(
            report.below_floor.is_empty() && report.warnings.is_empty(),
            "{report:?}"
        );
    }

    #[test]
    fn malformed_floors_are_errors() {
        assert!(parse_floors("ferry-ring 90").unwrap_err().contains(":1:"));
        assert!(parse_floors("ferry-ring = ninety").is_err());
        assert!(parse_floors("ferry-ring = 101").is_err());
        assert!(parse_floors("a = 1\na = 2").unwrap_err().contains("twice"));
        assert!(
            parse_floors("[floors]\n\n  # nothing\n")
                .unwrap()
                .is_empty()
        );
    }
}
