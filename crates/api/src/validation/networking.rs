//! Ingresses, IngressClasses and NetworkPolicies (`pkg/apis/networking/validation`).

use std::net::Ipv6Addr;

use serde_json::Value;

use super::checks::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_valid_ip, is_valid_port_name,
    is_valid_port_num, is_wildcard_dns1123_subdomain, regex_error,
};
use super::{go_quote, json, validate_label_selector, Errs, FieldErrorKind};
use crate::admission::INGRESS_CLASS_ANNOTATION;

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];
const PARAMETER_SCOPES: &[&str] = &["Cluster", "Namespace"];
const MAX_CONTROLLER_LEN: usize = 250;
/// The characters of an HTTP path (RFC 3986), as `IsDomainPrefixedPath` allows them.
const HTTP_PATH_FMT: &str = r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+";

/// What an update lets through because the stored Ingress already had it (Kubernetes'
/// `IngressValidationOptions`); a create lets nothing through.
#[derive(Default, Clone, Copy)]
struct Ratchet {
    /// A `spec.tls[*].secretName` that is not a valid Secret name.
    invalid_secret_name: bool,
    /// Anything under a rule whose host is a wildcard.
    invalid_wildcard_host_rule: bool,
    /// Service names that are DNS-1123 labels but not DNS-1035 labels (`3rd-party`).
    relaxed_service_name: bool,
}

impl Ratchet {
    fn of(old: Option<&Value>) -> Self {
        let Some(spec) = old.and_then(|o| o.get("spec")) else {
            return Self::default();
        };
        let invalid_secret_name = json::arr(spec, "tls").iter().any(|t| {
            let name = json::str(t, "secretName");
            !name.is_empty() && !is_dns1123_subdomain(name).is_empty()
        });
        let invalid_wildcard_host_rule = json::arr(spec, "rules").iter().any(|r| {
            let mut scratch = Errs::default();
            json::str(r, "host").contains('*') && {
                validate_rule_value(r, "", Self::default(), &mut scratch);
                !scratch.0.is_empty()
            }
        });
        let relaxed = |b: &Value| {
            let name = b.pointer("/service/name").and_then(Value::as_str);
            name.is_some_and(|n| is_dns1123_label(n).is_empty() && !is_dns1035_label(n).is_empty())
        };
        let relaxed_service_name = spec.get("defaultBackend").is_some_and(relaxed)
            || json::arr(spec, "rules").iter().any(|r| {
                r.get("http").is_some_and(|h| {
                    json::arr(h, "paths")
                        .iter()
                        .any(|p| p.get("backend").is_some_and(relaxed))
                })
            });
        Self {
            invalid_secret_name,
            invalid_wildcard_host_rule,
            relaxed_service_name,
        }
    }
}

