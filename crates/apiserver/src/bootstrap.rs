//! What a new cluster has before anyone asks: the four namespaces, their default
//! ServiceAccounts and `kube-root-ca.crt` ConfigMaps, and the `kubernetes` Service with
//! Endpoints and an EndpointSlice pointing at this API server; and, when configured, the
//! DNS add-on's objects (`api::addons`), created when missing (edits are kept).

use api::meta;
use serde_json::{json, Value};

use crate::objects::{create_object, decode};
use crate::state::State;
use crate::status::ApiError;

fn res(plural: &str, group: &str) -> &'static api::Resource {
    api::RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .expect("bootstrap only names served resources")
}

/// Creates `obj` unless an object of that name exists.
async fn ensure(
    st: &State,
    r: &api::Resource,
    ns: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    if st.store.get(&r.key(ns, meta::name(&obj)))?.is_some() {
        return Ok(());
    }
    match Box::pin(create_object(st, r, ns, obj, false)).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes sure the namespace has its `default` ServiceAccount (the service account
/// controller's job in Kubernetes) and the `kube-root-ca.crt` ConfigMap with the cluster
/// CA (the root-CA publisher's). Failures are logged: the namespace exists either way.
pub async fn ensure_namespace_objects(st: &State, ns: &str) {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    if let Err(e) = ensure(st, res("serviceaccounts", ""), Some(ns), sa).await {
        tracing::warn!(namespace = ns, error = %e, "could not create the default service account");
    }
    let ca = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": api::admission::ROOT_CA_CONFIGMAP,
                     "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": st.ca_pem},
    });
    if let Err(e) = ensure(st, res("configmaps", ""), Some(ns), ca).await {
        tracing::warn!(namespace = ns, error = %e, "could not publish the root CA");
    }
}

/// Writes or refreshes the `kubernetes` Endpoints and EndpointSlice.
async fn endpoints(st: &State) -> Result<(), ApiError> {
    let ip = st.config.advertise.ip().to_string();
    let port = st.config.advertise.port();
    let ep = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "kube-apiserver.kins"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    for (r, obj) in [
        (res("endpoints", ""), ep),
        (res("endpointslices", "discovery.k8s.io"), slice),
    ] {
        let key = r.key(Some("default"), "kubernetes");
        match st.store.get(&key)? {
            None => ensure(st, r, Some("default"), obj).await?,
            Some(kv) => {
                let old = decode(&kv)?;
                let same = if r.kind == "Endpoints" {
                    old["subsets"] == obj["subsets"]
                } else {
                    old["endpoints"] == obj["endpoints"] && old["ports"] == obj["ports"]
                };
                if !same {
                    let mut new = old.clone();
                    for f in ["subsets", "endpoints", "ports"] {
                        if let Some(v) = obj.get(f) {
                            new[f] = v.clone();
                        }
                    }
                    meta::meta_mut(&mut new).remove("resourceVersion");
                    st.store
                        .update(&key, crate::objects::encode(&new), Some(kv.mod_revision))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Creates everything a fresh cluster has; idempotent, run at every start.
pub async fn bootstrap(st: &State) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
        ensure(st, res("namespaces", ""), None, obj).await?;
        ensure_namespace_objects(st, ns).await;
    }
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": st.alloc.first_ip().to_string(), "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": st.config.advertise.port()}]},
    });
    ensure(st, res("services", ""), Some("default"), svc).await?;
    endpoints(st).await?;
    if st.config.dns_addon {
        dns_addon(st).await;
    }
    if st.config.ingress_addon {
        ingress_addon(st).await;
    }
    Ok(())
}

/// Creates the ingress add-on's objects that are missing, at every start, as for DNS.
async fn ingress_addon(st: &State) {
    for (plural, group, obj) in api::addons::ingress_objects() {
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        if let Err(e) = ensure(st, res(plural, group), ns.as_deref(), obj).await {
            tracing::warn!(resource = plural, error = %e, "could not create the ingress add-on");
        }
    }
}

/// Creates the DNS add-on's objects that are missing, at every start (an edited Corefile
/// or a scaled Deployment is kept; a deleted object comes back, as with k3s's add-ons;
/// `kins up --dns=false` stops that). A failure is logged: the cluster works without DNS.
async fn dns_addon(st: &State) {
    let ip = st.alloc.dns_ip().to_string();
    for (plural, group, obj) in api::addons::dns_objects(&ip) {
        if let Err(e) = ensure(st, res(plural, group), Some("kube-system"), obj).await {
            tracing::warn!(resource = plural, error = %e, "could not create the DNS add-on");
        }
    }
}
