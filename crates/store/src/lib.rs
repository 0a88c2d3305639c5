//! Durable embedded key-value store with one global revision, lists at an older revision and
//! watch history — the etcd-free store under the API server.
//!
//! Keys are strings (such as `/core/pods/default/web`), values opaque bytes. The store knows
//! nothing about Kubernetes or HTTP.
//!
//! Invariants:
//! - One global revision, strictly increasing, starting at 1. Every write op takes its own
//!   revision; the counter is stored and never goes backwards, across restarts and deletes.
//! - A [`Store::txn`] is all-or-nothing and is acknowledged only after its commit is on disk
//!   (SQLite WAL with `synchronous=FULL`: an acknowledged write survives `kill -9` and power
//!   loss as far as fsync does).
//! - One writer thread applies all writes, batching concurrent requests into one commit
//!   (group commit); reads use their own connections and never wait for it.
//! - Events reach watchers in revision order, only after they are committed; a watch sees
//!   every event after its starting revision exactly once, or ends with
//!   [`Error::Compacted`].
//! - History is dropped only by an explicit [`Store::compact`]; the store runs nothing in the
//!   background besides its writer thread.
//!
//! The tables are described in `schema.rs`; they are plain SQL meant to carry over to a
//! PostgreSQL backend.

mod backend;
mod error;
mod read;
mod schema;
mod watch;
mod writer;

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, oneshot};

pub use backend::{Backend, EventStream, NextFuture, TxnFuture};
pub use error::Error;
use read::{load, Shared};
pub use watch::Watch;
use writer::{Request, Writer};

/// A position in the store's history: the number of write ops applied so far.
pub type Revision = i64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (opaque bytes).
    pub value: Vec<u8>,
    /// The revision that created the key (its current incarnation).
    pub create_revision: Revision,
    /// The revision of the last change (for a delete result: the delete's revision).
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// The key.
    pub key: String,
    /// For a put the new value, for a delete the value before the deletion.
    pub value: Vec<u8>,
    /// The value before this event: `None` for a create, for a delete the same as `value`.
    pub prev_value: Option<Vec<u8>>,
    /// The revision of this change (the key's new mod revision).
    pub revision: Revision,
    /// The key's create revision.
    pub create_revision: Revision,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a key that must not exist.
    Create {
        /// The key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// Replace the value of an existing key.
    Update {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// When given, the key's mod revision must be exactly this.
        expected: Option<Revision>,
    },
    /// Delete an existing key.
    Delete {
        /// The key.
        key: String,
        /// When given, the key's mod revision must be exactly this.
        expected: Option<Revision>,
    },
}

/// The answer to [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The keys, sorted by key.
    pub items: Vec<KeyValue>,
    /// The revision the list is consistent at (pass it as `at` to read the next page).
    pub revision: Revision,
    /// Whether the limit cut the list (more keys follow the last item).
    pub more: bool,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many live events a watcher may fall behind before it goes back to reading the log
    /// (the capacity of the in-memory event channel). Compaction, not this, decides how much
    /// history stays readable.
    pub history: usize,
    /// How many idle read connections to keep open.
    pub readers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history: 10_000,
            readers: 4,
        }
    }
}

