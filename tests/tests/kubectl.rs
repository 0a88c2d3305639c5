//! End-to-end tests of the API server driven by the real kubectl. Every test owns a cluster
//! (its own name, data directory and port) and runs its scenario once per kubectl binary in
//! `$KINS_KUBECTLS`, each in its own namespace, so the binaries never see each other's
//! objects. Failures name the kubectl binary they happened with.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kins_tests::{kubectls, Cluster};
use serde_json::{json, Value};

/// A jsonpath of what a change of an object's spec changes (its status is left out:
/// controllers may write it at any time).
const SPEC_AND_GENERATION: &str = "{.metadata.generation} {.spec}";

/// How long to wait for something that should happen at once.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One kubectl binary against one cluster, working in its own namespace.
struct Kc<'a> {
    c: &'a Cluster,
    k: PathBuf,
    ns: String,
}

impl Kc<'_> {
    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut v = vec!["--namespace", self.ns.as_str()];
        v.extend_from_slice(args);
        v
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<Output> {
        self.c.kubectl_stdin(&self.k, &self.args(args), input)
    }

    /// stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> Result<String> {
        kins_tests::ok(self.run(args, None)?).with_context(|| format!("kubectl {}", args.join(" ")))
    }

    /// stdout of a command reading `input` that must succeed.
    fn ok_in(&self, args: &[&str], input: &str) -> Result<String> {
        kins_tests::ok(self.run(args, Some(input))?)
            .with_context(|| format!("kubectl {}", args.join(" ")))
    }

    /// stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> Result<String> {
        kins_tests::fails(self.run(args, None)?)
            .with_context(|| format!("kubectl {}", args.join(" ")))
    }

    /// stderr of a command reading `input` that must fail.
    fn fails_in(&self, args: &[&str], input: &str) -> Result<String> {
        kins_tests::fails(self.run(args, Some(input))?)
            .with_context(|| format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl get WHAT -o jsonpath=TEMPLATE`.
    fn jsonpath(&self, what: &[&str], template: &str) -> Result<String> {
        let arg = format!("jsonpath={template}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", &arg]);
        self.ok(&args)
    }

    /// `kubectl get WHAT -o json`, parsed.
    fn json(&self, what: &[&str]) -> Result<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", "json"]);
        let out = self.ok(&args)?;
        serde_json::from_str(&out).with_context(|| format!("parsing {out}"))
    }

    /// `kubectl get --raw PATH`, parsed.
    fn raw(&self, path: &str) -> Result<Value> {
        let out = self.ok(&["get", "--raw", path])?;
        serde_json::from_str(&out).with_context(|| format!("parsing {out}"))
    }

    /// `kubectl get WHAT -o name`, one entry per line.
    fn names(&self, what: &[&str]) -> Result<Vec<String>> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", "name"]);
        Ok(self.ok(&args)?.lines().map(str::to_string).collect())
    }

    /// `kubectl create -f -` of one manifest; returns stdout.
    fn create(&self, manifest: &str) -> Result<String> {
        self.ok_in(&["create", "-f", "-"], manifest)
    }

    /// A file in the test's data directory.
    fn file(&self, name: &str, content: &[u8]) -> Result<String> {
        let p = self.c.data.path().join(format!("{}-{name}", self.ns));
        std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
        Ok(p.to_string_lossy().into_owned())
    }

    /// The names and resourceVersions of the namespace's configmaps, services, pods and
    /// deployments (less the CA bundle a controller may publish in every namespace).
    fn snapshot(&self) -> Result<String> {
        let out = self.jsonpath(
            &["configmaps,services,pods,deployments"],
            "{range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion} {end}",
        )?;
        Ok(out
            .split_whitespace()
            .filter(|e| !e.starts_with("ConfigMap/kube-root-ca.crt@"))
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// Runs `scenario` once per kubectl binary, in a fresh namespace `<prefix>-<index>`
/// (created from a manifest, as `kubectl create -f` does it).
fn each_kubectl(c: &Cluster, prefix: &str, scenario: impl Fn(&Kc) -> Result<()>) -> Result<()> {
    let ks = kubectls();
    ensure!(!ks.is_empty(), "no kubectl to test with");
    for (i, k) in ks.into_iter().enumerate() {
        let kc = Kc {
            c,
            k: k.clone(),
            ns: format!("{prefix}-{i}"),
        };
        let run = || -> Result<()> {
            let out = kc.create(&namespace(&kc.ns))?;
            eq(
                out.trim(),
                &format!("namespace/{} created", kc.ns),
                "create namespace",
            )?;
            scenario(&kc)
        };
        run().with_context(|| format!("with {} in namespace {}", k.display(), kc.ns))?;
    }
    Ok(())
}

fn eq<T: PartialEq + std::fmt::Debug + ?Sized>(got: &T, want: &T, what: &str) -> Result<()> {
    ensure!(got == want, "{what}: got {got:?}, want {want:?}");
    Ok(())
}

fn has(text: &str, needle: &str) -> Result<()> {
    ensure!(text.contains(needle), "expected {needle:?} in:\n{text}");
    Ok(())
}

fn lacks(text: &str, needle: &str) -> Result<()> {
    ensure!(
        !text.contains(needle),
        "did not expect {needle:?} in:\n{text}"
    );
    Ok(())
}

/// Each line with runs of white space made one space (for `describe` and `explain`).
fn squash(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cells of a kubectl table: columns are separated by at least two spaces (a header
/// such as `NOMINATED NODE` keeps its one space).
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The table's header and the row whose first cell is `name`.
fn table_row(out: &str, name: &str) -> Result<(Vec<String>, Vec<String>)> {
    let t = table(out);
    let header = t
        .first()
        .cloned()
        .with_context(|| format!("no header in {out:?}"))?;
    let row = t
        .iter()
        .skip(1)
        .find(|r| r.first().map(String::as_str) == Some(name))
        .cloned()
        .with_context(|| format!("no row {name:?} in:\n{out}"))?;
    Ok((header, row))
}

/// A row without its AGE column (the one value that depends on time).
fn without_age(header: &[String], row: &[String]) -> Vec<String> {
    header
        .iter()
        .zip(row)
        .filter(|(h, _)| h.as_str() != "AGE")
        .map(|(_, v)| v.clone())
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chapter's multi-container pod, `examples/pod.yaml`.
fn example_pod() -> Result<String> {
    let p = repo().join("examples/pod.yaml");
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

fn namespace(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).to_string()
}

fn pod(name: &str, labels: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]},
    })
    .to_string()
}

fn configmap(name: &str, data: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        .to_string()
}

/// A two-container Deployment `name` selecting `app: <name>`, as YAML.
fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox
        command: [\"sleep\", \"infinity\"]
"
    )
}

/// A ClusterIP Service `name` in front of `app: <name>`, as YAML.
fn service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
  - port: 80
    targetPort: 80
"
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kubectl running in the background whose output lines arrive on a channel.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn spawn(kc: &Kc, args: &[&str]) -> Result<Background> {
        let mut child =
            kc.c.kubectl_cmd(&kc.k, &kc.args(args))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting kubectl {}", args.join(" ")))?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().context("kubectl stdout")?;
        let err = child.stderr.take().context("kubectl stderr")?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Ok(Background {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// Waits for the next line (after those already seen) that satisfies `want`.
    fn expect(&mut self, what: &str, want: impl Fn(&[String]) -> bool) -> Result<Vec<String>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let cells = table(&line).into_iter().next().unwrap_or_default();
                    if want(&cells) {
                        return Ok(cells);
                    }
                }
                Err(e) => bail!(
                    "no line with {what} ({e}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Whether the process has exited, with its status.
    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for the process to exit; its status and every output line.
    fn finish(&mut self) -> Result<(std::process::ExitStatus, Vec<String>)> {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                bail!(
                    "kubectl did not exit; output so far:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Ok((status, self.seen.clone()))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// create, apply, get
// ---------------------------------------------------------------------------------------

#[test]
fn create_from_files() -> Result<()> {
    let c = Cluster::up("kc-create")?;
    each_kubectl(&c, "create", |kc| {
        let pod = repo().join("examples/pod.yaml");
        let out = kc.ok(&["create", "-f", &pod.to_string_lossy()])?;
        eq(
            out.trim(),
            "pod/multi-container created",
            "create -f examples/pod.yaml",
        )?;
        let p = kc.json(&["pod", "multi-container"])?;
        eq(&p["metadata"]["namespace"], &json!(kc.ns), "namespace")?;
        let containers = p["spec"]["containers"].as_array().context("containers")?;
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        eq(&names, &vec!["app", "sidecar"], "container names")?;
        eq(&containers[0]["image"], &json!("nginx"), "app image")?;
        eq(
            &containers[0]["ports"],
            &json!([{"containerPort": 80, "protocol": "TCP"}]),
            "app ports",
        )?;
        eq(
            &containers[1]["args"],
            &json!([
                "/bin/sh",
                "-c",
                "while true; do curl localhost:80; sleep 5; done;"
            ]),
            "sidecar args",
        )?;
        eq(&p["status"]["phase"], &json!("Pending"), "phase")?;
        ensure!(
            !p["metadata"]["uid"].as_str().unwrap_or("").is_empty(),
            "no uid: {p}"
        );

        // A Deployment and a Service from one multi-document file.
        let both = format!("{}---\n{}", deployment("web", 2), service("web"));
        let f = kc.file("web.yaml", both.as_bytes())?;
        let out = kc.ok(&["create", "-f", &f])?;
        eq(
            out.as_str(),
            "deployment.apps/web created\nservice/web created\n",
            "create -f web.yaml",
        )?;
        let d = kc.json(&["deployment", "web"])?;
        eq(&d["spec"]["replicas"], &json!(2), "replicas")?;
        eq(
            &d["spec"]["strategy"]["type"],
            &json!("RollingUpdate"),
            "defaulted strategy",
        )?;
        eq(&d["metadata"]["generation"], &json!(1), "generation")?;
        let s = kc.json(&["service", "web"])?;
        eq(&s["spec"]["type"], &json!("ClusterIP"), "service type")?;
        eq(
            &s["spec"]["ports"],
            &json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]),
            "service ports",
        )?;
        let ip = s["spec"]["clusterIP"].as_str().context("clusterIP")?;
        ensure!(in_service_cidr(ip), "clusterIP {ip} outside 10.96.0.0/12");
        eq(&s["spec"]["clusterIPs"], &json!([ip]), "clusterIPs")?;

        // Creating again is AlreadyExists, object by object.
        let err = kc.fails(&["create", "-f", &f])?;
        has(
            &err,
            &format!("Error from server (AlreadyExists): error when creating \"{f}\": deployments.apps \"web\" already exists"),
        )?;
        has(
            &err,
            &format!("Error from server (AlreadyExists): error when creating \"{f}\": services \"web\" already exists"),
        )?;
        eq(
            &kc.json(&["service", "web"])?["spec"]["clusterIP"],
            &json!(ip),
            "clusterIP after the failed create",
        )?;
        Ok(())
    })
}

/// Whether an IPv4 address is in the default service CIDR 10.96.0.0/12.
fn in_service_cidr(ip: &str) -> bool {
    let o: Vec<u8> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    o.len() == 4 && o[0] == 10 && (96..112).contains(&o[1])
}

#[test]
fn apply_create_change_unchanged() -> Result<()> {
    let c = Cluster::up("kc-apply")?;
    each_kubectl(&c, "apply", |kc| {
        let v1 = deployment("app", 2);
        let f = kc.file("app.yaml", v1.as_bytes())?;
        eq(
            kc.ok(&["apply", "-f", &f])?.trim(),
            "deployment.apps/app created",
            "first apply",
        )?;
        eq(
            kc.ok(&["apply", "-f", &f])?.trim(),
            "deployment.apps/app unchanged",
            "same apply",
        )?;
        let created = kc.json(&["deployment", "app"])?;
        let last = created["metadata"]["annotations"]
            ["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .context("last-applied-configuration annotation")?;
        let last: Value = serde_json::from_str(last)?;
        eq(
            &last["spec"]["template"]["spec"]["containers"][1]["name"],
            &json!("sidecar"),
            "last applied",
        )?;

        // A new image and one container less.
        let v2 = v1
            .replace("image: nginx:1.25", "image: nginx:1.26")
            .replace("      - name: sidecar\n        image: busybox\n        command: [\"sleep\", \"infinity\"]\n", "");
        ensure!(
            !v2.contains("sidecar"),
            "the edit removed the sidecar: {v2}"
        );
        std::fs::write(&f, &v2)?;
        eq(
            kc.ok(&["apply", "-f", &f])?.trim(),
            "deployment.apps/app configured",
            "changed apply",
        )?;
        eq(
            kc.ok(&["apply", "-f", &f])?.trim(),
            "deployment.apps/app unchanged",
            "re-apply",
        )?;

        let d = kc.json(&["deployment", "app"])?;
        eq(
            &d["spec"]["template"]["spec"]["containers"],
            &json!([{
                "image": "nginx:1.26",
                "imagePullPolicy": "IfNotPresent",
                "name": "nginx",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }]),
            "stored containers",
        )?;
        eq(&d["spec"]["replicas"], &json!(2), "replicas")?;
        eq(
            &d["metadata"]["generation"],
            &json!(2),
            "generation after one spec change",
        )?;
        eq(&d["metadata"]["uid"], &created["metadata"]["uid"], "uid")?;
        let last = d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .context("last-applied-configuration annotation")?;
        has(last, "nginx:1.26")?;
        lacks(last, "sidecar")?;

        // A change made by someone else (scale) survives an apply that does not touch it,
        // and an apply of a field the server set keeps the rest.
        kc.ok(&["scale", "deployment", "app", "--replicas=5"])?;
        eq(
            kc.ok(&["apply", "-f", &f])?.trim(),
            "deployment.apps/app configured",
            "apply after scale",
        )?;
        eq(
            kc.jsonpath(&["deployment", "app"], "{.spec.replicas}")?
                .as_str(),
            "2",
            "apply resets replicas",
        )?;
        Ok(())
    })
}

#[test]
fn get_outputs_and_selectors() -> Result<()> {
    let c = Cluster::up("kc-get")?;
    each_kubectl(&c, "get", |kc| {
        kc.create(&example_pod()?)?;
        kc.create(&pod("p-front", json!({"tier": "front"})))?;
        kc.create(&pod("p-back", json!({"tier": "back"})))?;
        // No replicas: the pod lists below hold only the pods made here, with or
        // without a deployment controller.
        kc.create(&deployment("web", 0))?;
        kc.create(&service("web"))?;
        let ip = kc.jsonpath(&["service", "web"], "{.spec.clusterIP}")?;

        // -o wide shows the columns of priority > 0.
        let out = kc.ok(&["get", "pods", "-o", "wide"])?;
        let (h, r) = table_row(&out, "multi-container")?;
        eq(
            &h,
            &strs(&[
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED NODE",
                "READINESS GATES",
            ]),
            "pods -o wide header",
        )?;
        eq(
            &without_age(&h, &r),
            &strs(&[
                "multi-container",
                "0/2",
                "Pending",
                "0",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ]),
            "pods -o wide row",
        )?;
        let out = kc.ok(&["get", "pods"])?;
        let (h, r) = table_row(&out, "p-front")?;
        eq(
            &h,
            &strs(&["NAME", "READY", "STATUS", "RESTARTS", "AGE"]),
            "pods header",
        )?;
        eq(
            &without_age(&h, &r),
            &strs(&["p-front", "0/1", "Pending", "0"]),
            "pods row",
        )?;

        let out = kc.ok(&["get", "deployments", "-o", "wide"])?;
        let (h, r) = table_row(&out, "web")?;
        eq(
            &h,
            &strs(&[
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR",
            ]),
            "deployments -o wide header",
        )?;
        eq(
            &without_age(&h, &r),
            &strs(&[
                "web",
                "0/0",
                "0",
                "0",
                "nginx,sidecar",
                "nginx:1.25,busybox",
                "app=web",
            ]),
            "deployments -o wide row",
        )?;
        let out = kc.ok(&["get", "services", "-o", "wide"])?;
        let (h, r) = table_row(&out, "web")?;
        eq(
            &h,
            &strs(&[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR",
            ]),
            "services -o wide header",
        )?;
        eq(
            &without_age(&h, &r),
            &strs(&["web", "ClusterIP", &ip, "<none>", "80/TCP", "app=web"]),
            "services -o wide row",
        )?;

        // -o yaml and -o jsonpath.
        let y = kc.ok(&["get", "pod", "multi-container", "-o", "yaml"])?;
        for line in [
            "apiVersion: v1",
            "kind: Pod",
            "  name: multi-container",
            &format!("  namespace: {}", kc.ns),
            "  - image: nginx",
            "    name: app",
            "    - containerPort: 80",
            "    image: curlimages/curl:7.79.1",
            "    name: sidecar",
            "  phase: Pending",
        ] {
            ensure!(y.lines().any(|l| l == line), "no line {line:?} in:\n{y}");
        }
        eq(
            kc.jsonpath(&["pod", "multi-container"], "{.spec.containers[*].name}")?
                .as_str(),
            "app sidecar",
            "jsonpath names",
        )?;
        eq(
            kc.jsonpath(
                &["pods"],
                "{range .items[*]}{.metadata.name}={.metadata.labels.tier};{end}",
            )?
            .as_str(),
            "multi-container=;p-back=back;p-front=front;",
            "jsonpath over a list",
        )?;

        // Label selectors.
        let sel = |s: &str| kc.names(&["pods", "-l", s]);
        eq(
            &sel("tier=front")?,
            &strs(&["pod/p-front"]),
            "-l tier=front",
        )?;
        eq(
            &sel("tier in (front,back)")?,
            &strs(&["pod/p-back", "pod/p-front"]),
            "-l tier in",
        )?;
        eq(&sel("!tier")?, &strs(&["pod/multi-container"]), "-l !tier")?;
        eq(
            &sel("tier!=front")?,
            &strs(&["pod/multi-container", "pod/p-back"]),
            "-l tier!=front",
        )?;
        eq(
            &sel("tier,tier notin (back)")?,
            &strs(&["pod/p-front"]),
            "-l tier,tier notin",
        )?;
        eq(
            &kc.names(&["deployments", "-l", "app=web"])?,
            &strs(&["deployment.apps/web"]),
            "-l app=web",
        )?;
        let out = kc.run(&["get", "pods", "-l", "tier=middle"], None)?;
        ensure!(out.status.success(), "get pods -l tier=middle: {out:?}");
        eq(&out.stdout[..], b"", "no pods with tier=middle on stdout")?;
        eq(
            String::from_utf8_lossy(&out.stderr).trim(),
            &format!("No resources found in {} namespace.", kc.ns),
            "no pods message",
        )?;

        // Field selectors.
        let fs = |s: &str| kc.names(&["pods", "--field-selector", s]);
        eq(
            &fs("metadata.name=p-front")?,
            &strs(&["pod/p-front"]),
            "metadata.name=",
        )?;
        eq(
            &fs("metadata.name!=p-front")?,
            &strs(&["pod/multi-container", "pod/p-back"]),
            "metadata.name!=",
        )?;
        eq(
            &fs("status.phase=Pending")?.len(),
            &3,
            "status.phase=Pending",
        )?;
        eq(
            &fs("status.phase=Running")?,
            &Vec::<String>::new(),
            "status.phase=Running",
        )?;
        eq(&fs("spec.nodeName=")?.len(), &3, "unscheduled pods")?;
        let err = kc.fails(&["get", "pods", "--field-selector", "spec.bogus=x"])?;
        has(&err, "Error from server (BadRequest)")?;
        has(
            &err,
            r#"Unable to find "/v1, Resource=pods" that match label selector "", field selector "spec.bogus=x": field label not supported: spec.bogus"#,
        )?;

        // get all: the namespace's pods, services, deployments.
        let all = kc.ok(&["get", "all"])?;
        for name in [
            "pod/multi-container",
            "pod/p-front",
            "service/web",
            "deployment.apps/web",
        ] {
            ensure!(
                table(&all)
                    .iter()
                    .any(|r| r.first().map(String::as_str) == Some(name)),
                "no {name} in get all:\n{all}"
            );
        }
        lacks(&all, "service/kubernetes")?;
        let all = kc.ok(&["get", "all", "-n", "default"])?;
        has(&all, "service/kubernetes")?;
        Ok(())
    })
}

#[test]
fn get_watch_shows_changes() -> Result<()> {
    let c = Cluster::up("kc-watch")?;
    each_kubectl(&c, "watch", |kc| {
        kc.create(&example_pod()?)?;
        // An event line of `--output-watch-events --show-labels` for pod `name` whose labels
        // include `label` (other writers, a scheduler say, may add lines of their own).
        let is = |event: &'static str, name: &'static str, label: &'static str| {
            move |cells: &[String]| {
                cells.len() > 2
                    && cells[0] == event
                    && cells[1] == name
                    && cells
                        .last()
                        .is_some_and(|l| l.split(',').any(|x| x == label))
            }
        };

        let mut w = Background::spawn(
            kc,
            &[
                "get",
                "pods",
                "-w",
                "--output-watch-events",
                "--show-labels",
            ],
        )?;
        let header = w.expect("the header", |c| {
            c.first().map(String::as_str) == Some("EVENT")
        })?;
        eq(
            &header,
            &strs(&[
                "EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "LABELS",
            ]),
            "watch header",
        )?;
        let row = w.expect(
            "ADDED multi-container",
            is("ADDED", "multi-container", "<none>"),
        )?;
        eq(
            &row[2..5],
            &strs(&["0/2", "Pending", "0"])[..],
            "initial row",
        )?;

        kc.create(&pod("second", json!({"n": "2"})))?;
        let row = w.expect("ADDED second", is("ADDED", "second", "n=2"))?;
        eq(
            &row[2..5],
            &strs(&["0/1", "Pending", "0"])[..],
            "new pod row",
        )?;

        kc.ok(&["label", "pod", "multi-container", "changed=yes"])?;
        w.expect(
            "MODIFIED multi-container with changed=yes",
            is("MODIFIED", "multi-container", "changed=yes"),
        )?;

        kc.ok(&["delete", "pod", "second", "--wait=false"])?;
        w.expect("DELETED second", is("DELETED", "second", "n=2"))?;
        ensure!(w.exited()?.is_none(), "the watch ended: {:?}", w.seen);
        drop(w);

        // The plain form: a new line for a new pod.
        let mut w = Background::spawn(kc, &["get", "pods", "-w"])?;
        w.expect("the header", |c| {
            c.first().map(String::as_str) == Some("NAME")
        })?;
        w.expect("multi-container", |c| {
            c.first().map(String::as_str) == Some("multi-container")
        })?;
        kc.create(&pod("third", json!({})))?;
        let row = w.expect("third", |c| c.first().map(String::as_str) == Some("third"))?;
        eq(&row[1..4], &strs(&["0/1", "Pending", "0"])[..], "third row")?;
        drop(w);

        // One object: the watch starts with its current state, then follows it alone.
        let mut w = Background::spawn(
            kc,
            &[
                "get",
                "pod",
                "multi-container",
                "-w",
                "--output-watch-events",
                "--show-labels",
            ],
        )?;
        w.expect(
            "ADDED multi-container",
            is("ADDED", "multi-container", "changed=yes"),
        )?;
        kc.ok(&["label", "pod", "third", "other=yes"])?;
        kc.ok(&["label", "pod", "multi-container", "seen=yes"])?;
        w.expect(
            "MODIFIED multi-container with seen=yes",
            is("MODIFIED", "multi-container", "seen=yes"),
        )?;
        ensure!(
            !w.seen.iter().any(|l| l.contains("third")),
            "a watch of one pod showed another: {:?}",
            w.seen
        );
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// describe, label, annotate, patch, edit
// ---------------------------------------------------------------------------------------

/// An Event `name` about `involved` (its involvedObject), from component `kins-test`.
fn event(name: &str, involved: Value, reason: &str, message: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": "Normal",
        "source": {"component": "kins-test"},
        "count": 1,
    })
    .to_string()
}

/// The involvedObject of an Event about a v1 object.
fn about(kind: &str, name: &str, ns: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "name": name, "namespace": ns, "uid": uid})
}

#[test]
fn describe_pod_and_service() -> Result<()> {
    let c = Cluster::up("kc-desc")?;
    each_kubectl(&c, "describe", |kc| {
        kc.create(&example_pod()?)?;
        kc.ok(&["label", "pod", "multi-container", "app=web"])?;
        kc.create(&service("web"))?;

        let out = squash(&kc.ok(&["describe", "pod", "multi-container"])?);
        for line in [
            "Name: multi-container".to_string(),
            format!("Namespace: {}", kc.ns),
            "Service Account: default".into(),
            "Node: <none>".into(),
            "Labels: app=web".into(),
            "Status: Pending".into(),
            "Containers:".into(),
            "app:".into(),
            "Image: nginx".into(),
            "Port: 80/TCP".into(),
            "sidecar:".into(),
            "Image: curlimages/curl:7.79.1".into(),
            "while true; do curl localhost:80; sleep 5; done;".into(),
            "QoS Class: BestEffort".into(),
        ] {
            ensure!(
                out.lines().any(|l| l == line),
                "no line {line:?} in:\n{out}"
            );
        }

        // An event about the pod shows up under Events.
        let uid = kc.jsonpath(&["pod", "multi-container"], "{.metadata.uid}")?;
        let ev = event(
            "multi-container.1",
            about("Pod", "multi-container", &kc.ns, &uid),
            "Testing",
            "hello from the test",
        );
        eq(
            kc.create(&ev)?.trim(),
            "event/multi-container.1 created",
            "create event",
        )?;
        // An event about another pod does not.
        let other = event(
            "other.1",
            about("Pod", "other", &kc.ns, "0000"),
            "Elsewhere",
            "not about this pod",
        );
        kc.create(&other)?;
        let out = squash(&kc.ok(&["describe", "pod", "multi-container"])?);
        let events = out
            .split("\nEvents:\n")
            .nth(1)
            .with_context(|| format!("no Events section in:\n{out}"))?;
        let rows: Vec<&str> = events.lines().collect();
        eq(
            &rows.first().copied(),
            &Some("Type Reason Age From Message"),
            "events header",
        )?;
        ensure!(
            rows.iter().any(|r| r.starts_with("Normal Testing ")
                && r.ends_with(" kins-test hello from the test")),
            "no Testing event in:\n{events}"
        );
        lacks(&out, "Elsewhere")?;

        let ip = kc.jsonpath(&["service", "web"], "{.spec.clusterIP}")?;
        let out = squash(&kc.ok(&["describe", "service", "web"])?);
        for line in [
            "Name: web".to_string(),
            format!("Namespace: {}", kc.ns),
            "Selector: app=web".into(),
            "Type: ClusterIP".into(),
            format!("IP: {ip}"),
            format!("IPs: {ip}"),
            "Port: <unset> 80/TCP".into(),
            "TargetPort: 80/TCP".into(),
            "Session Affinity: None".into(),
            "Events: <none>".into(),
        ] {
            ensure!(
                out.lines().any(|l| l == line),
                "no line {line:?} in:\n{out}"
            );
        }
        let uid = kc.jsonpath(&["service", "web"], "{.metadata.uid}")?;
        kc.create(&event(
            "web.1",
            about("Service", "web", &kc.ns, &uid),
            "Checked",
            "the service was looked at",
        ))?;
        let out = squash(&kc.ok(&["describe", "service", "web"])?);
        ensure!(
            out.lines().any(|r| r.starts_with("Normal Checked ")
                && r.ends_with(" kins-test the service was looked at")),
            "no Checked event in:\n{out}"
        );
        Ok(())
    })
}

#[test]
fn label_and_annotate() -> Result<()> {
    let c = Cluster::up("kc-label")?;
    each_kubectl(&c, "label", |kc| {
        kc.create(&example_pod()?)?;
        let labels = || kc.jsonpath(&["pod", "multi-container"], "{.metadata.labels}");
        eq(
            kc.ok(&["label", "pod", "multi-container", "tier=front"])?
                .trim(),
            "pod/multi-container labeled",
            "label",
        )?;
        eq(labels()?.as_str(), r#"{"tier":"front"}"#, "labels")?;
        let err = kc.fails(&["label", "pod", "multi-container", "tier=back"])?;
        eq(
            err.trim(),
            "error: 'tier' already has a value (front), and --overwrite is false",
            "conflict",
        )?;
        eq(
            labels()?.as_str(),
            r#"{"tier":"front"}"#,
            "labels after the refused change",
        )?;
        kc.ok(&[
            "label",
            "pod",
            "multi-container",
            "tier=back",
            "--overwrite",
        ])?;
        kc.ok(&["label", "pod", "multi-container", "app=mc"])?;
        eq(
            labels()?.as_str(),
            r#"{"app":"mc","tier":"back"}"#,
            "labels after overwrite",
        )?;
        kc.ok(&["label", "pod", "multi-container", "tier-"])?;
        eq(
            labels()?.as_str(),
            r#"{"app":"mc"}"#,
            "labels after removal",
        )?;
        // The server validates label values.
        let err = kc.fails(&[
            "patch",
            "pod",
            "multi-container",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"app":"has space"}}}"#,
        ])?;
        has(
            &err,
            r#"The Pod "multi-container" is invalid: metadata.labels: Invalid value: "has space": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"#,
        )?;
        eq(
            labels()?.as_str(),
            r#"{"app":"mc"}"#,
            "labels after the invalid patch",
        )?;

        eq(
            kc.ok(&["annotate", "pod", "multi-container", "note=hello world"])?
                .trim(),
            "pod/multi-container annotated",
            "annotate",
        )?;
        eq(
            kc.jsonpath(&["pod", "multi-container"], "{.metadata.annotations.note}")?
                .as_str(),
            "hello world",
            "annotation",
        )?;
        kc.ok(&["annotate", "pod", "multi-container", "note-"])?;
        eq(
            kc.jsonpath(&["pod", "multi-container"], "{.metadata.annotations}")?
                .as_str(),
            "",
            "annotations after removal",
        )?;

        // Labels on a cluster-scoped object, and on many objects at once.
        let team = format!("team={}", kc.ns);
        kc.ok(&["label", "namespace", &kc.ns, &team])?;
        eq(
            &kc.names(&["namespaces", "-l", &team])?,
            &vec![format!("namespace/{}", kc.ns)],
            "namespace label",
        )?;
        kc.create(&pod("p2", json!({"app": "mc"})))?;
        let out = kc.ok(&["label", "pods", "-l", "app=mc", "batch=1"])?;
        eq(
            out.as_str(),
            "pod/multi-container labeled\npod/p2 labeled\n",
            "label -l",
        )?;
        eq(
            &kc.names(&["pods", "-l", "batch=1"])?.len(),
            &2,
            "pods with batch=1",
        )?;
        Ok(())
    })
}

#[test]
fn patch_strategic_merge_json() -> Result<()> {
    let c = Cluster::up("kc-patch")?;
    each_kubectl(&c, "patch", |kc| {
        kc.create(&deployment("web", 2))?;
        let images = || {
            kc.jsonpath(
                &["deployment", "web"],
                "{.spec.template.spec.containers[*].image}",
            )
        };

        // Strategic merge patch: containers merge by name, the other one stays.
        let out = kc.ok(&[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
        ])?;
        eq(out.trim(), "deployment.apps/web patched", "strategic patch")?;
        eq(
            images()?.as_str(),
            "nginx:1.27 busybox",
            "images after strategic patch",
        )?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.metadata.generation}")?
                .as_str(),
            "2",
            "generation",
        )?;
        // $patch: delete removes one element by its key.
        kc.ok(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
        ])?;
        eq(
            images()?.as_str(),
            "nginx:1.27",
            "images after $patch: delete",
        )?;
        // The same patch again changes nothing.
        let out = kc.ok(&[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
        ])?;
        eq(
            out.trim(),
            "deployment.apps/web patched (no change)",
            "no-op patch",
        )?;

        // Merge patch: maps merge, lists are replaced, null deletes.
        kc.ok(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"m":"1"}}}"#,
        ])?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.metadata.labels}")?
                .as_str(),
            r#"{"app":"web","m":"1"}"#,
            "labels after merge patch",
        )?;
        kc.ok(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"m":null}}}"#,
        ])?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.metadata.labels}")?
                .as_str(),
            r#"{"app":"web"}"#,
            "labels after merge patch with null",
        )?;

        // JSON patch.
        kc.ok(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":5},{"op":"add","path":"/metadata/annotations","value":{"j":"p"}}]"#,
        ])?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "5",
            "replicas after json patch",
        )?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.metadata.annotations.j}")?
                .as_str(),
            "p",
            "annotation",
        )?;

        // A patch that does not apply changes nothing.
        // (Spec and generation, not resourceVersion: controllers may write the status.)
        let before = kc.jsonpath(&["deployment", "web"], SPEC_AND_GENERATION)?;
        let err = kc.fails(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":4},{"op":"replace","path":"/spec/replicas","value":1}]"#,
        ])?;
        has(&err, "The request is invalid")?;
        let err = kc.fails(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/spec/nothere"}]"#,
        ])?;
        has(&err, "The request is invalid")?;
        // A patch that makes the object invalid.
        let err = kc.fails(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":-1}}"#,
        ])?;
        has(
            &err,
            r#"The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"#,
        )?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "5",
            "replicas after failed patches",
        )?;
        eq(
            &kc.jsonpath(&["deployment", "web"], SPEC_AND_GENERATION)?,
            &before,
            "spec and generation after failed patches",
        )?;
        // A patch of something that is not there.
        let err = kc.fails(&[
            "patch",
            "deployment",
            "nope",
            "-p",
            r#"{"spec":{"replicas":1}}"#,
        ])?;
        eq(
            err.trim(),
            r#"Error from server (NotFound): deployments.apps "nope" not found"#,
            "patch of a missing object",
        )?;
        Ok(())
    })
}

#[test]
fn edit_with_an_editor_script() -> Result<()> {
    let c = Cluster::up("kc-edit")?;
    let script = |name: &str, body: &str| -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = c.data.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n"))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(p)
    };
    let change = script(
        "edit-change.sh",
        r#"sed -i -e 's/^  replicas: 2$/  replicas: 4/' -e 's/image: nginx:1.25$/image: nginx:1.27/' "$1""#,
    )?;
    let invalid = script(
        "edit-invalid.sh",
        r#"sed -i -e 's/^  replicas: 4$/  replicas: -1/' "$1""#,
    )?;
    let noop = script("edit-noop.sh", "exit 0")?;
    each_kubectl(&c, "edit", |kc| {
        kc.create(&deployment("web", 2))?;
        let edit = |editor: &Path| -> Result<Output> {
            Ok(kc
                .c
                .kubectl_cmd(&kc.k, &kc.args(&["edit", "deployment", "web"]))
                .env("KUBE_EDITOR", editor)
                .env("TMPDIR", kc.c.data.path())
                .output()?)
        };
        let out = edit(&change)?;
        let stdout = kins_tests::ok(out)?;
        eq(stdout.trim(), "deployment.apps/web edited", "edit")?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "4",
            "replicas",
        )?;
        eq(
            kc.jsonpath(
                &["deployment", "web"],
                "{.spec.template.spec.containers[*].image}",
            )?
            .as_str(),
            "nginx:1.27 busybox",
            "images",
        )?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.metadata.generation}")?
                .as_str(),
            "2",
            "generation",
        )?;
        let before = kc.jsonpath(&["deployment", "web"], SPEC_AND_GENERATION)?;

        let out = edit(&noop)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "no-op edit failed: {text}");
        has(&text, "Edit cancelled, no changes made.")?;

        // An invalid change is refused by the server and nothing changes.
        let out = edit(&invalid)?;
        let err = kins_tests::fails(out)?;
        has(&err, r#"error: deployments.apps "web" is invalid"#)?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "4",
            "replicas after invalid edit",
        )?;
        eq(
            &kc.jsonpath(&["deployment", "web"], SPEC_AND_GENERATION)?,
            &before,
            "spec and generation after edits that changed nothing",
        )?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------

#[test]
fn delete_waits_for_finalizers() -> Result<()> {
    let c = Cluster::up("kc-delete")?;
    each_kubectl(&c, "delete", |kc| {
        kc.create(&example_pod()?)?;
        let out = kc.ok(&["delete", "pod", "multi-container", "--wait"])?;
        ensure!(
            out.starts_with("pod \"multi-container\" deleted"),
            "delete said {out:?}"
        );
        let err = kc.fails(&["get", "pod", "multi-container"])?;
        eq(
            err.trim(),
            r#"Error from server (NotFound): pods "multi-container" not found"#,
            "get after delete",
        )?;
        let err = kc.fails(&["delete", "pod", "multi-container"])?;
        eq(
            err.trim(),
            r#"Error from server (NotFound): pods "multi-container" not found"#,
            "second delete",
        )?;

        // A finalizer holds the object: delete --wait returns when it is gone.
        let held = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "finalizers": ["kins.test/hold"]},
            "data": {"a": "b"},
        });
        kc.create(&held.to_string())?;
        let mut del = Background::spawn(
            kc,
            &["delete", "configmap", "held", "--wait", "--timeout=300s"],
        )?;
        wait_until("the deletionTimestamp", || {
            Ok(!kc
                .jsonpath(&["configmap", "held"], "{.metadata.deletionTimestamp}")?
                .is_empty())
        })?;
        ensure!(
            del.exited()?.is_none(),
            "delete --wait returned while a finalizer holds the object: {:?}",
            del.seen
        );
        eq(
            kc.jsonpath(&["configmap", "held"], "{.data.a}")?.as_str(),
            "b",
            "data while deleting",
        )?;
        // A terminating object cannot get new finalizers.
        let err = kc.fails(&[
            "patch",
            "configmap",
            "held",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":["kins.test/hold","kins.test/more"]}}"#,
        ])?;
        has(
            &err,
            r#"The ConfigMap "held" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"kins.test/more"}"#,
        )?;
        kc.ok(&[
            "patch",
            "configmap",
            "held",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])?;
        let (status, lines) = del.finish()?;
        ensure!(status.success(), "delete --wait failed: {lines:?}");
        ensure!(
            lines
                .first()
                .is_some_and(|l| l.starts_with("configmap \"held\" deleted")),
            "delete said {lines:?}"
        );
        let err = kc.fails(&["get", "configmap", "held"])?;
        eq(
            err.trim(),
            r#"Error from server (NotFound): configmaps "held" not found"#,
            "get after delete",
        )?;

        // Delete by label.
        kc.create(&pod("a", json!({"group": "x"})))?;
        kc.create(&pod("b", json!({"group": "x"})))?;
        kc.create(&pod("c", json!({"group": "y"})))?;
        let out = kc.ok(&["delete", "pods", "-l", "group=x"])?;
        let lines: Vec<&str> = out.lines().collect();
        eq(&lines.len(), &2, "lines of delete -l")?;
        ensure!(
            lines[0].starts_with("pod \"a\" deleted") && lines[1].starts_with("pod \"b\" deleted"),
            "delete -l said {out:?}"
        );
        eq(&kc.names(&["pods"])?, &strs(&["pod/c"]), "pods left")?;
        Ok(())
    })
}

#[test]
fn delete_namespace_deletes_its_content() -> Result<()> {
    let c = Cluster::up("kc-delns")?;
    each_kubectl(&c, "gone", |kc| {
        let keep = format!("keep-{}", kc.ns);
        kc.create(&namespace(&keep))?;
        kc.ok_in(
            &["create", "-n", &keep, "-f", "-"],
            &configmap("stays", json!({"k": "v"})),
        )?;
        kc.create(&example_pod()?)?;
        kc.create(&deployment("web", 1))?;
        kc.create(&service("web"))?;
        kc.create(&configmap("cfg", json!({"a": "b"})))?;
        let ip = kc.jsonpath(&["service", "web"], "{.spec.clusterIP}")?;

        let out = kc.ok(&["delete", "namespace", &kc.ns])?;
        ensure!(
            out.starts_with(&format!("namespace \"{}\" deleted", kc.ns)),
            "delete said {out:?}"
        );
        let nss = kc.names(&["namespaces"])?;
        ensure!(
            !nss.contains(&format!("namespace/{}", kc.ns)),
            "still listed: {nss:?}"
        );
        ensure!(
            nss.contains(&format!("namespace/{keep}")),
            "the other namespace went too: {nss:?}"
        );
        let out = kc.ok(&["get", "namespaces"])?;
        ensure!(
            table(&out).iter().all(|r| r[0] != kc.ns),
            "get ns lists it:\n{out}"
        );
        let err = kc.fails(&["get", "namespace", &kc.ns])?;
        eq(
            err.trim(),
            &format!(
                "Error from server (NotFound): namespaces \"{}\" not found",
                kc.ns
            ),
            "get ns",
        )?;
        for what in ["pods", "services", "configmaps", "serviceaccounts"] {
            let list = kc.raw(&format!("/api/v1/namespaces/{}/{what}", kc.ns))?;
            eq(&list["items"], &json!([]), what)?;
        }
        let list = kc.raw(&format!("/apis/apps/v1/namespaces/{}/deployments", kc.ns))?;
        eq(&list["items"], &json!([]), "deployments")?;
        let out = kc.run(&["get", "pods"], None)?;
        eq(
            String::from_utf8_lossy(&out.stderr).trim(),
            &format!("No resources found in {} namespace.", kc.ns),
            "get pods",
        )?;
        eq(
            kc.jsonpath(&["configmap", "stays", "-n", &keep], "{.data.k}")?
                .as_str(),
            "v",
            "the other namespace's configmap",
        )?;
        // The deleted service's ClusterIP is free again.
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reuse"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        kc.ok_in(&["create", "-n", &keep, "-f", "-"], &svc.to_string())?;
        eq(
            &kc.jsonpath(&["service", "reuse", "-n", &keep], "{.spec.clusterIP}")?,
            &ip,
            "reused clusterIP",
        )?;

        // The namespaces Kubernetes needs cannot be deleted.
        for ns in ["default", "kube-system", "kube-public"] {
            // Without --namespace: kubectl warns when a namespace is given for a
            // cluster-scoped delete.
            let err = kins_tests::fails(kc.c.kubectl(&kc.k, &["delete", "namespace", ns])?)?;
            eq(
                err.trim(),
                &format!("Error from server (Forbidden): namespaces \"{ns}\" is forbidden: this namespace may not be deleted"),
                "delete of a system namespace",
            )?;
            eq(
                kc.jsonpath(&["namespace", ns], "{.status.phase}")?.as_str(),
                "Active",
                ns,
            )?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// create generators, services, expose, scale
// ---------------------------------------------------------------------------------------

#[test]
fn create_generators() -> Result<()> {
    let c = Cluster::up("kc-gen")?;
    each_kubectl(&c, "gen", |kc| {
        let ns = format!("made-{}", kc.ns);
        eq(
            kc.ok(&["create", "namespace", &ns])?.trim(),
            &format!("namespace/{ns} created"),
            "create namespace",
        )?;
        eq(
            kc.jsonpath(&["namespace", &ns], "{.status.phase}")?
                .as_str(),
            "Active",
            "phase",
        )?;
        eq(
            kc.jsonpath(&["namespace", &ns], "{.metadata.labels}")?
                .as_str(),
            &format!(r#"{{"kubernetes.io/metadata.name":"{ns}"}}"#),
            "namespace labels",
        )?;

        let out = kc.ok(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
            "--from-literal=c=d",
        ])?;
        eq(out.trim(), "configmap/cfg created", "create configmap")?;
        eq(
            kc.jsonpath(&["configmap", "cfg"], "{.data}")?.as_str(),
            r#"{"a":"b","c":"d"}"#,
            "configmap data",
        )?;
        let err = kc.fails(&["create", "configmap", "cfg", "--from-literal=a=x"])?;
        has(&err, r#"configmaps "cfg" already exists"#)?;
        eq(
            kc.jsonpath(&["configmap", "cfg"], "{.data.a}")?.as_str(),
            "b",
            "configmap after AlreadyExists",
        )?;

        let out = kc.ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=user=admin",
        ])?;
        eq(out.trim(), "secret/creds created", "create secret")?;
        eq(
            kc.jsonpath(&["secret", "creds"], "{.data.user}")?.as_str(),
            "YWRtaW4=",
            "secret data",
        )?;
        eq(
            kc.jsonpath(&["secret", "creds"], "{.type}")?.as_str(),
            "Opaque",
            "secret type",
        )?;

        let out = kc.ok(&["create", "serviceaccount", "robot"])?;
        eq(
            out.trim(),
            "serviceaccount/robot created",
            "create serviceaccount",
        )?;
        let sas = kc.names(&["serviceaccounts"])?;
        ensure!(
            sas.contains(&"serviceaccount/robot".to_string()),
            "service accounts: {sas:?}"
        );
        // Every namespace gets a default service account.
        let sas = kc.names(&["serviceaccounts", "-n", &ns])?;
        eq(
            &sas,
            &strs(&["serviceaccount/default"]),
            "service accounts of the new namespace",
        )?;

        let out = kc.ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ])?;
        eq(
            out.trim(),
            "deployment.apps/web created",
            "create deployment",
        )?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.selector.matchLabels.app}")?
                .as_str(),
            "web",
            "selector",
        )?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "2",
            "replicas",
        )?;
        Ok(())
    })
}

#[test]
fn services_node_ports_and_cluster_ips() -> Result<()> {
    let c = Cluster::up("kc-svc")?;
    each_kubectl(&c, "svc", |kc| {
        let out = kc.ok(&["create", "service", "nodeport", "np-any", "--tcp=80:8080"])?;
        eq(
            out.trim(),
            "service/np-any created",
            "create service nodeport",
        )?;
        let s = kc.json(&["service", "np-any"])?;
        eq(&s["spec"]["type"], &json!("NodePort"), "type")?;
        let port = &s["spec"]["ports"][0];
        eq(&port["port"], &json!(80), "port")?;
        eq(&port["targetPort"], &json!(8080), "targetPort")?;
        eq(&port["name"], &json!("80-8080"), "port name")?;
        let np = port["nodePort"].as_u64().context("nodePort")?;
        ensure!((30000..=32767).contains(&np), "nodePort {np} out of range");
        eq(
            &s["spec"]["selector"],
            &json!({"app": "np-any"}),
            "selector",
        )?;
        eq(
            &s["spec"]["externalTrafficPolicy"],
            &json!("Cluster"),
            "externalTrafficPolicy",
        )?;

        let out = kc.ok(&[
            "create",
            "service",
            "nodeport",
            "np-fixed",
            "--tcp=80:8080",
            "--node-port=30080",
        ])?;
        eq(
            out.trim(),
            "service/np-fixed created",
            "create service nodeport --node-port",
        )?;
        eq(
            kc.jsonpath(&["service", "np-fixed"], "{.spec.ports[0].nodePort}")?
                .as_str(),
            "30080",
            "nodePort",
        )?;
        let out = kc.ok(&["get", "service", "np-fixed"])?;
        let (h, r) = table_row(&out, "np-fixed")?;
        eq(
            &without_age(&h, &r)[3..],
            &strs(&["<none>", "80:30080/TCP"])[..],
            "PORT(S)",
        )?;

        let err = kc.fails(&[
            "create",
            "service",
            "nodeport",
            "np-taken",
            "--tcp=80:8080",
            "--node-port=30080",
        ])?;
        has(
            &err,
            r#"Service "np-taken" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#,
        )?;
        let err = kc.fails(&[
            "create",
            "service",
            "nodeport",
            "np-range",
            "--tcp=80:8080",
            "--node-port=80",
        ])?;
        has(
            &err,
            r#"Service "np-range" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"#,
        )?;
        for name in ["np-taken", "np-range"] {
            let err = kc.fails(&["get", "service", name])?;
            eq(
                err.trim(),
                &format!("Error from server (NotFound): services \"{name}\" not found"),
                name,
            )?;
        }
        // Deleting the service releases the port (the next kubectl takes 30080 again).
        kc.ok(&["delete", "service", "np-fixed"])?;
        kc.ok(&[
            "create",
            "service",
            "nodeport",
            "np-again",
            "--tcp=81:8080",
            "--node-port=30080",
        ])?;
        eq(
            kc.jsonpath(&["service", "np-again"], "{.spec.ports[0].nodePort}")?
                .as_str(),
            "30080",
            "nodePort reused",
        )?;
        kc.ok(&["delete", "service", "np-again"])?;

        // ClusterIPs: taken, out of range, chosen.
        let svc = |name: &str, ip: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
            .to_string()
        };
        let err = kc.fails_in(&["create", "-f", "-"], &svc("ip-taken", "10.96.0.1"))?;
        has(
            &err,
            r#"Service "ip-taken" is invalid: spec.clusterIPs: Invalid value: ["10.96.0.1"]: failed to allocate IP 10.96.0.1: provided IP is already allocated"#,
        )?;
        let err = kc.fails_in(&["create", "-f", "-"], &svc("ip-range", "10.0.0.1"))?;
        has(
            &err,
            r#"Service "ip-range" is invalid: spec.clusterIPs: Invalid value: ["10.0.0.1"]: failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
        )?;
        let err = kc.fails_in(&["create", "-f", "-"], &svc("ip-bad", "10.96.0.300"))?;
        has(
            &err,
            r#"Service "ip-bad" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.300""#,
        )?;
        let out = kc.ok_in(&["create", "-f", "-"], &svc("ip-chosen", "10.100.200.7"))?;
        eq(
            out.trim(),
            "service/ip-chosen created",
            "service with a chosen ClusterIP",
        )?;
        eq(
            kc.jsonpath(&["service", "ip-chosen"], "{.spec.clusterIP}")?
                .as_str(),
            "10.100.200.7",
            "clusterIP",
        )?;
        kc.ok(&["delete", "service", "ip-chosen"])?;
        for name in ["ip-taken", "ip-range", "ip-bad"] {
            kc.fails(&["get", "service", name])?;
        }
        // The API server's own address is still the kubernetes service's.
        eq(
            kc.jsonpath(
                &["service", "kubernetes", "-n", "default"],
                "{.spec.clusterIP}",
            )?
            .as_str(),
            "10.96.0.1",
            "kubernetes service",
        )?;
        Ok(())
    })
}

#[test]
fn expose_and_scale() -> Result<()> {
    let c = Cluster::up("kc-expose")?;
    each_kubectl(&c, "expose", |kc| {
        kc.create(&example_pod()?)?;
        kc.ok(&["label", "pod", "multi-container", "app=mc", "tier=web"])?;
        let out = kc.ok(&["expose", "pod", "multi-container", "--port", "80"])?;
        eq(out.trim(), "service/multi-container exposed", "expose pod")?;
        let s = kc.json(&["service", "multi-container"])?;
        eq(
            &s["spec"]["selector"],
            &json!({"app": "mc", "tier": "web"}),
            "selector from the pod's labels",
        )?;
        eq(
            &s["spec"]["ports"],
            &json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]),
            "ports",
        )?;
        eq(&s["spec"]["type"], &json!("ClusterIP"), "type")?;
        let ip = s["spec"]["clusterIP"].as_str().context("clusterIP")?;
        ensure!(in_service_cidr(ip), "clusterIP {ip}");

        kc.create(&deployment("web", 2))?;
        let out = kc.ok(&[
            "expose",
            "deployment",
            "web",
            "--port",
            "8080",
            "--target-port",
            "80",
            "--type",
            "NodePort",
        ])?;
        eq(out.trim(), "service/web exposed", "expose deployment")?;
        let s = kc.json(&["service", "web"])?;
        eq(
            &s["spec"]["selector"],
            &json!({"app": "web"}),
            "selector from the deployment",
        )?;
        eq(
            &s["spec"]["ports"][0]["targetPort"],
            &json!(80),
            "targetPort",
        )?;
        let np = s["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .context("nodePort")?;
        ensure!((30000..=32767).contains(&np), "nodePort {np}");

        let out = kc.ok(&["scale", "deployment", "web", "--replicas=3"])?;
        eq(out.trim(), "deployment.apps/web scaled", "scale")?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "3",
            "replicas",
        )?;
        let scale = kc.raw(&format!(
            "/apis/apps/v1/namespaces/{}/deployments/web/scale",
            kc.ns
        ))?;
        eq(&scale["kind"], &json!("Scale"), "scale kind")?;
        eq(
            &scale["apiVersion"],
            &json!("autoscaling/v1"),
            "scale apiVersion",
        )?;
        eq(&scale["spec"]["replicas"], &json!(3), "scale spec")?;
        eq(
            &scale["status"]["selector"],
            &json!("app=web"),
            "scale selector",
        )?;
        let err = kc.fails(&[
            "scale",
            "deployment",
            "web",
            "--current-replicas=5",
            "--replicas=1",
        ])?;
        has(&err, "Expected replicas to be 5, was 3")?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "3",
            "replicas after refused scale",
        )?;
        kc.ok(&[
            "scale",
            "deployment",
            "web",
            "--current-replicas=3",
            "--replicas=0",
        ])?;
        eq(
            kc.jsonpath(&["deployment", "web"], "{.spec.replicas}")?
                .as_str(),
            "0",
            "scaled to zero",
        )?;
        let err = kc.fails(&["scale", "deployment", "nope", "--replicas=1"])?;
        has(&err, r#"deployments.apps "nope" not found"#)?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// discovery and server information
// ---------------------------------------------------------------------------------------

#[test]
fn discovery_explain_version_health() -> Result<()> {
    let c = Cluster::up("kc-info")?;
    each_kubectl(&c, "info", |kc| {
        let out = kc.ok(&["api-resources"])?;
        let t = table(&out);
        eq(
            &t[0],
            &strs(&["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]),
            "api-resources header",
        )?;
        for want in [
            &["pods", "po", "v1", "true", "Pod"][..],
            &["services", "svc", "v1", "true", "Service"],
            &["namespaces", "ns", "v1", "false", "Namespace"],
            &["configmaps", "cm", "v1", "true", "ConfigMap"],
            &["deployments", "deploy", "apps/v1", "true", "Deployment"],
            &[
                "endpointslices",
                "discovery.k8s.io/v1",
                "true",
                "EndpointSlice",
            ],
            &["events", "ev", "v1", "true", "Event"],
        ] {
            ensure!(t.contains(&strs(want)), "no row {want:?} in:\n{out}");
        }
        let apps = kc.ok(&["api-resources", "--api-group=apps", "-o", "name"])?;
        eq(
            apps.as_str(),
            "deployments.apps\nreplicasets.apps\n",
            "apps resources",
        )?;
        let wide = kc.ok(&["api-resources", "-o", "wide"])?;
        let row = |name: &str| -> Result<Vec<String>> {
            table(&wide)
                .into_iter()
                .find(|r| r[0] == name)
                .with_context(|| format!("no {name} in:\n{wide}"))
        };
        eq(
            &row("pods")?[5],
            &"create,delete,deletecollection,get,list,patch,update,watch".to_string(),
            "pod verbs",
        )?;
        eq(
            &row("namespaces")?[5],
            &"create,delete,get,list,patch,update,watch".to_string(),
            "namespace verbs",
        )?;

        let out = squash(&kc.ok(&["explain", "pods.spec.containers"])?);
        for line in [
            "KIND: Pod",
            "VERSION: v1",
            "FIELD: containers <[]Container>",
            "FIELDS:",
            "image <string>",
            "name <string> -required-",
            "ports <[]ContainerPort>",
        ] {
            ensure!(
                out.lines().any(|l| l == line),
                "no line {line:?} in:\n{out}"
            );
        }
        let out = squash(&kc.ok(&["explain", "service.spec.type"])?);
        has(&out, "FIELD: type <string>")?;
        let err = kc.fails(&["explain", "pods.spec.nothere"])?;
        has(&err, r#"field "nothere" does not exist"#)?;

        let v: Value = serde_json::from_str(&kc.ok(&["version", "-o", "json"])?)?;
        let server = &v["serverVersion"];
        eq(&server["major"], &json!("1"), "major")?;
        let minor = server["minor"].as_str().context("minor")?;
        let git = server["gitVersion"].as_str().context("gitVersion")?;
        ensure!(
            git.starts_with(&format!("v1.{minor}.")) && git.contains("-kins."),
            "gitVersion {git}"
        );
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        eq(
            &server["platform"],
            &json!(format!("linux/{arch}")),
            "platform (Go's names)",
        )?;
        ensure!(
            v["clientVersion"]["gitVersion"].is_string(),
            "no client version in {v}"
        );
        let out = kc.ok(&["version"])?;
        has(&out, &format!("Server Version: {git}"))?;
        eq(&kc.raw("/version")?, server, "/version")?;

        for path in ["/healthz", "/livez", "/readyz"] {
            eq(kc.ok(&["get", "--raw", path])?.as_str(), "ok", path)?;
        }
        let api = kc.raw("/api")?;
        eq(&api["versions"], &json!(["v1"]), "/api versions")?;
        let groups = kc.raw("/apis")?;
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .context("groups")?
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        for g in [
            "apps",
            "discovery.k8s.io",
            "networking.k8s.io",
            "coordination.k8s.io",
        ] {
            ensure!(names.contains(&g), "no group {g} in {names:?}");
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// bad input
// ---------------------------------------------------------------------------------------

/// Bad requests through kubectl: each gets the right Status and changes nothing.
#[test]
fn bad_input_through_kubectl() -> Result<()> {
    let c = Cluster::up("kc-bad")?;
    each_kubectl(&c, "bad", |kc| {
        kc.create(&configmap("existing", json!({"a": "1"})))?;
        kc.create(&service("web"))?;
        let before = kc.snapshot()?;
        let cms = format!("/api/v1/namespaces/{}/configmaps", kc.ns);
        let raw_create = |name: &str, body: &[u8]| -> Result<String> {
            let f = kc.file(name, body)?;
            kc.fails(&["create", "--raw", &cms, "-f", &f])
        };

        let err = raw_create("bad.json", br#"{"apiVersion":"v1","#)?;
        has(
            &err,
            "Error from server (BadRequest): couldn't get version/kind; json parse error",
        )?;
        let err = raw_create(
            "kind.json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        )?;
        has(&err, "Error from server (BadRequest)")?;
        has(&err, "Secret")?;
        has(&err, "ConfigMap")?;
        let err = raw_create(
            "av.json",
            br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        )?;
        eq(
            err.trim(),
            "Error from server (BadRequest): the API version in the data (apps/v1) does not match the expected API version (v1)",
            "apiVersion mismatch",
        )?;
        let err = raw_create(
            "ns.json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"elsewhere"}}"#,
        )?;
        eq(
            err.trim(),
            "Error from server (BadRequest): the namespace of the provided object does not match the namespace sent on the request",
            "namespace mismatch",
        )?;
        let big = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
            "x".repeat(3 * 1024 * 1024)
        );
        let err = raw_create("big.json", big.as_bytes())?;
        eq(
            err.trim(),
            "Error from server (RequestEntityTooLarge): Request entity too large: limit is 3145728",
            "too large",
        )?;

        // Names.
        let err = kc.fails_in(&["create", "-f", "-"], &configmap("Bad_Name", json!({})))?;
        eq(
            err.trim(),
            r#"The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#,
            "invalid name",
        )?;
        let long = "a".repeat(254);
        let err = kc.fails_in(&["create", "-f", "-"], &configmap(&long, json!({})))?;
        eq(
            err.trim(),
            &format!(
                r#"The ConfigMap "{long}" is invalid: metadata.name: Invalid value: "{long}": must be no more than 253 characters"#
            ),
            "too long name",
        )?;
        let err = kc.fails_in(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"},
                "spec": {"ports": [{"port": 80}]}})
            .to_string(),
        )?;
        has(
            &err,
            r#"The Service "1web" is invalid: metadata.name: Invalid value: "1web": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"#,
        )?;
        let long_ns = "n".repeat(64);
        let err = kc.fails_in(&["create", "-f", "-"], &namespace(&long_ns))?;
        // Two causes: the name, and the kubernetes.io/metadata.name label made from it.
        has(&err, &format!(r#"The Namespace "{long_ns}" is invalid: "#))?;
        has(
            &err,
            &format!(
                r#"* metadata.name: Invalid value: "{long_ns}": must be no more than 63 characters"#
            ),
        )?;

        // Unknown fields under the default --validate=strict, for create and apply (which
        // creates what is not there yet).
        let strict = "apiVersion: v1\nkind: Service\nmetadata:\n  name: strict\nspec:\n  foo: bar\n  ports:\n  - port: 80\n";
        for verb in ["create", "apply"] {
            let err = kc.fails_in(&[verb, "-f", "-"], strict)?;
            eq(
                err.trim(),
                r#"Error from server (BadRequest): error when creating "STDIN": strict decoding error: unknown field "spec.foo""#,
                verb,
            )?;
        }
        // An apply that patches an existing object is checked too.
        kc.create(&strict.replace("  foo: bar\n", ""))?;
        let err = kc.fails_in(&["apply", "-f", "-"], strict)?;
        has(&err, r#"strict decoding error: unknown field "spec.foo""#)?;
        kc.ok(&["delete", "service", "strict"])?;
        let err = kc.fails_in(
            &["create", "-f", "-"],
            &strict.replace("  foo: bar\n", "  ports2: []\n"),
        )?;
        has(&err, r#"unknown field "spec.ports2""#)?;
        // --validate=warn: created, with a warning.
        let out = kc.run(
            &["create", "--validate=warn", "-f", "-"],
            Some(&strict.replace("strict", "warned")),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "create --validate=warn failed: {stderr}"
        );
        has(&stderr, r#"Warning: unknown field "spec.foo""#)?;
        kc.ok(&["delete", "service", "warned"])?;

        // A stale resourceVersion.
        let stale = kc.ok(&["get", "configmap", "existing", "-o", "json"])?;
        kc.ok(&[
            "patch",
            "configmap",
            "existing",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ])?;
        let after_patch = kc.snapshot()?;
        let f = kc.file(
            "stale.json",
            stale.replace(r#""a": "1""#, r#""a": "3""#).as_bytes(),
        )?;
        let err = kc.fails(&["replace", "-f", &f])?;
        eq(
            err.trim(),
            &format!(
                r#"Error from server (Conflict): error when replacing "{f}": Operation cannot be fulfilled on configmaps "existing": the object has been modified; please apply your changes to the latest version and try again"#
            ),
            "stale replace",
        )?;
        eq(
            kc.jsonpath(&["configmap", "existing"], "{.data.a}")?
                .as_str(),
            "2",
            "data after stale replace",
        )?;

        // A JSON patch whose test fails.
        let err = kc.fails(&[
            "patch",
            "configmap",
            "existing",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/a","value":"9"},{"op":"replace","path":"/data/a","value":"4"}]"#,
        ])?;
        has(&err, "The request is invalid")?;

        // Unknown resources, unsupported verbs.
        let err = kc.fails(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{}/widgets", kc.ns),
        ])?;
        eq(
            err.trim(),
            "Error from server (NotFound): the server could not find the requested resource",
            "unknown resource",
        )?;
        let err = kc.fails(&["get", "--raw", "/apis/example.com/v1/widgets"])?;
        eq(
            err.trim(),
            "Error from server (NotFound): the server could not find the requested resource",
            "unknown group",
        )?;
        let err = kc.fails(&["get", "widgets"])?;
        has(&err, r#"the server doesn't have a resource type "widgets""#)?;
        let f = kc.file("empty-cm.json", configmap("viaput", json!({})).as_bytes())?;
        let err = kc.fails(&["replace", "--raw", &cms, "-f", &f])?;
        has(&err, "Error from server (MethodNotAllowed): the server does not allow this method on the requested resource")?;
        let err = kc.fails(&["delete", "--raw", "/api/v1/namespaces"])?;
        has(&err, "Error from server (MethodNotAllowed): the server does not allow this method on the requested resource")?;
        for ns in [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            kc.ns.as_str(),
        ] {
            eq(
                kc.jsonpath(&["namespace", ns], "{.status.phase}")?.as_str(),
                "Active",
                ns,
            )?;
        }

        // ClusterIPs taken or out of range.
        for (ip, msg) in [
            ("10.96.0.1", "provided IP is already allocated"),
            ("10.0.0.1", "the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        ] {
            let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ip"},
                "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
            let err = kc.fails_in(&["create", "-f", "-"], &s.to_string())?;
            has(&err, msg)?;
        }

        // No credentials.
        let empty = kc.file("empty-kubeconfig", b"")?;
        let out =
            kc.c.kubectl_cmd(
                &kc.k,
                &[
                    "--kubeconfig",
                    &empty,
                    "--server",
                    &kc.c.url(),
                    "--insecure-skip-tls-verify",
                    "--token",
                    "not-a-token",
                    "get",
                    "pods",
                ],
            )
            .output()?;
        let err = kins_tests::fails(out)?;
        eq(
            err.trim(),
            "error: You must be logged in to the server (Unauthorized)",
            "bad token",
        )?;

        eq(
            &kc.snapshot()?,
            &after_patch,
            "objects after the bad requests",
        )?;
        ensure!(before != after_patch, "the patch changed the snapshot");
        Ok(())
    })
}

/// A client of the API with the admin certificate (or none), for exact status codes.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(c: &Cluster, with_cert: bool) -> Result<Http> {
        let pki = c.apiserver_dir().join("pki");
        let read = |f: &str| std::fs::read(pki.join(f)).with_context(|| format!("reading {f}"));
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?);
        if with_cert {
            let mut pem = read("admin.crt")?;
            pem.extend(read("admin.key")?);
            b = b.identity(reqwest::Identity::from_pem(&pem)?);
        }
        Ok(Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: b.build()?,
            base: c.url(),
        })
    }

    /// Sends a request; the status code, the Warning headers and the body (JSON when it
    /// parses, else a string).
    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<String>, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Content-Type", content_type)
            .header("Accept", "application/json")
            .body(body);
        self.rt.block_on(async {
            let resp = req.send().await?;
            let code = resp.status().as_u16();
            let warnings = resp
                .headers()
                .get_all("warning")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            let text = resp.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((code, warnings, body))
        })
    }

    fn json(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let (code, _, v) = self.send(
            method,
            path,
            "application/json",
            body.to_string().into_bytes(),
        )?;
        Ok((code, v))
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let (code, _, v) = self.send("GET", path, "application/json", Vec::new())?;
        Ok((code, v))
    }
}

/// Checks a response is a Status with this code and reason, and returns its message.
fn status(got: &(u16, Value), code: u16, reason: &str) -> Result<String> {
    let (c, v) = got;
    ensure!(*c == code, "HTTP {c}, want {code}: {v}");
    eq(&v["kind"], &json!("Status"), "kind")?;
    eq(&v["apiVersion"], &json!("v1"), "apiVersion")?;
    eq(&v["status"], &json!("Failure"), "status")?;
    eq(&v["code"], &json!(code), "code")?;
    eq(&v["reason"], &json!(reason), "reason")?;
    Ok(v["message"].as_str().unwrap_or_default().to_string())
}

/// The same bad requests over plain HTTP, for their exact codes and Status bodies. kubectl
/// plays no part, so this runs once.
#[test]
fn bad_input_status_codes() -> Result<()> {
    let c = Cluster::up("kc-http")?;
    let api = Http::new(&c, true)?;
    let ns = "bad";
    let (code, _) = api.json(
        "POST",
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )?;
    eq(&code, &201, "create namespace")?;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let (code, existing) = api.json("POST", &cms, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "existing"}, "data": {"a": "1"}}))?;
    eq(&code, &201, "create configmap")?;
    let list_before = api.get(&cms)?.1["items"].clone();
    let post = |ct: &str, body: &[u8]| {
        api.send("POST", &cms, ct, body.to_vec())
            .map(|(c, _, v)| (c, v))
    };

    // Undecodable bodies.
    let m = status(
        &post("application/json", br#"{"apiVersion":"v1","#)?,
        400,
        "BadRequest",
    )?;
    ensure!(
        m.starts_with("couldn't get version/kind; json parse error"),
        "{m}"
    );
    let m = status(
        &post("application/yaml", b"apiVersion: v1\nkind: [ConfigMap\n")?,
        400,
        "BadRequest",
    )?;
    ensure!(m.contains("YAML"), "{m}");
    let m = status(&post("application/json", b"[1, 2]")?, 400, "BadRequest")?;
    ensure!(!m.is_empty(), "no message for a body that is not an object");
    // Type and namespace against the path.
    let m = status(
        &post(
            "application/json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        )?,
        400,
        "BadRequest",
    )?;
    ensure!(m.contains("Secret") && m.contains("ConfigMap"), "{m}");
    let m = status(
        &post(
            "application/yaml",
            b"apiVersion: apps/v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        )?,
        400,
        "BadRequest",
    )?;
    eq(
        m.as_str(),
        "the API version in the data (apps/v1) does not match the expected API version (v1)",
        "apiVersion",
    )?;
    let m = status(
        &post("application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}"#)?,
        400,
        "BadRequest",
    )?;
    eq(
        m.as_str(),
        "the namespace of the provided object does not match the namespace sent on the request",
        "namespace",
    )?;
    // Names.
    let r = api.json(
        "POST",
        &cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
    )?;
    let m = status(&r, 422, "Invalid")?;
    ensure!(m.starts_with(r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#), "{m}");
    eq(&r.1["details"]["name"], &json!("Bad_Name"), "details.name")?;
    eq(&r.1["details"]["kind"], &json!("ConfigMap"), "details.kind")?;
    eq(
        &r.1["details"]["causes"][0]["field"],
        &json!("metadata.name"),
        "cause field",
    )?;
    eq(
        &r.1["details"]["causes"][0]["reason"],
        &json!("FieldValueInvalid"),
        "cause reason",
    )?;
    let long = "a".repeat(254);
    let r = api.json(
        "POST",
        &cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": long}}),
    )?;
    let m = status(&r, 422, "Invalid")?;
    has(&m, "must be no more than 253 characters")?;
    let r = api.json(
        "POST",
        &cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
    )?;
    let m = status(&r, 422, "Invalid")?;
    has(
        &m,
        "metadata.name: Required value: name or generateName is required",
    )?;
    // Unknown fields: Strict refuses, Warn warns and stores.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "strict"}, "spec": {"foo": "bar", "ports": [{"port": 80}]}});
    let svcs = format!("/api/v1/namespaces/{ns}/services");
    let r = api.json("POST", &format!("{svcs}?fieldValidation=Strict"), &svc)?;
    eq(
        status(&r, 400, "BadRequest")?.as_str(),
        r#"strict decoding error: unknown field "spec.foo""#,
        "strict",
    )?;
    let (code, warnings, _) = api.send(
        "POST",
        &format!("{svcs}?fieldValidation=Warn"),
        "application/json",
        svc.to_string().into_bytes(),
    )?;
    eq(&code, &201, "create with fieldValidation=Warn")?;
    ensure!(
        warnings
            .iter()
            .any(|w| w.contains(r#"unknown field \"spec.foo\""#)),
        "warnings: {warnings:?}"
    );
    eq(
        &api.json("DELETE", &format!("{svcs}/strict"), &json!({}))?.0,
        &200,
        "delete",
    )?;
    // Too large.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 << 20)
    );
    let m = status(
        &post("application/json", big.as_bytes())?,
        413,
        "RequestEntityTooLarge",
    )?;
    eq(
        m.as_str(),
        "Request entity too large: limit is 3145728",
        "too large",
    )?;
    // A stale update.
    let mut stale = existing.clone();
    let (code, _) = api.json(
        "PATCH",
        &format!("{cms}/existing"),
        &json!({"data": {"a": "2"}}),
    )?;
    eq(
        &code,
        &415,
        "PATCH with application/json is not a patch type",
    )?;
    let (code, _, _) = api.send(
        "PATCH",
        &format!("{cms}/existing"),
        "application/merge-patch+json",
        br#"{"data":{"a":"2"}}"#.to_vec(),
    )?;
    eq(&code, &200, "merge patch")?;
    stale["data"]["a"] = json!("3");
    let r = api.json("PUT", &format!("{cms}/existing"), &stale)?;
    let m = status(&r, 409, "Conflict")?;
    eq(
        m.as_str(),
        r#"Operation cannot be fulfilled on configmaps "existing": the object has been modified; please apply your changes to the latest version and try again"#,
        "conflict",
    )?;
    eq(
        &r.1["details"]["name"],
        &json!("existing"),
        "conflict details",
    )?;
    // Creating what exists.
    let r = api.json(
        "POST",
        &cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "existing"}}),
    )?;
    eq(
        status(&r, 409, "AlreadyExists")?.as_str(),
        r#"configmaps "existing" already exists"#,
        "already exists",
    )?;
    // Patches that do not apply.
    let (c1, _, v) = api.send(
        "PATCH",
        &format!("{cms}/existing"),
        "application/json-patch+json",
        br#"[{"op":"test","path":"/data/a","value":"9"},{"op":"replace","path":"/data/a","value":"4"}]"#.to_vec(),
    )?;
    status(&(c1, v), 422, "Invalid")?;
    let (c1, _, v) = api.send(
        "PATCH",
        &format!("{cms}/existing"),
        "application/json-patch+json",
        b"{not json".to_vec(),
    )?;
    status(&(c1, v), 400, "BadRequest")?;
    // What is not there.
    let m = status(
        &api.get(&format!("/api/v1/namespaces/{ns}/widgets"))?,
        404,
        "NotFound",
    )?;
    eq(
        m.as_str(),
        "the server could not find the requested resource",
        "unknown resource",
    )?;
    status(&api.get("/apis/example.com/v1/widgets")?, 404, "NotFound")?;
    let r = api.get(&format!("{cms}/nope"))?;
    eq(
        status(&r, 404, "NotFound")?.as_str(),
        r#"configmaps "nope" not found"#,
        "missing object",
    )?;
    eq(
        &r.1["details"],
        &json!({"name": "nope", "kind": "configmaps"}),
        "not found details",
    )?;
    // Verbs a resource does not have.
    status(&api.json("PUT", &cms, &json!({}))?, 405, "MethodNotAllowed")?;
    status(
        &api.json("PATCH", &cms, &json!({}))?,
        405,
        "MethodNotAllowed",
    )?;
    status(
        &api.json("DELETE", "/api/v1/namespaces", &json!({}))?,
        405,
        "MethodNotAllowed",
    )?;
    let r = api.json("DELETE", "/api/v1/namespaces/default", &json!({}))?;
    eq(
        status(&r, 403, "Forbidden")?.as_str(),
        r#"namespaces "default" is forbidden: this namespace may not be deleted"#,
        "delete default",
    )?;
    // ClusterIPs.
    let ip_svc = |ip: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ip"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    let r = api.json("POST", &svcs, &ip_svc("10.96.0.1"))?;
    has(
        &status(&r, 422, "Invalid")?,
        "provided IP is already allocated",
    )?;
    eq(
        &r.1["details"]["causes"][0]["field"],
        &json!("spec.clusterIPs"),
        "cause field",
    )?;
    let r = api.json("POST", &svcs, &ip_svc("10.0.0.1"))?;
    has(&status(&r, 422, "Invalid")?, "is not in the valid range")?;

    // Without a certificate: 401 with a Status; the open endpoints still answer.
    let anon = Http::new(&c, false)?;
    let r = anon.get(&cms)?;
    eq(
        status(&r, 401, "Unauthorized")?.as_str(),
        "Unauthorized",
        "anonymous",
    )?;
    status(
        &anon.json(
            "POST",
            &cms,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "anon"}}),
        )?,
        401,
        "Unauthorized",
    )?;
    let (code, _, body) = anon.send("GET", "/healthz", "text/plain", Vec::new())?;
    eq(&(code, body), &(200, json!("ok")), "anonymous /healthz")?;
    let (code, v) = anon.get("/version")?;
    eq(&code, &200, "anonymous /version")?;
    ensure!(v["gitVersion"].is_string(), "{v}");

    // Nothing but the merge patch changed anything.
    let items = api.get(&cms)?.1["items"].clone();
    let names = |items: &Value| -> Vec<String> {
        items
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
            .filter(|n| n != "kube-root-ca.crt")
            .collect()
    };
    eq(
        &names(&items),
        &names(&list_before),
        "configmaps after the bad requests",
    )?;
    eq(
        &api.get(&format!("{cms}/existing"))?.1["data"],
        &json!({"a": "2"}),
        "data after the bad requests",
    )?;
    let (_, svc_list) = api.get(&svcs)?;
    eq(
        &svc_list["items"],
        &json!([]),
        "services after the bad requests",
    )?;
    for n in ["default", "kube-system"] {
        let (code, v) = api.get(&format!("/api/v1/namespaces/{n}"))?;
        eq(
            &(code, v["status"]["phase"].clone()),
            &(200, json!("Active")),
            n,
        )?;
    }
    Ok(())
}

#[test]
fn create_token_authenticates_kubectl() -> Result<()> {
    let c = Cluster::up("kc-token")?;
    let ca = c.apiserver_dir().join("pki").join("ca.crt");
    let ca = ca.to_string_lossy().into_owned();
    let url = c.url();
    each_kubectl(&c, "token", |kc| {
        // Only the token: no client certificate from the kubeconfig.
        let with_token = |token: &str, args: &[&str]| -> Result<Output> {
            let mut a = vec![
                "--kubeconfig",
                "/dev/null",
                "--server",
                url.as_str(),
                "--certificate-authority",
                ca.as_str(),
                "--token",
                token,
            ];
            a.extend_from_slice(args);
            kc.run(&a, None)
        };
        let token = kc.ok(&["create", "token", "default"])?.trim().to_string();
        eq(&token.split('.').count(), &3, "a JWT")?;
        kins_tests::ok(with_token(&token, &["get", "pods"])?).context("get pods with the token")?;
        let err = kins_tests::fails(with_token("not-a-token", &["get", "pods"])?)?;
        has(&err, "Unauthorized")?;

        // --duration and --audience reach the claims.
        let other = kc
            .ok(&[
                "create",
                "token",
                "default",
                "--duration",
                "15m",
                "--audience",
                "vault",
            ])?
            .trim()
            .to_string();
        let err = kins_tests::fails(with_token(&other, &["get", "pods"])?)?;
        has(&err, "Unauthorized")?;
        let err = kc.fails(&["create", "token", "default", "--duration", "1m"])?;
        has(&err, "may not specify a duration less than 10 minutes")?;
        let err = kc.fails(&["create", "token", "nobody"])?;
        has(&err, "serviceaccounts \"nobody\" not found")?;

        // Deleting the service account revokes the token.
        kc.ok(&["create", "serviceaccount", "robot"])?;
        let robot = kc.ok(&["create", "token", "robot"])?.trim().to_string();
        kins_tests::ok(with_token(&robot, &["get", "pods"])?).context("robot's token")?;
        kc.ok(&["delete", "serviceaccount", "robot"])?;
        let err = kins_tests::fails(with_token(&robot, &["get", "pods"])?)?;
        has(&err, "Unauthorized")?;
        Ok(())
    })
}
