//! Authentication: client certificates signed by the cluster CA, bearer tokens from the
//! static token file, or service-account tokens (JWTs signed by `satoken`). Authorization
//! is "authenticated means allowed" for now.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{header, HeaderMap};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use crate::satoken::ObjectRef;
use crate::state::State;

/// How long a token outlives the deletion of its service account or bound object while
/// that object is still terminating, as Kubernetes.
const DELETION_GRACE_SECONDS: i64 = 60;

/// Who made the request: the client certificate's subject, else the bearer token's
/// owner (static tokens first, then service-account tokens). `None` means 401.
pub fn authenticate(st: &State, peer: Option<&PeerIdentity>, headers: &HeaderMap) -> Option<User> {
    if let Some(user) = peer.and_then(|p| p.0.clone()) {
        return Some(user);
    }
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    if token.is_empty() {
        return None;
    }
    if let Some(user) = st
        .tokens
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .lookup(token)
    {
        return Some(user.clone());
    }
    if token.bytes().filter(|&b| b == b'.').count() == 2 {
        return service_account_user(st, token, chrono::Utc::now().timestamp());
    }
    None
}

/// The user of a service-account token: valid signature, issuer, audience and time, and
/// the service account (and the object the token is bound to) still there with its uid.
fn service_account_user(st: &State, token: &str, now: i64) -> Option<User> {
    let claims = match st.sa_keys.verify(token, now) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "service-account token rejected");
            return None;
        }
    };
    let k = &claims.kubernetes;
    let ns = k.namespace.as_str();
    let name = claims.user_name();
    if claims.sub != name {
        return None;
    }
    alive(st, "serviceaccounts", Some(ns), &k.serviceaccount, now)?;
    if let Some(pod) = &k.pod {
        alive(st, "pods", Some(ns), pod, now)?;
    } else if let Some(secret) = &k.secret {
        alive(st, "secrets", Some(ns), secret, now)?;
    } else if let Some(node) = &k.node {
        alive(st, "nodes", None, node, now)?;
    }
    Some(User {
        name,
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    })
}

#[derive(Deserialize)]
struct Head {
    metadata: HeadMeta,
}

#[derive(Deserialize)]
struct HeadMeta {
    #[serde(default)]
    uid: String,
    #[serde(default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<String>,
}

/// Whether the object a token names exists with the same uid and is not long deleted.
fn alive(st: &State, plural: &str, ns: Option<&str>, r: &ObjectRef, now: i64) -> Option<()> {
    let res = api::lookup("", "v1", plural)?;
    let kv = match st.store.get(&res.key(ns, &r.name)) {
        Ok(Some(kv)) => kv,
        Ok(None) => {
            tracing::debug!(resource = plural, name = %r.name, "token's object is gone");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading a token's object");
            return None;
        }
    };
    let head: Head = serde_json::from_slice(&kv.value).ok()?;
    if head.metadata.uid != r.uid {
        tracing::debug!(resource = plural, name = %r.name, "token's object was recreated");
        return None;
    }
    if let Some(ts) = head.metadata.deletion_timestamp {
        let deleted = chrono::DateTime::parse_from_rfc3339(&ts).ok()?.timestamp();
        if deleted + DELETION_GRACE_SECONDS < now {
            return None;
        }
    }
    Some(())
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a connection presented at the TLS layer.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<User>);

/// User and groups from a verified client certificate (CN = user, O = groups).
pub fn user_from_cert(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}

/// Static bearer tokens, as kube-apiserver's `--token-auth-file`: `token,user,uid,"g1,g2"`.
#[derive(Debug, Clone, Default)]
pub struct Tokens(HashMap<String, User>);

impl Tokens {
    /// Reads the token file; a missing file means no tokens.
    pub fn load(path: &Path) -> std::io::Result<Tokens> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tokens::default()),
            Err(e) => return Err(e),
        };
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Tokens {
        let mut map = HashMap::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(user)) = (parts.next(), parts.next()) else {
                continue;
            };
            let _uid = parts.next();
            let groups = parts
                .next()
                .map(|g| {
                    g.trim_matches('"')
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            map.insert(
                token.to_string(),
                User {
                    name: user.to_string(),
                    groups,
                },
            );
        }
        Tokens(map)
    }

    pub fn insert(&mut self, token: &str, user: User) {
        self.0.insert(token.to_string(), user);
    }

    pub fn lookup(&self, token: &str) -> Option<&User> {
        self.0.get(token)
    }
}

/// Paths served without authentication, as kube-apiserver's default RBAC allows (and the
/// service-account issuer's discovery documents).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/.well-known/openid-configuration"
            | "/openid/v1/jwks"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let t =
            Tokens::parse("# comment\nabc,admin,1,\"system:masters,x\"\nnode,system:node:n1,2\n");
        assert_eq!(
            t.lookup("abc"),
            Some(&User {
                name: "admin".into(),
                groups: vec!["system:masters".into(), "x".into()]
            })
        );
        assert_eq!(
            t.lookup("node").map(|u| u.name.as_str()),
            Some("system:node:n1")
        );
        assert!(t.lookup("nope").is_none());
        assert!(is_public("/healthz") && is_public("/version") && !is_public("/api"));
    }
}
