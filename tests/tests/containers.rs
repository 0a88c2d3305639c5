//! Containers for real, as root: the chapter's nginx + curl sidecar pod and its logs,
//! isolation between pods, images loaded from archives, restart policies and back-off,
//! OOM kills, volumes, environment and service-account tokens, agent restarts, and the
//! `kubectl logs` flags. Each test owns its cluster.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use kins_tests::pods::{create, exec, get_json, kubectl, wait_for, wait_running};
use kins_tests::{fails, kubectls, ok, Cluster};
use serde_json::{json, Value};

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn events(c: &Cluster, pod: &str) -> Result<String> {
    let v = get_json(
        c,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
        ],
    )?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {}: {}\n",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect())
}

fn container_status(pod: &Value, name: &str) -> Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod["status"]["initContainerStatuses"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `f` holds for the pod's JSON; returns it.
fn wait_pod(
    c: &Cluster,
    pod: &str,
    what: &str,
    secs: u64,
    f: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(&format!("pod {pod}: {what}"), secs, || {
        let p = get_json(c, &["get", "pod", pod])?;
        Ok(f(&p).then_some(p))
    })
}

fn pod(name: &str, spec: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}).to_string()
}

#[test]
fn the_chapters_pod_and_its_logs() -> Result<()> {
    let c = Cluster::up_nodes("ct-chap", 2)?;
    let k = &kubectls()[0];
    let yaml = examples().join("pod.yaml");
    let out = ok(c.kubectl(k, &["create", "-f", &yaml.to_string_lossy()])?)?;
    ensure!(out.trim() == "pod/multi-container created", "{out}");
    let p = wait_running(&c, "multi-container")?;
    ensure!(container_status(&p, "app")["ready"] == true, "{p}");
    let log = wait_for("the welcome page in the sidecar's log", 60, || {
        let l = kubectl(&c, &["logs", "multi-container", "-c", "sidecar"])?;
        Ok(l.contains("<title>Welcome to nginx!</title>").then_some(l))
    })?;
    ensure!(log.contains("<!DOCTYPE html>"), "{log}");
    // The events say where the images came from.
    let ev = events(&c, "multi-container")?;
    ensure!(ev.contains("from host packages: nginx"), "{ev}");
    ensure!(ev.contains("Started container sidecar"), "{ev}");
    // Without -c, kubectl picks the first container and says so.
    let out = c.kubectl(k, &["logs", "multi-container"])?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(err.contains("Defaulted container \"app\""), "{err}");
    ensure!(ok(out)?.contains("nginx/1."), "the app's log");
    // The nginx access log goes to stdout (the image links it to /dev/stdout).
    let app = wait_for("an access log line", 30, || {
        let l = kubectl(&c, &["logs", "multi-container", "-c", "app"])?;
        Ok((l.matches("\"GET / HTTP/1.1\" 200").count() >= 2).then_some(l))
    })?;
    ensure!(app.contains("curl/"), "{app}");
    // --tail, --timestamps, --limit-bytes, --since, --previous.
    let tail = kubectl(&c, &["logs", "multi-container", "-c", "app", "--tail=1"])?;
    ensure!(
        tail.lines().count() == 1 && tail.contains("GET /"),
        "{tail:?}"
    );
    let ts = kubectl(
        &c,
        &[
            "logs",
            "multi-container",
            "-c",
            "app",
            "--tail=1",
            "--timestamps",
        ],
    )?;
    let first = ts.split(' ').next().unwrap_or("");
    ensure!(
        chrono::DateTime::parse_from_rfc3339(first).is_ok() && ts.contains("GET /"),
        "{ts:?}"
    );
    let lim = kubectl(
        &c,
        &["logs", "multi-container", "-c", "app", "--limit-bytes=7"],
    )?;
    ensure!(lim.len() == 7, "{lim:?}");
    let since = kubectl(&c, &["logs", "multi-container", "-c", "app", "--since=1h"])?;
    ensure!(since.contains("GET /"), "{since}");
    let err = fails(c.kubectl(k, &["logs", "multi-container", "-c", "app", "--previous"])?)?;
    ensure!(err.contains("previous terminated container"), "{err}");
    // -f streams: a new request appears in a running `kubectl logs -f`.
    let mut follow = c
        .kubectl_cmd(
            k,
            &["logs", "-f", "multi-container", "-c", "sidecar", "--tail=0"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = follow.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("no streamed line from kubectl logs -f: {e}"));
    let _ = follow.kill();
    let _ = follow.wait();
    got?;
    Ok(())
}

#[test]
fn pods_see_neither_each_others_files_nor_processes() -> Result<()> {
    let c = Cluster::up_nodes("ct-iso", 1)?;
    let node = "ct-iso-worker";
    for name in ["web-a", "web-b"] {
        create(
            &c,
            &pod(
                name,
                json!({"nodeName": node, "containers": [{"name": "nginx", "image": "nginx"}]}),
            ),
        )?;
    }
    let a = wait_running(&c, "web-a")?;
    let b = wait_running(&c, "web-b")?;
    let pa = kins_tests::pods::container_pid(&c, &a, "nginx")?;
    let pb = kins_tests::pods::container_pid(&c, &b, "nginx")?;
    let root = |pid: i32| std::path::PathBuf::from(format!("/proc/{pid}/root"));
    // Files: a file written in a's root is not in b's, nor on the host's image layers.
    std::fs::write(root(pa).join("tmp/only-in-a"), "a")?;
    ensure!(!root(pb).join("tmp/only-in-a").exists(), "b sees a's file");
    ensure!(root(pa).join("usr/share/nginx/html/index.html").exists());
    ensure!(
        !root(pa).join("etc/debian_version").exists(),
        "the host's /etc leaks in"
    );
    // Processes: each pod's /proc shows its own nginx as pid 1 and nothing of the other.
    for (pid, other) in [(pa, pb), (pb, pa)] {
        let procs: Vec<String> = std::fs::read_dir(root(pid).join("proc"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
            .collect();
        ensure!(procs.contains(&"1".to_string()), "{procs:?}");
        let cmd1 = std::fs::read_to_string(root(pid).join("proc/1/cmdline"))?;
        ensure!(cmd1.starts_with("nginx: master"), "{cmd1:?}");
        for p in &procs {
            let cmd = std::fs::read_to_string(root(pid).join(format!("proc/{p}/cmdline")))
                .unwrap_or_default();
            ensure!(
                cmd.is_empty() || cmd.starts_with("nginx"),
                "foreign process {cmd:?}"
            );
        }
        let ns = |p: i32, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}"));
        for n in ["pid", "mnt", "net", "ipc", "uts"] {
            ensure!(
                ns(pid, n)? != ns(other, n)?,
                "the pods share the {n} namespace"
            );
        }
        // containerd's default capabilities, no more.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        ensure!(status.contains("CapEff:\t00000000a80425fb"), "{status}");
    }
    // The hostname is the pod's name.
    let h = std::fs::read_to_string(root(pa).join("etc/hostname"))?;
    ensure!(h.trim() == "web-a", "{h}");
    // Both answer on their own IP.
    let ip = a["status"]["podIP"].as_str().context("podIP")?;
    let page = kins_tests::pods::in_pod(&c, &b, &["curl", "-s", &format!("http://{ip}/")])?;
    ensure!(page.contains("Welcome to nginx!"), "{page}");
    Ok(())
}

/// Writes a docker-save archive holding one image `example.test/hello:1` whose layer is
/// built from files the test creates (busybox and a script), and returns its path.
fn docker_save_archive(dir: &Path) -> Result<std::path::PathBuf> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
    std::fs::write(
        rootfs.join("hello.sh"),
        "echo hello from a loaded image; echo args: \"$@\"\n",
    )?;
    let img = dir.join("img");
    std::fs::create_dir_all(&img)?;
    ok(Command::new("tar")
        .args(["-cf"])
        .arg(img.join("layer.tar"))
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .output()?)?;
    let sha = |p: &Path| -> Result<String> {
        let out = ok(Command::new("sha256sum").arg(p).output()?)?;
        Ok(out.split(' ').next().unwrap_or("").to_string())
    };
    let diff = sha(&img.join("layer.tar"))?;
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh", "/hello.sh"], "Cmd": ["default-arg"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
    });
    std::fs::write(img.join("config.json"), config.to_string())?;
    let config_sha = sha(&img.join("config.json"))?;
    std::fs::rename(
        img.join("config.json"),
        img.join(format!("{config_sha}.json")),
    )?;
    std::fs::write(
        img.join("manifest.json"),
        json!([{"Config": format!("{config_sha}.json"), "RepoTags": ["example.test/hello:1"], "Layers": ["layer.tar"]}])
            .to_string(),
    )?;
    let archive = dir.join("hello.tar");
    ok(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&img)
        .args(["manifest.json", &format!("{config_sha}.json"), "layer.tar"])
        .output()?)?;
    Ok(archive)
}

