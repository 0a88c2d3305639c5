//! Unit tests of the store through its public API.

use std::collections::BTreeSet;
use std::path::Path;

use tempfile::TempDir;

use crate::{Config, Error, Event, EventType, KeyValue, Op, Revision, Store};

fn open(dir: &TempDir) -> Store {
    open_with(dir, Config::default())
}

fn open_with(dir: &TempDir, config: Config) -> Store {
    Store::open(&dir.path().join("store.db"), config).expect("open store")
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        create_revision,
        mod_revision,
    }
}

fn put(key: &str, value: &str) -> Op {
    Op::Create {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

/// A short description of an error, so tests can compare expected failures as text.
fn describe(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Reads `n` events from a watch, failing on error or end.
async fn take(watch: &mut crate::Watch, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match tokio::time::timeout(std::time::Duration::from_secs(20), watch.next()).await {
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", events.len()),
            Ok(None) => panic!("watch ended after {} events", events.len()),
            Err(_) => panic!("watch stalled after {} events", events.len()),
        }
    }
    events
}

fn assert_consecutive(events: &[Event], after: Revision) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.revision,
            after + 1 + i as Revision,
            "event {i}: {event:?}"
        );
    }
}

#[tokio::test]
async fn create_get_update_delete() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    assert_eq!(store.current_revision(), 0);
    assert_eq!(store.get("/a").expect("get"), None);

    let created = store.create("/a", b"1".to_vec()).await.expect("create");
    assert_eq!(created, kv("/a", "1", 1, 1));
    assert_eq!(store.get("/a").expect("get"), Some(kv("/a", "1", 1, 1)));

    let updated = store.update("/a", b"2".to_vec(), Some(1)).await;
    assert_eq!(updated.expect("update"), kv("/a", "2", 1, 2));
    let updated = store.update("/a", b"3".to_vec(), None).await;
    assert_eq!(updated.expect("update"), kv("/a", "3", 1, 3));

    let deleted = store.delete("/a", Some(3)).await.expect("delete");
    assert_eq!(deleted, kv("/a", "3", 1, 4));
    assert_eq!(store.get("/a").expect("get"), None);
    assert_eq!(store.current_revision(), 4);

    // A re-created key starts a new incarnation.
    let again = store.create("/a", b"4".to_vec()).await.expect("create");
    assert_eq!(again, kv("/a", "4", 5, 5));
}

#[tokio::test]
async fn preconditions_fail_with_context() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    store.create("/a", b"1".to_vec()).await.expect("create");

    let cases: Vec<(Op, &str)> = vec![
        (put("/a", "x"), "key /a already exists"),
        (
            Op::Update {
                key: "/b".into(),
                value: vec![],
                expected: None,
            },
            "key /b not found",
        ),
        (
            Op::Update {
                key: "/a".into(),
                value: vec![],
                expected: Some(7),
            },
            "key /a was modified: expected revision 7, found 1",
        ),
        (
            Op::Delete {
                key: "/b".into(),
                expected: None,
            },
            "key /b not found",
        ),
        (
            Op::Delete {
                key: "/a".into(),
                expected: Some(0),
            },
            "key /a was modified: expected revision 0, found 1",
        ),
    ];
    for (op, expect) in cases {
        let got = describe(store.txn(vec![op.clone()]).await);
        assert_eq!(got, expect, "op {op:?}");
    }
    let err = store.update("/a", vec![], Some(9)).await;
    assert!(
        matches!(&err, Err(Error::Conflict { key, expected: 9, actual: 1 }) if key == "/a"),
        "{err:?}"
    );
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.get("/a").expect("get"), Some(kv("/a", "1", 1, 1)));
}

