//! Watches: history from the durable log, then live events, without gap or duplicate.
//!
//! A watch subscribes to the live channel *before* it looks at the log or the current
//! revision. The writer publishes an event only after it is committed, so every event is
//! either already readable in the log when the watch reads it, or arrives on the channel.
//! The watch remembers the last revision it delivered and skips anything at or below it,
//! which removes the overlap. When the channel overflows (the watcher is more than
//! `Config::history` events behind), the watch goes back to the log from its last revision;
//! only when compaction has removed that history does it end with [`Error::Compacted`].

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::read::Shared;
use crate::{Error, Event, Revision};

/// How many events one read of the log returns.
const LOG_CHUNK: usize = 512;

/// A stream of events on the keys under one prefix, in revision order.
///
/// Returned by [`Store::watch`](crate::Store::watch). Reading history runs short SQLite
/// queries on the calling thread.
pub struct Watch {
    shared: Arc<Shared>,
    prefix: String,
    /// The revision of the last event delivered (or the starting point).
    last: Revision,
    live: broadcast::Receiver<Arc<Event>>,
    /// Events read from the log, not yet delivered.
    pending: VecDeque<Event>,
    /// Whether the log may hold events after `last` that the live channel will not deliver.
    catching_up: bool,
    /// Set after an error or the end of the store: `next` returns `None` from then on.
    done: bool,
}

impl Watch {
    pub(crate) fn new(
        shared: Arc<Shared>,
        prefix: &str,
        last: Revision,
        live: broadcast::Receiver<Arc<Event>>,
        catching_up: bool,
    ) -> Watch {
        Watch {
            shared,
            prefix: prefix.to_owned(),
            last,
            live,
            pending: VecDeque::new(),
            catching_up,
            done: false,
        }
    }

    /// The revision up to which this watch is complete: every event under the prefix with a
    /// revision at or below it has been returned (at first, the revision the watch started
    /// after). A new watch started after it misses nothing and repeats nothing, so it can be
    /// used as a bookmark.
    pub fn revision(&self) -> Revision {
        self.last
    }

    /// The next event, `Some(Err(_))` once if the watch cannot continue (its history was
    /// compacted away, or the log could not be read), or `None` when the store is closed.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                self.last = event.revision;
                return Some(Ok(event));
            }
            if self.catching_up {
                match self.shared.events_after(&self.prefix, self.last, LOG_CHUNK) {
                    Ok(events) => {
                        // A short chunk means the log had nothing more when it was read;
                        // everything committed later comes through the live channel.
                        self.catching_up = events.len() == LOG_CHUNK;
                        self.pending.extend(events);
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if event.revision <= self.last {
                        continue; // already delivered from the log
                    }
                    // Live events come in revision order and everything before this one was
                    // delivered or did not match: the watch is complete up to here even
                    // when this event is for another prefix, which keeps a quiet watch
                    // from falling behind compaction.
                    self.last = event.revision;
                    if event.key.starts_with(&self.prefix) {
                        return Some(Ok(Event::clone(&event)));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        prefix = %self.prefix,
                        revision = self.last,
                        missed,
                        "watch fell behind the live events, reading the log"
                    );
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}
