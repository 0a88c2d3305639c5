//! The tables, and opening connections to them.
//!
//! Plain SQL that a PostgreSQL backend can reuse almost verbatim (`BLOB` becomes `BYTEA`,
//! `?N` becomes `$N`, key columns need the `C` collation so keys sort by bytes):
//!
//! - `kv`: the current value of every live key.
//! - `log`: one row per revision, the history used by watches and by lists at an older
//!   revision. `kind` is [`KIND_PUT`] or [`KIND_DELETE`]; for a delete `value` is the value
//!   before the deletion and `prev_value` is NULL. Compaction keeps, for each key, its newest
//!   put at or below the compacted revision, so the state at the compacted revision can still
//!   be rebuilt.
//! - `meta`: named integers, `revision` (the last revision handed out; never goes backwards,
//!   even when the newest rows are deleted) and `compacted`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Error, Revision};

/// `log.kind` of a put (create or update).
pub(crate) const KIND_PUT: i64 = 0;
/// `log.kind` of a delete.
pub(crate) const KIND_DELETE: i64 = 1;

/// How long a connection waits on a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER NOT NULL PRIMARY KEY,
    key TEXT NOT NULL,
    kind INTEGER NOT NULL,
    value BLOB NOT NULL,
    prev_value BLOB,
    create_revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (name, value) VALUES ('revision', 0) ON CONFLICT (name) DO NOTHING;
INSERT INTO meta (name, value) VALUES ('compacted', 0) ON CONFLICT (name) DO NOTHING;
";

/// Opens the writer connection: WAL, `synchronous=FULL` (every commit is fsynced before it
/// is acknowledged), and creates the tables if needed.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(Error::sqlite("opening the database", path))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(Error::sqlite("setting the busy timeout", path))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(Error::sqlite("enabling the write-ahead log", path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(Error::sqlite("setting synchronous=FULL", path))?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))
        .map_err(Error::sqlite("creating the schema", path))?;
    Ok(conn)
}

/// Opens a read-only connection (readers never take the write lock, so with WAL they never
/// wait for the writer).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(Error::sqlite("opening a reader connection", path))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(Error::sqlite("setting the busy timeout", path))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(Error::sqlite("making a reader connection read-only", path))?;
    Ok(conn)
}

/// Reads a named integer from `meta`.
pub(crate) fn meta(conn: &Connection, name: &str) -> rusqlite::Result<Revision> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
}

/// Writes a named integer to `meta`.
pub(crate) fn set_meta(conn: &Connection, name: &str, value: Revision) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE meta SET value = ?1 WHERE name = ?2")?
        .execute(rusqlite::params![value, name])?;
    Ok(())
}

/// The smallest string greater than every string starting with `prefix`, or `None` when
/// there is none (empty prefix). UTF-8 byte order is code point order, so this bound also
/// holds for SQLite's BINARY collation.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            ("/a/", Some("/a0")),
            ("ab", Some("ac")),
            ("a\u{10FFFF}", Some("b")),
            ("\u{D7FF}", Some("\u{E000}")),
            ("\u{10FFFF}", None),
        ];
        for (prefix, expect) in cases {
            assert_eq!(prefix_end(prefix).as_deref(), *expect, "prefix {prefix:?}");
        }
    }
}
