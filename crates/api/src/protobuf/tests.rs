//! Protobuf bodies captured from kubectl, objects encoded by prost (k8s-pb, an encoder that
//! is not ours), and hand-made wire data for the corners, each checked against the JSON the
//! Kubernetes JSON API has for it.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::autoscaling::v1 as autoscaling;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::discovery::v1 as discovery;
use k8s_pb::api::networking::v1 as networking;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{json, Value};

use super::{decode, wire, Card, Field, Message, Ty};

/// The one place the tests call [`decode`]: `body` decodes to `expect`, or fails with the
/// error message `expect` holds.
fn check(body: &[u8], expect: Result<Value, &str>) {
    let got = decode(body).map_err(|e| e.to_string());
    assert_eq!(got, expect.map_err(str::to_string));
}

/// A body as client-go sends it: `k8s\0` and a runtime.Unknown around `raw`.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn int(v: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(v),
        str_val: Some(String::new()),
    })
}

fn string(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(v),
    })
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn time(seconds: i64, nanos: i32) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(nanos),
    })
}

fn micro_time(seconds: i64, nanos: i32) -> Option<meta::MicroTime> {
    Some(meta::MicroTime {
        seconds: Some(seconds),
        nanos: Some(nanos),
    })
}

/// ObjectMeta as Go writes it: every non-pointer field present, most of them empty.
fn object_meta(name: &str, namespace: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    }
}

#[test]
fn kubectl_bodies() {
    // Bodies captured from kubectl 1.32 and 1.37 against a listener; each JSON is what
    // `kubectl <same command> --dry-run=client -o json` prints, less its nulls (testdata/README.md).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protobuf/testdata");
    let mut seen = 0;
    for version in ["1.32", "1.37"] {
        for command in [
            "create-deployment",
            "create-deployment-zero",
            "create-service-nodeport",
            "create-service-clusterip",
            "create-configmap",
            "create-secret-generic",
            "create-namespace",
            "create-serviceaccount",
            "create-ingress",
        ] {
            let name = format!("{dir}/kubectl-{version}-{command}");
            let body = std::fs::read(format!("{name}.pb")).expect("fixture body");
            let text = std::fs::read_to_string(format!("{name}.json")).expect("fixture JSON");
            let expect: Value = serde_json::from_str(&text).expect("fixture JSON parses");
            check(&body, Ok(expect));
            seen += 1;
        }
    }
    assert_eq!(seen, 18);
}

#[test]
fn service() {
    let service = core::Service {
        metadata: Some(meta::ObjectMeta {
            labels: labels(&[("app", "dns")]),
            creation_timestamp: time(1_704_164_645, 999_999_999),
            owner_references: vec![meta::OwnerReference {
                api_version: s("v1"),
                kind: s("Node"),
                name: s("n1"),
                uid: s("u-1"),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("v1"),
                time: time(0, 0),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:spec":{"f:ports":{}}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..object_meta("dns", "kube-system")
        }),
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    name: s("dns"),
                    protocol: s("UDP"),
                    app_protocol: None,
                    port: Some(53),
                    target_port: string("dns"),
                    node_port: Some(0),
                },
                core::ServicePort {
                    name: s(""),
                    protocol: s("TCP"),
                    app_protocol: s("kubernetes.io/h2c"),
                    port: Some(9153),
                    target_port: int(0),
                    node_port: Some(30053),
                },
            ],
            selector: labels(&[("k8s-app", "kube-dns")]),
            cluster_ip: s("10.96.0.10"),
            cluster_ips: vec!["10.96.0.10".into(), "fd00::a".into()],
            r#type: s("NodePort"),
            external_ips: vec!["192.0.2.1".into()],
            session_affinity: s("ClientIP"),
            session_affinity_config: Some(core::SessionAffinityConfig {
                client_ip: Some(core::ClientIpConfig {
                    timeout_seconds: Some(0),
                }),
            }),
            load_balancer_ip: s(""),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ip_families: vec!["IPv4".into(), "IPv6".into()],
            ip_family_policy: s("PreferDualStack"),
            allocate_load_balancer_node_ports: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus {
                ingress: vec![core::LoadBalancerIngress {
                    ip: s("192.0.2.10"),
                    ..Default::default()
                }],
            }),
            conditions: vec![],
        }),
    };
    check(
        &envelope("v1", "Service", service.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "dns",
                "namespace": "kube-system",
                "labels": {"app": "dns"},
                // Time is RFC 3339 to the second, whatever its nanoseconds.
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u-1",
                    "controller": true, "blockOwnerDeletion": false,
                }],
                "managedFields": [{
                    "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                    "time": "1970-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:ports": {}}},
                }],
            },
            "spec": {
                "ports": [
                    {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns"},
                    {"protocol": "TCP", "appProtocol": "kubernetes.io/h2c", "port": 9153, "nodePort": 30053},
                ],
                "selector": {"k8s-app": "kube-dns"},
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10", "fd00::a"],
                "type": "NodePort",
                "externalIPs": ["192.0.2.1"],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "PreferDualStack",
                "allocateLoadBalancerNodePorts": false,
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
        })),
    );
}

