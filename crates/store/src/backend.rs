//! The interface the API server uses: any store that keeps one global revision, lists at a
//! revision and replays history for watches can stand behind it. [`crate::Store`]
//! (SQLite) is the one implementation today; the schema and queries are plain SQL so that
//! a PostgreSQL backend shared by several API servers can follow.

use std::future::Future;
use std::pin::Pin;

use crate::{Error, Event, KeyValue, ListResult, Op, Revision};

/// A boxed future of a transaction's result.
pub type TxnFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<KeyValue>, Error>> + Send + 'a>>;

/// A boxed future of a watch's next event.
pub type NextFuture<'a> = Pin<Box<dyn Future<Output = Option<Result<Event, Error>>> + Send + 'a>>;

/// Events of a watch, in revision order.
pub trait EventStream: Send {
    /// The next event; `None` when the store is gone, an error when the watch fell behind
    /// compaction.
    fn next(&mut self) -> NextFuture<'_>;
    /// Every matching event at or below this revision has been delivered (a bookmark).
    fn revision(&self) -> Revision;
}

/// A durable key-value store with one global, strictly increasing revision.
pub trait Backend: Send + Sync {
    fn current_revision(&self) -> Revision;
    fn compacted_revision(&self) -> Revision;
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error>;
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        at: Option<Revision>,
    ) -> Result<ListResult, Error>;
    fn count(&self, prefix: &str) -> Result<usize, Error>;
    /// All-or-nothing; acknowledged once durable.
    fn txn(&self, ops: Vec<Op>) -> TxnFuture<'_>;
    /// History after `after` (0: from now), then live events.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn EventStream>, Error>;
    /// Drops history older than the newest `keep_latest` revisions.
    fn compact(&self, keep_latest: usize) -> Result<Revision, Error>;
}

fn single(kvs: Result<Vec<KeyValue>, Error>) -> Result<KeyValue, Error> {
    kvs?.into_iter().next().ok_or(Error::Closed)
}

impl dyn Backend + '_ {
    /// Creates `key`; [`Error::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, Error> {
        single(
            self.txn(vec![Op::Create {
                key: key.to_owned(),
                value,
            }])
            .await,
        )
    }

    /// Replaces `key`'s value; [`Error::NotFound`], or [`Error::Conflict`] when `expected`
    /// is not its mod revision.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, Error> {
        single(
            self.txn(vec![Op::Update {
                key: key.to_owned(),
                value,
                expected,
            }])
            .await,
        )
    }

    /// Deletes `key`, returning its last value with the delete's revision.
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error> {
        single(
            self.txn(vec![Op::Delete {
                key: key.to_owned(),
                expected,
            }])
            .await,
        )
    }
}

impl EventStream for crate::Watch {
    fn next(&mut self) -> NextFuture<'_> {
        Box::pin(crate::Watch::next(self))
    }

    fn revision(&self) -> Revision {
        crate::Watch::revision(self)
    }
}

impl Backend for crate::Store {
    fn current_revision(&self) -> Revision {
        crate::Store::current_revision(self)
    }
    fn compacted_revision(&self) -> Revision {
        crate::Store::compacted_revision(self)
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        crate::Store::get(self, key)
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        at: Option<Revision>,
    ) -> Result<ListResult, Error> {
        crate::Store::list(self, prefix, start_after, limit, at)
    }
    fn count(&self, prefix: &str) -> Result<usize, Error> {
        crate::Store::count(self, prefix)
    }
    fn txn(&self, ops: Vec<Op>) -> TxnFuture<'_> {
        Box::pin(crate::Store::txn(self, ops))
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn EventStream>, Error> {
        Ok(Box::new(crate::Store::watch(self, prefix, after)?))
    }
    fn compact(&self, keep_latest: usize) -> Result<Revision, Error> {
        crate::Store::compact(self, keep_latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_sqlite_store_behind_the_trait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s: Arc<dyn Backend> = Arc::new(
            crate::Store::open(&dir.path().join("db"), crate::Config::default()).expect("open"),
        );
        let mut w = s.watch("/a/", 0).expect("watch");
        let kv = s.create("/a/x", b"1".to_vec()).await.expect("create");
        assert!(matches!(
            s.create("/a/x", b"2".to_vec()).await,
            Err(Error::AlreadyExists { .. })
        ));
        let up = s
            .update("/a/x", b"3".to_vec(), Some(kv.mod_revision))
            .await
            .expect("update");
        assert!(matches!(
            s.update("/a/x", b"4".to_vec(), Some(kv.mod_revision)).await,
            Err(Error::Conflict { .. })
        ));
        assert_eq!(
            s.get("/a/x").expect("get").map(|k| k.value),
            Some(b"3".to_vec())
        );
        s.delete("/a/x", Some(up.mod_revision))
            .await
            .expect("delete");
        let revs: Vec<Revision> = [w.next().await, w.next().await, w.next().await]
            .into_iter()
            .map(|e| e.expect("event").expect("ok").revision)
            .collect();
        assert_eq!(
            revs,
            vec![kv.mod_revision, up.mod_revision, up.mod_revision + 1]
        );
        assert_eq!(s.count("/a/").expect("count"), 0);
    }
}
