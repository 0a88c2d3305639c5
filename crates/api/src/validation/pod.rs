//! Pods and pod templates.

use serde_json::{Map, Value};

use super::checks::{
    inclusive_range_error, is_dns1123_label, is_dns1123_subdomain,
    is_dns1123_subdomain_with_underscore, is_qualified_name, is_relaxed_env_var_name, is_valid_ip,
    is_valid_label_value, is_valid_port_name, is_valid_port_num,
};
use super::service::validate_port_num_or_name;
use super::{go_string_slice, go_value, json, meta, Errs};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const MAX_INT32: i64 = i32::MAX as i64;

/// Volume source fields in the order Kubernetes tries them, with the name its "more than 1
/// volume type" error uses (two differ from the JSON key).
const VOLUME_SOURCES: &[(&str, &str)] = &[
    ("emptyDir", "emptyDir"),
    ("hostPath", "hostPath"),
    ("gitRepo", "gitRepo"),
    ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"),
    ("flocker", "flocker"),
    ("persistentVolumeClaim", "persistentVolumeClaim"),
    ("rbd", "rbd"),
    ("cinder", "cinder"),
    ("cephfs", "cephFS"),
    ("quobyte", "quobyte"),
    ("downwardAPI", "downwarAPI"),
    ("fc", "fc"),
    ("flexVolume", "flexVolume"),
    ("configMap", "configMap"),
    ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"),
    ("photonPersistentDisk", "photonPersistentDisk"),
    ("portworxVolume", "portworxVolume"),
    ("azureDisk", "azureDisk"),
    ("storageos", "storageos"),
    ("projected", "projected"),
    ("scaleIO", "scaleIO"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

/// The fields a pod update may change, as the Forbidden message lists them.
const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// A pod spec at `path` (`spec` for a Pod, `spec.template.spec` for a workload). `is_pod`
/// enables the checks Kubernetes applies to Pods but not to templates.
pub(crate) fn validate_pod_spec(spec: &Value, path: &str, is_pod: bool, e: &mut Errs) {
    let volumes = validate_volumes(json::arr(spec, "volumes"), &format!("{path}.volumes"), e);
    let containers = json::arr(spec, "containers");
    let init_containers = json::arr(spec, "initContainers");
    validate_containers(containers, &volumes, &format!("{path}.containers"), e);
    validate_init_containers(
        init_containers,
        containers,
        &volumes,
        &format!("{path}.initContainers"),
        e,
    );

    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in json::arr(c, "ports").iter().enumerate() {
                let hp = json::int(port, "hostPort").unwrap_or(0);
                let cp = json::int(port, "containerPort").unwrap_or(0);
                if (is_pod || hp != 0) && hp != cp {
                    e.invalid_int(
                        &format!("{path}.containers[{i}].ports[{j}].hostPort"),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    );
                }
            }
        }
    }
    if let Some(p) = json::opt_str(spec, "restartPolicy") {
        if p.is_empty() {
            e.required(&format!("{path}.restartPolicy"), "");
        } else if !RESTART_POLICIES.contains(&p) {
            e.not_supported(&format!("{path}.restartPolicy"), p, RESTART_POLICIES);
        }
    }
    if let Some(p) = json::opt_str(spec, "dnsPolicy") {
        if p.is_empty() {
            e.required(&format!("{path}.dnsPolicy"), "");
        } else if !DNS_POLICIES.contains(&p) {
            e.not_supported(&format!("{path}.dnsPolicy"), p, DNS_POLICIES);
        }
    }
    if let Some(sel) = json::obj(spec, "nodeSelector") {
        meta::validate_labels(sel, &format!("{path}.nodeSelector"), e);
    }
    validate_dns_config(spec, path, e);
    for key in ["serviceAccountName", "nodeName", "priorityClassName"] {
        let v = json::str(spec, key);
        if !v.is_empty() {
            e.each_invalid(&format!("{path}.{key}"), v, is_dns1123_subdomain(v));
        }
    }
    if let Some(ads) = json::int(spec, "activeDeadlineSeconds") {
        if !(1..=MAX_INT32).contains(&ads) {
            e.invalid_int(
                &format!("{path}.activeDeadlineSeconds"),
                ads,
                &inclusive_range_error(1, MAX_INT32),
            );
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = json::str(spec, key);
        if !v.is_empty() {
            e.each_invalid(&format!("{path}.{key}"), v, is_dns1123_label(v));
        }
    }
    validate_tolerations(
        json::arr(spec, "tolerations"),
        &format!("{path}.tolerations"),
        e,
    );
    if is_pod {
        for (key, list) in [
            ("containers", containers),
            ("initContainers", init_containers),
        ] {
            for (i, c) in list.iter().enumerate() {
                let image = json::str(c, "image");
                if image.trim() != image {
                    e.invalid_str(
                        &format!("{path}.{key}[{i}].image"),
                        image,
                        "must not have leading or trailing whitespace",
                    );
                }
            }
        }
    }
}

/// The volumes; returns the names of the valid ones (what volume mounts may refer to).
fn validate_volumes(volumes: &[Value], path: &str, e: &mut Errs) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let mut el = Errs::default();
        let mut count = 0;
        for (key, err_name) in VOLUME_SOURCES {
            if !json::present(vol, key) {
                continue;
            }
            if count > 0 {
                el.forbidden(
                    &format!("{p}.{err_name}"),
                    "may not specify more than 1 volume type",
                );
            } else {
                count += 1;
                if *key == "hostPath"
                    && vol
                        .get("hostPath")
                        .is_some_and(|h| json::str(h, "path").is_empty())
                {
                    el.required(&format!("{p}.hostPath.path"), "");
                }
            }
        }
        if count == 0 {
            el.required(&p, "must specify a volume type");
        }
        let name = json::str(vol, "name");
        if name.is_empty() {
            el.required(&format!("{p}.name"), "");
        } else {
            el.each_invalid(&format!("{p}.name"), name, is_dns1123_label(name));
        }
        if names.iter().any(|n| n == name) {
            el.duplicate_str(&format!("{p}.name"), name);
        }
        if el.0.is_empty() {
            names.push(name.to_string());
        } else {
            e.0.extend(el.0);
        }
    }
    names
}

