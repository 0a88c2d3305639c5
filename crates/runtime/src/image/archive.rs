//! Reading image archives: `docker save` (manifest.json, old and OCI-based) and OCI
//! image layouts (oci-layout, index.json, blobs/sha256). Every file of the archive is
//! spooled to a staging directory inside the store (hashed on the way), then the
//! archive's documents are interpreted and every digest they give is checked.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::io_err;
use super::reference;
use super::unpack::HashReader;
use super::ImageError;

pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An OCI image manifest (also reads Docker v2 schema 2 manifests).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An OCI index (index.json, or a multi-platform list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// One image of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A file of the archive, spooled into the staging directory.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub path: PathBuf,
    /// `sha256:<hex>` of the bytes as they came.
    pub digest: String,
    pub size: u64,
}

/// An image read from an archive, its files still in the staging directory.
#[derive(Debug)]
pub(crate) struct Staged {
    /// Normalized references.
    pub refs: Vec<String>,
    /// The archive's own manifest (OCI layouts); `None` for `docker save` archives.
    pub manifest: Option<Blob>,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// The files of an archive by their cleaned name.
struct Spool {
    files: HashMap<String, Blob>,
    symlinks: HashMap<String, String>,
}

impl Spool {
    fn get(&self, name: &str, named_by: &str) -> Result<&Blob, ImageError> {
        let mut name = clean(name);
        for _ in 0..16 {
            if let Some(b) = self.files.get(&name) {
                return Ok(b);
            }
            match self.symlinks.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(ImageError::BadArchive {
            reason: format!("{named_by} names {name}, which is not in the archive"),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name) || self.symlinks.contains_key(name)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImageError> {
        let blob = self.get(name, "the archive")?;
        read_json(&blob.path, name)
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
        what: what.to_string(),
        source,
    })
}

/// `./a//b/` → `a/b`; `..` is kept as a component only to be resolved by symlinks.
fn clean(name: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// What a file of the archive is, for error messages: `blob sha256:…`, `layer x/layer.tar`.
fn describe(name: &str) -> String {
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        format!("blob sha256:{hex}")
    } else if name.ends_with("layer.tar") {
        format!("layer {name}")
    } else {
        format!("archive entry {name}")
    }
}

/// Spools the archive's files into `staging` and interprets them.
pub(crate) fn read(input: impl Read, staging: &Path) -> Result<Vec<Staged>, ImageError> {
    let spool = spool(input, staging)?;
    if spool.has("manifest.json") {
        docker(&spool)
    } else if spool.has("index.json") {
        oci(&spool)
    } else {
        Err(ImageError::NotAnArchive {
            reason: "no manifest.json or index.json".to_string(),
        })
    }
}

fn spool(input: impl Read, staging: &Path) -> Result<Spool, ImageError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let head = input
        .fill_buf()
        .map_err(|e| ImageError::NotAnArchive {
            reason: format!("cannot read the input: {e}"),
        })?
        .to_vec();
    if head.is_empty() {
        return Err(ImageError::NotAnArchive {
            reason: "the input is empty".to_string(),
        });
    }
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(reader);
    let mut spool = Spool {
        files: HashMap::new(),
        symlinks: HashMap::new(),
    };
    let mut last: Option<String> = None;
    let entries = archive.entries().map_err(|e| ImageError::NotAnArchive {
        reason: format!("not a tar file: {e}"),
    })?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| match &last {
            None => ImageError::NotAnArchive {
                reason: format!("not a tar file: {e}"),
            },
            Some(prev) if super::unpack::is_eof(&e) => ImageError::Truncated {
                what: format!("archive (after {prev})"),
            },
            Some(prev) => ImageError::BadArchive {
                reason: format!("corrupt tar after {prev}: {e}"),
            },
        })?;
        let name = clean(
            &entry
                .path()
                .map_err(|e| ImageError::BadArchive {
                    reason: format!("bad entry name: {e}"),
                })?
                .to_string_lossy(),
        );
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let path = staging.join(format!("f{n}"));
                let mut f = File::create(&path).map_err(io_err(&path))?;
                let expected = entry.size();
                let mut hr = HashReader::new(&mut entry);
                if let Err(e) = io::copy(&mut hr, &mut f) {
                    return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                        ImageError::Truncated {
                            what: describe(&name),
                        }
                    } else {
                        io_err(&path)(e)
                    });
                }
                f.flush().map_err(io_err(&path))?;
                let (digest, size) = hr.finish();
                // The tar reader ends a file early, without an error, at the end of input.
                if size < expected {
                    return Err(ImageError::Truncated {
                        what: describe(&name),
                    });
                }
                spool
                    .files
                    .insert(name.clone(), Blob { path, digest, size });
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = target.to_string_lossy().into_owned();
                    let resolved = if entry.header().entry_type() == tar::EntryType::Link {
                        clean(&target)
                    } else {
                        let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                        clean(&dir.join(&target).to_string_lossy())
                    };
                    spool.symlinks.insert(name.clone(), resolved);
                }
            }
            _ => {}
        }
        last = Some(name);
    }
    if last.is_none() {
        return Err(ImageError::NotAnArchive {
            reason: "not a tar file (no entries)".to_string(),
        });
    }
    Ok(spool)
}

