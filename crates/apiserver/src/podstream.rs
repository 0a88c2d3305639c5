//! `pods/exec`, `pods/attach` and `pods/portforward`: checked against the pod as
//! kube-apiserver does, then forwarded unchanged (method, query, upgrade headers) to the
//! agent of the pod's node with the client pods/log uses (the kubelet client certificate,
//! HTTP/1.1, which upgrades need). When
//! the agent switches protocols, the client gets the agent's 101 (its negotiated
//! subprotocol and WebSocket accept key) and the two upgraded connections are spliced, so
//! every protocol the agent speaks (WebSocket channels, tunnelled and plain SPDY) passes
//! through untouched, as with kube-apiserver's upgrade-aware proxy. One addition: on the
//! WebSocket channel protocols of exec and attach, the agent's frames are followed, and
//! when its connection ends without a close frame (the agent died), the client gets a
//! Status on the error channel and a close frame, so kubectl says what happened instead
//! of "websocket: close 1006 (abnormal closure)".

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
    let channels = (verb == "exec" || verb == "attach")
        && resp
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p == "v4.channel.k8s.io" || p == "v5.channel.k8s.io");
    tokio::spawn(async move {
        let (Ok(mut a), Ok(c)) = (resp.upgrade().await, client_up.await) else {
            return;
        };
        let mut c = TokioIo::new(c);
        if channels {
            splice_channels(c, a, &node_name).await;
            return;
        }
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut c, &mut a, 64 * 1024, 64 * 1024).await;
    });
    Ok(answer)
}

/// Follows WebSocket frames in the agent → client direction (server frames: no mask).
#[derive(Debug, Default)]
struct FrameTracker {
    /// Bytes of the header of the frame being read.
    header: Vec<u8>,
    /// Payload bytes still to come in the current frame.
    remaining: u64,
    /// A close frame went by.
    closed: bool,
}

impl FrameTracker {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            if let Some((len, opcode)) = self.complete_header() {
                self.closed |= opcode == 0x8;
                self.remaining = len;
                self.header.clear();
            }
        }
    }

    /// The payload length and opcode once the header is complete.
    fn complete_header(&self) -> Option<(u64, u8)> {
        let h = &self.header;
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7f {
            126 if h.len() >= 4 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 if h.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let need = at + if masked { 4 } else { 0 };
        (h.len() >= need).then_some((len, h[0] & 0x0f))
    }

    fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }
}

/// One unmasked binary frame from the server.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// What the client gets when the agent's connection ends without a close frame: the
/// Status on the error channel (3) and a normal close.
fn agent_lost_frames(node: &str) -> Vec<u8> {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "InternalError", "code": 500,
        "message": format!("the connection to the agent of node {node} was lost (the agent restarted?): the command's outcome is unknown")});
    let mut payload = vec![3u8];
    payload.extend_from_slice(status.to_string().as_bytes());
    let mut out = server_frame(0x2, &payload);
    out.extend_from_slice(&server_frame(0x8, &1000u16.to_be_bytes()));
    out
}

/// Splices client and agent for the WebSocket channel protocols, watching the agent's
/// frames (see the module's comment).
async fn splice_channels<C, A>(client: C, agent: A, node: &str)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ar, mut aw) = tokio::io::split(agent);
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    let down = async {
        let mut t = FrameTracker::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match ar.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    t.feed(&buf[..n]);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !t.closed && t.at_boundary() {
            tracing::info!(
                node,
                "the agent's stream ended without a close: telling the client"
            );
            let _ = cw.write_all(&agent_lost_frames(node)).await;
        }
        let _ = cw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut down => {}
        _ = &mut up => down.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_followed_across_reads() {
        let mut t = FrameTracker::default();
        let small = server_frame(0x2, b"\x01hello");
        let big = server_frame(0x2, &vec![7u8; 70_000]);
        let mid = server_frame(0x2, &vec![1u8; 300]);
        let mut all = small.clone();
        all.extend_from_slice(&big);
        all.extend_from_slice(&mid);
        for piece in all.chunks(7) {
            t.feed(piece);
        }
        assert!(t.at_boundary() && !t.closed);
        t.feed(&big[..100]);
        assert!(!t.at_boundary());
        t.feed(&big[100..]);
        assert!(t.at_boundary());
        t.feed(&server_frame(0x8, &1000u16.to_be_bytes()));
        assert!(t.closed);
        // A client-style masked header is understood too.
        let mut t = FrameTracker::default();
        t.feed(&[0x82, 0x83, 1, 2, 3, 4, 9, 9]);
        assert!(!t.at_boundary());
        t.feed(&[9]);
        assert!(t.at_boundary());
    }

    #[test]
    fn the_agent_lost_frames_carry_a_status_then_close() {
        let f = agent_lost_frames("n1");
        let mut t = FrameTracker::default();
        t.feed(&f);
        assert!(t.at_boundary() && t.closed);
        assert_eq!(f[0], 0x82);
        let text = String::from_utf8_lossy(&f);
        assert!(
            text.contains("\"status\":\"Failure\"") && text.contains("agent of node n1 was lost")
        );
    }
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
