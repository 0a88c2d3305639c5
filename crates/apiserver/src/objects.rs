//! The REST verbs on stored objects: create, get, list, update, patch, delete,
//! deletecollection, and the status, scale and binding subresources.

use std::collections::HashMap;
use std::sync::Arc;

use api::meta::{self, meta_mut};
use api::Resource;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::alloc::{self, Held};
use crate::request::Target;
use crate::state::State;
use crate::status::{success_status, ApiError};

/// Largest request body accepted, as kube-apiserver's limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A parsed request on a resource path.
pub struct Req {
    pub target: Target,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn ns(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }
    pub fn res(&self) -> &'static Resource {
        self.target.resource
    }
    pub fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }
    pub fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }
}

/// JSON response with an HTTP code and optional Warning headers.
pub fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.append("warning", v);
        }
    }
    resp
}

/// Parses a stored value and stamps its resourceVersion.
pub fn decode(kv: &store::KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("corrupt object at {}: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// The stored form of an object: apiVersion, kind and metadata first (see
/// `raw_with_rv`), without resourceVersion (the store's revision is the truth).
pub fn encode(obj: &Value) -> Vec<u8> {
    let Some(map) = obj.as_object() else {
        return serde_json::to_vec(obj).unwrap_or_default();
    };
    let mut out = Map::with_capacity(map.len());
    for k in ["apiVersion", "kind"] {
        if let Some(v) = map.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let mut m = map
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    m.remove("resourceVersion");
    out.insert("metadata".into(), Value::Object(m));
    for (k, v) in map {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            out.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

/// Whether the client asked for a server-side Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

pub fn include_object(q: &HashMap<String, String>) -> api::table::IncludeObject {
    match q.get("includeObject").map(String::as_str) {
        Some("None") => api::table::IncludeObject::None,
        Some("Object") => api::table::IncludeObject::Object,
        _ => api::table::IncludeObject::Metadata,
    }
}

/// Decodes a request body as JSON or YAML.
pub fn decode_body(req_headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(
            "Request entity too large: limit is 3145728",
        ));
    }
    let ct = req_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.starts_with(api::protobuf::PROTOBUF_CONTENT_TYPE) {
        return api::protobuf::decode(body).map_err(|e| ApiError::bad_request(e.to_string()));
    }
    if ct.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json; got {ct}"
        )));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if ct.contains("yaml") {
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

/// Checks apiVersion/kind of a body against the path, filling them in when absent.
fn check_type(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let want_av = res.api_version();
    let av = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({}) for this path",
            res.kind
        )));
    }
    if !av.is_empty() && av != want_av {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    let o = obj.as_object_mut().expect("checked to be an object above");
    o.insert("apiVersion".into(), json!(want_av));
    o.insert("kind".into(), json!(res.kind));
    Ok(())
}

/// Decoding errors (wrong types, bad base64) always fail; unknown fields fail, warn or
/// pass per `fieldValidation` (Strict / Warn, the default / Ignore). Returns warnings.
fn field_validation(req: &Req, obj: &Value) -> Result<Vec<String>, ApiError> {
    let mode = req
        .query
        .get("fieldValidation")
        .map(String::as_str)
        .unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Ignore, Warn, Strict; got {mode}"
        )));
    }
    let unknown = api::validation::unknown_fields(req.res(), obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            req.res().kind,
            req.res().version,
            req.res().kind
        ))
    })?;
    if unknown.is_empty() || mode == "Ignore" {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        )));
    }
    Ok(msgs)
}

pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHA[rng.gen_range(0..ALPHA.len())] as char)
        .collect()
}

fn now() -> String {
    meta::timestamp(Utc::now())
}

/// Fields the server owns on create, and status reset per kind.
fn prepare_create(res: &Resource, obj: &mut Value, ns: Option<&str>) {
    let m = meta_mut(obj);
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("selfLink");
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now()));
    if res.namespaced {
        if let Some(ns) = ns {
            m.insert("namespace".into(), json!(ns));
        }
    } else {
        m.remove("namespace");
    }
    if has_generation(res) {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    let o = obj
        .as_object_mut()
        .expect("metadata was inserted into an object");
    match res.kind {
        "Pod" => {
            o.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos_class(o.get("spec"))}),
            );
        }
        "Service" => {
            o.insert("status".into(), json!({"loadBalancer": {}}));
        }
        "Namespace" => {
            o.insert("status".into(), json!({"phase": "Active"}));
        }
        "Deployment" | "ReplicaSet" | "Ingress" => {
            o.insert("status".into(), json!({}));
        }
        _ => {}
    }
}

