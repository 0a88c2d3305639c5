//! Tests of the image store. Whiteout devices, the opaque xattr, chroots and overlay
//! mounts need root (tests run as root here and in CI).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::*;

/// One entry of a test tar.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    /// path, bytes, mode, uid, gid, mtime
    FileAttrs(&'a str, &'a [u8], u32, u64, u64, u64),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).expect("tar");
            }
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).expect("tar");
            }
            E::FileAttrs(p, data, mode, uid, gid, mtime) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_mtime(*mtime);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).expect("tar");
            }
            E::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).expect("tar");
            }
            E::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).expect("tar");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// An archive (docker save or OCI layout) from named files.
fn archive_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).expect("tar");
    }
    b.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(bytes).expect("gzip");
    g.finish().expect("gzip")
}

fn hex(bytes: &[u8]) -> String {
    sha256_digest(bytes)[7..].to_string()
}

/// Lower layer (stored gzip): files, a symlink, a hard link, an owned file, an opaque dir.
fn lower_layer() -> Vec<u8> {
    tar_of(&[
        E::Dir("etc/"),
        E::File("etc/keep.txt", b"keep\n"),
        E::File("etc/gone.txt", b"gone\n"),
        E::Hard("etc/hard.txt", "etc/keep.txt"),
        E::Symlink("etc/link", "keep.txt"),
        E::FileAttrs("srv/app", b"#!/bin/sh\n", 0o4750, 1000, 1001, 12345),
        E::Dir("opq/"),
        E::File("opq/old.txt", b"old\n"),
    ])
}

/// Upper layer (stored plain): deletes etc/gone.txt, makes opq/ opaque.
fn upper_layer() -> Vec<u8> {
    tar_of(&[
        E::File("etc/.wh.gone.txt", b""),
        E::File("opq/.wh..wh..opq", b""),
        E::File("opq/new.txt", b"new\n"),
    ])
}

fn config_of(layers: &[&[u8]]) -> Vec<u8> {
    let ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Env": ["PATH=/bin", "A=1"],
            "Entrypoint": ["/srv/app"],
            "Cmd": ["serve"],
            "WorkingDir": "/srv",
            "User": "1000",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .expect("json")
}

/// A `docker save` archive of foo:1 (layer 1 gzip, layer 2 plain).
fn docker_archive(tags: &[&str]) -> Vec<u8> {
    let (l1, l2) = (lower_layer(), upper_layer());
    let config = config_of(&[&l1, &l2]);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", hex(&config)),
        "RepoTags": tags,
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]);
    archive_of(&[
        ("aaa/layer.tar".into(), gzip(&l1)),
        ("bbb/layer.tar".into(), l2),
        (format!("{}.json", hex(&config)), config),
        (
            "manifest.json".into(),
            serde_json::to_vec(&manifest).expect("json"),
        ),
    ])
}

/// An OCI-layout archive of `name` with the same layers.
fn oci_archive(name: &str) -> Vec<u8> {
    let (l1, l2) = (lower_layer(), upper_layer());
    let config = config_of(&[&l1, &l2]);
    let l1gz = gzip(&l1);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": sha256_digest(&l1gz), "size": l1gz.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": sha256_digest(&l2), "size": l2.len()},
        ],
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    }))
    .expect("json");
    archive_of(&[
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index),
        (format!("blobs/sha256/{}", hex(&l1gz)), l1gz),
        (format!("blobs/sha256/{}", hex(&l2)), l2),
        (format!("blobs/sha256/{}", hex(&config)), config),
        (format!("blobs/sha256/{}", hex(&manifest)), manifest),
    ])
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(&dir.path().join("images")).expect("open");
    (dir, s)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Nothing half-imported: no refs, no blobs, no layers, an empty tmp/.
fn assert_empty(s: &ImageStore) {
    assert!(s.list().expect("list").is_empty());
    for d in ["blobs/sha256", "layers", "tmp"] {
        assert_eq!(names(&s.root().join(d)), Vec::<String>::new(), "{d}");
    }
}

fn check_load_error(input: &[u8], expect: &str) {
    let (_d, s) = store();
    let err = s.load_archive(input).expect_err("must fail");
    assert_eq!(err.to_string(), expect);
    assert_empty(&s);
}

