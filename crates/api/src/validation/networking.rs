//! Ingresses and IngressClasses (`pkg/apis/networking/validation`).

use serde_json::Value;

use super::checks::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_valid_ip, is_valid_port_name,
    is_valid_port_num, is_wildcard_dns1123_subdomain, regex_error,
};
use super::{json, Errs};
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
