//! Kubernetes' defaulting of the kinds kins serves, applied to the JSON a client sent.
//!
//! [`apply_defaults`] fills what Kubernetes' `SetDefaults_*` functions (and, for Pods, the
//! admission plugins every cluster runs) fill, never overwriting a value the client gave.
//! Server bookkeeping in `metadata` (uid, resourceVersion, timestamps) is left to the server;
//! the one metadata default is the `kubernetes.io/metadata.name` label of Namespaces.
//!
//! [`prepare_update`] carries over what an update may omit (a Service's allocated cluster IPs
//! and node ports) and drops what a Service type change makes meaningless, as Kubernetes'
//! Service registry does before validating.

use serde_json::{json, Map, Value};

use crate::Resource;

/// Fills Kubernetes' defaults into `obj`, an object of `resource`. Idempotent.
pub fn apply_defaults(resource: &Resource, obj: &mut Value) {
    let Value::Object(o) = obj else {
        return;
    };
    drop_empty_metadata(o);
    match (resource.group, resource.kind) {
        ("", "Service") => default_service(spec_mut(o)),
        ("", "Pod") => default_pod(spec_mut(o)),
        ("apps", "Deployment") => default_deployment(spec_mut(o)),
        ("apps", "ReplicaSet") => {
            let spec = spec_mut(o);
            set(spec, "replicas", json!(1));
            default_template(spec);
        }
        ("", "Namespace") => default_namespace(o),
        ("", "Secret") => set(o, "type", json!("Opaque")),
        ("", "Endpoints") => {
            for subset in list_mut(o, "subsets") {
                if let Value::Object(s) = subset {
                    for port in list_mut(s, "ports") {
                        set_in(port, "protocol", json!("TCP"));
                    }
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            for port in list_mut(o, "ports") {
                set_in(port, "name", json!(""));
                set_in(port, "protocol", json!("TCP"));
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => default_network_policy(spec_mut(o)),
        ("networking.k8s.io", "IngressClass") => {
            if let Some(params) = o.get_mut("spec").and_then(|s| s.get_mut("parameters")) {
                set_in(params, "scope", json!("Cluster"));
            }
        }
        _ => {}
    }
}

/// Drops empty `metadata` maps and lists, as Kubernetes' `omitempty` does: an object whose
/// last label or annotation was removed has no `labels` or `annotations` at all.
fn drop_empty_metadata(o: &mut Map<String, Value>) {
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        m.retain(|k, v| {
            let listed = matches!(
                k.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences" | "managedFields"
            );
            let empty = match v {
                Value::Object(x) => x.is_empty(),
                Value::Array(x) => x.is_empty(),
                Value::Null => true,
                _ => false,
            };
            !(listed && empty)
        });
    }
}

/// The object's `spec`, created if missing.
fn spec_mut(o: &mut Map<String, Value>) -> &mut Map<String, Value> {
    child_mut(o, "spec")
}

/// The object under `key`, created (or replaced, if it is not an object) as needed.
fn child_mut<'a>(o: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = o.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
        .expect("the slot was made an object just above")
}

/// The list under `key`, or nothing when there is none.
fn list_mut<'a>(o: &'a mut Map<String, Value>, key: &str) -> std::slice::IterMut<'a, Value> {
    match o.get_mut(key) {
        Some(Value::Array(a)) => a.iter_mut(),
        _ => [].iter_mut(),
    }
}

/// Sets `key` when it is absent or null.
fn set(o: &mut Map<String, Value>, key: &str, v: Value) {
    if o.get(key).is_none_or(Value::is_null) {
        o.insert(key.to_string(), v);
    }
}

/// [`set`] on a value that should be an object.
fn set_in(v: &mut Value, key: &str, default: Value) {
    if let Value::Object(o) = v {
        set(o, key, default);
    }
}

fn str_of<'a>(o: &'a Map<String, Value>, key: &str) -> &'a str {
    o.get(key).and_then(Value::as_str).unwrap_or("")
}