/// Checks the two test layers, unpacked, as overlayfs lower dirs.
fn check_test_image(img: &ResolvedImage) {
    assert_eq!(img.layers.len(), 2);
    let (lower, upper) = (&img.layers[0], &img.layers[1]);
    assert!(lower.is_absolute());
    assert_eq!(
        fs::read(lower.join("etc/keep.txt")).expect("keep"),
        b"keep\n"
    );
    let keep = fs::metadata(lower.join("etc/keep.txt")).expect("meta");
    let hard = fs::metadata(lower.join("etc/hard.txt")).expect("meta");
    assert_eq!(keep.ino(), hard.ino(), "hard link shares the inode");
    assert_eq!(
        fs::read_link(lower.join("etc/link")).expect("link"),
        Path::new("keep.txt")
    );
    let app = fs::metadata(lower.join("srv/app")).expect("app");
    assert_eq!(app.permissions().mode() & 0o7777, 0o4750);
    assert_eq!((app.uid(), app.gid(), app.mtime()), (1000, 1001, 12345));
    assert_eq!(keep.mtime(), 1_000_000);
    // Whiteout: a 0:0 character device named like the deleted file.
    let wh = fs::symlink_metadata(upper.join("etc/gone.txt")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!upper.join("etc/.wh.gone.txt").exists());
    // Opaque dir.
    assert_eq!(
        xattr::get(upper.join("opq"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );
    assert!(!upper.join("opq/.wh..wh..opq").exists());
    assert_eq!(
        img.config,
        ImageConfig {
            entrypoint: vec!["/srv/app".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: "/srv".into(),
            user: "1000".into(),
            exposed_ports: vec!["53/udp".into(), "8080/tcp".into()],
            stop_signal: Some("SIGTERM".into()),
        }
    );
    assert_eq!(img.built_from, None);
}

/// Mounts the image's layers with overlayfs in a private mount namespace and runs
/// `command` chrooted in it; returns (success, stdout, stderr).
fn run_in(img: &ResolvedImage, command: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upper, work, merged) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).expect("mkdir");
    }
    let lower: Vec<String> = img
        .layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let quoted: Vec<String> = command
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "set -e; mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {m}; \
         mount --rbind /dev {m}/dev; mount -t proc proc {m}/proc; exec chroot {m} {}",
        lower.join(":"),
        upper.display(),
        work.display(),
        quoted.join(" "),
        m = merged.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn docker_save_archive_loads_lists_resolves_unpacks() {
    let (_d, s) = store();
    let refs = s
        .load_archive(&docker_archive(&["foo:1", "example.com/x/foo:2"])[..])
        .expect("load");
    assert_eq!(refs, vec!["docker.io/library/foo:1", "example.com/x/foo:2"]);
    let list = s.list().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].reference, "docker.io/library/foo:1");
    assert_eq!(list[0].created.as_deref(), Some("2024-01-02T03:04:05Z"));
    assert_eq!(list[0].id, list[1].id);
    assert!(list[0].size > 0);
    let img = s.resolve("foo:1").expect("resolve");
    assert!(!img.built_now);
    assert_eq!(img.reference, "docker.io/library/foo:1");
    assert_eq!(img.id, list[0].id);
    check_test_image(&img);
    // The real thing: overlayfs applies the whiteout and the opaque dir.
    let dir = tempfile::tempdir().expect("tempdir");
    let merged = dir.path().join("m");
    fs::create_dir(&merged).expect("mkdir");
    let lower = format!("{}:{}", img.layers[1].display(), img.layers[0].display());
    let script = format!(
        "mount -t overlay overlay -o lowerdir={lower} {m} && ls -a {m}/etc {m}/opq",
        m = merged.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ls.contains("keep.txt") && !ls.contains("gone.txt"), "{ls}");
    assert!(ls.contains("new.txt") && !ls.contains("old.txt"), "{ls}");
    // Loading again is idempotent.
    s.load_archive(&docker_archive(&["foo:1"])[..])
        .expect("reload");
    assert_eq!(s.list().expect("list").len(), 2);
}

#[test]
fn gzipped_docker_save_archive_loads() {
    let (_d, s) = store();
    let refs = s
        .load_archive(&gzip(&docker_archive(&["foo:gz"]))[..])
        .expect("load");
    assert_eq!(refs, vec!["docker.io/library/foo:gz"]);
}