/// A Secret's write-only `stringData` is merged into `data` (base64) and never stored,
/// as Kubernetes does.
fn merge_string_data(res: &Resource, obj: &mut Value) {
    if res.kind != "Secret" {
        return;
    }
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(sd)) = o.remove("stringData") else {
        return;
    };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            d.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn has_generation(res: &Resource) -> bool {
    matches!(
        res.kind,
        "Pod" | "Deployment" | "ReplicaSet" | "Ingress" | "NetworkPolicy" | "IngressClass"
    )
}

/// Kubernetes' QoS class of a pod spec.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let l = lim.get(r).filter(|v| !v.is_null());
            let q = req.get(r).filter(|v| !v.is_null()).or(l);
            if l.is_some() || q.is_some() {
                any = true;
            }
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

fn invalid(res: &Resource, name: &str, errs: &[api::validation::FieldError]) -> ApiError {
    ApiError::invalid(res.group, res.kind, name, errs)
}

async fn namespace_ok(st: &State, res: &Resource, ns: Option<&str>) -> Result<(), ApiError> {
    if !res.namespaced {
        return Ok(());
    }
    let ns = ns.ok_or_else(|| {
        ApiError::method_not_allowed("a namespace is required to create this object")
    })?;
    let nsres = api::lookup("", "v1", "namespaces").expect("namespaces are served");
    match st.store.get(&nsres.key(None, ns))? {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(kv) => {
            let obj = decode(&kv)?;
            if meta::is_deleting(&obj) {
                Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    crate::status::qualified_resource(res.group, res.plural),
                    "",
                ))
                .with_details(json!({"kind": res.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})))
            } else {
                Ok(())
            }
        }
    }
}

/// Applies defaulting and allocations to a Service about to be written.
fn service_allocations(
    st: &State,
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(Held, Held), ApiError> {
    let old_held = old.map(Held::of).unwrap_or_default();
    if res.kind != "Service" {
        return Ok((old_held.clone(), old_held));
    }
    // Drop fields that belonged to the old type (Kubernetes' dropTypeDependentFields).
    if let Some(old) = old {
        let new_ty = obj["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        let old_ty = old["spec"]["type"].as_str().unwrap_or("ClusterIP");
        if new_ty != old_ty {
            let spec = obj.get_mut("spec").and_then(Value::as_object_mut);
            if let Some(spec) = spec {
                if new_ty == "ExternalName" && spec.get("clusterIP") == old["spec"].get("clusterIP")
                {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
                if old_ty == "ExternalName" && new_ty != "ExternalName" {
                    spec.remove("externalName");
                }
                if !matches!(new_ty.as_str(), "NodePort" | "LoadBalancer") {
                    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                        for p in ports {
                            if let Some(p) = p.as_object_mut() {
                                p.remove("nodePort");
                            }
                        }
                    }
                    spec.remove("externalTrafficPolicy");
                }
                if new_ty != "LoadBalancer" {
                    spec.remove("healthCheckNodePort");
                    spec.remove("allocateLoadBalancerNodePorts");
                    spec.remove("loadBalancerClass");
                }
            }
        }
    }
    let name = meta::name(obj).to_string();
    let held = st
        .alloc
        .assign(obj, &old_held)
        .map_err(|errs| invalid(res, &name, &errs))?;
    Ok((old_held, held))
}

/// POST on a collection.
pub async fn create(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    if req.target.name.is_some() {
        return match req.target.subresource.as_deref() {
            Some("binding") => bind(st, &req).await,
            Some("token") => crate::serviceaccounts::create_token(st, &req).await,
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )),
        };
    }
    let mut obj = decode_body(&req.headers, &req.body)?;
    check_type(res, &mut obj)?;
    let body_ns = meta::namespace(&obj).to_string();
    if res.namespaced && !body_ns.is_empty() && Some(body_ns.as_str()) != req.ns() {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let warnings = field_validation(&req, &obj)?;
    let out = create_object(st, res, req.ns(), obj, req.dry_run()).await?;
    Ok(json_response(StatusCode::CREATED, &out, &warnings))
}

/// Creates an object: server-owned fields, defaults, validation, allocations, one
/// transaction. Used by POST and by the server's own bootstrap.
pub async fn create_object(
    st: &State,
    res: &Resource,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    prepare_create(res, &mut obj, ns);
    merge_string_data(res, &mut obj);
    api::defaults::apply_defaults(res, &mut obj);
    if res.group.is_empty() && res.kind == "Pod" {
        crate::serviceaccounts::admit_pod(st, ns, &mut obj)?;
    }
    if res.group == "networking.k8s.io" && res.kind == "Ingress" {
        admit_ingress(st, &mut obj)?;
    }
    let generate = meta::meta_str(&obj, "generateName").to_string();
    let generated = meta::name(&obj).is_empty() && !generate.is_empty();
    for attempt in 0..8 {
        if generated {
            meta_mut(&mut obj).insert(
                "name".into(),
                json!(format!("{generate}{}", random_suffix())),
            );
        }
        let name = meta::name(&obj).to_string();
        let errs = api::validation::validate_create(res, &obj);
        if !errs.is_empty() {
            return Err(invalid(res, &name, &errs));
        }
        namespace_ok(st, res, ns).await?;
        let mut candidate = obj.clone();
        let (old_held, held) = service_allocations(st, res, &mut candidate, None)?;
        if dry_run {
            return Ok(candidate);
        }
        let key = res.key(ns, &name);
        let mut ops = vec![store::Op::Create {
            key: key.clone(),
            value: encode(&candidate),
        }];
        ops.extend(st.alloc.ops(&key, &old_held, &held));
        let kvs = match st.store.txn(ops).await {
            Ok(kvs) => kvs,
            Err(store::Error::AlreadyExists { key: k }) if k == key => {
                if generated && attempt < 7 {
                    continue;
                }
                return Err(ApiError::already_exists(res.group, res.plural, &name));
            }
            Err(store::Error::AlreadyExists { key: k }) => {
                // A dynamically chosen value was taken meanwhile: choose again.
                st.alloc.load(st.store.as_ref())?;
                if attempt < 7 && !user_requested(&obj, &k) {
                    continue;
                }
                return Err(alloc::taken_error(&k));
            }
            Err(e) => return Err(e.into()),
        };
        st.alloc.committed(&old_held, &held);
        let out = decode(&kvs[0])?;
        if res.kind == "Namespace" {
            crate::bootstrap::ensure_namespace_objects(st, &name).await;
        }
        return Ok(out);
    }
    Err(ApiError::internal(
        "could not create the object after several attempts",
    ))
}

/// Kubernetes' DefaultIngressClass admission: a new Ingress that names no class gets the
/// cluster's default IngressClass.
fn admit_ingress(st: &State, obj: &mut Value) -> Result<(), ApiError> {
    if !api::admission::wants_default_ingress_class(obj) {
        return Ok(());
    }
    let classes = api::lookup("networking.k8s.io", "v1", "ingressclasses")
        .expect("ingressclasses are served");
    let opts = list_opts(classes, &HashMap::new())?;
    let (items, _, _) = list_objects(st, classes, None, &opts, None, None, None)?;
    api::admission::admit_ingress(obj, &items);
    Ok(())
}

/// Whether the allocation key names a value the user asked for (then a clash is an error).
fn user_requested(obj: &Value, key: &str) -> bool {
    let spec = &obj["spec"];
    if let Some(ip) = key.strip_prefix(alloc::IP_PREFIX) {
        return spec["clusterIP"].as_str() == Some(ip);
    }
    if let Some(p) = key.strip_prefix(alloc::PORT_PREFIX) {
        return spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["nodePort"].as_u64().map(|n| n.to_string()).as_deref() == Some(p));
    }
    false
}

