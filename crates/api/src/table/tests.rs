use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::*;
use crate::resources::RESOURCES;

/// The fixed "now" all ages are measured against.
fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}

/// The RFC 3339 timestamp `seconds` before [`now`].
fn ago(seconds: i64) -> String {
    (now() - Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Metadata named `name`, created five seconds ago.
fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": ago(5)})
}

fn resource(plural: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .expect("the resource is served")
}

/// The one place tests print a row: the cells of `obj` as a `plural` must be `expected`.
fn check(plural: &str, obj: Value, expected: Value) {
    let resource = resource(plural);
    let cells = Value::Array(row_cells(resource, &obj, now()));
    assert_eq!(cells, expected, "{plural} row of {obj}");
    assert_eq!(
        column_definitions(resource).len(),
        expected.as_array().map_or(0, Vec::len),
        "{plural}: one cell per column"
    );
}

#[test]
fn human_durations() {
    let cases = [
        (Duration::seconds(-3), "<invalid>"),
        (Duration::milliseconds(-1500), "0s"),
        (Duration::seconds(-1), "0s"),
        (Duration::zero(), "0s"),
        (Duration::seconds(5), "5s"),
        (Duration::seconds(119), "119s"),
        (Duration::seconds(120), "2m"),
        (Duration::seconds(182), "3m2s"),
        (Duration::seconds(599), "9m59s"),
        (Duration::minutes(10), "10m"),
        (Duration::minutes(179), "179m"),
        (Duration::minutes(180), "3h"),
        (Duration::minutes(5 * 60 + 3), "5h3m"),
        (Duration::minutes(7 * 60 + 59), "7h59m"),
        (Duration::hours(8), "8h"),
        (Duration::hours(47), "47h"),
        (Duration::hours(48), "2d"),
        (Duration::hours(51), "2d3h"),
        (Duration::hours(191), "7d23h"),
        (Duration::hours(192), "8d"),
        (Duration::days(729), "729d"),
        (Duration::days(730), "2y"),
        (Duration::days(750), "2y20d"),
        (Duration::days(8 * 365), "8y"),
        (Duration::days(3000), "8y"),
    ];
    for (d, expected) in cases {
        assert_eq!(human_duration(d), expected, "{d:?}");
    }
}

#[test]
fn columns_of_every_kind() {
    // (plural, normal columns, wide columns) as Kubernetes names them; kubectl upper-cases.
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("namespaces", &["Name", "Status", "Age"], &[]),
        (
            "nodes",
            &["Name", "Status", "Roles", "Age", "Version"],
            &[
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime",
            ],
        ),
        (
            "pods",
            &["Name", "Ready", "Status", "Restarts", "Age"],
            &["IP", "Node", "Nominated Node", "Readiness Gates"],
        ),
        (
            "services",
            &[
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
            ],
            &["Selector"],
        ),
        ("endpoints", &["Name", "Endpoints", "Age"], &[]),
        ("configmaps", &["Name", "Data", "Age"], &[]),
        ("secrets", &["Name", "Type", "Data", "Age"], &[]),
        ("serviceaccounts", &["Name", "Secrets", "Age"], &[]),
        (
            "events",
            &["Last Seen", "Type", "Reason", "Object", "Message"],
            &["Subobject", "Source", "First Seen", "Count", "Name"],
        ),
        (
            "endpointslices",
            &["Name", "AddressType", "Ports", "Endpoints", "Age"],
            &[],
        ),
        (
            "deployments",
            &["Name", "Ready", "Up-to-date", "Available", "Age"],
            &["Containers", "Images", "Selector"],
        ),
        (
            "replicasets",
            &["Name", "Desired", "Current", "Ready", "Age"],
            &["Containers", "Images", "Selector"],
        ),
        (
            "ingresses",
            &["Name", "Class", "Hosts", "Address", "Ports", "Age"],
            &[],
        ),
        (
            "ingressclasses",
            &["Name", "Controller", "Parameters", "Age"],
            &[],
        ),
        ("networkpolicies", &["Name", "Pod-Selector", "Age"], &[]),
        ("leases", &["Name", "Holder", "Age"], &[]),
    ];
    assert_eq!(cases.len(), RESOURCES.len(), "every served kind has a case");
    for (plural, normal, wide) in cases {
        let columns = column_definitions(resource(plural));
        let names = |priority: i64| -> Vec<&str> {
            columns
                .iter()
                .filter(|c| c["priority"] == priority)
                .map(|c| c["name"].as_str().unwrap_or(""))
                .collect()
        };
        assert_eq!(&names(0), normal, "{plural} columns");
        assert_eq!(&names(1), wide, "{plural} wide columns");
        for column in &columns {
            let keys: Vec<&str> = column
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                keys,
                ["name", "type", "format", "description", "priority"],
                "{plural}"
            );
            let expected_format = if column["name"] == "Name" { "name" } else { "" };
            assert_eq!(column["format"], expected_format, "{plural} {column}");
            assert_ne!(column["description"], "", "{plural} {column}");
        }
        // An empty object still yields one cell per column.
        assert_eq!(
            row_cells(resource(plural), &json!({}), now()).len(),
            columns.len(),
            "{plural}"
        );
    }
    let replicas = &column_definitions(resource("replicasets"))[1];
    assert_eq!(replicas["type"], "integer");
    let restarts = &column_definitions(resource("pods"))[3];
    assert_eq!(restarts["type"], "string");
}