/// An Ingress as `ValidateIngressCreate`/`ValidateIngressUpdate` check it; `old` is the
/// stored object on update.
pub(crate) fn validate_ingress(obj: &Value, old: Option<&Value>, e: &mut Errs) {
    let ratchet = Ratchet::of(old);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let rules = json::arr(spec, "rules");
    let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
    if rules.is_empty() && default_backend.is_none() {
        // Kubernetes prints the Go value of the (internal) rules slice.
        let value = if spec.get("rules").is_some_and(Value::is_array) {
            "[]networking.IngressRule{}"
        } else {
            "[]networking.IngressRule(nil)"
        };
        e.invalid_raw(
            "spec",
            value.to_string(),
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    if let Some(b) = default_backend {
        validate_backend(b, "spec.defaultBackend", ratchet, e);
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        let host = json::str(rule, "host");
        let hp = format!("{p}.host");
        let wildcard = host.contains('*');
        if !host.is_empty() {
            if is_ip_sloppy(host) {
                e.invalid_str(&hp, host, "must be a DNS name, not an IP address");
            }
            if wildcard {
                e.each_invalid(&hp, host, is_wildcard_dns1123_subdomain(host));
            } else {
                e.each_invalid(&hp, host, is_dns1123_subdomain(host));
            }
        }
        if !(wildcard && ratchet.invalid_wildcard_host_rule) {
            validate_rule_value(rule, &p, ratchet, e);
        }
    }
    for (i, tls) in json::arr(spec, "tls").iter().enumerate() {
        let p = format!("spec.tls[{i}]");
        for (j, host) in json::string_list(tls, "hosts").iter().enumerate() {
            let hp = format!("{p}.hosts[{j}]");
            if host.contains('*') {
                e.each_invalid(&hp, host, is_wildcard_dns1123_subdomain(host));
            } else {
                e.each_invalid(&hp, host, is_dns1123_subdomain(host));
            }
        }
        let secret = json::str(tls, "secretName");
        if !secret.is_empty() && !ratchet.invalid_secret_name {
            e.each_invalid(
                &format!("{p}.secretName"),
                secret,
                is_dns1123_subdomain(secret),
            );
        }
    }
    if let Some(class) = json::opt_str(spec, "ingressClassName") {
        e.each_invalid("spec.ingressClassName", class, is_dns1123_subdomain(class));
    }
    validate_ingress_status(obj, e);
}

/// What only a create checks: the legacy class annotation agrees with `ingressClassName`.
pub(crate) fn validate_ingress_create(obj: &Value, e: &mut Errs) {
    let annotation = obj
        .pointer("/metadata/annotations")
        .and_then(|a| json::opt_str(a, INGRESS_CLASS_ANNOTATION));
    let class = obj
        .get("spec")
        .and_then(|s| json::opt_str(s, "ingressClassName"));
    if let (Some(a), Some(c)) = (annotation, class) {
        if a != c {
            e.invalid_str(
                &format!("annotations.{INGRESS_CLASS_ANNOTATION}"),
                a,
                "must match `ingressClassName` when both are specified",
            );
        }
    }
}

/// `status.loadBalancer` as `ValidateIngressLoadBalancerStatus` checks it. Kubernetes does
/// so on status updates; other writes carry the stored status over, so checking it on every
/// write comes to the same.
fn validate_ingress_status(obj: &Value, e: &mut Errs) {
    let Some(lb) = obj.pointer("/status/loadBalancer") else {
        return;
    };
    for (i, ing) in json::arr(lb, "ingress").iter().enumerate() {
        let p = format!("status.loadBalancer.ingress[{i}]");
        let ip = json::str(ing, "ip");
        if !ip.is_empty() {
            e.each_invalid(&format!("{p}.ip"), ip, is_valid_ip(ip));
        }
        let hostname = json::str(ing, "hostname");
        if !hostname.is_empty() {
            let hp = format!("{p}.hostname");
            e.each_invalid(&hp, hostname, is_dns1123_subdomain(hostname));
            if is_ip_sloppy(hostname) {
                e.invalid_str(&hp, hostname, "must be a DNS name, not an IP address");
            }
        }
    }
}

/// A rule's `http` part; `path` is the rule's own path.
fn validate_rule_value(rule: &Value, path: &str, ratchet: Ratchet, e: &mut Errs) {
    let Some(http) = rule.get("http").filter(|h| !h.is_null()) else {
        return;
    };
    let paths = json::arr(http, "paths");
    if paths.is_empty() {
        e.required(&format!("{path}.http.paths"), "");
    }
    for (i, p) in paths.iter().enumerate() {
        validate_http_path(p, &format!("{path}.http.paths[{i}]"), ratchet, e);
    }
}

fn validate_http_path(p: &Value, path: &str, ratchet: Ratchet, e: &mut Errs) {
    let Some(path_type) = json::opt_str(p, "pathType") else {
        e.required(&format!("{path}.pathType"), "pathType must be specified");
        return;
    };
    let value = json::str(p, "path");
    let pp = format!("{path}.path");
    match path_type {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                e.invalid_str(&pp, value, "must be an absolute path");
            }
            for seq in INVALID_PATH_SEQUENCES {
                if value.contains(seq) {
                    e.invalid_str(&pp, value, &format!("must not contain '{seq}'"));
                }
            }
            for suffix in INVALID_PATH_SUFFIXES {
                if value.ends_with(suffix) {
                    e.invalid_str(&pp, value, &format!("cannot end with '{suffix}'"));
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                e.invalid_str(&pp, value, "must be an absolute path");
            }
        }
        other => e.not_supported(&format!("{path}.pathType"), other, PATH_TYPES),
    }
    let null = Value::Null;
    let backend = p.get("backend").unwrap_or(&null);
    validate_backend(backend, &format!("{path}.backend"), ratchet, e);
}

/// An `IngressBackend`: a Service and port, or a typed reference, never both.
fn validate_backend(b: &Value, path: &str, ratchet: Ratchet, e: &mut Errs) {
    let service = b.get("service").filter(|s| !s.is_null());
    let resource = b.get("resource").filter(|r| !r.is_null());
    let service = match (service, resource) {
        (Some(_), Some(_)) => {
            return e.invalid_str(path, "", "cannot set both resource and service backends")
        }
        (None, None) => return e.invalid_str(path, "", "resource or service backend is required"),
        (None, Some(r)) => return validate_typed_reference(r, &format!("{path}.resource"), e),
        (Some(s), None) => s,
    };
    let name = json::str(service, "name");
    let np = format!("{path}.service.name");
    if name.is_empty() {
        e.required(&np, "");
    } else if ratchet.relaxed_service_name {
        e.each_invalid(&np, name, is_dns1123_label(name));
    } else {
        e.each_invalid(&np, name, is_dns1035_label(name));
    }
    let null = Value::Null;
    let port = service.get("port").unwrap_or(&null);
    let port_name = json::str(port, "name");
    let number = json::int(port, "number").unwrap_or(0);
    match (port_name.is_empty(), number == 0) {
        (false, false) => e.invalid_str(path, "", "cannot set both port name & port number"),
        (false, true) => e.each_invalid(
            &format!("{path}.service.port.name"),
            port_name,
            is_valid_port_name(port_name),
        ),
        (true, false) => {
            for m in is_valid_port_num(number) {
                e.invalid_int(&format!("{path}.service.port.number"), number, &m);
            }
        }
        (true, true) => e.required(path, "port name or number is required"),
    }
}

/// A `TypedLocalObjectReference` (a resource backend) and the fields it shares with an
/// IngressClass's `parameters`.
fn validate_typed_reference(r: &Value, path: &str, e: &mut Errs) {
    if let Some(group) = json::opt_str(r, "apiGroup") {
        e.each_invalid(
            &format!("{path}.apiGroup"),
            group,
            is_dns1123_subdomain(group),
        );
    }
    for key in ["kind", "name"] {
        let value = json::str(r, key);
        let p = format!("{path}.{key}");
        if value.is_empty() {
            e.required(&p, "");
        } else {
            e.each_invalid(&p, value, is_path_segment_name(value));
        }
    }
}

/// An IngressClass as `ValidateIngressClass` checks it.
pub(crate) fn validate_ingress_class(obj: &Value, e: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let controller = controller(obj);
    if controller.is_empty() {
        e.required("spec.controller", "");
    } else {
        if controller.len() > MAX_CONTROLLER_LEN {
            e.push(super::FieldError::too_long(
                "spec.controller",
                MAX_CONTROLLER_LEN,
            ));
        }
        validate_domain_prefixed_path("spec.controller", controller, e);
    }
    let Some(params) = spec.get("parameters").filter(|p| !p.is_null()) else {
        return;
    };
    validate_typed_reference(params, "spec.parameters", e);
    // Defaulting sets an absent scope to Cluster.
    let scope = json::opt_str(params, "scope").unwrap_or("Cluster");
    let namespace = json::opt_str(params, "namespace");
    match (scope, namespace) {
        ("Namespace", None) => e.required(
            "spec.parameters.namespace",
            "`parameters.scope` is set to 'Namespace'",
        ),
        ("Namespace", Some(ns)) => {
            e.each_invalid("spec.parameters.namespace", ns, is_dns1123_label(ns))
        }
        ("Cluster", Some(_)) => e.forbidden(
            "spec.parameters.namespace",
            "`parameters.scope` is set to 'Cluster'",
        ),
        ("Cluster", None) => {}
        (other, _) => e.not_supported("spec.parameters.scope", other, PARAMETER_SCOPES),
    }
}

/// What an IngressClass update may not change: its controller.
pub(crate) fn validate_ingress_class_update(obj: &Value, old: &Value, e: &mut Errs) {
    let new = controller(obj);
    if new != controller(old) {
        e.invalid_str("spec.controller", new, "field is immutable");
    }
}

fn controller(class: &Value) -> &str {
    class.get("spec").map_or("", |s| json::str(s, "controller"))
}

/// `IsDomainPrefixedPath`: a DNS subdomain, `/`, and a non-empty HTTP path.
fn validate_domain_prefixed_path(path: &str, value: &str, e: &mut Errs) {
    let Some((host, rest)) = value
        .split_once('/')
        .filter(|(h, r)| !h.is_empty() && !r.is_empty())
    else {
        return e.invalid_str(
            path,
            value,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        );
    };
    e.each_invalid(path, host, is_dns1123_subdomain(host));
    let http_char = |c: u8| c.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&c);
    if !rest.bytes().all(http_char) {
        e.invalid_str(path, rest, &regex_error("Invalid path", HTTP_PATH_FMT, &[]));
    }
}