/// What every container kind is checked for.
fn validate_container_common(c: &Value, volumes: &[String], path: &str, e: &mut Errs) {
    let name = json::str(c, "name");
    if name.is_empty() {
        e.required(&format!("{path}.name"), "");
    } else {
        e.each_invalid(&format!("{path}.name"), name, is_dns1123_label(name));
    }
    if json::str(c, "image").is_empty() {
        e.required(&format!("{path}.image"), "");
    }
    if let Some(p) = json::opt_str(c, "terminationMessagePolicy") {
        if p.is_empty() {
            e.required(&format!("{path}.terminationMessagePolicy"), "");
        } else if !TERMINATION_MESSAGE_POLICIES.contains(&p) {
            e.not_supported(
                &format!("{path}.terminationMessagePolicy"),
                p,
                TERMINATION_MESSAGE_POLICIES,
            );
        }
    }
    validate_container_ports(json::arr(c, "ports"), &format!("{path}.ports"), e);
    for (i, env) in json::arr(c, "env").iter().enumerate() {
        let n = json::str(env, "name");
        let p = format!("{path}.env[{i}].name");
        if n.is_empty() {
            e.required(&p, "");
        } else {
            e.each_invalid(&p, n, is_relaxed_env_var_name(n));
        }
    }
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, m) in json::arr(c, "volumeMounts").iter().enumerate() {
        let p = format!("{path}.volumeMounts[{i}]");
        let n = json::str(m, "name");
        if n.is_empty() {
            e.required(&format!("{p}.name"), "");
        }
        if !volumes.iter().any(|v| v == n) {
            e.not_found_str(&format!("{p}.name"), n);
        }
        let mp = json::str(m, "mountPath");
        if mp.is_empty() {
            e.required(&format!("{p}.mountPath"), "");
        }
        if mount_paths.contains(&mp) {
            e.invalid_str(&format!("{p}.mountPath"), mp, "must be unique");
        }
        mount_paths.push(mp);
    }
    if let Some(p) = json::opt_str(c, "imagePullPolicy") {
        if p.is_empty() {
            e.required(&format!("{path}.imagePullPolicy"), "");
        } else if !PULL_POLICIES.contains(&p) {
            e.not_supported(&format!("{path}.imagePullPolicy"), p, PULL_POLICIES);
        }
    }
}

