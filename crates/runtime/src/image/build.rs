//! Offline images built from the host's installed packages. The set is data: one recipe
//! per image in `crates/runtime/recipes/*.json`. A build copies host files (ELF binaries
//! with their shared libraries and loader, keeping the host's paths and the symlinks on
//! the way, like `/lib -> usr/lib`), adds the files the recipe writes, makes one
//! deterministic layer (sorted entries, mtime 0) and an OCI config labelled with the
//! host packages used, and hands an OCI-layout archive to the store's import path.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::archive::{self, Descriptor, Index, Manifest};
use super::error::io_err;
use super::reference::Reference;
use super::{sha256_digest, ImageError, LABEL_BUILT_FROM};

const RECIPE_SOURCES: &[(&str, &str)] = &[
    ("nginx.json", include_str!("../../recipes/nginx.json")),
    ("curl.json", include_str!("../../recipes/curl.json")),
    ("busybox.json", include_str!("../../recipes/busybox.json")),
    ("dnsutils.json", include_str!("../../recipes/dnsutils.json")),
    ("kins-dns.json", include_str!("../../recipes/kins-dns.json")),
    (
        "kins-ingress.json",
        include_str!("../../recipes/kins-ingress.json"),
    ),
    ("agnhost.json", include_str!("../../recipes/agnhost.json")),
];

/// One image built from host packages (the schema of `recipes/*.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// As users write it: `nginx`, `curlimages/curl`; any tag of it matches.
    pub name: String,
    /// ELF executables copied with their shared libraries and the loader.
    #[serde(default)]
    pub binaries: Vec<HostFile>,
    /// Other host files, at the same path.
    #[serde(default)]
    pub files: Vec<HostFile>,
    /// A static busybox installed at `path`, with one symlink per applet.
    #[serde(default)]
    pub busybox: Option<Busybox>,
    /// The running kins binary itself (with its libraries), for add-ons such as the
    /// cluster DNS: the image is rebuilt when the binary changes.
    #[serde(default)]
    pub kins: Option<KinsBinary>,
    /// Directories with their mode and owner.
    #[serde(default)]
    pub dirs: Vec<Dir>,
    /// Files whose content the recipe gives (one string per line).
    #[serde(default)]
    pub write: Vec<Write>,
    #[serde(default)]
    pub symlinks: Vec<Symlink>,
    pub config: Config,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub path: String,
    /// The Debian package to install when the file is missing.
    pub package: String,
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Busybox {
    /// The host's static busybox.
    pub host: String,
    pub package: String,
    /// Where it goes in the image.
    pub path: String,
    /// `"bin"`: every applet of `busybox --list` as `/bin/<applet>`; `"full"`: the paths
    /// of `busybox --list-full`. Existing paths are never replaced.
    pub applets: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinsBinary {
    /// Where it goes in the image.
    pub path: String,
}

/// Says which kins binary an image was built from (version, size, modification time):
/// the start of its built-from label, compared on every use.
pub fn kins_fingerprint() -> Result<String, ImageError> {
    let exe = running_binary();
    let meta = fs::metadata(&exe).map_err(io_err(&exe))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(format!(
        "{KINS_BINARY} {} of {} bytes modified at {mtime}",
        env!("CARGO_PKG_VERSION"),
        meta.len()
    ))
}

const KINS_BINARY: &str = "the kins binary";

/// The running binary through `/proc/<pid>/exe`: still readable after a rebuild replaced
/// the file on disk (the path `current_exe()` gives would then be gone), and a path `ldd`,
/// another process, resolves to this binary too.
fn running_binary() -> PathBuf {
    PathBuf::from(format!("/proc/{}/exe", std::process::id()))
}

/// Whether an image stored under a recipe's name was built from another kins binary than
/// the running one (and so must be built again). Images loaded by users never are.
pub fn stale(recipe: &Recipe, built_from: Option<&str>) -> bool {
    if recipe.kins.is_none() {
        return false;
    }
    match (built_from, kins_fingerprint()) {
        (Some(b), Ok(fp)) => {
            let binary = b.split_once("; ").map_or(b, |(binary, _)| binary);
            binary.starts_with(KINS_BINARY) && binary != fp
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    pub path: String,
    #[serde(default = "default_dir_mode")]
    pub mode: String,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub gid: u64,
}

fn default_dir_mode() -> String {
    "0755".to_string()
}
fn default_file_mode() -> String {
    "0644".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    pub path: String,
    #[serde(default = "default_file_mode")]
    pub mode: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

/// The runtime part of the OCI config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The recipes compiled in. A recipe that does not parse is a bug caught by the tests.
pub fn recipes() -> Vec<Recipe> {
    RECIPE_SOURCES
        .iter()
        .filter_map(|(file, src)| match serde_json::from_str::<Recipe>(src) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(recipe = file, error = %e, "bad image recipe");
                None
            }
        })
        .collect()
}

static RECIPES: std::sync::OnceLock<Vec<Recipe>> = std::sync::OnceLock::new();

fn all() -> &'static [Recipe] {
    RECIPES.get_or_init(recipes)
}

/// The names of the images kins can build offline.
pub fn known_names() -> Vec<String> {
    all().iter().map(|r| r.name.clone()).collect()
}

/// The recipe that can stand for `r` (any tag, no digest).
pub fn recipe_for(r: &Reference) -> Option<&'static Recipe> {
    if r.digest.is_some() {
        return None;
    }
    all()
        .iter()
        .find(|rec| super::reference::parse(&rec.name).is_ok_and(|p| p.repository == r.repository))
}