#[test]
fn loaded_images_run_and_bad_images_fail_clearly() -> Result<()> {
    let c = Cluster::up_nodes("ct-load", 1)?;
    let dir = tempfile::tempdir()?;
    let archive = docker_save_archive(dir.path())?;
    // A truncated archive is refused and leaves nothing.
    let bytes = std::fs::read(&archive)?;
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
    let err = fails(c.kins(&[
        "image",
        "load",
        "--cluster",
        "ct-load",
        &cut.to_string_lossy(),
    ])?)?;
    ensure!(!err.trim().is_empty(), "no message for a truncated archive");
    let notimg = dir.path().join("notimg.tar");
    std::fs::write(&notimg, b"this is not a tar file at all")?;
    fails(c.kins(&[
        "image",
        "load",
        "--cluster",
        "ct-load",
        &notimg.to_string_lossy(),
    ])?)?;
    let ls = ok(c.kins(&["image", "ls", "--cluster", "ct-load"])?)?;
    ensure!(!ls.contains("example.test/hello"), "{ls}");
    // The real archive loads and runs, ENTRYPOINT + args as Kubernetes combines them.
    let out = ok(c.kins(&[
        "image",
        "load",
        "--cluster",
        "ct-load",
        &archive.to_string_lossy(),
    ])?)?;
    ensure!(out.contains("Loaded image: example.test/hello:1"), "{out}");
    let ls = ok(c.kins(&["image", "ls", "--cluster", "ct-load"])?)?;
    ensure!(ls.contains("example.test/hello"), "{ls}");
    create(
        &c,
        &pod(
            "hello",
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "example.test/hello:1", "args": ["one", "two"]}]}),
        ),
    )?;
    wait_pod(&c, "hello", "Succeeded", 60, |p| {
        p["status"]["phase"] == "Succeeded"
    })?;
    let log = kubectl(&c, &["logs", "hello"])?;
    ensure!(
        log == "hello from a loaded image\nargs: one two\n",
        "{log:?}"
    );
    // An unknown image: ErrImagePull, then ImagePullBackOff, with a clear event.
    create(
        &c,
        &pod(
            "nope",
            json!({"containers": [{"name": "c", "image": "example.test/does-not-exist:1"}]}),
        ),
    )?;
    let p = wait_pod(&c, "nope", "ImagePullBackOff", 60, |p| {
        container_status(p, "c")["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })?;
    ensure!(p["status"]["phase"] == "Pending", "{p}");
    let ev = events(&c, "nope")?;
    ensure!(
        ev.contains("Failed to pull image \"example.test/does-not-exist:1\"")
            && ev.contains("kins image load"),
        "{ev}"
    );
    // A command that does not exist.
    create(
        &c,
        &pod(
            "nocmd",
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["/no/such/binary"]}]}),
        ),
    )?;
    let p = wait_pod(&c, "nocmd", "terminated", 60, |p| {
        container_status(p, "c")["state"]["terminated"].is_object()
    })?;
    let t = &container_status(&p, "c")["state"]["terminated"];
    ensure!(t["reason"] == "StartError" && t["exitCode"] == 128, "{t}");
    ensure!(p["status"]["phase"] == "Failed", "{p}");
    let ev = events(&c, "nocmd")?;
    ensure!(
        ev.contains("no such file or directory") || ev.contains("not found"),
        "{ev}"
    );
    // `kins image rm` of an unknown reference fails; of a known one removes it.
    fails(c.kins(&[
        "image",
        "rm",
        "--cluster",
        "ct-load",
        "example.test/nothing:9",
    ])?)?;
    ok(c.kins(&[
        "image",
        "rm",
        "--cluster",
        "ct-load",
        "example.test/hello:1",
    ])?)?;
    let ls = ok(c.kins(&["image", "ls", "--cluster", "ct-load"])?)?;
    ensure!(!ls.contains("example.test/hello"), "{ls}");
    Ok(())
}

