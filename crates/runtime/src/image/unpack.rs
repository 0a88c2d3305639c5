//! Layer blobs: compression detection, diff_ids, and unpacking into a directory that is
//! ready to be an overlayfs lower dir (OCI whiteouts become overlayfs whiteouts).

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::error::io_err;
use super::ImageError;

/// How a layer blob is compressed, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

/// Reads the magic bytes of a layer blob.
pub(crate) fn detect(blob: &Path, digest: &str) -> Result<Compression, ImageError> {
    let mut f = File::open(blob).map_err(io_err(blob))?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        let k = f.read(&mut magic[n..]).map_err(io_err(blob))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let m = &magic[..n];
    let unsupported = |c: &str| ImageError::UnsupportedCompression {
        digest: digest.to_string(),
        compression: c.to_string(),
    };
    if m.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(unsupported("zstd"))
    } else if m.starts_with(b"BZh") {
        Err(unsupported("bzip2"))
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(unsupported("xz"))
    } else {
        Ok(Compression::None)
    }
}

/// Whether a tar read error means the input ended early (the tar crate reports some
/// of those as plain errors).
pub(crate) fn is_eof(e: &io::Error) -> bool {
    let text = e.to_string();
    e.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("unexpected EOF")
        || text.contains("failed to read entire block")
}

/// A reader that hashes what passes through it.
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    /// `("sha256:<hex>", bytes read)`.
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
        )
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Remembers whether reading the layer (as opposed to writing files) failed, and how.
struct TrackErrors<R> {
    inner: R,
    failed: Rc<Cell<Option<io::ErrorKind>>>,
}

impl<R: Read> Read for TrackErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed.set(Some(e.kind()));
        })
    }
}

/// Reads a layer blob to its end: returns its diff_id (sha256 of the uncompressed tar)
/// and uncompressed size, unpacking it into `unpack_into` (a fresh directory) if given.
pub(crate) fn diff_id(
    blob: &Path,
    digest: &str,
    unpack_into: Option<&Path>,
) -> Result<(String, u64), ImageError> {
    let compression = detect(blob, digest)?;
    let file = File::open(blob).map_err(io_err(blob))?;
    let failed = Rc::new(Cell::new(None));
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
    };
    let mut reader = HashReader::new(TrackErrors {
        inner: decoded,
        failed: failed.clone(),
    });
    let read_error = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ImageError::Truncated {
                what: format!("layer {digest}"),
            }
        } else {
            ImageError::BadLayerEntry {
                digest: digest.to_string(),
                entry: String::new(),
                reason: format!("corrupt layer data: {e}"),
            }
        }
    };
    if let Some(dest) = unpack_into {
        let mut archive = tar::Archive::new(reader);
        Unpacker {
            dest,
            digest,
            failed: &failed,
            dirs_ok: HashSet::new(),
            dir_times: Vec::new(),
        }
        .run(&mut archive)?;
        reader = archive.into_inner();
    }
    io::copy(&mut reader, &mut io::sink()).map_err(read_error)?;
    Ok(reader.finish())
}

struct Unpacker<'a> {
    dest: &'a Path,
    digest: &'a str,
    failed: &'a Rc<Cell<Option<io::ErrorKind>>>,
    /// Directories already checked to be real directories inside `dest`.
    dirs_ok: HashSet<PathBuf>,
    /// Directory mtimes, applied at the end (writing into a directory changes its mtime).
    dir_times: Vec<(PathBuf, i64)>,
}

