//! The end of a log file on one line, for an error message: the last lines
//! a guest wrote to its console, or the last bytes a VMM printed. Lines are
//! joined with ` | ` so the message stays one line.

use std::path::Path;

const JOIN: &str = " | ";

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The last `count` non-empty lines of the file (empty if it is missing or empty).
pub fn last_lines(path: &Path, count: usize) -> String {
    let text = read_lossy(path);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join(JOIN)
}

/// The last `max_bytes` of the file, trimmed (empty if it is missing or empty).
pub fn last_bytes(path: &Path, max_bytes: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&text[start..])
        .trim()
        .replace('\n', JOIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\n\nb\nc  \nd\n").unwrap();
        assert_eq!(last_lines(&path, 2), "c | d");
        assert_eq!(last_lines(&path, 9), "a | b | c | d");
        assert_eq!(last_bytes(&path, 6), "c   | d");
        assert_eq!(last_lines(&dir.path().join("none"), 3), "");
        assert_eq!(last_bytes(&dir.path().join("none"), 3), "");
    }
}
