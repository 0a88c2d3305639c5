//! API test without root: an API server in-process on a temporary data directory. A watch
//! resumes from any revision in the history window and gets 410 Gone beyond it.

use serde_json::{json, Value};

mod common;

use common::TOKEN;

async fn create(c: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<i64> {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
    let r = c
        .post(format!("{url}/api/v1/namespaces/default/configmaps"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "create {name}: {}", r.status());
    let v: Value = r.json().await?;
    Ok(v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .parse()?)
}

#[tokio::test]
async fn watch_resumes_in_the_window_and_is_gone_beyond_it() -> anyhow::Result<()> {
    let common::Server {
        dir: _dir,
        running,
        client: c,
        url,
        ..
    } = common::Server::start().await?;
    let first = create(&c, &url, "cm-0").await?;
    let mut last = first;
    for i in 1..20 {
        last = create(&c, &url, &format!("cm-{i}")).await?;
    }
    // Resume from inside the window: the next event is the one after `first`.
    let resp = c
        .get(format!("{url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={first}&timeoutSeconds=1"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await?;
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.len(), 19, "every create after {first}: {text}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "cm-1");

    // Compact away all but the newest five revisions.
    running.state.store.compact(5)?;
    let compacted = running.state.store.compacted_revision();
    assert!(
        compacted > first && compacted <= last,
        "compacted {compacted} between {first} and {last}"
    );
    let resp = c
        .get(format!(
            "{url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={first}"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        410,
        "a watch from a compacted revision is Gone"
    );
    let status: Value = resp.json().await?;
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["code"], 410);
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("too old resource version"),
        "{status}"
    );

    // A list at an exact compacted revision is Gone too; at a live one it works.
    let resp = c
        .get(format!("{url}/api/v1/namespaces/default/configmaps?resourceVersion={first}&resourceVersionMatch=Exact"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 410);
    let resp = c
        .get(format!("{url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={last}&timeoutSeconds=1"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "a watch from inside the window still works"
    );
    running.shutdown();
    Ok(())
}
