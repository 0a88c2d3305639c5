//! Services, Endpoints and EndpointSlices.

use std::net::IpAddr;

use serde_json::Value;

use super::checks::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_ip, is_valid_port_name,
    is_valid_port_num,
};
use super::{go_quote, go_string_slice, json, meta, Errs};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const TRAFFIC_DISTRIBUTIONS: &[&str] = &["PreferClose", "PreferSameNode", "PreferSameZone"];
/// The longest ClientIP session affinity, in seconds.
const MAX_CLIENT_IP_AFFINITY_SECONDS: i64 = 86400;

/// The cluster IPs of a Service spec: `clusterIPs`, or `[clusterIP]` when only that is set.
pub(crate) fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips = json::string_list(spec, "clusterIPs");
    if !ips.is_empty() {
        return ips;
    }
    match json::str(spec, "clusterIP") {
        "" => Vec::new(),
        ip => vec![ip.to_string()],
    }
}

/// A Service whose only cluster IP is `None`.
pub(crate) fn is_headless(spec: &Value) -> bool {
    cluster_ips(spec) == ["None"]
}

/// The Service type, `ClusterIP` when unset.
fn service_type(spec: &Value) -> &str {
    json::opt_str(spec, "type").unwrap_or("ClusterIP")
}

/// A Service as `ValidateService` checks it.
pub(crate) fn validate_service(obj: &Value, e: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let ty = service_type(spec);
    let headless = is_headless(spec);
    let ports = json::arr(spec, "ports");

    if ports.is_empty() && !headless && ty != "ExternalName" {
        e.required("spec.ports", "");
    }
    match ty {
        "LoadBalancer" | "NodePort" if headless => {
            e.invalid_str(
                "spec.clusterIPs[0]",
                "None",
                &format!("may not be set to 'None' for {ty} services"),
            );
        }
        "ExternalName" => {
            if !cluster_ips(spec).is_empty() {
                e.forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                );
            }
            if !json::arr(spec, "ipFamilies").is_empty() {
                e.forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                );
            }
            if json::present(spec, "ipFamilyPolicy") {
                e.forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                );
            }
            let cname = json::str(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                e.required("spec.externalName", "");
            } else {
                e.each_invalid("spec.externalName", cname, is_dns1123_subdomain(cname));
            }
        }
        _ => {}
    }

    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        validate_service_port(
            port,
            ports.len() > 1,
            &mut names,
            &format!("spec.ports[{i}]"),
            e,
        );
    }

    if let Some(selector) = json::obj(spec, "selector") {
        meta::validate_labels(selector, "spec.selector", e);
    }

    if let Some(affinity) = json::opt_str(spec, "sessionAffinity") {
        if !AFFINITIES.contains(&affinity) {
            e.not_supported("spec.sessionAffinity", affinity, AFFINITIES);
        }
        if affinity == "ClientIP" {
            validate_client_ip_affinity(spec.get("sessionAffinityConfig"), e);
        } else if affinity == "None" && json::present(spec, "sessionAffinityConfig") {
            e.forbidden(
                "spec.sessionAffinityConfig",
                "must not be set when session affinity is None",
            );
        }
    }

    if ty != "ExternalName" {
        validate_cluster_ips(spec, e);
    }

    for (i, ip) in json::string_list(spec, "externalIPs").iter().enumerate() {
        let p = format!("spec.externalIPs[{i}]");
        let errs = is_valid_ip(ip);
        if errs.is_empty() {
            validate_non_special_ip(ip, &p, e);
        } else {
            e.each_invalid(&p, ip, errs);
        }
    }

    if let Some(t) = json::opt_str(spec, "type") {
        if !SERVICE_TYPES.contains(&t) {
            e.not_supported("spec.type", t, SERVICE_TYPES);
        }
    }

    if ty == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if json::int(port, "nodePort").unwrap_or(0) != 0 {
                e.forbidden(
                    &format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                );
            }
        }
    }

    let mut node_ports: Vec<(&str, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let np = json::int(port, "nodePort").unwrap_or(0);
        if np == 0 {
            continue;
        }
        let key = (protocol(port), np);
        if node_ports.contains(&key) {
            e.duplicate_raw(&format!("spec.ports[{i}].nodePort"), np.to_string());
        }
        node_ports.push(key);
    }

    let mut seen: Vec<(&str, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let key = (protocol(port), json::int(port, "port").unwrap_or(0));
        if seen.contains(&key) {
            e.duplicate_raw(
                &format!("spec.ports[{i}]"),
                format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(key.0),
                    key.1
                ),
            );
        }
        seen.push(key);
    }

    if !json::arr(spec, "loadBalancerSourceRanges").is_empty() && ty != "LoadBalancer" {
        e.forbidden(
            "spec.LoadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        );
    }
    if json::present(spec, "allocateLoadBalancerNodePorts") && ty != "LoadBalancer" {
        e.forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        );
    }
    if let Some(class) = json::opt_str(spec, "loadBalancerClass") {
        if ty == "LoadBalancer" {
            e.each_invalid("spec.loadBalancerClass", class, is_qualified_name(class));
        } else {
            e.forbidden(
                "spec.loadBalancerClass",
                "may only be used when `type` is 'LoadBalancer'",
            );
        }
    }

    validate_traffic_policies(spec, ty, e);
}

