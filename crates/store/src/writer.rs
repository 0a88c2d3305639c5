//! The single writer thread and its group commit.
//!
//! The writer takes one request, drains whatever else is queued (up to [`MAX_BATCH`]), applies
//! every request inside one SQLite transaction — each request in its own savepoint, so a
//! failed precondition undoes only that request — and commits once. Only after the commit
//! (fsynced, `synchronous=FULL`) does it publish the events, in revision order, and answer
//! the requesters. One fsync thus acknowledges a whole batch.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use crate::read::Shared;
use crate::schema::{self, KIND_DELETE, KIND_PUT};
use crate::{Error, Event, EventType, KeyValue, Op, Revision};

/// The most requests applied in one commit.
const MAX_BATCH: usize = 1024;

/// What the writer is asked to do.
pub(crate) enum Request {
    /// Apply ops atomically.
    Txn {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<Vec<KeyValue>, Error>>,
    },
    /// Drop history older than the newest `keep_latest` revisions.
    Compact {
        keep_latest: usize,
        reply: mpsc::SyncSender<Result<Revision, Error>>,
    },
}

/// The result of one request inside a batch, kept until the batch is committed.
enum Outcome {
    Txn {
        reply: oneshot::Sender<Result<Vec<KeyValue>, Error>>,
        result: Result<(Vec<KeyValue>, Vec<Event>), Error>,
    },
    Compact {
        reply: mpsc::SyncSender<Result<Revision, Error>>,
        result: Result<Revision, Error>,
    },
}

/// The writer thread's state.
pub(crate) struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Event>>,
    /// The last committed revision.
    revision: Revision,
    /// The committed compacted revision.
    compacted: Revision,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<Event>>,
        revision: Revision,
        compacted: Revision,
    ) -> Writer {
        Writer {
            conn,
            shared,
            events,
            revision,
            compacted,
        }
    }

    /// Serves requests until every sender is dropped.
    pub(crate) fn run(mut self, requests: mpsc::Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!(path = %self.shared.path.display(), "store writer stopped");
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let size = batch.len();
        let path = self.shared.path.clone();
        let mut revision = self.revision;
        let mut compacted = self.compacted;
        let mut outcomes = Vec::with_capacity(size);

        let committed = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Err(e) => Err(Error::sqlite("starting a write transaction", &path)(e)),
            Ok(mut txn) => {
                for request in batch {
                    match request {
                        Request::Txn { ops, reply } => {
                            let result =
                                apply_txn(&mut txn, ops, revision).map_err(|e| e.into_error(&path));
                            if let Ok((kvs, _)) = &result {
                                revision += kvs.len() as Revision;
                            }
                            outcomes.push(Outcome::Txn { reply, result });
                        }
                        Request::Compact { keep_latest, reply } => {
                            let result = compact(&mut txn, revision, compacted, keep_latest)
                                .map_err(Error::sqlite("compacting the log", &path));
                            if let Ok(c) = result {
                                compacted = c;
                            }
                            outcomes.push(Outcome::Compact { reply, result });
                        }
                    }
                }
                let finish = || -> rusqlite::Result<()> {
                    if revision != self.revision {
                        schema::set_meta(&txn, "revision", revision)?;
                    }
                    txn.commit()
                };
                finish().map_err(Error::sqlite("committing a write transaction", &path))
            }
        };

        match committed {
            Ok(()) => {
                self.revision = revision;
                self.compacted = compacted;
                self.shared.current.store(revision, Ordering::SeqCst);
                self.shared.compacted.store(compacted, Ordering::SeqCst);
                for outcome in outcomes {
                    match outcome {
                        Outcome::Txn { reply, result } => {
                            let result = result.map(|(kvs, events)| {
                                for event in events {
                                    // No receiver means no watcher: nothing to deliver.
                                    let _ = self.events.send(Arc::new(event));
                                }
                                kvs
                            });
                            // A requester that went away does not undo the write.
                            let _ = reply.send(result);
                        }
                        Outcome::Compact { reply, result } => {
                            let _ = reply.send(result);
                        }
                    }
                }
                tracing::debug!(
                    requests = size,
                    revision,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store batch committed"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, requests = size, "store batch failed");
                for outcome in outcomes {
                    match outcome {
                        Outcome::Txn { reply, result } => {
                            let _ = reply.send(result.and(Err(e.clone())));
                        }
                        Outcome::Compact { reply, result } => {
                            let _ = reply.send(result.and(Err(e.clone())));
                        }
                    }
                }
            }
        }
    }
}

/// A failure applying one txn: a failed precondition or a SQLite error without context yet.
enum TxnError {
    Precondition(Error),
    Sqlite(rusqlite::Error),
}

impl TxnError {
    fn into_error(self, path: &std::path::Path) -> Error {
        match self {
            TxnError::Precondition(e) => e,
            TxnError::Sqlite(e) => Error::sqlite("applying a transaction", path)(e),
        }
    }
}

impl From<rusqlite::Error> for TxnError {
    fn from(e: rusqlite::Error) -> Self {
        TxnError::Sqlite(e)
    }
}

/// The current row of a key.
struct Current {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
}