/// A file named `blobs/sha256/<hex>` or `<hex>.json` must hash to that name.
fn check_named(name: &str, blob: &Blob) -> Result<(), ImageError> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let hex = if let Some(hex) = clean(name).strip_prefix("blobs/sha256/") {
        Some(hex.to_string())
    } else {
        base.strip_suffix(".json").map(str::to_string)
    };
    match hex {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let expected = format!("sha256:{hex}");
            if blob.digest != expected {
                return Err(ImageError::DigestMismatch {
                    what: describe(&clean(name)),
                    expected,
                    actual: blob.digest.clone(),
                });
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn docker(spool: &Spool) -> Result<Vec<Staged>, ImageError> {
    let entries: Vec<DockerEntry> = spool.json("manifest.json")?;
    if entries.is_empty() {
        return Err(ImageError::BadArchive {
            reason: "manifest.json lists no image".to_string(),
        });
    }
    let mut out = Vec::new();
    for e in entries {
        let config = spool.get(&e.config, "manifest.json")?.clone();
        check_named(&e.config, &config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let blob = spool.get(l, "manifest.json")?.clone();
            check_named(l, &blob)?;
            layers.push(blob);
        }
        let mut refs = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            refs.push(reference::normalize(&t)?);
        }
        out.push(Staged {
            refs,
            manifest: None,
            config,
            layers,
        });
    }
    Ok(out)
}

fn blob_of<'a>(spool: &'a Spool, d: &Descriptor, what: &str) -> Result<&'a Blob, ImageError> {
    let hex = d
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ImageError::BadArchive {
            reason: format!(
                "{what} has digest {:?}: kins reads sha256 digests",
                d.digest
            ),
        })?;
    let name = format!("blobs/sha256/{hex}");
    let blob = spool.get(&name, what)?;
    if blob.digest != d.digest {
        return Err(ImageError::DigestMismatch {
            what: describe(&name),
            expected: d.digest.clone(),
            actual: blob.digest.clone(),
        });
    }
    if blob.size != d.size {
        return Err(ImageError::BadArchive {
            reason: format!(
                "blob {} has {} bytes, its descriptor says {}",
                d.digest, blob.size, d.size
            ),
        });
    }
    Ok(blob)
}

fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    };
    (arch, "linux")
}

/// A name for an index.json entry: containerd's full name, else the OCI ref name.
fn descriptor_ref(d: &Descriptor) -> Option<&str> {
    d.annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| d.annotations.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

fn oci(spool: &Spool) -> Result<Vec<Staged>, ImageError> {
    if !spool.has("oci-layout") {
        return Err(ImageError::NotAnArchive {
            reason: "index.json without oci-layout".to_string(),
        });
    }
    let index: Index = spool.json("index.json")?;
    let mut by_manifest: Vec<Staged> = Vec::new();
    for d in &index.manifests {
        let refs = match descriptor_ref(d) {
            Some(r) => vec![reference::normalize(r)?],
            None => Vec::new(),
        };
        let manifest_desc = pick_manifest(spool, d, 0)?;
        let mblob = blob_of(spool, &manifest_desc, "index.json")?.clone();
        if let Some(prev) = by_manifest
            .iter_mut()
            .find(|s| s.manifest.as_ref().map(|m| &m.digest) == Some(&mblob.digest))
        {
            prev.refs.extend(refs);
            continue;
        }
        let what = format!("manifest {}", mblob.digest);
        let manifest: Manifest = read_json(&mblob.path, &what)?;
        let config = blob_of(spool, &manifest.config, &what)?.clone();
        let mut layers = Vec::new();
        for l in &manifest.layers {
            if l.media_type.contains("zstd") {
                return Err(ImageError::UnsupportedCompression {
                    digest: l.digest.clone(),
                    compression: "zstd".to_string(),
                });
            }
            layers.push(blob_of(spool, l, &what)?.clone());
        }
        by_manifest.push(Staged {
            refs,
            manifest: Some(mblob),
            config,
            layers,
        });
    }
    Ok(by_manifest)
}

/// Follows nested indexes (multi-platform images) to this host's platform's manifest.
fn pick_manifest(spool: &Spool, d: &Descriptor, depth: u32) -> Result<Descriptor, ImageError> {
    let is_index = d.media_type == MT_OCI_INDEX || d.media_type == MT_DOCKER_LIST;
    if !is_index {
        if !d.media_type.is_empty()
            && d.media_type != MT_OCI_MANIFEST
            && d.media_type != MT_DOCKER_MANIFEST
        {
            return Err(ImageError::BadArchive {
                reason: format!("unsupported manifest media type {:?}", d.media_type),
            });
        }
        return Ok(d.clone());
    }
    if depth > 4 {
        return Err(ImageError::BadArchive {
            reason: "indexes nested too deep".to_string(),
        });
    }
    let blob = blob_of(spool, d, "index.json")?;
    let nested: Index = read_json(&blob.path, &format!("index {}", d.digest))?;
    let (arch, os) = host_platform();
    let chosen = nested
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.architecture == arch && p.os == os)
        })
        .or_else(|| {
            if nested.manifests.len() == 1 {
                nested.manifests.first()
            } else {
                None
            }
        })
        .ok_or_else(|| ImageError::BadArchive {
            reason: format!("index {} has no manifest for {os}/{arch}", d.digest),
        })?;
    pick_manifest(spool, chosen, depth + 1)
}