/// The protocol of a port, `TCP` when unset.
fn protocol(port: &Value) -> &str {
    json::opt_str(port, "protocol").unwrap_or("TCP")
}

fn validate_service_port<'a>(
    port: &'a Value,
    require_name: bool,
    names: &mut Vec<&'a str>,
    path: &str,
    e: &mut Errs,
) {
    let name = json::str(port, "name");
    if require_name && name.is_empty() {
        e.required(&format!("{path}.name"), "");
    } else if !name.is_empty() {
        e.each_invalid(&format!("{path}.name"), name, is_dns1123_label(name));
        if names.contains(&name) {
            e.duplicate_str(&format!("{path}.name"), name);
        } else {
            names.push(name);
        }
    }
    let number = json::int(port, "port").unwrap_or(0);
    for m in is_valid_port_num(number) {
        e.invalid_int(&format!("{path}.port"), number, &m);
    }
    if let Some(p) = json::opt_str(port, "protocol") {
        if !PROTOCOLS.contains(&p) {
            e.not_supported(&format!("{path}.protocol"), p, PROTOCOLS);
        }
    }
    if let Some(target) = port.get("targetPort") {
        validate_port_num_or_name(target, &format!("{path}.targetPort"), e);
    }
    if let Some(app) = json::opt_str(port, "appProtocol") {
        e.each_invalid(&format!("{path}.appProtocol"), app, is_qualified_name(app));
    }
}

/// An IntOrString port: a number 1-65535 or an IANA service name.
pub(crate) fn validate_port_num_or_name(v: &Value, path: &str, e: &mut Errs) {
    match v {
        Value::String(s) => e.each_invalid(path, s, is_valid_port_name(s)),
        other => {
            let n = other.as_i64().unwrap_or(0);
            for m in is_valid_port_num(n) {
                e.invalid_int(path, n, &m);
            }
        }
    }
}

fn validate_client_ip_affinity(config: Option<&Value>, e: &mut Errs) {
    let detail = "when session affinity type is ClientIP";
    let Some(config) = config.filter(|c| !c.is_null()) else {
        e.required("spec.sessionAffinityConfig", detail);
        return;
    };
    let Some(client_ip) = config.get("clientIP").filter(|c| !c.is_null()) else {
        e.required("spec.sessionAffinityConfig.clientIP", detail);
        return;
    };
    let Some(timeout) = json::int(client_ip, "timeoutSeconds") else {
        e.required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", detail);
        return;
    };
    if timeout <= 0 || timeout > MAX_CLIENT_IP_AFFINITY_SECONDS {
        e.invalid_int(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            timeout,
            &format!("must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"),
        );
    }
}

