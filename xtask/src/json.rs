//! The one JSON string escaper of xtask (the reports of `bench-gate` and `soak` are written by
//! hand: xtask has no dependencies).

use std::fmt::Write as _;

/// `s` as a JSON string literal, quotes included: `"`, `\` and control characters escaped
/// (`\n`, `\r`, `\t` by name, the others as `\u00XX`).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::string;

    #[test]
    fn quotes_backslashes_and_control_characters_are_escaped() {
        assert_eq!(string("plain"), "\"plain\"");
        assert_eq!(string("a\"b\\\n"), "\"a\\\"b\\\\\\n\"");
        assert_eq!(string("\t\r\u{1}"), "\"\\t\\r\\u0001\"");
        assert_eq!(string("µs ≤ 5"), "\"µs ≤ 5\"");
    }
}