#[test]
fn namespaces() {
    check(
        "namespaces",
        json!({"metadata": {"name": "default", "creationTimestamp": ago(5)}, "status": {"phase": "Active"}}),
        json!(["default", "Active", "5s"]),
    );
    check(
        "namespaces",
        json!({"metadata": {"name": "old"}, "status": {"phase": "Terminating"}}),
        json!(["old", "Terminating", "<unknown>"]),
    );
}

#[test]
fn nodes() {
    check(
        "nodes",
        json!({
            "metadata": {
                "name": "n1",
                "creationTimestamp": ago(2 * 86400 + 3 * 3600),
                "labels": {
                    "node-role.kubernetes.io/worker": "",
                    "node-role.kubernetes.io/control-plane": "",
                    "node-role.kubernetes.io/": "",
                    "kubernetes.io/role": "master",
                    "kubernetes.io/hostname": "n1",
                },
            },
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ],
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "10.0.0.1"},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.34.0",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0-18-amd64",
                    "containerRuntimeVersion": "kins://0.1.0",
                },
            },
        }),
        json!([
            "n1",
            "Ready",
            "control-plane,master,worker",
            "2d3h",
            "v1.34.0",
            "10.0.0.1",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-18-amd64",
            "kins://0.1.0",
        ]),
    );
    check(
        "nodes",
        json!({
            "metadata": meta("n2"),
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "Unknown"}],
                "addresses": [{"type": "ExternalIP", "address": "203.0.113.2"}],
                "nodeInfo": {"kubeletVersion": "v1.34.0"},
            },
        }),
        json!([
            "n2",
            "NotReady,SchedulingDisabled",
            "<none>",
            "5s",
            "v1.34.0",
            "<none>",
            "203.0.113.2",
            "<unknown>",
            "<unknown>",
            "<unknown>",
        ]),
    );
    check(
        "nodes",
        json!({"metadata": meta("n3")}),
        json!([
            "n3",
            "Unknown",
            "<none>",
            "5s",
            "",
            "<none>",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>",
        ]),
    );
}

/// A pod with one container per name in `containers` and the given status.
fn pod(containers: &[&str], status: Value) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|name| json!({"name": name, "image": "busybox"}))
        .collect();
    json!({
        "metadata": meta("p"),
        "spec": {"containers": containers},
        "status": status,
    })
}

/// A container status with the given state.
fn container(name: &str, ready: bool, restarts: i64, state: Value) -> Value {
    json!({"name": name, "ready": ready, "restartCount": restarts, "state": state})
}

/// The wide pod cells of an unscheduled pod without an IP.
const NO_PLACEMENT: [&str; 4] = ["<none>", "<none>", "<none>", "<none>"];

