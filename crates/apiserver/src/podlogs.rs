//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: checks the request against the pod as
//! kube-apiserver does, then proxies it to the agent of the pod's node
//! (`https://<InternalIP>:<kubeletEndpoint port>/containerLogs/{ns}/{pod}/{container}`) with
//! the API server's kubelet client certificate, streaming the agent's answer as it comes
//! (`kubectl logs -f`).

use api::meta;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::objects::Req;
use crate::state::State;
use crate::status::ApiError;

/// The client certificate's subject the agents accept (kube-apiserver's kubelet client).
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The query options forwarded to the agent (Kubernetes' PodLogOptions but `container`).
const FORWARDED: [&str; 7] = [
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
];

/// The HTTP client the API server talks to agents with: a client certificate from the
/// cluster CA, and no verification of the agents' self-signed serving certificates (as
/// kube-apiserver without `--kubelet-certificate-authority`).
pub fn kubelet_client(cert_pem: &str, key_pem: &str) -> Result<reqwest::Client, String> {
    let identity = reqwest::Identity::from_pem(format!("{cert_pem}\n{key_pem}").as_bytes())
        .map_err(|e| format!("kubelet client certificate: {e}"))?;
    reqwest::Client::builder()
        .use_rustls_tls()
        .identity(identity)
        .danger_accept_invalid_certs(true)
        // HTTP/1.1 only: the streaming subresources upgrade the connection.
        .http1_only()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("kubelet client: {e}"))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The container whose logs are asked for, with Kubernetes' messages when there is none.
pub fn choose_container<'a>(pod: &'a Value, asked: Option<&'a str>) -> Result<&'a str, ApiError> {
    let name = meta::name(pod);
    let spec = &pod["spec"];
    let containers = names(&spec["containers"]);
    let init = names(&spec["initContainers"]);
    let ephemeral = names(&spec["ephemeralContainers"]);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers.contains(&c) || init.contains(&c) || ephemeral.contains(&c) {
                Ok(c)
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0]),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Kubernetes' answer for a container that never ran: its status says waiting and has no
/// terminated previous run.
fn waiting(pod: &Value, container: &str, previous: bool) -> Option<ApiError> {
    if previous {
        return None;
    }
    let status = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][k].as_array().into_iter().flatten())
        .find(|s| s["name"].as_str() == Some(container))?;
    let w = status["state"].get("waiting")?;
    if status["lastState"].get("terminated").is_some() {
        return None;
    }
    Some(ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{}\" is waiting to start: {}",
        meta::name(pod),
        w["reason"].as_str().unwrap_or("ContainerCreating")
    )))
}

/// Where a node's agent listens: its address (InternalIP first, as kube-apiserver's
/// default `--kubelet-preferred-address-types` but Hostname) and kubelet port.
pub fn agent_address(node: &Value) -> Option<(String, u16)> {
    let addrs = node["status"]["addresses"].as_array()?;
    let ip = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addrs
                .iter()
                .find(|a| a["type"].as_str() == Some(t))
                .and_then(|a| a["address"].as_str())
                .filter(|a| !a.is_empty())
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Some((ip.to_string(), port))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The agent URL for this request.
pub fn agent_url(
    (host, port): (&str, u16),
    ns: &str,
    pod: &str,
    container: &str,
    query: &std::collections::HashMap<String, String>,
) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let q: Vec<String> = FORWARDED
        .iter()
        .filter_map(|k| query.get(*k).map(|v| format!("{k}={}", encode(v))))
        .collect();
    let mut url = format!(
        "https://{host}:{port}/containerLogs/{}/{}/{}",
        encode(ns),
        encode(pod),
        encode(container)
    );
    if !q.is_empty() {
        url.push('?');
        url.push_str(&q.join("&"));
    }
    url
}

pub(crate) fn agent_error(code: u16, message: String) -> ApiError {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    ApiError::new(code, reason, message)
}

