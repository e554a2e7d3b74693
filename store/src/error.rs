//! What can fail, as the store's users see it: one `Error` whose message is
//! one line naming the store (a PostgreSQL URL with its password hidden) and
//! what failed; the database's own error is its source.

use std::io;

/// A failure of the store. Every message names the store's location.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot create the directory of results store {location}")]
    CreateDir {
        location: String,
        #[source]
        source: io::Error,
    },
    #[error("Cannot open results store {location}")]
    Open {
        location: String,
        #[source]
        source: DatabaseError,
    },
    #[error("Results store {location} was written by a newer vmbench (schema {found}, this one reads up to {supported})")]
    NewerSchema {
        location: String,
        found: i64,
        supported: i64,
    },
    #[error("Results store {location} already has run {id}")]
    DuplicateRun { location: String, id: String },
    #[error(
        "Results store {location} has metric {} with {} {:?}, but run {} gives it {1} {:?}",
        conflict.metric, conflict.field, conflict.stored, conflict.run, conflict.given
    )]
    MetricRedefined {
        location: String,
        conflict: Box<MetricConflict>,
    },
    #[error("Run {run} cannot be recorded in results store {location}: {problem}")]
    InvalidRun {
        location: String,
        run: String,
        problem: String,
    },
    #[error("Results store {location} holds a damaged {what}")]
    Damaged { location: String, what: String },
    #[error("Cannot {action} in results store {location}")]
    Database {
        location: String,
        action: String,
        #[source]
        source: DatabaseError,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How a run defines a metric otherwise than the store does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricConflict {
    pub run: String,
    pub metric: String,
    /// `unit`, `clock`, `direction` or `alias group`.
    pub field: &'static str,
    pub stored: String,
    pub given: String,
}

/// The database driver's own error, the source of [`Error::Open`] and
/// [`Error::Database`].
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// A value of a type the schema does not give its column.
    #[error("{0}")]
    Decode(String),
}

impl DatabaseError {
    /// Whether trying the whole transaction again may succeed: another
    /// writer held SQLite's lock past the busy timeout, or PostgreSQL chose
    /// this transaction as a deadlock's or a serialization conflict's victim.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DatabaseError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            DatabaseError::Postgres(e) => matches!(
                e.code(),
                Some(c) if *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            ),
            DatabaseError::Decode(_) => false,
        }
    }

    /// Whether a UNIQUE or PRIMARY KEY constraint refused the statement.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            DatabaseError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            DatabaseError::Postgres(e) => {
                e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// What a transaction's body can end with besides its value: a database
/// error (which the transaction may retry) or the store refusing the work.
#[derive(Debug)]
pub(crate) enum Fail {
    Db(DatabaseError),
    Store(Error),
}

impl From<DatabaseError> for Fail {
    fn from(e: DatabaseError) -> Fail {
        Fail::Db(e)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Db(e.into())
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Db(e.into())
    }
}

impl Fail {
    /// The store's error: a database error becomes [`Error::Database`] for
    /// `action` on `location`.
    pub(crate) fn into_error(self, location: &str, action: impl FnOnce() -> String) -> Error {
        match self {
            Fail::Db(source) => Error::Database {
                location: location.to_string(),
                action: action(),
                source,
            },
            Fail::Store(e) => e,
        }
    }
}