/// The pod row: ready, status and restarts, the age of five seconds and `NO_PLACEMENT`.
fn pod_row(ready: &str, status: &str, restarts: &str) -> Value {
    let mut row = vec![json!("p"), json!(ready), json!(status), json!(restarts)];
    row.push(json!("5s"));
    row.extend(NO_PLACEMENT.iter().map(|c| json!(c)));
    Value::Array(row)
}

#[test]
fn pod_running_with_placement() {
    check(
        "pods",
        json!({
            "metadata": {"name": "web", "creationTimestamp": ago(182)},
            "spec": {"containers": [{"name": "web"}], "nodeName": "n1"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}],
                "containerStatuses": [
                    container("web", true, 0, json!({"running": {"startedAt": ago(180)}})),
                ],
            },
        }),
        json!([
            "web",
            "1/1",
            "Running",
            "0",
            "3m2s",
            "10.244.0.5",
            "n1",
            "<none>",
            "<none>"
        ]),
    );
}

#[test]
fn pod_statuses() {
    let waiting = |reason: &str| json!({"waiting": {"reason": reason}});
    let running = json!({"running": {"startedAt": ago(60)}});
    let cases = [
        // Not scheduled yet: the phase.
        (
            pod(&["a", "b"], json!({"phase": "Pending"})),
            pod_row("0/2", "Pending", "0"),
        ),
        // Image being pulled: the waiting reason.
        (
            pod(
                &["a"],
                json!({"phase": "Pending", "containerStatuses": [container("a", false, 0, waiting("ContainerCreating"))]}),
            ),
            pod_row("0/1", "ContainerCreating", "0"),
        ),
        // Crashing: the waiting reason and when it last restarted.
        (
            pod(
                &["a"],
                json!({"phase": "Running", "containerStatuses": [{
                    "name": "a", "ready": false, "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(182)}},
                }]}),
            ),
            pod_row("0/1", "CrashLoopBackOff", "5 (3m2s ago)"),
        ),
        // Finished.
        (
            pod(
                &["a"],
                json!({"phase": "Succeeded", "containerStatuses": [container("a", false, 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}}))]}),
            ),
            pod_row("0/1", "Completed", "0"),
        ),
        // Killed without a reason: the exit code, or the signal.
        (
            pod(
                &["a"],
                json!({"phase": "Failed", "containerStatuses": [container("a", false, 0, json!({"terminated": {"exitCode": 137}}))]}),
            ),
            pod_row("0/1", "ExitCode:137", "0"),
        ),
        (
            pod(
                &["a"],
                json!({"phase": "Failed", "containerStatuses": [container("a", false, 0, json!({"terminated": {"exitCode": 137, "signal": 9}}))]}),
            ),
            pod_row("0/1", "Signal:9", "0"),
        ),
        // One container done, one still running: Running if the pod is ready, else NotReady.
        (
            pod(
                &["a", "b"],
                json!({"phase": "Running", "containerStatuses": [
                    container("a", false, 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
                    container("b", true, 0, running.clone()),
                ]}),
            ),
            pod_row("1/2", "NotReady", "0"),
        ),
        (
            pod(
                &["a", "b"],
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
                    container("a", false, 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
                    container("b", true, 0, running.clone()),
                ]}),
            ),
            pod_row("1/2", "Running", "0"),
        ),
        // Scheduling gates hold the pod.
        (
            pod(
                &["a"],
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
            ),
            pod_row("0/1", "SchedulingGated", "0"),
        ),
        // Status reason set by the kubelet (evicted).
        (
            pod(&["a"], json!({"phase": "Failed", "reason": "Evicted"})),
            pod_row("0/1", "Evicted", "0"),
        ),
    ];
    for (obj, expected) in cases {
        check("pods", obj, expected);
    }
}