#[tokio::test]
async fn txn_is_all_or_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    store.create("/a", b"1".to_vec()).await.expect("create");

    // The second op fails: the first is not applied and no revision is used.
    let err = store.txn(vec![put("/b", "1"), put("/a", "2")]).await;
    assert!(
        matches!(&err, Err(Error::AlreadyExists { key }) if key == "/a"),
        "{err:?}"
    );
    assert_eq!(store.get("/b").expect("get"), None);
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.count("").expect("count"), 1);

    // Ops get consecutive revisions and see the earlier ops of their txn.
    let kvs = store
        .txn(vec![
            put("/b", "1"),
            Op::Update {
                key: "/b".into(),
                value: b"2".to_vec(),
                expected: Some(2),
            },
            Op::Delete {
                key: "/a".into(),
                expected: Some(1),
            },
        ])
        .await
        .expect("txn");
    assert_eq!(
        kvs,
        vec![
            kv("/b", "1", 2, 2),
            kv("/b", "2", 2, 3),
            kv("/a", "1", 1, 4)
        ]
    );
    assert_eq!(store.current_revision(), 4);
    assert_eq!(store.txn(vec![]).await.expect("empty txn"), vec![]);
    assert_eq!(store.current_revision(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_txns_in_one_batch_are_independent() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Half the tasks race for the same key, the others write their own.
            let key = if i % 2 == 0 {
                "/dup".to_owned()
            } else {
                format!("/own/{i}")
            };
            store.create(&key, vec![i as u8]).await
        }));
    }
    let mut revisions = BTreeSet::new();
    let mut already_exists = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(kv) => assert!(revisions.insert(kv.mod_revision), "duplicate revision"),
            Err(Error::AlreadyExists { key }) if key == "/dup" => already_exists += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(already_exists, 31);
    assert_eq!(revisions, (1..=33).collect::<BTreeSet<_>>());
    assert_eq!(store.current_revision(), 33);
    assert_eq!(store.count("").expect("count"), 33);
}

/// Lists and compares the keys, the consistency revision and `more`.
fn check_list(
    store: &Store,
    (prefix, start_after, limit, at): (&str, Option<&str>, Option<usize>, Option<Revision>),
    expect: (&[&str], Revision, bool),
) {
    let list = store
        .list(prefix, start_after, limit, at)
        .unwrap_or_else(|e| panic!("list {prefix:?} after {start_after:?} at {at:?}: {e}"));
    let keys: Vec<&str> = list.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        (keys.as_slice(), list.revision, list.more),
        expect,
        "list {prefix:?} after {start_after:?} limit {limit:?} at {at:?}"
    );
}

#[tokio::test]
async fn list_by_prefix_with_pages() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    for key in ["/a/3", "/a/1", "/ab", "/a/2", "/b/1", "/a0", "/a/é"] {
        store
            .create(key, key.as_bytes().to_vec())
            .await
            .expect("create");
    }
    let all: &[&str] = &["/a/1", "/a/2", "/a/3", "/a/é", "/a0", "/ab", "/b/1"];
    check_list(&store, ("", None, None, None), (all, 7, false));
    check_list(
        &store,
        ("/a/", None, None, None),
        (&["/a/1", "/a/2", "/a/3", "/a/é"], 7, false),
    );
    check_list(
        &store,
        ("/a/", None, Some(2), None),
        (&["/a/1", "/a/2"], 7, true),
    );
    check_list(
        &store,
        ("/a/", Some("/a/2"), Some(2), Some(7)),
        (&["/a/3", "/a/é"], 7, false),
    );
    check_list(
        &store,
        ("/a/", None, Some(4), None),
        (&["/a/1", "/a/2", "/a/3", "/a/é"], 7, false),
    );
    check_list(&store, ("/a/", None, Some(0), None), (&[], 7, true));
    check_list(&store, ("/c", None, None, None), (&[], 7, false));
    check_list(
        &store,
        ("/a", Some("/a/é"), None, None),
        (&["/a0", "/ab"], 7, false),
    );
    assert_eq!(store.count("/a/").expect("count"), 4);
    assert_eq!(store.count("/a").expect("count"), 6);
    assert_eq!(store.count("").expect("count"), 7);
}

#[tokio::test]
async fn list_at_an_older_revision() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    store.create("/p/a", b"a1".to_vec()).await.expect("create"); // 1
    store.create("/p/b", b"b1".to_vec()).await.expect("create"); // 2
    store
        .update("/p/a", b"a2".to_vec(), None)
        .await
        .expect("update"); // 3
    store.delete("/p/b", None).await.expect("delete"); // 4
    store.create("/p/c", b"c1".to_vec()).await.expect("create"); // 5
    store.create("/q/x", b"x1".to_vec()).await.expect("create"); // 6

    let cases: &[(Revision, &[KeyValue])] = &[
        (1, &[kv("/p/a", "a1", 1, 1)]),
        (2, &[kv("/p/a", "a1", 1, 1), kv("/p/b", "b1", 2, 2)]),
        (3, &[kv("/p/a", "a2", 1, 3), kv("/p/b", "b1", 2, 2)]),
        (4, &[kv("/p/a", "a2", 1, 3)]),
        (5, &[kv("/p/a", "a2", 1, 3), kv("/p/c", "c1", 5, 5)]),
        (6, &[kv("/p/a", "a2", 1, 3), kv("/p/c", "c1", 5, 5)]),
    ];
    for (at, expect) in cases {
        let list = store.list("/p/", None, None, Some(*at)).expect("list");
        assert_eq!(list.items, *expect, "at {at}");
        assert_eq!(list.revision, *at);
    }
    // Paging through an older revision.
    let page = store.list("/p/", None, Some(1), Some(3)).expect("list");
    assert_eq!((page.items.len(), page.more), (1, true));
    let page = store
        .list("/p/", Some("/p/a"), Some(1), Some(3))
        .expect("list");
    assert_eq!(
        (page.items, page.more),
        (vec![kv("/p/b", "b1", 2, 2)], false)
    );

    assert_eq!(
        describe(store.list("/p/", None, None, Some(7))),
        "revision 7 is newer than the current revision 6"
    );
}

