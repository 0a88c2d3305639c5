//! Authentication: client certificates signed by the cluster CA, or bearer tokens from the
//! static token file. Authorization is "authenticated means allowed" for now.

use std::collections::HashMap;
use std::path::Path;

use rustls::pki_types::CertificateDer;

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

/// Paths served without authentication, as kube-apiserver's default RBAC allows.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
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