/// `IsPathSegmentName`: the name can be a segment of a URL path.
fn is_path_segment_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name == "." || name == ".." {
        errs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// Whether `s` is an IP address as Kubernetes' `ParseIPSloppy` reads one: also IPv4 with
/// leading zeros in its parts (`010.1.1.1`), which Rust refuses.
fn is_ip_sloppy(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            let digits = p.trim_start_matches('0');
            !p.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && digits.len() <= 3
                && digits.parse::<u16>().unwrap_or(0) <= 255
        })
}

const POLICY_PORT_PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];
const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// A NetworkPolicy's spec as `ValidateNetworkPolicySpec` checks it (the metadata is checked
/// for every kind); `old` is the stored object on update.
///
/// As Kubernetes' `ValidationOptionsForNetworking`, an update whose stored
/// `spec.podSelector` is not valid lets invalid label values through in the
/// `matchExpressions` of every selector. Kubernetes' other ratchet, for CIDRs the stored
/// policy already had, only matters under the `StrictIPCIDRValidation` gate (alpha, off in
/// v1.34), whose stricter CIDR checks are not done here.
pub(crate) fn validate_network_policy(obj: &Value, old: Option<&Value>, e: &mut Errs) {
    let null = Value::Null;
    let allow_invalid_values = old.is_some_and(|o| {
        let mut scratch = Errs::default();
        let sel = o.pointer("/spec/podSelector").unwrap_or(&null);
        validate_label_selector(sel, "spec.podSelector", &mut scratch);
        !scratch.0.is_empty()
    });
    let spec = obj.get("spec").unwrap_or(&null);
    // The pod selector is a struct, not a pointer: absent, it is the empty selector.
    let pod_selector = spec.get("podSelector").unwrap_or(&null);
    validate_selector(pod_selector, "spec.podSelector", allow_invalid_values, e);
    for (key, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in json::arr(spec, key).iter().enumerate() {
            let p = format!("spec.{key}[{i}]");
            for (j, port) in json::arr(rule, "ports").iter().enumerate() {
                validate_policy_port(port, &format!("{p}.ports[{j}]"), e);
            }
            for (j, peer) in json::arr(rule, peers).iter().enumerate() {
                validate_policy_peer(peer, &format!("{p}.{peers}[{j}]"), allow_invalid_values, e);
            }
        }
    }
    // Defaulting fills an empty `policyTypes`, so it is checked as the client sent it or as
    // defaulted.
    let types = json::arr(spec, "policyTypes");
    let type_str = |t: &Value| t.as_str().unwrap_or("").to_string();
    if types.len() > POLICY_TYPES.len() {
        // Kubernetes passes a pointer to the (internal) slice, printed with `%#v`.
        let quoted: Vec<String> = types.iter().map(|t| go_quote(&type_str(t))).collect();
        e.invalid_raw(
            "spec.policyTypes",
            format!("[]networking.PolicyType{{{}}}", quoted.join(", ")),
            "may not specify more than two policyTypes",
        );
        return;
    }
    for (i, t) in types.iter().enumerate() {
        let t = type_str(t);
        if !POLICY_TYPES.contains(&t.as_str()) {
            e.not_supported(&format!("spec.policyTypes[{i}]"), &t, POLICY_TYPES);
        }
    }
}

