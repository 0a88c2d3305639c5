//! Validation tables: an object in, the exact Kubernetes messages out.

use serde_json::{json, Value};

use super::*;
use crate::defaults::{apply_defaults, prepare_update};

fn res(kind: &str) -> &'static Resource {
    crate::RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .expect("kind is served")
}

/// Defaults `obj` as the server does, validates it for create and compares the messages.
fn check(kind: &str, obj: Value, expect: &[&str]) {
    let mut obj = obj;
    apply_defaults(res(kind), &mut obj);
    let got: Vec<String> = validate_create(res(kind), &obj)
        .iter()
        .map(FieldError::message)
        .collect();
    assert_eq!(got, expect, "create {kind}: {obj}");
}

/// Defaults both objects, validates `new` as an update of `old` and compares the messages.
fn check_update(kind: &str, new: Value, old: Value, expect: &[&str]) {
    let (mut new, mut old) = (new, old);
    apply_defaults(res(kind), &mut new);
    apply_defaults(res(kind), &mut old);
    let got: Vec<String> = validate_update(res(kind), &new, &old)
        .iter()
        .map(FieldError::message)
        .collect();
    assert_eq!(got, expect, "update {kind}: {new}");
}

/// Lists the unknown fields of `obj` (or the decode error).
fn check_unknown(kind: &str, obj: Value, expect: Result<&[&str], &str>) {
    let got = unknown_fields(res(kind), &obj);
    let expect = expect
        .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(str::to_string);
    assert_eq!(got, expect, "unknown fields of {kind}: {obj}");
}

const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const POD_UPDATE: &str = "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn pod_with(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn pod() -> Value {
    pod_with(json!({"containers": [{"name": "c", "image": "nginx"}]}))
}

fn with(mut obj: Value, pointer: &str, v: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let target = obj.pointer_mut(parent).expect("the parent exists");
    match target {
        Value::Object(m) => {
            m.insert(key.to_string(), v);
        }
        Value::Array(a) => {
            let i: usize = key.parse().expect("an index");
            a[i] = v;
        }
        _ => panic!("cannot set {pointer}"),
    }
    obj
}

fn svc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn deploy(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"}, "spec": spec})
}

fn deploy_ok() -> Value {
    deploy(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    }))
}

#[test]
fn field_error_format() {
    let cases = [
        (
            FieldError::required("spec.ports", ""),
            "FieldValueRequired",
            "Required value",
            "spec.ports: Required value",
        ),
        (
            FieldError::required("metadata.name", "name or generateName is required"),
            "FieldValueRequired",
            "Required value: name or generateName is required",
            "metadata.name: Required value: name or generateName is required",
        ),
        (
            FieldError::invalid(
                "spec.ports[0].port",
                &json!(0),
                "must be between 1 and 65535, inclusive",
            ),
            "FieldValueInvalid",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            FieldError::invalid("spec.x", &json!(["a", "b"]), "bad"),
            "FieldValueInvalid",
            "Invalid value: []string{\"a\", \"b\"}: bad",
            "spec.x: Invalid value: []string{\"a\", \"b\"}: bad",
        ),
        (
            FieldError::invalid("spec.x", &json!({"b": "2", "a": "1"}), "bad"),
            "FieldValueInvalid",
            "Invalid value: map[string]string{\"a\":\"1\", \"b\":\"2\"}: bad",
            "spec.x: Invalid value: map[string]string{\"a\":\"1\", \"b\":\"2\"}: bad",
        ),
        (
            FieldError::invalid("spec.x", &json!(null), "bad"),
            "FieldValueInvalid",
            "Invalid value: null: bad",
            "spec.x: Invalid value: null: bad",
        ),
        (
            FieldError::duplicate("spec.ports[1].name", &json!("http")),
            "FieldValueDuplicate",
            "Duplicate value: \"http\"",
            "spec.ports[1].name: Duplicate value: \"http\"",
        ),
        (
            FieldError::not_supported("spec.type", &json!("Foo"), &["ClusterIP", "NodePort"]),
            "FieldValueNotSupported",
            "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\"",
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\"",
        ),
        (
            FieldError::too_long("metadata.annotations", 262144),
            "FieldValueTooLong",
            "Too long: must have at most 262144 bytes",
            "metadata.annotations: Too long: must have at most 262144 bytes",
        ),
        (
            FieldError::forbidden("spec.nodePort", "may not be used"),
            "FieldValueForbidden",
            "Forbidden: may not be used",
            "spec.nodePort: Forbidden: may not be used",
        ),
        (
            FieldError::not_found("spec.volumeMounts[0].name", &json!("data")),
            "FieldValueNotFound",
            "Not found: \"data\"",
            "spec.volumeMounts[0].name: Not found: \"data\"",
        ),
        (
            FieldError::invalid("x", &json!(true), ""),
            "FieldValueInvalid",
            "Invalid value: true",
            "x: Invalid value: true",
        ),
    ];
    for (e, reason, body, message) in cases {
        assert_eq!(
            (e.reason(), e.body(), e.message(), e.to_string()),
            (reason, body.into(), message.into(), message.into())
        );
    }
    let a = FieldError::required("a", "");
    let b = FieldError::required("b", "");
    assert_eq!(
        aggregate_message(std::slice::from_ref(&a)),
        "a: Required value"
    );
    assert_eq!(
        aggregate_message(&[a.clone(), b, a]),
        "[a: Required value, b: Required value]"
    );
    assert_eq!(
        go_quote("a\"b\\c\nd\te\u{1}é"),
        "\"a\\\"b\\\\c\\nd\\te\\x01é\""
    );
}

#[test]
fn names() {
    check(
        "Pod",
        with(pod(), "/metadata/name", json!("Foo_bar")),
        &[&format!(
            "metadata.name: Invalid value: \"Foo_bar\": {SUBDOMAIN}"
        )],
    );
    check(
        "Pod",
        with(pod(), "/metadata/name", json!("a".repeat(254))),
        &[&format!(
            "metadata.name: Invalid value: \"{}\": must be no more than 253 characters",
            "a".repeat(254)
        )],
    );
    check(
        "Pod",
        with(pod(), "/metadata", json!({"namespace": "default"})),
        &["metadata.name: Required value: name or generateName is required"],
    );
    check(
        "Pod",
        with(
            pod(),
            "/metadata",
            json!({"namespace": "default", "generateName": "web-"}),
        ),
        &[],
    );
    check(
        "Pod",
        with(
            pod(),
            "/metadata",
            json!({"namespace": "default", "generateName": "Web-"}),
        ),
        &[&format!(
            "metadata.generateName: Invalid value: \"Web-\": {SUBDOMAIN}"
        )],
    );
    check(
        "Pod",
        with(
            pod(),
            "/metadata",
            json!({"namespace": "default", "name": "web-x1", "generateName": "web_"}),
        ),
        &[&format!(
            "metadata.generateName: Invalid value: \"web_\": {SUBDOMAIN}"
        )],
    );
    check("Namespace", json!({"metadata": {"name": "dev"}}), &[]);
    check(
        "Namespace",
        json!({"metadata": {"name": "my.ns"}}),
        &["metadata.name: Invalid value: \"my.ns\": must not contain dots"],
    );
    // The defaulted kubernetes.io/metadata.name label repeats a bad name, as in Kubernetes.
    check(
        "Namespace",
        json!({"metadata": {"name": "-x"}}),
        &[
            &format!("metadata.name: Invalid value: \"-x\": {LABEL}"),
            &format!("metadata.labels: Invalid value: \"-x\": {LABEL_VALUE}"),
        ],
    );
    check(
        "Namespace",
        json!({"metadata": {"name": "a".repeat(64)}}),
        &[
            &format!(
                "metadata.name: Invalid value: \"{}\": must be no more than 63 characters",
                "a".repeat(64)
            ),
            &format!(
                "metadata.labels: Invalid value: \"{}\": must be no more than 63 characters",
                "a".repeat(64)
            ),
        ],
    );
    check(
        "Service",
        with(
            svc(json!({"ports": [{"port": 80}]})),
            "/metadata/name",
            json!("1abc"),
        ),
        &[&format!(
            "metadata.name: Invalid value: \"1abc\": {DNS1035}"
        )],
    );
    check(
        "Node",
        json!({"metadata": {"name": "node-1.example.com"}}),
        &[],
    );
    check(
        "Node",
        json!({"metadata": {"name": "n", "namespace": "default"}}),
        &["metadata.namespace: Forbidden: not allowed on this type"],
    );
    check(
        "ConfigMap",
        json!({"metadata": {"name": "c"}}),
        &["metadata.namespace: Required value"],
    );
    check(
        "ConfigMap",
        json!({"metadata": {"name": "c", "namespace": "Dev"}}),
        &[&format!(
            "metadata.namespace: Invalid value: \"Dev\": {LABEL}"
        )],
    );
    check(
        "Event",
        json!({"metadata": {"name": "Pod.Web_1", "namespace": "default"}, "involvedObject": {"namespace": "default"}}),
        &[],
    );
}