fn default_service(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let ty = str_of(spec, "type").to_string();
    for port in list_mut(spec, "ports") {
        let Value::Object(p) = port else { continue };
        set(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(v) => v.as_i64() == Some(0),
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if str_of(spec, "sessionAffinity") == "ClientIP" {
        let config = child_mut(spec, "sessionAffinityConfig");
        let client_ip = child_mut(config, "clientIP");
        set(client_ip, "timeoutSeconds", json!(10800));
    }
    // As Kubernetes: without affinity there is no affinity configuration (so switching
    // sessionAffinity back to None is a valid update).
    if str_of(spec, "sessionAffinity") == "None" {
        spec.remove("sessionAffinityConfig");
    }
    if ty != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        let cluster_ip = str_of(spec, "clusterIP").to_string();
        let has_ips = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !cluster_ip.is_empty() && !has_ips {
            spec.insert("clusterIPs".into(), json!([cluster_ip]));
        }
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        let no_families = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if no_families {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let etp = str_of(spec, "externalTrafficPolicy");
        if etp.is_empty() {
            spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
        }
    }
}

/// Defaults of a Pod: those of every pod spec, plus what Kubernetes fills only in Pods
/// (service links, the service account, priority, host ports of host-network pods,
/// requests from limits).
fn default_pod(spec: &mut Map<String, Value>) {
    default_pod_spec(spec);
    set(spec, "enableServiceLinks", json!(true));
    let sa = match str_of(spec, "serviceAccountName") {
        "" => match str_of(spec, "serviceAccount") {
            "" => "default".to_string(),
            legacy => legacy.to_string(),
        },
        name => name.to_string(),
    };
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    set(spec, "priority", json!(0));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers"] {
        for c in list_mut(spec, key) {
            let Value::Object(c) = c else { continue };
            if host_network {
                for port in list_mut(c, "ports") {
                    if let Value::Object(p) = port {
                        if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                            if let Some(cp) = p.get("containerPort").cloned() {
                                p.insert("hostPort".into(), cp);
                            }
                        }
                    }
                }
            }
            default_requests_from_limits(c);
        }
    }
}