#[test]
fn oci_layout_archive_loads() {
    let (_d, s) = store();
    let refs = s
        .load_archive(&oci_archive("localhost/bar:3")[..])
        .expect("load");
    assert_eq!(refs, vec!["localhost/bar:3"]);
    let img = s.resolve("localhost/bar:3").expect("resolve");
    check_test_image(&img);
    // Resolvable by manifest digest too.
    let manifest = fs::read_to_string(s.root().join("refs.json")).expect("refs");
    let refs: BTreeMap<String, String> = serde_json::from_str(&manifest).expect("json");
    let digest = &refs["localhost/bar:3"];
    let by_digest = s
        .resolve(&format!("localhost/bar@{digest}"))
        .expect("by digest");
    assert_eq!(by_digest.id, img.id);
}

/// Docker 25+ `docker save`: an OCI layout plus a manifest.json naming blobs/sha256/….
#[test]
fn oci_based_docker_save_archive_loads() {
    let (l1, l2) = (lower_layer(), upper_layer());
    let config = config_of(&[&l1, &l2]);
    let l1gz = gzip(&l1);
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(&config)),
        "RepoTags": ["new:25"],
        "Layers": [format!("blobs/sha256/{}", hex(&l1gz)), format!("blobs/sha256/{}", hex(&l2))],
    }]);
    let mut files = vec![(
        "manifest.json".to_string(),
        serde_json::to_vec(&manifest).expect("json"),
    )];
    let oci = oci_archive("new:25");
    let mut a = tar::Archive::new(&oci[..]);
    for e in a.entries().expect("tar") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("read");
        files.push((name, data));
    }
    let (_d, s) = store();
    let refs = s.load_archive(&archive_of(&files)[..]).expect("load");
    assert_eq!(refs, vec!["docker.io/library/new:25"]);
    check_test_image(&s.resolve("new:25").expect("resolve"));
    // A blob whose name does not match its content is refused.
    let bad: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(n, d)| {
            if n.ends_with(&hex(&l2)) {
                (n, l1.clone())
            } else {
                (n, d)
            }
        })
        .collect();
    let (_d, s) = store();
    let err = s.load_archive(&archive_of(&bad)[..]).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        format!(
            "blob {}: digest mismatch: expected {}, got {}",
            sha256_digest(&l2),
            sha256_digest(&l2),
            sha256_digest(&l1)
        )
    );
    assert_empty(&s);
}

/// The agents of several nodes resolving one image at once: one builds, all get it.
#[test]
fn concurrent_resolves_build_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("images");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = ImageStore::open(&root).expect("open");
                s.resolve("busybox:concurrent").expect("resolve")
            })
        })
        .collect();
    let imgs: Vec<ResolvedImage> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(imgs.iter().filter(|i| i.built_now).count(), 1);
    assert!(imgs
        .iter()
        .all(|i| i.id == imgs[0].id && i.layers == imgs[0].layers));
}