#[test]
fn metadata() {
    let cm = |meta: Value| json!({"metadata": meta});
    check(
        "ConfigMap",
        cm(
            json!({"name": "c", "namespace": "d", "labels": {"app": "web", "example.com/tier": "front", "x": ""}}),
        ),
        &[],
    );
    check(
        "ConfigMap",
        cm(json!({"name": "c", "namespace": "d", "labels": {"a/b/c": "x"}})),
        &["metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"],
    );
    check(
        "ConfigMap",
        cm(json!({"name": "c", "namespace": "d", "labels": {"-x": "x y"}})),
        &[
            &format!("metadata.labels: Invalid value: \"-x\": {NAME_PART}"),
            &format!("metadata.labels: Invalid value: \"x y\": {LABEL_VALUE}"),
        ],
    );
    check(
        "ConfigMap",
        cm(
            json!({"name": "c", "namespace": "d", "labels": {"example.com/": "v", "/x": "v", "Bad_Domain/x": "v"}}),
        ),
        &[
            "metadata.labels: Invalid value: \"example.com/\": name part must be non-empty",
            &format!("metadata.labels: Invalid value: \"example.com/\": {NAME_PART}"),
            "metadata.labels: Invalid value: \"/x\": prefix part must be non-empty",
            &format!("metadata.labels: Invalid value: \"Bad_Domain/x\": prefix part {SUBDOMAIN}"),
        ],
    );
    check(
        "ConfigMap",
        cm(json!({"name": "c", "namespace": "d", "labels": {"k": "v".repeat(64)}})),
        &[&format!(
            "metadata.labels: Invalid value: \"{}\": must be no more than 63 characters",
            "v".repeat(64)
        )],
    );
    check(
        "ConfigMap",
        cm(
            json!({"name": "c", "namespace": "d", "annotations": {"Example.COM/Key": "ok", "a b": "x"}}),
        ),
        &[&format!(
            "metadata.annotations: Invalid value: \"a b\": {NAME_PART}"
        )],
    );
    check(
        "ConfigMap",
        cm(json!({"name": "c", "namespace": "d", "annotations": {"big": "x".repeat(256 * 1024)}})),
        &["metadata.annotations: Too long: must have at most 262144 bytes"],
    );
    check(
        "ConfigMap",
        cm(json!({"name": "c", "namespace": "d", "finalizers": ["kubernetes", "example.com/x", "foo"]})),
        &["metadata.finalizers[2]: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified"],
    );
    check(
        "ConfigMap",
        cm(json!({"name": "c", "namespace": "d", "generation": -1,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": ""}, {"apiVersion": "", "kind": "", "name": "n", "uid": "u"}]})),
        &[
            "metadata.generation: Invalid value: -1: must be greater than or equal to 0",
            "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty",
            "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
            "metadata.ownerReferences.kind: Invalid value: \"\": must not be empty",
        ],
    );
    check("Namespace", json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["foo"]}}), &[
        "spec.finalizers: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified",
    ]);
}