#[test]
fn pod_deletion() {
    let deleted = |phase: &str, reason: &str| {
        let mut obj = pod(
            &["a"],
            json!({"phase": phase, "reason": reason, "containerStatuses": [
                container("a", true, 0, json!({"running": {"startedAt": ago(60)}})),
            ]}),
        );
        obj["metadata"]["deletionTimestamp"] = json!(ago(1));
        obj
    };
    check(
        "pods",
        deleted("Running", ""),
        pod_row("1/1", "Terminating", "0"),
    );
    check(
        "pods",
        deleted("Running", "NodeLost"),
        pod_row("1/1", "Unknown", "0"),
    );
    // A finished pod being deleted keeps its status.
    let mut done = pod(
        &["a"],
        json!({"phase": "Succeeded", "containerStatuses": [
            container("a", false, 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
        ]}),
    );
    done["metadata"]["deletionTimestamp"] = json!(ago(1));
    check("pods", done, pod_row("0/1", "Completed", "0"));
}

#[test]
fn pod_init_containers() {
    let with_init = |status: Value| {
        let mut obj = pod(&["app"], status);
        obj["spec"]["initContainers"] = json!([{"name": "i1"}, {"name": "i2"}]);
        obj
    };
    let init = |name: &str, restarts: i64, state: Value| container(name, false, restarts, state);
    let cases = [
        (
            with_init(json!({"phase": "Pending", "initContainerStatuses": [
                init("i1", 0, json!({"waiting": {"reason": "PodInitializing"}})),
                init("i2", 0, json!({"waiting": {"reason": "PodInitializing"}})),
            ]})),
            pod_row("0/1", "Init:0/2", "0"),
        ),
        (
            with_init(json!({"phase": "Pending", "initContainerStatuses": [
                init("i1", 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
                init("i2", 0, json!({"running": {}})),
            ]})),
            pod_row("0/1", "Init:1/2", "0"),
        ),
        (
            with_init(json!({"phase": "Pending", "initContainerStatuses": [
                init("i1", 3, json!({"waiting": {"reason": "CrashLoopBackOff"}})),
            ]})),
            pod_row("0/1", "Init:CrashLoopBackOff", "3"),
        ),
        (
            with_init(json!({"phase": "Pending", "initContainerStatuses": [
                init("i1", 0, json!({"terminated": {"exitCode": 1, "reason": "Error"}})),
            ]})),
            pod_row("0/1", "Init:Error", "0"),
        ),
        (
            with_init(json!({"phase": "Pending", "initContainerStatuses": [
                init("i1", 0, json!({"terminated": {"exitCode": 2}})),
            ]})),
            pod_row("0/1", "Init:ExitCode:2", "0"),
        ),
        (
            with_init(json!({"phase": "Pending", "initContainerStatuses": [
                init("i1", 0, json!({"terminated": {"exitCode": 143, "signal": 15}})),
            ]})),
            pod_row("0/1", "Init:Signal:15", "0"),
        ),
    ];
    for (obj, expected) in cases {
        check("pods", obj, expected);
    }
}

#[test]
fn pod_sidecar_counts_as_container() {
    // A restartable init container (sidecar) is counted with the app containers, and so are
    // its restarts; the most recent restart of any of them is shown.
    let obj = json!({
        "metadata": meta("p"),
        "spec": {
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
            "initContainerStatuses": [{
                "name": "proxy", "ready": true, "started": true, "restartCount": 2,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(600)}},
            }],
            "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}},
            }],
        },
    });
    check("pods", obj, pod_row("2/2", "Running", "3 (30s ago)"));
}

#[test]
fn pod_wide_cells() {
    check(
        "pods",
        json!({
            "metadata": meta("p"),
            "spec": {
                "containers": [{"name": "a"}],
                "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}],
            },
            "status": {
                "phase": "Pending",
                "podIP": "10.244.1.7",
                "nominatedNodeName": "n2",
                "conditions": [
                    {"type": "example.com/lb", "status": "True"},
                    {"type": "example.com/dns", "status": "False"},
                ],
            },
        }),
        json!([
            "p",
            "0/1",
            "Pending",
            "0",
            "5s",
            "10.244.1.7",
            "<none>",
            "n2",
            "1/2"
        ]),
    );
}

