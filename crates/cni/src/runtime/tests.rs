use std::sync::Mutex;

use super::*;

/// Records every invocation as `COMMAND type prevResult-ip runtimeConfig`, answers ADD
/// with a result naming the plugin, and fails the types listed in `fail`.
#[derive(Default)]
struct FakeExec {
    calls: Mutex<Vec<String>>,
    fail: Vec<&'static str>,
    missing: Vec<&'static str>,
    versions: Vec<&'static str>,
}

impl Exec for FakeExec {
    fn find(&self, ty: &str, path: &[PathBuf]) -> Result<PathBuf> {
        if self.missing.contains(&ty) {
            return Err(RuntimeError::NotFound {
                ty: ty.into(),
                path: join_path(path, " "),
            });
        }
        Ok(PathBuf::from("/fake").join(ty))
    }
    fn run(&self, ty: &str, _: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>> {
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let cmd = get("CNI_COMMAND");
        let conf: Value = serde_json::from_slice(stdin).expect("ok");
        let mut line = format!("{cmd} {ty}");
        if let Some(p) = conf.get("prevResult") {
            line.push_str(&format!(" prev={}", p["by"].as_str().unwrap_or("?")));
        }
        if let Some(rc) = conf.get("runtimeConfig") {
            line.push_str(&format!(" rc={rc}"));
        }
        if let Some(v) = conf.get("cni.dev/valid-attachments") {
            line.push_str(&format!(" valid={v}"));
        }
        if cmd == "ADD" {
            line.push_str(&format!(" args={}", get("CNI_ARGS")));
        }
        self.calls.lock().expect("ok").push(line);
        if cmd == "VERSION" {
            let v = if self.versions.is_empty() {
                vec!["0.4.0", "1.0.0", "1.1.0"]
            } else {
                self.versions.clone()
            };
            return Ok(json!({"cniVersion": "1.1.0", "supportedVersions": v})
                .to_string()
                .into_bytes());
        }
        if self.fail.contains(&ty) {
            return Err(RuntimeError::Plugin {
                ty: ty.into(),
                command: cmd,
                code: 11,
                msg: "no luck".into(),
                details: None,
            });
        }
        Ok(match cmd.as_str() {
            "ADD" => json!({"cniVersion": "1.1.0", "by": ty, "ips": [{"address": "10.0.0.2/24"}]})
                .to_string()
                .into_bytes(),
            _ => Vec::new(),
        })
    }
}

fn list(version: &str) -> ConfList {
    let text = json!({"cniVersion": version, "name": "net1", "plugins": [
        {"type": "main", "ipam": {"type": "host-local"}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}},
    ]});
    ConfList::parse(text.to_string().as_bytes(), "test").expect("ok")
}

fn att(id: &str) -> Attachment {
    let mut caps = Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]),
    );
    Attachment {
        container_id: id.into(),
        netns: "/run/netns/x".into(),
        if_name: "eth0".into(),
        args: vec![
            ("K8S_POD_NAME".into(), "web".into()),
            ("IgnoreUnknown".into(), "1".into()),
        ],
        capability_args: caps,
    }
}

fn runtime(exec: FakeExec) -> (tempfile::TempDir, Runtime<FakeExec>) {
    let dir = tempfile::tempdir().expect("ok");
    let rt = Runtime {
        exec,
        path: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        cache_dir: dir.path().to_path_buf(),
    };
    (dir, rt)
}

fn calls(rt: &Runtime<FakeExec>) -> Vec<String> {
    std::mem::take(&mut *rt.exec.calls.lock().expect("ok"))
}

#[test]
fn add_chains_prev_results_and_gives_capabilities_only_to_who_asks() {
    let (_d, rt) = runtime(FakeExec::default());
    let res = rt.add(&list("1.0.0"), &att("c1")).expect("ok");
    assert_eq!(res["by"], "bandwidth");
    assert_eq!(
        calls(&rt),
        [
            "ADD main args=K8S_POD_NAME=web;IgnoreUnknown=1",
            r#"ADD portmap prev=main rc={"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]} args=K8S_POD_NAME=web;IgnoreUnknown=1"#,
            "ADD bandwidth prev=portmap args=K8S_POD_NAME=web;IgnoreUnknown=1",
        ]
    );
}

#[test]
fn del_runs_in_reverse_with_what_add_ran_even_after_the_list_changed() {
    let (_d, rt) = runtime(FakeExec::default());
    rt.add(&list("1.0.0"), &att("c1")).expect("ok");
    calls(&rt);
    // The node's file changed meanwhile, and the pod (with its ports) is gone.
    let other = ConfList::parse(
        br#"{"cniVersion":"1.0.0","name":"net1","type":"other"}"#,
        "t",
    )
    .expect("ok");
    let mut bare = att("c1");
    bare.capability_args.clear();
    rt.del(&other, &bare).expect("ok");
    assert_eq!(
        calls(&rt),
        [
            "DEL bandwidth prev=bandwidth",
            r#"DEL portmap prev=bandwidth rc={"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]}"#,
            "DEL main prev=bandwidth",
        ]
    );
    // The cache entry went with it: a second DEL uses the given list, without prevResult.
    rt.del(&other, &bare).expect("ok");
    assert_eq!(calls(&rt), ["DEL other"]);
}

#[test]
fn a_failed_add_deletes_what_ran() {
    let (_d, rt) = runtime(FakeExec {
        fail: vec!["portmap"],
        ..Default::default()
    });
    let err = rt.add(&list("1.0.0"), &att("c1")).expect_err("should fail");
    assert_eq!(
        err.to_string(),
        r#"plugin type="portmap" failed (ADD): no luck"#
    );
    let c = calls(&rt);
    assert_eq!(c[2], "DEL bandwidth prev=main");
    assert_eq!(c[4], "DEL main prev=main");
    assert!(rt.cache_read("net1", &att("c1")).is_none());
}