#[test]
fn metadata_update() {
    let cm =
        |name: &str, uid: &str| json!({"metadata": {"name": name, "namespace": "d", "uid": uid}});
    check_update("ConfigMap", cm("a", "u1"), cm("a", "u1"), &[]);
    check_update("ConfigMap", cm("a", ""), cm("a", "u1"), &[]);
    check_update(
        "ConfigMap",
        cm("b", "u2"),
        cm("a", "u1"),
        &[
            "metadata.name: Invalid value: \"b\": field is immutable",
            "metadata.uid: Invalid value: \"u2\": field is immutable",
        ],
    );
    check_update(
        "ConfigMap",
        json!({"metadata": {"name": "a", "namespace": "e"}}),
        json!({"metadata": {"name": "a", "namespace": "d"}}),
        &["metadata.namespace: Invalid value: \"e\": field is immutable"],
    );
    // An object being deleted may lose finalizers, never gain them.
    let deleting = |finalizers: Value| {
        json!({"metadata": {"name": "a", "namespace": "d",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": finalizers}})
    };
    check_update(
        "ConfigMap",
        deleting(json!(["x.io/a"])),
        deleting(json!(["x.io/a", "x.io/b"])),
        &[],
    );
    check_update(
        "ConfigMap",
        deleting(json!(["x.io/c", "x.io/a", "x.io/b"])),
        deleting(json!(["x.io/a"])),
        &["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x.io/b\", \"x.io/c\"}"],
    );
    check_update(
        "ConfigMap",
        json!({"metadata": {"name": "a", "namespace": "d", "finalizers": ["x.io/b"]}}),
        json!({"metadata": {"name": "a", "namespace": "d"}}),
        &[],
    );
}

#[test]
fn services() {
    check(
        "Service",
        svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
        &[],
    );
    check("Service", svc(json!({})), &["spec.ports: Required value"]);
    check("Service", svc(json!({"clusterIP": "None"})), &[]);
    check(
        "Service",
        svc(json!({"type": "ExternalName", "externalName": "example.com."})),
        &[],
    );
    check(
        "Service",
        svc(json!({"type": "ExternalName"})),
        &["spec.externalName: Required value"],
    );
    check(
        "Service",
        svc(json!({"type": "ExternalName", "externalName": "bad_name"})),
        &[&format!(
            "spec.externalName: Invalid value: \"bad_name\": {SUBDOMAIN}"
        )],
    );
    check(
        "Service",
        svc(
            json!({"type": "ExternalName", "externalName": "x.example", "clusterIP": "10.0.0.1", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
        ),
        &[
            "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
            "spec.ipFamilies: Forbidden: may not be set for ExternalName services",
            "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
        ],
    );
    check(
        "Service",
        svc(json!({"type": "Foo", "ports": [{"port": 80}]})),
        &["spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""],
    );
    check(
        "Service",
        svc(json!({"ports": [{"port": 0}]})),
        &[
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ],
    );
    check(
        "Service",
        svc(json!({"ports": [{"port": 70000, "targetPort": 8080}]})),
        &["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"],
    );
    check("Service", svc(json!({"ports": [{"port": 80, "protocol": "HTTP"}]})), &[
        "spec.ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    ]);
    check(
        "Service",
        svc(json!({"ports": [{"port": 80}, {"port": 81}]})),
        &[
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value",
        ],
    );
    check(
        "Service",
        svc(json!({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]})),
        &["spec.ports[1].name: Duplicate value: \"http\""],
    );
    check(
        "Service",
        svc(json!({"ports": [{"name": "Http", "port": 80}]})),
        &[&format!(
            "spec.ports[0].name: Invalid value: \"Http\": {LABEL}"
        )],
    );
    check(
        "Service",
        svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}, {"name": "c", "port": 80, "protocol": "UDP"}]})),
        &["spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"],
    );
    check(
        "Service",
        svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
        &["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
    );
    check(
        "Service",
        svc(
            json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}),
        ),
        &["spec.ports[1].nodePort: Duplicate value: 30080"],
    );
    check(
        "Service",
        svc(json!({"ports": [{"name": "a", "port": 80, "targetPort": "http-web"}, {"name": "b", "port": 81, "targetPort": "8080"},
            {"name": "c", "port": 82, "targetPort": "Web--"}, {"name": "d", "port": 83, "targetPort": 70000}]})),
        &[
            "spec.ports[1].targetPort: Invalid value: \"8080\": must contain at least one letter (a-z)",
            "spec.ports[2].targetPort: Invalid value: \"Web--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[2].targetPort: Invalid value: \"Web--\": must not contain consecutive hyphens",
            "spec.ports[2].targetPort: Invalid value: \"Web--\": must not begin or end with a hyphen",
            "spec.ports[3].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ],
    );
    check("Service", svc(json!({"ports": [{"port": 80}], "sessionAffinity": "Sticky"})), &[
        "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
    ]);
    check(
        "Service",
        svc(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"})),
        &[],
    );
    check(
        "Service",
        svc(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}})),
        &["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400"],
    );
    check(
        "Service",
        svc(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}})),
        &["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400"],
    );
    check(
        "Service",
        svc(
            json!({"ports": [{"port": 80}], "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}}}),
        ),
        // Defaulting drops the configuration when there is no affinity (as Kubernetes'
        // SetDefaults_Service does), so switching affinity off is a valid update.
        &[],
    );
    check("Service", svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})), &[
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
    ]);
    check("Service", svc(json!({"clusterIP": "300.1.1.1", "ports": [{"port": 80}]})), &[
        "spec.clusterIPs[0]: Invalid value: \"300.1.1.1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    ]);
    check("Service", svc(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"], "ports": [{"port": 80}]})), &[
        "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: first value must match `clusterIP`",
    ]);
    check("Service", svc(json!({"clusterIPs": ["10.0.0.2"], "ports": [{"port": 80}]})), &[
        "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: must be empty when `clusterIP` is not specified",
    ]);
    check(
        "Service",
        svc(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "10.0.0.2"], "ipFamilies": ["IPv4", "IPv4"], "ports": [{"port": 80}]})),
        &[
            "spec.ipFamilies[1]: Duplicate value: \"IPv4\"",
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\", \"10.0.0.2\"}: may specify no more than one IP for each IP family",
        ],
    );
    check(
        "Service",
        svc(json!({"clusterIP": "fd00::1", "ipFamilies": ["IPv5"], "ipFamilyPolicy": "Whatever", "ports": [{"port": 80}]})),
        &[
            "spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
            "spec.ipFamilyPolicy: Unsupported value: \"Whatever\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
        ],
    );
    check("Service", svc(json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]})), &[
        "spec.clusterIPs[0]: Invalid value: \"fd00::1\": expected an IPv4 value as indicated by `ipFamilies[0]`",
    ]);
    check("Service", svc(json!({"ports": [{"port": 80}], "externalTrafficPolicy": "Cluster"})), &[
        "spec.externalTrafficPolicy: Invalid value: \"Cluster\": may only be set for externally-accessible services",
    ]);
    check("Service", svc(json!({"type": "NodePort", "ports": [{"port": 80}], "externalTrafficPolicy": "Foo"})), &[
        "spec.externalTrafficPolicy: Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\"",
    ]);
    check("Service", svc(json!({"ports": [{"port": 80}], "internalTrafficPolicy": "Foo"})), &[
        "spec.internalTrafficPolicy: Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\"",
    ]);
    check("Service", svc(json!({"ports": [{"port": 80}], "healthCheckNodePort": 31000})), &[
        "spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
    ]);
    check("Service", svc(json!({"ports": [{"port": 80}], "externalIPs": ["127.0.0.1", "169.254.1.1", "0.0.0.0", "x"]})), &[
        "spec.externalIPs[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
        "spec.externalIPs[1]: Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        "spec.externalIPs[2]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
        "spec.externalIPs[3]: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    ]);
    check(
        "Service",
        svc(
            json!({"ports": [{"port": 80}], "externalIPs": ["192.0.2.10"], "externalTrafficPolicy": "Local"}),
        ),
        &[],
    );
    check(
        "Service",
        svc(json!({"type": "NodePort", "ports": [{"port": 80}], "allocateLoadBalancerNodePorts": true, "loadBalancerSourceRanges": ["10.0.0.0/8"], "loadBalancerClass": "x"})),
        &[
            "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
            "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'",
            "spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'",
        ],
    );
    check(
        "Service",
        svc(
            json!({"type": "LoadBalancer", "ports": [{"port": 80}], "loadBalancerClass": "example.com/lb"}),
        ),
        &[],
    );
    check(
        "Service",
        svc(json!({"ports": [{"port": 80, "appProtocol": "a b"}], "selector": {"app": "a b"}})),
        &[
            &format!("spec.ports[0].appProtocol: Invalid value: \"a b\": {NAME_PART}"),
            &format!("spec.selector: Invalid value: \"a b\": {LABEL_VALUE}"),
        ],
    );
}

#[test]
fn service_updates() {
    let ip = |ip: &str| svc(json!({"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}));
    check_update("Service", ip("10.0.0.1"), ip("10.0.0.1"), &[]);
    check_update(
        "Service",
        ip("10.0.0.2"),
        ip("10.0.0.1"),
        &["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set"],
    );
    check_update(
        "Service",
        svc(json!({"ports": [{"port": 81}]})),
        ip("10.0.0.1"),
        &[],
    );
    check_update(
        "Service",
        svc(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        svc(json!({"clusterIP": "None"})),
        &[],
    );
    check_update(
        "Service",
        svc(json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]})),
        ip("10.0.0.1"),
        &[
            "spec.ipFamilies[0]: Invalid value: []core.IPFamily{\"IPv6\"}: may not change once set",
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.1\": expected an IPv6 value as indicated by `ipFamilies[0]`",
        ],
    );
    let lb = |class: &str| {
        svc(json!({"type": "LoadBalancer", "loadBalancerClass": class, "ports": [{"port": 80}]}))
    };
    check_update(
        "Service",
        lb("a.io/x"),
        lb("a.io/y"),
        &["spec.loadBalancerClass: Invalid value: \"a.io/x\": may not change once set"],
    );

    // A type change to ExternalName fails validation unless the update was prepared.
    let external = svc(
        json!({"type": "ExternalName", "externalName": "x.example", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]}),
    );
    check_update(
        "Service",
        external.clone(),
        ip("10.0.0.1"),
        &["spec.clusterIPs: Forbidden: may not be set for ExternalName services"],
    );
    let mut old = ip("10.0.0.1");
    apply_defaults(res("Service"), &mut old);
    let mut new = external;
    apply_defaults(res("Service"), &mut new);
    prepare_update(res("Service"), &mut new, &old);
    assert_eq!(validate_update(res("Service"), &new, &old), Vec::new());
}

#[test]
fn pods() {
    check("Pod", pod(), &[]);
    check(
        "Pod",
        pod_with(json!({})),
        &["spec.containers: Required value"],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{}]})),
        &[
            "spec.containers[0].name: Required value",
            "spec.containers[0].image: Required value",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "Web", "image": "nginx"}]})),
        &[&format!(
            "spec.containers[0].name: Invalid value: \"Web\": {LABEL}"
        )],
    );
    check(
        "Pod",
        pod_with(
            json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}], "initContainers": [{"name": "a", "image": "x"}]}),
        ),
        &[
            "spec.containers[1].name: Duplicate value: \"a\"",
            "spec.initContainers[0].name: Duplicate value: \"a\"",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 0}, {"containerPort": 70000, "hostPort": 70000, "protocol": "ICMP"},
            {"name": "http_web", "containerPort": 80}, {"name": "http", "containerPort": 81}, {"name": "http", "containerPort": 82}]}]})),
        &[
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[2].name: Invalid value: \"http_web\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[0].ports[4].name: Duplicate value: \"http\"",
        ],
    );
    check(
        "Pod",
        pod_with(
            json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]},
            {"name": "b", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 80, "hostPort": 80, "protocol": "UDP"}]}]}),
        ),
        &["spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//80\""],
    );
    check("Pod", pod_with(json!({"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Sometimes", "dnsPolicy": "Foo"})), &[
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        "spec.dnsPolicy: Unsupported value: \"Foo\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
    ]);
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x"}], "dnsPolicy": "None"})),
        &["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"],
    );
    check("Pod", pod_with(json!({"containers": [{"name": "a", "image": "x"}], "dnsPolicy": "None", "dnsConfig": {}})), &[
        "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None",
    ]);
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x"}], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.1.1.1", "x"], "searches": ["svc.cluster.local.", "_srv.example.com", "Bad"], "options": [{"value": "1"}]}})),
        &[
            "spec.dnsConfig.nameservers[1]: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "spec.dnsConfig.searches[2]: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '_?[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\\._?[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*')",
            "spec.dnsConfig.options[0]: Required value: must not be empty",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "nginx ", "imagePullPolicy": "Sometimes", "terminationMessagePolicy": "X",
            "env": [{"name": "A=B"}, {"name": ""}, {"name": "my.var-1"}]}]})),
        &[
            "spec.containers[0].terminationMessagePolicy: Unsupported value: \"X\": supported values: \"File\", \"FallbackToLogsOnError\"",
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].env[1].name: Required value",
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.containers[0].image: Invalid value: \"nginx \": must not have leading or trailing whitespace",
        ],
    );
    check(
        "Pod",
        pod_with(json!({
            "volumes": [{"name": "a"}, {"name": "b", "emptyDir": {}, "configMap": {"name": "x"}}, {"name": "c", "emptyDir": {}},
                {"name": "c", "emptyDir": {}}, {"name": "D", "hostPath": {}}],
            "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}, {"name": "c", "mountPath": "/d"}, {"name": "c"}]}]})),
        &[
            "spec.volumes[0]: Required value: must specify a volume type",
            "spec.volumes[1].configMap: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[3].name: Duplicate value: \"c\"",
            "spec.volumes[4].hostPath.path: Required value",
            &format!("spec.volumes[4].name: Invalid value: \"D\": {LABEL}"),
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique",
            "spec.containers[0].volumeMounts[2].mountPath: Required value",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x",
            "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}, "successThreshold": 2},
            "readinessProbe": {"periodSeconds": -1, "terminationGracePeriodSeconds": 5},
            "startupProbe": {"httpGet": {"port": "Http"}},
            "lifecycle": {"preStop": {"exec": {}}}, "restartPolicy": "Always"}]})),
        &[
            "spec.containers[0].lifecycle.preStop.exec.command: Required value",
            "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
            "spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes",
            "spec.containers[0].startupProbe.httpGet.port: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x"}],
            "initContainers": [{"name": "i", "image": "x", "restartPolicy": "Never", "livenessProbe": {"exec": {"command": ["true"]}}},
                {"name": "s", "image": "x", "restartPolicy": "Always", "livenessProbe": {"exec": {"command": ["true"]}}}]})),
        &[
            "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 81}]}], "hostNetwork": true})),
        &["spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true"],
    );
    check(
        "Pod",
        pod_with(
            json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}], "hostNetwork": true}),
        ),
        &[],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x"}], "tolerations": [
            {"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"}, {"key": "k", "operator": "Less"},
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}, {"key": "k", "effect": "Sometimes"}, {"operator": "Exists"}]})),
        &[
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
            "spec.tolerations[2].operator: Unsupported value: \"Less\": supported values: \"Equal\", \"Exists\"",
            "spec.tolerations[3].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
            "spec.tolerations[4].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        ],
    );
    check(
        "Pod",
        pod_with(json!({"containers": [{"name": "a", "image": "x"}], "nodeName": "Node_1", "hostname": "a.b", "activeDeadlineSeconds": 0,
            "nodeSelector": {"disk": "s s"}, "ephemeralContainers": [{"name": "e", "image": "x"}]})),
        &[
            &format!("spec.nodeSelector: Invalid value: \"s s\": {LABEL_VALUE}"),
            &format!("spec.nodeName: Invalid value: \"Node_1\": {SUBDOMAIN}"),
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
            "spec.hostname: Invalid value: \"a.b\": must not contain dots",
            "spec.ephemeralContainers: Forbidden: cannot be set on create",
        ],
    );
    check(
        "Pod",
        pod_with(
            json!({"containers": [{"name": "a", "image": "x"}], "nodeName": "n1", "schedulingGates": [{"name": "g"}]}),
        ),
        &["spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared"],
    );
}