#[test]
fn deployment() {
    let probe = |handler: core::ProbeHandler| core::Probe {
        handler: Some(handler),
        initial_delay_seconds: Some(5),
        timeout_seconds: Some(0),
        period_seconds: Some(0),
        success_threshold: Some(0),
        failure_threshold: Some(3),
        termination_grace_period_seconds: None,
    };
    let container = core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        args: vec!["-g".into(), "".into()],
        ports: vec![core::ContainerPort {
            name: s("http"),
            host_port: Some(0),
            container_port: Some(80),
            protocol: s("TCP"),
            host_ip: s(""),
        }],
        env: vec![core::EnvVar {
            name: s("PASSWORD"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: s("db") }),
                    key: s("password"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([
                ("cpu".into(), quantity("500m")),
                ("memory".into(), quantity("128Mi")),
            ]),
            requests: BTreeMap::from([("cpu".into(), Quantity { string: None })]),
            claims: vec![],
        }),
        liveness_probe: Some(probe(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: s("/healthz"),
                port: int(8080),
                host: s(""),
                scheme: s("HTTP"),
                http_headers: vec![],
            }),
            ..Default::default()
        })),
        readiness_probe: Some(probe(core::ProbeHandler {
            tcp_socket: Some(core::TcpSocketAction {
                port: string("http"),
                host: s(""),
            }),
            ..Default::default()
        })),
        security_context: Some(core::SecurityContext {
            run_as_non_root: Some(false),
            ..Default::default()
        }),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(true),
        ..Default::default()
    };
    let deployment = apps::Deployment {
        metadata: Some(object_meta("web", "default")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["front".into()],
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: labels(&[("app", "web")]),
                    ..object_meta("", "")
                }),
                spec: Some(core::PodSpec {
                    volumes: vec![
                        core::Volume {
                            name: s("conf"),
                            volume_source: Some(core::VolumeSource {
                                config_map: Some(core::ConfigMapVolumeSource {
                                    local_object_reference: Some(core::LocalObjectReference {
                                        name: s("web-conf"),
                                    }),
                                    items: vec![],
                                    default_mode: Some(0o644),
                                    optional: None,
                                }),
                                ..Default::default()
                            }),
                        },
                        core::Volume {
                            name: s("scratch"),
                            volume_source: Some(core::VolumeSource {
                                empty_dir: Some(core::EmptyDirVolumeSource {
                                    medium: s(""),
                                    size_limit: Some(quantity("1Gi")),
                                }),
                                ..Default::default()
                            }),
                        },
                    ],
                    containers: vec![container],
                    termination_grace_period_seconds: Some(0),
                    automount_service_account_token: Some(false),
                    host_network: Some(false),
                    host_pid: Some(false),
                    host_ipc: Some(false),
                    security_context: Some(core::PodSecurityContext {
                        supplemental_groups: vec![1000, 2000],
                        ..Default::default()
                    }),
                    tolerations: vec![core::Toleration {
                        key: s("node.kubernetes.io/not-ready"),
                        operator: s("Exists"),
                        value: s(""),
                        effect: s("NoExecute"),
                        toleration_seconds: Some(300),
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int(0),
                    max_surge: string("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(0),
            paused: Some(false),
            progress_deadline_seconds: Some(600),
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            updated_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            unavailable_replicas: Some(0),
            conditions: vec![apps::DeploymentCondition {
                r#type: s("Available"),
                status: s("True"),
                last_update_time: Some(meta::Time::default()),
                last_transition_time: time(1_700_000_000, 0),
                reason: s(""),
                message: s(""),
            }],
            ..Default::default()
        }),
    };
    let probe_json = |handler: Value| {
        let mut probe = json!({"initialDelaySeconds": 5, "failureThreshold": 3});
        probe
            .as_object_mut()
            .expect("object")
            .extend(handler.as_object().expect("object").clone());
        probe
    };
    check(
        &envelope("apps/v1", "Deployment", deployment.encode_to_vec()),
        Ok(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}],
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "volumes": [
                            {"name": "conf", "configMap": {"name": "web-conf", "defaultMode": 420}},
                            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                        ],
                        "containers": [{
                            "name": "web",
                            "image": "nginx:1.27",
                            "args": ["-g", ""],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [{
                                "name": "PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}},
                            }],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "0"},
                            },
                            "livenessProbe": probe_json(json!({"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}})),
                            "readinessProbe": probe_json(json!({"tcpSocket": {"port": "http"}})),
                            "securityContext": {"runAsNonRoot": false},
                            "tty": true,
                        }],
                        "terminationGracePeriodSeconds": 0,
                        "automountServiceAccountToken": false,
                        "securityContext": {"supplementalGroups": [1000, 2000]},
                        "tolerations": [{
                            "key": "node.kubernetes.io/not-ready", "operator": "Exists",
                            "effect": "NoExecute", "tolerationSeconds": 300,
                        }],
                    },
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                "revisionHistoryLimit": 0,
                "progressDeadlineSeconds": 600,
            },
            "status": {
                "conditions": [{"type": "Available", "status": "True", "lastTransitionTime": "2023-11-14T22:13:20Z"}],
            },
        })),
    );
}

