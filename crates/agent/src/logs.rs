//! Container logs as the kubelet serves them (`kubectl logs`): the query options, choosing
//! the log file of a container's run, and turning CRI-format entries into the bytes the
//! user sees. Everything but [`follow`] and [`read_dir_names`] is pure.
//!
//! A CRI log line is `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`: `P` is a
//! partial line continued by the next entry of the same stream, `F` ends the line. A line
//! that is not in this format (a runtime writing raw output) is taken as one complete line
//! without a timestamp, so that such logs are still readable.
//!
//! Layout: `<container log dir>/<restartCount>.log`, rotated files
//! `<restartCount>.log.<YYYYmmdd-HHMMSS>` beside it. The current run is the highest
//! restartCount; `previous` is the one before it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};

/// The options of `GET .../containerLogs/...` (Kubernetes' PodLogOptions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<DateTime<FixedOffset>>,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
}

/// A log request the agent cannot serve; the message is the one Kubernetes gives.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogError {
    /// A malformed or invalid option (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such pod, container or log (404).
    #[error("{0}")]
    NotFound(String),
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_bool(key: &str, v: &str) -> Result<bool, LogError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(LogError::BadRequest(format!(
            "{key}: Invalid value: \"{v}\": must be a boolean"
        ))),
    }
}

fn parse_int(key: &str, v: &str) -> Result<i64, LogError> {
    v.parse().map_err(|_| {
        LogError::BadRequest(format!("{key}: Invalid value: \"{v}\": must be an integer"))
    })
}

impl LogOptions {
    /// Parses the query string kubectl sends (`follow=true&tailLines=10&...`) and validates
    /// it like Kubernetes' PodLogOptions. Unknown keys (e.g. `container`) are ignored.
    pub fn from_query(query: &str) -> Result<LogOptions, LogError> {
        let mut o = LogOptions::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            match k.as_str() {
                "follow" => o.follow = parse_bool(&k, &v)?,
                "previous" => o.previous = parse_bool(&k, &v)?,
                "timestamps" => o.timestamps = parse_bool(&k, &v)?,
                "sinceSeconds" => o.since_seconds = Some(parse_int(&k, &v)?),
                "tailLines" => o.tail_lines = Some(parse_int(&k, &v)?),
                "limitBytes" => o.limit_bytes = Some(parse_int(&k, &v)?),
                "sinceTime" => {
                    o.since_time = Some(DateTime::parse_from_rfc3339(&v).map_err(|_| {
                        LogError::BadRequest(format!(
                            "sinceTime: Invalid value: \"{v}\": must be an RFC3339 time"
                        ))
                    })?)
                }
                _ => {}
            }
        }
        if o.since_seconds.is_some() && o.since_time.is_some() {
            return Err(LogError::BadRequest(
                "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ));
        }
        let positive = |key: &str, v: Option<i64>, min: i64, what: &str| match v {
            Some(n) if n < min => Err(LogError::BadRequest(format!(
                "{key}: Invalid value: {n}: {what}"
            ))),
            _ => Ok(()),
        };
        positive("sinceSeconds", o.since_seconds, 1, "must be greater than 0")?;
        positive(
            "tailLines",
            o.tail_lines,
            0,
            "must be greater than or equal to 0",
        )?;
        positive("limitBytes", o.limit_bytes, 1, "must be greater than 0")?;
        Ok(o)
    }

    /// The earliest timestamp served, if any.
    pub fn since(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.since_time, self.since_seconds) {
            (Some(t), _) => Some(t.with_timezone(&Utc)),
            (None, Some(s)) => Some(now - chrono::Duration::seconds(s)),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One CRI log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    /// The timestamp as written ("" for a line not in CRI format).
    pub timestamp: &'a str,
    pub time: Option<DateTime<FixedOffset>>,
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line of a log file (without its newline).
pub fn parse_entry(line: &[u8]) -> Entry<'_> {
    let raw = Entry {
        timestamp: "",
        time: None,
        stream: Stream::Stdout,
        partial: false,
        content: line,
    };
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw;
    };
    let Ok(ts) = std::str::from_utf8(ts) else {
        return raw;
    };
    let Ok(time) = DateTime::parse_from_rfc3339(ts) else {
        return raw;
    };
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return raw,
    };
    // Tags are `:`-separated; the first says whether the line is partial.
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return raw,
    };
    Entry {
        timestamp: ts,
        time: Some(time),
        stream,
        partial,
        content: parts.next().unwrap_or(b""),
    }
}