#[test]
fn pod_updates() {
    check_update("Pod", pod(), pod(), &[]);
    // A client sends back the stored object, so the defaulted pull policy does not change.
    let image = with(
        with(pod(), "/spec/containers/0/image", json!("nginx:2")),
        "/spec/containers/0/imagePullPolicy",
        json!("Always"),
    );
    check_update("Pod", image, pod(), &[]);
    check_update(
        "Pod",
        with(pod(), "/spec/restartPolicy", json!("Never")),
        pod(),
        &[&format!(
            "{POD_UPDATE}\n- spec.restartPolicy: \"Always\"\n+ spec.restartPolicy: \"Never\""
        )],
    );
    check_update(
        "Pod",
        with(
            pod(),
            "/spec/containers/0/env",
            json!([{"name": "A", "value": "1"}]),
        ),
        pod(),
        &[&format!(
            "{POD_UPDATE}\n+ spec.containers[0].env: [{{\"name\":\"A\",\"value\":\"1\"}}]"
        )],
    );
    check_update(
        "Pod",
        with(
            pod(),
            "/spec/containers",
            json!([{"name": "c", "image": "nginx"}, {"name": "d", "image": "nginx"}]),
        ),
        pod(),
        &["spec.containers: Forbidden: pod updates may not add or remove containers"],
    );
    let deadline = |n: i64| with(pod(), "/spec/activeDeadlineSeconds", json!(n));
    check_update("Pod", deadline(10), deadline(20), &[]);
    check_update("Pod", deadline(30), deadline(20), &["spec.activeDeadlineSeconds: Invalid value: 30: must be less than or equal to previous value"]);
    check_update("Pod", deadline(-1), deadline(20), &[
        "spec.activeDeadlineSeconds: Invalid value: -1: must be between 1 and 2147483647, inclusive",
        "spec.activeDeadlineSeconds: Invalid value: -1: must be between 0 and 2147483647, inclusive",
    ]);
    check_update("Pod", pod(), deadline(20), &["spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"]);
    let tol = |t: Value| with(pod(), "/spec/tolerations", t);
    let a =
        json!({"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    let b = json!({"key": "b", "operator": "Exists"});
    check_update(
        "Pod",
        tol(json!([a.clone(), b.clone()])),
        tol(json!([a.clone()])),
        &[],
    );
    check_update(
        "Pod",
        tol(json!([with(a.clone(), "/tolerationSeconds", json!(9))])),
        tol(json!([a.clone()])),
        &[],
    );
    check_update("Pod", tol(json!([b])), tol(json!([a])), &["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]);
    let gates = |g: Value| with(pod(), "/spec/schedulingGates", g);
    check_update("Pod", gates(json!([])), gates(json!([{"name": "a"}])), &[]);
    check_update("Pod", gates(json!([{"name": "b"}])), gates(json!([{"name": "a"}])), &[
        "spec.schedulingGates[0].name: Forbidden: only deletion is allowed, but found new scheduling gate 'b'",
    ]);
}

#[test]
fn workloads() {
    check("Deployment", deploy_ok(), &[]);
    check(
        "ReplicaSet",
        with(deploy_ok(), "/kind", json!("ReplicaSet")),
        &[],
    );
    check(
        "Deployment",
        deploy(json!({"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}})),
        &["spec.selector: Required value", "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"],
    );
    check("Deployment", with(deploy_ok(), "/spec/selector/matchLabels/app", json!("api")), &[
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
    ]);
    check("ReplicaSet", with(with(deploy_ok(), "/spec/replicas", json!(-1)), "/spec/template/metadata/labels", json!({})), &[
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.metadata.labels: Invalid value: map[string]string{}: `selector` does not match template `labels`",
    ]);
    check("Deployment", with(deploy_ok(), "/spec/selector", json!({})), &[
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
    ]);
    check(
        "Deployment",
        with(deploy_ok(), "/spec/selector", json!({"matchExpressions": [{"key": "app", "operator": "Foo", "values": ["web"]}]})),
        &[
            "spec.selector.matchExpressions[0].operator: Invalid value: \"Foo\": not a valid selector operator",
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"Foo\", Values:[]string{\"web\"}}}}: invalid label selector",
        ],
    );
    check(
        "Deployment",
        with(deploy_ok(), "/spec/selector", json!({"matchExpressions": [{"key": "app", "operator": "In"}, {"key": "x", "operator": "Exists", "values": ["a"]}]})),
        &[
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"In\", Values:[]string(nil)}, v1.LabelSelectorRequirement{Key:\"x\", Operator:\"Exists\", Values:[]string{\"a\"}}}}: invalid label selector",
        ],
    );
    check(
        "Deployment",
        with(with(deploy_ok(), "/spec/template/spec/restartPolicy", json!("Never")), "/spec/template/spec/activeDeadlineSeconds", json!(5)),
        &[
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
        ],
    );
    check(
        "Deployment",
        with(
            with(
                deploy_ok(),
                "/spec/template/spec/containers/0/name",
                json!("C"),
            ),
            "/spec/template/metadata/labels/x",
            json!("a b"),
        ),
        &[
            &format!("spec.template.labels: Invalid value: \"a b\": {LABEL_VALUE}"),
            &format!("spec.template.spec.containers[0].name: Invalid value: \"C\": {LABEL}"),
        ],
    );
    check("Deployment", with(deploy_ok(), "/spec/strategy", json!({"type": "Recreate", "rollingUpdate": {}})), &[
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
    ]);
    check("Deployment", with(deploy_ok(), "/spec/strategy", json!({"type": "Canary"})), &[
        "spec.strategy.type: Unsupported value: \"Canary\": supported values: \"Recreate\", \"RollingUpdate\"",
    ]);
    check("Deployment", with(deploy_ok(), "/spec/strategy", json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}})), &[
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
    ]);
    check("Deployment", with(deploy_ok(), "/spec/strategy", json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "110%", "maxSurge": "x", "y": -1}})), &[
        "spec.strategy.rollingUpdate.maxSurge: Invalid value: x: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 110%: must not be greater than 100%",
    ]);
    check("Deployment", with(deploy_ok(), "/spec/strategy", json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": -1, "maxSurge": 1}})), &[
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: -1: must be greater than or equal to 0",
    ]);
    check(
        "Deployment",
        with(
            with(deploy_ok(), "/spec/minReadySeconds", json!(10)),
            "/spec/progressDeadlineSeconds",
            json!(10),
        ),
        &["spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds"],
    );
    check(
        "Deployment",
        with(deploy_ok(), "/spec/revisionHistoryLimit", json!(-1)),
        &["spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0"],
    );
    check_update(
        "Deployment",
        with(deploy_ok(), "/spec/replicas", json!(3)),
        deploy_ok(),
        &[],
    );
    let other = with(
        with(
            deploy_ok(),
            "/spec/selector/matchLabels/app",
            json!("other"),
        ),
        "/spec/template/metadata/labels/app",
        json!("other"),
    );
    check_update("Deployment", other, deploy_ok(), &[
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"other\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
    ]);
}

#[test]
fn config_maps_and_secrets() {
    let cm = |data: Value| json!({"metadata": {"name": "c", "namespace": "d"}, "data": data});
    check(
        "ConfigMap",
        cm(json!({"a.conf": "x", "B_2": "y", "-": "z"})),
        &[],
    );
    check(
        "ConfigMap",
        cm(json!({"a b": "x", "..": "y", "..a": "z"})),
        &[
            &format!("data[a b]: Invalid value: \"a b\": {CONFIG_KEY}"),
            "data[..]: Invalid value: \"..\": must not be '..'",
            "data[..a]: Invalid value: \"..a\": must not start with '..'",
        ],
    );
    check(
        "ConfigMap",
        with(cm(json!({"k": "x"})), "/binaryData", json!({"k": "eA=="})),
        &["data[k]: Invalid value: \"k\": duplicate of key present in binaryData"],
    );
    check(
        "ConfigMap",
        cm(json!({"big": "x".repeat(1024 * 1024 + 1)})),
        &[": Too long: must have at most 1048576 bytes"],
    );
    let immutable = |data: Value, imm: bool| with(cm(data), "/immutable", json!(imm));
    check_update(
        "ConfigMap",
        cm(json!({"a": "2"})),
        cm(json!({"a": "1"})),
        &[],
    );
    check_update(
        "ConfigMap",
        immutable(json!({"a": "2"}), false),
        immutable(json!({"a": "1"}), true),
        &[
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set",
        ],
    );

    let secret = |ty: &str, data: Value| json!({"metadata": {"name": "s", "namespace": "d"}, "type": ty, "data": data});
    check(
        "Secret",
        secret("Opaque", json!({"password": "aHVudGVyMg=="})),
        &[],
    );
    check(
        "Secret",
        secret("Opaque", json!({"a/b": "eA=="})),
        &[&format!("data[a/b]: Invalid value: \"a/b\": {CONFIG_KEY}")],
    );
    check(
        "Secret",
        secret("kubernetes.io/tls", json!({})),
        &[
            "data[tls.crt]: Required value",
            "data[tls.key]: Required value",
        ],
    );
    check(
        "Secret",
        with(
            secret("kubernetes.io/tls", json!({"tls.crt": "eA=="})),
            "/stringData",
            json!({"tls.key": "k"}),
        ),
        &[],
    );
    check(
        "Secret",
        secret("kubernetes.io/basic-auth", json!({})),
        &[
            "data[username]: Required value",
            "data[password]: Required value",
        ],
    );
    check(
        "Secret",
        secret("kubernetes.io/basic-auth", json!({"password": ""})),
        &[],
    );
    check(
        "Secret",
        secret("kubernetes.io/ssh-auth", json!({"ssh-privatekey": ""})),
        &["data[ssh-privatekey]: Required value"],
    );
    check(
        "Secret",
        secret("kubernetes.io/dockerconfigjson", json!({})),
        &["data[.dockerconfigjson]: Required value"],
    );
    check(
        "Secret",
        secret(
            "kubernetes.io/dockerconfigjson",
            json!({".dockerconfigjson": "eyJhdXRocyI6e319"}),
        ),
        &[],
    );
    check("Secret", secret("kubernetes.io/dockercfg", json!({".dockercfg": "bm90IGpzb24="})), &[
        "data[.dockercfg]: Invalid value: \"<secret contents redacted>\": expected ident at line 1 column 2",
    ]);
    check(
        "Secret",
        secret("kubernetes.io/service-account-token", json!({})),
        &["metadata.annotations[kubernetes.io/service-account.name]: Required value"],
    );
    check(
        "Secret",
        with(
            secret("Opaque", json!({})),
            "/stringData",
            json!({"big": "x".repeat(1024 * 1024 + 1)}),
        ),
        &["data: Too long: must have at most 1048576 bytes"],
    );
    check_update(
        "Secret",
        secret(
            "kubernetes.io/tls",
            json!({"tls.crt": "eA==", "tls.key": "eA=="}),
        ),
        secret("Opaque", json!({})),
        &["type: Invalid value: \"kubernetes.io/tls\": field is immutable"],
    );
    check_update(
        "Secret",
        with(
            secret("Opaque", json!({"a": "eQ=="})),
            "/immutable",
            json!(true),
        ),
        with(
            secret("Opaque", json!({"a": "eA=="})),
            "/immutable",
            json!(true),
        ),
        &["data: Forbidden: field is immutable when `immutable` is set"],
    );
}

#[test]
fn endpoints_events_leases() {
    let ep =
        |subsets: Value| json!({"metadata": {"name": "e", "namespace": "d"}, "subsets": subsets});
    check(
        "Endpoints",
        ep(
            json!([{"addresses": [{"ip": "10.1.0.5", "hostname": "web-0", "nodeName": "n1"}], "ports": [{"port": 80}]}]),
        ),
        &[],
    );
    check(
        "Endpoints",
        ep(json!([{"ports": [{"port": 0}, {"name": "b", "port": 81, "protocol": "HTTP"}]}, {"notReadyAddresses": [{"ip": "x", "hostname": "A"}]}])),
        &[
            "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
            "subsets[0].ports[0].name: Required value",
            "subsets[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "subsets[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "subsets[1].notReadyAddresses[0].ip: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            &format!("subsets[1].notReadyAddresses[0].hostname: Invalid value: \"A\": {LABEL}"),
        ],
    );
    let slice = |ty: &str, endpoints: Value, ports: Value| json!({"metadata": {"name": "s", "namespace": "d"}, "addressType": ty, "endpoints": endpoints, "ports": ports});
    check(
        "EndpointSlice",
        slice(
            "IPv4",
            json!([{"addresses": ["10.1.0.5"]}]),
            json!([{"name": "http", "port": 80}]),
        ),
        &[],
    );
    check(
        "EndpointSlice",
        slice(
            "IPv4",
            json!([{"addresses": ["::1"]}, {"addresses": []}]),
            json!([{"name": "a", "port": 70000}, {"name": "a", "port": 81}]),
        ),
        &[
            "endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address",
            "endpoints[1].addresses: Required value: must contain at least 1 address",
            "ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "ports[1].name: Duplicate value: \"a\"",
        ],
    );
    check(
        "EndpointSlice",
        json!({"metadata": {"name": "s", "namespace": "d"}}),
        &["addressType: Required value"],
    );
    check("EndpointSlice", slice("IP", json!([]), json!([])), &[
        "addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
    ]);

    let event = |ns: &str, involved: &str| json!({"metadata": {"name": "e.1", "namespace": ns}, "involvedObject": {"kind": "Pod", "namespace": involved}});
    check("Event", event("default", "default"), &[]);
    check("Event", event("default", ""), &[]);
    check(
        "Event",
        event("dev", "prod"),
        &["involvedObject.namespace: Invalid value: \"prod\": does not match event.namespace"],
    );
    check(
        "Event",
        with(
            event("dev", "dev"),
            "/eventTime",
            json!("2024-01-01T00:00:00.000000Z"),
        ),
        &[
            "reportingComponent: Required value",
            "reportingComponent: Invalid value: \"\": name part must be non-empty",
            &format!("reportingComponent: Invalid value: \"\": {NAME_PART}"),
            "reportingInstance: Required value",
            "action: Required value",
            "reason: Required value",
        ],
    );

    let lease = |spec: Value| json!({"metadata": {"name": "l", "namespace": "kube-node-lease"}, "spec": spec});
    check(
        "Lease",
        lease(json!({"holderIdentity": "n1", "leaseDurationSeconds": 40})),
        &[],
    );
    check(
        "Lease",
        lease(json!({"leaseDurationSeconds": 0, "leaseTransitions": -1})),
        &[
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
        ],
    );
    check(
        "ServiceAccount",
        json!({"metadata": {"name": "default", "namespace": "d"}}),
        &[],
    );
    check(
        "IngressClass",
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
        &[],
    );
}

#[test]
fn unknown() {
    check_unknown("Pod", pod(), Ok(&[]));
    check_unknown(
        "Pod",
        pod_with(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": 1, "memory": 0.5}}}]}),
        ),
        Ok(&[]),
    );
    check_unknown(
        "Pod",
        json!({"apiVersion": "v1", "kind": "Pod", "foo": 1, "bar": null,
            "metadata": {"name": "p", "resourceVersion": "5", "labels": {"any.key/x": "v"}, "uid": "u", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "x"}, {"name": "d", "imag": "x", "ports": [{"containerPort": 80, "hostport": 1}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "weird": {"a": 1}}}),
        Ok(&[
            "foo",
            "spec.containers[1].imag",
            "spec.containers[1].ports[0].hostport",
            "status.weird",
        ]),
    );
    check_unknown(
        "Deployment",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x", "extra": {}}]}}}}),
        Ok(&["spec.template.spec.containers[0].extra"]),
    );
    check_unknown(
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret", "data": {"a": "eA=="}, "stringData": {"b": "c"}}),
        Ok(&[]),
    );
    check_unknown(
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}, "Data": {}}),
        Ok(&["Data"]),
    );
    check_unknown(
        "Service",
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": "http"}], "type": "ClusterIP"}}),
        Ok(&[]),
    );
    for kind in [
        "Namespace",
        "Node",
        "Endpoints",
        "ServiceAccount",
        "Event",
        "EndpointSlice",
        "ReplicaSet",
        "Ingress",
        "IngressClass",
        "NetworkPolicy",
        "Lease",
    ] {
        let r = res(kind);
        let mut obj = json!({"apiVersion": r.api_version(), "kind": kind, "metadata": {"name": "x"}, "zzz": 1});
        if kind == "EndpointSlice" {
            obj["addressType"] = json!("IPv4");
            obj["endpoints"] = json!([]);
        }
        assert_eq!(
            unknown_fields(r, &obj),
            Ok(vec!["zzz".to_string()]),
            "{kind}"
        );
    }
    let secret_err = unknown_fields(
        res("Secret"),
        &json!({"apiVersion": "v1", "kind": "Secret", "data": {"a": "!!!"}}),
    );
    assert!(
        secret_err.is_err(),
        "bad base64 does not decode: {secret_err:?}"
    );
    let type_err = unknown_fields(
        res("Pod"),
        &json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": 5}]}}),
    );
    assert!(type_err.is_err_and(|e| e.contains("invalid type")));
    let kind_err = unknown_fields(res("Pod"), &json!({"apiVersion": "v1", "kind": "Service"}));
    assert!(kind_err.is_err());
}

