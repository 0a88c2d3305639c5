//! CRI-format container logs: the writer the shim feeds with a container's stdout and
//! stderr. Every line is written as
//! `<RFC3339Nano UTC time> <stdout|stderr> <F|P> <content>\n`: `F` ends a line, `P` is a
//! piece of a line longer than `MAX_LINE` (or of data still without its newline when the
//! stream ends, which is then closed by an `F`). The file is rotated by size the way the
//! kubelet does it: `<path>.<%Y%m%d-%H%M%S>`, keeping `max_files - 1` rotated files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::container::{LogConfig, RuntimeError};

/// Longest line content written in one record (containerd's default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// The time stamp of a record: UTC, nanoseconds, e.g. `2026-11-26T08:43:39.123456789Z`.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One record, newline included.
pub fn format_record(time: &str, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(time.len() + content.len() + 12);
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Appends CRI records to a container's log file.
pub struct CriLogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
    /// Data of each stream not yet ended by a newline.
    pending: [Vec<u8>; 2],
    /// The clock, replaceable in tests.
    now: fn() -> chrono::DateTime<chrono::Utc>,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |error| RuntimeError::Io { what, path, error }
}

fn open_append(path: &Path) -> Result<(File, u64), RuntimeError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    let size = file.metadata().map_err(io_err("reading", path))?.len();
    Ok((file, size))
}

impl CriLogWriter {
    /// Opens (creating it and its parents) the log file in append mode.
    pub fn open(cfg: &LogConfig) -> Result<CriLogWriter, RuntimeError> {
        if let Some(parent) = cfg.path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let (file, size) = open_append(&cfg.path)?;
        Ok(CriLogWriter {
            path: cfg.path.clone(),
            max_size: cfg.max_size,
            max_files: cfg.max_files,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
            now: chrono::Utc::now,
        })
    }

    /// Writes the complete lines in `bytes` (after what is pending for `stream`) and keeps
    /// the rest for later; pieces longer than `MAX_LINE` are written as `P` records.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), RuntimeError> {
        let mut buf = std::mem::take(&mut self.pending[stream.index()]);
        buf.extend_from_slice(bytes);
        let mut rest: &[u8] = &buf;
        loop {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => {
                    self.record(stream, false, &rest[..i])?;
                    rest = &rest[i + 1..];
                }
                _ if rest.len() > MAX_LINE => {
                    self.record(stream, true, &rest[..MAX_LINE])?;
                    rest = &rest[MAX_LINE..];
                }
                _ => break,
            }
        }
        self.pending[stream.index()] = rest.to_vec();
        Ok(())
    }

    /// Whether an incomplete line waits in a buffer.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|p| !p.is_empty())
    }

    /// The output went quiet with an incomplete line (a prompt, `printf` without a
    /// newline): writes it as a partial (`P`) record so readers see it now; what follows
    /// continues the line.
    pub fn flush_partial(&mut self) -> Result<(), RuntimeError> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream.index()]);
            if !rest.is_empty() {
                self.record(stream, true, &rest)?;
            }
        }
        Ok(())
    }

    /// The stream ended: writes what is pending as a full line.
    pub fn finish(&mut self, stream: Stream) -> Result<(), RuntimeError> {
        let rest = std::mem::take(&mut self.pending[stream.index()]);
        if rest.is_empty() {
            return Ok(());
        }
        self.record(stream, false, &rest)
    }

    /// Writes one message as a full line (e.g. why the container could not start).
    pub fn message(&mut self, stream: Stream, text: &str) -> Result<(), RuntimeError> {
        self.finish(stream)?;
        for line in text.lines() {
            self.record(stream, false, line.as_bytes())?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> Result<(), RuntimeError> {
        let rec = format_record(&timestamp((self.now)()), stream, partial, content);
        if self.max_size > 0 && self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file
            .write_all(&rec)
            .map_err(io_err("writing", &self.path))?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), RuntimeError> {
        let stamp = (self.now)().format("%Y%m%d-%H%M%S").to_string();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Two rotations within one second: `.1`, `.2`... (ordered by `rotation_order`).
        let same_second: Vec<u64> = rotated_files(&self.path)?
            .iter()
            .map(|p| rotation_order(p))
            .filter(|(s, _)| *s == stamp)
            .map(|(_, n)| n)
            .collect();
        let target = match same_second.iter().max() {
            None => self.path.with_file_name(format!("{name}.{stamp}")),
            Some(n) => self
                .path
                .with_file_name(format!("{name}.{stamp}.{}", n + 1)),
        };
        std::fs::rename(&self.path, &target).map_err(io_err("rotating", &self.path))?;
        let (file, size) = open_append(&self.path)?;
        self.file = file;
        self.size = size;
        let keep = self.max_files.saturating_sub(1) as usize;
        let mut rotated = rotated_files(&self.path)?;
        rotated.sort_by_key(|p| rotation_order(p));
        let excess = rotated.len().saturating_sub(keep);
        for old in &rotated[..excess] {
            std::fs::remove_file(old).map_err(io_err("removing", old))?;
        }
        Ok(())
    }
}

/// The sort key of a rotated file: its time stamp and its number within that second.
fn rotation_order(p: &Path) -> (String, u64) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // <log name>.<%Y%m%d-%H%M%S>[.<n>]
    let parts: Vec<&str> = name.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [n, stamp, _] if stamp.len() == 15 && n.bytes().all(|b| b.is_ascii_digit()) => {
            (stamp.to_string(), n.parse().unwrap_or(0))
        }
        [stamp, ..] => (stamp.to_string(), 0),
        [] => (String::new(), 0),
    }
}

