//! Structured console lines: `vmbench-init: key=value key="value with spaces"`.
//! One line per event, so a host reading serial.log can grep and parse them.

use std::fmt::Write as _;
use std::io::Write as _;

/// Formats one line; values with spaces, quotes or `=` are quoted.
pub fn format_line(fields: &[(&str, &str)]) -> String {
    let mut line = String::from("vmbench-init:");
    for (key, value) in fields {
        let plain = !value.is_empty()
            && value
                .chars()
                .all(|c| !c.is_whitespace() && c != '"' && c != '=' && c != '\\');
        if plain {
            let _ = write!(line, " {key}={value}");
        } else {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(line, " {key}=\"{escaped}\"");
        }
    }
    line
}

/// Writes one line to the console, ignoring failure: there is nowhere else to say it.
pub fn line(fields: &[(&str, &str)]) {
    let mut text = format_line(fields);
    text.push('\n');
    let _ = std::io::stderr().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_values() {
        assert_eq!(
            format_line(&[
                ("error", "host_unreachable"),
                ("last_error", "ECONNRESET: reset by peer")
            ]),
            "vmbench-init: error=host_unreachable last_error=\"ECONNRESET: reset by peer\""
        );
        assert_eq!(format_line(&[("x", "")]), "vmbench-init: x=\"\"");
        assert_eq!(format_line(&[("x", "a\"b")]), "vmbench-init: x=\"a\\\"b\"");
    }
}