#[test]
fn bad_archives_leave_nothing() {
    let full = docker_archive(&["foo:1"]);
    // Cut inside the first layer's data.
    check_load_error(&full[..600], "layer aaa/layer.tar is truncated");
    check_load_error(&full[..full.len() / 2], "layer bbb/layer.tar is truncated");
    // A layer whose own tar stops in the middle of a file.
    let l1 = lower_layer();
    let short = &l1[..700];
    let config = config_of(&[short]);
    let manifest = serde_json::json!([{
        "Config": "c.json", "RepoTags": ["foo:1"], "Layers": ["a.tar"],
    }]);
    check_load_error(
        &archive_of(&[
            ("a.tar".into(), gzip(short)),
            ("c.json".into(), config),
            (
                "manifest.json".into(),
                serde_json::to_vec(&manifest).expect("json"),
            ),
        ]),
        &format!("layer {} is truncated", sha256_digest(&gzip(short))),
    );
    check_load_error(b"", "not an image archive: the input is empty");
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = {
        let (_d, s) = store();
        let e = s.load_archive(&random[..]).expect_err("random");
        assert_empty(&s);
        e.to_string()
    };
    assert!(
        err.starts_with("not an image archive: not a tar file"),
        "{err}"
    );
    check_load_error(
        &archive_of(&[("hello.txt".into(), b"hi".to_vec())]),
        "not an image archive: no manifest.json or index.json",
    );
    // A layer whose content does not match the config's diff_id.
    let (l1, l2) = (lower_layer(), upper_layer());
    let config = config_of(&[&l1, &l1]);
    let manifest = serde_json::json!([{
        "Config": "c.json", "RepoTags": ["foo:1"], "Layers": ["a.tar", "b.tar"],
    }]);
    let bad = archive_of(&[
        ("a.tar".into(), l1.clone()),
        ("b.tar".into(), l2.clone()),
        ("c.json".into(), config),
        (
            "manifest.json".into(),
            serde_json::to_vec(&manifest).expect("json"),
        ),
    ]);
    check_load_error(
        &bad,
        &format!(
            "layer {}: diff_id mismatch: the config says {}, the layer is {}",
            sha256_digest(&l2),
            sha256_digest(&l1),
            sha256_digest(&l2)
        ),
    );
    // An OCI blob whose content does not match its name.
    let mut oci = oci_archive("x:1");
    let pos = oci
        .windows(4)
        .position(|w| w == b"new\n")
        .expect("the plain layer holds opq/new.txt");
    oci[pos] = b'N';
    let err = {
        let (_d, s) = store();
        let e = s.load_archive(&oci[..]).expect_err("corrupt blob");
        assert_empty(&s);
        e.to_string()
    };
    assert!(err.contains("digest mismatch"), "{err}");
    // manifest.json naming a file that is not there.
    let missing = archive_of(&[(
        "manifest.json".into(),
        br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":[]}]"#.to_vec(),
    )]);
    check_load_error(
        &missing,
        "bad image archive: manifest.json names c.json, which is not in the archive",
    );
}

#[test]
fn layers_cannot_escape_their_root() {
    let check = |layer: Vec<u8>, expect: &str| {
        let config = config_of(&[&layer]);
        let manifest = serde_json::json!([{
            "Config": "c.json", "RepoTags": ["evil:1"], "Layers": ["l.tar"],
        }]);
        let a = archive_of(&[
            ("l.tar".into(), layer.clone()),
            ("c.json".into(), config),
            (
                "manifest.json".into(),
                serde_json::to_vec(&manifest).expect("json"),
            ),
        ]);
        let (_d, s) = store();
        let err = s.load_archive(&a[..]).expect_err("unsafe layer");
        assert_eq!(
            err.to_string(),
            expect.replace("{l}", &sha256_digest(&layer))
        );
        assert_empty(&s);
    };
    // The tar crate refuses to write "..", so build the header by hand.
    let mut dotdot = tar_of(&[E::File("xx/evil", b"x")]);
    dotdot[..7].copy_from_slice(b"../evil");
    let mut h = tar::Header::new_gnu();
    h.as_mut_bytes().copy_from_slice(&dotdot[..512]);
    h.set_cksum();
    dotdot[..512].copy_from_slice(h.as_bytes());
    check(
        dotdot,
        "layer {l}: entry \"../evil\" escapes the layer root: path contains \"..\"",
    );
    check(
        tar_of(&[E::Symlink("s", "/etc"), E::File("s/passwd", b"owned")]),
        "layer {l}: entry \"s/passwd\" escapes the layer root: s is a symlink",
    );
    check(
        tar_of(&[E::Hard("h", "etc/shadow")]),
        "layer {l}: entry \"h\": hard link to etc/shadow, which is not a file of this layer",
    );
}

