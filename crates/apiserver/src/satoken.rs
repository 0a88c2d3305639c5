//! Service-account tokens: JWTs (compact JWS, ES256 on P-256) signed with the key made at
//! first start (`pki/sa.key`), with Kubernetes' claims. This module signs and checks the
//! token itself (signature, issuer, audience, time); whether the service account and the
//! bound object still exist is checked by `auth` against the store.
//!
//! Wire format: `base64url(header).base64url(claims).base64url(r || s)`, header
//! `{"alg":"ES256","kid":<base64url(sha256(SPKI DER))>}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, as Kubernetes (go-jose's default).
pub const LEEWAY_SECONDS: i64 = 60;

/// Verified tokens remembered so that the hot path skips the ECDSA check.
const CACHE_ENTRIES: usize = 4096;

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("service-account signing key: {0}")]
    Key(String),
    #[error("signing the token failed")]
    Sign,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("invalid signature")]
    Signature,
    #[error("token issuer {0:?} is not this cluster's")]
    Issuer(String),
    #[error("token audiences {0:?} is invalid for the target audiences")]
    Audience(Vec<String>),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

/// A name and uid, as in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    pub serviceaccount: ObjectRef,
}

/// The claims of a service-account token, as Kubernetes writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaims,
    pub nbf: i64,
    pub sub: String,
}

impl Claims {
    /// The user name the token authenticates as.
    pub fn user_name(&self) -> String {
        subject(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        )
    }
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kid: String,
}

