//! The read side: a small pool of read-only connections and the queries they run.
//!
//! Every read runs in its own SQLite read transaction, so what it returns is one consistent
//! snapshot; with WAL such a snapshot never waits for the writer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, Transaction};

use crate::schema::{self, KIND_DELETE};
use crate::{Error, Event, EventType, KeyValue, ListResult, Revision};

/// State shared by the store handle, its writer thread and its watches.
pub(crate) struct Shared {
    /// The database file.
    pub(crate) path: PathBuf,
    /// Idle reader connections.
    readers: Mutex<Vec<Connection>>,
    /// How many idle reader connections to keep.
    max_idle: usize,
    /// The last committed revision (set by the writer after each commit).
    pub(crate) current: AtomicI64,
    /// The compacted revision (set by the writer after each compaction).
    pub(crate) compacted: AtomicI64,
}

impl Shared {
    pub(crate) fn new(
        path: PathBuf,
        max_idle: usize,
        current: Revision,
        compacted: Revision,
    ) -> Shared {
        Shared {
            path,
            readers: Mutex::new(Vec::new()),
            max_idle,
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
        }
    }

    /// Runs `f` in a read transaction on a pooled connection.
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, ReadError>,
    ) -> Result<T, Error> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = match conn.transaction() {
            Ok(txn) => f(&txn),
            Err(e) => Err(ReadError::Sqlite(e)),
        };
        // The transaction is over (dropped, hence rolled back: it only read), the connection
        // can serve the next read.
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if readers.len() < self.max_idle {
            readers.push(conn);
        }
        drop(readers);
        result.map_err(|e| match e {
            ReadError::Store(e) => e,
            ReadError::Sqlite(e) => Error::sqlite(op, &self.path)(e),
        })
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        self.read("reading a key", |txn| {
            let mut stmt = txn.prepare_cached(
                "SELECT key, value, create_revision, mod_revision FROM kv WHERE key = ?1",
            )?;
            let mut rows = stmt.query([key])?;
            match rows.next()? {
                Some(row) => Ok(Some(kv_from_row(row)?)),
                None => Ok(None),
            }
        })
    }

    pub(crate) fn count(&self, prefix: &str) -> Result<usize, Error> {
        self.read("counting keys", |txn| {
            let mut params = Vec::new();
            let filter = key_filter("key", prefix, None, &mut params);
            let sql = format!("SELECT COUNT(*) FROM kv WHERE {filter}");
            let count: i64 = txn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(params), |row| row.get(0))?;
            Ok(usize::try_from(count).unwrap_or(0))
        })
    }

    pub(crate) fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        at: Option<Revision>,
    ) -> Result<ListResult, Error> {
        self.read("listing keys", |txn| {
            let current = schema::meta(txn, "revision")?;
            let compacted = schema::meta(txn, "compacted")?;
            let at = at.unwrap_or(current);
            if at > current {
                return Err(ReadError::Store(Error::FutureRevision {
                    requested: at,
                    current,
                }));
            }
            if at < compacted {
                return Err(ReadError::Store(Error::Compacted {
                    requested: at,
                    compacted,
                }));
            }
            let mut params = Vec::new();
            let sql = if at == current {
                let filter = key_filter("key", prefix, start_after, &mut params);
                format!(
                    "SELECT key, value, create_revision, mod_revision FROM kv \
                     WHERE {filter} ORDER BY key LIMIT ?"
                )
            } else {
                // The state at `at`: for each key its newest log entry at or below `at`,
                // unless that entry is a delete.
                let filter = key_filter("l.key", prefix, start_after, &mut params);
                params.push(Value::Integer(at));
                format!(
                    "SELECT l.key, l.value, l.create_revision, l.revision FROM log l \
                     WHERE {filter} AND l.kind <> {KIND_DELETE} AND l.revision = \
                     (SELECT MAX(m.revision) FROM log m WHERE m.key = l.key AND m.revision <= ?) \
                     ORDER BY l.key LIMIT ?"
                )
            };
            // One row more than asked tells whether the limit cut the list.
            let fetch = limit.map_or(i64::MAX, |n| {
                i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1)
            });
            params.push(Value::Integer(fetch));
            let mut stmt = txn.prepare_cached(&sql)?;
            let mut items = stmt
                .query_map(params_from_iter(params), kv_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let more = limit.is_some_and(|n| items.len() > n);
            if let Some(n) = limit {
                items.truncate(n);
            }
            Ok(ListResult {
                items,
                revision: at,
                more,
            })
        })
    }

    /// Up to `limit` events on keys starting with `prefix` with a revision above `after`, in
    /// revision order, or `Compacted` when the history after `after` is no longer complete.
    pub(crate) fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        self.read("reading the event log", |txn| {
            let compacted = schema::meta(txn, "compacted")?;
            if after < compacted {
                return Err(ReadError::Store(Error::Compacted {
                    requested: after,
                    compacted,
                }));
            }
            let mut params = vec![Value::Integer(after)];
            let filter = key_filter("key", prefix, None, &mut params);
            params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            let sql = format!(
                "SELECT revision, key, kind, value, prev_value, create_revision FROM log \
                 WHERE revision > ? AND {filter} ORDER BY revision LIMIT ?"
            );
            let mut stmt = txn.prepare_cached(&sql)?;
            let events = stmt
                .query_map(params_from_iter(params), |row| {
                    let kind: i64 = row.get(2)?;
                    let value: Vec<u8> = row.get(3)?;
                    let (kind, prev_value) = if kind == KIND_DELETE {
                        (EventType::Delete, Some(value.clone()))
                    } else {
                        (EventType::Put, row.get(4)?)
                    };
                    Ok(Event {
                        kind,
                        key: row.get(1)?,
                        value,
                        prev_value,
                        revision: row.get(0)?,
                        create_revision: row.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(events)
        })
    }
}

/// A failure inside a read: a store-level answer or a SQLite error still without context.
enum ReadError {
    Store(Error),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sqlite(e)
    }
}

/// Reads `key, value, create_revision, mod_revision`.
fn kv_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

/// A SQL condition on `column` selecting keys that start with `prefix` and sort after
/// `start_after`, as a range so it uses the key index; pushes its parameters in order.
pub(crate) fn key_filter(
    column: &str,
    prefix: &str,
    start_after: Option<&str>,
    params: &mut Vec<Value>,
) -> String {
    let mut conditions = Vec::new();
    if !prefix.is_empty() {
        conditions.push(format!("{column} >= ?"));
        params.push(Value::Text(prefix.to_owned()));
    }
    if let Some(end) = schema::prefix_end(prefix) {
        conditions.push(format!("{column} < ?"));
        params.push(Value::Text(end));
    }
    if let Some(after) = start_after {
        conditions.push(format!("{column} > ?"));
        params.push(Value::Text(after.to_owned()));
    }
    if conditions.is_empty() {
        "1 = 1".to_owned()
    } else {
        conditions.join(" AND ")
    }
}

/// Loads a revision counter from an atomic.
pub(crate) fn load(revision: &AtomicI64) -> Revision {
    revision.load(Ordering::SeqCst)
}