/// `clusterIP`, `clusterIPs`, `ipFamilies` and `ipFamilyPolicy` together.
fn validate_cluster_ips(spec: &Value, e: &mut Errs) {
    let cluster_ip = json::str(spec, "clusterIP");
    let ips = json::string_list(spec, "clusterIPs");
    let ips_value = go_string_slice(Some(&ips));
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            e.required("spec.clusterIPs", "");
        } else if ips[0] != cluster_ip {
            e.invalid_raw(
                "spec.clusterIPs",
                ips_value.clone(),
                "first value must match `clusterIP`",
            );
        }
    } else if !ips.is_empty() {
        e.invalid_raw(
            "spec.clusterIPs",
            ips_value.clone(),
            "must be empty when `clusterIP` is not specified",
        );
    }

    let families = json::string_list(spec, "ipFamilies");
    for (i, f) in families.iter().enumerate() {
        if !IP_FAMILIES.contains(&f.as_str()) {
            e.not_supported(&format!("spec.ipFamilies[{i}]"), f, IP_FAMILIES);
        }
        if families[..i].contains(f) {
            e.duplicate_str(&format!("spec.ipFamilies[{i}]"), f);
        }
    }
    if let Some(policy) = json::opt_str(spec, "ipFamilyPolicy") {
        if !IP_FAMILY_POLICIES.contains(&policy) {
            e.not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES);
        }
    }

    let mut bad = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                bad = true;
                e.invalid_raw(
                    "spec.clusterIPs",
                    ips_value.clone(),
                    "'None' must be the first and only value",
                );
            }
            continue;
        }
        let errs = is_valid_ip(ip);
        bad |= !errs.is_empty();
        e.each_invalid(&format!("spec.clusterIPs[{i}]"), ip, errs);
    }
    if ips.len() > 2 {
        e.invalid_raw(
            "spec.clusterIPs",
            ips_value.clone(),
            "may only hold up to 2 values",
        );
    }
    if bad {
        return;
    }
    if ips.len() > 1 {
        let v6: Vec<bool> = ips.iter().map(|ip| ip.contains(':')).collect();
        if v6.len() != 2 || v6[0] == v6[1] {
            e.invalid_raw(
                "spec.clusterIPs",
                ips_value,
                "may specify no more than one IP for each IP family",
            );
        }
    }
    if !is_headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(families.iter()).enumerate() {
            let is_v6 = ip.contains(':');
            if family == "IPv4" && is_v6 {
                e.invalid_str(
                    &format!("spec.clusterIPs[{i}]"),
                    ip,
                    &format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                );
            }
            if family == "IPv6" && !is_v6 {
                e.invalid_str(
                    &format!("spec.clusterIPs[{i}]"),
                    ip,
                    &format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                );
            }
        }
    }
}

/// Addresses that make no sense as a destination: unspecified, loopback, link-local.
fn validate_non_special_ip(ip: &str, path: &str, e: &mut Errs) {
    let Ok(addr) = ip.parse::<IpAddr>() else {
        e.invalid_str(path, ip, "must be a valid IP address");
        return;
    };
    if addr.is_unspecified() {
        e.invalid_str(path, ip, &format!("may not be unspecified ({ip})"));
    }
    if addr.is_loopback() {
        e.invalid_str(
            path,
            ip,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        );
    }
    let (link_local, link_local_multicast) = match addr {
        IpAddr::V4(a) => (a.is_link_local(), a.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(a) => {
            let s = a.segments();
            ((s[0] & 0xffc0) == 0xfe80, (s[0] & 0xff0f) == 0xff02)
        }
    };
    if link_local {
        e.invalid_str(
            path,
            ip,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        );
    }
    if link_local_multicast {
        e.invalid_str(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        );
    }
}

fn validate_traffic_policies(spec: &Value, ty: &str, e: &mut Errs) {
    let externally_accessible = matches!(ty, "NodePort" | "LoadBalancer")
        || (ty == "ClusterIP" && !json::arr(spec, "externalIPs").is_empty());
    let etp = json::str(spec, "externalTrafficPolicy");
    if !externally_accessible {
        if !etp.is_empty() {
            e.invalid_str(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            );
        }
    } else if !etp.is_empty() && !TRAFFIC_POLICIES.contains(&etp) {
        e.not_supported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES);
    }
    let needs_health_check = ty == "LoadBalancer" && etp == "Local";
    let hc = json::int(spec, "healthCheckNodePort").unwrap_or(0);
    if !needs_health_check && hc != 0 {
        e.invalid_int(
            "spec.healthCheckNodePort",
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        );
    } else if needs_health_check && hc != 0 {
        for m in is_valid_port_num(hc) {
            e.invalid_int("spec.healthCheckNodePort", hc, &m);
        }
    }
    if let Some(itp) = json::opt_str(spec, "internalTrafficPolicy") {
        if !TRAFFIC_POLICIES.contains(&itp) {
            e.not_supported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES);
        }
    }
    if let Some(td) = json::opt_str(spec, "trafficDistribution") {
        if !TRAFFIC_DISTRIBUTIONS.contains(&td) {
            e.not_supported("spec.trafficDistribution", td, TRAFFIC_DISTRIBUTIONS);
        }
    }
}