/// A handle to an open store; cheap to clone, all clones share one database and one writer.
///
/// Dropping the last clone stops the writer (after the writes already queued) and ends the
/// open watches.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    events: broadcast::Sender<Arc<Event>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the request channel ends the writer loop once the queue is empty.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.shared.path.display(), "store writer thread panicked");
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in the SQLite file at `path`, and starts its
    /// writer thread.
    pub fn open(path: &Path, config: Config) -> Result<Store, Error> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                op: "creating the store directory",
                path: dir.to_path_buf(),
                source: Arc::new(source),
            })?;
        }
        let conn = schema::open_writer(path)?;
        let revision =
            schema::meta(&conn, "revision").map_err(Error::sqlite("reading the revision", path))?;
        let compacted = schema::meta(&conn, "compacted")
            .map_err(Error::sqlite("reading the compacted revision", path))?;
        let shared = Arc::new(Shared::new(
            path.to_path_buf(),
            config.readers,
            revision,
            compacted,
        ));
        let (events, _) = broadcast::channel(config.history.max(1));
        let (requests, receiver) = mpsc::channel();
        let writer = Writer::new(
            conn,
            Arc::clone(&shared),
            events.clone(),
            revision,
            compacted,
        );
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|source| Error::Io {
                op: "starting the writer thread",
                path: path.to_path_buf(),
                source: Arc::new(source),
            })?;
        tracing::info!(path = %path.display(), revision, compacted, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                requests: Some(requests),
                events,
                writer: Some(writer),
            }),
        })
    }

    /// The last committed revision (0 for an empty store).
    pub fn current_revision(&self) -> Revision {
        load(&self.inner.shared.current)
    }

    /// The revision up to which history was compacted (0 if never): lists at a lower
    /// revision and watches from a lower revision fail with [`Error::Compacted`].
    pub fn compacted_revision(&self) -> Revision {
        load(&self.inner.shared.compacted)
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        self.inner.shared.get(key)
    }

    /// The keys starting with `prefix`, sorted, strictly after `start_after` when given, at
    /// most `limit` of them when given (`more` tells whether the limit cut the list).
    ///
    /// With `at`, the list is as of that revision (to page through one consistent list, pass
    /// the first page's `revision`): [`Error::Compacted`] below the compacted revision,
    /// [`Error::FutureRevision`] above the current one.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        at: Option<Revision>,
    ) -> Result<ListResult, Error> {
        self.inner.shared.list(prefix, start_after, limit, at)
    }

    /// How many keys start with `prefix` now.
    pub fn count(&self, prefix: &str) -> Result<usize, Error> {
        self.inner.shared.count(prefix)
    }

    /// Applies `ops` atomically: either every op's precondition holds and all are applied
    /// (op `i` gets revision `r + 1 + i`), or the first failure is returned and nothing
    /// changes. Ops see the effects of the earlier ops of the same txn. Returns once the
    /// commit is durable; for a delete the result is the last value with the delete's
    /// revision as `mod_revision`.
    ///
    /// Dropping the future after the call started does not cancel the write.
    pub async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, Error> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Txn { ops, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Creates `key`; [`Error::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, Error> {
        let op = Op::Create {
            key: key.to_owned(),
            value,
        };
        self.single(op).await
    }

    /// Replaces the value of `key`; [`Error::NotFound`] if it does not exist,
    /// [`Error::Conflict`] if `expected` is given and is not its mod revision.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, Error> {
        let op = Op::Update {
            key: key.to_owned(),
            value,
            expected,
        };
        self.single(op).await
    }

    /// Deletes `key` and returns its last value with the delete's revision;
    /// [`Error::NotFound`] or [`Error::Conflict`] as for [`Store::update`].
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error> {
        let op = Op::Delete {
            key: key.to_owned(),
            expected,
        };
        self.single(op).await
    }

    /// Every event on keys starting with `prefix` with a revision above `after`, in revision
    /// order: first the history from the log, then live, without gap or duplicate.
    /// `after == 0` (or negative) means from now on. [`Error::Compacted`] if `after` is below
    /// the compacted revision.
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, Error> {
        // Subscribe before reading any revision: see `watch.rs` for why this leaves no gap.
        let live = self.inner.events.subscribe();
        let shared = Arc::clone(&self.inner.shared);
        if after <= 0 {
            let now = load(&shared.current);
            return Ok(Watch::new(shared, prefix, now, live, false));
        }
        let compacted = load(&shared.compacted);
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(Watch::new(shared, prefix, after, live, true))
    }

    /// Drops the history older than the newest `keep_latest` revisions and returns the new
    /// compacted revision (unchanged if it is already that far). The state at the compacted
    /// revision stays listable. Blocks the calling thread until the writer has done it.
    pub fn compact(&self, keep_latest: usize) -> Result<Revision, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Compact { keep_latest, reply })?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    async fn single(&self, op: Op) -> Result<KeyValue, Error> {
        let mut kvs = self.txn(vec![op]).await?;
        // The writer answers one result per op.
        kvs.pop().ok_or(Error::Closed)
    }

    fn send(&self, request: Request) -> Result<(), Error> {
        self.inner
            .requests
            .as_ref()
            .ok_or(Error::Closed)?
            .send(request)
            .map_err(|_| Error::Closed)
    }
}

#[cfg(test)]
mod tests;
