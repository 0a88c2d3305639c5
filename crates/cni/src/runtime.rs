//! The runtime's side of CNI, as libcni does it for the kubelet and containerd: a network
//! configuration list from a directory, plugin binaries found on a search path, ADD through
//! the chain in order (each plugin gets the previous one's result as `prevResult`), DEL in
//! reverse order with the cached result and configuration of ADD, CHECK, STATUS and GC
//! (specification 1.1, only for lists that declare it), VERSION, and `runtimeConfig` built
//! from the capability arguments each plugin declares in `capabilities`.
//!
//! Plugins are run through the [`Exec`] trait: [`ProcessExec`] forks the binaries, unit
//! tests use a fake.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// What can go wrong on the runtime's side; each names the plugin when one is involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no network configuration (*.conflist, *.conf, *.json) in {0}")]
    NoConfig(PathBuf),
    #[error("network configuration {path}: {why}")]
    Config { path: String, why: String },
    #[error("failed to find plugin {ty:?} in path [{path}]")]
    NotFound { ty: String, path: String },
    #[error("plugin type={ty:?} failed ({command}): {msg}{}", details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Plugin {
        ty: String,
        command: String,
        code: u64,
        msg: String,
        details: Option<String>,
    },
    #[error("plugin type={ty:?} ({command}): {why}")]
    Exec {
        ty: String,
        command: String,
        why: String,
    },
    #[error("plugin type={ty:?} does not support the configuration's cniVersion {want} (it supports {supported})")]
    Version {
        ty: String,
        want: String,
        supported: String,
    },
    #[error("CNI cache {path}: {why}")]
    Cache { path: PathBuf, why: String },
}

type Result<T> = std::result::Result<T, RuntimeError>;

/// Runs plugin binaries.
pub trait Exec: Send + Sync {
    /// The binary of plugin `ty` on `path`.
    fn find(&self, ty: &str, path: &[PathBuf]) -> Result<PathBuf>;
    /// Runs `bin` with the CNI variables `env` and `stdin`; its stdout on success, or the
    /// plugin's error object.
    fn run(&self, ty: &str, bin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>>;
}

/// Forks the plugin binaries (with the caller's environment plus the CNI variables, so that
/// plugins find `iptables` and friends on PATH).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessExec;

impl Exec for ProcessExec {
    fn find(&self, ty: &str, path: &[PathBuf]) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let safe = !ty.is_empty() && !ty.contains('/') && ty != "." && ty != "..";
        if safe {
            for dir in path {
                let p = dir.join(ty);
                if std::fs::metadata(&p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                {
                    return Ok(p);
                }
            }
        }
        Err(RuntimeError::NotFound {
            ty: ty.to_string(),
            path: join_path(path, " "),
        })
    }

    fn run(&self, ty: &str, bin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let command = env
            .iter()
            .find(|(k, _)| k == "CNI_COMMAND")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let exec_err = |why: String| RuntimeError::Exec {
            ty: ty.to_string(),
            command: command.clone(),
            why,
        };
        let mut child = Command::new(bin)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| exec_err(format!("running {}: {e}", bin.display())))?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits without reading (VERSION) closes the pipe: not an error.
            let _ = input.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| exec_err(format!("waiting for {}: {e}", bin.display())))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        #[derive(Deserialize)]
        struct ErrObj {
            code: Option<u64>,
            msg: Option<String>,
            details: Option<String>,
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match serde_json::from_slice::<ErrObj>(&out.stdout) {
            Ok(e) if e.msg.is_some() => Err(RuntimeError::Plugin {
                ty: ty.to_string(),
                command,
                code: e.code.unwrap_or(0),
                msg: e.msg.unwrap_or_default(),
                details: e.details.filter(|d| !d.is_empty()),
            }),
            _ => Err(exec_err(format!(
                "{} with no error object{}",
                out.status,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ))),
        }
    }
}

fn join_path(path: &[PathBuf], sep: &str) -> String {
    path.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// `major.minor.patch` as numbers (missing parts are 0), for comparisons.
pub fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>());
    let major = it.next()?.ok()?;
    let minor = it.next().unwrap_or(Ok(0)).ok()?;
    let patch = it.next().unwrap_or(Ok(0)).ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

