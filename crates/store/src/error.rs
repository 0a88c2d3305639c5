//! The one error type of the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Revision;

/// Everything that can go wrong in the store.
///
/// The precondition failures (`AlreadyExists`, `NotFound`, `Conflict`) and the revision errors
/// (`Compacted`, `FutureRevision`) are expected outcomes the caller maps to an API answer; the
/// others are faults. The type is `Clone` (sources are shared through `Arc`) so one commit
/// failure can be answered to every request of a group commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A create found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key that exists.
        key: String,
    },
    /// An update or delete found no such key.
    #[error("key {key} not found")]
    NotFound {
        /// The key that is missing.
        key: String,
    },
    /// An update or delete expected another mod revision.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key whose revision did not match.
        key: String,
        /// The mod revision the caller expected.
        expected: Revision,
        /// The key's actual mod revision.
        actual: Revision,
    },
    /// The requested revision is older than the compacted revision: its history is gone.
    #[error("revision {requested} is compacted (history kept after revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// The requested revision has not been written yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// SQLite failed.
    #[error("sqlite failed while {op} ({path})")]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A file system operation failed.
    #[error("io failed while {op} ({path})")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The path it was about.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// SQLite refused to use the write-ahead log (e.g. on a file system without shared memory).
    #[error("the write-ahead log is unavailable for {path} (journal mode {mode})")]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The store's writer is gone (the store was dropped or its writer thread died).
    #[error("store is closed")]
    Closed,
}

impl Error {
    /// A mapper from a SQLite error to [`Error::Sqlite`] with context, for `map_err`.
    pub(crate) fn sqlite(op: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Sqlite {
            op,
            path,
            source: Arc::new(source),
        }
    }
}