#[test]
fn remove_collects_garbage() {
    let (_d, s) = store();
    s.load_archive(&docker_archive(&["foo:1"])[..])
        .expect("load");
    // bar:2 shares both layers, baz:3 only the upper one.
    s.load_archive(&oci_archive("bar:2")[..]).expect("load");
    let l2 = upper_layer();
    let config = config_of(&[&l2]);
    let manifest = serde_json::json!([{
        "Config": "c.json", "RepoTags": ["baz:3"], "Layers": ["b.tar"],
    }]);
    s.load_archive(
        &archive_of(&[
            ("b.tar".into(), l2.clone()),
            ("c.json".into(), config),
            (
                "manifest.json".into(),
                serde_json::to_vec(&manifest).expect("json"),
            ),
        ])[..],
    )
    .expect("load");
    assert_eq!(names(&s.root().join("layers")).len(), 2);
    s.remove("foo:1").expect("remove");
    assert_eq!(
        names(&s.root().join("layers")).len(),
        2,
        "bar:2 still uses them"
    );
    assert!(s.resolve("bar:2").is_ok());
    s.remove("bar:2").expect("remove");
    assert_eq!(
        names(&s.root().join("layers")),
        vec![hex(&l2)],
        "only baz:3's layer is left"
    );
    let blobs = names(&s.root().join("blobs/sha256"));
    assert_eq!(
        blobs.len(),
        3,
        "manifest, config, layer of baz:3: {blobs:?}"
    );
    // A layer under a live overlay mount survives its image's removal.
    let img = s.resolve("baz:3").expect("resolve");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "mount -t overlay overlay -o lowerdir={}:{} {} && echo mounted && (read x || true)",
        img.layers[0].display(),
        dir.path().display(),
        dir.path().display()
    );
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line, "mounted\n");
    s.remove("docker.io/library/baz:3").expect("remove");
    assert_eq!(
        names(&s.root().join("layers")),
        vec![hex(&l2)],
        "still mounted"
    );
    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    s.load_archive(&oci_archive("tmp:1")[..]).expect("load");
    s.remove("tmp:1").expect("remove");
    let err = s.remove("foo:1").expect_err("gone");
    assert_eq!(err.to_string(), "no such image: docker.io/library/foo:1");
    assert_empty(&s);
}

#[test]
fn unknown_image_is_a_pull_error() {
    let (_d, s) = store();
    let err = s.resolve("foo:1").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "failed to pull image \"docker.io/library/foo:1\": no registry is reachable from kins: \
         load it with \"kins image load\" (known offline images: nginx, curlimages/curl, busybox, \
         registry.k8s.io/e2e-test-images/jessie-dnsutils, kins.dev/kins-dns, kins.dev/kins-ingress, \
         registry.k8s.io/e2e-test-images/agnhost)"
    );
    // A pinned digest is never satisfied by a host build.
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert!(matches!(
        s.resolve(&format!("nginx@{d}")),
        Err(ImageError::NotAvailable { .. })
    ));
}

#[test]
fn recipes_parse_and_missing_host_files_name_the_package() {
    assert_eq!(build::recipes().len(), 7, "every recipe file parses");
    let mut recipe = build::recipe_named("nginx").expect("nginx").clone();
    recipe.binaries[0].path = "/usr/sbin/nginx-not-here".into();
    let err = build::build(&recipe, "docker.io/library/nginx:latest").expect_err("missing");
    assert_eq!(
        err.to_string(),
        "nginx-light is not installed on this host (missing /usr/sbin/nginx-not-here): \
         apt-get install nginx-light"
    );
}

#[test]
fn host_builds_are_deterministic() {
    let recipe = build::recipe_named("busybox").expect("busybox");
    let a = build::build(recipe, "docker.io/library/busybox:latest").expect("build");
    let b = build::build(recipe, "docker.io/library/busybox:latest").expect("build");
    assert!(a == b, "two builds differ");
}

#[test]
fn nginx_image_builds_and_passes_config_test() {
    let (_d, s) = store();
    let img = s.resolve("nginx:1.25").expect("build nginx");
    assert!(img.built_now);
    assert_eq!(img.reference, "docker.io/library/nginx:1.25");
    let from = img.built_from.clone().expect("built_from");
    assert!(from.starts_with("host packages: nginx"), "{from}");
    assert!(from.contains("libc6 "), "{from}");
    assert_eq!(img.config.cmd, ["nginx", "-g", "daemon off;"]);
    assert_eq!(img.config.exposed_ports, ["80/tcp"]);
    assert_eq!(img.config.stop_signal.as_deref(), Some("SIGQUIT"));
    let root = &img.layers[0];
    assert_eq!(
        fs::read_link(root.join("var/log/nginx/access.log")).expect("link"),
        Path::new("/dev/stdout")
    );
    assert!(
        fs::read_to_string(root.join("usr/share/nginx/html/index.html"))
            .expect("index")
            .contains("Welcome to nginx!")
    );
    let tmp = fs::metadata(root.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    let (ok, _, err) = run_in(&img, &["/usr/sbin/nginx", "-t"]);
    assert!(ok, "nginx -t: {err}");
    assert!(err.contains("test is successful"), "{err}");
    // Second resolve: a store hit.
    let again = s.resolve("docker.io/library/nginx:1.25").expect("hit");
    assert!(!again.built_now);
    assert_eq!(again.id, img.id);
    let list = s.list().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].built_from, Some(from));
}

