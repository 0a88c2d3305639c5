//! From a pod and one of its containers to what the runtime runs: the command line
//! (command/args combined with the image's ENTRYPOINT/CMD as Kubernetes does, `$(VAR)`
//! expanded), the environment (image, service links, `env` with `valueFrom`), the user,
//! capabilities, resources and the pod's /etc files. Pure: no IO, so every rule is a table
//! test.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Service};

/// What the image says about how to run it (OCI config).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD); `args` replaces CMD.
pub fn command_line(c: &Container, image: &ImageDefaults, env: &[(String, String)]) -> Vec<String> {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let mut v = if !command.is_empty() {
        let mut v = command;
        v.extend(args);
        v
    } else if !args.is_empty() {
        let mut v = image.entrypoint.clone();
        v.extend(args);
        v
    } else {
        let mut v = image.entrypoint.clone();
        v.extend(image.cmd.clone());
        v
    };
    // Only the pod's own command/args are expanded, never the image's.
    let from_pod = c.command.as_ref().is_some_and(|c| !c.is_empty())
        || c.args.as_ref().is_some_and(|a| !a.is_empty());
    if from_pod {
        let map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let skip = if c.command.as_ref().is_some_and(|c| !c.is_empty()) {
            0
        } else {
            image.entrypoint.len()
        };
        for a in v.iter_mut().skip(skip) {
            *a = expand(a, &map);
        }
    }
    v
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes a `$`,
/// anything else is left as written.
pub fn expand(s: &str, vars: &BTreeMap<&str, &str>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                        i += 3 + end;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Service links as the kubelet injects them, for the services of the pod's namespace
/// (all when enableServiceLinks, none otherwise) and the `kubernetes` service.
pub fn service_env(services: &[Service], namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut picked: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        let name = s.metadata.name.clone().unwrap_or_default();
        let master = ns == "default" && name == "kubernetes";
        if (ns == namespace && links) || master {
            // The pod's own namespace wins over the master service of the same name.
            if ns == namespace || !picked.contains_key(&name) {
                picked.insert(name, s);
            }
        }
    }
    let mut out = Vec::new();
    for (name, s) in picked {
        let Some(spec) = &s.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let n = name.to_uppercase().replace('-', "_");
        out.push((format!("{n}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{n}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|s| !s.is_empty()) {
                out.push((
                    format!("{n}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{n}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{n}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The value of a downward-API field path (`fieldRef`), as Kubernetes resolves it.
pub fn field_ref(pod: &Pod, pod_ip: &str, host_ip: &str, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    };
    let all = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => all(&m.labels),
        "metadata.annotations" => all(&m.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        p => {
            let sub = |prefix: &str| {
                p.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix("']"))
                    .map(str::to_string)
            };
            if let Some(k) = sub("metadata.labels['") {
                label(&m.labels, &k)
            } else if let Some(k) = sub("metadata.annotations['") {
                label(&m.annotations, &k)
            } else {
                return Err(format!("unsupported fieldPath: {p}"));
            }
        }
    })
}

/// A Kubernetes quantity ("128Mi", "1G", "500m", "0.5", "1e3") as a number.
pub fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suf, mul) in suffixes {
        if let Some(n) = s.strip_suffix(suf) {
            return n.parse::<f64>().ok().map(|v| v * mul);
        }
    }
    s.parse::<f64>().ok()
}

/// Memory limit in bytes, CPU limit and request in millicores.
pub fn resources(c: &Container) -> (Option<u64>, Option<u64>, Option<u64>) {
    let r = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|q| quantity(&q.0))
        };
    let mem = get(&r.limits, "memory").map(|v| v as u64);
    let cpu = get(&r.limits, "cpu").map(|v| (v * 1000.0).round() as u64);
    let cpu_req = get(&r.requests, "cpu")
        .or(get(&r.limits, "cpu"))
        .map(|v| (v * 1000.0).round() as u64);
    (mem, cpu, cpu_req)
}

/// A downward-API resource field (`resourceFieldRef`): memory in bytes, CPU in whole cores
/// rounded up (the default divisor), "" when the container sets none.
pub fn resource_field(c: &Container, resource: &str) -> Result<String, String> {
    let (mem, cpu, req) = resources(c);
    let cores = |m: Option<u64>| m.map(|m| m.div_ceil(1000).to_string()).unwrap_or_default();
    match resource {
        "limits.memory" => Ok(mem.map(|m| m.to_string()).unwrap_or_default()),
        "limits.cpu" => Ok(cores(cpu)),
        "requests.cpu" => Ok(cores(req)),
        other => Err(format!("unsupported resourceFieldRef {other}")),
    }
}

/// The /etc/hosts the kubelet writes for a pod.
pub fn hosts_file(pod: &Pod, pod_ip: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let hostname = hostname(pod);
    match (&spec.subdomain, pod.metadata.namespace.as_deref()) {
        (Some(sub), Some(ns)) if !sub.is_empty() => s.push_str(&format!(
            "{pod_ip}\t{hostname}.{sub}.{ns}.svc.cluster.local\t{hostname}\n"
        )),
        _ => s.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    for a in spec.host_aliases.unwrap_or_default() {
        let names = a.hostnames.unwrap_or_default();
        if !names.is_empty() {
            s.push_str("\n# Entries added by HostAliases.\n");
            s.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    s
}

/// The pod's hostname: spec.hostname, else the pod name (at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = spec
        .hostname
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    if spec.set_hostname_as_fqdn == Some(true) {
        if let (Some(sub), Some(ns)) = (spec.subdomain, pod.metadata.namespace.as_deref()) {
            return format!("{h}.{sub}.{ns}.svc.cluster.local");
        }
    }
    h
}

/// The cluster DNS settings a pod's resolv.conf is made from.
pub struct DnsSettings<'a> {
    pub cluster_dns: &'a str,
    pub cluster_domain: &'a str,
    /// The host's resolv.conf (used for dnsPolicy Default), stub resolvers already replaced.
    pub host_resolv: &'a str,
}

/// /etc/resolv.conf per dnsPolicy, as the kubelet writes it.
pub fn resolv_conf(pod: &Pod, dns: &DnsSettings) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let host_net = spec.host_network.unwrap_or(false);
    let policy = spec
        .dns_policy
        .clone()
        .unwrap_or_else(|| "ClusterFirst".into());
    let cluster = policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_net);
    let (mut servers, mut search, mut options): (Vec<String>, Vec<String>, Vec<String>) = if cluster
    {
        let d = dns.cluster_domain;
        (
            vec![dns.cluster_dns.to_string()],
            vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()],
            vec!["ndots:5".into()],
        )
    } else if policy == "None" {
        (vec![], vec![], vec![])
    } else {
        let mut sv = vec![];
        let mut se = vec![];
        let mut op = vec![];
        for line in dns.host_resolv.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => sv.extend(w.map(str::to_string)),
                Some("search") | Some("domain") => se.extend(w.map(str::to_string)),
                Some("options") => op.extend(w.map(str::to_string)),
                _ => {}
            }
        }
        (sv, se, op)
    };
    if let Some(cfg) = spec.dns_config {
        servers.extend(cfg.nameservers.unwrap_or_default());
        search.extend(cfg.searches.unwrap_or_default());
        for o in cfg.options.unwrap_or_default() {
            let v = match o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = v.split(':').next().unwrap_or("").to_string();
            options.retain(|x| x.split(':').next() != Some(key.as_str()));
            options.push(v);
        }
    }
    servers.truncate(3);
    search.dedup();
    search.truncate(32);
    let mut s = String::new();
    for n in &servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// The host's resolv.conf for pods with dnsPolicy Default: a loopback stub resolver
