//! Mutating admission that needs no IO: Kubernetes' ServiceAccount admission plugin, which
//! mounts a projected service-account token volume into every container of a new pod, and
//! its DefaultIngressClass plugin, which gives a new Ingress that names no class the
//! cluster's default IngressClass.
//!
//! The caller looks the ServiceAccount up (and refuses the pod when it is missing) and
//! chooses the random volume-name suffix, or lists the IngressClasses; this module only
//! rewrites the object.

use serde_json::{json, Map, Value};

/// Where the token, the cluster CA and the namespace appear inside containers.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Prefix of the projected volume's name (`kube-api-access-<5 chars>`).
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

/// The ConfigMap holding the cluster CA (`ca.crt`) in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The token lifetime the kubelet asks for: one hour plus seven seconds, as Kubernetes.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// Annotation of static (mirror) pods, which the plugin leaves alone.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The ServiceAccount a pod runs as ("default" when the pod names none).
pub fn service_account_name(pod: &Value) -> &str {
    let spec = &pod["spec"];
    spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| spec["serviceAccount"].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
}

/// Whether admission applies at all: mirror pods are not admitted this way.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some()
}

/// Whether the token is mounted: the pod's `automountServiceAccountToken` wins, then the
/// ServiceAccount's, and the default is yes.
pub fn should_automount(pod: &Value, service_account: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| service_account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// The projected volume Kubernetes adds, fully defaulted.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

/// Applies the ServiceAccount admission to a pod being created: sets
/// `serviceAccountName`/`serviceAccount` and, unless automounting is off, adds the
/// `kube-api-access-<suffix>` volume and mounts it read-only at
/// [`SERVICE_ACCOUNT_MOUNT_PATH`] in every init container and container that has no mount
/// there yet. An existing `kube-api-access-*` volume is reused.
pub fn admit_pod(pod: &mut Value, service_account: &Value, suffix: &str) {
    if is_mirror_pod(pod) {
        return;
    }
    let sa = service_account_name(pod).to_string();
    let automount = should_automount(pod, service_account);
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    if !automount {
        return;
    }
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
        .map(str::to_string);
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{suffix}"));
    let mount =
        json!({"name": volume_name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH});
    let mut needs_volume = false;
    for field in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            if add_mount(c, &mount) {
                needs_volume = true;
            }
        }
    }
    if existing.is_none() && needs_volume {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(v) = volumes.as_array_mut() {
            v.push(token_volume(&volume_name));
        } else {
            *volumes = json!([token_volume(&volume_name)]);
        }
    }
}

/// The legacy annotation naming an Ingress's class, which `spec.ingressClassName` replaced.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The annotation (value `"true"`) that makes an IngressClass the cluster's default.
pub const DEFAULT_INGRESS_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Whether an Ingress names no class, neither in `spec.ingressClassName` nor in the legacy
/// annotation (present with any value), and so gets the default one.
pub fn wants_default_ingress_class(ingress: &Value) -> bool {
    let named = ingress["spec"]
        .get("ingressClassName")
        .is_some_and(|c| !c.is_null());
    let annotated = ingress["metadata"]["annotations"]
        .get(INGRESS_CLASS_ANNOTATION)
        .is_some();
    !named && !annotated
}

/// The default among `classes` (IngressClass objects): those annotated
/// [`DEFAULT_INGRESS_CLASS_ANNOTATION`]` = "true"`, the newest by creationTimestamp, the
/// first by name among equally new ones (as Kubernetes ≥ 1.28).
pub fn default_ingress_class(classes: &[Value]) -> Option<&str> {
    let created = |c: &Value| {
        c["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt())
    };
    classes
        .iter()
        .filter(|c| {
            c["metadata"]["annotations"][DEFAULT_INGRESS_CLASS_ANNOTATION].as_str() == Some("true")
        })
        .filter_map(|c| Some((created(c), c["metadata"]["name"].as_str()?)))
        .max_by_key(|&(created, name)| (created, std::cmp::Reverse(name)))
        .map(|(_, name)| name)
}

/// Applies the DefaultIngressClass admission to an Ingress being created: one that
/// [`wants_default_ingress_class`] gets `spec.ingressClassName` set to the
/// [`default_ingress_class`] of `classes`, if there is one.
pub fn admit_ingress(ingress: &mut Value, classes: &[Value]) {
    if !wants_default_ingress_class(ingress) {
        return;
    }
    let Some(class) = default_ingress_class(classes) else {
        return;
    };
    let Some(o) = ingress.as_object_mut() else {
        return;
    };
    let spec = o.entry("spec").or_insert(Value::Null);
    if spec.is_null() {
        *spec = json!({});
    }
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("ingressClassName".into(), json!(class));
    }
}