/// A label selector as `ValidateLabelSelector` checks it; `allow_invalid_values` drops the
/// errors about the label values of its `matchExpressions`.
fn validate_selector(sel: &Value, path: &str, allow_invalid_values: bool, e: &mut Errs) {
    if !allow_invalid_values {
        return validate_label_selector(sel, path, e);
    }
    let mut scratch = Errs::default();
    validate_label_selector(sel, path, &mut scratch);
    let expressions = format!("{path}.matchExpressions[");
    let is_value = |field: &str| {
        field
            .strip_prefix(&expressions)
            .and_then(|rest| rest.split_once("].values["))
            .is_some_and(|(i, rest)| {
                i.bytes().all(|c| c.is_ascii_digit())
                    && rest
                        .strip_suffix(']')
                        .is_some_and(|j| j.bytes().all(|c| c.is_ascii_digit()))
            })
    };
    e.0.extend(
        scratch
            .0
            .into_iter()
            .filter(|err| !(err.kind == FieldErrorKind::Invalid && is_value(&err.field))),
    );
}

/// A `NetworkPolicyPort` as `ValidateNetworkPolicyPort` checks it. Defaulting sets an absent
/// `protocol` to TCP.
fn validate_policy_port(port: &Value, path: &str, e: &mut Errs) {
    if let Some(protocol) = json::opt_str(port, "protocol") {
        if !POLICY_PORT_PROTOCOLS.contains(&protocol) {
            e.not_supported(&format!("{path}.protocol"), protocol, POLICY_PORT_PROTOCOLS);
        }
    }
    let end_port = json::int(port, "endPort");
    let ep = format!("{path}.endPort");
    let pp = format!("{path}.port");
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                e.invalid_int(&ep, end, "may not be specified when `port` is non-numeric");
            }
            e.each_invalid(&pp, name, is_valid_port_name(name));
        }
        Some(number) => {
            let number = number.as_i64().unwrap_or(0);
            for m in is_valid_port_num(number) {
                e.invalid_int(&pp, number, &m);
            }
            if let Some(end) = end_port {
                if end < number {
                    e.invalid_int(&ep, end, "must be greater than or equal to `port`");
                }
                for m in is_valid_port_num(end) {
                    e.invalid_int(&ep, end, &m);
                }
            }
        }
        None => {
            if let Some(end) = end_port {
                e.invalid_int(
                    &ep,
                    end,
                    "may not be specified when `port` is not specified",
                );
            }
        }
    }
}