/// An update through pods/ephemeralcontainers: its own checks, then validate_update's.
fn check_ephemeral(new: Value, old: Value, expect: &[&str]) {
    let got: Vec<String> = crate::validation::validate_ephemeral_containers(&new, &old)
        .iter()
        .chain(validate_update(res("Pod"), &new, &old).iter())
        .map(FieldError::message)
        .collect();
    assert_eq!(got, expect, "ephemeral update: {new}");
}

#[test]
fn ephemeral_container_updates() {
    let ecs = |v: Value| with(pod(), "/spec/ephemeralContainers", v);
    let dbg = json!({"name": "dbg", "image": "busybox", "targetContainerName": "c"});
    // Adding one (what kubectl debug does), and keeping it when adding another.
    check_ephemeral(ecs(json!([dbg])), pod(), &[]);
    let two = json!([dbg, {"name": "dbg2", "image": "busybox"}]);
    check_ephemeral(ecs(two), ecs(json!([dbg])), &[]);
    // Removing or changing one that exists.
    check_ephemeral(
        ecs(json!([])),
        ecs(json!([dbg])),
        &["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed"],
    );
    let changed = json!([{"name": "dbg", "image": "other"}]);
    check_ephemeral(
        ecs(changed),
        ecs(json!([dbg])),
        &["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be changed"],
    );
    // A name taken by a container, no image, a port, an unknown target.
    let bad = json!([{"name": "c", "image": "busybox"},
        {"name": "e2", "ports": [{"containerPort": 80}], "targetContainerName": "nope"}]);
    check_ephemeral(
        ecs(bad),
        pod(),
        &[
            "spec.ephemeralContainers[0].name: Duplicate value: \"c\"",
            "spec.ephemeralContainers[1].image: Required value",
            "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
            "spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"",
        ],
    );
}

