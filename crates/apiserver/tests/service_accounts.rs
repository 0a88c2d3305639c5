//! API test without root: an API server in-process. Service-account tokens from the
//! TokenRequest subresource authenticate until their service account (or bound pod) is
//! gone; new pods get the projected token volume; every namespace has `kube-root-ca.crt`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

mod common;

use common::{Server as Api, TOKEN as ADMIN};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Requests of these tests, on the shared in-process server.
impl Api {
    /// One request with `token`; answers the status code and the JSON body (or Null).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(method, path, ADMIN, body).await
    }

    async fn token(&self, ns: &str, sa: &str, spec: Value) -> anyhow::Result<(u16, Value)> {
        let body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        self.admin(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
            Some(body),
        )
        .await
    }

    async fn pods_as(&self, token: &str) -> anyhow::Result<u16> {
        Ok(self
            .call(
                reqwest::Method::GET,
                "/api/v1/namespaces/default/pods",
                token,
                None,
            )
            .await?
            .0)
    }
}

fn claims(token: &str) -> Value {
    let body = token.split('.').nth(1).expect("a JWT has claims");
    serde_json::from_slice(&B64.decode(body).expect("base64url")).expect("json claims")
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn token_request_authenticates_until_the_service_account_goes() -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::start().await?;
    let (code, sa) = api
        .admin(
            Method::POST,
            "/api/v1/namespaces/default/serviceaccounts",
            Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})),
        )
        .await?;
    assert_eq!(code, 201, "{sa}");

    let (code, tr) = api.token("default", "robot", json!({})).await?;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["metadata"]["name"], "robot");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert!(tr["status"]["expirationTimestamp"].is_string(), "{tr}");
    let token = tr["status"]["token"].as_str().expect("token").to_string();
    let c = claims(&token);
    assert_eq!(c["sub"], "system:serviceaccount:default:robot");
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(
        c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
        3600
    );
    assert_eq!(c["kubernetes.io"]["namespace"], "default");
    assert_eq!(
        c["kubernetes.io"]["serviceaccount"]["uid"],
        sa["metadata"]["uid"]
    );

    assert_eq!(api.pods_as(&token).await?, 200, "the token authenticates");
    assert_eq!(
        api.pods_as(&format!("{token}x")).await?,
        401,
        "a tampered token does not"
    );

    // Requests the API server refuses.
    let (code, st) = api.token("default", "nobody", json!({})).await?;
    assert_eq!(code, 404, "{st}");
    assert_eq!(st["message"], "serviceaccounts \"nobody\" not found");
    let (code, st) = api
        .token("default", "robot", json!({"expirationSeconds": 60}))
        .await?;
    assert_eq!(code, 422, "{st}");
    // A token for another audience is signed but does not authenticate here.
    let (code, other) = api
        .token("default", "robot", json!({"audiences": ["vault"]}))
        .await?;
    assert_eq!(code, 201);
    let other = other["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(claims(&other)["aud"], json!(["vault"]));
    assert_eq!(api.pods_as(&other).await?, 401);

    // Deleting the service account revokes its tokens.
    let (code, _) = api
        .admin(
            Method::DELETE,
            "/api/v1/namespaces/default/serviceaccounts/robot",
            None,
        )
        .await?;
    assert_eq!(code, 200);
    assert_eq!(api.pods_as(&token).await?, 401);
    // A new service account of the same name has another uid: still revoked.
    api.admin(
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts",
        Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})),
    )
    .await?;
    assert_eq!(api.pods_as(&token).await?, 401);

    // The issuer's discovery documents, without authentication.
    let jwks: Value = api
        .client
        .get(format!("{}/openid/v1/jwks", api.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let oidc: Value = api
        .client
        .get(format!("{}/.well-known/openid-configuration", api.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        oidc["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    api.running.shutdown();
    Ok(())
}

#[tokio::test]
async fn pod_bound_tokens_and_pod_admission() -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::start().await?;
    let pods = "/api/v1/namespaces/default/pods";
    let (code, p) = api
        .admin(
            Method::POST,
            pods,
            Some(pod(
                "web",
                json!({"initContainers": [{"name": "init", "image": "busybox"}],
                       "containers": [{"name": "c", "image": "busybox"}]}),
            )),
        )
        .await?;
    assert_eq!(code, 201, "{p}");
    let spec = &p["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let vol = &spec["volumes"][0];
    let vol_name = vol["name"].as_str().expect("volume name");
    assert!(
        vol_name.starts_with("kube-api-access-") && vol_name.len() == "kube-api-access-".len() + 5,
        "{vol_name}"
    );
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    assert_eq!(vol["projected"]["defaultMode"], 420);
    for c in [&spec["initContainers"][0], &spec["containers"][0]] {
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": vol_name, "readOnly": true, "mountPath": MOUNT}]),
            "{c}"
        );
    }

    // automountServiceAccountToken: false leaves the pod alone.
    let (code, p2) = api
        .admin(
            Method::POST,
            pods,
            Some(pod(
                "quiet",
                json!({"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}),
            )),
        )
        .await?;
    assert_eq!(code, 201, "{p2}");
    assert!(p2["spec"]["volumes"].is_null(), "{p2}");
    assert!(
        p2["spec"]["containers"][0]["volumeMounts"].is_null(),
        "{p2}"
    );

    // A pod naming a missing service account is refused, as Kubernetes does.
    let (code, st) = api
        .admin(
            Method::POST,
            pods,
            Some(pod(
                "p",
                json!({"serviceAccountName": "sa", "containers": [{"name": "c", "image": "busybox"}]}),
            )),
        )
        .await?;
    assert_eq!(code, 403, "{st}");
    assert_eq!(
        st["message"],
        "pods \"p\" is forbidden: error looking up service account default/sa: serviceaccount \"sa\" not found"
    );

    // A token bound to the pod lives as long as the pod.
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    let (code, tr) = api
        .token(
            "default",
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": uid}}),
        )
        .await?;
    assert_eq!(code, 201, "{tr}");
    let token = tr["status"]["token"].as_str().expect("token").to_string();
    assert_eq!(
        claims(&token)["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": uid})
    );
    assert_eq!(api.pods_as(&token).await?, 200);
    let (code, st) = api
        .token(
            "default",
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "other"}}),
        )
        .await?;
    assert_eq!(code, 409, "{st}");
    let (code, _) = api
        .admin(
            Method::DELETE,
            &format!("{pods}/web?gracePeriodSeconds=0"),
            None,
        )
        .await?;
    assert_eq!(code, 200);
    assert_eq!(api.pods_as(&token).await?, 401, "the pod is gone");
    api.running.shutdown();
    Ok(())
}

#[tokio::test]
async fn every_namespace_publishes_the_root_ca() -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::start().await?;
    let (code, _) = api
        .admin(
            Method::POST,
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})),
        )
        .await?;
    assert_eq!(code, 201);
    for ns in ["default", "kube-system", "team"] {
        let (code, cm) = api
            .admin(
                Method::GET,
                &format!("/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"),
                None,
            )
            .await?;
        assert_eq!(code, 200, "{ns}: {cm}");
        assert_eq!(cm["data"]["ca.crt"], api.ca_pem, "{ns}");
    }
    // The token subresource is in discovery.
    let (_, list) = api.admin(Method::GET, "/api/v1", None).await?;
    let token = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .cloned()
        .expect("serviceaccounts/token in discovery");
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["group"], "authentication.k8s.io");
    assert_eq!(token["verbs"], json!(["create"]));
    api.running.shutdown();
    Ok(())
}
