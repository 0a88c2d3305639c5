//! Service accounts beyond their objects: the TokenRequest subresource
//! (`POST .../serviceaccounts/{name}/token`), the ServiceAccount admission of new pods, and
//! the OpenID discovery documents for the token issuer.

use api::meta;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};

use crate::objects::{decode, decode_body, json_response, Req};
use crate::satoken::{Claims, KubeClaims, ObjectRef};
use crate::state::State;
use crate::status::ApiError;

/// A TokenRequest's lifetime when it names none, and the shortest and longest allowed.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

const GROUP: &str = "authentication.k8s.io";

/// The issuer (and default audience) of this cluster's tokens.
pub fn issuer(cluster_domain: &str) -> String {
    format!("https://kubernetes.default.svc.{cluster_domain}")
}

fn res(plural: &str) -> &'static api::Resource {
    api::lookup("", "v1", plural).expect("core resources named here are served")
}

/// The stored object `plural`/`name` in `ns`, if any.
fn get(st: &State, plural: &str, ns: Option<&str>, name: &str) -> Result<Option<Value>, ApiError> {
    st.store
        .get(&res(plural).key(ns, name))?
        .map(|kv| decode(&kv))
        .transpose()
}

fn invalid(name: &str, field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::invalid(
        GROUP,
        "TokenRequest",
        name,
        &[api::validation::FieldError::invalid(field, value, detail)],
    )
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: signs a token for the
/// service account, optionally bound to a Pod, Secret or Node, and answers 201 with the
/// TokenRequest and its status `{token, expirationTimestamp}`.
pub async fn create_token(st: &State, req: &Req) -> Result<Response, ApiError> {
    let ns = req.ns().unwrap_or("default");
    let name = req.name();
    let mut tr = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        decode_body(&req.headers, &req.body)?
    };
    if !tr.is_object() {
        return Err(ApiError::bad_request("the body must be a TokenRequest"));
    }
    match (tr["apiVersion"].as_str(), tr["kind"].as_str()) {
        (None | Some("authentication.k8s.io/v1"), None | Some("TokenRequest")) => {}
        (v, k) => {
            return Err(ApiError::bad_request(format!(
                "expected authentication.k8s.io/v1 TokenRequest, got {} {}",
                v.unwrap_or(""),
                k.unwrap_or("")
            )))
        }
    }
    let body_name = meta::name(&tr).to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(invalid(
            name,
            "metadata.name",
            &json!(body_name),
            "must match the service account name if specified",
        ));
    }
    let body_ns = meta::namespace(&tr).to_string();
    if !body_ns.is_empty() && body_ns != ns {
        return Err(invalid(
            name,
            "metadata.namespace",
            &json!(body_ns),
            "must match the service account namespace if specified",
        ));
    }
    let sa = get(st, "serviceaccounts", Some(ns), name)?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;

    let spec = &tr["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v
            .as_i64()
            .ok_or_else(|| invalid(name, "spec.expirationSeconds", v, "must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if audiences.is_empty() {
        audiences = st.sa_keys.audiences().to_vec();
    }

    let mut kube = KubeClaims {
        namespace: ns.to_string(),
        node: None,
        pod: None,
        secret: None,
        serviceaccount: ObjectRef {
            name: name.to_string(),
            uid: meta::uid(&sa).to_string(),
        },
    };
    let bound = &spec["boundObjectRef"];
    if bound.is_object() {
        bind(st, ns, name, bound, &mut kube)?;
    }

    let now = Utc::now();
    let iat = now.timestamp();
    let claims = Claims {
        aud: audiences.clone(),
        exp: iat + expiration,
        iat,
        iss: st.sa_keys.issuer().to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: kube,
        nbf: iat,
        sub: crate::satoken::subject(ns, name),
    };
    let token = st
        .sa_keys
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tr["apiVersion"] = json!("authentication.k8s.io/v1");
    tr["kind"] = json!("TokenRequest");
    let m = meta::meta_mut(&mut tr);
    m.insert("name".into(), json!(name));
    m.insert("namespace".into(), json!(ns));
    m.insert("creationTimestamp".into(), json!(meta::timestamp(now)));
    if !tr["spec"].is_object() {
        tr["spec"] = json!({});
    }
    tr["spec"]["audiences"] = json!(audiences);
    tr["spec"]["expirationSeconds"] = json!(expiration);
    let expires = now + chrono::Duration::seconds(expiration);
    tr["status"] = json!({"token": token, "expirationTimestamp": meta::timestamp(expires)});
    Ok(json_response(StatusCode::CREATED, &tr, &[]))
}

/// Checks `spec.boundObjectRef` and records the bound object in the claims.
fn bind(
    st: &State,
    ns: &str,
    sa_name: &str,
    bound: &Value,
    kube: &mut KubeClaims,
) -> Result<(), ApiError> {
    let kind = bound["kind"].as_str().unwrap_or("");
    let api_version = bound["apiVersion"].as_str().unwrap_or("v1");
    let obj_name = bound["name"].as_str().unwrap_or("");
    let want_uid = bound["uid"].as_str().unwrap_or("");
    let (plural, scoped) = match (api_version, kind) {
        ("v1", "Pod") => ("pods", Some(ns)),
        ("v1", "Secret") => ("secrets", Some(ns)),
        ("v1", "Node") => ("nodes", None),
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount \"{sa_name}\" to object of kind \"{api_version}, Kind={kind}\""
            )))
        }
    };
    if obj_name.is_empty() {
        return Err(invalid(
            sa_name,
            "spec.boundObjectRef.name",
            &json!(obj_name),
            "name is required",
        ));
    }
    let obj = get(st, plural, scoped, obj_name)?
        .ok_or_else(|| ApiError::not_found("", plural, obj_name))?;
    let uid = meta::uid(&obj).to_string();
    if !want_uid.is_empty() && want_uid != uid {
        return Err(ApiError::conflict(
            "",
            kind,
            obj_name,
            &format!("the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"),
        ));
    }
    let this = Some(ObjectRef {
        name: obj_name.to_string(),
        uid,
    });
    match kind {
        "Pod" => {
            if api::admission::service_account_name(&obj) != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{sa_name}\" to pod running with different serviceaccount name."
                )));
            }
            kube.pod = this;
            let node = obj["spec"]["nodeName"].as_str().unwrap_or("");
            if !node.is_empty() {
                if let Some(n) = get(st, "nodes", None, node)? {
                    kube.node = Some(ObjectRef {
                        name: node.to_string(),
                        uid: meta::uid(&n).to_string(),
                    });
                }
            }
        }
        "Secret" => kube.secret = this,
        _ => kube.node = this,
    }
    Ok(())
}