pub(crate) fn recipe_named(name: &str) -> Result<&'static Recipe, ImageError> {
    let no = || ImageError::NoRecipe {
        name: name.to_string(),
        known: known_names().join(", "),
    };
    let r = super::reference::parse(name).map_err(|_| no())?;
    recipe_for(&Reference { tag: None, ..r }).ok_or_else(no)
}

fn parse_mode(recipe: &str, mode: &str) -> Result<u32, ImageError> {
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| ImageError::Recipe {
            recipe: recipe.to_string(),
            reason: format!("bad mode {mode:?}"),
        })
}

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32, uid: u64, gid: u64 },
    File { content: Content, mode: u32 },
    Symlink { target: String },
}

#[derive(Debug, Clone)]
enum Content {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// The image's file tree, keyed by path relative to `/`.
struct Tree<'a> {
    recipe: &'a str,
    nodes: BTreeMap<String, Node>,
    /// For each host file copied: the paths dpkg may know it by.
    owners: Vec<Vec<PathBuf>>,
}

fn rel(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn host_missing(package: &str, path: &Path) -> ImageError {
    ImageError::HostPackageMissing {
        package: package.to_string(),
        path: path.to_path_buf(),
    }
}

impl Tree<'_> {
    fn conflict(&self, path: &str, reason: &str) -> ImageError {
        ImageError::Recipe {
            recipe: self.recipe.to_string(),
            reason: format!("/{path}: {reason}"),
        }
    }

    fn parents(&mut self, path: &str) -> Result<(), ImageError> {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(p);
            match self.nodes.get(&cur) {
                None => {
                    self.nodes.insert(
                        cur.clone(),
                        Node::Dir {
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                        },
                    );
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => return Err(self.conflict(path, &format!("/{cur} is not a directory"))),
            }
        }
        Ok(())
    }

    /// Adds a node; an existing directory keeps its place but takes the new attributes,
    /// and an existing node of another kind is an error unless `replace`.
    fn add(&mut self, path: &str, node: Node, replace: bool) -> Result<(), ImageError> {
        if path.is_empty() {
            return Err(self.conflict(path, "the root cannot be replaced"));
        }
        self.parents(path)?;
        match (self.nodes.get(path), &node) {
            (Some(Node::Dir { .. }), Node::Dir { .. }) | (None, _) => {}
            (Some(_), _) if replace => {}
            (Some(Node::Symlink { target: a }), Node::Symlink { target: b }) if a == b => {}
            (
                Some(Node::File {
                    content: Content::Host(a),
                    ..
                }),
                Node::File {
                    content: Content::Host(b),
                    ..
                },
            ) if a == b => {}
            (Some(_), _) => return Err(self.conflict(path, "added twice")),
        }
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }

    /// Copies a host file at the same path, recreating the symlinks met on the way.
    fn copy_host(&mut self, host: &str, package: &str) -> Result<(), ImageError> {
        let mut candidates = vec![PathBuf::from(host)];
        let mut pending: Vec<String> = rel(host).split('/').rev().map(str::to_string).collect();
        let mut cur = String::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            let next = if cur.is_empty() {
                part.clone()
            } else {
                format!("{cur}/{part}")
            };
            let host_path = PathBuf::from(format!("/{next}"));
            let meta = match fs::symlink_metadata(&host_path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(host_missing(package, Path::new(host)))
                }
                Err(e) => return Err(io_err(&host_path)(e)),
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return Err(io_err(host)(io::Error::other(
                        "too many levels of symbolic links",
                    )));
                }
                let target = fs::read_link(&host_path).map_err(io_err(&host_path))?;
                let target_text = target.to_string_lossy().into_owned();
                self.add(
                    &next,
                    Node::Symlink {
                        target: target_text.clone(),
                    },
                    false,
                )?;
                // Continue from the target: absolute from /, relative from the link's dir.
                let base = if target.is_absolute() {
                    String::new()
                } else {
                    cur.clone()
                };
                let mut stack: Vec<String> = Vec::new();
                if !base.is_empty() {
                    stack.extend(base.split('/').map(str::to_string));
                }
                for c in target.components() {
                    match c {
                        Component::Normal(n) => stack.push(n.to_string_lossy().into_owned()),
                        Component::ParentDir => {
                            stack.pop();
                        }
                        _ => {}
                    }
                }
                // The rest of the path follows the resolved target.
                let mut rest: Vec<String> = pending.iter().rev().cloned().collect();
                stack.append(&mut rest);
                candidates.push(PathBuf::from(format!("/{}", stack.join("/"))));
                pending = stack.into_iter().rev().collect();
                cur = String::new();
            } else if meta.is_dir() {
                if !self.nodes.contains_key(&next) {
                    self.add(
                        &next,
                        Node::Dir {
                            mode: meta.permissions().mode() & 0o7777,
                            uid: 0,
                            gid: 0,
                        },
                        false,
                    )?;
                }
                cur = next;
            } else {
                if !pending.is_empty() {
                    return Err(io_err(host)(io::Error::other(format!(
                        "/{next} is not a directory"
                    ))));
                }
                self.add(
                    &next,
                    Node::File {
                        content: Content::Host(host_path.clone()),
                        mode: meta.permissions().mode() & 0o7777,
                    },
                    false,
                )?;
                let toggled = match next.strip_prefix("usr/") {
                    Some(rest) => PathBuf::from(format!("/{rest}")),
                    None => PathBuf::from(format!("/usr/{next}")),
                };
                candidates.push(host_path);
                candidates.push(toggled);
                self.owners.push(candidates);
                return Ok(());
            }
        }
        Err(io_err(host)(io::Error::other("is a directory")))
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<std::process::Output, ImageError> {
    let command = format!("{cmd} {}", args.join(" "));
    Command::new(cmd)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| ImageError::HostCommand {
            command,
            reason: e.to_string(),
        })
}