/// One line as the user sees it: the content of its entries joined.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    /// Timestamp of the line's first entry.
    timestamp: String,
    time: Option<DateTime<FixedOffset>>,
    content: Vec<u8>,
    /// False for a partial line the log ended in.
    newline: bool,
}

/// Joins partial entries per stream.
#[derive(Debug, Default)]
struct Joiner {
    pending: [Option<Line>; 2],
}

impl Joiner {
    fn push(&mut self, e: &Entry<'_>) -> Option<Line> {
        let slot = &mut self.pending[e.stream as usize];
        let line = slot.get_or_insert_with(|| Line {
            timestamp: e.timestamp.to_string(),
            time: e.time,
            content: Vec::new(),
            newline: true,
        });
        line.content.extend_from_slice(e.content);
        if e.partial {
            None
        } else {
            slot.take()
        }
    }

    /// The partial lines the log ends in, oldest first.
    fn finish(&mut self) -> Vec<Line> {
        let mut out: Vec<Line> = self
            .pending
            .iter_mut()
            .filter_map(Option::take)
            .map(|mut l| {
                l.newline = false;
                l
            })
            .collect();
        out.sort_by_key(|l| l.time);
        out
    }
}

/// Turns the bytes of a log file into what the user sees, applying the options. Used once
/// on the content present at the start, then on each appended chunk when following.
#[derive(Debug)]
pub struct LogReader {
    timestamps: bool,
    tail: Option<usize>,
    since: Option<DateTime<Utc>>,
    remaining: Option<u64>,
    joiner: Joiner,
    /// Bytes of an incomplete file line (being written).
    carry: Vec<u8>,
}

impl LogReader {
    pub fn new(opts: &LogOptions, now: DateTime<Utc>) -> LogReader {
        LogReader {
            timestamps: opts.timestamps,
            tail: opts
                .tail_lines
                .map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX)),
            since: opts.since(now),
            remaining: opts.limit_bytes.map(|n| n.max(0).unsigned_abs()),
            joiner: Joiner::default(),
            carry: Vec::new(),
        }
    }

    /// Whether `limitBytes` is used up: nothing more will be written.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    fn lines(&mut self, data: &[u8], last: bool) -> Vec<Line> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut rest: &[u8] = &buf;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(i);
            rest = &tail[1..];
            if let Some(l) = self.joiner.push(&parse_entry(line)) {
                out.push(l);
            }
        }
        if last {
            if !rest.is_empty() {
                if let Some(l) = self.joiner.push(&parse_entry(rest)) {
                    out.push(l);
                }
            }
            out.extend(self.joiner.finish());
        } else {
            self.carry = rest.to_vec();
        }
        out
    }

    fn write(&mut self, lines: &[Line]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            if let (Some(since), Some(t)) = (self.since, l.time) {
                if t < since {
                    continue;
                }
            }
            if self.timestamps && !l.timestamp.is_empty() {
                out.extend_from_slice(l.timestamp.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&l.content);
            if l.newline {
                out.push(b'\n');
            }
        }
        if let Some(rem) = &mut self.remaining {
            let keep = usize::try_from(*rem).unwrap_or(usize::MAX).min(out.len());
            out.truncate(keep);
            *rem -= keep as u64;
        }
        out
    }

    /// The output for the content present when the request came. `last`: the log is
    /// complete (no follow), so a trailing partial line is written too. `tailLines` applies
    /// here only.
    pub fn initial(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        let mut lines = self.lines(data, last);
        if let Some(n) = self.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        self.write(&lines)
    }

    /// The output for bytes appended while following.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let lines = self.lines(data, false);
        self.write(&lines)
    }

    /// The output at the end of following: whatever partial line the log ended in.
    pub fn finish(&mut self) -> Vec<u8> {
        let lines = self.lines(&[], true);
        self.write(&lines)
    }
}

/// Renders a complete log (no follow).
pub fn render(data: &[u8], opts: &LogOptions, now: DateTime<Utc>) -> Vec<u8> {
    LogReader::new(opts, now).initial(data, true)
}

/// The files of one run of a container, in the order they are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub restart_count: u32,
    /// Rotated files oldest first, then `<n>.log` if it exists (file names).
    pub files: Vec<String>,
}

fn run_of(name: &str) -> Option<(u32, Option<&str>)> {
    let (n, rest) = name.split_once(".log")?;
    let n = n.parse().ok()?;
    match rest {
        "" => Some((n, None)),
        r => r.strip_prefix('.').map(|stamp| (n, Some(stamp))),
    }
}