async fn get_obj(
    st: &State,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<(Value, i64), ApiError> {
    match st.store.get(&res.key(ns, name))? {
        Some(kv) => Ok((decode(&kv)?, kv.mod_revision)),
        None => Err(ApiError::not_found(res.group, res.plural, name)),
    }
}

/// Renders one object as JSON or as a Table.
fn render_one(req: &Req, obj: &Value) -> Response {
    if wants_table(&req.headers) {
        let t = api::table::table(
            req.res(),
            std::slice::from_ref(obj),
            Utc::now(),
            include_object(&req.query),
            json!({"resourceVersion": meta::meta_str(obj, "resourceVersion")}),
        );
        json_response(StatusCode::OK, &t, &[])
    } else {
        json_response(StatusCode::OK, obj, &[])
    }
}

/// GET of one object or one of its subresources.
pub async fn get(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    let (obj, _) = get_obj(st, res, req.ns(), req.name()).await?;
    match req.target.subresource.as_deref() {
        None | Some("status") | Some("ephemeralcontainers") => Ok(render_one(&req, &obj)),
        Some("scale") => Ok(json_response(StatusCode::OK, &scale_of(res, &obj), &[])),
        Some("log") => crate::podlogs::get(st, &req, &obj).await,
        Some(other) => Err(ApiError::method_not_allowed(format!(
            "GET is not supported on {other}"
        ))),
    }
}

fn scale_of(res: &Resource, obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(obj),
            "namespace": meta::namespace(obj),
            "uid": meta::uid(obj),
            "resourceVersion": meta::meta_str(obj, "resourceVersion"),
            "creationTimestamp": meta::meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(if res.kind == "Deployment" { 1 } else { 0 })},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Parsed list options.
pub struct ListOpts {
    pub labels: api::selectors::LabelSelector,
    pub fields: api::selectors::FieldSelector,
}

pub fn list_opts(req_res: &Resource, q: &HashMap<String, String>) -> Result<ListOpts, ApiError> {
    let labels = api::selectors::LabelSelector::parse(
        q.get("labelSelector").map(String::as_str).unwrap_or(""),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = api::selectors::FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    fields
        .check_supported(req_res)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(ListOpts { labels, fields })
}

impl ListOpts {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, res: &Resource, obj: &Value) -> bool {
        self.labels.matches(meta::labels(obj)) && self.fields.matches(res, obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, last_key: &str) -> String {
    let c = Continue {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: last_key.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&c).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Continue>(&b).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: illegal base64 data"))
}

/// Lists matching objects; returns (items, revision, continue token).
pub fn list_objects(
    st: &State,
    res: &Resource,
    ns: Option<&str>,
    opts: &ListOpts,
    limit: Option<usize>,
    cont: Option<&str>,
    at: Option<i64>,
) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
    let (kvs, rev, token) = list_kvs(st, res, ns, opts, limit, cont, at)?;
    let items = kvs.iter().map(decode).collect::<Result<_, _>>()?;
    Ok((items, rev, token))
}

/// Lists the stored entries of matching objects; returns (entries, revision, continue
/// token). Without selectors nothing is parsed here.
#[allow(clippy::too_many_arguments)]
pub fn list_kvs(
    st: &State,
    res: &Resource,
    ns: Option<&str>,
    opts: &ListOpts,
    limit: Option<usize>,
    cont: Option<&str>,
    at: Option<i64>,
) -> Result<(Vec<store::KeyValue>, i64, Option<String>), ApiError> {
    let prefix = res.namespace_prefix(ns);
    let (mut start, mut at) = (None::<String>, at);
    if let Some(c) = cont.filter(|c| !c.is_empty()) {
        let c = decode_continue(c)?;
        start = Some(c.start);
        at = Some(c.rv);
    }
    let matches = |kv: &store::KeyValue| -> Result<bool, ApiError> {
        if opts.is_empty() {
            return Ok(true);
        }
        Ok(opts.matches(res, &decode(kv)?))
    };
    // A name selector turns the list into a point read.
    if let (Some(name), None) = (opts.fields.exact_name(), at) {
        if !res.namespaced || ns.is_some() {
            let rev = st.store.current_revision();
            let items = match st.store.get(&res.key(ns, name))? {
                Some(kv) if matches(&kv)? => vec![kv],
                _ => vec![],
            };
            return Ok((items, rev, None));
        }
    }
    let mut items = Vec::new();
    let mut rev;
    let batch = limit.map(|l| l.max(1)).unwrap_or(usize::MAX);
    loop {
        let page = st
            .store
            .list(&prefix, start.as_deref(), limit.map(|_| batch.max(64)), at)
            .map_err(|e| match e {
                store::Error::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ),
                e => e.into(),
            })?;
        rev = page.revision;
        at = Some(rev);
        let n = page.items.len();
        let more = page.more;
        let last_key = page.items.last().map(|kv| kv.key.clone());
        for (i, kv) in page.items.into_iter().enumerate() {
            if matches(&kv)? {
                let key = kv.key.clone();
                items.push(kv);
                if items.len() == batch {
                    let more = more || i + 1 < n;
                    let token = more.then(|| encode_continue(rev, &key));
                    return Ok((items, rev, token));
                }
            }
        }
        if !more || n == 0 {
            return Ok((items, rev, None));
        }
        start = last_key;
    }
}

/// The stored JSON of an object with its resourceVersion spliced in, without parsing it.
/// `encode` writes apiVersion, kind and metadata first, so the first `"metadata":{` is
/// the object's own (a quote inside a JSON string is always escaped).
pub fn raw_with_rv(kv: &store::KeyValue, out: &mut Vec<u8>) {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    let pos = kv.value.windows(NEEDLE.len()).position(|w| w == NEEDLE);
    match pos {
        Some(p) => {
            let at = p + NEEDLE.len();
            out.extend_from_slice(&kv.value[..at]);
            out.extend_from_slice(b"\"resourceVersion\":\"");
            out.extend_from_slice(kv.mod_revision.to_string().as_bytes());
            out.push(b'"');
            if kv.value.get(at) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&kv.value[at..]);
        }
        None => match decode(kv) {
            Ok(v) => out.extend_from_slice(v.to_string().as_bytes()),
            Err(_) => out.extend_from_slice(&kv.value),
        },
    }
}