/// A service with the given spec (and status).
fn service(spec: Value, status: Value) -> Value {
    json!({"metadata": meta("svc"), "spec": spec, "status": status})
}

#[test]
fn services() {
    let cases = [
        (
            service(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    "selector": {"k8s-app": "kube-dns", "app": "dns"}}),
                json!({}),
            ),
            json!([
                "svc",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "53/UDP,53/TCP",
                "5s",
                "app=dns,k8s-app=kube-dns"
            ]),
        ),
        (
            service(
                json!({"type": "NodePort", "clusterIPs": ["10.96.1.1"], "externalIPs": ["1.2.3.4", "5.6.7.8"],
                    "ports": [{"port": 80, "nodePort": 30080}]}),
                json!({}),
            ),
            json!([
                "svc",
                "NodePort",
                "10.96.1.1",
                "1.2.3.4,5.6.7.8",
                "80:30080/TCP",
                "5s",
                "<none>"
            ]),
        ),
        (
            service(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.96.1.2"],
                    "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
                json!({"loadBalancer": {}}),
            ),
            json!([
                "svc",
                "LoadBalancer",
                "10.96.1.2",
                "<pending>",
                "443:31443/TCP",
                "5s",
                "<none>"
            ]),
        ),
        (
            service(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.96.1.3"], "externalIPs": ["1.2.3.4"],
                    "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}]}),
                json!({"loadBalancer": {"ingress": [
                    {"hostname": "lb.example.com"}, {"ip": "203.0.113.9"}, {"ip": "203.0.113.9"},
                ]}}),
            ),
            json!([
                "svc",
                "LoadBalancer",
                "10.96.1.3",
                "203.0.113.9,lb.example.com,1.2.3.4",
                "80:30001/TCP",
                "5s",
                "<none>"
            ]),
        ),
        (
            service(
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
                json!({}),
            ),
            json!([
                "svc",
                "ExternalName",
                "<none>",
                "db.example.com",
                "<none>",
                "5s",
                "<none>"
            ]),
        ),
        // Headless, and a type left to its default.
        (
            service(
                json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432, "protocol": "TCP"}],
                    "selector": {"app": "db"}}),
                json!({}),
            ),
            json!([
                "svc",
                "ClusterIP",
                "None",
                "<none>",
                "5432/TCP",
                "5s",
                "app=db"
            ]),
        ),
    ];
    for (obj, expected) in cases {
        check("services", obj, expected);
    }
}