/// A resource with a limit but no request gets the limit as its request.
fn default_requests_from_limits(c: &mut Map<String, Value>) {
    let Some(Value::Object(resources)) = c.get_mut("resources") else {
        return;
    };
    let Some(Value::Object(limits)) = resources.get("limits").cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let requests = child_mut(resources, "requests");
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// The defaults of any pod spec, in a Pod or in a workload's template.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    if str_of(spec, "serviceAccountName").is_empty() && !str_of(spec, "serviceAccount").is_empty() {
        let legacy = str_of(spec, "serviceAccount").to_string();
        spec.insert("serviceAccountName".into(), json!(legacy));
    }
    if !str_of(spec, "serviceAccountName").is_empty() {
        let name = str_of(spec, "serviceAccountName").to_string();
        spec.insert("serviceAccount".into(), json!(name));
    }
    for key in ["containers", "initContainers"] {
        for c in list_mut(spec, key) {
            if let Value::Object(c) = c {
                default_container(c);
            }
        }
    }
    for vol in list_mut(spec, "volumes") {
        let Value::Object(v) = vol else { continue };
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(Value::Object(s)) = v.get_mut(source) {
                set(s, "defaultMode", json!(420));
            }
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = str_of(c, "image").to_string();
    set(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    // Go always writes the (struct-valued) resources of a container.
    set(c, "resources", json!({}));
    for port in list_mut(c, "ports") {
        set_in(port, "protocol", json!("TCP"));
    }
    for env in list_mut(c, "env") {
        let Value::Object(env) = env else { continue };
        if let Some(Value::Object(from)) = env.get_mut("valueFrom") {
            if let Some(Value::Object(field_ref)) = from.get_mut("fieldRef") {
                set(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            default_http_get(p);
        }
    }
    if let Some(Value::Object(lifecycle)) = c.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(Value::Object(h)) = lifecycle.get_mut(hook) {
                default_http_get(h);
            }
        }
    }
}

fn default_http_get(handler: &mut Map<String, Value>) {
    if let Some(Value::Object(h)) = handler.get_mut("httpGet") {
        if str_of(h, "path").is_empty() {
            h.insert("path".into(), json!("/"));
        }
        set(h, "scheme", json!("HTTP"));
    }
}

/// `Always` for an image tagged `:latest` or not tagged (nor pinned by digest), otherwise
/// `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// `spec.template.spec` of a workload.
fn default_template(spec: &mut Map<String, Value>) {
    let template = child_mut(spec, "template");
    default_pod_spec(child_mut(template, "spec"));
}

fn default_deployment(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    let strategy = child_mut(spec, "strategy");
    set(strategy, "type", json!("RollingUpdate"));
    if str_of(strategy, "type") == "RollingUpdate" {
        let ru = child_mut(strategy, "rollingUpdate");
        set(ru, "maxUnavailable", json!("25%"));
        set(ru, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

fn default_namespace(o: &mut Map<String, Value>) {
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        let labels = child_mut(child_mut(o, "metadata"), "labels");
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    set(spec_mut(o), "finalizers", json!(["kubernetes"]));
    set(child_mut(o, "status"), "phase", json!("Active"));
}

fn default_network_policy(spec: &mut Map<String, Value>) {
    for key in ["ingress", "egress"] {
        for rule in list_mut(spec, key) {
            if let Value::Object(r) = rule {
                for port in list_mut(r, "ports") {
                    set_in(port, "protocol", json!("TCP"));
                }
            }
        }
    }
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let mut types = vec![json!("Ingress")];
        if spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
        {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

/// Prepares an update of `old` into `new` the way Kubernetes' Service registry does before
/// validation; a no-op for other kinds.
///
/// - A type that still has cluster IPs keeps the stored `clusterIP`, `clusterIPs`,
///   `ipFamilies` and `ipFamilyPolicy` when the update omits them.
/// - A type that still has node ports keeps each port's stored `nodePort` (matched by port
///   and protocol) and the `healthCheckNodePort` when the update omits them.
/// - A change to a type that no longer needs them drops the unchanged cluster IPs, IP
///   families, node ports, `allocateLoadBalancerNodePorts`, `externalTrafficPolicy`,
///   `healthCheckNodePort` and, off LoadBalancer, the load balancer status.
pub fn prepare_update(resource: &Resource, new: &mut Value, old: &Value) {
    if !(resource.group.is_empty() && resource.kind == "Service") {
        return;
    }
    let null = Value::Null;
    let old_spec = old.get("spec").unwrap_or(&null).clone();
    let Value::Object(o) = new else {
        return;
    };
    let spec = spec_mut(o);
    let old_ty = old_spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let ty = str_of(spec, "type");
    let ty = if ty.is_empty() {
        "ClusterIP".to_string()
    } else {
        ty.to_string()
    };
    let needs_ip = |t: &str| t != "ExternalName";
    let needs_node_port = |t: &str| t == "NodePort" || t == "LoadBalancer";
    let needs_hc = |t: &str, s: &Map<String, Value>| {
        t == "LoadBalancer" && str_of(s, "externalTrafficPolicy") == "Local"
    };
    let old_map = old_spec.as_object().cloned().unwrap_or_default();

    // Drop what the new type makes meaningless, if the client left it as it was.
    if needs_ip(&old_ty) && !needs_ip(&ty) {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if spec.get(key) == old_map.get(key) {
                spec.remove(key);
            }
        }
    }
    if needs_node_port(&old_ty) && !needs_node_port(&ty) {
        let old_ports: Vec<Option<i64>> = old_map
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| p.get("nodePort").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default();
        let new_ports: Vec<Option<i64>> = spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| p.get("nodePort").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default();
        if old_ports == new_ports {
            for port in list_mut(spec, "ports") {
                if let Value::Object(p) = port {
                    p.remove("nodePort");
                }
            }
        }
    }
    if needs_hc(&old_ty, &old_map)
        && !needs_hc(&ty, spec)
        && spec.get("healthCheckNodePort") == old_map.get("healthCheckNodePort")
    {
        spec.remove("healthCheckNodePort");
    }
    if old_ty == "LoadBalancer" && ty != "LoadBalancer" {
        if spec.get("allocateLoadBalancerNodePorts") == old_map.get("allocateLoadBalancerNodePorts")
        {
            spec.remove("allocateLoadBalancerNodePorts");
        }
        if spec.get("loadBalancerClass") == old_map.get("loadBalancerClass") {
            spec.remove("loadBalancerClass");
        }
    }
    if needs_node_port(&old_ty)
        && !needs_node_port(&ty)
        && spec.get("externalTrafficPolicy") == old_map.get("externalTrafficPolicy")
    {
        spec.remove("externalTrafficPolicy");
    }

    // Keep what was allocated and the client did not repeat.
    if needs_ip(&old_ty) && needs_ip(&ty) {
        let omitted = |s: &Map<String, Value>, k: &str| match s.get(k) {
            None | Some(Value::Null) => true,
            Some(Value::String(x)) => x.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if omitted(spec, key) {
                if let Some(v) = old_map.get(key).filter(|v| !v.is_null()) {
                    spec.insert(key.into(), v.clone());
                }
            }
        }
    }
    if needs_node_port(&old_ty) && needs_node_port(&ty) {
        let old_ports: Vec<(i64, String, i64)> = old_map
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        let np = p.get("nodePort").and_then(Value::as_i64)?;
                        let port = p.get("port").and_then(Value::as_i64)?;
                        let proto = p
                            .get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
                            .to_string();
                        Some((port, proto, np))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut used: Vec<i64> = spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                    .filter(|n| *n != 0)
                    .collect()
            })
            .unwrap_or_default();
        for port in list_mut(spec, "ports") {
            let Value::Object(p) = port else { continue };
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let number = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            if let Some((_, _, np)) = old_ports
                .iter()
                .find(|(o, op, np)| *o == number && *op == proto && !used.contains(np))
            {
                p.insert("nodePort".into(), json!(np));
                used.push(*np);
            }
        }
    }
    if needs_hc(&old_ty, &old_map)
        && needs_hc(&ty, spec)
        && spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
    {
        if let Some(hc) = old_map.get("healthCheckNodePort").filter(|v| !v.is_null()) {
            spec.insert("healthCheckNodePort".into(), hc.clone());
        }
    }
    if ty != "LoadBalancer" {
        if let Some(Value::Object(status)) = o.get_mut("status") {
            status.remove("loadBalancer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: &str) -> &'static Resource {
        crate::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("kind is served")
    }

    /// Defaults `input` as `kind` and compares with `expect`.
    fn check(kind: &str, input: Value, expect: Value) {
        let mut obj = input;
        apply_defaults(res(kind), &mut obj);
        assert_eq!(obj, expect, "defaults of {kind}");
        let mut again = obj.clone();
        apply_defaults(res(kind), &mut again);
        assert_eq!(again, obj, "defaulting {kind} twice changes nothing");
    }

    /// Prepares an update of `old` into `new` and compares with `expect`.
    fn check_update(new: Value, old: Value, expect: Value) {
        let mut obj = new;
        prepare_update(res("Service"), &mut obj, &old);
        assert_eq!(obj, expect);
    }

    #[test]
    fn service() {
        check(
            "Service",
            json!({"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
            json!({"spec": {
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
                "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
            }}),
        );
        check(
            "Service",
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "None", "sessionAffinity": "ClientIP", "ports": [{"port": 1, "targetPort": 0}]}}),
            json!({"spec": {
                "type": "LoadBalancer", "clusterIP": "None", "sessionAffinity": "ClientIP",
                "ports": [{"port": 1, "targetPort": 1, "protocol": "TCP"}],
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "internalTrafficPolicy": "Cluster", "clusterIPs": ["None"], "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"], "allocateLoadBalancerNodePorts": true, "externalTrafficPolicy": "Cluster",
            }}),
        );
        check(
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
            json!({"spec": {"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"}}),
        );
        check(
            "Service",
            json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "PreferDualStack"}}),
            json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "ipFamilies": ["IPv6"],
                "ipFamilyPolicy": "PreferDualStack", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}}),
        );
    }

    #[test]
    fn empty_metadata_maps_are_dropped() {
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "labels": {}, "annotations": {}, "finalizers": [],
                "ownerReferences": [], "uid": ""}}),
            json!({"metadata": {"name": "c", "uid": ""}}),
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "labels": {"a": "b"}}}),
            json!({"metadata": {"name": "c", "labels": {"a": "b"}}}),
        );
    }

    fn defaulted_container(image: &str, policy: &str) -> Value {
        json!({"name": "c", "image": image, "imagePullPolicy": policy,
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "resources": {}})
    }

    #[test]
    fn pod() {
        check(
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
            json!({"metadata": {"name": "p"}, "spec": {
                "containers": [defaulted_container("nginx", "Always")],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                "terminationGracePeriodSeconds": 30, "securityContext": {}, "enableServiceLinks": true,
                "serviceAccountName": "default", "serviceAccount": "default", "priority": 0,
            }}),
        );
        check(
            "Pod",
            json!({"spec": {"hostNetwork": true, "serviceAccount": "legacy", "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 8080}],
                    "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}},
                    "livenessProbe": {"httpGet": {"port": 80}},
                    "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
                "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}}),
            json!({"spec": {"hostNetwork": true, "serviceAccount": "legacy", "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "nginx:1.27",
                    "ports": [{"containerPort": 8080, "protocol": "TCP", "hostPort": 8080}],
                    "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}},
                    "livenessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                        "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                    "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}}],
                    "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"}],
                "volumes": [{"name": "s", "secret": {"secretName": "x", "defaultMode": 420}}],
                "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                "terminationGracePeriodSeconds": 30, "securityContext": {},
                "serviceAccountName": "legacy", "enableServiceLinks": true, "priority": 0,
            }}),
        );
    }

    #[test]
    fn pull_policy() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn workloads() {
        let template_spec = json!({
            "containers": [defaulted_container("app:latest", "Always")],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "terminationGracePeriodSeconds": 30, "securityContext": {},
        });
        check(
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:latest"}]}}}}),
            json!({"spec": {"template": {"spec": template_spec.clone()}, "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}}),
        );
        check(
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "template": {"spec": {"containers": [{"name": "c", "image": "app:latest"}]}}}}),
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "template": {"spec": template_spec.clone()},
                "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}}),
        );
        check(
            "ReplicaSet",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:latest"}]}}}}),
            json!({"spec": {"template": {"spec": template_spec}, "replicas": 1}}),
        );
    }

    #[test]
    fn others() {
        check(
            "Namespace",
            json!({"metadata": {"name": "dev"}}),
            json!({"metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev"}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        check(
            "Secret",
            json!({"data": {}}),
            json!({"data": {}, "type": "Opaque"}),
        );
        check(
            "Secret",
            json!({"type": "kubernetes.io/tls"}),
            json!({"type": "kubernetes.io/tls"}),
        );
        check(
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}),
            json!({"subsets": [{"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}]}),
        );
        check(
            "EndpointSlice",
            json!({"addressType": "IPv4", "ports": [{"port": 80}]}),
            json!({"addressType": "IPv4", "ports": [{"port": 80, "name": "", "protocol": "TCP"}]}),
        );
        check(
            "NetworkPolicy",
            json!({"spec": {"egress": [{"ports": [{"port": 53}]}]}}),
            json!({"spec": {"egress": [{"ports": [{"port": 53, "protocol": "TCP"}]}], "policyTypes": ["Ingress", "Egress"]}}),
        );
        check(
            "ConfigMap",
            json!({"data": {"a": "b"}}),
            json!({"data": {"a": "b"}}),
        );
        check(
            "Node",
            json!({"metadata": {"name": "n"}}),
            json!({"metadata": {"name": "n"}}),
        );
        check("IngressClass", json!({"spec": {}}), json!({"spec": {}}));
        check(
            "IngressClass",
            json!({"spec": {"parameters": {"kind": "Params", "name": "p"}}}),
            json!({"spec": {"parameters": {"kind": "Params", "name": "p", "scope": "Cluster"}}}),
        );
        check(
            "IngressClass",
            json!({"spec": {"parameters": {"kind": "Params", "name": "p", "scope": "Namespace"}}}),
            json!({"spec": {"parameters": {"kind": "Params", "name": "p", "scope": "Namespace"}}}),
        );
    }

    #[test]
    fn service_updates() {
        // Omitted allocations are kept.
        check_update(
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}}),
            json!({"spec": {"type": "NodePort", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}}),
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}],
                "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}}),
        );
        // To ExternalName: unchanged cluster IPs and node ports go.
        check_update(
            json!({"spec": {"type": "ExternalName", "externalName": "x.example", "clusterIP": "10.0.0.5",
                "clusterIPs": ["10.0.0.5"], "externalTrafficPolicy": "Cluster",
                "ports": [{"port": 80, "nodePort": 30080}]}, "status": {"loadBalancer": {}}}),
            json!({"spec": {"type": "NodePort", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
                "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "nodePort": 30080}]}}),
            json!({"spec": {"type": "ExternalName", "externalName": "x.example", "ports": [{"port": 80}]}, "status": {}}),
        );
        // LoadBalancer to ClusterIP: LB-only fields go, the cluster IP stays.
        check_update(
            json!({"spec": {"type": "ClusterIP", "allocateLoadBalancerNodePorts": true, "clusterIP": "10.0.0.7",
                "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30001}]}}),
            json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": true, "clusterIP": "10.0.0.7",
                "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30001}]}}),
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.7", "ports": [{"port": 80}]}}),
        );
        // Other kinds are left alone.
        let mut pod = json!({"spec": {}});
        prepare_update(res("Pod"), &mut pod, &json!({"spec": {"nodeName": "n"}}));
        assert_eq!(pod, json!({"spec": {}}));
    }
}