/// (systemd-resolved's 127.0.0.53) is useless inside a pod, so its upstreams are used.
pub fn host_resolv(main: &str, upstream: Option<&str>) -> String {
    let stub = main
        .lines()
        .any(|l| l.trim_start().starts_with("nameserver 127."));
    match upstream {
        Some(up) if stub => up.to_string(),
        _ => main
            .lines()
            .filter(|l| !l.trim_start().starts_with("nameserver 127."))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// uid and gid: securityContext (container, then pod), else the image's USER, numeric
/// or looked up in the image's /etc/passwd and /etc/group text.
pub fn user(
    pod: &Pod,
    c: &Container,
    image_user: &str,
    passwd: &str,
    group: &str,
) -> Result<(u32, u32), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone());
    let csc = c.security_context.clone();
    let run_uid = csc
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or(psc.as_ref().and_then(|s| s.run_as_user));
    let run_gid = csc
        .as_ref()
        .and_then(|s| s.run_as_group)
        .or(psc.as_ref().and_then(|s| s.run_as_group));
    let (iu, ig) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let lookup = |text: &str, name: &str, field: usize| -> Option<u32> {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name))
                .then(|| f.get(field).and_then(|v| v.parse().ok()))
                .flatten()
        })
    };
    let image_uid = if iu.is_empty() {
        0
    } else if let Ok(n) = iu.parse::<u32>() {
        n
    } else {
        lookup(passwd, iu, 2).ok_or_else(|| {
            format!("unable to find user {iu}: no matching entries in passwd file")
        })?
    };
    let uid = run_uid.map(|u| u as u32).unwrap_or(image_uid);
    // The primary group: runAsGroup, the image's group, else the user's group in passwd.
    let gid = if let Some(g) = run_gid {
        g as u32
    } else if let Some(g) = ig.filter(|g| !g.is_empty()) {
        match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(group, g, 2).ok_or_else(|| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        }
    } else {
        passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2).and_then(|v| v.parse::<u32>().ok()) == Some(uid))
                    .then(|| f.get(3).and_then(|v| v.parse().ok()))
                    .flatten()
            })
            .unwrap_or(0)
    };
    Ok((uid, gid))
}