#[test]
fn pod_status() {
    let pod = core::Pod {
        metadata: Some(object_meta("p", "default")),
        spec: None,
        status: Some(core::PodStatus {
            phase: s("Running"),
            conditions: vec![core::PodCondition {
                r#type: s("Ready"),
                observed_generation: Some(0),
                status: s("False"),
                last_probe_time: Some(meta::Time::default()),
                last_transition_time: time(1_704_164_645, 0),
                reason: s(""),
                message: s(""),
            }],
            host_ip: s("192.0.2.5"),
            host_ips: vec![core::HostIp { ip: s("192.0.2.5") }],
            pod_ip: s("10.244.0.7"),
            pod_ips: vec![
                core::PodIp {
                    ip: s("10.244.0.7"),
                },
                core::PodIp { ip: s("fd00::7") },
            ],
            start_time: time(1_704_164_600, 0),
            container_statuses: vec![core::ContainerStatus {
                name: s("web"),
                state: Some(core::ContainerState {
                    terminated: Some(core::ContainerStateTerminated {
                        exit_code: Some(0),
                        signal: Some(0),
                        reason: s("Completed"),
                        message: s(""),
                        started_at: Some(meta::Time::default()),
                        finished_at: time(1_704_164_645, 0),
                        container_id: s("containerd://abc"),
                    }),
                    ..Default::default()
                }),
                last_state: Some(core::ContainerState::default()),
                ready: Some(false),
                restart_count: Some(0),
                image: s("nginx"),
                image_id: s(""),
                container_id: s(""),
                started: Some(false),
                ..Default::default()
            }],
            qos_class: s("BestEffort"),
            ..Default::default()
        }),
    };
    check(
        &envelope("v1", "Pod", pod.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2024-01-02T03:04:05Z"}],
                "hostIP": "192.0.2.5",
                "hostIPs": [{"ip": "192.0.2.5"}],
                "podIP": "10.244.0.7",
                "podIPs": [{"ip": "10.244.0.7"}, {"ip": "fd00::7"}],
                "startTime": "2024-01-02T03:03:20Z",
                "containerStatuses": [{
                    "name": "web",
                    "state": {"terminated": {
                        "exitCode": 0, "reason": "Completed",
                        "finishedAt": "2024-01-02T03:04:05Z", "containerID": "containerd://abc",
                    }},
                    "lastState": {},
                    "ready": false,
                    "restartCount": 0,
                    "image": "nginx",
                    "started": false,
                }],
                "qosClass": "BestEffort",
            },
        })),
    );
}

