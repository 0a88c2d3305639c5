//! The two lifecycle loops that live beside the store for now: namespace finalization
//! (deleting a namespace deletes what is in it) and garbage collection by
//! ownerReferences (background, foreground and orphan propagation). Both are idempotent
//! and rebuild their view from the store at every pass, so a restart loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use api::meta;
use serde_json::{json, Value};

use crate::objects::{decode, delete_one, list_objects, list_opts, DeleteOpts};
use crate::state::State;
use crate::status::ApiError;

const PASS_EVERY: Duration = Duration::from_millis(500);

/// Runs both loops until the process ends. A pass runs at start and then after any write
/// that may concern them (a delete, a deletion mark, an owner reference), at most every
/// PASS_EVERY, so plain creates and updates cost them nothing.
pub async fn run(st: Arc<State>) {
    let mut dirty = true;
    let mut w = match st.store.watch("/", st.store.current_revision()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "lifecycle loops cannot watch the store");
            return;
        }
    };
    loop {
        if dirty {
            dirty = false;
            if let Err(e) = namespaces(&st).await {
                tracing::warn!(error = %e, "namespace finalization pass failed");
                dirty = true;
            }
            if let Err(e) = garbage(&st).await {
                tracing::warn!(error = %e, "garbage collection pass failed");
                dirty = true;
            }
        }
        let wait = tokio::time::sleep(PASS_EVERY);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                ev = w.next() => match ev {
                    Some(Ok(ev)) => dirty |= concerns_lifecycle(&ev),
                    Some(Err(_)) | None => {
                        // Fell behind or closed: rescan and watch again from now.
                        dirty = true;
                        match st.store.watch("/", st.store.current_revision()) {
                            Ok(nw) => w = nw,
                            Err(e) => tracing::warn!(error = %e, "lifecycle watch"),
                        }
                    }
                },
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn concerns_lifecycle(ev: &store::Event) -> bool {
    ev.kind == store::EventType::Delete
        || contains(&ev.value, b"\"deletionTimestamp\"")
        || contains(&ev.value, b"\"ownerReferences\"")
}

fn all(st: &State, r: &'static api::Resource, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let opts = list_opts(r, &HashMap::new())?;
    Ok(list_objects(st, r, ns, &opts, None, None, None)?.0)
}

async fn namespaces(st: &State) -> Result<(), ApiError> {
    let nsres = api::lookup("", "v1", "namespaces").expect("namespaces are served");
    for ns in all(st, nsres, None)? {
        if !meta::is_deleting(&ns) {
            continue;
        }
        let name = meta::name(&ns).to_string();
        let mut remaining = 0;
        for r in api::RESOURCES.iter().filter(|r| r.namespaced) {
            for obj in all(st, r, Some(&name))? {
                remaining += 1;
                if meta::is_deleting(&obj) {
                    continue;
                }
                match delete_one(st, r, Some(&name), meta::name(&obj), &DeleteOpts::default()).await
                {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(namespace = %name, error = %e, "deleting namespace content")
                    }
                }
            }
        }
        if remaining == 0 {
            let key = nsres.key(None, &name);
            if let Some(kv) = st.store.get(&key)? {
                // Nothing left: drop the `kubernetes` finalizer and the namespace itself.
                match st.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_)
                    | Err(store::Error::Conflict { .. })
                    | Err(store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Removes `finalizer` from an object, finishing its deletion when it was the last one.
async fn drop_finalizer(
    st: &State,
    r: &api::Resource,
    obj: &Value,
    finalizer: &str,
) -> Result<(), ApiError> {
    let ns = Some(meta::namespace(obj)).filter(|n| !n.is_empty());
    let key = r.key(ns, meta::name(obj));
    let Some(kv) = st.store.get(&key)? else {
        return Ok(());
    };
    let mut cur = decode(&kv)?;
    let left: Vec<String> = meta::finalizers(&cur)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let res = if left.is_empty() && meta::is_deleting(&cur) {
        st.store.delete(&key, Some(kv.mod_revision)).await
    } else {
        meta::meta_mut(&mut cur).insert("finalizers".into(), json!(left));
        meta::meta_mut(&mut cur).remove("resourceVersion");
        st.store
            .update(&key, crate::objects::encode(&cur), Some(kv.mod_revision))
            .await
    };
    match res {
        Ok(_) | Err(store::Error::Conflict { .. }) | Err(store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether one of the object's owners exists now, read from the store: a pass lists one
/// kind after another, so an owner created while it ran can be missing from its lists
/// although its dependent, created later, is in them.
fn any_owner_exists(st: &State, ns: Option<&str>, obj: &Value) -> Result<bool, ApiError> {
    let Some(refs) = obj["metadata"]["ownerReferences"].as_array() else {
        return Ok(false);
    };
    for owner in refs {
        let field = |f: &str| owner[f].as_str().unwrap_or_default();
        let Some(r) = api::lookup_kind(field("apiVersion"), field("kind")) else {
            continue;
        };
        let ns = if r.namespaced { ns } else { None };
        if let Some(kv) = st.store.get(&r.key(ns, field("name")))? {
            if meta::uid(&decode(&kv)?) == field("uid") {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn garbage(st: &State) -> Result<(), ApiError> {
    // Every object, with its owners.
    let mut objects: Vec<(&'static api::Resource, Value)> = Vec::new();
    for r in api::RESOURCES.iter() {
        for o in all(st, r, None)? {
            objects.push((r, o));
        }
    }
    let live: HashSet<String> = objects
        .iter()
        .map(|(_, o)| meta::uid(o).to_string())
        .collect();
    let deleting_foreground: HashSet<String> = objects
        .iter()
        .filter(|(_, o)| {
            meta::is_deleting(o)
                && meta::finalizers(o)
                    .iter()
                    .any(|f| f == "foregroundDeletion")
        })
        .map(|(_, o)| meta::uid(o).to_string())
        .collect();
    let orphaning: HashSet<String> = objects
        .iter()
        .filter(|(_, o)| meta::is_deleting(o) && meta::finalizers(o).iter().any(|f| f == "orphan"))
        .map(|(_, o)| meta::uid(o).to_string())
        .collect();
    let mut has_dependents: HashSet<String> = HashSet::new();
    for (r, o) in &objects {
        let owners = meta::owner_uids(o);
        if owners.is_empty() {
            continue;
        }
        has_dependents.extend(owners.iter().cloned());
        let ns = Some(meta::namespace(o)).filter(|n| !n.is_empty());
        if owners.iter().any(|u| orphaning.contains(u)) {
            // Orphan: drop the references to the owner being deleted.
            let key = r.key(ns, meta::name(o));
            if let Some(kv) = st.store.get(&key)? {
                let mut cur = decode(&kv)?;
                if let Some(refs) = cur["metadata"]["ownerReferences"].as_array() {
                    let kept: Vec<Value> = refs
                        .iter()
                        .filter(|x| !x["uid"].as_str().is_some_and(|u| orphaning.contains(u)))
                        .cloned()
                        .collect();
                    cur["metadata"]["ownerReferences"] = json!(kept);
                    meta::meta_mut(&mut cur).remove("resourceVersion");
                    let _ = st
                        .store
                        .update(&key, crate::objects::encode(&cur), Some(kv.mod_revision))
                        .await;
                }
            }
            continue;
        }
        let all_gone = owners.iter().all(|u| !live.contains(u));
        let fg = owners.iter().any(|u| deleting_foreground.contains(u));
        if (all_gone || fg) && !meta::is_deleting(o) {
            if !fg && any_owner_exists(st, ns, o)? {
                // Created while this pass listed other kinds.
                continue;
            }
            let policy = if fg { Some("Foreground") } else { None };
            match delete_one(
                st,
                r,
                ns,
                meta::name(o),
                &DeleteOpts {
                    propagation: policy.map(str::to_string),
                    ..Default::default()
                },
            )
            .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => tracing::warn!(object = %meta::name(o), error = %e, "garbage collection"),
            }
        }
    }
    for (r, o) in &objects {
        let uid = meta::uid(o);
        if orphaning.contains(uid) {
            drop_finalizer(st, r, o, "orphan").await?;
        }
        if deleting_foreground.contains(uid) && !has_dependents.contains(uid) {
            drop_finalizer(st, r, o, "foregroundDeletion").await?;
        }
    }
    Ok(())
}