fn at_least(v: &str, min: (u32, u32, u32)) -> bool {
    version_tuple(v).is_some_and(|t| t >= min)
}

/// A network configuration list (`*.conflist`; a single-plugin `*.conf` is read as a list
/// of one).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Each plugin's configuration, as written (its `type` checked to be a string).
    pub plugins: Vec<Map<String, Value>>,
    /// Where it was read from, for messages.
    pub source: String,
}

impl ConfList {
    /// Parses and checks a list (or a single configuration).
    pub fn parse(bytes: &[u8], source: &str) -> Result<ConfList> {
        let bad = |why: String| RuntimeError::Config {
            path: source.to_string(),
            why,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(mut top) = v else {
            return Err(bad("not a JSON object".into()));
        };
        let plugins = match top.remove("plugins") {
            Some(Value::Array(ps)) => ps,
            Some(_) => return Err(bad("\"plugins\" must be a list".into())),
            // A single configuration: the object is the plugin.
            None if top.contains_key("type") => vec![Value::Object(top.clone())],
            None => return Err(bad("no \"plugins\" list (and no \"type\")".into())),
        };
        let cni_version = match top.get("cniVersion") {
            Some(Value::String(s)) if version_tuple(s).is_some() => s.clone(),
            Some(other) => return Err(bad(format!("cniVersion {other}: not a version"))),
            None => return Err(bad("no cniVersion".into())),
        };
        let name = match top.get("name") {
            Some(Value::String(s)) if crate::config::valid_id(s) => s.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "name {other}: letters, digits, '-', '_' and '.' only"
                )))
            }
            None => return Err(bad("no name".into())),
        };
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        let mut out = Vec::new();
        for (i, p) in plugins.into_iter().enumerate() {
            let Value::Object(m) = p else {
                return Err(bad(format!("plugins[{i}] is not an object")));
            };
            match m.get("type") {
                Some(Value::String(t)) if !t.is_empty() => {}
                _ => return Err(bad(format!("plugins[{i}] has no \"type\""))),
            }
            out.push(m);
        }
        let flag = |k: &str| top.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(ConfList {
            cni_version,
            name,
            disable_check: flag("disableCheck"),
            disable_gc: flag("disableGC"),
            plugins: out,
            source: source.to_string(),
        })
    }

    /// The first configuration of `dir` in name order, as the kubelet and containerd pick.
    pub fn load_dir(dir: &Path) -> Result<ConfList> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|_| RuntimeError::NoConfig(dir.to_path_buf()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        let path = files
            .first()
            .ok_or_else(|| RuntimeError::NoConfig(dir.to_path_buf()))?;
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::Config {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        ConfList::parse(&bytes, &path.display().to_string())
    }

    /// The list as JSON again (what the cache keeps, so DEL runs what ADD ran).
    pub fn to_value(&self) -> Value {
        json!({
            "cniVersion": self.cni_version, "name": self.name,
            "disableCheck": self.disable_check, "disableGC": self.disable_gc,
            "plugins": self.plugins,
        })
    }

    /// The plugins' types, in order.
    pub fn types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap_or(""))
            .collect()
    }
}