#[test]
fn secret_and_config_map_bytes() {
    let secret = core::Secret {
        metadata: Some(object_meta("s", "default")),
        immutable: Some(true),
        data: BTreeMap::from([
            ("bin".into(), vec![0, 159, 146, 150, 255]),
            ("empty".into(), vec![]),
        ]),
        string_data: BTreeMap::from([("user".into(), "admin".into())]),
        r#type: s("kubernetes.io/basic-auth"),
    };
    check(
        &envelope("v1", "Secret", secret.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "immutable": true,
            "data": {"bin": "AJ+Slv8=", "empty": ""},
            "stringData": {"user": "admin"},
            "type": "kubernetes.io/basic-auth",
        })),
    );
    let config_map = core::ConfigMap {
        metadata: Some(object_meta("c", "default")),
        immutable: Some(false),
        data: BTreeMap::from([("k".into(), "".into())]),
        binary_data: BTreeMap::from([("b".into(), b"hi".to_vec())]),
    };
    check(
        &envelope("v1", "ConfigMap", config_map.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"},
            "immutable": false,
            "data": {"k": ""},
            "binaryData": {"b": "aGk="},
        })),
    );
}

#[test]
fn lease_and_event_micro_time() {
    let lease = coordination::Lease {
        metadata: Some(object_meta("kube-scheduler", "kube-system")),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("node-1_3f2a"),
            lease_duration_seconds: Some(0),
            acquire_time: micro_time(1_704_164_645, 123_456_789),
            renew_time: micro_time(1_704_164_645, 0),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    check(
        &envelope("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
        Ok(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": "node-1_3f2a",
                "leaseDurationSeconds": 0,
                "acquireTime": "2024-01-02T03:04:05.123456Z",
                "renewTime": "2024-01-02T03:04:05.000000Z",
                "leaseTransitions": 0,
            },
        })),
    );
    let event = core::Event {
        metadata: Some(object_meta("p.17a", "default")),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            namespace: s("default"),
            name: s("p"),
            uid: s(""),
            api_version: s("v1"),
            resource_version: s(""),
            field_path: s(""),
        }),
        reason: s("Scheduled"),
        message: s("Successfully assigned default/p to n1"),
        source: Some(core::EventSource {
            component: s(""),
            host: s(""),
        }),
        first_timestamp: Some(meta::Time::default()),
        last_timestamp: Some(meta::Time::default()),
        count: Some(0),
        r#type: s("Normal"),
        event_time: micro_time(1_704_164_645, 5_000),
        series: Some(core::EventSeries {
            count: Some(2),
            last_observed_time: micro_time(1_704_164_700, 0),
        }),
        action: s("Binding"),
        reporting_component: s("default-scheduler"),
        reporting_instance: s("default-scheduler-n1"),
        ..Default::default()
    };
    check(
        &envelope("v1", "Event", event.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "p.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "apiVersion": "v1"},
            "reason": "Scheduled",
            "message": "Successfully assigned default/p to n1",
            "source": {},
            "type": "Normal",
            "eventTime": "2024-01-02T03:04:05.000005Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-02T03:05:00.000000Z"},
            "action": "Binding",
            "reportingComponent": "default-scheduler",
            "reportingInstance": "default-scheduler-n1",
        })),
    );
}