/// The shared libraries of an ELF executable (and its loader), as `ldd` prints them.
fn libraries(binary: &str) -> Result<Vec<String>, ImageError> {
    let out = run("ldd", &[binary])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(ImageError::HostCommand {
            command: format!("ldd {binary}"),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(ImageError::HostCommand {
                command: format!("ldd {binary}"),
                reason: format!("library {line}"),
            });
        }
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}

/// `host packages: nginx 1.22.1-9+deb12u7, libc6 2.36-9+deb12u10, ...` (first use order).
fn built_from(owners: &[Vec<PathBuf>]) -> Result<String, ImageError> {
    let mut all: Vec<String> = Vec::new();
    for c in owners.iter().flatten() {
        let s = c.to_string_lossy().into_owned();
        if !all.contains(&s) {
            all.push(s);
        }
    }
    let mut args = vec!["-S"];
    args.extend(all.iter().map(String::as_str));
    let out = match Command::new("dpkg-query")
        .args(&args)
        .env("LC_ALL", "C")
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok("host files (no dpkg on this host)".to_string())
        }
        Err(e) => {
            return Err(ImageError::HostCommand {
                command: "dpkg-query -S".to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut owner_of: HashMap<String, String> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("diversion ") {
            continue;
        }
        if let Some((pkgs, path)) = line.split_once(": ") {
            let pkg = pkgs.split(", ").next().unwrap_or(pkgs);
            let pkg = pkg.split(':').next().unwrap_or(pkg);
            owner_of
                .entry(path.trim().to_string())
                .or_insert_with(|| pkg.to_string());
        }
    }
    let mut packages: Vec<String> = Vec::new();
    for cands in owners {
        let found = cands
            .iter()
            .find_map(|c| owner_of.get(c.to_string_lossy().as_ref()));
        if let Some(p) = found {
            if !packages.contains(p) {
                packages.push(p.clone());
            }
        }
    }
    if packages.is_empty() {
        return Ok("host files".to_string());
    }
    let mut args = vec!["-W", "-f=${Package} ${Version}\\n"];
    args.extend(packages.iter().map(String::as_str));
    let out = run("dpkg-query", &args)?;
    let mut versions: HashMap<String, String> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((p, v)) = line.split_once(' ') {
            versions.insert(p.split(':').next().unwrap_or(p).to_string(), v.to_string());
        }
    }
    let list: Vec<String> = packages
        .iter()
        .map(|p| match versions.get(p) {
            Some(v) => format!("{p} {v}"),
            None => p.clone(),
        })
        .collect();
    Ok(format!("host packages: {}", list.join(", ")))
}

fn tree(recipe: &Recipe) -> Result<Tree<'_>, ImageError> {
    let mut t = Tree {
        recipe: &recipe.name,
        nodes: BTreeMap::new(),
        owners: Vec::new(),
    };
    for b in &recipe.binaries {
        if !Path::new(&b.path).exists() {
            return Err(host_missing(&b.package, Path::new(&b.path)));
        }
        t.copy_host(&b.path, &b.package)?;
        for lib in libraries(&b.path)? {
            t.copy_host(&lib, &b.package)?;
        }
    }
    if let Some(k) = &recipe.kins {
        let exe = running_binary();
        t.add(
            &rel(&k.path),
            Node::File {
                content: Content::Host(exe.clone()),
                mode: 0o755,
            },
            false,
        )?;
        for lib in libraries(&exe.to_string_lossy())? {
            t.copy_host(&lib, "libc6")?;
        }
    }
    for f in &recipe.files {
        if f.optional && fs::symlink_metadata(&f.path).is_err() {
            continue;
        }
        t.copy_host(&f.path, &f.package)?;
    }
    for d in &recipe.dirs {
        let mode = parse_mode(&recipe.name, &d.mode)?;
        t.add(
            &rel(&d.path),
            Node::Dir {
                mode,
                uid: d.uid,
                gid: d.gid,
            },
            false,
        )?;
    }
    for w in &recipe.write {
        let mode = parse_mode(&recipe.name, &w.mode)?;
        let mut content = w.lines.join("\n");
        content.push('\n');
        t.add(
            &rel(&w.path),
            Node::File {
                content: Content::Bytes(content.into_bytes()),
                mode,
            },
            true,
        )?;
    }
    for s in &recipe.symlinks {
        t.add(
            &rel(&s.path),
            Node::Symlink {
                target: s.target.clone(),
            },
            false,
        )?;
    }
    if let Some(bb) = &recipe.busybox {
        let host = Path::new(&bb.host);
        let meta = fs::metadata(host).map_err(|_| host_missing(&bb.package, host))?;
        let dest = rel(&bb.path);
        t.add(
            &dest,
            Node::File {
                content: Content::Host(host.to_path_buf()),
                mode: meta.permissions().mode() & 0o7777,
            },
            false,
        )?;
        t.owners.push(vec![
            host.to_path_buf(),
            fs::canonicalize(host).map_err(io_err(host))?,
        ]);
        let (flag, full) = match bb.applets.as_str() {
            "bin" => ("--list", false),
            "full" => ("--list-full", true),
            other => {
                return Err(ImageError::Recipe {
                    recipe: recipe.name.clone(),
                    reason: format!("busybox applets must be \"bin\" or \"full\", not {other:?}"),
                })
            }
        };
        let out = run(&bb.host, &[flag])?;
        if !out.status.success() {
            return Err(ImageError::HostCommand {
                command: format!("{} {flag}", bb.host),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let target = format!("/{dest}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            if line.is_empty() || line.contains("..") {
                continue;
            }
            let path = if full {
                rel(line)
            } else {
                format!("bin/{}", rel(line))
            };
            if path.is_empty() || t.nodes.contains_key(&path) {
                continue;
            }
            // A path under a symlink of the tree (e.g. /lib -> usr/lib) is skipped.
            if t.parents(&path).is_err() {
                continue;
            }
            t.add(
                &path,
                Node::Symlink {
                    target: target.clone(),
                },
                false,
            )?;
        }
    }
    Ok(t)
}

/// The layer tar: sorted entries, mtime 0, owners and modes from the tree.
fn layer(t: &Tree<'_>) -> Result<Vec<u8>, ImageError> {
    let mut b = tar::Builder::new(Vec::new());
    let tar_err = |path: &str, e: io::Error| io_err(format!("layer entry /{path}"))(e);
    for (path, node) in &t.nodes {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        match node {
            Node::Dir { mode, uid, gid } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(|e| tar_err(path, e))?;
            }
            Node::File { content, mode } => {
                let bytes = match content {
                    Content::Host(p) => fs::read(p).map_err(io_err(p))?,
                    Content::Bytes(b) => b.clone(),
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(bytes.len() as u64);
                b.append_data(&mut h, path, &bytes[..])
                    .map_err(|e| tar_err(path, e))?;
            }
            Node::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(0);
                b.append_link(&mut h, path, target)
                    .map_err(|e| tar_err(path, e))?;
            }
        }
    }
    b.into_inner().map_err(|e| io_err("layer")(e))
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn json_bytes<T: serde::Serialize>(what: &str, v: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(v).map_err(|source| ImageError::Json {
        what: what.to_string(),
        source,
    })
}

/// Builds `recipe` as an OCI-layout archive naming `reference` (normalized).
pub(crate) fn build(recipe: &Recipe, reference: &str) -> Result<Vec<u8>, ImageError> {
    let t = tree(recipe)?;
    let layer = layer(&t)?;
    let diff_id = sha256_digest(&layer);
    let mut built_from = built_from(&t.owners)?;
    if recipe.kins.is_some() {
        built_from = format!("{}; {built_from}", kins_fingerprint()?);
    }
    let c = &recipe.config;
    let mut labels = serde_json::Map::new();
    labels.insert(LABEL_BUILT_FROM.to_string(), built_from.into());
    let mut cfg = serde_json::Map::new();
    if !c.user.is_empty() {
        cfg.insert("User".into(), c.user.clone().into());
    }
    if !c.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = c
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect();
        cfg.insert("ExposedPorts".into(), ports.into());
    }
    cfg.insert("Env".into(), c.env.clone().into());
    if !c.entrypoint.is_empty() {
        cfg.insert("Entrypoint".into(), c.entrypoint.clone().into());
    }
    cfg.insert("Cmd".into(), c.cmd.clone().into());
    cfg.insert("WorkingDir".into(), c.working_dir.clone().into());
    cfg.insert("Labels".into(), labels.into());
    if let Some(s) = &c.stop_signal {
        cfg.insert("StopSignal".into(), s.clone().into());
    }
    let created = "1970-01-01T00:00:00Z";
    let config = serde_json::json!({
        "created": created,
        "architecture": arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": format!("kins: built from host packages by recipe {}", recipe.name)}],
    });
    let config = json_bytes("config", &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: archive::MT_OCI_MANIFEST.to_string(),
        config: Descriptor {
            media_type: archive::MT_OCI_CONFIG.to_string(),
            digest: sha256_digest(&config),
            size: config.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: vec![Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
            digest: diff_id.clone(),
            size: layer.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }],
    };
    let manifest = json_bytes("manifest", &manifest)?;
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("latest");
    let index = Index {
        schema_version: 2,
        media_type: archive::MT_OCI_INDEX.to_string(),
        manifests: vec![Descriptor {
            media_type: archive::MT_OCI_MANIFEST.to_string(),
            digest: sha256_digest(&manifest),
            size: manifest.len() as u64,
            annotations: BTreeMap::from([
                (
                    archive::ANNOTATION_CONTAINERD_NAME.to_string(),
                    reference.to_string(),
                ),
                (archive::ANNOTATION_REF_NAME.to_string(), tag.to_string()),
            ]),
            platform: None,
        }],
    };
    let index = json_bytes("index", &index)?;
    let mut b = tar::Builder::new(Vec::new());
    let files: [(String, &[u8]); 5] = [
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), &index),
        (format!("blobs/sha256/{}", &diff_id[7..]), &layer),
        (
            format!("blobs/sha256/{}", &sha256_digest(&config)[7..]),
            &config,
        ),
        (
            format!("blobs/sha256/{}", &sha256_digest(&manifest)[7..]),
            &manifest,
        ),
    ];
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        b.append_data(&mut h, &name, bytes)
            .map_err(|e| io_err(format!("archive entry {name}"))(e))?;
    }
    b.into_inner().map_err(|e| io_err("archive")(e))
}