const WILDCARD: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn ingress(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

/// An Ingress with one rule (no host) of one path.
fn ingress_path(path: Value) -> Value {
    ingress(json!({"rules": [{"http": {"paths": [path]}}]}))
}

fn svc_backend(name: &str, port: Value) -> Value {
    json!({"service": {"name": name, "port": port}})
}

fn ingress_class(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"}, "spec": spec})
}

#[test]
fn ingresses_accepted() {
    let backend = svc_backend("test", json!({"number": 80}));
    let examples = [
        // The examples of the Kubernetes Ingress documentation.
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "minimal-ingress", "namespace": "default",
                "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
            "spec": {"ingressClassName": "nginx-example", "rules": [{"http": {"paths": [
                {"path": "/testpath", "pathType": "Prefix", "backend": backend}]}}]}}),
        ingress(json!({"defaultBackend": backend})),
        ingress(json!({
            "defaultBackend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static-assets"}},
            "rules": [{"http": {"paths": [{"path": "/icons", "pathType": "ImplementationSpecific",
                "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "icon-assets"}}}]}}]})),
        ingress(json!({"rules": [
            {"host": "foo.bar.com", "http": {"paths": [{"pathType": "Prefix", "path": "/bar",
                "backend": svc_backend("service1", json!({"number": 80}))}]}},
            {"host": "*.foo.com", "http": {"paths": [{"pathType": "Prefix", "path": "/foo",
                "backend": svc_backend("service2", json!({"number": 80}))}]}},
        ]})),
        ingress(json!({
            "tls": [{"hosts": ["https-example.foo.com", "*.foo.com"], "secretName": "testsecret-tls"}],
            "rules": [{"host": "https-example.foo.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": svc_backend("service1", json!({"name": "http"}))}]}}]})),
        // A rule with only a host, a path of every type, a named port.
        ingress(json!({"defaultBackend": backend, "rules": [
            {"host": "only.host.example"},
            {"http": {"paths": [
                {"path": "/exact/a.b", "pathType": "Exact", "backend": backend},
                {"path": "/", "pathType": "Prefix", "backend": backend},
                {"pathType": "ImplementationSpecific", "backend": backend},
                {"path": "/re(gex)?.*", "pathType": "ImplementationSpecific", "backend": backend},
            ]}},
        ]})),
        // The legacy annotation alone, and agreeing with ingressClassName.
        with(
            ingress(json!({"defaultBackend": backend, "ingressClassName": "nginx"})),
            "/metadata/annotations",
            json!({"kubernetes.io/ingress.class": "nginx"}),
        ),
        with(
            ingress(json!({"defaultBackend": backend})),
            "/status",
            json!({"loadBalancer": {"ingress": [{"ip": "172.29.0.10"}, {"hostname": "lb.example.com", "ports": [{"port": 80, "protocol": "TCP"}]}]}}),
        ),
    ];
    for obj in examples {
        check("Ingress", obj, &[]);
    }
}

#[test]
fn ingresses_rejected() {
    let backend = svc_backend("test", json!({"number": 80}));
    let p = "spec.rules[0].http.paths[0]";
    let prefix = |path: &str| json!({"path": path, "pathType": "Prefix", "backend": backend});
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            ingress(json!({})),
            vec!["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified".into()],
        ),
        (
            ingress(json!({"rules": []})),
            vec!["spec: Invalid value: []networking.IngressRule{}: either `defaultBackend` or `rules` must be specified".into()],
        ),
        (
            ingress(json!({"rules": [{"host": "1.2.3.4"}, {"host": "010.1.1.1"}, {"host": "::1"}]})),
            vec![
                "spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address".into(),
                "spec.rules[1].host: Invalid value: \"010.1.1.1\": must be a DNS name, not an IP address".into(),
                "spec.rules[2].host: Invalid value: \"::1\": must be a DNS name, not an IP address".into(),
                format!("spec.rules[2].host: Invalid value: \"::1\": {SUBDOMAIN}"),
            ],
        ),
        (
            ingress(json!({"rules": [{"host": "*.*.foo.com"}, {"host": "foo.*.com"}, {"host": "*foo.com"}, {"host": "*"}, {"host": "Foo.com"}]})),
            vec![
                format!("spec.rules[0].host: Invalid value: \"*.*.foo.com\": {WILDCARD}"),
                format!("spec.rules[1].host: Invalid value: \"foo.*.com\": {WILDCARD}"),
                format!("spec.rules[2].host: Invalid value: \"*foo.com\": {WILDCARD}"),
                format!("spec.rules[3].host: Invalid value: \"*\": {WILDCARD}"),
                format!("spec.rules[4].host: Invalid value: \"Foo.com\": {SUBDOMAIN}"),
            ],
        ),
        (
            ingress(json!({"rules": [{"host": "a.com", "http": {}}, {"http": {"paths": []}}]})),
            vec![
                "spec.rules[0].http.paths: Required value".into(),
                "spec.rules[1].http.paths: Required value".into(),
            ],
        ),
        (
            // Without a pathType the backend is not looked at.
            ingress_path(json!({"path": "/"})),
            vec![format!("{p}.pathType: Required value: pathType must be specified")],
        ),
        (
            ingress_path(json!({"path": "/", "pathType": "Regex", "backend": backend})),
            vec![format!("{p}.pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"")],
        ),
        (
            ingress_path(prefix("foo")),
            vec![format!("{p}.path: Invalid value: \"foo\": must be an absolute path")],
        ),
        (
            ingress_path(json!({"pathType": "Exact", "backend": backend})),
            vec![format!("{p}.path: Invalid value: \"\": must be an absolute path")],
        ),
        (
            ingress_path(json!({"path": "foo", "pathType": "ImplementationSpecific", "backend": backend})),
            vec![format!("{p}.path: Invalid value: \"foo\": must be an absolute path")],
        ),
        (
            ingress_path(prefix("/a//b/./c/../d%2fe%2F")),
            ["//", "/./", "/../", "%2f", "%2F"]
                .iter()
                .map(|s| format!("{p}.path: Invalid value: \"/a//b/./c/../d%2fe%2F\": must not contain '{s}'"))
                .collect(),
        ),
        (
            ingress(json!({"rules": [{"http": {"paths": [prefix("/a/.."), prefix("/a/.")]}}]})),
            vec![
                format!("{p}.path: Invalid value: \"/a/..\": cannot end with '/..'"),
                "spec.rules[0].http.paths[1].path: Invalid value: \"/a/.\": cannot end with '/.'".into(),
            ],
        ),
        (
            ingress(json!({"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}, "resource": {"kind": "K", "name": "n"}}})),
            vec!["spec.defaultBackend: Invalid value: \"\": cannot set both resource and service backends".into()],
        ),
        (
            ingress(json!({"defaultBackend": {}})),
            vec!["spec.defaultBackend: Invalid value: \"\": resource or service backend is required".into()],
        ),
        (
            ingress_path(json!({"path": "/", "pathType": "Prefix"})),
            vec![format!("{p}.backend: Invalid value: \"\": resource or service backend is required")],
        ),
        (
            ingress(json!({"defaultBackend": svc_backend("Web", json!({"number": 80})),
                "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": svc_backend("3rd-party", json!({"number": 80}))}]}}]})),
            vec![
                format!("spec.defaultBackend.service.name: Invalid value: \"Web\": {DNS1035}"),
                format!("{p}.backend.service.name: Invalid value: \"3rd-party\": {DNS1035}"),
            ],
        ),
        (
            ingress(json!({"defaultBackend": {"service": {"port": {"number": 80}}}})),
            vec!["spec.defaultBackend.service.name: Required value".into()],
        ),
        (
            ingress(json!({"defaultBackend": svc_backend("s", json!({"name": "http", "number": 80}))})),
            vec!["spec.defaultBackend: Invalid value: \"\": cannot set both port name & port number".into()],
        ),
        (
            ingress(json!({"defaultBackend": svc_backend("s", json!({}))})),
            vec!["spec.defaultBackend: Required value: port name or number is required".into()],
        ),
        (
            ingress(json!({"defaultBackend": {"service": {"name": "s"}}})),
            vec!["spec.defaultBackend: Required value: port name or number is required".into()],
        ),
        (
            ingress(json!({"defaultBackend": svc_backend("s", json!({"number": 70000}))})),
            vec!["spec.defaultBackend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive".into()],
        ),
        (
            ingress(json!({"defaultBackend": svc_backend("s", json!({"name": "HTTP"}))})),
            vec![
                "spec.defaultBackend.service.port.name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
                "spec.defaultBackend.service.port.name: Invalid value: \"HTTP\": must contain at least one letter (a-z)".into(),
            ],
        ),
        (
            ingress(json!({"defaultBackend": {"resource": {}}})),
            vec![
                "spec.defaultBackend.resource.kind: Required value".into(),
                "spec.defaultBackend.resource.name: Required value".into(),
            ],
        ),
        (
            ingress(json!({"defaultBackend": {"resource": {"apiGroup": "Example.com", "kind": "a/b%", "name": ".."}}})),
            vec![
                format!("spec.defaultBackend.resource.apiGroup: Invalid value: \"Example.com\": {SUBDOMAIN}"),
                "spec.defaultBackend.resource.kind: Invalid value: \"a/b%\": may not contain '/'".into(),
                "spec.defaultBackend.resource.kind: Invalid value: \"a/b%\": may not contain '%'".into(),
                "spec.defaultBackend.resource.name: Invalid value: \"..\": may not be '..'".into(),
            ],
        ),
        (
            ingress(json!({"defaultBackend": backend, "tls": [{"hosts": ["*.foo.com", "bad_host", "*.*.com"], "secretName": "Bad"}]})),
            vec![
                format!("spec.tls[0].hosts[1]: Invalid value: \"bad_host\": {SUBDOMAIN}"),
                format!("spec.tls[0].hosts[2]: Invalid value: \"*.*.com\": {WILDCARD}"),
                format!("spec.tls[0].secretName: Invalid value: \"Bad\": {SUBDOMAIN}"),
            ],
        ),
        (
            ingress(json!({"defaultBackend": backend, "ingressClassName": ""})),
            vec![format!("spec.ingressClassName: Invalid value: \"\": {SUBDOMAIN}")],
        ),
        (
            with(
                ingress(json!({"defaultBackend": backend, "ingressClassName": "other"})),
                "/metadata/annotations",
                json!({"kubernetes.io/ingress.class": "nginx"}),
            ),
            vec!["annotations.kubernetes.io/ingress.class: Invalid value: \"nginx\": must match `ingressClassName` when both are specified".into()],
        ),
        (
            with(
                ingress(json!({"defaultBackend": backend})),
                "/status",
                json!({"loadBalancer": {"ingress": [{"ip": "10.0.0"}, {"hostname": "10.0.0.1"}]}}),
            ),
            vec![
                "status.loadBalancer.ingress[0].ip: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
                "status.loadBalancer.ingress[1].hostname: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address".into(),
            ],
        ),
    ];
    for (obj, expect) in cases {
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        check("Ingress", obj, &expect);
    }
}