#[test]
fn helpers_delete_options_scale_binding() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("u-1"),
            resource_version: None,
        }),
        orphan_dependents: None,
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: Some(false),
    };
    // client-go encodes DeleteOptions in the group/version of the client sending it.
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        check(
            &envelope(api_version, "DeleteOptions", options.encode_to_vec()),
            Ok(json!({
                "apiVersion": api_version,
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "u-1"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
                "ignoreStoreReadErrorWithClusterBreakingPotential": false,
            })),
        );
    }
    let scale = autoscaling::Scale {
        metadata: Some(object_meta("web", "default")),
        spec: Some(autoscaling::ScaleSpec { replicas: Some(0) }),
        status: Some(autoscaling::ScaleStatus {
            replicas: Some(3),
            selector: s("app=web"),
        }),
    };
    check(
        &envelope("autoscaling/v1", "Scale", scale.encode_to_vec()),
        Ok(json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default"},
            // Omitempty in Go, kept: a Scale to 0 says so.
            "spec": {"replicas": 0},
            "status": {"replicas": 3, "selector": "app=web"},
        })),
    );
    let binding = core::Binding {
        metadata: Some(object_meta("p", "default")),
        target: Some(core::ObjectReference {
            kind: s("Node"),
            name: s("n1"),
            ..Default::default()
        }),
    };
    check(
        &envelope("v1", "Binding", binding.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p", "namespace": "default"},
            "target": {"kind": "Node", "name": "n1"},
        })),
    );
}

#[test]
fn node_endpoint_slice_network_policy() {
    let node = core::Node {
        metadata: Some(object_meta("n1", "")),
        spec: Some(core::NodeSpec {
            pod_cidr: s("10.244.0.0/24"),
            pod_cid_rs: vec!["10.244.0.0/24".into()],
            unschedulable: Some(false),
            taints: vec![core::Taint {
                key: s("node-role.kubernetes.io/control-plane"),
                value: s(""),
                effect: s("NoSchedule"),
                time_added: None,
            }],
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity: BTreeMap::from([
                ("cpu".into(), quantity("2")),
                ("pods".into(), quantity("110")),
            ]),
            addresses: vec![core::NodeAddress {
                r#type: s("InternalIP"),
                address: s("192.0.2.5"),
            }],
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10250) }),
            }),
            node_info: Some(core::NodeSystemInfo {
                kubelet_version: s("v1.34.0"),
                os_image: s("Debian GNU/Linux 12"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    check(
        &envelope("v1", "Node", node.encode_to_vec()),
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {
                "podCIDR": "10.244.0.0/24",
                "podCIDRs": ["10.244.0.0/24"],
                "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
            },
            "status": {
                "capacity": {"cpu": "2", "pods": "110"},
                "addresses": [{"type": "InternalIP", "address": "192.0.2.5"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"kubeletVersion": "v1.34.0", "osImage": "Debian GNU/Linux 12"},
            },
        })),
    );
    let slice = discovery::EndpointSlice {
        metadata: Some(object_meta("web-abc", "default")),
        address_type: s("IPv4"),
        endpoints: vec![discovery::Endpoint {
            addresses: vec!["10.244.0.7".into()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: None,
            }),
            target_ref: Some(core::ObjectReference {
                kind: s("Pod"),
                name: s("p"),
                ..Default::default()
            }),
            node_name: s("n1"),
            hints: Some(discovery::EndpointHints {
                for_zones: vec![discovery::ForZone { name: s("a") }],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ports: vec![discovery::EndpointPort {
            name: s(""),
            protocol: s("TCP"),
            port: Some(0),
            app_protocol: None,
        }],
    };
    check(
        &envelope(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            slice.encode_to_vec(),
        ),
        Ok(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": ["10.244.0.7"],
                "conditions": {"ready": false, "serving": true},
                "targetRef": {"kind": "Pod", "name": "p"},
                "nodeName": "n1",
                "hints": {"forZones": [{"name": "a"}]},
            }],
            "ports": [{"protocol": "TCP", "port": 0}],
        })),
    );
    let policy = networking::NetworkPolicy {
        metadata: Some(object_meta("deny", "default")),
        spec: Some(networking::NetworkPolicySpec {
            pod_selector: Some(meta::LabelSelector::default()),
            ingress: vec![networking::NetworkPolicyIngressRule {
                ports: vec![networking::NetworkPolicyPort {
                    protocol: s("TCP"),
                    port: int(0),
                    end_port: Some(0),
                }],
                from: vec![networking::NetworkPolicyPeer {
                    ip_block: Some(networking::IpBlock {
                        cidr: s("10.0.0.0/8"),
                        except: vec!["10.1.0.0/16".into()],
                    }),
                    ..Default::default()
                }],
            }],
            egress: vec![],
            policy_types: vec!["Ingress".into()],
        }),
    };
    check(
        &envelope(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            policy.encode_to_vec(),
        ),
        Ok(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "default"},
            "spec": {
                "podSelector": {},
                "ingress": [{
                    "ports": [{"protocol": "TCP", "port": 0, "endPort": 0}],
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                }],
                "policyTypes": ["Ingress"],
            },
        })),
    );
}

