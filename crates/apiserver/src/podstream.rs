//! `pods/exec`, `pods/attach` and `pods/portforward`: checked against the pod as
//! kube-apiserver does, then forwarded unchanged (method, query, upgrade headers) to the
//! agent of the pod's node with the client pods/log uses (the kubelet client certificate,
//! HTTP/1.1, which upgrades need). When
//! the agent switches protocols, the client gets the agent's 101 (its negotiated
//! subprotocol and WebSocket accept key) and the two upgraded connections are spliced, so
//! every protocol the agent speaks (WebSocket channels, tunnelled and plain SPDY) passes
//! through untouched, as with kube-apiserver's upgrade-aware proxy.

use api::meta;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::podlogs::{agent_address, agent_error, choose_container};
use crate::request::Target;
use crate::state::State;
use crate::status::ApiError;

/// Request headers passed on to the agent (what the upgrade protocols need).
const FORWARDED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "content-type",
];
/// Response headers of the agent's 101 passed back to the client.
const RETURNED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Whether `target` is one of the streaming subresources.
pub fn is_stream(target: &Target) -> bool {
    target.resource.group.is_empty()
        && target.resource.plural == "pods"
        && matches!(
            target.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The checks kube-apiserver makes before it forwards (the container, the node, the
/// phase), and the agent path: `/{verb}/{ns}/{pod}/{uid}[/{container}]`.
pub fn agent_path(pod: &Value, verb: &str, container: Option<&str>) -> Result<String, ApiError> {
    let name = meta::name(pod);
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if verb != "portforward" && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {verb} into a container in a completed pod; current phase is {phase}"
        )));
    }
    let mut path = format!(
        "/{verb}/{}/{}/{}",
        encode(meta::namespace(pod)),
        encode(name),
        encode(meta::uid(pod))
    );
    if verb != "portforward" {
        let c = choose_container(pod, container)?;
        path.push('/');
        path.push_str(&encode(c));
    }
    Ok(path)
}

/// Forwards one streaming request to the pod's agent.
pub async fn serve(st: &State, target: &Target, mut req: Request) -> Result<Response, ApiError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {}",
            req.method()
        )));
    }
    let verb = target.subresource.as_deref().unwrap_or("");
    let name = target.name.as_deref().unwrap_or("");
    let pods = target.resource;
    let kv = st
        .store
        .get(&pods.key(target.namespace.as_deref(), name))?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("decoding pod {name}: {e}")))?;
    let query = crate::request::parse_query(req.uri().query());
    let mut path = agent_path(&pod, verb, query.get("container").map(String::as_str))?;
    let node_name = match pod["spec"]["nodeName"].as_str() {
        None | Some("") => {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )))
        }
        Some(n) => n.to_string(),
    };
    let nodes = api::lookup("", "v1", "nodes").expect("nodes are served");
    let node: Value = match st.store.get(&nodes.key(None, &node_name))? {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("decoding node {node_name}: {e}")))?,
        None => return Err(ApiError::not_found("", "nodes", &node_name)),
    };
    let (host, port) = agent_address(&node).ok_or_else(|| {
        ApiError::unavailable(format!(
            "node {node_name} has no address: its agent cannot be reached"
        ))
    })?;
    if let Some(q) = req.uri().query() {
        path.push('?');
        path.push_str(q);
    }
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::unavailable(format!(
            "error dialing backend: the agent of node {node_name} could not be reached at {host}:{port}: {e}"
        ))
    };
    let mut out = st
        .kubelet_client
        .request(req.method().clone(), format!("https://{host}:{port}{path}"));
    for h in FORWARDED {
        for v in req.headers().get_all(*h) {
            out = out.header(*h, v);
        }
    }
    tracing::debug!(path, node = %node_name, "forwarding a streaming request");
    let resp = out.send().await.map_err(|e| unreachable(&e))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default().trim().to_string();
        let code = if code < 400 { 500 } else { code };
        return Err(agent_error(code, text));
    }
    let client_up = hyper::upgrade::on(&mut req);
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in RETURNED {
        if let Some(v) = resp.headers().get(*h) {
            answer
                .headers_mut()
                .insert(HeaderName::from_static(h), v.clone());
        }
    }
    if !answer.headers().contains_key(header::CONNECTION) {
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    tokio::spawn(async move {
        let (Ok(mut a), Ok(c)) = (resp.upgrade().await, client_up.await) else {
            return;
        };
        let mut c = TokioIo::new(c);
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut c, &mut a, 64 * 1024, 64 * 1024).await;
    });
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str) -> Value {
        json!({"metadata": {"name": "web", "namespace": "a b", "uid": "u-1"},
               "spec": {"containers": [{"name": "app"}, {"name": "side"}], "nodeName": "n1"},
               "status": {"phase": phase}})
    }

    #[test]
    fn agent_paths_and_checks() {
        assert_eq!(
            agent_path(&pod("Running"), "exec", Some("side")).map_err(|e| e.message),
            Ok("/exec/a%20b/web/u%2D1/side".to_string())
        );
        assert_eq!(
            agent_path(&pod("Running"), "portforward", None).map_err(|e| e.message),
            Ok("/portforward/a%20b/web/u%2D1".to_string())
        );
        assert_eq!(
            agent_path(&pod("Running"), "exec", None).map_err(|e| e.message),
            Err(
                "a container name must be specified for pod web, choose one of: [app side]"
                    .to_string()
            )
        );
        assert_eq!(
            agent_path(&pod("Running"), "attach", Some("nope")).map_err(|e| e.message),
            Err("container nope is not valid for pod web".to_string())
        );
        assert_eq!(
            agent_path(&pod("Succeeded"), "exec", Some("app")).map_err(|e| e.message),
            Err(
                "cannot exec into a container in a completed pod; current phase is Succeeded"
                    .to_string()
            )
        );
    }
}
