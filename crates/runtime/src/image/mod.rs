//! OCI images on disk: a content-addressed store shared by the nodes of one cluster.
//!
//! Layout under the root (`/var/lib/kins/<cluster>/images`):
//!
//! ```text
//! lock                    flock: exclusive for load/build/remove, shared for reads
//! refs.json               {"docker.io/library/nginx:latest": "sha256:<manifest>", ...}
//! blobs/sha256/<hex>      manifests, configs, layer tars as they came (gzip or plain)
//! layers/<diff_id hex>/   unpacked layers, ready to be overlayfs lower dirs
//! tmp/                    staging of the writer holding the lock (emptied by each writer)
//! ```
//!
//! Every write goes to `tmp/` first and is renamed into place; `refs.json` is replaced
//! last, after a syncfs, so a ref never points to something missing. A failed load leaves
//! nothing: its staging is removed and unreferenced blobs and layers are collected.
//!
//! Images come from archives (`load_archive`) or are built from the host's installed
//! packages by recipes (`recipes/*.json`, see [`build`]), through the same import path.

mod archive;
pub mod build;
mod error;
pub mod reference;
mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

pub use error::ImageError;
pub use reference::{normalize, Reference};

use archive::{Blob, Descriptor, Manifest, Staged};
use error::io_err;

/// The label a host-built image carries: which host packages it was made of.
pub const LABEL_BUILT_FROM: &str = "io.kins.built-from";

/// What the container launcher needs of an image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
}

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalized reference.
    pub reference: String,
    /// `sha256:<config digest>`.
    pub id: String,
    /// Unpacked layer directories, bottom first (absolute).
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    /// `Some("host packages: ...")` when built from a recipe.
    pub built_from: Option<String>,
    /// This call built or imported it (for a `Pulled` event).
    pub built_now: bool,
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The normalized reference.
    pub reference: String,
    /// `sha256:<config digest>`.
    pub id: String,
    /// Bytes stored: config and layer blobs as they came (compressed or not).
    pub size: u64,
    /// The config's `created`, RFC 3339.
    pub created: Option<String>,
    pub built_from: Option<String>,
}

/// Where registry pulls plug in later: given a normalized reference, write the image into
/// the store (e.g. by producing an archive for [`ImageStore::load_archive`]). Unused now.
pub trait Puller: Send + Sync {
    fn pull(&self, store: &ImageStore, reference: &str) -> Result<(), ImageError>;
}