/// GET on a collection (without watch).
pub async fn list(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    let opts = list_opts(res, &req.query)?;
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let at = match (
        req.query.get("resourceVersionMatch").map(String::as_str),
        req.query.get("resourceVersion"),
    ) {
        (Some("Exact"), Some(rv)) => Some(
            rv.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion: {rv}")))?,
        ),
        _ => None,
    };
    let (kvs, rev, cont) = list_kvs(
        st,
        res,
        req.ns(),
        &opts,
        limit,
        req.query.get("continue").map(String::as_str),
        at,
    )?;
    let mut list_meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        list_meta["continue"] = json!(c);
    }
    if wants_table(&req.headers) {
        let items: Vec<Value> = kvs.iter().map(decode).collect::<Result<_, _>>()?;
        let t = api::table::table(
            res,
            &items,
            Utc::now(),
            include_object(&req.query),
            list_meta,
        );
        return Ok(json_response(StatusCode::OK, &t, &[]));
    }
    // The list is written from the stored bytes: no parse and no re-serialization.
    let mut body =
        Vec::with_capacity(kvs.iter().map(|kv| kv.value.len() + 32).sum::<usize>() + 256);
    body.extend_from_slice(
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            res.list_kind,
            res.api_version(),
            list_meta
        )
        .as_bytes(),
    );
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        raw_with_rv(kv, &mut body);
    }
    body.extend_from_slice(b"]}");
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Sets `new`'s spec.ephemeralContainers to `ecs` (absent: none), the rest of its spec
/// untouched (`old` only for a missing spec).
fn carry(new: &mut Value, old: &Value, ecs: Option<&Value>) {
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = old.get("spec").cloned().unwrap_or_else(|| json!({}));
    }
    if let Some(spec) = new["spec"].as_object_mut() {
        match ecs {
            Some(v) => {
                spec.insert("ephemeralContainers".into(), v.clone());
            }
            None => {
                spec.remove("ephemeralContainers");
            }
        }
    }
}