impl Unpacker<'_> {
    fn entry_err(&self, entry: &Path, reason: impl std::fmt::Display) -> ImageError {
        ImageError::BadLayerEntry {
            digest: self.digest.to_string(),
            entry: entry.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// An error while reading the tar stream: truncation or corruption.
    fn read_err(&self, e: io::Error) -> ImageError {
        if is_eof(&e) {
            ImageError::Truncated {
                what: format!("layer {}", self.digest),
            }
        } else {
            ImageError::BadLayerEntry {
                digest: self.digest.to_string(),
                entry: String::new(),
                reason: format!("not a valid tar: {e}"),
            }
        }
    }

    fn run<R: Read>(mut self, archive: &mut tar::Archive<R>) -> Result<(), ImageError> {
        let entries = archive.entries().map_err(|e| self.read_err(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.read_err(e))?;
            self.entry(&mut entry)?;
        }
        for (dir, mtime) in self.dir_times.iter().rev() {
            let t = filetime::FileTime::from_unix_time(*mtime, 0);
            filetime::set_symlink_file_times(dir, t, t).map_err(io_err(dir))?;
        }
        Ok(())
    }

    /// `path` made relative and checked: no `..`, no prefix.
    fn clean(&self, raw: &Path) -> Result<PathBuf, ImageError> {
        let mut out = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => out.push(n),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(ImageError::UnsafePath {
                        digest: self.digest.to_string(),
                        entry: raw.display().to_string(),
                        reason: "path contains \"..\"".to_string(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Makes sure every ancestor of `rel` is a real directory inside `dest` (creating
    /// missing ones): never follows a symlink out of the layer.
    fn parents(&mut self, rel: &Path) -> Result<(), ImageError> {
        let mut cur = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            cur.push(c);
            if self.dirs_ok.contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ImageError::UnsafePath {
                        digest: self.digest.to_string(),
                        entry: rel.display().to_string(),
                        reason: format!("{} is a symlink", cur.display()),
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.entry_err(rel, format!("{} is not a directory", cur.display())))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(io_err(&full))?;
                    fs::set_permissions(&full, fs::Permissions::from_mode(0o755))
                        .map_err(io_err(&full))?;
                }
                Err(e) => return Err(io_err(&full)(e)),
            }
            self.dirs_ok.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `full` (a later entry replaces an earlier one).
    fn clear(&mut self, full: &Path) -> Result<(), ImageError> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(full).map_err(io_err(full))?;
                self.dirs_ok.clear();
                Ok(())
            }
            Ok(_) => fs::remove_file(full).map_err(io_err(full)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(full)(e)),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path().map_err(|e| self.read_err(e))?.into_owned();
        let rel = self.clean(&raw)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let mode = header.mode().map_err(|e| self.entry_err(&raw, e))? & 0o7777;
        let uid = header.uid().map_err(|e| self.entry_err(&raw, e))? as u32;
        let gid = header.gid().map_err(|e| self.entry_err(&raw, e))? as u32;
        let mtime = header.mtime().map_err(|e| self.entry_err(&raw, e))? as i64;
        let full = self.dest.join(&rel);

        if rel.as_os_str().is_empty() {
            // "./": the layer root itself.
            if kind.is_dir() {
                self.attributes(&raw, self.dest, uid, gid, Some(mode), entry)?;
                self.dir_times.push((self.dest.to_path_buf(), mtime));
            }
            return Ok(());
        }
        self.parents(&rel)?;

        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = full.parent().unwrap_or(self.dest).to_path_buf();
            if hidden == ".wh..opq" {
                xattr::set(&parent, "trusted.overlay.opaque", b"y").map_err(io_err(&parent))?;
            } else if hidden.starts_with(".wh.") {
                // Other aufs metadata (.wh..wh.plnk, ...): nothing for overlayfs.
            } else if hidden.is_empty() {
                return Err(self.entry_err(&raw, "whiteout without a name"));
            } else {
                let target = parent.join(hidden);
                self.clear(&target)?;
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(|e| io_err(&target)(e.into()))?;
            }
            return Ok(());
        }

        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        self.clear(&full)?;
                        fs::create_dir(&full).map_err(io_err(&full))?;
                    }
                }
                self.dirs_ok.insert(rel.clone());
                self.attributes(&raw, &full, uid, gid, Some(mode), entry)?;
                self.dir_times.push((full, mtime));
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&full)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&full)
                    .map_err(io_err(&full))?;
                let expected = entry.size();
                match io::copy(entry, &mut f) {
                    Err(e) => {
                        return Err(if self.failed.get().is_some() {
                            self.read_err(e)
                        } else {
                            io_err(&full)(e)
                        })
                    }
                    // The tar reader ends a file early, without an error, at the end of input.
                    Ok(n) if n < expected => {
                        return Err(ImageError::Truncated {
                            what: format!("layer {}", self.digest),
                        })
                    }
                    Ok(_) => {}
                }
                drop(f);
                self.attributes(&raw, &full, uid, gid, Some(mode), entry)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.entry_err(&raw, e))?
                    .ok_or_else(|| self.entry_err(&raw, "symlink without a target"))?
                    .into_owned();
                self.clear(&full)?;
                std::os::unix::fs::symlink(&target, &full).map_err(io_err(&full))?;
                self.attributes(&raw, &full, uid, gid, None, entry)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.entry_err(&raw, e))?
                    .ok_or_else(|| self.entry_err(&raw, "hard link without a target"))?
                    .into_owned();
                let target_rel = self.clean(&target)?;
                if target_rel.as_os_str().is_empty() {
                    return Err(self.entry_err(&raw, "hard link to the layer root"));
                }
                self.parents(&target_rel)?;
                let source = self.dest.join(&target_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(self.entry_err(
                            &raw,
                            format!(
                                "hard link to {}, which is not a file of this layer",
                                target.display()
                            ),
                        ))
                    }
                }
                if source == full {
                    return Ok(());
                }
                self.clear(&full)?;
                fs::hard_link(&source, &full).map_err(io_err(&full))?;
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.clear(&full)?;
                let perm = nix::sys::stat::Mode::from_bits_truncate(mode);
                let res = if kind == tar::EntryType::Fifo {
                    nix::unistd::mkfifo(&full, perm)
                } else {
                    let major = header
                        .device_major()
                        .map_err(|e| self.entry_err(&raw, e))?
                        .unwrap_or(0);
                    let minor = header
                        .device_minor()
                        .map_err(|e| self.entry_err(&raw, e))?
                        .unwrap_or(0);
                    let sflag = if kind == tar::EntryType::Char {
                        nix::sys::stat::SFlag::S_IFCHR
                    } else {
                        nix::sys::stat::SFlag::S_IFBLK
                    };
                    nix::sys::stat::mknod(
                        &full,
                        sflag,
                        perm,
                        nix::sys::stat::makedev(major.into(), minor.into()),
                    )
                };
                res.map_err(|e| io_err(&full)(e.into()))?;
                self.attributes(&raw, &full, uid, gid, Some(mode), entry)?;
            }
            other => {
                return Err(self.entry_err(&raw, format!("unsupported tar entry type {other:?}")))
            }
        }
        let t = filetime::FileTime::from_unix_time(mtime, 0);
        filetime::set_symlink_file_times(&full, t, t).map_err(io_err(&full))?;
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), then extended attributes.
    fn attributes<R: Read>(
        &self,
        raw: &Path,
        full: &Path,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ImageError> {
        if let Err(e) = std::os::unix::fs::lchown(full, Some(uid), Some(gid)) {
            // Unprivileged unpacking keeps the caller's ids.
            if e.kind() != io::ErrorKind::PermissionDenied {
                return Err(io_err(full)(e));
            }
        }
        if let Some(mode) = mode {
            fs::set_permissions(full, fs::Permissions::from_mode(mode)).map_err(io_err(full))?;
        }
        let exts = entry.pax_extensions().map_err(|e| self.entry_err(raw, e))?;
        if let Some(exts) = exts {
            for ext in exts {
                let ext = ext.map_err(|e| self.entry_err(raw, e))?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    // Best effort, like containerd: a filesystem without user xattrs or
                    // an unprivileged caller loses them.
                    if let Err(e) = xattr::set(full, name, ext.value_bytes()) {
                        tracing::debug!(path = %full.display(), xattr = name, error = %e, "xattr not set");
                    }
                }
            }
        }
        Ok(())
    }
}
