//! The end of a log file on one line, for an error message: the last lines
//! a guest wrote to its console, or the last bytes a VMM printed. Lines are
//! joined with ` | ` so the message stays one line.

use std::path::Path;

const JOIN: &str = " | ";

/// The tail of a log is read from at most this far before its end: a guest
/// can make its console log as large as it likes.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last [`TAIL_BYTES`] of the file (empty if it is missing).
fn read_end(path: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .is_err()
    {
        return Vec::new();
    }
    let mut end = Vec::new();
    let _ = file.take(TAIL_BYTES).read_to_end(&mut end);
    end
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&read_end(path)).into_owned()
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
    let text = read_end(path);
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

    #[test]
    fn only_the_end_of_a_huge_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        // A sparse 1 TiB file: reading it whole would exhaust the host.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 40).unwrap();
        drop(file);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"\nlast words\n").unwrap();
        }
        assert!(last_lines(&path, 1).ends_with("last words"));
        assert_eq!(last_bytes(&path, 11), "last words");
        assert_eq!(read_end(&path).len() as u64, TAIL_BYTES);
    }
}