/// Appends `mount` to a container unless something is mounted at its path already.
fn add_mount(container: &mut Map<String, Value>, mount: &Value) -> bool {
    let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
    if !mounts.is_array() {
        *mounts = json!([]);
    }
    let Some(mounts) = mounts.as_array_mut() else {
        return false;
    };
    if mounts
        .iter()
        .any(|m| m["mountPath"].as_str() == Some(SERVICE_ACCOUNT_MOUNT_PATH))
    {
        return false;
    }
    mounts.push(mount.clone());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNT: &str = SERVICE_ACCOUNT_MOUNT_PATH;

    /// Admits `pod` with `sa` and suffix "abcde"; returns the resulting spec.
    fn check(pod: Value, sa: Value) -> Value {
        let mut pod = pod;
        admit_pod(&mut pod, &sa, "abcde");
        pod["spec"].clone()
    }

    fn token_mount(name: &str) -> Value {
        json!({"name": name, "readOnly": true, "mountPath": MOUNT})
    }

    #[test]
    fn admission_table() {
        let sa = json!({"metadata": {"name": "default"}});
        let vol = token_volume("kube-api-access-abcde");
        let m = token_mount("kube-api-access-abcde");
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            (
                "plain pod gets the volume and the mount",
                json!({"spec": {"containers": [{"name": "c"}]}}),
                sa.clone(),
                json!({"serviceAccountName": "default", "serviceAccount": "default",
                       "containers": [{"name": "c", "volumeMounts": [m]}], "volumes": [vol]}),
            ),
            (
                "init containers too, existing mounts and volumes kept",
                json!({"spec": {"serviceAccountName": "builder",
                       "initContainers": [{"name": "i", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                       "containers": [{"name": "c"}], "volumes": [{"name": "data", "emptyDir": {}}]}}),
                sa.clone(),
                json!({"serviceAccountName": "builder", "serviceAccount": "builder",
                       "initContainers": [{"name": "i", "volumeMounts": [{"name": "data", "mountPath": "/data"}, m]}],
                       "containers": [{"name": "c", "volumeMounts": [m]}],
                       "volumes": [{"name": "data", "emptyDir": {}}, vol]}),
            ),
            (
                "automount false on the pod",
                json!({"spec": {"automountServiceAccountToken": false, "containers": [{"name": "c"}]}}),
                json!({"automountServiceAccountToken": true}),
                json!({"automountServiceAccountToken": false, "serviceAccountName": "default",
                       "serviceAccount": "default", "containers": [{"name": "c"}]}),
            ),
            (
                "automount false on the service account",
                json!({"spec": {"containers": [{"name": "c"}]}}),
                json!({"automountServiceAccountToken": false}),
                json!({"serviceAccountName": "default", "serviceAccount": "default", "containers": [{"name": "c"}]}),
            ),
            (
                "the pod's true overrides the service account's false",
                json!({"spec": {"automountServiceAccountToken": true, "containers": [{"name": "c"}]}}),
                json!({"automountServiceAccountToken": false}),
                json!({"automountServiceAccountToken": true, "serviceAccountName": "default", "serviceAccount": "default",
                       "containers": [{"name": "c", "volumeMounts": [m]}], "volumes": [vol]}),
            ),
            (
                "a container with its own mount at the path is left alone",
                json!({"spec": {"containers": [
                    {"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT}]},
                    {"name": "b"}]}}),
                sa.clone(),
                json!({"serviceAccountName": "default", "serviceAccount": "default", "containers": [
                    {"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT}]},
                    {"name": "b", "volumeMounts": [m]}], "volumes": [vol]}),
            ),
            (
                "no volume when every container mounts the path itself",
                json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT}]}]}}),
                sa.clone(),
                json!({"serviceAccountName": "default", "serviceAccount": "default",
                       "containers": [{"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT}]}]}),
            ),
            (
                "an existing kube-api-access volume is reused",
                json!({"spec": {"containers": [{"name": "c"}], "volumes": [token_volume("kube-api-access-old12")]}}),
                sa.clone(),
                json!({"serviceAccountName": "default", "serviceAccount": "default",
                       "containers": [{"name": "c", "volumeMounts": [token_mount("kube-api-access-old12")]}],
                       "volumes": [token_volume("kube-api-access-old12")]}),
            ),
            (
                "legacy serviceAccount field is honoured",
                json!({"spec": {"serviceAccount": "legacy", "automountServiceAccountToken": false, "containers": []}}),
                sa.clone(),
                json!({"serviceAccount": "legacy", "serviceAccountName": "legacy",
                       "automountServiceAccountToken": false, "containers": []}),
            ),
        ];
        for (what, pod, sa, want) in cases {
            assert_eq!(check(pod, sa), want, "{what}");
        }
    }

    /// An IngressClass, default or not, created at `created` (RFC 3339).
    fn class(name: &str, default: Option<&str>, created: &str) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created},
                           "spec": {"controller": "kins.dev/ingress"}});
        if let Some(v) = default {
            c["metadata"]["annotations"] = json!({DEFAULT_INGRESS_CLASS_ANNOTATION: v});
        }
        c
    }

    #[test]
    fn default_ingress_class_admission() {
        let plain = json!({"metadata": {"name": "web"}, "spec": {"defaultBackend": {}}});
        let old = class("old", Some("true"), "2024-01-01T00:00:00Z");
        let new = class("new", Some("true"), "2024-06-01T00:00:00Z");
        let twin = class("a-twin", Some("true"), "2024-06-01T00:00:00Z");
        let other = class("other", None, "2025-01-01T00:00:00Z");
        let not_true = class("false", Some("True"), "2025-01-01T00:00:00Z");
        let with_class = with_spec(&plain, "ingressClassName", json!("mine"));
        let mut annotated = plain.clone();
        annotated["metadata"]["annotations"] = json!({INGRESS_CLASS_ANNOTATION: ""});
        let cases: Vec<(&str, Value, Vec<Value>, Option<&str>)> = vec![
            ("no classes", plain.clone(), vec![], None),
            (
                "no default class",
                plain.clone(),
                vec![other.clone(), not_true.clone()],
                None,
            ),
            (
                "one default class",
                plain.clone(),
                vec![other.clone(), old.clone()],
                Some("old"),
            ),
            (
                "two default classes: the newest",
                plain.clone(),
                vec![new.clone(), old.clone()],
                Some("new"),
            ),
            (
                "equally new: the first by name",
                plain.clone(),
                vec![new.clone(), twin.clone(), old.clone()],
                Some("a-twin"),
            ),
            (
                "class already set",
                with_class,
                vec![old.clone()],
                Some("mine"),
            ),
            (
                "empty class name is still set",
                with_spec(&plain, "ingressClassName", json!("")),
                vec![old.clone()],
                Some(""),
            ),
            (
                "null class name is unset",
                with_spec(&plain, "ingressClassName", Value::Null),
                vec![old.clone()],
                Some("old"),
            ),
            ("legacy annotation set", annotated, vec![old.clone()], None),
            (
                "no spec at all",
                json!({"metadata": {"name": "web"}}),
                vec![old.clone()],
                Some("old"),
            ),
        ];
        for (what, ingress, classes, want) in cases {
            let mut ingress = ingress;
            admit_ingress(&mut ingress, &classes);
            assert_eq!(ingress["spec"]["ingressClassName"].as_str(), want, "{what}");
        }
    }

    fn with_spec(ingress: &Value, key: &str, v: Value) -> Value {
        let mut i = ingress.clone();
        i["spec"][key] = v;
        i
    }

    #[test]
    fn mirror_pods_are_not_admitted() {
        let pod = json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "x"}}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(check(pod.clone(), json!({})), pod["spec"]);
    }

    #[test]
    fn projected_volume_matches_kubernetes() {
        let v = token_volume("kube-api-access-x");
        let sources = &v["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(v["projected"]["defaultMode"], 420);
    }
}
