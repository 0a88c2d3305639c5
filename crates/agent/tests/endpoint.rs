//! The agent's HTTPS endpoint without root: CRI log files in a temporary data directory,
//! the endpoint on 127.0.0.1 with a test CA, requests with and without client
//! certificates, the log options, and following a log while a writer appends to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::server::{Endpoint, Settings};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca() -> anyhow::Result<Ca> {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test-ca");
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    })
}

/// A client identity (PEM certificate then key) for `cn` in groups `orgs`.
fn client_pem(ca: &Ca, cn: &str, orgs: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    p.distinguished_name = dn;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca.issuer)?;
    Ok(format!("{}\n{}", cert.pem(), key.serialize_pem()).into_bytes())
}

fn client(identity: Option<Vec<u8>>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true);
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
    std::fs::write(path, text)?;
    Ok(())
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

struct Node {
    _dir: tempfile::TempDir,
    data: PathBuf,
    run: PathBuf,
    url: String,
}

async fn node(ca: &Ca) -> anyhow::Result<Node> {
    let dir = tempfile::tempdir()?;
    let (data, run) = (dir.path().join("data"), dir.path().join("run"));
    let endpoint = Endpoint::bind(Settings {
        addr: "127.0.0.1:0".parse()?,
        ca_pem: ca.pem.clone(),
        sans: vec!["127.0.0.1".into()],
        data_dir: data.clone(),
        run_dir: run.clone(),
        kins_exe: std::path::PathBuf::from("kins"),
    })
    .await?;
    let url = format!("https://{}", endpoint.local_addr()?);
    tokio::spawn(endpoint.serve());
    Ok(Node {
        _dir: dir,
        data,
        run,
        url,
    })
}