/// Supplemental groups: the pod's supplementalGroups and fsGroup.
pub fn supplemental_groups(pod: &Pod) -> Vec<u32> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone());
    let mut v: Vec<u32> = psc
        .as_ref()
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g as u32)
        .collect();
    if let Some(g) = psc.and_then(|s| s.fs_group) {
        v.push(g as u32);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Capabilities, privilege, no_new_privs and read-only root from the container's
/// securityContext.
pub struct Security {
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privs: bool,
    pub read_only_rootfs: bool,
}

pub fn security(c: &Container) -> Security {
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.unwrap_or_default();
    Security {
        privileged,
        cap_add: caps.add.unwrap_or_default(),
        cap_drop: caps.drop.unwrap_or_default(),
        no_new_privs: !privileged && sc.allow_privilege_escalation == Some(false),
        read_only_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn container(v: Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn image(ep: &[&str], cmd: &[&str]) -> ImageDefaults {
        ImageDefaults {
            entrypoint: ep.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_combine_like_kubernetes() {
        let img = image(&["/entrypoint.sh"], &["curl"]);
        let env = vec![("WHO".to_string(), "world".to_string())];
        let check = |c: Value, want: &[&str]| {
            assert_eq!(command_line(&container(c.clone()), &img, &env), want, "{c}");
        };
        check(json!({"name": "a"}), &["/entrypoint.sh", "curl"]);
        check(
            json!({"name": "a", "args": ["/bin/sh", "-c", "echo $(WHO)"]}),
            &["/entrypoint.sh", "/bin/sh", "-c", "echo world"],
        );
        check(json!({"name": "a", "command": ["sleep"]}), &["sleep"]);
        check(
            json!({"name": "a", "command": ["echo"], "args": ["$(WHO)", "$$(WHO)", "$(NOPE)"]}),
            &["echo", "world", "$(WHO)", "$(NOPE)"],
        );
    }

    #[test]
    fn service_links() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "my-web", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
        }))
        .expect("svc");
        let master: Service = serde_json::from_value(json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}
        }))
        .expect("svc");
        let env: BTreeMap<String, String> = service_env(&[svc.clone(), master.clone()], "ns", true)
            .into_iter()
            .collect();
        assert_eq!(env["MY_WEB_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["MY_WEB_SERVICE_PORT"], "80");
        assert_eq!(env["MY_WEB_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_WEB_PORT"], "tcp://10.96.0.20:80");
        assert_eq!(env["MY_WEB_PORT_53_UDP"], "udp://10.96.0.20:53");
        assert_eq!(env["MY_WEB_PORT_53_UDP_ADDR"], "10.96.0.20");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        let off: BTreeMap<String, String> = service_env(&[svc, master], "ns", false)
            .into_iter()
            .collect();
        assert!(off.contains_key("KUBERNETES_SERVICE_HOST") && !off.contains_key("MY_WEB_PORT"));
    }

    #[test]
    fn downward_fields() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "web"}},
                           "spec": {"nodeName": "k-worker", "containers": []}}),
        );
        let f = |path: &str| field_ref(&p, "10.244.1.2", "172.29.1.2", path);
        assert_eq!(f("metadata.name").as_deref(), Ok("p"));
        assert_eq!(f("metadata.namespace").as_deref(), Ok("n"));
        assert_eq!(f("status.podIP").as_deref(), Ok("10.244.1.2"));
        assert_eq!(f("spec.nodeName").as_deref(), Ok("k-worker"));
        assert_eq!(f("metadata.labels['app']").as_deref(), Ok("web"));
        assert_eq!(f("metadata.labels").as_deref(), Ok("app=\"web\""));
        assert!(f("spec.nope").is_err());
    }

    #[test]
    fn quantities() {
        for (s, want) in [
            ("128Mi", 134217728.0),
            ("1G", 1e9),
            ("500m", 0.5),
            ("2", 2.0),
            ("0.25", 0.25),
            ("1Ki", 1024.0),
        ] {
            assert_eq!(quantity(s), Some(want), "{s}");
        }
        assert_eq!(quantity("lots"), None);
        let c = container(
            json!({"name": "a", "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}}),
        );
        assert_eq!(resources(&c), (Some(64 << 20), Some(250), Some(250)));
    }

    #[test]
    fn etc_files() {
        let p = pod(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [], "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar"]}]}}));
        let h = hosts_file(&p, "10.244.1.5");
        assert!(h.contains("10.244.1.5\tweb\n"), "{h}");
        assert!(h.contains("10.1.2.3\tfoo.local\tbar\n"), "{h}");
        let dns = DnsSettings {
            cluster_dns: "10.96.0.10",
            cluster_domain: "cluster.local",
            host_resolv: "nameserver 192.0.2.53\nsearch example.org\n",
        };
        assert_eq!(
            resolv_conf(&p, &dns),
            "nameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let d = pod(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [], "dnsPolicy": "Default"}}));
        assert_eq!(
            resolv_conf(&d, &dns),
            "nameserver 192.0.2.53\nsearch example.org\n"
        );
        let hn = pod(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [], "hostNetwork": true}}));
        assert!(resolv_conf(&hn, &dns).starts_with("nameserver 192.0.2.53"));
        let none = pod(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.9"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}));
        assert_eq!(
            resolv_conf(&none, &dns),
            "nameserver 10.0.0.9\nsearch a.b\noptions ndots:2 edns0\n"
        );
        assert_eq!(
            host_resolv(
                "nameserver 127.0.0.53\noptions edns0\n",
                Some("nameserver 192.0.2.1\n")
            ),
            "nameserver 192.0.2.1\n"
        );
        let fq = pod(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [], "hostname": "h", "subdomain": "sub", "setHostnameAsFQDN": true}}));
        assert_eq!(hostname(&fq), "h.sub.ns.svc.cluster.local");
    }

    #[test]
    fn users() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnginx:x:101:101::/:/bin/false\n";
        let group = "root:x:0:\nnginx:x:101:\n";
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        let c = container(json!({"name": "a"}));
        assert_eq!(user(&p, &c, "", passwd, group), Ok((0, 0)));
        assert_eq!(user(&p, &c, "nginx", passwd, group), Ok((101, 101)));
        assert_eq!(user(&p, &c, "100:101", passwd, group), Ok((100, 101)));
        assert!(user(&p, &c, "nobody2", passwd, group).is_err());
        let c = container(
            json!({"name": "a", "securityContext": {"runAsUser": 1000, "runAsGroup": 3000}}),
        );
        assert_eq!(user(&p, &c, "nginx", passwd, group), Ok((1000, 3000)));
        let ps = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "securityContext": {"runAsUser": 7, "fsGroup": 2000, "supplementalGroups": [5]}}}),
        );
        assert_eq!(
            user(&ps, &container(json!({"name": "a"})), "", passwd, group),
            Ok((7, 0))
        );
        assert_eq!(supplemental_groups(&ps), vec![5, 2000]);
    }
}