/// Carries over what an update may not change and bumps the generation.
fn prepare_update(res: &Resource, old: &Value, new: &mut Value, sub: Option<&str>) {
    match sub {
        Some("status") => {
            // Only status changes through /status.
            let status = new.get("status").cloned();
            *new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        Some("ephemeralcontainers") => {
            // Only spec.ephemeralContainers changes through /ephemeralcontainers.
            let ecs = new["spec"].get("ephemeralContainers").cloned();
            *new = old.clone();
            carry(new, old, ecs.as_ref());
        }
        _ => {
            if res.has_subresource("status") {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            // Ephemeral containers change only through their subresource.
            if res.has_subresource("ephemeralcontainers") {
                let ecs = old["spec"].get("ephemeralContainers").cloned();
                carry(new, old, ecs.as_ref());
            }
        }
    }
    let om = meta::meta(old).cloned().unwrap_or_default();
    let m = meta_mut(new);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match om.get(k) {
            Some(v) => {
                m.insert(k.into(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
    if has_generation(res) {
        let g = om.get("generation").and_then(Value::as_i64).unwrap_or(1);
        let changed = meta::spec_part(old) != meta::spec_part(new);
        meta_mut(new).insert("generation".into(), json!(if changed { g + 1 } else { g }));
    } else {
        meta_mut(new).remove("generation");
    }
}

/// Writes a new version of an existing object: validation, allocations, finalizers.
async fn write_update(
    st: &Arc<State>,
    req: &Req,
    old: &Value,
    old_rev: i64,
    mut new: Value,
    warnings: Vec<String>,
) -> Result<Response, ApiError> {
    let res = req.res();
    let name = req.name().to_string();
    let sub = req.target.subresource.as_deref();
    prepare_update(res, old, &mut new, sub);
    if sub.is_none() {
        merge_string_data(res, &mut new);
        api::defaults::prepare_update(res, &mut new, old);
    }
    api::defaults::apply_defaults(res, &mut new);
    let errs = api::validation::validate_update(res, &new, old);
    if !errs.is_empty() {
        return Err(invalid(res, &name, &errs));
    }
    if sub == Some("ephemeralcontainers") {
        let errs = api::validation::validate_ephemeral_containers(&new, old);
        if !errs.is_empty() {
            return Err(invalid(res, &name, &errs));
        }
    }
    let (old_held, held) = if matches!(sub, Some("status") | Some("ephemeralcontainers")) {
        let h = Held::of(old);
        (h.clone(), h)
    } else {
        service_allocations(st, res, &mut new, Some(old))?
    };
    if req.dry_run() {
        return Ok(json_response(StatusCode::OK, &new, &warnings));
    }
    let key = res.key(req.ns(), &name);
    // An object being deleted goes once its last finalizer is removed.
    let finished = meta::is_deleting(&new)
        && meta::finalizers(&new).is_empty()
        && !(res.kind == "Namespace" && has_spec_finalizers(&new));
    // As Kubernetes does, an update that changes nothing writes nothing: the object keeps
    // its resourceVersion and watchers see no event (kubectl says "patched (no change)").
    if !finished && same_but_version(old, &new) {
        let body = if sub == Some("scale") {
            scale_of(res, old)
        } else {
            old.clone()
        };
        return Ok(json_response(StatusCode::OK, &body, &warnings));
    }
    let mut ops = Vec::new();
    if finished {
        ops.push(store::Op::Delete {
            key: key.clone(),
            expected: Some(old_rev),
        });
        ops.extend(st.alloc.ops(&key, &old_held, &Held::default()));
    } else {
        ops.push(store::Op::Update {
            key: key.clone(),
            value: encode(&new),
            expected: Some(old_rev),
        });
        ops.extend(st.alloc.ops(&key, &old_held, &held));
    }
    let kvs = match st.store.txn(ops).await {
        Ok(k) => k,
        Err(store::Error::Conflict { .. }) => {
            return Err(ApiError::stale(res.group, res.plural, &name))
        }
        Err(store::Error::NotFound { key: k }) if k == key => {
            return Err(ApiError::not_found(res.group, res.plural, &name))
        }
        Err(store::Error::AlreadyExists { key: k }) => return Err(alloc::taken_error(&k)),
        Err(e) => return Err(e.into()),
    };
    if finished {
        st.alloc.committed(&old_held, &Held::default());
    } else {
        st.alloc.committed(&old_held, &held);
    }
    let mut out = decode(&kvs[0])?;
    if finished {
        // The object is gone; answer with its last state.
        out = new;
        meta_mut(&mut out).insert(
            "resourceVersion".into(),
            json!(kvs[0].mod_revision.to_string()),
        );
    }
    if sub == Some("scale") {
        return Ok(json_response(
            StatusCode::OK,
            &scale_of(res, &out),
            &warnings,
        ));
    }
    Ok(json_response(StatusCode::OK, &out, &warnings))
}

/// Whether two versions of an object differ at most in `metadata.resourceVersion`.
fn same_but_version(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn has_spec_finalizers(ns: &Value) -> bool {
    ns["spec"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn body_rv(obj: &Value) -> Option<i64> {
    let rv = meta::meta_str(obj, "resourceVersion");
    if rv.is_empty() {
        None
    } else {
        Some(rv.parse().unwrap_or(-1))
    }
}

/// Whether a patch sets metadata.resourceVersion itself, a precondition: only then does a
/// conflict fail the patch; otherwise the server applies it again to the new state.
fn patch_pins_rv(patch: &Value) -> bool {
    match patch {
        Value::Array(ops) => ops
            .iter()
            .any(|op| op["path"] == "/metadata/resourceVersion"),
        _ => patch
            .pointer("/metadata/resourceVersion")
            .is_some_and(|v| !v.is_null()),
    }
}

/// Applies a Scale object's spec.replicas to its parent.
fn apply_scale(obj: &Value, scale: &Value) -> Result<Value, ApiError> {
    // Scale.spec.replicas is `omitempty`: a client asking for 0 sends no replicas at all.
    let replicas = match &scale["spec"]["replicas"] {
        Value::Null => 0,
        v => v.as_i64().ok_or_else(|| {
            ApiError::bad_request("spec.replicas of the Scale must be an integer")
        })?,
    };
    let mut new = obj.clone();
    new["spec"]["replicas"] = json!(replicas);
    Ok(new)
}

/// PUT of an object or subresource.
pub async fn update(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    let name = req.name().to_string();
    let mut body = decode_body(&req.headers, &req.body)?;
    let sub = req.target.subresource.as_deref();
    if sub == Some("scale") {
        let (old, rev) = get_obj(st, res, req.ns(), &name).await?;
        if let Some(want) = body_rv(&body) {
            if want != rev {
                return Err(ApiError::stale(res.group, res.plural, &name));
            }
        }
        let new = apply_scale(&old, &body)?;
        return write_update(st, &req, &old, rev, new, Vec::new()).await;
    }
    if !matches!(sub, None | Some("status") | Some("ephemeralcontainers")) {
        return Err(ApiError::method_not_allowed(
            "PUT is not supported on this subresource",
        ));
    }
    check_type(res, &mut body)?;
    let body_name = meta::name(&body);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = meta::namespace(&body).to_string();
    if res.namespaced && !body_ns.is_empty() && Some(body_ns.as_str()) != req.ns() {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let warnings = field_validation(&req, &body)?;
    let current = st.store.get(&res.key(req.ns(), &name))?;
    let Some(kv) = current else {
        if matches!(res.kind, "Endpoints" | "Lease" | "Event") && sub.is_none() {
            let mut r = req;
            r.target.name = None;
            return create(st, r).await;
        }
        return Err(ApiError::not_found(res.group, res.plural, &name));
    };
    let old = decode(&kv)?;
    if let Some(want) = body_rv(&body) {
        if want != kv.mod_revision {
            return Err(ApiError::stale(res.group, res.plural, &name));
        }
    }
    write_update(st, &req, &old, kv.mod_revision, body, warnings).await
}

/// PATCH of an object or subresource (JSON patch, merge patch, strategic merge patch).
pub async fn patch(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    let name = req.name().to_string();
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor" {
        return Err(ApiError::unsupported_media_type(
            "server-side apply is not supported by kins yet: use client-side `kubectl apply`",
        ));
    }
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {ct:?}"
        )));
    }
    let mut json_headers = req.headers.clone();
    json_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let patch_body = decode_body(&json_headers, &req.body)?;
    let sub = req.target.subresource.as_deref();
    if !matches!(
        sub,
        None | Some("status") | Some("scale") | Some("ephemeralcontainers")
    ) {
        return Err(ApiError::method_not_allowed(
            "PATCH is not supported on this subresource",
        ));
    }
    // Patches of one object wait for each other; what still conflicts (a PUT, a controller's
    // status write) is retried on the newer object, as Kubernetes' GuaranteedUpdate does.
    let _turn = st.key_locks.lock(&res.key(req.ns(), &name)).await;
    for _attempt in 0..16 {
        let (old, rev) = get_obj(st, res, req.ns(), &name).await?;
        let base = if sub == Some("scale") {
            scale_of(res, &old)
        } else {
            old.clone()
        };
        let patched = match ct.as_str() {
            "application/json-patch+json" => api::patch::json_patch(&base, &patch_body),
            "application/merge-patch+json" => api::patch::merge_patch(&base, &patch_body),
            _ => {
                if sub == Some("scale") {
                    api::patch::merge_patch(&base, &patch_body)
                } else {
                    api::patch::strategic_merge_patch(res, &base, &patch_body)
                }
            }
        }
        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
        let mut new = if sub == Some("scale") {
            apply_scale(&old, &patched)?
        } else {
            patched
        };
        if sub != Some("scale") {
            check_type(res, &mut new)?;
        }
        let pinned = body_rv(&new).filter(|_| sub != Some("scale") && patch_pins_rv(&patch_body));
        if let Some(want) = pinned {
            if want != rev {
                return Err(ApiError::stale(res.group, res.plural, &name));
            }
        }
        if meta::name(&new) != name {
            return Err(ApiError::bad_request(
                "metadata.name cannot be changed by a patch",
            ));
        }
        let warnings = if sub.is_none() {
            field_validation(&req, &new)?
        } else {
            Vec::new()
        };
        match write_update(st, &req, &old, rev, new, warnings).await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && pinned.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::stale(res.group, res.plural, &name))
}

/// Delete options from the body or the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    /// Preconditions.
    pub uid: Option<String>,
    pub rv: Option<String>,
    pub dry_run: bool,
}

fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts::default();
    if !req.body.is_empty() && !req.body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        o.grace = v["gracePeriodSeconds"].as_i64();
        o.propagation = v["propagationPolicy"].as_str().map(str::to_string);
        if v["orphanDependents"].as_bool() == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        o.uid = v["preconditions"]["uid"].as_str().map(str::to_string);
        o.rv = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        if v["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            // handled through the query by clients; accept both.
        }
    }
    if let Some(g) = req.query.get("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if let Some(p) = req.query.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::new(422, "Invalid", format!("propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\"")));
        }
    }
    Ok(o)
}

