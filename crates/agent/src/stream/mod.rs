//! The kubelet's streaming endpoints: `/exec/{ns}/{pod}/{container}`,
//! `/attach/{ns}/{pod}/{container}` and `/portforward/{ns}/{pod}` (an optional pod UID
//! may follow the pod name, as the kubelet's paths allow). The API server forwards
//! `pods/exec`, `pods/attach` and `pods/portforward` here unchanged and splices the upgraded connections, so the protocols are spoken
//! here: WebSocket `v5.channel.k8s.io` and `v4.channel.k8s.io` (exec, and port-forward's
//! channel framing), SPDY/3.1 tunnelled through WebSocket (`SPDY/3.1+portforward.k8s.io`,
//! kubectl ≥ 1.31's port-forward) and plain SPDY/3.1 (older kubectl and client-go's
//! fallback, for both). An offer of nothing spoken here is refused with the list of what is.

pub mod attach;
pub mod exec;
pub mod portforward;
pub mod protocol;
pub mod spdy;
pub mod ws;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::state;
use protocol::ExecOptions;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// What the endpoints need of the agent.
#[derive(Debug, Clone)]
pub struct Context {
    pub run_dir: PathBuf,
    pub kins_exe: PathBuf,
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A pod that runs on this node, from its state on disk.
fn find_pod(run_dir: &Path, ns: &str, name: &str, uid: Option<&str>) -> Option<state::PodState> {
    state::all(run_dir)
        .into_iter()
        .filter(|u| uid.is_none_or(|want| want == u))
        .filter_map(|u| state::load(run_dir, &u))
        .find(|p| p.namespace == ns && p.name == name)
}

/// The state directory of the running attempt of `container`, or Kubernetes' message.
fn running_container(
    run_dir: &Path,
    pod: &state::PodState,
    container: &str,
) -> Result<PathBuf, String> {
    let rec = pod
        .containers
        .get(container)
        .ok_or_else(|| format!("container not found (\"{container}\")"))?;
    let dir = state::container_dir(run_dir, &pod.uid, container, rec.attempts);
    if runtime::container::exec::running_pid(&dir).is_none() {
        return Err(format!(
            "container \"{container}\" in pod \"{}\" is not running",
            pod.name
        ));
    }
    Ok(dir)
}

/// Which kind of upgrade a request asks for.
enum Upgrade {
    WebSocket { key: String, offered: Vec<String> },
    Spdy { offered: Vec<String> },
}

fn upgrade_of<B>(req: &Request<B>) -> Option<Upgrade> {
    let h = req.headers();
    let upgrade = h.get(UPGRADE)?.to_str().ok()?.to_ascii_lowercase();
    let all = |name: &str| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if upgrade == "websocket" {
        let key = h.get(SEC_WEBSOCKET_KEY)?.to_str().ok()?.to_string();
        Some(Upgrade::WebSocket {
            key,
            offered: all("sec-websocket-protocol"),
        })
    } else if upgrade.starts_with("spdy/3.1") {
        Some(Upgrade::Spdy {
            offered: all("x-stream-protocol-version"),
        })
    } else {
        None
    }
}

/// The 101 answer for the negotiated protocol.
fn switching(up: &Upgrade, protocol: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let proto = HeaderValue::from_str(protocol).unwrap_or(HeaderValue::from_static(""));
    match up {
        Upgrade::WebSocket { key, .. } => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert("sec-websocket-accept", v);
            }
            h.insert(SEC_WEBSOCKET_PROTOCOL, proto);
        }
        Upgrade::Spdy { .. } => {
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert("x-stream-protocol-version", proto);
        }
    }
    r
}