#[test]
fn curl_image_runs_its_entrypoint() {
    let (_d, s) = store();
    let img = s.resolve("curlimages/curl:7.79.1").expect("build curl");
    assert!(img.built_now);
    assert_eq!(img.config.entrypoint, ["/entrypoint.sh"]);
    assert_eq!(img.config.cmd, ["curl"]);
    assert_eq!(img.config.user, "100:101");
    let (ok, out, err) = run_in(&img, &["/entrypoint.sh", "/bin/sh", "-c", "echo ok"]);
    assert!(ok, "{err}");
    assert_eq!(out, "ok\n");
    let (ok, out, err) = run_in(&img, &["/entrypoint.sh", "--version"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("curl "), "{out}");
    let (ok, out, _) = run_in(&img, &["/bin/sleep", "0"]);
    assert!(ok, "{out}");
    assert!(!s.resolve("curlimages/curl:7.79.1").expect("hit").built_now);
}

#[test]
fn busybox_image_runs_a_shell() {
    let (_d, s) = store();
    let img = s.resolve("busybox").expect("build busybox");
    assert_eq!(img.config.cmd, ["sh"]);
    let (ok, out, err) = run_in(&img, &["sh", "-c", "echo hi && ls /usr/bin/env && id -u"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hi\n/usr/bin/env\n0\n");
    // build_host replaces the :latest image with an identical one.
    let again = s.build_host("busybox").expect("build_host");
    assert_eq!(again.id, img.id);
}

#[test]
fn dnsutils_image_has_dig_and_getent() {
    let (_d, s) = store();
    let img = s
        .resolve("registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3")
        .expect("build dnsutils");
    let (ok, out, err) = run_in(
        &img,
        &["sh", "-c", "dig -v 2>&1; getent hosts localhost || true"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("DiG 9."), "{out}");
}

#[test]
fn the_dns_image_is_the_running_binary_and_follows_it() {
    let (_d, s) = store();
    let img = s
        .resolve("kins.dev/kins-dns:0.1.0")
        .expect("build kins-dns");
    assert!(img.built_now);
    assert_eq!(img.config.entrypoint, ["/usr/local/bin/kins", "dns"]);
    let from = img.built_from.clone().expect("built_from");
    let fp = build::kins_fingerprint().expect("fingerprint");
    assert!(from.starts_with(&fp), "{from}");
    assert!(from.contains("libc6 "), "{from}");
    // The binary in the image is the running one (here: this test program).
    let exe = std::env::current_exe().expect("exe");
    assert!(
        fs::read(img.layers[0].join("usr/local/bin/kins")).expect("binary in the image")
            == fs::read(&exe).expect("exe"),
        "the image holds another binary"
    );
    assert!(!s.resolve("kins.dev/kins-dns:0.1.0").expect("hit").built_now);
    // Built from another binary: stale; a user's own image under the name never is.
    let recipe = build::recipe_named("kins.dev/kins-dns").expect("recipe");
    assert!(build::stale(
        recipe,
        Some("the kins binary 0.0.1 of 1 bytes modified at 0; host packages: libc6")
    ));
    assert!(!build::stale(recipe, Some(&from)));
    assert!(!build::stale(recipe, None));
    assert!(!build::stale(
        build::recipe_named("busybox").expect("busybox"),
        Some("x")
    ));
}

#[test]
fn the_agnhost_image_is_the_kins_binary_at_the_upstream_path() {
    let (_d, s) = store();
    // Any tag of the upstream name resolves to the recipe.
    let img = s
        .resolve("registry.k8s.io/e2e-test-images/agnhost:2.53")
        .expect("build agnhost");
    assert!(img.built_now);
    assert_eq!(img.config.entrypoint, ["/agnhost"]);
    let from = img.built_from.clone().expect("built_from");
    assert!(
        from.starts_with(&build::kins_fingerprint().expect("fingerprint")),
        "{from}"
    );
    let exe = std::env::current_exe().expect("exe");
    assert!(
        fs::read(img.layers[0].join("agnhost")).expect("/agnhost in the image")
            == fs::read(&exe).expect("exe"),
        "the image holds another binary"
    );
    let (ok, out, err) = run_in(&img, &["sh", "-c", "echo hi"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hi\n");
}