/// What a Service update may not change: its cluster IPs and IP families (unless it moves
/// to or from ExternalName, or stays headless), its load balancer class and health check
/// port. An update that omits the cluster IPs keeps the stored ones (see
/// [`crate::defaults::prepare_update`]), so omission is not an error here.
pub(crate) fn validate_service_update(obj: &Value, old: &Value, e: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    let (ty, old_ty) = (service_type(spec), service_type(old_spec));
    if ty != "ExternalName"
        && old_ty != "ExternalName"
        && !(is_headless(spec) && is_headless(old_spec))
    {
        let new_ips = cluster_ips(spec);
        let old_ips = cluster_ips(old_spec);
        let value = go_string_slice(Some(&new_ips));
        if !new_ips.is_empty() && !old_ips.is_empty() {
            if new_ips.len() == old_ips.len() {
                for (i, (n, o)) in new_ips.iter().zip(old_ips.iter()).enumerate() {
                    if n != o {
                        e.invalid_raw(
                            &format!("spec.clusterIPs[{i}]"),
                            value.clone(),
                            "may not change once set",
                        );
                    }
                }
            } else if new_ips[0] != old_ips[0] {
                e.invalid_raw(
                    "spec.clusterIPs[0]",
                    value.clone(),
                    "may not change once set",
                );
            }
            if new_ips.len() == 1
                && old_ips.len() > 1
                && json::opt_str(spec, "ipFamilyPolicy") != Some("SingleStack")
            {
                let policy = json::opt_str(spec, "ipFamilyPolicy")
                    .map_or_else(|| "null".to_string(), go_quote);
                e.invalid_raw(
                    "spec.ipFamilyPolicy",
                    policy,
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                );
            }
        }
        if !is_headless(spec) && !is_headless(old_spec) {
            let fams = json::string_list(spec, "ipFamilies");
            let old_fams = json::string_list(old_spec, "ipFamilies");
            if fams.len() == old_fams.len() && fams != old_fams {
                let quoted: Vec<String> = fams.iter().map(|f| go_quote(f)).collect();
                e.invalid_raw(
                    "spec.ipFamilies[0]",
                    format!("[]core.IPFamily{{{}}}", quoted.join(", ")),
                    "may not change once set",
                );
            }
        }
    }
    if ty == "LoadBalancer" && old_ty == "LoadBalancer" {
        let class = json::opt_str(spec, "loadBalancerClass");
        if class != json::opt_str(old_spec, "loadBalancerClass") {
            e.invalid_raw(
                "spec.loadBalancerClass",
                class.map_or_else(|| "null".to_string(), go_quote),
                "may not change once set",
            );
        }
        let needs = |s: &Value| json::str(s, "externalTrafficPolicy") == "Local";
        let hc = json::int(spec, "healthCheckNodePort").unwrap_or(0);
        if needs(spec)
            && needs(old_spec)
            && hc != 0
            && hc != json::int(old_spec, "healthCheckNodePort").unwrap_or(0)
        {
            e.forbidden("spec.healthCheckNodePort", "field is immutable");
        }
    }
}

