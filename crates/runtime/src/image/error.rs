//! The errors of the image store, each with what it was about (path, reference, digest).

use std::path::PathBuf;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// IO on a file or directory of the store or of an archive being unpacked.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A reference that Docker would refuse too.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// `resolve` found the image neither in the store nor among the host-built images.
    #[error(
        "failed to pull image {reference:?}: no registry is reachable from kins: load it with \
         \"kins image load\" (known offline images: {known})"
    )]
    NotAvailable { reference: String, known: String },
    /// `inspect`/`remove` of a reference the store does not hold.
    #[error("no such image: {reference}")]
    NotFound { reference: String },
    /// The input is not a tar archive at all.
    #[error("not an image archive: {reason}")]
    NotAnArchive { reason: String },
    /// The archive ends in the middle of a file.
    #[error("{what} is truncated")]
    Truncated { what: String },
    /// The archive is a tar but its contents do not make an image.
    #[error("bad image archive: {reason}")]
    BadArchive { reason: String },
    /// A blob whose content does not match the digest that names it.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A layer whose uncompressed content does not match the config's rootfs.diff_ids.
    #[error("layer {digest}: diff_id mismatch: the config says {expected}, the layer is {actual}")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    /// A layer compressed in a way kins does not read.
    #[error(
        "layer {digest}: unsupported compression {compression} (kins reads plain and gzip layers)"
    )]
    UnsupportedCompression { digest: String, compression: String },
    /// A layer entry that would land outside the layer directory.
    #[error("layer {digest}: entry {entry:?} escapes the layer root: {reason}")]
    UnsafePath {
        digest: String,
        entry: String,
        reason: String,
    },
    /// A layer entry that cannot be unpacked.
    #[error("layer {digest}: entry {entry:?}: {reason}")]
    BadLayerEntry {
        digest: String,
        entry: String,
        reason: String,
    },
    /// A JSON document (manifest, config, index, refs) that does not parse.
    #[error("{what}: invalid json: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The store references a blob it does not hold (damaged store).
    #[error("store is missing blob {digest} (needed by {reference})")]
    MissingBlob { digest: String, reference: String },
    /// A recipe needs a host file that is not there.
    #[error("{package} is not installed on this host (missing {path}): apt-get install {package}")]
    HostPackageMissing { package: String, path: PathBuf },
    /// A recipe (data in crates/runtime/recipes/) that cannot be used.
    #[error("recipe {recipe}: {reason}")]
    Recipe { recipe: String, reason: String },
    /// A host command used by a recipe (ldd, busybox, dpkg-query) failed.
    #[error("{command}: {reason}")]
    HostCommand { command: String, reason: String },
    /// `build_host` of a name no recipe has.
    #[error("no host-built image named {name:?} (known: {known})")]
    NoRecipe { name: String, known: String },
}

/// `map_err(io_err(path))`: an IO error with the path it was about.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { path, source }
}