/// Picks the current run (highest restartCount) or the previous one among the file names
/// of a container's log directory.
pub fn select(names: &[String], previous: bool) -> Option<Selected> {
    let mut runs: Vec<u32> = names
        .iter()
        .filter_map(|n| run_of(n))
        .map(|r| r.0)
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let n = if previous {
        *runs.iter().rev().nth(1)?
    } else {
        *runs.last()?
    };
    let mut rotated: Vec<&str> = names
        .iter()
        .filter(|name| run_of(name).is_some_and(|(m, stamp)| m == n && stamp.is_some()))
        .map(String::as_str)
        .collect();
    rotated.sort_unstable();
    let mut files: Vec<String> = rotated.into_iter().map(str::to_string).collect();
    let current = format!("{n}.log");
    if names.contains(&current) {
        files.push(current);
    }
    Some(Selected {
        restart_count: n,
        files,
    })
}

/// The names in a directory (empty if it cannot be read).
pub fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// How often a followed file is polled, and how long it must stay idle, with its
/// container not running, before following ends.
const POLL: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(500);

async fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}

async fn send(tx: &tokio::sync::mpsc::Sender<Bytes>, out: Vec<u8>) -> bool {
    out.is_empty() || tx.send(Bytes::from(out)).await.is_ok()
}