/// A `NetworkPolicyPeer` as `ValidateNetworkPolicyPeer` checks it: pod and namespace
/// selectors may go together, an ipBlock goes alone. An empty selector (`{}`) counts as
/// given, a null one does not.
fn validate_policy_peer(peer: &Value, path: &str, allow_invalid_values: bool, e: &mut Errs) {
    let mut given = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = peer.get(key).filter(|s| !s.is_null()) {
            given += 1;
            validate_selector(sel, &format!("{path}.{key}"), allow_invalid_values, e);
        }
    }
    let ip_block = peer.get("ipBlock").filter(|b| !b.is_null());
    if let Some(block) = ip_block {
        given += 1;
        validate_ip_block(block, &format!("{path}.ipBlock"), e);
    }
    if given == 0 {
        e.required(path, "must specify a peer");
    } else if given > 1 && ip_block.is_some() {
        e.forbidden(path, "may not specify both ipBlock and another peer");
    }
}

/// An `IPBlock` as `ValidateIPBlock` checks it (without `StrictIPCIDRValidation`): `cidr`
/// and each `except` entry a CIDR, each `except` strictly inside `cidr`.
fn validate_ip_block(block: &Value, path: &str, e: &mut Errs) {
    let cidr = json::str(block, "cidr");
    let cp = format!("{path}.cidr");
    if cidr.is_empty() {
        return e.required(&cp, "");
    }
    let Some(net) = GoIpNet::parse_sloppy(cidr) else {
        return e.invalid_str(&cp, cidr, CIDR_MSG);
    };
    for (i, except) in json::arr(block, "except").iter().enumerate() {
        let except = except.as_str().unwrap_or("");
        let xp = format!("{path}.except[{i}]");
        let Some(inner) = GoIpNet::parse_sloppy(except) else {
            e.invalid_str(&xp, except, CIDR_MSG);
            continue;
        };
        if !net.contains(&inner.ip) || net.ones >= inner.ones {
            e.invalid_str(&xp, except, "must be a strict subset of `cidr`");
        }
    }
}

