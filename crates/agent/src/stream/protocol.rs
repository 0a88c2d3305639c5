//! The pure part of the kubelet's streaming protocols: subprotocol negotiation, the
//! channel numbers of the WebSocket channel protocol, the exec options of a request's
//! query and the `Status` objects written on the error channel.

use serde_json::{json, Value};

/// WebSocket channel protocol with the close frame `[255, channel]` (kubectl ≥ 1.30).
pub const V5: &str = "v5.channel.k8s.io";
/// WebSocket channel protocol whose error channel carries a `Status` (client-go, kube-rs,
/// the Python client).
pub const V4: &str = "v4.channel.k8s.io";

/// What exec and attach speak over WebSocket, preferred first.
pub const EXEC_WEBSOCKET: &[&str] = &[V5, V4];
/// SPDY/3.1 carried in WebSocket binary messages (kubectl ≥ 1.31's port-forward).
pub const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// What port-forward speaks over WebSocket: SPDY tunnelled, or the channel protocol with
/// one data and one error channel per port (the Python client, kube-rs).
pub const PORTFORWARD_WEBSOCKET: &[&str] = &[TUNNEL, V5, V4];
/// Port-forward's protocol over plain SPDY/3.1.
pub const PORTFORWARD_SPDY: &[&str] = &["portforward.k8s.io"];
/// What exec and attach speak over plain SPDY/3.1 (one stream per stdin/stdout/...).
pub const EXEC_SPDY: &[&str] = &[V5, V4];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` says the peer will send nothing more on that channel.
pub const CLOSE: u8 = 255;

/// The first protocol the client offers (in its order) that `supported` has. Offers come
/// comma-separated in one header or in several headers.
pub fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[&'static str],
) -> Option<&'static str> {
    offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .find_map(|p| {
            supported
                .iter()
                .find(|s| s.eq_ignore_ascii_case(p))
                .copied()
        })
}

/// The error a client gets when none of its protocols is spoken here.
pub fn unsupported(offered: &[&str], supported: &[&str]) -> String {
    format!(
        "unable to upgrade: none of the requested protocols ({}) is supported; the server supports: {}",
        if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        },
        supported.join(", ")
    )
}

/// The options of an exec or attach request (Kubernetes' PodExecOptions / PodAttachOptions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T")
}

impl ExecOptions {
    /// From a query string (`command` repeated, `stdin=true`, ...). With a terminal,
    /// stderr is merged into it and not a stream of its own.
    pub fn from_query(query: &str) -> ExecOptions {
        let mut o = ExecOptions::default();
        for (k, v) in form_pairs(query) {
            match k.as_str() {
                "command" => o.command.push(v),
                "input" | "stdin" => o.stdin = truthy(&v),
                "output" | "stdout" => o.stdout = truthy(&v),
                "error" | "stderr" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                _ => {}
            }
        }
        if o.tty {
            o.stderr = false;
        }
        o
    }

    /// Kubernetes' rule: at least one of stdin, stdout and stderr.
    pub fn check(&self) -> Result<(), String> {
        if !self.stdin && !self.stdout && !self.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(())
    }
}

/// The `ports` of a port-forward request (`ports=80,8080` or repeated).
pub fn forward_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for (k, v) in form_pairs(query) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => return Err(format!("unable to parse \"{p}\" as a port: invalid port")),
            }
        }
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// How an exec ended, as written on the error channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran; its exit code.
    Exited(i32),
    /// The command could not be run, or the session failed.
    Failed(String),
}

/// The `Status` of the error channel (v4 and v5): Success, NonZeroExitCode with the code
/// as a cause (what client-go turns into `command terminated with exit code N`), or an
/// InternalError with the message.
pub fn status(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command in container: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
            "details": {"causes": [{"message": message}]},
        }),
    }
}

/// A resize message (`{"Width": cols, "Height": rows}`), as (cols, rows).
pub fn parse_resize(msg: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(msg).ok()?;
    let dim = |k: &str| v[k].as_u64().and_then(|n| u16::try_from(n).ok());
    Some((dim("Width")?, dim("Height")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        let check = |offered: &[&str], supported: &[&'static str], want: Option<&str>| {
            assert_eq!(
                negotiate(offered.iter().copied(), supported),
                want,
                "{offered:?}"
            );
        };
        check(
            &["v5.channel.k8s.io, v4.channel.k8s.io"],
            EXEC_WEBSOCKET,
            Some(V5),
        );
        check(
            &["v4.channel.k8s.io", "v5.channel.k8s.io"],
            EXEC_WEBSOCKET,
            Some(V4),
        );
        check(
            &["base64.channel.k8s.io, v4.channel.k8s.io"],
            EXEC_WEBSOCKET,
            Some(V4),
        );
        check(&["channel.k8s.io"], EXEC_WEBSOCKET, None);
        check(&[], EXEC_WEBSOCKET, None);
        check(
            &["SPDY/3.1+portforward.k8s.io"],
            PORTFORWARD_WEBSOCKET,
            Some(TUNNEL),
        );
        check(&["v4.channel.k8s.io"], PORTFORWARD_WEBSOCKET, Some(V4));
        check(
            &["portforward.k8s.io"],
            PORTFORWARD_SPDY,
            Some("portforward.k8s.io"),
        );
        check(
            &["v4.channel.k8s.io", "v3.channel.k8s.io"],
            EXEC_SPDY,
            Some(V4),
        );
        check(&["v2.channel.k8s.io"], EXEC_SPDY, None);
        assert_eq!(
            unsupported(&["channel.k8s.io"], EXEC_WEBSOCKET),
            "unable to upgrade: none of the requested protocols (channel.k8s.io) is supported; the server supports: v5.channel.k8s.io, v4.channel.k8s.io"
        );
    }

    #[test]
    fn exec_options_from_the_query() {
        let o = ExecOptions::from_query(
            "command=sh&command=-c&command=echo+a%20b&container=app&stdin=true&stdout=true&stderr=true",
        );
        assert_eq!(o.command, ["sh", "-c", "echo a b"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let o = ExecOptions::from_query("command=sh&stdin=1&stdout=1&stderr=1&tty=1");
        assert!(o.tty && !o.stderr, "a terminal merges stderr");
        assert!(o.check().is_ok());
        assert_eq!(
            ExecOptions::from_query("command=true").check(),
            Err("you must specify at least 1 of stdin, stdout, stderr".into())
        );
    }

    #[test]
    fn ports() {
        assert_eq!(
            forward_ports("ports=80,8080&ports=9"),
            Ok(vec![80, 8080, 9])
        );
        assert_eq!(forward_ports(""), Ok(vec![]));
        assert_eq!(
            forward_ports("ports=http"),
            Err("unable to parse \"http\" as a port: invalid port".into())
        );
        assert!(forward_ports("ports=0").is_err());
        assert!(forward_ports("ports=70000").is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status(&Outcome::Exited(0)),
            json!({"metadata": {}, "status": "Success"})
        );
        let s = status(&Outcome::Exited(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        let s = status(&Outcome::Failed("exec failed: nope".into()));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["message"], "exec failed: nope");
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
        assert_eq!(parse_resize(b"{}"), None);
        assert_eq!(parse_resize(b"garbage"), None);
    }
}