#[test]
fn restart_policies_back_off_and_previous_logs() -> Result<()> {
    let c = Cluster::up_nodes("ct-rst", 1)?;
    let crash = |name: &str, policy: &str, code: i32| {
        pod(
            name,
            json!({"restartPolicy": policy, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", format!("echo run at $(date +%s%N); exit {code}")]}]}),
        )
    };
    create(&c, &crash("always", "Always", 3))?;
    create(&c, &crash("onfail-ok", "OnFailure", 0))?;
    create(&c, &crash("never-bad", "Never", 1))?;
    // Always: restarted after the back-off, CrashLoopBackOff in between, lastState kept.
    let p = wait_pod(&c, "always", "a restart", 60, |p| {
        container_status(p, "c")["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })?;
    let s = container_status(&p, "c");
    ensure!(s["lastState"]["terminated"]["exitCode"] == 3, "{s}");
    ensure!(s["lastState"]["terminated"]["reason"] == "Error", "{s}");
    let p = wait_pod(&c, "always", "CrashLoopBackOff", 60, |p| {
        container_status(p, "c")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })?;
    ensure!(p["status"]["phase"] == "Running", "{p}");
    // --previous shows the earlier run, the current log the newer one.
    let prev = kubectl(&c, &["logs", "always", "--previous"])?;
    let cur = kubectl(&c, &["logs", "always"])?;
    ensure!(
        prev.starts_with("run at ") && cur.starts_with("run at ") && prev != cur,
        "{prev:?} {cur:?}"
    );
    let p = wait_pod(&c, "onfail-ok", "Succeeded", 60, |p| {
        p["status"]["phase"] == "Succeeded"
    })?;
    let s = container_status(&p, "c");
    ensure!(
        s["state"]["terminated"]["reason"] == "Completed" && s["restartCount"] == 0,
        "{s}"
    );
    let p = wait_pod(&c, "never-bad", "Failed", 60, |p| {
        p["status"]["phase"] == "Failed"
    })?;
    let s = container_status(&p, "c");
    ensure!(
        s["state"]["terminated"]["exitCode"] == 1 && s["restartCount"] == 0,
        "{s}"
    );
    // The table says what kubectl users expect.
    let table = kubectl(&c, &["get", "pods"])?;
    ensure!(
        table.contains("Completed") && table.contains("Error"),
        "{table}"
    );
    Ok(())
}

#[test]
fn memory_hog_is_oom_killed() -> Result<()> {
    let c = Cluster::up_nodes("ct-oom", 1)?;
    create(
        &c,
        &pod(
            "hog",
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
            "resources": {"limits": {"memory": "32Mi"}}}]}),
        ),
    )?;
    let p = wait_pod(&c, "hog", "terminated", 90, |p| {
        container_status(p, "c")["state"]["terminated"].is_object()
    })?;
    let t = &container_status(&p, "c")["state"]["terminated"];
    ensure!(t["reason"] == "OOMKilled" && t["exitCode"] == 137, "{t}");
    let ev = events(&c, "hog")?;
    ensure!(ev.contains("OOMKilled"), "{ev}");
    Ok(())
}

#[test]
fn volumes_env_init_containers_and_tokens() -> Result<()> {
    let c = Cluster::up_nodes("ct-vol", 1)?;
    let k = &kubectls()[0];
    ok(c.kubectl(
        k,
        &[
            "create",
            "configmap",
            "cfg",
            "--from-literal=greeting=hello",
            "--from-literal=other=x",
        ],
    )?)?;
    ok(c.kubectl(
        k,
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=password=s3cret",
        ],
    )?)?;
    ok(c.kubectl(
        k,
        &["create", "service", "clusterip", "my-web", "--tcp=80:8080"],
    )?)?;
    let script = r#"
set -e
echo "init=$(cat /work/from-init)"
echo "greeting=$(cat /cfg/greeting)"
echo "password=$(cat /sec/password)"
echo "env=$POD_NAME $POD_NS $POD_IP $GREETING $PASS $COMBINED"
echo "svc=$MY_WEB_SERVICE_HOST:$MY_WEB_SERVICE_PORT"
echo "k8s=$KUBERNETES_SERVICE_HOST"
echo "hostname=$(hostname)"
echo "ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token=yes
grep -q 'BEGIN CERTIFICATE' /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && echo ca=yes
touch /cfg/x 2>/dev/null && echo cfg=writable || echo cfg=readonly
"#;
    create(
        &c,
        &pod(
            "vols",
            json!({
                "restartPolicy": "Never",
                "initContainers": [
                    {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo one > /work/from-init"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                    {"name": "second", "image": "busybox", "command": ["sh", "-c", "test -f /work/from-init && echo two >> /work/from-init"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                ],
                "containers": [{
                    "name": "c", "image": "busybox", "command": ["sh", "-c", script],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                        {"name": "COMBINED", "value": "$(GREETING)-$(POD_NAME)"},
                    ],
                    "volumeMounts": [
                        {"name": "work", "mountPath": "/work"},
                        {"name": "cfg", "mountPath": "/cfg"},
                        {"name": "sec", "mountPath": "/sec"},
                    ],
                }],
                "volumes": [
                    {"name": "work", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "sec", "secret": {"secretName": "sec"}},
                ],
            }),
        ),
    )?;
    let p = wait_pod(&c, "vols", "Succeeded", 90, |p| {
        p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed"
    })?;
    let log = kubectl(&c, &["logs", "vols"])?;
    ensure!(p["status"]["phase"] == "Succeeded", "{p}\n{log}");
    let ip = p["status"]["podIP"].as_str().context("podIP")?;
    for want in [
        "init=one\ntwo".to_string(),
        "greeting=hello".into(),
        "password=s3cret".into(),
        format!("env=vols default {ip} hello s3cret hello-vols"),
        "svc=10.".into(),
        ":80\n".into(),
        "k8s=10.96.0.1".into(),
        "hostname=vols".into(),
        "ns=default".into(),
        "token=yes".into(),
        "ca=yes".into(),
        "cfg=readonly".into(),
    ] {
        ensure!(log.contains(&want), "{want:?} not in {log}");
    }
    let init = container_status(&p, "second");
    ensure!(
        init["state"]["terminated"]["reason"] == "Completed",
        "{init}"
    );
    // A missing configMap: FailedMount, the pod waits, and starts once it exists.
    create(
        &c,
        &pod(
            "late",
            json!({"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "cat /late/k; sleep 3600"],
            "volumeMounts": [{"name": "v", "mountPath": "/late"}]}],
            "terminationGracePeriodSeconds": 0,
            "volumes": [{"name": "v", "configMap": {"name": "later"}}]}),
        ),
    )?;
    wait_for("a FailedMount event", 30, || {
        let ev = events(&c, "late")?;
        Ok(ev.contains("FailedMount") && ev.contains("configmap \"later\" not found"))
            .map(|b| b.then_some(()))
    })?;
    let p = get_json(&c, &["get", "pod", "late"])?;
    ensure!(
        container_status(&p, "c")["state"]["waiting"]["reason"] == "ContainerCreating",
        "{p}"
    );
    ok(c.kubectl(
        k,
        &["create", "configmap", "later", "--from-literal=k=arrived"],
    )?)?;
    let late = wait_running(&c, "late")?;
    wait_for("the late log", 30, || {
        let l = kubectl(&c, &["logs", "late"])?;
        Ok(l.contains("arrived").then_some(()))
    })?;
    // The service-account token is accepted by the API server (in-cluster clients work).
    let token = exec(
        &c,
        &late,
        "c",
        &["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
    )?;
    let out = ok(c.kubectl(
        k,
        &[
            "--token",
            token.trim(),
            "--kubeconfig",
            "/dev/null",
            "--server",
            &c.url(),
            "--insecure-skip-tls-verify",
            "get",
            "pods",
            "-o",
            "name",
        ],
    )?);
    ensure!(
        out.as_ref().is_ok_and(|o| o.contains("pod/late")),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn containers_and_logs_survive_agent_kill_9() -> Result<()> {
    let c = Cluster::up_nodes("ct-agk", 1)?;
    create(
        &c,
        &pod(
            "ticker",
            json!({"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}]}),
        ),
    )?;
    let p = wait_running(&c, "ticker")?;
    let pid = kins_tests::pods::container_pid(&c, &p, "c")?;
    let agent = lab::procs::find("ct-agk")
        .into_iter()
        .find(|p| p.role == "agent")
        .context("no agent process")?;
    ok(Command::new("kill")
        .args(["-KILL", &agent.pid.to_string()])
        .output()?)?;
    let before = kubectl(&c, &["logs", "ticker"])
        .unwrap_or_default()
        .lines()
        .count();
    // The supervisor restarts the agent, which adopts the running container.
    wait_for("a new agent", 30, || {
        Ok(lab::procs::find("ct-agk")
            .into_iter()
            .find(|p| p.role == "agent" && p.pid != agent.pid)
            .map(|_| ()))
    })?;
    let log = wait_for("the log to go on", 30, || {
        let l = kubectl(&c, &["logs", "ticker"])?;
        Ok((l.lines().count() > before + 5).then_some(l))
    })?;
    ensure!(log.starts_with("tick 0\n"), "{log}");
    ensure!(nix_alive(pid), "the container died with the agent");
    let p = get_json(&c, &["get", "pod", "ticker"])?;
    let s = container_status(&p, "c");
    ensure!(
        s["restartCount"] == 0 && s["state"]["running"].is_object(),
        "{s}"
    );
    ensure!(
        kins_tests::pods::container_pid(&c, &p, "c")? == pid,
        "the container was restarted"
    );
    Ok(())
}

fn nix_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn bad_input_never_leaves_a_pod_half_made() -> Result<()> {
    // A container that exits at once, forever: CrashLoopBackOff, never a crash of kins.
    let c = Cluster::up_nodes("ct-bad", 1)?;
    create(
        &c,
        &pod(
            "quick",
            json!({"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}),
        ),
    )?;
    wait_pod(&c, "quick", "CrashLoopBackOff", 60, |p| {
        container_status(p, "c")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })?;
    // An image with no command and a user that does not exist: clear config errors.
    create(
        &c,
        &pod(
            "baduser",
            json!({"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]}]}),
        ),
    )?;
    let p = wait_pod(&c, "baduser", "CreateContainerConfigError", 60, |p| {
        container_status(p, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })?;
    let msg = container_status(&p, "c")["state"]["waiting"]["message"].clone();
    ensure!(
        msg.as_str()
            .is_some_and(|m| m.contains("configmap \"absent\" not found")),
        "{msg}"
    );
    // Deleting both leaves no container, cgroup or pod directory behind.
    let uid = |n: &str| -> Result<String> {
        Ok(get_json(&c, &["get", "pod", n])?["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_string())
    };
    let uids = [uid("quick")?, uid("baduser")?];
    kubectl(&c, &["delete", "pod", "quick", "baduser", "--wait=true"])?;
    // Pods deleted at once (grace 0) are torn down by the agent's sweep of orphans.
    for u in &uids {
        let run = format!("/run/kins/ct-bad/nodes/ct-bad-worker/pods/{u}");
        let cgroups = [
            format!("/sys/fs/cgroup/memory/kins/ct-bad/{u}"),
            format!("/sys/fs/cgroup/kins/ct-bad/{u}"),
        ];
        wait_for(&format!("pod {u} to be torn down"), 30, || {
            Ok(
                (!Path::new(&run).exists() && cgroups.iter().all(|c| !Path::new(c).exists()))
                    .then_some(()),
            )
        })?;
    }
    ensure!(
        !lab::procs::find("ct-bad").iter().any(|p| p.role == "shim"),
        "a shim outlived its pod"
    );
    Ok(())
}

#[test]
fn share_process_namespace_puts_the_pods_containers_in_one_pid_namespace() -> Result<()> {
    let c = Cluster::up_nodes("ct-pidns", 1)?;
    create(
        &c,
        &pod(
            "shared",
            json!({"shareProcessNamespace": true, "terminationGracePeriodSeconds": 2, "containers": [
                {"name": "sleeper", "image": "busybox", "command": ["sleep", "3600"]},
                {"name": "looker", "image": "busybox", "command": ["sh", "-c", "while true; do ps -o pid,args > /tmp/ps; sleep 0.2; done"]},
            ]}),
        ),
    )?;
    let p = wait_running(&c, "shared")?;
    let ps = wait_for("the other container's process in ps", 30, || {
        let out = exec(&c, &p, "looker", &["cat", "/tmp/ps"]).unwrap_or_default();
        Ok(out.contains("sleep 3600").then_some(out))
    })?;
    // PID 1 is the pod's pause process, not a container.
    ensure!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("pause")),
        "{ps}"
    );
    kubectl(&c, &["delete", "pod", "shared", "--wait=true"])?;
    ensure!(
        !lab::procs::find("ct-pidns")
            .iter()
            .any(|p| p.role == "pause" || p.role == "shim"),
        "the pause process or a shim outlived the pod"
    );
    Ok(())
}

#[test]
fn configmap_volumes_follow_their_configmap() -> Result<()> {
    let c = Cluster::up_nodes("ct-cmup", 1)?;
    let k = &kubectls()[0];
    ok(c.kubectl(
        k,
        &["create", "configmap", "live", "--from-literal=v=first"],
    )?)?;
    create(
        &c,
        &pod(
            "reader",
            json!({"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox",
            "command": ["sleep", "3600"], "volumeMounts": [{"name": "v", "mountPath": "/live"}]}],
            "volumes": [{"name": "v", "configMap": {"name": "live"}}]}),
        ),
    )?;
    let p = wait_running(&c, "reader")?;
    let read = || exec(&c, &p, "c", &["cat", "/live/v"]);
    ensure!(read()? == "first", "{:?}", read());
    let patch = r#"{"data":{"v":"second"}}"#;
    ok(c.kubectl(k, &["patch", "configmap", "live", "-p", patch])?)?;
    // The agent resyncs volumes every minute, as the kubelet does.
    wait_for("the new value in the container", 120, || {
        Ok((read()? == "second").then_some(()))
    })?;
    Ok(())
}
