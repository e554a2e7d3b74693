//! Where a store lives: a SQLite file, or a PostgreSQL database named by its
//! URL. Shown in messages with a URL's password hidden.

use std::fmt;
use std::path::PathBuf;

/// A store's location, as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file, created (with its directory) on first use.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://user:password@host:port/database`
    /// (or `postgresql://`), with libpq's URL parameters.
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL is a PostgreSQL database;
    /// anything else is the path of a SQLite file.
    pub fn parse(s: &str) -> Location {
        let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }
}

impl fmt::Display for Location {
    /// The path, or the URL with its password replaced by `***` (messages
    /// end up in CI logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// `url` without the password of its user part or of a `password=`
/// parameter.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = url[..scheme_end].to_string();
    match authority.rfind('@') {
        Some(at) => {
            let (user_info, host) = authority.split_at(at);
            match user_info.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(user_info),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_the_rest_paths() {
        for url in [
            "postgres://ci@db/vmbench",
            "postgresql://db/vmbench",
            "POSTGRES://db",
        ] {
            assert_eq!(Location::parse(url), Location::Postgres(url.to_string()));
        }
        for path in [
            "results.db",
            "/var/lib/vmbench/results.db",
            "postgres.db",
            "./postgres://x",
            "",
        ] {
            assert_eq!(Location::parse(path), Location::Sqlite(PathBuf::from(path)));
        }
    }

    #[test]
    fn passwords_are_hidden() {
        let shown = |s: &str| Location::parse(s).to_string();
        assert_eq!(
            shown("postgres://ci:s3cr@t@db:5432/vmbench"),
            "postgres://ci:***@db:5432/vmbench"
        );
        assert_eq!(
            shown("postgres://ci@db/vmbench"),
            "postgres://ci@db/vmbench"
        );
        assert_eq!(shown("postgresql://db"), "postgresql://db");
        assert_eq!(
            shown("postgres://db/vmbench?user=ci&password=hunter2&sslmode=disable"),
            "postgres://db/vmbench?user=ci&password=***&sslmode=disable"
        );
        assert_eq!(
            shown("postgres://u:p@db?password=x"),
            "postgres://u:***@db?password=***"
        );
        assert_eq!(shown("/tmp/results.db"), "/tmp/results.db");
    }
}