/// Hand-made wire data: a field key and its value.
mod pb {
    pub fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }
    pub fn key(tag: u64, wire: u64) -> Vec<u8> {
        varint(tag << 3 | wire)
    }
    pub fn int(tag: u64, v: u64) -> Vec<u8> {
        [key(tag, 0), varint(v)].concat()
    }
    pub fn len(tag: u64, data: &[u8]) -> Vec<u8> {
        [key(tag, 2), varint(data.len() as u64), data.to_vec()].concat()
    }
}

/// `raw` as the body of a `kind` in `api_version`, around hand-made wire data.
fn raw_body(api_version: &str, kind: &str, raw: &[&[u8]]) -> Vec<u8> {
    envelope(api_version, kind, raw.concat())
}

#[test]
fn wire_format_corners() {
    let meta = |fields: &[&[u8]]| pb::len(1, &fields.concat());
    let name = |v: &str| pb::len(1, v.as_bytes());
    let service_spec = |fields: &[&[u8]]| pb::len(2, &fields.concat());
    let cases: Vec<(&str, Vec<u8>, Value)> = vec![
        (
            "unknown fields of every wire type are skipped",
            raw_body(
                "v1",
                "ServiceAccount",
                &[
                    &pb::int(99, 7),
                    &[pb::key(98, 1), vec![0; 8]].concat(),
                    &pb::len(97, b"junk"),
                    &[pb::key(96, 5), vec![0; 4]].concat(),
                    &meta(&[&name("sa"), &pb::int(99, 1)]),
                ],
            ),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
        ),
        (
            "a message seen twice merges, a scalar seen twice keeps the last",
            raw_body(
                "v1",
                "ServiceAccount",
                &[
                    &meta(&[&name("first"), &pb::len(3, b"ns")]),
                    &meta(&[&name("second")]),
                ],
            ),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "second", "namespace": "ns"}}),
        ),
        (
            "a zero after a value empties an omitempty field",
            raw_body(
                "v1",
                "ServiceAccount",
                &[&meta(&[&name("sa"), &pb::int(7, 4), &pb::int(7, 0)])],
            ),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
        ),
        (
            "repeated fields append across occurrences",
            raw_body(
                "v1",
                "ServiceAccount",
                &[&meta(&[&pb::len(14, b"a")]), &meta(&[&pb::len(14, b"b")])],
            ),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"finalizers": ["a", "b"]}}),
        ),
        (
            "packed and unpacked repeated ints; negative int64 and int32 (sign-extended varints)",
            raw_body(
                "v1",
                "Pod",
                &[&pb::len(
                    2,
                    &pb::len(
                        14,
                        &[
                            pb::len(4, &[pb::varint(1), pb::varint(300)].concat()),
                            pb::int(4, u64::MAX),
                            pb::int(2, (-5i64) as u64),
                        ]
                        .concat(),
                    ),
                )],
            ),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"securityContext": {
                "supplementalGroups": [1, 300, -1], "runAsUser": -5,
            }}}),
        ),
        (
            "a map entry without key or value is an empty key and value",
            raw_body(
                "v1",
                "ConfigMap",
                &[&pb::len(2, &[]), &pb::len(2, &pb::len(1, b"k"))],
            ),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"": "", "k": ""}}),
        ),
        (
            "int32 keeps 32 bits of its sign-extended varint",
            raw_body(
                "v1",
                "Service",
                &[&service_spec(&[&pb::len(1, &pb::int(3, (-1i64) as u64))])],
            ),
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": -1}]}}),
        ),
    ];
    for (what, body, expect) in cases {
        let got = decode(&body).map_err(|e| e.to_string());
        assert_eq!(got, Ok(expect), "{what}");
    }
}