/// Writes a container run's log to `tx`: the files of `sel` under `dir`, then, with
/// `follow`, what is appended to the current file until the run is over (the file idle
/// and `is_running` false, or a newer run's log appeared), `limitBytes` is used up or the
/// receiver is gone.
pub async fn stream(
    dir: PathBuf,
    sel: Selected,
    opts: LogOptions,
    is_running: impl Fn() -> bool + Send,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut reader = LogReader::new(&opts, Utc::now());
    let current = dir.join(format!("{}.log", sel.restart_count));
    let mut data = Vec::new();
    let mut offset = 0u64;
    for name in &sel.files {
        let path = dir.join(name);
        match read_from(&path, 0).await {
            Ok(b) => {
                if path == current {
                    offset = b.len() as u64;
                }
                data.extend_from_slice(&b);
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "reading a log"),
        }
    }
    let follow = opts.follow && !opts.previous;
    if !send(&tx, reader.initial(&data, !follow)).await || !follow {
        return;
    }
    drop(data);
    let newer = dir.join(format!("{}.log", sel.restart_count + 1));
    let mut idle_since = tokio::time::Instant::now();
    while !reader.done() {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => return,
        }
        let len = match tokio::fs::metadata(&current).await {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if len < offset {
            // Truncated or replaced (rotation): start over on the new file.
            offset = 0;
        }
        if len > offset {
            match read_from(&current, offset).await {
                Ok(b) => {
                    offset += b.len() as u64;
                    if !send(&tx, reader.feed(&b)).await {
                        return;
                    }
                    idle_since = tokio::time::Instant::now();
                    continue;
                }
                Err(e) => tracing::debug!(path = %current.display(), error = %e, "following a log"),
            }
        }
        if newer.exists() || (idle_since.elapsed() >= IDLE && !is_running()) {
            break;
        }
    }
    let _ = send(&tx, reader.finish()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    const LOG: &str = "\
2024-05-01T09:00:00.000000001Z stdout F one
2024-05-01T09:30:00.5Z stderr F two
2024-05-01T09:59:00Z stdout P thr
2024-05-01T09:59:01Z stderr F err
2024-05-01T09:59:02Z stdout F ee
2024-05-01T09:59:30Z stdout F four
";

    fn check(input: &str, query: &str, expected: &str) {
        let opts = LogOptions::from_query(query).expect("options");
        let got = render(input.as_bytes(), &opts, now());
        assert_eq!(String::from_utf8_lossy(&got), expected, "query {query:?}");
    }

    #[test]
    fn renders_with_options() {
        check(LOG, "", "one\ntwo\nerr\nthree\nfour\n");
        check(LOG, "tailLines=2", "three\nfour\n");
        check(LOG, "tailLines=0", "");
        check(LOG, "tailLines=100", "one\ntwo\nerr\nthree\nfour\n");
        check(LOG, "sinceSeconds=60", "err\nthree\nfour\n");
        check(LOG, "sinceSeconds=3600", "one\ntwo\nerr\nthree\nfour\n");
        check(
            LOG,
            "sinceTime=2024-05-01T09%3A30%3A00Z",
            "two\nerr\nthree\nfour\n",
        );
        check(
            LOG,
            "sinceTime=2024-05-01T11:30:00%2B02:00",
            "two\nerr\nthree\nfour\n",
        );
        check(LOG, "limitBytes=6", "one\ntw");
        check(LOG, "tailLines=1&limitBytes=2", "fo");
        check(
            LOG,
            "timestamps=true&tailLines=3",
            "2024-05-01T09:59:01Z err\n2024-05-01T09:59:00Z three\n2024-05-01T09:59:30Z four\n",
        );
        check(
            LOG,
            "timestamps&sinceSeconds=1800&tailLines=5",
            "2024-05-01T09:30:00.5Z two\n2024-05-01T09:59:01Z err\n\
             2024-05-01T09:59:00Z three\n2024-05-01T09:59:30Z four\n",
        );
    }

    #[test]
    fn partial_lines_and_raw_lines() {
        // A log ending in a partial line: written without a newline.
        check(
            "2024-05-01T09:00:00Z stdout F a\n2024-05-01T09:00:01Z stdout P b\n",
            "",
            "a\nb",
        );
        // Empty content and a tag list.
        check(
            "2024-05-01T09:00:00Z stdout F\n2024-05-01T09:00:01Z stdout F:x y z\n",
            "",
            "\ny z\n",
        );
        // Not CRI: taken as is, never filtered, no timestamp.
        check(
            "plain output\nmore",
            "timestamps=true&sinceSeconds=1",
            "plain output\nmore\n",
        );
        // A missing trailing newline of the file itself.
        check("2024-05-01T09:00:00Z stdout F a", "", "a\n");
    }

    #[test]
    fn follow_feeds_appended_bytes() {
        let opts = LogOptions::from_query("follow=true&tailLines=1").expect("options");
        let mut r = LogReader::new(&opts, now());
        let out = r.initial(
            b"2024-05-01T09:00:00Z stdout F a\n2024-05-01T09:00:01Z stdout F b\n2024-05-01T09:00:02Z stdout P c",
            false,
        );
        assert_eq!(out, b"b\n");
        assert_eq!(r.feed(b"\n2024-05-01T09:00:03Z stdout F d"), b"");
        assert_eq!(r.feed(b"\n2024-05-01T09:00:04Z stdout F e\n"), b"cd\ne\n");
        assert_eq!(r.feed(b"2024-05-01T09:00:05Z stdout P f\n"), b"");
        assert_eq!(r.finish(), b"f");

        let opts = LogOptions::from_query("follow=true&limitBytes=3").expect("options");
        let mut r = LogReader::new(&opts, now());
        assert_eq!(
            r.initial(b"2024-05-01T09:00:00Z stdout F a\n", false),
            b"a\n"
        );
        assert!(!r.done());
        assert_eq!(r.feed(b"2024-05-01T09:00:01Z stdout F bcd\n"), b"b");
        assert!(r.done());
    }

    #[test]
    fn options() {
        let o = LogOptions::from_query(
            "container=c&follow=true&previous=false&sinceSeconds=5&timestamps=1&tailLines=10&limitBytes=7",
        )
        .expect("options");
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: false,
                since_seconds: Some(5),
                since_time: None,
                timestamps: true,
                tail_lines: Some(10),
                limit_bytes: Some(7),
            }
        );
        let err = |q: &str| match LogOptions::from_query(q) {
            Err(LogError::BadRequest(m)) => m,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(
            err("sinceSeconds=1&sinceTime=2024-05-01T09:00:00Z"),
            "at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
        assert_eq!(
            err("tailLines=-1"),
            "tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            err("limitBytes=0"),
            "limitBytes: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(
            err("sinceSeconds=0"),
            "sinceSeconds: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(
            err("follow=yes"),
            "follow: Invalid value: \"yes\": must be a boolean"
        );
        assert_eq!(
            err("sinceTime=yesterday"),
            "sinceTime: Invalid value: \"yesterday\": must be an RFC3339 time"
        );
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selects_current_and_previous_runs() {
        let files = names(&[
            "0.log",
            "2.log.20240501-090000",
            "2.log",
            "2.log.20240430-235959",
            "10.log",
            "junk",
        ]);
        let sel = |previous| select(&files, previous);
        assert_eq!(
            sel(false),
            Some(Selected {
                restart_count: 10,
                files: names(&["10.log"])
            })
        );
        assert_eq!(
            sel(true),
            Some(Selected {
                restart_count: 2,
                files: names(&["2.log.20240430-235959", "2.log.20240501-090000", "2.log"])
            })
        );
        assert_eq!(select(&names(&["0.log"]), true), None);
        assert_eq!(select(&names(&[]), false), None);
    }
}
