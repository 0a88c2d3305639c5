//! The cluster add-ons a new cluster gets, as the objects kubeadm's addon phase creates:
//! the DNS (a `coredns` Deployment in kube-system running kins-dns, its ServiceAccount,
//! the `coredns` ConfigMap with a Corefile people edit, and the `kube-dns` Service), and
//! the ingress controller (the `kins-ingress` Deployment in kube-system running
//! `kins ingress`, its ServiceAccount, its LoadBalancer Service, and the IngressClass
//! `kins` marked default).

use serde_json::{json, Value};

/// kubeadm's default Corefile (the one the CKA course edits).
pub const COREFILE: &str = ".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
";

/// The image of the DNS add-on: built on the node from the running kins binary.
pub fn dns_image() -> String {
    format!("kins.dev/kins-dns:{}", env!("CARGO_PKG_VERSION"))
}

/// The DNS add-on's objects, all in kube-system, in creation order: `(plural, group,
/// object)`. `dns_ip` is the `kube-dns` Service's ClusterIP (the service CIDR's tenth
/// address by kubeadm's convention).
pub fn dns_objects(dns_ip: &str) -> Vec<(&'static str, &'static str, Value)> {
    let labels = json!({"k8s-app": "kube-dns"});
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "coredns", "namespace": "kube-system"}});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": COREFILE}});
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"selector": labels, "clusterIP": dns_ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}});
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "coredns",
                    // The node's resolvers (loopback stubs replaced), never itself.
                    "dnsPolicy": "Default",
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "coredns",
                        "image": dns_image(),
                        "imagePullPolicy": "IfNotPresent",
                        "env": [
                            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")}],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}],
                        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                        // kins-dns watches the ConfigMap through the API (a change applies at
                        // once); the file is there for people to read, as in kubeadm.
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                            "initialDelaySeconds": 60, "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": 5},
                        // kubeadm probes every 10 s; every second here, so a new cluster
                        // resolves names within a second of the server being ready.
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"},
                            "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                        "securityContext": {"allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                            "readOnlyRootFilesystem": true}}],
                    "volumes": [{"name": "config-volume",
                        "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}]}}}});
    vec![
        ("serviceaccounts", "", sa),
        ("configmaps", "", cm),
        ("services", "", svc),
        ("deployments", "apps", deploy),
    ]
}

/// The image of the ingress add-on: built on the node from the running kins binary.
pub fn ingress_image() -> String {
    format!("kins.dev/kins-ingress:{}", env!("CARGO_PKG_VERSION"))
}

/// The controller name of IngressClass `kins`.
pub const INGRESS_CONTROLLER: &str = "kins.dev/ingress-controller";

/// The ingress add-on's objects in creation order: `(plural, group, object)`; the
/// namespaced ones in kube-system.
pub fn ingress_objects() -> Vec<(&'static str, &'static str, Value)> {
    let labels = json!({"app.kubernetes.io/name": "kins-ingress", "app.kubernetes.io/component": "controller"});
    let meta = |name: &str| json!({"name": name, "namespace": "kube-system", "labels": labels});
    let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "kins", "labels": labels,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": INGRESS_CONTROLLER}});
    let sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("kins-ingress")});
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("kins-ingress"),
        "spec": {"type": "LoadBalancer", "selector": labels, "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]}});
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("kins-ingress"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "kins-ingress",
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "controller",
                        "image": ingress_image(),
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--publish-service=kube-system/kins-ingress"],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")}],
                        "ports": [
                            {"name": "http", "containerPort": 80, "protocol": "TCP"},
                            {"name": "https", "containerPort": 443, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 10254, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 10254, "scheme": "HTTP"},
                            "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 10254, "scheme": "HTTP"},
                            "initialDelaySeconds": 30, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 5},
                        "resources": {"requests": {"cpu": "100m", "memory": "90Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                            "readOnlyRootFilesystem": true}}]}}}});
    vec![
        ("ingressclasses", "networking.k8s.io", class),
        ("serviceaccounts", "", sa),
        ("services", "", svc),
        ("deployments", "apps", deploy),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_objects_are_valid_and_agree() {
        let objs = dns_objects("10.96.0.10");
        let kinds: Vec<&str> = objs.iter().filter_map(|o| o.2["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ConfigMap", "Service", "Deployment"]
        );
        for (plural, group, obj) in &objs {
            let r = crate::RESOURCES
                .iter()
                .find(|r| r.plural == *plural && r.group == *group)
                .expect("a served resource");
            assert_eq!(obj["kind"], r.kind);
            assert_eq!(obj["metadata"]["namespace"], "kube-system");
        }
        let svc = &objs[2].2;
        let deploy = &objs[3].2;
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(
            svc["spec"]["selector"],
            deploy["spec"]["template"]["metadata"]["labels"]
        );
        let pod = &deploy["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], objs[0].2["metadata"]["name"]);
        assert_eq!(
            pod["volumes"][0]["configMap"]["name"],
            objs[1].2["metadata"]["name"]
        );
        assert_eq!(pod["containers"][0]["image"], dns_image());
    }

    #[test]
    fn the_ingress_objects_are_served_kinds_and_agree() {
        let objs = ingress_objects();
        for (plural, group, obj) in &objs {
            let r = crate::RESOURCES
                .iter()
                .find(|r| r.plural == *plural && r.group == *group)
                .expect("a served resource");
            assert_eq!(obj["kind"], r.kind);
            assert_eq!(obj["metadata"]["namespace"].is_string(), r.namespaced);
        }
        let class = &objs[0].2;
        assert_eq!(class["spec"]["controller"], INGRESS_CONTROLLER);
        assert_eq!(
            class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
            "true"
        );
        let (svc, deploy) = (&objs[2].2, &objs[3].2);
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(
            svc["spec"]["selector"],
            deploy["spec"]["template"]["metadata"]["labels"]
        );
        let pod = &deploy["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], objs[1].2["metadata"]["name"]);
        let c = &pod["containers"][0];
        assert_eq!(c["image"], ingress_image());
        let ports: Vec<&Value> = c["ports"].as_array().expect("ports").iter().collect();
        for p in svc["spec"]["ports"].as_array().expect("ports") {
            assert!(
                ports
                    .iter()
                    .any(|cp| cp["containerPort"] == p["targetPort"]),
                "{p}"
            );
        }
    }
}
