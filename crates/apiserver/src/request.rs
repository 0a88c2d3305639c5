//! Parsing a request into what it addresses: resource, namespace, name, subresource, verb
//! options. Kubernetes paths are ambiguous for axum's router (`/namespaces/{name}` versus
//! `/namespaces/{ns}/{plural}`), so they are parsed here by hand.

use std::collections::HashMap;

use api::Resource;

use crate::status::ApiError;

/// What a resource path names.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Legacy `/watch/` path prefix.
    pub watch_path: bool,
}

/// Parses the part of a path after `/api/v1/` or `/apis/<group>/<version>/`.
pub fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let mut rest = rest;
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let find =
        |plural: &str| api::lookup(group, version, plural).ok_or_else(ApiError::path_not_found);
    let (resource, namespace, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if api::lookup(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let r = find(plural)?;
            match tail {
                [] => (r, Some(*ns), None, None),
                [name] => (r, Some(*ns), Some(*name), None),
                [name, sub] => (r, Some(*ns), Some(*name), Some(*sub)),
                _ => return Err(ApiError::path_not_found()),
            }
        }
        [plural] => (find(plural)?, None, None, None),
        [plural, name] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(ApiError::path_not_found());
            }
            (r, None, Some(*name), None)
        }
        [plural, name, sub] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(ApiError::path_not_found());
            }
            (r, None, Some(*name), Some(*sub))
        }
        _ => return Err(ApiError::path_not_found()),
    };
    if let Some(sub) = sub {
        if !resource.has_subresource(sub) {
            return Err(ApiError::path_not_found());
        }
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Ok(Target {
        resource,
        namespace: namespace.map(decode),
        name: name.map(decode),
        subresource: sub.map(str::to_string),
        watch_path,
    })
}

/// Query parameters, decoded (the last value of a repeated key wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1" | "")) && q.contains_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn check(group: &str, path: &str, expect: Option<Parts<'_>>) {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let got = parse_target(group, "v1", &segs).ok().map(|t| {
            (
                t.resource.plural,
                t.namespace.clone(),
                t.name.clone(),
                t.subresource.clone(),
            )
        });
        let want = expect.map(|(p, ns, n, s)| {
            (
                p,
                ns.map(str::to_string),
                n.map(str::to_string),
                s.map(str::to_string),
            )
        });
        assert_eq!(got, want, "{path}");
    }

    #[test]
    fn paths() {
        check("", "pods", Some(("pods", None, None, None)));
        check("", "namespaces", Some(("namespaces", None, None, None)));
        check(
            "",
            "namespaces/kube-system",
            Some(("namespaces", None, Some("kube-system"), None)),
        );
        check(
            "",
            "namespaces/x/status",
            Some(("namespaces", None, Some("x"), Some("status"))),
        );
        check(
            "",
            "namespaces/x/pods",
            Some(("pods", Some("x"), None, None)),
        );
        check(
            "",
            "namespaces/x/pods/p",
            Some(("pods", Some("x"), Some("p"), None)),
        );
        check(
            "",
            "namespaces/x/pods/p/log",
            Some(("pods", Some("x"), Some("p"), Some("log"))),
        );
        check("", "namespaces/x/pods/p/nope", None);
        check("", "pods/p", None);
        check(
            "",
            "nodes/n1/status",
            Some(("nodes", None, Some("n1"), Some("status"))),
        );
        check("", "widgets", None);
        check(
            "apps",
            "namespaces/d/deployments/web/scale",
            Some(("deployments", Some("d"), Some("web"), Some("scale"))),
        );
        check(
            "",
            "watch/namespaces/x/pods",
            Some(("pods", Some("x"), None, None)),
        );
        let q = parse_query(Some("labelSelector=app%3Dweb&watch=1&limit=5"));
        assert_eq!(q["labelSelector"], "app=web");
        assert!(flag(&q, "watch"));
        assert!(!flag(&q, "dryRun"));
    }
}