#[test]
fn errors() {
    let sa = |raw: &[&[u8]]| raw_body("v1", "ServiceAccount", raw);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"kind\":\"Pod\"}".to_vec(),
            r#"not a kubernetes protobuf body: it does not start with "k8s\x00""#,
        ),
        (
            b"k8s\0".to_vec(),
            "the protobuf envelope (runtime.Unknown) names no apiVersion and kind",
        ),
        (
            envelope("batch/v1", "Job", vec![]),
            "no protobuf schema for kind Job in batch/v1",
        ),
        (
            envelope("apps/v1", "Service", vec![]),
            "no protobuf schema for kind Service in apps/v1",
        ),
        (
            [
                b"k8s\0".as_slice(),
                &Unknown {
                    type_meta: Some(TypeMeta {
                        api_version: s("v1"),
                        kind: s("Pod"),
                    }),
                    raw: Some(vec![]),
                    content_encoding: s("gzip"),
                    content_type: None,
                }
                .encode_to_vec(),
            ]
            .concat(),
            r#"unsupported content encoding "gzip" in the protobuf envelope"#,
        ),
        (
            b"k8s\0\x0a\x05\x0a\x02v1".to_vec(),
            "k8s.io.apimachinery.pkg.runtime.Unknown: truncated protobuf data",
        ),
        (
            sa(&[&[0x0a, 0x80]]),
            "k8s.io.api.core.v1.ServiceAccount: truncated protobuf data",
        ),
        (
            sa(&[&[0xff; 11]]),
            "k8s.io.api.core.v1.ServiceAccount: malformed varint",
        ),
        (
            sa(&[&pb::key(0, 0), &[0]]),
            "k8s.io.api.core.v1.ServiceAccount: invalid field key (field 0, wire type 0)",
        ),
        (
            sa(&[&pb::key(5, 3)]),
            "k8s.io.api.core.v1.ServiceAccount: invalid field key (field 5, wire type 3)",
        ),
        (
            sa(&[&pb::int(1, 5)]),
            "k8s.io.api.core.v1.ServiceAccount.metadata: wire type 0 where a length-delimited value was expected",
        ),
        (
            sa(&[&pb::len(1, &pb::len(7, b""))]),
            "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.generation: wire type 2 where a varint was expected",
        ),
        (
            sa(&[&pb::len(1, &pb::len(1, &[0xff, 0xfe]))]),
            "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.name: string is not valid UTF-8",
        ),
        (
            sa(&[&pb::len(1, &pb::len(8, &pb::int(2, (-1i64) as u64)))]),
            "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.creationTimestamp: time 0s -1ns is out of range",
        ),
        (
            sa(&[&pb::len(
                1,
                &pb::len(17, &pb::len(7, &pb::len(1, b"{nope"))),
            )]),
            "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry.fieldsV1: embedded raw data is not JSON: key must be a string at line 1 column 2",
        ),
    ];
    for (body, expect) in cases {
        check(&body, Err(expect));
    }
}

/// Types no served kind has today, through a message of the test's own.
static ODD: Message = Message {
    name: "test.Odd",
    fields: &[
        Field {
            tag: 1,
            json: "ratio",
            ty: Ty::Double,
            card: Card::Optional,
        },
        Field {
            tag: 2,
            json: "window",
            ty: Ty::Duration,
            card: Card::Optional,
        },
        Field {
            tag: 3,
            json: "object",
            ty: Ty::RawExtension,
            card: Card::Optional,
        },
        Field {
            tag: 4,
            json: "ratios",
            ty: Ty::Double,
            card: Card::Repeated,
        },
    ],
};