#[test]
fn ingress_invalid_message() {
    let errs = validate_create(res("Ingress"), &ingress_path(json!({"path": "/"})));
    assert_eq!(
        format!("The Ingress \"web\" is invalid: {}", aggregate_message(&errs)),
        "The Ingress \"web\" is invalid: spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
    );
    assert_eq!(errs[0].reason(), "FieldValueRequired");
}

#[test]
fn ingress_updates() {
    let backend = svc_backend("test", json!({"number": 80}));
    // What the stored object already had is let through; the same on create is not.
    let bad_wildcard = ingress(
        json!({"rules": [{"host": "*.foo.com", "http": {"paths": [{"path": "foo", "pathType": "Prefix", "backend": backend}]}}]}),
    );
    check_update("Ingress", bad_wildcard.clone(), bad_wildcard.clone(), &[]);
    check(
        "Ingress",
        bad_wildcard.clone(),
        &["spec.rules[0].http.paths[0].path: Invalid value: \"foo\": must be an absolute path"],
    );
    let bad_secret =
        ingress(json!({"defaultBackend": backend, "tls": [{"secretName": "Bad_Name"}]}));
    check_update("Ingress", bad_secret.clone(), bad_secret, &[]);
    let relaxed =
        ingress(json!({"defaultBackend": svc_backend("3rd-party", json!({"number": 80}))}));
    check_update(
        "Ingress",
        ingress(json!({"defaultBackend": svc_backend("4th-party", json!({"number": 80}))})),
        relaxed,
        &[],
    );
    // Otherwise an update is checked as a create, but for the class annotation.
    let ok = ingress(json!({"defaultBackend": backend}));
    check_update(
        "Ingress",
        ingress(json!({"defaultBackend": backend, "rules": [{"host": "1.2.3.4"}]})),
        ok.clone(),
        &["spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address"],
    );
    let annotated = with(
        ingress(json!({"defaultBackend": backend, "ingressClassName": "other"})),
        "/metadata/annotations",
        json!({"kubernetes.io/ingress.class": "nginx"}),
    );
    check_update("Ingress", annotated, ok, &[]);
}

