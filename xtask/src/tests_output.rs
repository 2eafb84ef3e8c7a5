//! Counting tests from libtest's closing lines:
//! `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.

use std::fmt;
use std::ops::AddAssign;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// How many `test result:` lines were seen (one per test binary or doc-test run).
    pub suites: u64,
}

impl TestCounts {
    /// Counts the tests in the merged stdout+stderr of a cargo test run.
    ///
    /// cargo prints `Running <binary>` (or `Doc-tests <crate>`) before each test binary; the
    /// binary's own verdict is the last `test result:` line before the next one. Earlier lines
    /// in the same stretch come from child processes that a test re-executed from the same
    /// binary (two-process tests do), and would count those tests twice. Output with no such
    /// markers (a bare test binary) counts every `test result:` line.
    pub fn parse(output: &str) -> Self {
        let mut total = Self::default();
        let mut last_in_binary: Option<Self> = None;
        let mut saw_marker = false;
        for line in output.lines() {
            let line = strip_ansi(line);
            let trimmed = line.trim_start();
            if trimmed.starts_with("Running ") || trimmed.starts_with("Doc-tests ") {
                saw_marker = true;
                total += last_in_binary.take().unwrap_or_default();
            } else if let Some(result) = parse_result_line(&line) {
                if saw_marker {
                    last_in_binary = Some(result);
                } else {
                    total += result;
                }
            }
        }
        total += last_in_binary.unwrap_or_default();
        total
    }
}

fn parse_result_line(line: &str) -> Option<TestCounts> {
    let at = line.find("test result: ")?;
    let rest = &line[at + "test result: ".len()..];
    // Skip the verdict (`ok.` / `FAILED.`), then read `N word` pairs split by `;`.
    let (_, counts) = rest.split_once(". ")?;
    let mut result = TestCounts {
        suites: 1,
        ..TestCounts::default()
    };
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(word)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match word {
            "passed" => result.passed += n,
            "failed" => result.failed += n,
            "ignored" => result.ignored += n,
            _ => {}
        }
    }
    Some(result)
}

impl AddAssign for TestCounts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.suites += other.suites;
    }
}

impl fmt::Display for TestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored ({} test runs)",
            self.passed, self.failed, self.ignored, self.suites
        )
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params… final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_result_line_and_ignores_the_rest() {
        let output = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

test result: FAILED. 7 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.20s
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
   Doc-tests ferry_ring
\u{1b}[0mtest result: \u{1b}[32mok\u{1b}[0m. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
a line mentioning test result: without counts
";
        let counts = TestCounts::parse(output);
        assert_eq!(
            counts,
            TestCounts {
                passed: 14,
                failed: 2,
                ignored: 1,
                suites: 4
            }
        );
        assert_eq!(
            counts.to_string(),
            "14 passed, 2 failed, 1 ignored (4 test runs)"
        );
    }

    #[test]
    fn results_of_re_executed_children_are_not_counted_twice() {
        let output = "\
\u{1b}[1m\u{1b}[92m     Running\u{1b}[0m unittests src/lib.rs (target/debug/deps/ferry_notify-1)
running 2 tests
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
     Running tests/two_process.rs (target/debug/deps/two_process-2)
running 7 tests
running 1 test
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out; finished in 0.02s
test wake_across_processes ... ok
running 1 test
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out; finished in 0.02s
test result: ok. 6 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 2.51s
     Running tests/crashes.rs (target/debug/deps/crashes-3)
error: test failed, to rerun pass `--test crashes`
   Doc-tests ferry_notify
running 3 tests
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.50s
";
        let counts = TestCounts::parse(output);
        assert_eq!(
            counts,
            TestCounts {
                passed: 11,
                failed: 0,
                ignored: 1,
                suites: 3
            }
        );
    }

    #[test]
    fn no_result_lines_means_no_suites() {
        let counts = TestCounts::parse("error: could not compile `ferry-ring`\n");
        assert_eq!(counts.suites, 0);
        let mut sum = counts;
        sum += TestCounts {
            passed: 2,
            failed: 0,
            ignored: 0,
            suites: 1,
        };
        assert_eq!(sum.passed, 2);
    }
}