/// Deletes one object, honouring preconditions, finalizers, grace periods and policies.
/// Returns the object as answered to the client.
pub async fn delete_one(
    st: &State,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    o: &DeleteOpts,
) -> Result<(Value, bool), ApiError> {
    let (grace, propagation, pre_uid, pre_rv, dry_run) = (
        o.grace,
        o.propagation.as_deref(),
        o.uid.as_deref(),
        o.rv.as_deref(),
        o.dry_run,
    );
    for _attempt in 0..16 {
        let (obj, rev) = get_obj(st, res, ns, name).await?;
        if let Some(u) = pre_uid {
            if u != meta::uid(&obj) {
                return Err(ApiError::conflict(
                    res.group,
                    res.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                        meta::uid(&obj)
                    ),
                ));
            }
        }
        if let Some(r) = pre_rv {
            if r != rev.to_string() {
                return Err(ApiError::conflict(res.group, res.plural, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {r}, ResourceVersion in meta: {rev}")));
            }
        }
        let mut finalizers = meta::finalizers(&obj);
        match propagation {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            _ => {}
        }
        let graceful_pod = res.kind == "Pod"
            && obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && obj["status"]["phase"]
                .as_str()
                .is_none_or(|p| p != "Succeeded" && p != "Failed")
            && grace.unwrap_or_else(|| {
                obj["spec"]["terminationGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(30)
            }) > 0;
        let two_phase = !finalizers.is_empty() || graceful_pod || res.kind == "Namespace";
        let key = res.key(ns, name);
        if two_phase {
            if meta::is_deleting(&obj) && finalizers == meta::finalizers(&obj) {
                // Already being deleted; a zero grace period on a pod finishes it.
                if !(res.kind == "Pod" && grace == Some(0) && meta::finalizers(&obj).is_empty()) {
                    return Ok((obj, false));
                }
            } else {
                let mut new = obj.clone();
                let m = meta_mut(&mut new);
                if !m.contains_key("deletionTimestamp") || m["deletionTimestamp"].is_null() {
                    let g = if graceful_pod {
                        grace.unwrap_or_else(|| {
                            obj["spec"]["terminationGracePeriodSeconds"]
                                .as_i64()
                                .unwrap_or(30)
                        })
                    } else {
                        0
                    };
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(meta::timestamp(Utc::now() + chrono::Duration::seconds(g))),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(g));
                }
                m.insert("finalizers".into(), json!(finalizers));
                if finalizers.is_empty() {
                    m.remove("finalizers");
                }
                if res.kind == "Namespace" {
                    new["status"]["phase"] = json!("Terminating");
                }
                if dry_run {
                    return Ok((new, false));
                }
                match st.store.update(&key, encode(&new), Some(rev)).await {
                    Ok(kv) => return Ok((decode(&kv)?, false)),
                    Err(store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if dry_run {
            return Ok((obj, true));
        }
        let held = Held::of(&obj);
        let held = if res.kind == "Service" {
            held
        } else {
            Held::default()
        };
        let mut ops = vec![store::Op::Delete {
            key: key.clone(),
            expected: Some(rev),
        }];
        ops.extend(st.alloc.ops(&key, &held, &Held::default()));
        match st.store.txn(ops).await {
            Ok(_) => {
                st.alloc.committed(&held, &Held::default());
                return Ok((obj, true));
            }
            Err(store::Error::Conflict { .. }) => continue,
            Err(store::Error::NotFound { key: k }) if k == key => {
                return Err(ApiError::not_found(res.group, res.plural, name))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::stale(res.group, res.plural, name))
}

/// DELETE of one object.
pub async fn delete(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    if req.target.subresource.is_some() {
        return Err(ApiError::method_not_allowed(
            "DELETE is not supported on subresources",
        ));
    }
    let mut o = delete_opts(&req)?;
    o.dry_run = req.dry_run();
    let (obj, gone) = delete_one(st, res, req.ns(), req.name(), &o).await?;
    let code = if gone {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(json_response(code, &obj, &[]))
}

/// DELETE on a collection.
pub async fn delete_collection(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    let opts = list_opts(res, &req.query)?;
    let mut o = delete_opts(&req)?;
    o.dry_run = req.dry_run();
    o.uid = None;
    o.rv = None;
    let (items, _, _) = list_objects(st, res, req.ns(), &opts, None, None, None)?;
    let mut out = Vec::new();
    for item in items {
        let ns = meta::namespace(&item).to_string();
        let ns = if res.namespaced {
            Some(ns.as_str())
        } else {
            None
        };
        match delete_one(st, res, ns, meta::name(&item), &o).await {
            Ok((obj, _)) => out.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "kind": res.list_kind,
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": st.store.current_revision().to_string()},
        "items": out,
    });
    Ok(json_response(StatusCode::OK, &body, &[]))
}

/// POST pods/NAME/binding: assigns a pod to a node, once.
async fn bind(st: &Arc<State>, req: &Req) -> Result<Response, ApiError> {
    let res = req.res();
    let name = req.name().to_string();
    let body = decode_body(&req.headers, &req.body)?;
    let node = body["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::new(422, "Invalid", "Binding.target.name: Required value"))?
        .to_string();
    for _ in 0..16 {
        let (old, rev) = get_obj(st, res, req.ns(), &name).await?;
        if meta::is_deleting(&old) {
            return Err(ApiError::conflict(
                res.group,
                res.plural,
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(cur) = old["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict(
                res.group,
                res.plural,
                &name,
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        // As Kubernetes' binding does: the pod is scheduled from now on.
        let mut conds: Vec<Value> = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
        new["status"]["conditions"] = json!(conds);
        if req.dry_run() {
            return Ok(json_response(
                StatusCode::CREATED,
                &success_status(json!({})),
                &[],
            ));
        }
        match st
            .store
            .update(&res.key(req.ns(), &name), encode(&new), Some(rev))
            .await
        {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &success_status(json!({})),
                    &[],
                ))
            }
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::stale(res.group, res.plural, &name))
}

/// A `Map` of a JSON object, or an empty one.
pub fn as_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}