#[tokio::test]
async fn watch_events_carry_values() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let mut watch = store.watch("/w/", 0).expect("watch");
    store.create("/w/a", b"1".to_vec()).await.expect("create");
    store.create("/other", b"x".to_vec()).await.expect("create");
    store
        .update("/w/a", b"2".to_vec(), None)
        .await
        .expect("update");
    store.delete("/w/a", None).await.expect("delete");

    let event = |kind, value: &str, prev: Option<&str>, revision| Event {
        kind,
        key: "/w/a".to_owned(),
        value: value.as_bytes().to_vec(),
        prev_value: prev.map(|p| p.as_bytes().to_vec()),
        revision,
        create_revision: 1,
    };
    let expect = vec![
        event(EventType::Put, "1", None, 1),
        event(EventType::Put, "2", Some("1"), 3),
        event(EventType::Delete, "2", Some("2"), 4),
    ];
    assert_eq!(take(&mut watch, 3).await, expect);
    assert_eq!(watch.revision(), 4);

    // The same events from the log.
    let mut history = store.watch("/w/", 1).expect("watch");
    let mut from_start = store.watch("/w/", 0).expect("watch");
    assert_eq!(take(&mut history, 2).await, expect[1..]);
    store.create("/w/b", b"3".to_vec()).await.expect("create");
    assert_eq!(take(&mut from_start, 1).await[0].revision, 5);
    assert_eq!(take(&mut history, 1).await[0].revision, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_has_no_gap_or_duplicate_under_concurrent_writes() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 150;
    for i in 0..100 {
        store
            .create(&format!("/pre/{i}"), vec![])
            .await
            .expect("create");
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    store
                        .create(&format!("/w/{w}/{i}"), vec![1])
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    // Watches started while the writers run, from history and from now.
    let mut watches = Vec::new();
    for start in [1, 50, 100] {
        watches.push((start, store.watch("", start).expect("watch")));
        tokio::task::yield_now().await;
    }
    let now = store.current_revision();
    watches.push((now, store.watch("", 0).expect("watch")));
    for writer in writers {
        writer.await.expect("writer");
    }
    let last = store.current_revision();
    assert_eq!(last, (100 + WRITERS * PER_WRITER) as Revision);
    for (start, mut watch) in watches {
        let events = take(&mut watch, (last - start) as usize).await;
        assert_consecutive(&events, start);
    }
}

#[tokio::test]
async fn lagging_watch_catches_up_from_the_log() {
    let dir = TempDir::new().expect("tempdir");
    let store = open_with(
        &dir,
        Config {
            history: 4,
            ..Config::default()
        },
    );
    let mut all = store.watch("", 0).expect("watch");
    let mut some = store.watch("/odd/", 0).expect("watch");
    for i in 0..1200 {
        let key = if i % 2 == 1 {
            format!("/odd/{i}")
        } else {
            format!("/even/{i}")
        };
        store.create(&key, vec![]).await.expect("create");
    }
    assert_consecutive(&take(&mut all, 1200).await, 0);
    let odd = take(&mut some, 600).await;
    let revisions: Vec<Revision> = odd.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, (1..=600).map(|i| 2 * i).collect::<Vec<_>>());
}