#[test]
fn endpoints() {
    let endpoints = |subsets: Value| json!({"metadata": meta("ep"), "subsets": subsets});
    let addresses = |ips: &[&str]| -> Value { ips.iter().map(|ip| json!({"ip": ip})).collect() };
    let cases = [
        (json!({"metadata": meta("ep")}), "<none>"),
        (
            endpoints(
                json!([{"addresses": addresses(&["10.0.0.1", "10.0.0.2"]), "ports": [{"port": 80}]}]),
            ),
            "10.0.0.1:80,10.0.0.2:80",
        ),
        (
            endpoints(json!([{
                "addresses": addresses(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
                "notReadyAddresses": addresses(&["10.0.0.9"]),
                "ports": [{"name": "http", "port": 80}],
            }])),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more...",
        ),
        (
            endpoints(json!([{
                "addresses": addresses(&["10.0.0.1", "10.0.0.2"]),
                "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
            }])),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
        ),
        // Headless services may have no ports.
        (
            endpoints(json!([{"addresses": addresses(&["10.0.0.1", "10.0.0.2"])}])),
            "10.0.0.1,10.0.0.2",
        ),
        (
            endpoints(json!([{"addresses": addresses(&["fd00::1"]), "ports": [{"port": 8080}]}])),
            "[fd00::1]:8080",
        ),
    ];
    for (obj, expected) in cases {
        check("endpoints", obj, json!(["ep", expected, "5s"]));
    }
}

#[test]
fn config_maps_secrets_and_service_accounts() {
    check(
        "configmaps",
        json!({"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
        json!(["cm", 3, "5s"]),
    );
    check(
        "configmaps",
        json!({"metadata": meta("empty")}),
        json!(["empty", 0, "5s"]),
    );
    check(
        "secrets",
        json!({"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        json!(["tls", "kubernetes.io/tls", 2, "5s"]),
    );
    check(
        "secrets",
        json!({"metadata": meta("s")}),
        json!(["s", "Opaque", 0, "5s"]),
    );
    check(
        "serviceaccounts",
        json!({"metadata": meta("default")}),
        json!(["default", 0, "5s"]),
    );
    check(
        "serviceaccounts",
        json!({"metadata": meta("builder"), "secrets": [{"name": "builder-token"}]}),
        json!(["builder", 1, "5s"]),
    );
}

#[test]
fn events() {
    check(
        "events",
        json!({
            "metadata": meta("web.17a"),
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(5 * 3600),
            "lastTimestamp": ago(65),
            "count": 3,
            "type": "Warning",
        }),
        json!([
            "65s",
            "Warning",
            "BackOff",
            "pod/web",
            "spec.containers{web}",
            "kubelet, n1",
            "Back-off restarting failed container",
            "5h",
            3,
            "web.17a"
        ]),
    );
    // Written through the events.k8s.io API: eventTime, reporting controller, no count.
    check(
        "events",
        json!({
            "metadata": meta("n1.17b"),
            "involvedObject": {"kind": "Node"},
            "reason": "Scheduled",
            "message": "ok",
            "eventTime": "2024-05-01T11:59:50.000000Z",
            "reportingComponent": "default-scheduler",
            "reportingInstance": "",
            "type": "Normal",
        }),
        json!([
            "10s",
            "Normal",
            "Scheduled",
            "node",
            "",
            "default-scheduler",
            "ok",
            "10s",
            1,
            "n1.17b"
        ]),
    );
    // A series: its last observation and count.
    check(
        "events",
        json!({
            "metadata": meta("e"),
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "reason": "ScalingReplicaSet",
            "message": "scaled",
            "eventTime": ago(600),
            "series": {"count": 7, "lastObservedTime": ago(20)},
            "reportingComponent": "deployment-controller",
            "reportingInstance": "kins-controllers",
            "type": "Normal",
        }),
        json!([
            "20s",
            "Normal",
            "ScalingReplicaSet",
            "deployment/web",
            "",
            "deployment-controller, kins-controllers",
            "scaled",
            "10m",
            7,
            "e"
        ]),
    );
}

#[test]
fn endpoint_slices() {
    check(
        "endpointslices",
        json!({
            "metadata": meta("web-abc"),
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}],
            "endpoints": [
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2", "10.0.0.3"]},
                {"addresses": ["10.0.0.4"]},
            ],
        }),
        json!([
            "web-abc",
            "IPv4",
            "80,metrics,*",
            "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
            "5s"
        ]),
    );
    check(
        "endpointslices",
        json!({
            "metadata": meta("many-ports"),
            "addressType": "IPv6",
            "ports": [{"port": 1}, {"port": 2}, {"port": 3}, {"port": 4}, {"port": 5}],
            "endpoints": [],
        }),
        json!(["many-ports", "IPv6", "1,2,3 + 2 more...", "<unset>", "5s"]),
    );
    check(
        "endpointslices",
        json!({"metadata": meta("empty"), "addressType": "IPv4"}),
        json!(["empty", "IPv4", "<unset>", "<unset>", "5s"]),
    );
}

/// A workload (Deployment or ReplicaSet) with the given spec fields and status.
fn workload(name: &str, spec: Value, status: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"containers": [
        {"name": "nginx", "image": "nginx:1.25"},
        {"name": "log", "image": "busybox"},
    ]}});
    json!({"metadata": meta(name), "spec": spec, "status": status})
}