fn current(conn: &Connection, key: &str) -> rusqlite::Result<Option<Current>> {
    conn.prepare_cached("SELECT value, create_revision, mod_revision FROM kv WHERE key = ?1")?
        .query_row([key], |row| {
            Ok(Current {
                value: row.get(0)?,
                create_revision: row.get(1)?,
                mod_revision: row.get(2)?,
            })
        })
        .optional()
}

/// Checks that `key` exists and, when `expected` is given, that its mod revision matches.
fn existing(conn: &Connection, key: &str, expected: Option<Revision>) -> Result<Current, TxnError> {
    let Some(current) = current(conn, key)? else {
        return Err(TxnError::Precondition(Error::NotFound {
            key: key.to_owned(),
        }));
    };
    match expected {
        Some(expected) if expected != current.mod_revision => {
            Err(TxnError::Precondition(Error::Conflict {
                key: key.to_owned(),
                expected,
                actual: current.mod_revision,
            }))
        }
        _ => Ok(current),
    }
}

fn append_log(
    conn: &Connection,
    revision: Revision,
    key: &str,
    kind: i64,
    value: &[u8],
    prev_value: Option<&[u8]>,
    create_revision: Revision,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO log (revision, key, kind, value, prev_value, create_revision) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(rusqlite::params![
        revision,
        key,
        kind,
        value,
        prev_value,
        create_revision
    ])?;
    Ok(())
}

/// Applies `ops` in a savepoint, the first getting revision `revision + 1`; on any failure
/// the savepoint is rolled back and nothing of this txn remains.
fn apply_txn(
    txn: &mut Transaction<'_>,
    ops: Vec<Op>,
    revision: Revision,
) -> Result<(Vec<KeyValue>, Vec<Event>), TxnError> {
    let sp = txn.savepoint()?;
    let mut kvs = Vec::with_capacity(ops.len());
    let mut events = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let rev = revision + 1 + i as Revision;
        match op {
            Op::Create { key, value } => {
                if current(&sp, &key)?.is_some() {
                    return Err(TxnError::Precondition(Error::AlreadyExists { key }));
                }
                sp.prepare_cached(
                    "INSERT INTO kv (key, value, create_revision, mod_revision) \
                     VALUES (?1, ?2, ?3, ?3)",
                )?
                .execute(rusqlite::params![key, value, rev])?;
                append_log(&sp, rev, &key, KIND_PUT, &value, None, rev)?;
                events.push(Event {
                    kind: EventType::Put,
                    key: key.clone(),
                    value: value.clone(),
                    prev_value: None,
                    revision: rev,
                    create_revision: rev,
                });
                kvs.push(KeyValue {
                    key,
                    value,
                    create_revision: rev,
                    mod_revision: rev,
                });
            }
            Op::Update {
                key,
                value,
                expected,
            } => {
                let old = existing(&sp, &key, expected)?;
                sp.prepare_cached("UPDATE kv SET value = ?1, mod_revision = ?2 WHERE key = ?3")?
                    .execute(rusqlite::params![value, rev, key])?;
                append_log(
                    &sp,
                    rev,
                    &key,
                    KIND_PUT,
                    &value,
                    Some(&old.value),
                    old.create_revision,
                )?;
                events.push(Event {
                    kind: EventType::Put,
                    key: key.clone(),
                    value: value.clone(),
                    prev_value: Some(old.value),
                    revision: rev,
                    create_revision: old.create_revision,
                });
                kvs.push(KeyValue {
                    key,
                    value,
                    create_revision: old.create_revision,
                    mod_revision: rev,
                });
            }
            Op::Delete { key, expected } => {
                let old = existing(&sp, &key, expected)?;
                sp.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                    .execute([&key])?;
                append_log(
                    &sp,
                    rev,
                    &key,
                    KIND_DELETE,
                    &old.value,
                    None,
                    old.create_revision,
                )?;
                events.push(Event {
                    kind: EventType::Delete,
                    key: key.clone(),
                    value: old.value.clone(),
                    prev_value: Some(old.value.clone()),
                    revision: rev,
                    create_revision: old.create_revision,
                });
                kvs.push(KeyValue {
                    key,
                    value: old.value,
                    create_revision: old.create_revision,
                    mod_revision: rev,
                });
            }
        }
    }
    sp.commit()?;
    Ok((kvs, events))
}

/// Compacts the log up to `revision - keep_latest`: removes every entry at or below that
/// revision except each key's newest put there (still needed to list at the compacted
/// revision). Returns the new compacted revision (never lower than the old one).
fn compact(
    txn: &mut Transaction<'_>,
    revision: Revision,
    compacted: Revision,
    keep_latest: usize,
) -> rusqlite::Result<Revision> {
    let keep = Revision::try_from(keep_latest).unwrap_or(Revision::MAX);
    let target = revision.saturating_sub(keep).max(0);
    if target <= compacted {
        return Ok(compacted);
    }
    let sp = txn.savepoint()?;
    let removed = sp.execute(
        &format!(
            "DELETE FROM log WHERE revision <= ?1 AND (kind = {KIND_DELETE} OR revision < \
             (SELECT MAX(m.revision) FROM log m WHERE m.key = log.key AND m.revision <= ?1))"
        ),
        [target],
    )?;
    schema::set_meta(&sp, "compacted", target)?;
    sp.commit()?;
    tracing::debug!(compacted = target, removed, "store log compacted");
    Ok(target)
}