fn validate_container_ports(ports: &[Value], path: &str, e: &mut Errs) {
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let name = json::str(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                e.each_invalid(&format!("{p}.name"), name, msgs);
            } else if names.contains(&name) {
                e.duplicate_str(&format!("{p}.name"), name);
            } else {
                names.push(name);
            }
        }
        let cp = json::int(port, "containerPort").unwrap_or(0);
        if cp == 0 {
            e.required(&format!("{p}.containerPort"), "");
        } else {
            for m in is_valid_port_num(cp) {
                e.invalid_int(&format!("{p}.containerPort"), cp, &m);
            }
        }
        let hp = json::int(port, "hostPort").unwrap_or(0);
        if hp != 0 {
            for m in is_valid_port_num(hp) {
                e.invalid_int(&format!("{p}.hostPort"), hp, &m);
            }
        }
        if let Some(proto) = json::opt_str(port, "protocol") {
            if proto.is_empty() {
                e.required(&format!("{p}.protocol"), "");
            } else if !PROTOCOLS.contains(&proto) {
                e.not_supported(&format!("{p}.protocol"), proto, PROTOCOLS);
            }
        }
    }
}

/// Host ports must not collide (by protocol, host IP and port) within `containers`.
fn check_host_port_conflicts<'a>(
    containers: impl Iterator<Item = (usize, &'a Value)>,
    path: &str,
    e: &mut Errs,
) {
    let mut seen: Vec<String> = Vec::new();
    for (ci, c) in containers {
        for (pi, port) in json::arr(c, "ports").iter().enumerate() {
            let hp = json::int(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{hp}",
                json::opt_str(port, "protocol").unwrap_or("TCP"),
                json::str(port, "hostIP")
            );
            if seen.contains(&key) {
                e.duplicate_str(&format!("{path}[{ci}].ports[{pi}].hostPort"), &key);
            } else {
                seen.push(key);
            }
        }
    }
}

fn validate_containers(containers: &[Value], volumes: &[String], path: &str, e: &mut Errs) {
    if containers.is_empty() {
        e.required(path, "");
        return;
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let p = format!("{path}[{i}]");
        validate_container_common(c, volumes, &p, e);
        let name = json::str(c, "name");
        if names.contains(&name) {
            e.duplicate_str(&format!("{p}.name"), name);
        } else {
            names.push(name);
        }
        if let Some(lifecycle) = c.get("lifecycle").filter(|l| !l.is_null()) {
            validate_lifecycle(lifecycle, &format!("{p}.lifecycle"), e);
        }
        validate_probe(
            c.get("livenessProbe"),
            Probe::Liveness,
            &format!("{p}.livenessProbe"),
            e,
        );
        validate_probe(
            c.get("readinessProbe"),
            Probe::Readiness,
            &format!("{p}.readinessProbe"),
            e,
        );
        validate_probe(
            c.get("startupProbe"),
            Probe::Startup,
            &format!("{p}.startupProbe"),
            e,
        );
        if json::present(c, "restartPolicy") {
            e.forbidden(
                &format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            );
        }
    }
    check_host_port_conflicts(containers.iter().enumerate(), path, e);
}