/// Serves `/exec/...` and `/portforward/...`; `segs` are the path's decoded segments.
pub fn handle<B>(ctx: &Context, segs: &[String], mut req: Request<B>) -> Response<Body>
where
    B: Send + 'static,
{
    let query = req.uri().query().unwrap_or("").to_string();
    let Some(up) = upgrade_of(&req) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Upgrade request required: use WebSocket (v5.channel.k8s.io, v4.channel.k8s.io, SPDY/3.1+portforward.k8s.io) or SPDY/3.1 (portforward.k8s.io, v5.channel.k8s.io, v4.channel.k8s.io)",
        );
    };
    let (verb, ns, pod_name, uid, container) = match segs {
        [v, ns, pod, c] if v == "exec" || v == "attach" => {
            (v.as_str(), ns, pod, None, Some(c.clone()))
        }
        [v, ns, pod, uid, c] if v == "exec" || v == "attach" => {
            (v.as_str(), ns, pod, Some(uid.as_str()), Some(c.clone()))
        }
        [v, ns, pod] if v == "portforward" => (v.as_str(), ns, pod, None, None),
        [v, ns, pod, uid] if v == "portforward" => (v.as_str(), ns, pod, Some(uid.as_str()), None),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let Some(pod) = find_pod(&ctx.run_dir, ns, pod_name, uid) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod_name}\" in namespace \"{ns}\" is not running on this node"),
        );
    };
    let spdy = matches!(up, Upgrade::Spdy { .. });
    let supported: &[&'static str] = match (verb, spdy) {
        ("portforward", false) => protocol::PORTFORWARD_WEBSOCKET,
        ("portforward", true) => protocol::PORTFORWARD_SPDY,
        (_, false) => protocol::EXEC_WEBSOCKET,
        (_, true) => protocol::EXEC_SPDY,
    };
    let offered = match &up {
        Upgrade::WebSocket { offered, .. } | Upgrade::Spdy { offered } => offered.clone(),
    };
    let Some(chosen) = protocol::negotiate(offered.iter().map(String::as_str), supported) else {
        let o: Vec<&str> = offered.iter().map(String::as_str).collect();
        return text(StatusCode::FORBIDDEN, protocol::unsupported(&o, supported));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    if verb == "portforward" {
        let target = portforward::Target {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            netns: state::netns_path(&ctx.run_dir, &pod.uid),
        };
        // SPDY (plain or tunnelled) says the port in each stream; channels need `ports=`.
        let ports = if spdy || chosen == protocol::TUNNEL {
            Vec::new()
        } else {
            match protocol::forward_ports(&query) {
                Ok(p) if p.is_empty() => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "query parameter \"port\" is required",
                    )
                }
                Ok(p) => p,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            }
        };
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let io = TokioIo::new(upgraded);
            if spdy {
                spdy::portforward(::spdy::Session::serve(io), target).await;
                return;
            }
            let ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            if chosen == protocol::TUNNEL {
                let session = ::spdy::Session::serve(ws::bytes(ws));
                spdy::portforward(session, target).await;
            } else {
                portforward::serve_channels(ws, chosen == protocol::V5, target, ports).await;
            }
        });
        return switching(&up, chosen);
    }
    let container = container.unwrap_or_default();
    let state_dir = match running_container(&ctx.run_dir, &pod, &container) {
        Ok(d) => d,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let opts = ExecOptions::from_query(&query);
    if let Err(m) = opts.check() {
        return text(StatusCode::BAD_REQUEST, m);
    }
    let action = if verb == "attach" {
        exec::Verb::Attach
    } else {
        exec::Verb::Exec {
            kins_exe: ctx.kins_exe.clone(),
        }
    };
    tracing::debug!(namespace = %pod.namespace, pod = %pod.name, container, verb, command = ?opts.command, protocol = chosen, spdy, "exec");
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        if spdy {
            spdy::exec(::spdy::Session::serve(io), &action, &state_dir, &opts).await;
            return;
        }
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        exec_websocket(ws, chosen == protocol::V5, &action, &state_dir, &opts).await;
    });
    switching(&up, chosen)
}

fn boxed_w(s: impl tokio::io::AsyncWrite + Send + Unpin + 'static) -> exec::Writer {
    Box::new(s)
}

fn boxed_r(s: impl tokio::io::AsyncRead + Send + Unpin + 'static) -> exec::Reader {
    Box::new(s)
}

async fn exec_websocket(
    ws: ws::Ws,
    v5: bool,
    verb: &exec::Verb,
    state_dir: &Path,
    opts: &ExecOptions,
) {
    use protocol::{ERROR, RESIZE, STDERR, STDIN, STDOUT};
    let mut wanted = vec![ERROR];
    for (on, ch) in [
        (opts.stdin, STDIN),
        (opts.stdout, STDOUT),
        (opts.stderr, STDERR),
        (opts.tty, RESIZE),
    ] {
        if on {
            wanted.push(ch);
        }
    }
    let mut chans = ws::channels(ws, &wanted, v5, |_| None);
    let session = exec::Session {
        stdin: chans.streams.remove(&STDIN).map(boxed_r),
        stdout: chans.streams.remove(&STDOUT).map(boxed_w),
        stderr: chans.streams.remove(&STDERR).map(boxed_w),
        resize: chans.resize.take(),
        gone: chans.gone.clone(),
    };
    let outcome = exec::serve(verb, state_dir, opts, session).await;
    if let Some(mut e) = chans.streams.remove(&ERROR) {
        let _ = e
            .write_all(protocol::status(&outcome).to_string().as_bytes())
            .await;
        let _ = e.shutdown().await;
    }
}