#[test]
fn double_duration_raw_extension() {
    let double = |tag: u64, v: f64| [pb::key(tag, 1), v.to_le_bytes().to_vec()].concat();
    let embedded = envelope("v1", "ServiceAccount", pb::len(1, &pb::len(1, b"sa")));
    let cases: Vec<(Vec<u8>, Result<Value, &str>)> = vec![
        (
            [
                double(1, 0.25),
                pb::len(2, &pb::int(1, 5_400_000_000_000)),
                pb::len(3, &pb::len(1, br#"{"kind":"Pod","spec":{}}"#)),
                double(4, -1.5),
                pb::len(4, &[1.0f64.to_le_bytes(), 2.5f64.to_le_bytes()].concat()),
            ]
            .concat(),
            Ok(json!({
                "ratio": 0.25, "window": "1h30m0s", "object": {"kind": "Pod", "spec": {}},
                "ratios": [-1.5, 1.0, 2.5],
            })),
        ),
        (
            [
                pb::len(2, &[]),
                pb::len(3, &pb::len(1, b"{}")),
                pb::len(3, &[]),
            ]
            .concat(),
            // An empty RawExtension is left out, as Go's null is; it replaces what came before.
            Ok(json!({"window": "0s"})),
        ),
        (
            pb::len(3, &pb::len(1, &embedded)),
            Err("test.Odd.object: embedded protobuf objects are not supported, only JSON"),
        ),
        (
            double(1, f64::NAN),
            Err("test.Odd.ratio: NaN is not a JSON number"),
        ),
        (
            pb::len(3, &pb::len(1, b"nope")),
            Err(
                "test.Odd.object: embedded raw data is not JSON: expected ident at line 1 column 2",
            ),
        ),
    ];
    for (data, expect) in cases {
        let mut got = serde_json::Map::new();
        let got = wire::decode_message(&ODD, &data, &mut got)
            .map(|()| Value::Object(got))
            .map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_string));
    }
}

#[test]
fn go_durations() {
    for (nanos, expect) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_250_000, "1.25ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-90_000_000_000, "-1m30s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ] {
        assert_eq!(wire::go_duration(nanos), expect, "{nanos}ns");
    }
}

#[test]
fn schema_is_well_formed() {
    // Every message reachable from a kind: tags strictly increasing (the decoder binary
    // searches them), a JSON name on every field but inline ones, maps only of strings,
    // bytes, quantities and messages.
    let mut stack: Vec<&Message> = super::schema::KINDS.iter().map(|(_, _, m)| *m).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(message) = stack.pop() {
        if !seen.insert(message.name) {
            continue;
        }
        assert!(
            message.fields.windows(2).all(|w| w[0].tag < w[1].tag),
            "{} tags",
            message.name
        );
        for field in message.fields {
            let at = format!("{}.{}", message.name, field.tag);
            match field.ty {
                Ty::Inline(inner) => {
                    assert!(
                        field.json.is_empty() && field.card == Card::Optional,
                        "{at}"
                    );
                    stack.push(inner);
                }
                Ty::Message(inner) => {
                    assert!(
                        !field.json.is_empty() && field.card != Card::OmitZero,
                        "{at}"
                    );
                    stack.push(inner);
                }
                _ => assert!(!field.json.is_empty(), "{at}"),
            }
            if field.card == Card::Map {
                let value = matches!(
                    field.ty,
                    Ty::String | Ty::Bytes | Ty::Quantity | Ty::Message(_)
                );
                assert!(value, "{at}: map value");
            }
        }
    }
    assert!(seen.len() > 200, "{} messages", seen.len());

    // Acyclic, so nesting is as deep as the schema and no deeper, whatever the body.
    fn depth(message: &Message, path: &mut Vec<&'static str>) -> usize {
        assert!(!path.contains(&message.name), "cycle through {path:?}");
        path.push(message.name);
        let below = message.fields.iter().map(|f| match f.ty {
            Ty::Message(inner) | Ty::Inline(inner) => depth(inner, path),
            _ => 0,
        });
        let deepest = below.max().unwrap_or(0);
        path.pop();
        deepest + 1
    }
    for (_, kind, message) in super::schema::KINDS {
        assert!(depth(message, &mut Vec::new()) < 20, "{kind}");
    }
}

#[test]
fn damaged_bodies_fail_without_panicking() {
    // Every prefix and every one-byte corruption of the captured bodies decodes or fails
    // with an error; none panics.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protobuf/testdata");
    let mut bodies = 0;
    for entry in std::fs::read_dir(dir).expect("testdata") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("pb") {
            continue;
        }
        let body = std::fs::read(&path).expect("fixture body");
        for end in 0..body.len() {
            let _ = decode(&body[..end]);
        }
        for at in 4..body.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = body.clone();
                damaged[at] ^= flip;
                let _ = decode(&damaged);
            }
        }
        bodies += 1;
    }
    assert_eq!(bodies, 18);
}