async fn get(c: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let r = c.get(url).send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The next chunk of a streamed body (None at its end), waiting at most 5 s.
async fn next(r: &mut reqwest::Response) -> anyhow::Result<Option<bytes::Bytes>> {
    tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .map_err(|_| anyhow::anyhow!("no chunk within 5 s"))?
        .map_err(anyhow::Error::from)
}

const RUN0: &str = "2024-05-01T09:00:00Z stdout F first run\n";
const RUN1: &str = "\
2024-05-01T09:01:00Z stdout F one
2024-05-01T09:01:01Z stderr F two
2024-05-01T09:01:02Z stdout P thr
2024-05-01T09:01:03Z stdout F ee
";

#[tokio::test]
async fn client_certificates_are_required() -> anyhow::Result<()> {
    let ca = new_ca()?;
    let n = node(&ca).await?;
    let logs = format!("{}/containerLogs/ns/p/app", n.url);
    write(
        &n.data.join("logs/ns_p_u1/app/0.log"),
        "2024-05-01T09:00:00Z stdout F hi\n",
    )?;

    assert_eq!(
        get(&client(None)?, &format!("{}/healthz", n.url)).await?,
        (200, "ok".into())
    );
    assert_eq!(
        get(&client(None)?, &logs).await?,
        (401, "Unauthorized".into())
    );
    let bob = client(Some(client_pem(&ca, "bob", &["devs"])?))?;
    assert_eq!(
        get(&bob, &logs).await?,
        (
            403,
            "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)".into()
        )
    );
    let apiserver = client(Some(client_pem(&ca, "kube-apiserver-kubelet-client", &[])?))?;
    assert_eq!(get(&apiserver, &logs).await?, (200, "hi\n".into()));
    let admin = client(Some(client_pem(&ca, "admin", &["system:masters"])?))?;
    assert_eq!(get(&admin, &logs).await?, (200, "hi\n".into()));
    // A certificate from another CA fails the handshake.
    let other = new_ca()?;
    let stranger = client(Some(client_pem(
        &other,
        "kube-apiserver-kubelet-client",
        &[],
    )?))?;
    assert!(stranger.get(&logs).send().await.is_err());
    Ok(())
}

#[tokio::test]
async fn serves_the_log_options() -> anyhow::Result<()> {
    let ca = new_ca()?;
    let n = node(&ca).await?;
    let c = client(Some(client_pem(&ca, "kube-apiserver-kubelet-client", &[])?))?;
    // An older pod of the same name, and the current one (its state directory exists).
    write(
        &n.data.join("logs/ns_p_old/app/0.log"),
        "2024-05-01T08:00:00Z stdout F old pod\n",
    )?;
    write(&n.data.join("logs/ns_p_u1/app/0.log"), RUN0)?;
    write(&n.data.join("logs/ns_p_u1/app/1.log"), RUN1)?;
    write(&n.data.join("logs/ns_p_u1/side/0.log"), RUN0)?;
    std::fs::create_dir_all(n.run.join("pods/u1"))?;

    let check = |query: &'static str, code: u16, body: &'static str| {
        let c = c.clone();
        let url = format!("{}/containerLogs/ns/p/{query}", n.url);
        async move {
            let got = get(&c, &url).await?;
            assert_eq!(got, (code, body.to_string()), "{query}");
            anyhow::Ok(())
        }
    };
    check("app", 200, "one\ntwo\nthree\n").await?;
    check("app?tailLines=1", 200, "three\n").await?;
    check(
        "app?timestamps=true&tailLines=2",
        200,
        "2024-05-01T09:01:01Z two\n2024-05-01T09:01:02Z three\n",
    )
    .await?;
    check(
        "app?sinceTime=2024-05-01T09%3A01%3A01Z",
        200,
        "two\nthree\n",
    )
    .await?;
    check("app?limitBytes=6", 200, "one\ntw").await?;
    check("app?previous=true", 200, "first run\n").await?;
    check("app?follow=true&previous=true", 200, "first run\n").await?;
    check(
        "side?previous=true",
        400,
        "previous terminated container \"side\" in pod \"p\" not found",
    )
    .await?;
    check(
        "app?tailLines=-1",
        400,
        "tailLines: Invalid value: -1: must be greater than or equal to 0",
    )
    .await?;
    check("nope", 404, "container \"nope\" not found in pod \"p\"").await?;
    let (code, body) = get(&c, &format!("{}/containerLogs/ns/q/app", n.url)).await?;
    assert_eq!(
        (code, body.as_str()),
        (
            404,
            "pod \"q\" in namespace \"ns\" has no logs on this node"
        )
    );
    Ok(())
}

#[tokio::test]
async fn follows_a_running_container() -> anyhow::Result<()> {
    let ca = new_ca()?;
    let n = node(&ca).await?;
    let c = client(Some(client_pem(&ca, "kube-apiserver-kubelet-client", &[])?))?;
    let log = n.data.join("logs/ns_p_u1/app/0.log");
    write(
        &log,
        "2024-05-01T09:00:00Z stdout F a\n2024-05-01T09:00:01Z stdout F b\n",
    )?;
    // Run 0 is attempt 1; our own pid makes it a running container.
    let state = n.run.join("pods/u1/containers/app.1");
    write(&state.join("pid"), &std::process::id().to_string())?;

    let url = format!("{}/containerLogs/ns/p/app?follow=true&tailLines=1", n.url);
    let mut resp = c.get(&url).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(next(&mut resp).await?.as_deref(), Some(&b"b\n"[..]));
    // Still running after the idle time: the stream stays open and gets what is appended.
    tokio::time::sleep(Duration::from_millis(800)).await;
    append(&log, "2024-05-01T09:00:02Z stdout P c")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&log, "\n2024-05-01T09:00:03Z stdout F d\n")?;
    assert_eq!(next(&mut resp).await?.as_deref(), Some(&b"cd\n"[..]));
    // The container ends: the stream ends once the file is idle.
    append(&log, "2024-05-01T09:00:04Z stderr P bye")?;
    append(&log, "\n")?;
    write(&state.join("exit"), "0")?;
    let mut rest = Vec::new();
    while let Some(b) = next(&mut resp).await? {
        rest.extend_from_slice(&b);
    }
    assert_eq!(String::from_utf8_lossy(&rest), "bye");
    Ok(())
}
