//! Watch: newline-delimited JSON events from the store's history and live stream, filtered
//! by namespace, labels and fields, with bookmarks and the initial-events protocol.

use std::sync::Arc;
use std::time::Duration;

use api::meta::{self, meta_mut};
use api::Resource;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Value};

use crate::objects::{include_object, list_objects, list_opts, wants_table, ListOpts, Req};
use crate::state::State;
use crate::status::ApiError;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

struct Render {
    res: &'static Resource,
    table: bool,
    include: api::table::IncludeObject,
}

impl Render {
    fn event(&self, ty: &str, obj: &Value) -> Bytes {
        let object = if self.table && ty != "BOOKMARK" && ty != "ERROR" {
            api::table::table(
                self.res,
                std::slice::from_ref(obj),
                Utc::now(),
                self.include,
                json!({"resourceVersion": meta::meta_str(obj, "resourceVersion")}),
            )
        } else {
            obj.clone()
        };
        let mut line = json!({"type": ty, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut m = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.event(
            "BOOKMARK",
            &json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": m}),
        )
    }
}

/// Turns a store event into a watch event type and object, or nothing when the object
/// neither matches now nor matched before.
fn translate(
    res: &Resource,
    opts: &ListOpts,
    ev: &store::Event,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let mut obj: Value = serde_json::from_slice(&ev.value)
        .map_err(|e| ApiError::internal(format!("corrupt object at {}: {e}", ev.key)))?;
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(ev.revision.to_string()));
    let prev = ev
        .prev_value
        .as_ref()
        .and_then(|p| serde_json::from_slice::<Value>(p).ok());
    let now = opts.matches(res, &obj);
    let before = prev.as_ref().is_some_and(|p| opts.matches(res, p));
    Ok(match ev.kind {
        store::EventType::Delete => now.then_some(("DELETED", obj)),
        store::EventType::Put => match (before, now) {
            (_, true) if prev.is_none() => Some(("ADDED", obj)),
            (true, true) => Some(("MODIFIED", obj)),
            (false, true) => Some(("ADDED", obj)),
            (true, false) => Some(("DELETED", obj)),
            (false, false) => None,
        },
    })
}

/// GET with watch=true.
pub async fn watch(st: &Arc<State>, req: Req) -> Result<Response, ApiError> {
    let res = req.res();
    let mut opts = list_opts(res, &req.query)?;
    if let Some(name) = req.target.name.clone() {
        // /watch/.../name, the legacy single-object watch.
        opts.fields = api::selectors::FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let rv = req
        .query
        .get("resourceVersion")
        .cloned()
        .unwrap_or_default();
    let send_initial = req.query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let bookmarks = req
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    if send_initial {
        match req.query.get("resourceVersionMatch").map(String::as_str) {
            Some("NotOlderThan") => {}
            _ => return Err(ApiError::new(422, "Invalid", "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")),
        }
        if !bookmarks {
            return Err(ApiError::new(422, "Invalid", "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true"));
        }
    }
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let render = Render {
        res,
        table: wants_table(&req.headers),
        include: include_object(&req.query),
    };
    let ns = req.target.namespace.clone();
    let prefix = res.namespace_prefix(ns.as_deref());

    // Initial state: with rv unset or "0", or when initial events are asked for, the watch
    // starts with synthetic ADDED events for what exists.
    let initial = send_initial || rv.is_empty() || rv == "0";
    let mut first: Vec<Bytes> = Vec::new();
    let start_rev = if initial {
        let (items, rev, _) = list_objects(st, res, ns.as_deref(), &opts, None, None, None)?;
        for o in &items {
            first.push(render.event("ADDED", o));
        }
        if send_initial {
            first.push(render.bookmark(rev, true));
        }
        rev
    } else {
        let r: i64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
        r
    };
    let mut w = match st.store.watch(&prefix, start_rev) {
        Ok(w) => w,
        Err(store::Error::Compacted {
            requested,
            compacted,
        }) => {
            let _ = requested;
            return Err(ApiError::gone(format!(
                "too old resource version: {start_rev} ({compacted})"
            )));
        }
        Err(e) => return Err(e.into()),
    };

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let st2 = st.clone();
    tokio::spawn(async move {
        let _keep = st2;
        for b in first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    // The store watch is complete up to its revision, also through writes
                    // under other prefixes: a quiet watch's bookmarks keep up with the
                    // store, so resuming from one does not run into compaction.
                    if tx.send(Ok(render.bookmark(w.revision(), false))).await.is_err() { return; }
                }
                _ = tx.closed() => return,
                ev = w.next() => {
                    let Some(ev) = ev else { return };
                    let line = match ev {
                        Ok(ev) => {
                            match translate(res, &opts, &ev) {
                                Ok(Some((ty, obj))) => render.event(ty, &obj),
                                Ok(None) => continue,
                                Err(e) => render.event("ERROR", &e.to_status()),
                            }
                        }
                        Err(e) => {
                            let err = ApiError::gone(format!("watch closed: {e}"));
                            let _ = tx.send(Ok(render.event("ERROR", &err.to_status()))).await;
                            return;
                        }
                    };
                    if tx.send(Ok(line)).await.is_err() { return; }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}