/// The rotated files of a log: `<path>.<8 digits>-...`.
pub fn rotated_files(path: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("reading", dir))? {
        let entry = entry.map_err(io_err("reading", dir))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let b = rest.as_bytes();
        if b.len() >= 15 && b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'-' {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_795_682_619, 123_456_789).expect("valid time")
    }

    fn writer(dir: &Path, max_size: u64, max_files: u32) -> CriLogWriter {
        let mut w = CriLogWriter::open(&LogConfig {
            path: dir.join("c/0.log"),
            max_size,
            max_files,
        })
        .expect("open");
        w.now = fixed;
        w
    }

    fn content(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("c/0.log")).expect("read")
    }

    #[test]
    fn timestamp_format() {
        assert_eq!(timestamp(fixed()), "2026-11-26T08:43:39.123456789Z");
    }

    #[test]
    fn lines_and_partial_lines() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut w = writer(d.path(), 0, 5);
        w.write(Stream::Stdout, b"hello\nwor").expect("write");
        w.write(Stream::Stderr, b"oops\n\n").expect("write");
        w.write(Stream::Stdout, b"ld\ntail").expect("write");
        w.finish(Stream::Stdout).expect("finish");
        w.finish(Stream::Stderr).expect("finish");
        let t = "2026-11-26T08:43:39.123456789Z";
        assert_eq!(
            content(d.path()),
            format!(
                "{t} stdout F hello\n{t} stderr F oops\n{t} stderr F \n\
                 {t} stdout F world\n{t} stdout F tail\n"
            )
        );
    }

    #[test]
    fn long_lines_are_split() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut w = writer(d.path(), 0, 5);
        let mut long = vec![b'a'; MAX_LINE * 2 + 10];
        long.push(b'\n');
        w.write(Stream::Stdout, &long).expect("write");
        let text = content(d.path());
        let tags: Vec<(&str, usize)> = text
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let _ = f.next();
                let _ = f.next();
                (f.next().unwrap_or(""), f.next().unwrap_or("").len())
            })
            .collect();
        assert_eq!(tags, vec![("P", MAX_LINE), ("P", MAX_LINE), ("F", 10)]);
    }

    #[test]
    fn rotation_keeps_max_files() {
        let d = tempfile::tempdir().expect("tempdir");
        // Each record is 30 + 10 + 10 + 1 = 51 bytes: two fit in 110.
        let mut w = writer(d.path(), 110, 3);
        for _ in 0..10 {
            w.write(Stream::Stdout, b"0123456789\n").expect("write");
        }
        let rotated = rotated_files(&d.path().join("c/0.log")).expect("list");
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut names: Vec<String> = rotated
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        // Four rotations in the same second: the last two are kept.
        assert_eq!(
            names,
            vec!["0.log.20261126-084339.2", "0.log.20261126-084339.3"]
        );
        assert_eq!(content(d.path()).lines().count(), 2);
    }
}