/// ServiceAccount admission of a pod being created in `ns`: the service account must
/// exist (403 otherwise, as Kubernetes), and its token is mounted unless automounting is
/// off (`api::admission::admit_pod`).
pub fn admit_pod(st: &State, ns: Option<&str>, pod: &mut Value) -> Result<(), ApiError> {
    if api::admission::is_mirror_pod(pod) {
        return Ok(());
    }
    let ns = ns.unwrap_or("default");
    let sa_name = api::admission::service_account_name(pod).to_string();
    let Some(sa) = get(st, "serviceaccounts", Some(ns), &sa_name)? else {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found",
            meta::name(pod)
        ))
        .with_details(json!({"name": meta::name(pod), "kind": "pods"})));
    };
    api::admission::admit_pod(pod, &sa, &crate::objects::random_suffix());
    Ok(())
}

/// `/.well-known/openid-configuration` and `/openid/v1/jwks`, served without
/// authentication so that other parties can check our tokens.
pub fn discovery_document(st: &State, path: &str) -> Option<Value> {
    match path {
        "/.well-known/openid-configuration" => Some(
            st.sa_keys
                .openid_configuration(&format!("https://{}/openid/v1/jwks", st.config.advertise)),
        ),
        "/openid/v1/jwks" => Some(st.sa_keys.jwks()),
        _ => None,
    }
}