#[test]
fn deployments() {
    check(
        "deployments",
        workload(
            "web",
            json!({"replicas": 3, "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "track", "operator": "Exists"},
                ],
            }}),
            json!({"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}),
        ),
        json!([
            "web",
            "2/3",
            3,
            2,
            "5s",
            "nginx,log",
            "nginx:1.25,busybox",
            "app=web,!canary,tier in (edge,frontend),track"
        ]),
    );
    // replicas defaults to 1; no selector prints empty.
    check(
        "deployments",
        json!({"metadata": meta("new")}),
        json!(["new", "0/1", 0, 0, "5s", "", "", ""]),
    );
    check(
        "deployments",
        workload(
            "bad",
            json!({"replicas": 0, "selector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}}),
            json!({}),
        ),
        json!([
            "bad",
            "0/0",
            0,
            0,
            "5s",
            "nginx,log",
            "nginx:1.25,busybox",
            "<invalid>"
        ]),
    );
}

#[test]
fn replica_sets() {
    check(
        "replicasets",
        workload(
            "web-5d4f",
            json!({"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "5d4f", "app": "web"}}}),
            json!({"replicas": 3, "readyReplicas": 2}),
        ),
        json!([
            "web-5d4f",
            3,
            3,
            2,
            "5s",
            "nginx,log",
            "nginx:1.25,busybox",
            "app=web,pod-template-hash=5d4f"
        ]),
    );
    check(
        "replicasets",
        workload("any", json!({"selector": {}}), json!({})),
        json!([
            "any",
            1,
            0,
            0,
            "5s",
            "nginx,log",
            "nginx:1.25,busybox",
            "<none>"
        ]),
    );
    check(
        "replicasets",
        workload(
            "bad",
            json!({"replicas": 1, "selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}),
            json!({}),
        ),
        json!([
            "bad",
            1,
            0,
            0,
            "5s",
            "nginx,log",
            "nginx:1.25,busybox",
            "<error>"
        ]),
    );
}

#[test]
fn ingresses() {
    let hosts = |hosts: &[&str]| -> Value { hosts.iter().map(|h| json!({"host": h})).collect() };
    check(
        "ingresses",
        json!({
            "metadata": meta("web"),
            "spec": {
                "ingressClassName": "nginx",
                "rules": hosts(&["a.example.com", "b.example.com"]),
                "tls": [{"hosts": ["a.example.com"], "secretName": "tls"}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}]}},
        }),
        json!([
            "web",
            "nginx",
            "a.example.com,b.example.com",
            "192.0.2.1,lb.example.com",
            "80, 443",
            "5s"
        ]),
    );
    check(
        "ingresses",
        json!({"metadata": meta("catch-all"), "spec": {"rules": [{"http": {"paths": []}}]}}),
        json!(["catch-all", "<none>", "*", "", "80", "5s"]),
    );
    check(
        "ingresses",
        json!({"metadata": meta("many"), "spec": {"rules": hosts(&["h1", "", "h3", "h4", "h5"])}}),
        json!(["many", "<none>", "h1,h3,h4 + 2 more...", "", "80", "5s"]),
    );
}

#[test]
fn ingress_classes() {
    check(
        "ingressclasses",
        json!({"metadata": meta("external"), "spec": {
            "controller": "example.com/ingress",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"},
        }}),
        json!([
            "external",
            "example.com/ingress",
            "IngressParameters.k8s.example.com/external-lb",
            "5s"
        ]),
    );
    check(
        "ingressclasses",
        json!({"metadata": meta("cm"), "spec": {"controller": "kins.dev/ingress",
            "parameters": {"kind": "ConfigMap", "name": "ingress-config"}}}),
        json!(["cm", "kins.dev/ingress", "ConfigMap/ingress-config", "5s"]),
    );
    check(
        "ingressclasses",
        json!({"metadata": meta("kins"), "spec": {"controller": "kins.dev/ingress"}}),
        json!(["kins", "kins.dev/ingress", "<none>", "5s"]),
    );
}

#[test]
fn network_policies_and_leases() {
    check(
        "networkpolicies",
        json!({"metadata": meta("deny-all"), "spec": {"podSelector": {}}}),
        json!(["deny-all", "<none>", "5s"]),
    );
    check(
        "networkpolicies",
        json!({"metadata": meta("db"), "spec": {"podSelector": {"matchLabels": {"role": "db"}}}}),
        json!(["db", "role=db", "5s"]),
    );
    check(
        "leases",
        json!({"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "n1_4b1c"}}),
        json!(["kube-scheduler", "n1_4b1c", "5s"]),
    );
    check(
        "leases",
        json!({"metadata": meta("free"), "spec": {}}),
        json!(["free", "", "5s"]),
    );
}

#[test]
fn include_object_parses_the_query_parameter() {
    assert_eq!("".parse(), Ok(IncludeObject::Metadata));
    assert_eq!("Metadata".parse(), Ok(IncludeObject::Metadata));
    assert_eq!("None".parse(), Ok(IncludeObject::None));
    assert_eq!("Object".parse(), Ok(IncludeObject::Object));
    let err = "object"
        .parse::<IncludeObject>()
        .expect_err("values are case-sensitive");
    assert_eq!(
        err.to_string(),
        "unrecognized includeObject value: \"object\""
    );
}

#[test]
fn whole_tables() {
    let pods = resource("pods");
    let done = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "job", "namespace": "default", "creationTimestamp": ago(5), "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Succeeded"},
    });
    let bare = json!({"metadata": {"name": "bare", "namespace": "default"}, "spec": {}});

    let t = table(
        pods,
        &[done.clone(), bare.clone()],
        now(),
        IncludeObject::Metadata,
        json!({"resourceVersion": "42"}),
    );
    let keys: Vec<&str> = t
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "kind",
            "apiVersion",
            "metadata",
            "columnDefinitions",
            "rows"
        ]
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(t["columnDefinitions"], json!(column_definitions(pods)));
    assert_eq!(t["columnDefinitions"][0]["name"], "Name");
    assert_eq!(
        t["rows"][0],
        json!({
            "cells": ["job", "0/1", "Succeeded", "0", "5s", "<none>", "<none>", "<none>", "<none>"],
            "conditions": [{
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": done["metadata"],
            },
        })
    );
    assert!(t["rows"][1].get("conditions").is_none());

    let t = table(
        pods,
        std::slice::from_ref(&bare),
        now(),
        IncludeObject::None,
        Value::Null,
    );
    assert_eq!(t["metadata"], json!({}));
    assert_eq!(t["rows"][0]["object"], Value::Null);
    assert!(t["rows"][0]
        .as_object()
        .is_some_and(|r| r.contains_key("object")));

    let t = table(
        pods,
        &[done.clone(), bare],
        now(),
        IncludeObject::Object,
        json!({}),
    );
    assert_eq!(t["rows"][0]["object"], done);
    let object_keys: Vec<&str> = t["rows"][1]["object"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(object_keys, ["kind", "apiVersion", "metadata", "spec"]);
    assert_eq!(t["rows"][1]["object"]["kind"], "Pod");
    assert_eq!(t["rows"][1]["object"]["apiVersion"], "v1");

    let empty = table(
        resource("deployments"),
        &[],
        now(),
        IncludeObject::Metadata,
        json!({"resourceVersion": "7", "continue": "abc"}),
    );
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["metadata"]["continue"], "abc");
    let failed = json!({"metadata": {"name": "f"}, "status": {"phase": "Failed"}});
    let t = table(pods, &[failed], now(), IncludeObject::None, json!({}));
    assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Failed");
    assert_eq!(t["rows"][0]["conditions"][0]["message"], "The pod failed.");
}

#[test]
fn kinds_without_a_printer_get_the_default_table() {
    let widgets = Resource {
        group: "example.com",
        version: "v1",
        kind: "Widget",
        list_kind: "WidgetList",
        plural: "widgets",
        singular: "widget",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        categories: &[],
    };
    let columns = column_definitions(&widgets);
    let names: Vec<&Value> = columns.iter().map(|c| &c["name"]).collect();
    assert_eq!(names, [&json!("Name"), &json!("Created At")]);
    assert_eq!(columns[1]["type"], "date");
    assert_eq!(
        row_cells(&widgets, &json!({"metadata": meta("w")}), now()),
        [json!("w"), json!("2024-05-01T11:59:55Z")]
    );
}
