//! Image references normalized like Docker: `nginx` → `docker.io/library/nginx:latest`.

use super::ImageError;

/// A parsed, normalized reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/nginx`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// The normalized text: `docker.io/library/nginx:latest`, `x/y@sha256:…`.
    pub fn normalized(&self) -> String {
        let mut s = self.repository.clone();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The repository as users write it: `nginx`, `curlimages/curl`, `localhost/foo`.
    pub fn familiar_repository(&self) -> &str {
        let r = self.repository.as_str();
        r.strip_prefix("docker.io/library/")
            .or_else(|| r.strip_prefix("docker.io/"))
            .unwrap_or(r)
    }
}

/// Normalizes `reference` (see [`parse`]).
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    parse(reference).map(|r| r.normalized())
}

/// Parses a reference with Docker's rules: the first component is a registry when it has
/// a `.` or a `:` or is `localhost`, else the registry is `docker.io` (and a single
/// component gets `library/`); the tag defaults to `latest` unless a digest is given.
pub fn parse(reference: &str) -> Result<Reference, ImageError> {
    let bad = |reason: &str| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    let s = reference.trim();
    if s.is_empty() {
        return Err(bad("empty reference"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("digest must be sha256:<64 hex digits>"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("digest must be sha256:<64 hex digits>"));
            }
            (r, Some(format!("sha256:{}", hex.to_ascii_lowercase())))
        }
        None => (s, None),
    };
    // The tag is after the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !ok {
            return Err(bad("invalid tag"));
        }
    }
    if name.is_empty() {
        return Err(bad("empty repository name"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, p)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), p.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_string()
    } else {
        domain
    };
    if !domain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':')
    {
        return Err(bad("invalid registry name"));
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository name must be lowercase"));
    }
    for component in path.split('/') {
        let ok = !component.is_empty()
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric())
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err(bad("invalid repository name"));
        }
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(Reference {
        repository: format!("{domain}/{path}"),
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match normalize(input) {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "normalize({input:?})");
    }

    #[test]
    fn normalization_table() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        check("nginx", "docker.io/library/nginx:latest");
        check("nginx:1.25", "docker.io/library/nginx:1.25");
        check("library/nginx", "docker.io/library/nginx:latest");
        check("docker.io/nginx", "docker.io/library/nginx:latest");
        check(
            "index.docker.io/library/nginx:1",
            "docker.io/library/nginx:1",
        );
        check("curlimages/curl:7.79.1", "docker.io/curlimages/curl:7.79.1");
        check(
            &format!("registry:5000/x/y@{d}"),
            &format!("registry:5000/x/y@{d}"),
        );
        check(
            &format!("nginx:1@{d}"),
            &format!("docker.io/library/nginx:1@{d}"),
        );
        check("localhost/foo:1", "localhost/foo:1");
        check("localhost:5000/foo", "localhost:5000/foo:latest");
        check("quay.io/a/b/c:v1.0-rc_1", "quay.io/a/b/c:v1.0-rc_1");
        check("", "error: invalid image reference \"\": empty reference");
        check(
            "Nginx",
            "error: invalid image reference \"Nginx\": repository name must be lowercase",
        );
        check(
            "nginx:",
            "error: invalid image reference \"nginx:\": invalid tag",
        );
        check(
            "nginx@sha256:12",
            "error: invalid image reference \"nginx@sha256:12\": digest must be sha256:<64 hex digits>",
        );
        check(
            "a//b",
            "error: invalid image reference \"a//b\": invalid repository name",
        );
    }

    #[test]
    fn familiar_names() {
        let r = parse("curlimages/curl").expect("valid");
        assert_eq!(r.familiar_repository(), "curlimages/curl");
        let r = parse("nginx:1").expect("valid");
        assert_eq!(r.familiar_repository(), "nginx");
        assert_eq!(r.repository, "docker.io/library/nginx");
    }
}