/// Endpoints: every subset has addresses; addresses are IPs; ports are valid.
pub(crate) fn validate_endpoints(obj: &Value, e: &mut Errs) {
    for (i, subset) in json::arr(obj, "subsets").iter().enumerate() {
        let p = format!("subsets[{i}]");
        let addresses = json::arr(subset, "addresses");
        let not_ready = json::arr(subset, "notReadyAddresses");
        if addresses.is_empty() && not_ready.is_empty() {
            e.required(&p, "must specify `addresses` or `notReadyAddresses`");
        }
        for (key, list) in [("addresses", addresses), ("notReadyAddresses", not_ready)] {
            for (j, a) in list.iter().enumerate() {
                let ap = format!("{p}.{key}[{j}]");
                let ip = json::str(a, "ip");
                e.each_invalid(&format!("{ap}.ip"), ip, is_valid_ip(ip));
                let hostname = json::str(a, "hostname");
                if !hostname.is_empty() {
                    e.each_invalid(
                        &format!("{ap}.hostname"),
                        hostname,
                        is_dns1123_label(hostname),
                    );
                }
                if let Some(node) = json::opt_str(a, "nodeName") {
                    e.each_invalid(&format!("{ap}.nodeName"), node, is_dns1123_subdomain(node));
                }
            }
        }
        let ports = json::arr(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            validate_endpoint_port(port, ports.len() > 1, &format!("{p}.ports[{j}]"), e);
        }
    }
}

fn validate_endpoint_port(port: &Value, require_name: bool, path: &str, e: &mut Errs) {
    let name = json::str(port, "name");
    if require_name && name.is_empty() {
        e.required(&format!("{path}.name"), "");
    } else if !name.is_empty() {
        e.each_invalid(&format!("{path}.name"), name, is_dns1123_label(name));
    }
    let number = json::int(port, "port").unwrap_or(0);
    for m in is_valid_port_num(number) {
        e.invalid_int(&format!("{path}.port"), number, &m);
    }
    if let Some(p) = json::opt_str(port, "protocol") {
        if !PROTOCOLS.contains(&p) {
            e.not_supported(&format!("{path}.protocol"), p, PROTOCOLS);
        }
    }
    if let Some(app) = json::opt_str(port, "appProtocol") {
        e.each_invalid(&format!("{path}.appProtocol"), app, is_qualified_name(app));
    }
}

/// EndpointSlices: address type, endpoint addresses of that type, ports.
pub(crate) fn validate_endpoint_slice(obj: &Value, e: &mut Errs) {
    const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    let address_type = json::str(obj, "addressType");
    if address_type.is_empty() {
        e.required("addressType", "");
    } else if !ADDRESS_TYPES.contains(&address_type) {
        e.not_supported("addressType", address_type, ADDRESS_TYPES);
    }
    for (i, ep) in json::arr(obj, "endpoints").iter().enumerate() {
        let p = format!("endpoints[{i}]");
        let addresses = json::string_list(ep, "addresses");
        if addresses.is_empty() {
            e.required(&format!("{p}.addresses"), "must contain at least 1 address");
        }
        for (j, a) in addresses.iter().enumerate() {
            let ap = format!("{p}.addresses[{j}]");
            match address_type {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => {
                    e.invalid_str(&ap, a, "must be a valid IPv4 address")
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    e.invalid_str(&ap, a, "must be a valid IPv6 address")
                }
                "FQDN" => e.each_invalid(&ap, a, is_dns1123_subdomain(a)),
                _ => {}
            }
        }
        if let Some(node) = json::opt_str(ep, "nodeName") {
            e.each_invalid(&format!("{p}.nodeName"), node, is_dns1123_subdomain(node));
        }
        if let Some(hostname) = json::opt_str(ep, "hostname") {
            e.each_invalid(
                &format!("{p}.hostname"),
                hostname,
                is_dns1123_label(hostname),
            );
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in json::arr(obj, "ports").iter().enumerate() {
        let p = format!("ports[{i}]");
        let name = json::str(port, "name");
        if !name.is_empty() {
            e.each_invalid(&format!("{p}.name"), name, is_dns1123_label(name));
        }
        if names.contains(&name) {
            e.duplicate_str(&format!("{p}.name"), name);
        } else {
            names.push(name);
        }
        if let Some(number) = json::int(port, "port") {
            for m in is_valid_port_num(number) {
                e.invalid_int(&format!("{p}.port"), number, &m);
            }
        }
        if let Some(proto) = json::opt_str(port, "protocol") {
            if !PROTOCOLS.contains(&proto) {
                e.not_supported(&format!("{p}.protocol"), proto, PROTOCOLS);
            }
        }
        if let Some(app) = json::opt_str(port, "appProtocol") {
            e.each_invalid(&format!("{p}.appProtocol"), app, is_qualified_name(app));
        }
    }
}