#[tokio::test]
async fn compaction_keeps_recent_history_and_the_compacted_state() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    store.create("/k/a", b"a1".to_vec()).await.expect("create"); // 1
    store.create("/k/b", b"b1".to_vec()).await.expect("create"); // 2
    store
        .update("/k/a", b"a2".to_vec(), None)
        .await
        .expect("update"); // 3
    store.delete("/k/b", None).await.expect("delete"); // 4
    store.create("/k/c", b"c1".to_vec()).await.expect("create"); // 5
    store
        .update("/k/c", b"c2".to_vec(), None)
        .await
        .expect("update"); // 6
    let mut lagging = store.watch("/k/", 1).expect("watch");

    assert_eq!(store.compact(2).expect("compact"), 4);
    assert_eq!(store.compacted_revision(), 4);
    // Compacting less than already compacted changes nothing.
    assert_eq!(store.compact(5).expect("compact"), 4);

    assert_eq!(
        describe(store.list("/k/", None, None, Some(3))),
        "revision 3 is compacted (history kept after revision 4)"
    );
    let at4 = store.list("/k/", None, None, Some(4)).expect("list");
    assert_eq!(at4.items, vec![kv("/k/a", "a2", 1, 3)]);
    let at5 = store.list("/k/", None, None, Some(5)).expect("list");
    assert_eq!(
        at5.items,
        vec![kv("/k/a", "a2", 1, 3), kv("/k/c", "c1", 5, 5)]
    );

    assert!(matches!(
        store.watch("/k/", 3),
        Err(Error::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    let mut from4 = store.watch("/k/", 4).expect("watch");
    let revisions: Vec<Revision> = take(&mut from4, 2)
        .await
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(revisions, vec![5, 6]);

    // A watch whose history was compacted while it was behind ends with an error.
    match lagging.next().await {
        Some(Err(Error::Compacted {
            requested: 1,
            compacted: 4,
        })) => {}
        other => panic!("expected compacted, got {other:?}"),
    }
    assert!(lagging.next().await.is_none());

    // Compacting everything still lists the current state at the current revision.
    assert_eq!(store.compact(0).expect("compact"), 6);
    let now = store.list("/k/", None, None, Some(6)).expect("list");
    assert_eq!(
        now.items,
        vec![kv("/k/a", "a2", 1, 3), kv("/k/c", "c2", 5, 6)]
    );
}

#[tokio::test]
async fn revision_and_data_survive_reopen() {
    let dir = TempDir::new().expect("tempdir");
    {
        let store = open(&dir);
        store.create("/a", b"1".to_vec()).await.expect("create");
        store.create("/b", b"2".to_vec()).await.expect("create");
        store.delete("/b", None).await.expect("delete");
        assert_eq!(store.compact(1).expect("compact"), 2);
    }
    let store = open(&dir);
    assert_eq!(store.current_revision(), 3);
    assert_eq!(store.compacted_revision(), 2);
    assert_eq!(store.get("/a").expect("get"), Some(kv("/a", "1", 1, 1)));
    // The newest revision was a delete: it is not reused.
    assert_eq!(
        store
            .create("/c", vec![])
            .await
            .expect("create")
            .mod_revision,
        4
    );
    let mut watch = store.watch("", 2).expect("watch");
    let events = take(&mut watch, 2).await;
    assert_eq!(
        (events[0].kind, events[0].key.as_str()),
        (EventType::Delete, "/b")
    );
    assert_eq!(events[1].revision, 4);
}

#[tokio::test]
async fn closing_the_store_ends_watches() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let mut watch = store.watch("", 0).expect("watch");
    store.create("/a", vec![]).await.expect("create");
    drop(store);
    assert_eq!(take(&mut watch, 1).await[0].key, "/a");
    assert!(watch.next().await.is_none());
}

#[test]
fn open_reports_the_path() {
    let dir = TempDir::new().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").expect("write");
    let err = Store::open(&file.join("store.db"), Config::default()).err();
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains(&file.display().to_string()), "{message}");
}

const CRASH_CHILD: &str = "KINS_STORE_CRASH_CHILD";
const CRASH_WRITES: usize = 200;

/// In the child: acknowledged writes, then an abort (no clean shutdown, no checkpoint).
fn crash_child(path: &Path) -> ! {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Store::open(path, Config::default()).expect("open");
        let tasks: Vec<_> = (0..CRASH_WRITES)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.create(&format!("/k/{i}"), vec![7; 100]).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("create");
        }
    });
    std::process::abort()
}

#[test]
fn acknowledged_writes_survive_abort() {
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        crash_child(Path::new(&path));
    }
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("store.db");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "tests::acknowledged_writes_survive_abort",
            "--nocapture",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run child");
    assert!(!status.success(), "the child should have aborted");
    let store = Store::open(&path, Config::default()).expect("reopen");
    assert_eq!(store.current_revision(), CRASH_WRITES as Revision);
    assert_eq!(store.count("/k/").expect("count"), CRASH_WRITES);
}

#[test]
fn handles_can_move_between_tasks() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send + 'static>(_: &T) {}
    send_sync_clone::<Store>();
    send_sync_clone::<Error>();
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let mut watch = store.watch("", 0).expect("watch");
    send(&watch);
    send(&async move { watch.next().await });
    send(&async move { store.create("/a", vec![]).await });
}
