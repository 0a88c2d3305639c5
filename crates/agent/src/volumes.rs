//! A pod's volumes on the node: emptyDir, configMap, secret, downwardAPI, projected (the
//! service-account token, `kube-root-ca.crt`, the namespace) and hostPath, made ready
//! as host directories that the runtime bind-mounts into containers. Each volume lives in
//! `<data_dir>/pods/<uid>/volumes/<plugin>/<name>` (the kubelet's layout), removed with
//! the pod.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};

use crate::{spec, Config};

/// A volume ready on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are always read-only.
    pub read_only: bool,
}

/// Why a volume could not be set up (the kubelet's FailedMount message).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume \"{}\" : {}",
            self.volume, self.message
        )
    }
}

pub fn pod_data_dir(cfg: &Config, uid: &str) -> PathBuf {
    cfg.data_dir.join("pods").join(uid)
}

/// Files to write for one volume: relative path → (content, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn key_files(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
) -> Result<Files, String> {
    let mut out = Files::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let Some(v) = data.get(&it.key) else {
                    return Err(format!("{what}: configuration key {:?} not found", it.key));
                };
                out.insert(
                    it.path.clone(),
                    (v.clone(), it.mode.map(|m| m as u32).unwrap_or(default_mode)),
                );
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k, (v, default_mode));
            }
        }
    }
    Ok(out)
}

fn downward_files(
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Files, String> {
    let mut out = Files::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            spec::field_ref(pod, pod_ip, host_ip, &f.field_path)?
        } else if let Some(r) = &it.resource_field_ref {
            let c = pod
                .spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| Some(&c.name) == r.container_name.as_ref())
                })
                .cloned()
                .unwrap_or_default();
            spec::resource_field(&c, &r.resource)?
        } else {
            continue;
        };
        out.insert(
            it.path.clone(),
            (
                value.into_bytes(),
                it.mode.map(|m| m as u32).unwrap_or(default_mode),
            ),
        );
    }
    Ok(out)
}

fn write_files(dir: &Path, files: &Files) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (rel, (content, mode)) in files {
        if rel.split('/').any(|p| p == "..") || rel.starts_with('/') {
            return Err(format!("invalid path {rel:?}"));
        }
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let tmp = p.with_extension("kins-tmp");
        std::fs::write(&tmp, content).map_err(|e| format!("writing {}: {e}", p.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        std::fs::rename(&tmp, &p).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = api.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(cm.map(|cm| {
        let mut m: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.unwrap_or_default() {
            m.insert(k, v.0);
        }
        m
    }))
}

async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(s.map(|s| {
        let mut m: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            m.insert(k, v.into_bytes());
        }
        m
    }))
}

async fn sa_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: expiration,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let out = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
    out.status
        .map(|s| s.token)
        .ok_or_else(|| "failed to fetch token: empty TokenRequest status".to_string())
}

fn not_found(kind: &str, name: &str) -> String {
    format!("{kind} \"{name}\" not found")
}