/// The signing key, the issuer and audiences of this API server, and a cache of tokens
/// whose signature was checked.
pub struct TokenKeys {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    issuer: String,
    audiences: Vec<String>,
    verified: Mutex<HashMap<String, Arc<Claims>>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Loads a PKCS#8 P-256 key (PEM). Tokens are issued by `issuer`, and accepted when
    /// they name it as an audience.
    pub fn from_pkcs8_pem(pem: &str, issuer: &str) -> Result<TokenKeys, TokenError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| TokenError::Key(e.to_string()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(TokenKeys {
            key,
            rng,
            kid,
            issuer: issuer.to_string(),
            audiences: vec![issuer.to_string()],
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences a token must name one of to authenticate to this server; also the
    /// default audiences of a TokenRequest.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Sign)?;
        let body = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
        let input = format!("{}.{}", B64.encode(header), B64.encode(body));
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }

    /// Checks a token's signature, issuer, audience and validity at `now` (Unix seconds),
    /// remembering tokens whose signature checked out.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Claims>, TokenError> {
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.verify_uncached(token)?);
                let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_ENTRIES {
                    cache.retain(|_, c| c.exp + LEEWAY_SECONDS > now);
                    if cache.len() >= CACHE_ENTRIES {
                        cache.clear();
                    }
                }
                cache.insert(token.to_string(), c.clone());
                c
            }
        };
        if now >= claims.exp + LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + LEEWAY_SECONDS || claims.iat > now + LEEWAY_SECONDS {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Signature, algorithm, issuer and audience: what does not change with time.
    fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |p: &str| B64.decode(p).map_err(|_| TokenError::Malformed);
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "ES256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let input_len = h.len() + 1 + b.len();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(&token.as_bytes()[..input_len], &decode(s)?)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(b)?).map_err(|_| TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        Ok(claims)
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": B64.encode(&point[1..33]),
            "y": B64.encode(&point[33..65]),
        }]})
    }

    /// The OpenID provider configuration (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const NOW: i64 = 1_700_000_000;

    fn keys() -> TokenKeys {
        let pem = rcgen::KeyPair::generate()
            .expect("generate")
            .serialize_pem();
        TokenKeys::from_pkcs8_pem(&pem, ISSUER).expect("load key")
    }

    fn claims(aud: &str, iat: i64, ttl: i64) -> Claims {
        Claims {
            aud: vec![aud.into()],
            exp: iat + ttl,
            iat,
            iss: ISSUER.into(),
            jti: "j".into(),
            kubernetes: KubeClaims {
                namespace: "default".into(),
                node: None,
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "pu".into(),
                }),
                secret: None,
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "su".into(),
                },
            },
            nbf: iat,
            sub: subject("default", "default"),
        }
    }

    /// What, signer, claims, verification time, expected outcome.
    type Case<'a> = (&'a str, &'a TokenKeys, Claims, i64, Result<(), TokenError>);

    /// Signs `c` with `signer` and verifies it with `verifier` at `now`.
    fn check(
        signer: &TokenKeys,
        verifier: &TokenKeys,
        c: &Claims,
        now: i64,
    ) -> Result<(), TokenError> {
        let t = signer.sign(c).expect("sign");
        verifier.verify(&t, now).map(|got| assert_eq!(&*got, c))
    }

    #[test]
    fn sign_and_verify() {
        let k = keys();
        let other = keys();
        let good = claims(ISSUER, NOW, 3600);
        let cases: Vec<Case> = vec![
            ("valid", &k, good.clone(), NOW + 10, Ok(())),
            (
                "within the leeway",
                &k,
                good.clone(),
                NOW + 3600 + 30,
                Ok(()),
            ),
            (
                "expired",
                &k,
                good.clone(),
                NOW + 3600 + 61,
                Err(TokenError::Expired),
            ),
            (
                "not yet valid",
                &k,
                good.clone(),
                NOW - 120,
                Err(TokenError::NotYetValid),
            ),
            (
                "wrong audience",
                &k,
                claims("vault", NOW, 3600),
                NOW,
                Err(TokenError::Audience(vec!["vault".into()])),
            ),
            (
                "wrong issuer",
                &k,
                Claims {
                    iss: "https://elsewhere".into(),
                    ..good.clone()
                },
                NOW,
                Err(TokenError::Issuer("https://elsewhere".into())),
            ),
            (
                "another cluster's key",
                &other,
                good.clone(),
                NOW,
                Err(TokenError::Signature),
            ),
        ];
        for (what, signer, c, now, want) in cases {
            assert_eq!(check(signer, &k, &c, now), want, "{what}");
        }
    }

    #[test]
    fn tampering_is_rejected() {
        let k = keys();
        let t = k.sign(&claims(ISSUER, NOW, 3600)).expect("sign");
        let parts: Vec<&str> = t.split('.').collect();
        // Claims changed under the same signature.
        let mut c = claims(ISSUER, NOW, 3600);
        c.kubernetes.serviceaccount.name = "admin".into();
        let forged_body = B64.encode(serde_json::to_vec(&c).expect("json"));
        let forged = format!("{}.{forged_body}.{}", parts[0], parts[2]);
        assert_eq!(k.verify(&forged, NOW), Err(TokenError::Signature));
        // A flipped signature byte.
        let mut sig = B64.decode(parts[2]).expect("b64");
        sig[10] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
        assert_eq!(k.verify(&flipped, NOW), Err(TokenError::Signature));
        // alg "none" and garbage.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(
            k.verify(&none, NOW),
            Err(TokenError::Algorithm("none".into()))
        );
        assert_eq!(k.verify("a.b", NOW), Err(TokenError::Malformed));
        assert_eq!(k.verify("a.b.c.d", NOW), Err(TokenError::Malformed));
        // The original still verifies (and again from the cache).
        assert!(k.verify(&t, NOW).is_ok() && k.verify(&t, NOW).is_ok());
        assert_eq!(
            k.verify(&t, NOW + 7200),
            Err(TokenError::Expired),
            "cache rechecks time"
        );
    }

    #[test]
    fn jwks_describes_the_key() {
        let k = keys();
        let jwks = k.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        let x = B64.decode(key["x"].as_str().expect("x")).expect("b64");
        let y = B64.decode(key["y"].as_str().expect("y")).expect("b64");
        let mut point = vec![4u8];
        point.extend(x);
        point.extend(y);
        assert_eq!(point, k.key.public_key().as_ref());
        let t = k.sign(&claims(ISSUER, NOW, 3600)).expect("sign");
        let header: Value = serde_json::from_slice(
            &B64.decode(t.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(header, json!({"alg": "ES256", "kid": key["kid"]}));
        assert_eq!(
            k.openid_configuration("https://x/openid/v1/jwks")["issuer"],
            ISSUER
        );
    }
}