#[test]
fn check_status_and_gc_by_version() {
    let (_d, rt) = runtime(FakeExec::default());
    rt.add(&list("1.1.0"), &att("c1")).expect("ok");
    rt.add(&list("1.1.0"), &att("c2")).expect("ok");
    calls(&rt);
    rt.check(&list("1.1.0"), &att("c1")).expect("ok");
    assert_eq!(calls(&rt).len(), 3);
    rt.status(&list("1.1.0")).expect("ok");
    assert_eq!(
        calls(&rt),
        ["STATUS main", "STATUS portmap", "STATUS bandwidth"]
    );
    let removed = rt
        .gc(&list("1.1.0"), &[("c1".into(), "eth0".into())])
        .expect("ok");
    assert_eq!(removed, ["c2"]);
    assert_eq!(
        calls(&rt)[0],
        r#"GC main valid=[{"containerID":"c1","ifname":"eth0"}]"#
    );
    // 1.0.0 lists have neither STATUS nor GC; CHECK without a cached result is an error.
    rt.status(&list("1.0.0")).expect("ok");
    rt.gc(&list("1.0.0"), &[]).expect("ok");
    assert!(calls(&rt).is_empty());
    assert!(rt.check(&list("1.1.0"), &att("c9")).is_err());
    assert!(rt.check(&list("0.3.1"), &att("c9")).is_ok());
}

#[test]
fn validate_names_missing_plugins_and_versions() {
    let (_d, rt) = runtime(FakeExec {
        missing: vec!["bandwidth"],
        ..Default::default()
    });
    assert_eq!(
        rt.validate(&list("1.0.0"))
            .expect_err("should fail")
            .to_string(),
        r#"failed to find plugin "bandwidth" in path [/opt/cni/bin /usr/lib/cni]"#
    );
    let (_d, rt) = runtime(FakeExec {
        versions: vec!["0.4.0", "1.0.0"],
        ..Default::default()
    });
    assert_eq!(
        rt.validate(&list("1.1.0"))
            .expect_err("should fail")
            .to_string(),
        r#"plugin type="main" does not support the configuration's cniVersion 1.1.0 (it supports 0.4.0, 1.0.0)"#
    );
    rt.validate(&list("1.0.0")).expect("ok");
}

#[test]
fn malformed_lists_say_what_is_wrong() {
    for (text, want) in [
        ("{", "not JSON"),
        (r#"{"name":"a","plugins":[{"type":"x"}]}"#, "no cniVersion"),
        (
            r#"{"cniVersion":"one","name":"a","plugins":[{"type":"x"}]}"#,
            "not a version",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"x"}]}"#,
            "name",
        ),
        (r#"{"cniVersion":"1.0.0","name":"a","plugins":[]}"#, "empty"),
        (
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"mtu":1}]}"#,
            "plugins[0] has no \"type\"",
        ),
        (r#"{"cniVersion":"1.0.0","name":"a"}"#, "no \"plugins\""),
    ] {
        let e = ConfList::parse(text.as_bytes(), "f.conflist")
            .expect_err("should fail")
            .to_string();
        assert!(
            e.starts_with("network configuration f.conflist: ") && e.contains(want),
            "{text}: {e}"
        );
    }
    let one =
        ConfList::parse(br#"{"cniVersion":"0.3.1","name":"a","type":"bridge"}"#, "x").expect("ok");
    assert_eq!(one.types(), ["bridge"]);
}

#[test]
fn the_real_exec_finds_runs_and_reads_error_objects() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("ok");
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("ok");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("ok");
    };
    write(
        "echoer",
        r#"read -r conf; printf '{"cmd":"%s","args":"%s","conf":%s}' "$CNI_COMMAND" "$CNI_ARGS" "$conf""#,
    );
    write(
        "failer",
        r#"echo '{"code":7,"msg":"bad config","details":"field x"}'; exit 1"#,
    );
    write("crasher", "echo boom >&2; exit 3");
    std::fs::write(dir.path().join("notexec"), "").expect("ok");
    let rt = Runtime {
        exec: ProcessExec,
        path: vec!["/nonexistent".into(), dir.path().to_path_buf()],
        cache_dir: dir.path().join("cache"),
    };
    let l =
        ConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"echoer"}"#, "x").expect("ok");
    let r = rt.add(&l, &att("c1")).expect("ok");
    assert_eq!(r["cmd"], "ADD");
    assert_eq!(r["args"], "K8S_POD_NAME=web;IgnoreUnknown=1");
    assert_eq!(r["conf"]["name"], "n");
    for (ty, want) in [
        (
            "failer",
            r#"plugin type="failer" failed (ADD): bad config (field x)"#,
        ),
        (
            "crasher",
            r#"plugin type="crasher" (ADD): exit status: 3 with no error object: boom"#,
        ),
    ] {
        let l = ConfList::parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"{ty}"}}"#).as_bytes(),
            "x",
        )
        .expect("ok");
        assert_eq!(
            rt.add(&l, &att("c2")).expect_err("should fail").to_string(),
            want
        );
    }
    for ty in ["notexec", "../echoer", "nosuch"] {
        let e = rt
            .exec
            .find(ty, &rt.path)
            .expect_err("should fail")
            .to_string();
        assert!(
            e.starts_with(&format!(
                "failed to find plugin {ty:?} in path [/nonexistent "
            )),
            "{e}"
        );
    }
}