/// The image store at one root directory.
pub struct ImageStore {
    root: PathBuf,
    puller: Option<Box<dyn Puller>>,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// A held store lock (released on drop).
struct Lock {
    _flock: Flock<File>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(io_err(root))?.join(root)
        };
        for d in [
            root.clone(),
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("tmp"),
        ] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(ImageStore { root, puller: None })
    }

    /// Plugs a registry puller in (tried after the store, before host-built images).
    pub fn with_puller(mut self, puller: Box<dyn Puller>) -> ImageStore {
        self.puller = Some(puller);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports a `docker save` or OCI-layout archive (plain or gzip); returns the
    /// normalized references it named. All or nothing.
    pub fn load_archive(&self, r: impl Read) -> Result<Vec<String>, ImageError> {
        let _lock = self.lock(true)?;
        self.import_locked(r)
    }

    /// Every reference in the store, sorted.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let _lock = self.lock(false)?;
        let refs = self.read_refs()?;
        let mut out = Vec::new();
        for (reference, manifest_digest) in refs {
            let manifest = self.manifest(&manifest_digest, &reference)?;
            let config = self.config_json(&manifest.config.digest, &reference)?;
            let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
            out.push(ImageInfo {
                reference,
                id: manifest.config.digest.clone(),
                size,
                created: config
                    .get("created")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
                built_from: built_from(&config),
            });
        }
        Ok(out)
    }

    /// Removes a reference, then collects the blobs and layers no other reference uses.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let norm = normalize(reference)?;
        let _lock = self.lock(true)?;
        let mut refs = self.read_refs()?;
        if refs.remove(&norm).is_none() {
            return Err(ImageError::NotFound { reference: norm });
        }
        self.write_refs(&refs)?;
        self.gc(&refs)
    }

    /// The image if the store holds it (never builds).
    pub fn inspect(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let r = reference::parse(reference)?;
        let _lock = self.lock(false)?;
        self.lookup(&r)?.ok_or(ImageError::NotFound {
            reference: r.normalized(),
        })
    }

    /// The image for `reference`: from the store, else from the registry puller (none
    /// yet), else built from the host's packages if a recipe knows the repository (and
    /// stored, so the next call is a store hit), else the error a Kubernetes user expects
    /// for an image that cannot be pulled.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let r = reference::parse(reference)?;
        let recipe = build::recipe_for(&r);
        let fresh = |img: &ResolvedImage| {
            !recipe.is_some_and(|rec| build::stale(rec, img.built_from.as_deref()))
        };
        {
            let _lock = self.lock(false)?;
            if let Some(img) = self.lookup(&r)?.filter(fresh) {
                return Ok(img);
            }
        }
        if let Some(p) = &self.puller {
            p.pull(self, &r.normalized())?;
            let _lock = self.lock(false)?;
            if let Some(mut img) = self.lookup(&r)? {
                img.built_now = true;
                return Ok(img);
            }
        }
        match recipe {
            Some(recipe) => self.build_locked(recipe, &r),
            None => Err(ImageError::NotAvailable {
                reference: r.normalized(),
                known: build::known_names().join(", "),
            }),
        }
    }

    /// Builds a host image by recipe name (`nginx`, `curlimages/curl`, `busybox`) as
    /// `<repository>:latest`, replacing what the store had under that reference.
    pub fn build_host(&self, name: &str) -> Result<ResolvedImage, ImageError> {
        let recipe = build::recipe_named(name)?;
        let r = reference::parse(&recipe.name)?;
        let _lock = self.lock(true)?;
        let archive = build::build(recipe, &r.normalized())?;
        self.import_locked(&archive[..])?;
        let mut img = self.lookup(&r)?.ok_or(ImageError::NotFound {
            reference: r.normalized(),
        })?;
        img.built_now = true;
        Ok(img)
    }

    fn build_locked(
        &self,
        recipe: &build::Recipe,
        r: &Reference,
    ) -> Result<ResolvedImage, ImageError> {
        let _lock = self.lock(true)?;
        // Another node's agent may have built it while we waited for the lock.
        if let Some(img) = self.lookup(r)? {
            if !build::stale(recipe, img.built_from.as_deref()) {
                return Ok(img);
            }
        }
        let norm = r.normalized();
        let archive = build::build(recipe, &norm)?;
        self.import_locked(&archive[..])?;
        let mut img = self
            .lookup(r)?
            .ok_or(ImageError::NotFound { reference: norm })?;
        img.built_now = true;
        Ok(img)
    }

    // ---- internals -------------------------------------------------------------------

    fn lock(&self, exclusive: bool) -> Result<Lock, ImageError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let flock = Flock::lock(file, arg).map_err(|(_, e)| io_err(&path)(e.into()))?;
        Ok(Lock { _flock: flock })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    fn layer_path(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root.join("layers").join(hex)
    }

    fn read_refs(&self) -> Result<BTreeMap<String, String>, ImageError> {
        let path = self.root.join("refs.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Replaces refs.json atomically, after everything it points to is on disk.
    fn write_refs(&self, refs: &BTreeMap<String, String>) -> Result<(), ImageError> {
        let root = File::open(&self.root).map_err(io_err(&self.root))?;
        nix::unistd::syncfs(&root).map_err(|e| io_err(&self.root)(e.into()))?;
        let path = self.root.join("refs.json");
        let tmp = self.root.join("tmp/refs.json");
        let mut bytes = serde_json::to_vec_pretty(refs).map_err(|source| ImageError::Json {
            what: path.display().to_string(),
            source,
        })?;
        bytes.push(b'\n');
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        root.sync_all().map_err(io_err(&self.root))?;
        Ok(())
    }

    fn manifest(&self, digest: &str, reference: &str) -> Result<Manifest, ImageError> {
        let path = self.blob_path(digest);
        if !path.exists() {
            return Err(ImageError::MissingBlob {
                digest: digest.to_string(),
                reference: reference.to_string(),
            });
        }
        archive::read_json(&path, &format!("manifest {digest}"))
    }

    fn config_json(&self, digest: &str, reference: &str) -> Result<serde_json::Value, ImageError> {
        let path = self.blob_path(digest);
        if !path.exists() {
            return Err(ImageError::MissingBlob {
                digest: digest.to_string(),
                reference: reference.to_string(),
            });
        }
        archive::read_json(&path, &format!("config {digest}"))
    }

    /// The stored image for `r` (by reference, or by repository and manifest digest).
    fn lookup(&self, r: &Reference) -> Result<Option<ResolvedImage>, ImageError> {
        let norm = r.normalized();
        let refs = self.read_refs()?;
        let manifest_digest = match refs.get(&norm) {
            Some(d) => d.clone(),
            None => match &r.digest {
                Some(want) => match refs.iter().find(|(k, d)| {
                    *d == want && reference::parse(k).is_ok_and(|p| p.repository == r.repository)
                }) {
                    Some((_, d)) => d.clone(),
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let manifest = self.manifest(&manifest_digest, &norm)?;
        let config = self.config_json(&manifest.config.digest, &norm)?;
        let mut layers = Vec::new();
        for d in diff_ids(&config, &manifest.config.digest)? {
            let dir = self.layer_path(&d);
            if !dir.is_dir() {
                return Err(ImageError::MissingBlob {
                    digest: d,
                    reference: norm,
                });
            }
            layers.push(dir);
        }
        Ok(Some(ResolvedImage {
            reference: norm,
            id: manifest.config.digest.clone(),
            layers,
            config: image_config(&config),
            built_from: built_from(&config),
            built_now: false,
        }))
    }

    /// Cleans `tmp/` (only the lock holder writes there: anything left is from a
    /// writer that died) and returns a fresh staging directory.
    fn staging(&self) -> Result<PathBuf, ImageError> {
        let tmp = self.root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let e = e.map_err(io_err(&tmp))?;
            remove_any(&e.path())?;
        }
        let dir = tmp.join(format!(
            "stage-{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// The import path of archives and host builds; the caller holds the exclusive lock.
    fn import_locked(&self, r: impl Read) -> Result<Vec<String>, ImageError> {
        let staging = self.staging()?;
        let result = self.import_staged(r, &staging);
        let cleanup = remove_any(&staging);
        match result {
            Ok(refs) => cleanup.map(|()| refs),
            Err(e) => {
                // Nothing half-imported: collect what no ref uses.
                if let Ok(refs) = self.read_refs() {
                    if let Err(gc_err) = self.gc(&refs) {
                        tracing::warn!(error = %gc_err, "image store cleanup after a failed load");
                    }
                }
                Err(e)
            }
        }
    }

    fn import_staged(&self, r: impl Read, staging: &Path) -> Result<Vec<String>, ImageError> {
        let images = archive::read(r, staging)?;
        let mut named = Vec::new();
        let mut new_refs = BTreeMap::new();
        for img in &images {
            let manifest_digest = self.commit(img, staging)?;
            for r in &img.refs {
                new_refs.insert(r.clone(), manifest_digest.clone());
                if !named.contains(r) {
                    named.push(r.clone());
                }
            }
        }
        if named.is_empty() {
            return Err(ImageError::BadArchive {
                reason: "the archive names no image (no RepoTags or ref annotations)".to_string(),
            });
        }
        let mut refs = self.read_refs()?;
        refs.extend(new_refs);
        self.write_refs(&refs)?;
        // Images that lost their last ref to this load.
        self.gc(&refs)?;
        Ok(named)
    }

    /// Moves one staged image's blobs into the store, checks and unpacks its layers, and
    /// returns its manifest digest (the archive's, or one written for `docker save`).
    fn commit(&self, img: &Staged, staging: &Path) -> Result<String, ImageError> {
        let config: serde_json::Value =
            archive::read_json(&img.config.path, &format!("config {}", img.config.digest))?;
        let expected = diff_ids(&config, &img.config.digest)?;
        if expected.len() != img.layers.len() {
            return Err(ImageError::BadArchive {
                reason: format!(
                    "config {} lists {} diff_ids for {} layers",
                    img.config.digest,
                    expected.len(),
                    img.layers.len()
                ),
            });
        }
        let mut descriptors = Vec::new();
        for (blob, want) in img.layers.iter().zip(&expected) {
            let stored = self.put_blob(blob)?;
            let compression = unpack::detect(&stored, &blob.digest)?;
            let dest = self.layer_path(want);
            let (got, unpacked) = if dest.is_dir() {
                (unpack::diff_id(&stored, &blob.digest, None)?.0, None)
            } else {
                let tmp = staging.join(format!(
                    "layer-{}",
                    want.strip_prefix("sha256:").unwrap_or(want)
                ));
                if tmp.exists() {
                    remove_any(&tmp)?;
                }
                fs::create_dir(&tmp).map_err(io_err(&tmp))?;
                (
                    unpack::diff_id(&stored, &blob.digest, Some(&tmp))?.0,
                    Some(tmp),
                )
            };
            if &got != want {
                return Err(ImageError::DiffIdMismatch {
                    digest: blob.digest.clone(),
                    expected: want.clone(),
                    actual: got,
                });
            }
            if let Some(tmp) = unpacked {
                fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            }
            descriptors.push(Descriptor {
                media_type: compression.media_type().to_string(),
                digest: blob.digest.clone(),
                size: blob.size,
                annotations: BTreeMap::new(),
                platform: None,
            });
        }
        self.put_blob(&img.config)?;
        if let Some(m) = &img.manifest {
            self.put_blob(m)?;
            return Ok(m.digest.clone());
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: archive::MT_OCI_MANIFEST.to_string(),
            config: Descriptor {
                media_type: archive::MT_OCI_CONFIG.to_string(),
                digest: img.config.digest.clone(),
                size: img.config.size,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers: descriptors,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
            what: "manifest".to_string(),
            source,
        })?;
        let digest = sha256_digest(&bytes);
        let path = staging.join(format!("manifest-{}", &digest[7..]));
        fs::write(&path, &bytes).map_err(io_err(&path))?;
        self.put_blob(&Blob {
            path,
            digest: digest.clone(),
            size: bytes.len() as u64,
        })?;
        Ok(digest)
    }

    /// Moves a staged, verified file to `blobs/sha256/<hex>` (kept if already there).
    fn put_blob(&self, blob: &Blob) -> Result<PathBuf, ImageError> {
        let dest = self.blob_path(&blob.digest);
        if !dest.exists() {
            fs::rename(&blob.path, &dest).map_err(io_err(&dest))?;
        }
        Ok(dest)
    }

    /// Removes blobs and layers that no ref in `refs` uses, and the staging area.
    fn gc(&self, refs: &BTreeMap<String, String>) -> Result<(), ImageError> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for (reference, digest) in refs {
            blobs.insert(hex_of(digest));
            let Ok(m) = self.manifest(digest, reference) else {
                continue;
            };
            blobs.insert(hex_of(&m.config.digest));
            for l in &m.layers {
                blobs.insert(hex_of(&l.digest));
            }
            if let Ok(c) = self.config_json(&m.config.digest, reference) {
                for d in diff_ids(&c, &m.config.digest).unwrap_or_default() {
                    layers.insert(hex_of(&d));
                }
            }
        }
        // A layer some overlay mount still uses stays until a later collection.
        layers.extend(self.layers_mounted());
        let trash = self.root.join("tmp");
        for (dir, keep) in [
            (self.root.join("blobs/sha256"), &blobs),
            (self.root.join("layers"), &layers),
        ] {
            for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let e = e.map_err(io_err(&dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                // Rename first so a half-removed layer is never visible under layers/.
                let gone = trash.join(format!("gc-{name}"));
                fs::rename(e.path(), &gone).map_err(io_err(e.path()))?;
                remove_any(&gone)?;
            }
        }
        Ok(())
    }
}

impl ImageStore {
    /// The layers of this store named in a mount of any mount namespace (overlay
    /// `lowerdir=` options of running containers), from `/proc/*/mountinfo`.
    fn layers_mounted(&self) -> BTreeSet<String> {
        let prefix = format!("{}/layers/", self.root.display());
        let mut used = BTreeSet::new();
        let mut namespaces = BTreeSet::new();
        let Ok(procs) = fs::read_dir("/proc") else {
            return used;
        };
        for p in procs.flatten() {
            let name = p.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(ns) = fs::read_link(p.path().join("ns/mnt")) else {
                continue;
            };
            if !namespaces.insert(ns) {
                continue;
            }
            let Ok(text) = fs::read_to_string(p.path().join("mountinfo")) else {
                continue;
            };
            for (i, _) in text.match_indices(&prefix) {
                let hex: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                if hex.len() == 64 {
                    used.insert(hex);
                }
            }
        }
        used
    }
}

fn hex_of(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_string()
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn remove_any(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err(path)),
        Ok(_) => fs::remove_file(path).map_err(io_err(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn diff_ids(config: &serde_json::Value, digest: &str) -> Result<Vec<String>, ImageError> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or_else(|| ImageError::BadArchive {
            reason: format!("config {digest} has no rootfs.diff_ids"),
        })?;
    ids.iter()
        .map(|v| {
            v.as_str()
                .filter(|s| s.starts_with("sha256:") && s.len() == 71)
                .map(str::to_string)
                .ok_or_else(|| ImageError::BadArchive {
                    reason: format!("config {digest} has a bad diff_id {v}"),
                })
        })
        .collect()
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn image_config(config: &serde_json::Value) -> ImageConfig {
    let c = config.get("config");
    let get = |k: &str| c.and_then(|c| c.get(k));
    let text = |k: &str| get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut exposed_ports: Vec<String> = get("ExposedPorts")
        .and_then(|v| v.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    exposed_ports.sort();
    ImageConfig {
        entrypoint: strings(get("Entrypoint")),
        cmd: strings(get("Cmd")),
        env: strings(get("Env")),
        working_dir: text("WorkingDir"),
        user: text("User"),
        exposed_ports,
        stop_signal: get("StopSignal")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }
}

fn built_from(config: &serde_json::Value) -> Option<String> {
    config
        .pointer("/config/Labels")
        .and_then(|l| l.get(LABEL_BUILT_FROM))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