/// Serves `pods/log` for a pod already read from the store.
pub async fn get(st: &State, req: &Req, pod: &Value) -> Result<Response, ApiError> {
    let name = meta::name(pod);
    let ns = meta::namespace(pod);
    let container = choose_container(pod, req.query.get("container").map(String::as_str))?;
    let node_name = match pod["spec"]["nodeName"].as_str() {
        None | Some("") => {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )))
        }
        Some(n) => n,
    };
    let previous = crate::request::flag(&req.query, "previous");
    if let Some(e) = waiting(pod, container, previous) {
        return Err(e);
    }
    let nodes = api::lookup("", "v1", "nodes").expect("nodes are served");
    let node: Value = match st.store.get(&nodes.key(None, node_name))? {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("decoding node {node_name}: {e}")))?,
        None => return Err(ApiError::not_found("", "nodes", node_name)),
    };
    let Some((host, port)) = agent_address(&node) else {
        return Err(ApiError::unavailable(format!(
            "node {node_name} has no address: its agent cannot be reached"
        )));
    };
    let url = agent_url((&host, port), ns, name, container, &req.query);
    tracing::debug!(%url, pod = name, container, node = node_name, "proxying pod logs");
    let resp = st.kubelet_client.get(&url).send().await.map_err(|e| {
        ApiError::unavailable(format!(
            "the agent of node {node_name} could not be reached at {host}:{port}: {e}"
        ))
    })?;
    let code = resp.status().as_u16();
    if !resp.status().is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(agent_error(code, text.trim().to_string()));
    }
    let mut out = Body::from_stream(resp.bytes_stream()).into_response();
    *out.status_mut() = StatusCode::OK;
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        let c = |n: &&str| json!({"name": n});
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
            "containers": containers.iter().map(c).collect::<Vec<_>>(),
            "initContainers": init.iter().map(c).collect::<Vec<_>>(),
        }})
    }

    fn check(pod: &Value, asked: Option<&str>, expected: Result<&str, &str>) {
        let got = choose_container(pod, asked).map_err(|e| e.message);
        assert_eq!(got, expected.map_err(str::to_string), "asked {asked:?}");
    }

    #[test]
    fn chooses_the_container() {
        check(&pod(&["app"], &[]), None, Ok("app"));
        check(&pod(&["app"], &[]), Some(""), Ok("app"));
        check(
            &pod(&["app", "sidecar"], &["init"]),
            Some("init"),
            Ok("init"),
        );
        check(
            &pod(&["app", "sidecar"], &[]),
            None,
            Err("a container name must be specified for pod p, choose one of: [app sidecar]"),
        );
        check(
            &pod(&["app", "sidecar"], &["setup"]),
            None,
            Err("a container name must be specified for pod p, choose one of: [app sidecar] or one of the init containers: [setup]"),
        );
        check(
            &pod(&["app"], &[]),
            Some("nope"),
            Err("container nope is not valid for pod p"),
        );
    }

    #[test]
    fn waiting_containers() {
        let mut p = pod(&["app"], &[]);
        p["status"] = json!({"containerStatuses": [
            {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}
        ]});
        assert_eq!(
            waiting(&p, "app", false).map(|e| e.message).as_deref(),
            Some("container \"app\" in pod \"p\" is waiting to start: ContainerCreating")
        );
        assert!(waiting(&p, "app", true).is_none());
        p["status"]["containerStatuses"][0]["lastState"] = json!({"terminated": {"exitCode": 1}});
        assert!(waiting(&p, "app", false).is_none());
    }

    #[test]
    fn agent_address_and_url() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "172.29.1.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}},
        }});
        assert_eq!(agent_address(&node), Some(("172.29.1.2".into(), 10251)));
        let node =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(agent_address(&node), Some(("10.0.0.1".into(), 10250)));
        assert_eq!(agent_address(&json!({})), None);
        let q = crate::request::parse_query(Some(
            "container=c&follow=true&sinceTime=2024-05-01T09%3A00%3A00Z&tailLines=3&pretty=true",
        ));
        assert_eq!(
            agent_url(("10.0.0.1", 10250), "ns", "p", "c", &q),
            "https://10.0.0.1:10250/containerLogs/ns/p/c?follow=true&sinceTime=2024%2D05%2D01T09%3A00%3A00Z&tailLines=3"
        );
    }
}