#[test]
fn ingress_classes() {
    let long = format!("a.io/{}", "x".repeat(246));
    let params = |p: Value| {
        ingress_class(json!({"controller": "example.com/ingress-controller", "parameters": p}))
    };
    let cases: Vec<(Value, Vec<String>)> = vec![
        // The examples of the Kubernetes documentation.
        (
            params(json!({"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"})),
            vec![],
        ),
        (
            params(json!({"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-config",
                "scope": "Namespace", "namespace": "external-configuration"})),
            vec![],
        ),
        (ingress_class(json!({"controller": "k8s.io/ingress-nginx"})), vec![]),
        (
            ingress_class(json!({})),
            vec!["spec.controller: Required value".into()],
        ),
        (
            ingress_class(json!({"controller": "nginx"})),
            vec!["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")".into()],
        ),
        (
            ingress_class(json!({"controller": "acme.io/"})),
            vec!["spec.controller: Invalid value: \"acme.io/\": must be a domain-prefixed path (such as \"acme.io/foo\")".into()],
        ),
        (
            ingress_class(json!({"controller": "Acme.io/foo bar"})),
            vec![
                format!("spec.controller: Invalid value: \"Acme.io\": {SUBDOMAIN}"),
                "spec.controller: Invalid value: \"foo bar\": Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')".into(),
            ],
        ),
        (
            ingress_class(json!({"controller": long})),
            vec!["spec.controller: Too long: must have at most 250 bytes".into()],
        ),
        (
            params(json!({})),
            vec![
                "spec.parameters.kind: Required value".into(),
                "spec.parameters.name: Required value".into(),
            ],
        ),
        (
            params(json!({"apiGroup": "", "kind": "K", "name": "n/x"})),
            vec![
                format!("spec.parameters.apiGroup: Invalid value: \"\": {SUBDOMAIN}"),
                "spec.parameters.name: Invalid value: \"n/x\": may not contain '/'".into(),
            ],
        ),
        (
            params(json!({"kind": "K", "name": "n", "scope": "Namespace"})),
            vec!["spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'".into()],
        ),
        (
            params(json!({"kind": "K", "name": "n", "scope": "Namespace", "namespace": "Bad_NS"})),
            vec![format!("spec.parameters.namespace: Invalid value: \"Bad_NS\": {LABEL}")],
        ),
        (
            // Defaulting makes the scope Cluster.
            params(json!({"kind": "K", "name": "n", "namespace": "ns"})),
            vec!["spec.parameters.namespace: Forbidden: `parameters.scope` is set to 'Cluster'".into()],
        ),
        (
            params(json!({"kind": "K", "name": "n", "scope": "Global"})),
            vec!["spec.parameters.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespace\"".into()],
        ),
        (
            with(ingress_class(json!({"controller": "a.io/b"})), "/metadata/namespace", json!("default")),
            vec!["metadata.namespace: Forbidden: not allowed on this type".into()],
        ),
    ];
    for (obj, expect) in cases {
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        check("IngressClass", obj, &expect);
    }
}

#[test]
fn ingress_class_updates() {
    let old = ingress_class(json!({"controller": "a.io/x"}));
    check_update(
        "IngressClass",
        ingress_class(json!({"controller": "a.io/x", "parameters": {"kind": "K", "name": "n"}})),
        old.clone(),
        &[],
    );
    check_update(
        "IngressClass",
        ingress_class(json!({"controller": "b.io/x"})),
        old.clone(),
        &["spec.controller: Invalid value: \"b.io/x\": field is immutable"],
    );
    check_update(
        "IngressClass",
        ingress_class(json!({})),
        old,
        &[
            "spec.controller: Invalid value: \"\": field is immutable",
            "spec.controller: Required value",
        ],
    );
}