/// One plugin's configuration for an invocation: its own fields, the list's `name` and
/// `cniVersion`, `prevResult`, and `runtimeConfig` holding those capability arguments
/// the plugin declares in `capabilities`.
pub fn plugin_conf(
    list: &ConfList,
    i: usize,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut c = list.plugins[i].clone();
    c.insert("cniVersion".into(), json!(list.cni_version));
    c.insert("name".into(), json!(list.name));
    if let Some(p) = prev {
        c.insert("prevResult".into(), p.clone());
    }
    let caps = c.get("capabilities").and_then(Value::as_object).cloned();
    let rc: Map<String, Value> = capability_args
        .iter()
        .filter(|(k, _)| {
            caps.as_ref()
                .and_then(|m| m.get(k.as_str()))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rc.is_empty() {
        c.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(c)
}

/// One attachment of a container to the network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub if_name: String,
    /// CNI_ARGS (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: Vec<(String, String)>,
    /// `portMappings`, `bandwidth`, `ips`, ...: given to plugins that declare them.
    pub capability_args: Map<String, Value>,
}

/// What ADD leaves in the cache for DEL and CHECK (libcni's `cniCacheV1`; the
/// configuration kept as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    network_name: String,
    config: Value,
    #[serde(flatten)]
    attachment: Attachment,
    result: Value,
}

/// A runtime: how plugins run, where they are, where results are cached.
pub struct Runtime<E: Exec> {
    pub exec: E,
    /// Folders searched for plugin binaries, in order (CNI_PATH).
    pub path: Vec<PathBuf>,
    /// Results of ADD, one file per attachment (`results/<network>-<container>-<ifname>`).
    pub cache_dir: PathBuf,
}

impl<E: Exec> Runtime<E> {
    fn env(&self, command: &str, att: Option<&Attachment>) -> Vec<(String, String)> {
        let mut env = vec![
            ("CNI_COMMAND".to_string(), command.to_string()),
            ("CNI_PATH".to_string(), join_path(&self.path, ":")),
        ];
        if let Some(a) = att {
            env.push(("CNI_CONTAINERID".into(), a.container_id.clone()));
            env.push(("CNI_NETNS".into(), a.netns.display().to_string()));
            env.push(("CNI_IFNAME".into(), a.if_name.clone()));
            if !a.args.is_empty() {
                let args: Vec<String> = a.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                env.push(("CNI_ARGS".into(), args.join(";")));
            }
        }
        env
    }

    fn invoke(&self, command: &str, conf: &Value, att: Option<&Attachment>) -> Result<Vec<u8>> {
        let ty = conf["type"].as_str().unwrap_or("");
        let bin = self.exec.find(ty, &self.path)?;
        self.exec.run(
            ty,
            &bin,
            &self.env(command, att),
            conf.to_string().as_bytes(),
        )
    }

    fn cache_path(&self, network: &str, att: &Attachment) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", att.container_id, att.if_name))
    }

    fn cache_read(&self, network: &str, att: &Attachment) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.cache_path(network, att)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn cache_write(&self, list: &ConfList, att: &Attachment, result: &Value) -> Result<()> {
        let path = self.cache_path(&list.name, att);
        let err = |e: std::io::Error| RuntimeError::Cache {
            path: path.clone(),
            why: e.to_string(),
        };
        let entry = CacheEntry {
            kind: "cniCacheV1".into(),
            network_name: list.name.clone(),
            config: list.to_value(),
            attachment: att.clone(),
            result: result.clone(),
        };
        std::fs::create_dir_all(self.cache_dir.join("results")).map_err(err)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap_or_default()).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Checks that every plugin of `list` is on the path and speaks its version.
    pub fn validate(&self, list: &ConfList) -> Result<()> {
        for ty in list.types() {
            let v = self.version(ty, &list.cni_version)?;
            if !v.iter().any(|s| s == &list.cni_version) {
                return Err(RuntimeError::Version {
                    ty: ty.to_string(),
                    want: list.cni_version.clone(),
                    supported: v.join(", "),
                });
            }
        }
        Ok(())
    }

    /// VERSION of plugin `ty`: the versions it supports.
    pub fn version(&self, ty: &str, cni_version: &str) -> Result<Vec<String>> {
        let conf = json!({"cniVersion": cni_version, "type": ty});
        let out = self.invoke("VERSION", &conf, None)?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct V {
            supported_versions: Vec<String>,
        }
        serde_json::from_slice::<V>(&out)
            .map(|v| v.supported_versions)
            .map_err(|e| RuntimeError::Exec {
                ty: ty.to_string(),
                command: "VERSION".into(),
                why: format!("unreadable answer: {e}"),
            })
    }

    /// ADD through the chain; the last plugin's result, also cached for DEL and CHECK.
    /// On a failure the plugins that ran are asked to DEL again, so nothing is left half
    /// made (the kubelet does the same through its sandbox teardown).
    pub fn add(&self, list: &ConfList, att: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let conf = plugin_conf(list, i, prev.as_ref(), &att.capability_args);
            let out = match self.invoke("ADD", &conf, Some(att)) {
                Ok(out) => out,
                Err(e) => {
                    let _ = self.del_with(list, att, prev.as_ref());
                    return Err(e);
                }
            };
            let ty = conf["type"].as_str().unwrap_or("").to_string();
            match serde_json::from_slice::<Value>(&out) {
                Ok(v @ Value::Object(_)) => prev = Some(v),
                _ => {
                    let _ = self.del_with(list, att, prev.as_ref());
                    return Err(RuntimeError::Exec {
                        ty,
                        command: "ADD".into(),
                        why: format!(
                            "the result is not a JSON object: {:?}",
                            String::from_utf8_lossy(&out)
                        ),
                    });
                }
            }
        }
        let result = prev.unwrap_or_else(|| json!({}));
        self.cache_write(list, att, &result)?;
        Ok(result)
    }

    fn del_with(&self, list: &ConfList, att: &Attachment, prev: Option<&Value>) -> Result<()> {
        // prevResult on DEL exists since 0.4.0.
        let prev = prev.filter(|_| at_least(&list.cni_version, (0, 4, 0)));
        let mut first_err = None;
        for i in (0..list.plugins.len()).rev() {
            let conf = plugin_conf(list, i, prev, &att.capability_args);
            if let Err(e) = self.invoke("DEL", &conf, Some(att)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// DEL through the chain in reverse, with what ADD ran and returned (from the cache),
    /// else with `list` and no prevResult. DEL of something never added succeeds.
    pub fn del(&self, list: &ConfList, att: &Attachment) -> Result<()> {
        let cached = self.cache_read(&list.name, att);
        let (list, att, prev) = match &cached {
            Some(c) => match ConfList::parse(c.config.to_string().as_bytes(), "the CNI cache") {
                Ok(l) => (l, c.attachment.clone(), Some(&c.result)),
                Err(_) => (list.clone(), att.clone(), None),
            },
            None => (list.clone(), att.clone(), None),
        };
        self.del_with(&list, &att, prev)?;
        let path = self.cache_path(&list.name, &att);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Cache {
                path,
                why: e.to_string(),
            }),
        }
    }

    /// CHECK through the chain with the cached result (0.4.0 and later, unless the list
    /// disables it).
    pub fn check(&self, list: &ConfList, att: &Attachment) -> Result<()> {
        if !at_least(&list.cni_version, (0, 4, 0)) || list.disable_check {
            return Ok(());
        }
        let cached = self
            .cache_read(&list.name, att)
            .ok_or_else(|| RuntimeError::Cache {
                path: self.cache_path(&list.name, att),
                why: "no cached result of ADD to check against".into(),
            })?;
        for i in 0..list.plugins.len() {
            let conf = plugin_conf(list, i, Some(&cached.result), &att.capability_args);
            self.invoke("CHECK", &conf, Some(att))?;
        }
        Ok(())
    }

    /// STATUS of each plugin (1.1.0 and later): whether the network can take ADDs.
    pub fn status(&self, list: &ConfList) -> Result<()> {
        if !at_least(&list.cni_version, (1, 1, 0)) {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            self.invoke("STATUS", &plugin_conf(list, i, None, &Map::new()), None)?;
        }
        Ok(())
    }

    /// GC: every attachment not in `valid` is forgotten (its cache entry removed), and on
    /// 1.1.0 lists each plugin is asked to release what it holds for them
    /// (`cni.dev/valid-attachments`).
    pub fn gc(&self, list: &ConfList, valid: &[(String, String)]) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let prefix = format!("{}-", list.name);
        if let Ok(entries) = std::fs::read_dir(self.cache_dir.join("results")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&prefix) {
                    continue;
                }
                let Some(entry) = std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
                else {
                    continue;
                };
                let a = &entry.attachment;
                if !valid
                    .iter()
                    .any(|(c, i)| *c == a.container_id && *i == a.if_name)
                {
                    let _ = std::fs::remove_file(e.path());
                    removed.push(a.container_id.clone());
                }
            }
        }
        if at_least(&list.cni_version, (1, 1, 0)) && !list.disable_gc {
            let valid: Vec<Value> = valid
                .iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
            for i in 0..list.plugins.len() {
                let mut conf = plugin_conf(list, i, None, &Map::new());
                conf["cni.dev/valid-attachments"] = Value::Array(valid.clone());
                self.invoke("GC", &conf, None)?;
            }
        }
        removed.sort();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