fn validate_init_containers(
    init: &[Value],
    regular: &[Value],
    volumes: &[String],
    path: &str,
    e: &mut Errs,
) {
    let mut names: Vec<&str> = regular.iter().map(|c| json::str(c, "name")).collect();
    for (i, c) in init.iter().enumerate() {
        let p = format!("{path}[{i}]");
        validate_container_common(c, volumes, &p, e);
        let mut restart_always = false;
        if let Some(rp) = json::opt_str(c, "restartPolicy") {
            if rp == "Always" {
                restart_always = true;
            } else {
                e.not_supported(&format!("{p}.restartPolicy"), rp, &["Always"]);
            }
        }
        let name = json::str(c, "name");
        if names.contains(&name) {
            e.duplicate_str(&format!("{p}.name"), name);
        } else if !name.is_empty() {
            names.push(name);
        }
        check_host_port_conflicts(std::iter::once((i, c)), path, e);
        if restart_always {
            if let Some(lifecycle) = c.get("lifecycle").filter(|l| !l.is_null()) {
                validate_lifecycle(lifecycle, &format!("{p}.lifecycle"), e);
            }
            validate_probe(
                c.get("livenessProbe"),
                Probe::Liveness,
                &format!("{p}.livenessProbe"),
                e,
            );
            validate_probe(
                c.get("readinessProbe"),
                Probe::Readiness,
                &format!("{p}.readinessProbe"),
                e,
            );
            validate_probe(
                c.get("startupProbe"),
                Probe::Startup,
                &format!("{p}.startupProbe"),
                e,
            );
        } else {
            for key in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if json::present(c, key) {
                    e.forbidden(
                        &format!("{p}.{key}"),
                        "may not be set for init containers without restartPolicy=Always",
                    );
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Probe {
    Liveness,
    Readiness,
    Startup,
}

fn validate_probe(probe: Option<&Value>, kind: Probe, path: &str, e: &mut Errs) {
    let Some(probe) = probe.filter(|p| !p.is_null()) else {
        return;
    };
    validate_handler(probe, &["exec", "httpGet", "tcpSocket", "grpc"], path, e);
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(n) = json::int(probe, key) {
            if n < 0 {
                e.invalid_int(
                    &format!("{path}.{key}"),
                    n,
                    "must be greater than or equal to 0",
                );
            }
        }
    }
    if let Some(t) = json::int(probe, "terminationGracePeriodSeconds") {
        if t <= 0 {
            e.invalid_int(
                &format!("{path}.terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            );
        }
        if kind == Probe::Readiness {
            e.invalid_int(
                &format!("{path}.terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            );
        }
    }
    if kind != Probe::Readiness {
        if let Some(s) = json::int(probe, "successThreshold") {
            if s != 1 {
                e.invalid_int(&format!("{path}.successThreshold"), s, "must be 1");
            }
        }
    }
}

fn validate_lifecycle(lifecycle: &Value, path: &str, e: &mut Errs) {
    for hook in ["postStart", "preStop"] {
        if let Some(h) = lifecycle.get(hook).filter(|h| !h.is_null()) {
            validate_handler(
                h,
                &["exec", "httpGet", "tcpSocket", "sleep"],
                &format!("{path}.{hook}"),
                e,
            );
        }
    }
}

/// Exactly one of `kinds` must be set, and be well formed.
fn validate_handler(h: &Value, kinds: &[&str], path: &str, e: &mut Errs) {
    let mut n = 0;
    for kind in kinds {
        let Some(action) = h.get(kind).filter(|a| !a.is_null()) else {
            continue;
        };
        let p = format!("{path}.{kind}");
        if n > 0 {
            e.forbidden(&p, "may not specify more than 1 handler type");
            continue;
        }
        n += 1;
        match *kind {
            "exec" if json::arr(action, "command").is_empty() => {
                e.required(&format!("{p}.command"), "")
            }
            "httpGet" => {
                if let Some(hp) = json::opt_str(action, "path") {
                    if hp.is_empty() {
                        e.required(&format!("{p}.path"), "");
                    }
                }
                validate_port_num_or_name(
                    action.get("port").unwrap_or(&Value::Null),
                    &format!("{p}.port"),
                    e,
                );
                if let Some(s) = json::opt_str(action, "scheme") {
                    if !["HTTP", "HTTPS"].contains(&s) {
                        e.not_supported(&format!("{p}.scheme"), s, &["HTTP", "HTTPS"]);
                    }
                }
            }
            "tcpSocket" | "grpc" => {
                validate_port_num_or_name(
                    action.get("port").unwrap_or(&Value::Null),
                    &format!("{p}.port"),
                    e,
                );
            }
            _ => {}
        }
    }
    if n == 0 {
        e.required(path, "must specify a handler type");
    }
}

fn validate_dns_config(spec: &Value, path: &str, e: &mut Errs) {
    let p = format!("{path}.dnsConfig");
    let config = spec.get("dnsConfig").filter(|c| !c.is_null());
    if json::str(spec, "dnsPolicy") == "None" {
        let Some(config) = config else {
            e.required(&p, "must provide `dnsConfig` when `dnsPolicy` is None");
            return;
        };
        if json::arr(config, "nameservers").is_empty() {
            e.required(
                &format!("{p}.nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            );
            return;
        }
    }
    let Some(config) = config else {
        return;
    };
    let nameservers = json::string_list(config, "nameservers");
    if nameservers.len() > 3 {
        e.invalid_raw(
            &format!("{p}.nameservers"),
            go_string_slice(Some(&nameservers)),
            "must not have more than 3 nameservers",
        );
    }
    for (i, ns) in nameservers.iter().enumerate() {
        e.each_invalid(&format!("{p}.nameservers[{i}]"), ns, is_valid_ip(ns));
    }
    let searches = json::string_list(config, "searches");
    if searches.len() > 32 {
        e.invalid_raw(
            &format!("{p}.searches"),
            go_string_slice(Some(&searches)),
            "must not have more than 32 search paths",
        );
    }
    if searches.join(" ").len() > 2048 {
        e.invalid_raw(
            &format!("{p}.searches"),
            go_string_slice(Some(&searches)),
            "must not have more than 2048 characters (including spaces) in the search list",
        );
    }
    for (i, s) in searches.iter().enumerate() {
        if s != "." {
            let s = s.strip_suffix('.').unwrap_or(s);
            e.each_invalid(
                &format!("{p}.searches[{i}]"),
                s,
                is_dns1123_subdomain_with_underscore(s),
            );
        }
    }
    for (i, o) in json::arr(config, "options").iter().enumerate() {
        if json::str(o, "name").is_empty() {
            e.required(&format!("{p}.options[{i}]"), "must not be empty");
        }
    }
}

fn validate_tolerations(tolerations: &[Value], path: &str, e: &mut Errs) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let key = json::str(t, "key");
        let op = json::str(t, "operator");
        let effect = json::str(t, "effect");
        let value = json::str(t, "value");
        if !key.is_empty() {
            e.each_invalid(&format!("{p}.key"), key, is_qualified_name(key));
        }
        if key.is_empty() && op != "Exists" {
            e.invalid_str(
                &format!("{p}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        if json::present(t, "tolerationSeconds") && effect != "NoExecute" {
            e.invalid_str(
                &format!("{p}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        match op {
            "Equal" | "" => {
                let errs = is_valid_label_value(value);
                if !errs.is_empty() {
                    e.invalid_str(&format!("{p}.operator"), value, &errs.join(";"));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    e.invalid_str(
                        &format!("{p}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            other => e.not_supported(&format!("{p}.operator"), other, &["Equal", "Exists"]),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            e.not_supported(&format!("{p}.effect"), effect, TAINT_EFFECTS);
        }
    }
}

/// What only a Pod being created is checked for.
pub(crate) fn validate_pod_create(obj: &Value, e: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    if !json::arr(spec, "ephemeralContainers").is_empty() {
        e.forbidden("spec.ephemeralContainers", "cannot be set on create");
    }
    if !json::str(spec, "nodeName").is_empty() && !json::arr(spec, "schedulingGates").is_empty() {
        e.forbidden(
            "spec.nodeName",
            "cannot be set until all schedulingGates have been cleared",
        );
    }
}

/// A pod template at `path` (`spec.template`): its labels and annotations, then its spec.
pub(crate) fn validate_pod_template(template: &Value, path: &str, e: &mut Errs) {
    let null = Value::Null;
    meta::validate_template_meta(template.get("metadata").unwrap_or(&null), path, e);
    let spec = template.get("spec").unwrap_or(&null);
    validate_pod_spec(spec, &format!("{path}.spec"), false, e);
    if !json::arr(spec, "ephemeralContainers").is_empty() {
        e.forbidden(
            &format!("{path}.spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        );
    }
}

/// What a Pod update may change: container images, a shorter activeDeadlineSeconds, added
/// tolerations, removed scheduling gates. Anything else is Forbidden with Kubernetes' message
/// followed by the changed paths.
pub(crate) fn validate_pod_update(obj: &Value, old: &Value, e: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    for key in ["containers", "initContainers"] {
        if json::arr(spec, key).len() != json::arr(old_spec, key).len() {
            e.forbidden(
                &format!("spec.{key}"),
                "pod updates may not add or remove containers",
            );
            return;
        }
    }
    let new_ads = json::int(spec, "activeDeadlineSeconds");
    let old_ads = json::int(old_spec, "activeDeadlineSeconds");
    match (new_ads, old_ads) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            e.invalid_int(
                "spec.activeDeadlineSeconds",
                n,
                &inclusive_range_error(0, MAX_INT32),
            );
            return;
        }
        (Some(n), Some(o)) if o < n => {
            e.invalid_int(
                "spec.activeDeadlineSeconds",
                n,
                "must be less than or equal to previous value",
            );
            return;
        }
        (None, Some(_)) => {
            e.invalid_raw(
                "spec.activeDeadlineSeconds",
                "null".to_string(),
                "must not update from a positive integer to nil value",
            );
        }
        _ => {}
    }
    let new_tol = json::arr(spec, "tolerations");
    for old_t in json::arr(old_spec, "tolerations") {
        let found = new_tol.iter().any(|t| {
            without_key(t, "tolerationSeconds") == without_key(old_t, "tolerationSeconds")
        });
        if !found {
            e.forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            );
            break;
        }
    }
    let old_gates: Vec<&str> = json::arr(old_spec, "schedulingGates")
        .iter()
        .map(|g| json::str(g, "name"))
        .collect();
    for (i, g) in json::arr(spec, "schedulingGates").iter().enumerate() {
        let name = json::str(g, "name");
        if !old_gates.contains(&name) {
            e.forbidden(
                &format!("spec.schedulingGates[{i}].name"),
                &format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            );
        }
    }

    let mut munged = normalize(spec);
    let old_norm = normalize(old_spec);
    if let Value::Object(m) = &mut munged {
        for key in ["containers", "initContainers"] {
            if let (Some(Value::Array(new_cs)), Some(Value::Array(old_cs))) =
                (m.get_mut(key), old_norm.get(key))
            {
                for (c, o) in new_cs.iter_mut().zip(old_cs.iter()) {
                    if let Value::Object(c) = c {
                        match o.get("image") {
                            Some(img) => c.insert("image".into(), img.clone()),
                            None => c.remove("image"),
                        };
                    }
                }
            }
        }
        for key in [
            "activeDeadlineSeconds",
            "schedulingGates",
            "tolerations",
            "ephemeralContainers",
        ] {
            match old_norm.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        let old_grace = json::int(&old_norm, "terminationGracePeriodSeconds");
        let new_grace = m
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
            if let Some(g) = old_norm.get("terminationGracePeriodSeconds") {
                m.insert("terminationGracePeriodSeconds".into(), g.clone());
            }
        }
    }
    if munged != old_norm {
        let mut diff = Vec::new();
        spec_diff(&old_norm, &munged, "spec", &mut diff);
        e.forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {}\n{}",
                UPDATABLE_POD_SPEC_FIELDS.join(","),
                diff.join("\n")
            ),
        );
    }
}

fn without_key(v: &Value, key: &str) -> Value {
    let mut v = normalize(v);
    if let Value::Object(m) = &mut v {
        m.remove(key);
    }
    v
}

/// The value with nulls, empty lists and empty objects removed, which Kubernetes' semantic
/// equality does not tell from absent fields.
pub(crate) fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let n = normalize(v);
                let empty = match &n {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// Lines `- path: old` / `+ path: new` for every leaf that differs.
fn spec_diff(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, ov) in o {
                match n.get(k) {
                    Some(nv) => spec_diff(ov, nv, &format!("{path}.{k}"), out),
                    None => out.push(format!("- {path}.{k}: {}", go_value(ov))),
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    out.push(format!("+ {path}.{k}: {}", go_value(nv)));
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (ov, nv)) in o.iter().zip(n.iter()).enumerate() {
                spec_diff(ov, nv, &format!("{path}[{i}]"), out);
            }
        }
        (o, n) if o != n => {
            out.push(format!("- {path}: {}", go_value(o)));
            out.push(format!("+ {path}: {}", go_value(n)));
        }
        _ => {}
    }
}

/// An update through `pods/ephemeralcontainers` (what `kubectl debug` sends): existing
/// ephemeral containers stay as they are, new ones have a unique DNS-label name and an
/// image, none of the fields an ephemeral container may not have, and a target that is
/// one of the pod's containers.
pub(crate) fn validate_ephemeral_update(obj: &Value, old: &Value, e: &mut Errs) {
    let (spec, old_spec) = (&obj["spec"], &old["spec"]);
    let new_ecs = json::arr(spec, "ephemeralContainers");
    for o in json::arr(old_spec, "ephemeralContainers") {
        let name = json::str(o, "name");
        match new_ecs.iter().find(|n| json::str(n, "name") == name) {
            None => e.forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be removed"),
            ),
            Some(n) if normalize(n) != normalize(o) => e.forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be changed"),
            ),
            Some(_) => {}
        }
    }
    let regular: Vec<&str> = json::arr(spec, "containers")
        .iter()
        .chain(json::arr(spec, "initContainers"))
        .map(|c| json::str(c, "name"))
        .collect();
    let mut names = regular.clone();
    for (i, c) in new_ecs.iter().enumerate() {
        let p = format!("spec.ephemeralContainers[{i}]");
        let name = json::str(c, "name");
        if name.is_empty() {
            e.required(&format!("{p}.name"), "");
        } else if let Some(m) = is_dns1123_label(name).into_iter().next() {
            e.invalid_str(&format!("{p}.name"), name, &m);
        } else if names.contains(&name) {
            e.duplicate_str(&format!("{p}.name"), name);
        } else {
            names.push(name);
        }
        if json::str(c, "image").is_empty() {
            e.required(&format!("{p}.image"), "");
        }
        for f in [
            "ports",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "resources",
        ] {
            // Absent, null and empty (kubectl sends `resources: {}`) are all "not set".
            let set = c.get(f).map(normalize).is_some_and(|v| match v {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            });
            if set {
                e.forbidden(
                    &format!("{p}.{f}"),
                    "cannot be set for an Ephemeral Container",
                );
            }
        }
        if let Some(t) = json::opt_str(c, "targetContainerName").filter(|t| !t.is_empty()) {
            if !regular.contains(&t) {
                e.not_found_str(&format!("{p}.targetContainerName"), t);
            }
        }
    }
}