/// Sets up every volume of the pod; the first failure is returned (nothing else is
/// started until all volumes are ready, as the kubelet does).
///
/// Called again every minute while the pod runs (as the kubelet resyncs), so configMap,
/// secret and downward-API files follow their sources; a service-account token is
/// requested anew only when `new_token` (it nears its expiry), else the one on disk is
/// kept.
pub async fn prepare(
    client: &kube::Client,
    cfg: &Config,
    pod: &Pod,
    pod_ip: &str,
    new_token: bool,
) -> Result<BTreeMap<String, Ready>, VolumeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let host_ip = cfg.node_ip.to_string();
    let base = pod_data_dir(cfg, &uid).join("volumes");
    let mut out = BTreeMap::new();
    let volumes: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes {
        let err = |message: String| VolumeError {
            volume: v.name.clone(),
            message,
        };
        let ready = if v.empty_dir.is_some() {
            let p = base.join("kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(|e| err(e.to_string()))?;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777));
            Ready {
                path: p,
                read_only: false,
            }
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            let ty = h.type_.clone().unwrap_or_default();
            let meta = std::fs::metadata(&p);
            let bad = |what: &str| {
                err(format!(
                    "hostPath type check failed: {} is not a {what}",
                    h.path
                ))
            };
            match ty.as_str() {
                "DirectoryOrCreate" if meta.is_err() => {
                    std::fs::create_dir_all(&p).map_err(|e| err(e.to_string()))?;
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
                }
                "FileOrCreate" if meta.is_err() => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
                    }
                    std::fs::write(&p, b"").map_err(|e| err(e.to_string()))?;
                }
                "Directory" | "DirectoryOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => {
                    return Err(bad("directory"))
                }
                "File" | "FileOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_file()) => {
                    return Err(bad("file"))
                }
                "Socket" | "CharDevice" | "BlockDevice" if meta.is_err() => {
                    return Err(bad(&ty.to_lowercase()))
                }
                _ => {
                    if meta.is_err() && ty.is_empty() {
                        // No type: created as a directory, like the kubelet's runtime.
                        std::fs::create_dir_all(&p).map_err(|e| err(e.to_string()))?;
                    }
                }
            }
            Ready {
                path: p,
                read_only: false,
            }
        } else if let Some(c) = &v.config_map {
            let mode = c.default_mode.unwrap_or(0o644) as u32;
            let p = base.join("kubernetes.io~configmap").join(&v.name);
            match config_map(client, &ns, &c.name).await.map_err(err)? {
                Some(data) => {
                    let files = key_files(data, c.items.clone(), mode, &c.name).map_err(err)?;
                    write_files(&p, &files).map_err(err)?;
                }
                None if c.optional == Some(true) => {
                    std::fs::create_dir_all(&p).map_err(|e| err(e.to_string()))?
                }
                None => return Err(err(not_found("configmap", &c.name))),
            }
            Ready {
                path: p,
                read_only: true,
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let p = base.join("kubernetes.io~secret").join(&v.name);
            match secret(client, &ns, &name).await.map_err(err)? {
                Some(data) => {
                    let files = key_files(data, s.items.clone(), mode, &name).map_err(err)?;
                    write_files(&p, &files).map_err(err)?;
                }
                None if s.optional == Some(true) => {
                    std::fs::create_dir_all(&p).map_err(|e| err(e.to_string()))?
                }
                None => return Err(err(not_found("secret", &name))),
            }
            Ready {
                path: p,
                read_only: true,
            }
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.unwrap_or(0o644) as u32;
            let p = base.join("kubernetes.io~downward-api").join(&v.name);
            let files = downward_files(
                pod,
                pod_ip,
                &host_ip,
                &d.items.clone().unwrap_or_default(),
                mode,
            )
            .map_err(err)?;
            write_files(&p, &files).map_err(err)?;
            Ready {
                path: p,
                read_only: true,
            }
        } else if let Some(pr) = &v.projected {
            let mode = pr.default_mode.unwrap_or(0o644) as u32;
            let p = base.join("kubernetes.io~projected").join(&v.name);
            let mut files = Files::new();
            for src in pr.sources.clone().unwrap_or_default() {
                if let Some(t) = src.service_account_token {
                    let kept = (!new_token)
                        .then(|| std::fs::read(p.join(&t.path)).ok())
                        .flatten()
                        .filter(|t| !t.is_empty());
                    let tok = match kept {
                        Some(tok) => tok,
                        None => sa_token(client, pod, t.audience.clone(), t.expiration_seconds)
                            .await
                            .map_err(err)?
                            .into_bytes(),
                    };
                    files.insert(t.path.clone(), (tok, mode));
                }
                if let Some(c) = src.config_map {
                    let name = c.name.clone();
                    match config_map(client, &ns, &name).await.map_err(err)? {
                        Some(data) => {
                            files.extend(key_files(data, c.items, mode, &name).map_err(err)?)
                        }
                        None if c.optional == Some(true) => {}
                        None => return Err(err(not_found("configmap", &name))),
                    }
                }
                if let Some(s) = src.secret {
                    let name = s.name.clone();
                    match secret(client, &ns, &name).await.map_err(err)? {
                        Some(data) => {
                            files.extend(key_files(data, s.items, mode, &name).map_err(err)?)
                        }
                        None if s.optional == Some(true) => {}
                        None => return Err(err(not_found("secret", &name))),
                    }
                }
                if let Some(d) = src.downward_api {
                    files.extend(
                        downward_files(pod, pod_ip, &host_ip, &d.items.unwrap_or_default(), mode)
                            .map_err(err)?,
                    );
                }
            }
            write_files(&p, &files).map_err(err)?;
            Ready {
                path: p,
                read_only: true,
            }
        } else {
            return Err(err(
                "kins supports emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes only"
                    .into(),
            ));
        };
        out.insert(v.name.clone(), ready);
    }
    Ok(out)
}

/// Decodes base64 (for tests and callers holding raw Secret JSON).
pub fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_pick_keys_and_modes() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        let all = key_files(data.clone(), None, 0o644, "cm").expect("all");
        assert_eq!(all.len(), 2);
        let items: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "b", "path": "dir/b.txt", "mode": 0o600}]))
                .expect("items");
        let one = key_files(data.clone(), Some(items), 0o644, "cm").expect("one");
        assert_eq!(one.get("dir/b.txt"), Some(&(b"2".to_vec(), 0o600)));
        let missing: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "zz", "path": "z"}])).expect("items");
        assert!(key_files(data, Some(missing), 0o644, "cm").is_err());
        let d = tempfile::tempdir().expect("tempdir");
        let bad: Files = [("../x".to_string(), (vec![], 0o644))].into();
        assert!(write_files(d.path(), &bad).is_err());
        assert_eq!(b64("aGk="), Some(b"hi".to_vec()));
    }
}