/// A CIDR as Go's `net.IPNet` holds it after `netutils.ParseCIDRSloppy`, so that `except`
/// entries are compared as Kubernetes compares them (also across address families).
struct GoIpNet {
    /// The network address, masked: 4 bytes for an IPv4 CIDR, 16 for an IPv6 one.
    ip: Vec<u8>,
    /// The prefix mask, as long as the address family of the text.
    mask: Vec<u8>,
    /// The prefix length.
    ones: u32,
}

impl GoIpNet {
    /// `ParseCIDRSloppy`: an IPv4 address (octets may have leading zeros) or an IPv6 one,
    /// `/`, and a decimal prefix length (leading zeros allowed) no longer than the address.
    fn parse_sloppy(s: &str) -> Option<Self> {
        let (addr, len) = s.split_once('/')?;
        let (ip, bits) = match parse_ipv4_sloppy(addr) {
            Some(v4) => (v4.to_vec(), 32),
            None => (parse_ipv6_sloppy(addr)?.octets().to_vec(), 128),
        };
        if len.is_empty() || !len.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = len.trim_start_matches('0');
        let ones: u32 = if digits.is_empty() {
            0
        } else if digits.len() > 3 {
            return None;
        } else {
            digits.parse().ok()?
        };
        if ones > bits {
            return None;
        }
        let mask: Vec<u8> = (0..bits / 8)
            .map(|i| {
                let left = ones.saturating_sub(i * 8).min(8);
                if left == 0 {
                    0
                } else {
                    0xffu8 << (8 - left)
                }
            })
            .collect();
        let ip = ip.iter().zip(&mask).map(|(a, m)| a & m).collect();
        Some(Self { ip, mask, ones })
    }

    /// Go's `IPNet.Contains`.
    fn contains(&self, ip: &[u8]) -> bool {
        let net = to4(&self.ip).unwrap_or(&self.ip);
        let mask = match (self.mask.len(), net.len()) {
            (4, 4) => &self.mask[..],
            (16, 4) => &self.mask[12..],
            (16, 16) => &self.mask[..],
            _ => return false,
        };
        let ip = to4(ip).unwrap_or(ip);
        ip.len() == net.len()
            && net
                .iter()
                .zip(ip)
                .zip(mask)
                .all(|((n, a), m)| n & m == a & m)
    }
}

/// Go's `IP.To4`: the 4 bytes of an IPv4 address, also when written IPv4-mapped in 16 bytes.
fn to4(ip: &[u8]) -> Option<&[u8]> {
    match ip.len() {
        4 => Some(ip),
        16 if ip[..10].iter().all(|b| *b == 0) && ip[10] == 0xff && ip[11] == 0xff => {
            Some(&ip[12..])
        }
        _ => None,
    }
}

/// An IPv4 address as `ParseIPSloppy` reads one: four decimal octets, leading zeros allowed.
fn parse_ipv4_sloppy(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut out {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = p.trim_start_matches('0');
        if digits.len() > 3 {
            return None;
        }
        *octet = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
    }
    parts.next().is_none().then_some(out)
}

/// An IPv6 address as `ParseIPSloppy` reads one: an embedded IPv4 tail may have leading
/// zeros.
fn parse_ipv6_sloppy(s: &str) -> Option<Ipv6Addr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    let (head, tail) = s.rsplit_once(':')?;
    let v4 = parse_ipv4_sloppy(tail)?;
    let v4 = std::net::Ipv4Addr::from(v4);
    format!("{head}:{v4}").parse().ok()
}

#[cfg(test)]
#[path = "networking_tests.rs"]
mod tests;
