//! The container's filesystem as a list of steps: `plan_mounts` is pure (unit-tested
//! against expected text), `apply` runs one step in the child, inside its own mount
//! namespace. Paths inside the container root are resolved without leaving it (a symlink
//! in an image cannot redirect a mount or a mkdir to the host).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{io_text, ContainerConfig, RuntimeError};

/// Host devices bind-mounted into the container's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// mount(NULL, "/", NULL, MS_REC|MS_PRIVATE): nothing propagates back to the host.
    MakeRprivate,
    Mkdir(PathBuf),
    /// An empty file (and its parents) to mount a file on.
    Touch(PathBuf),
    /// A directory or an empty file, whichever `like` is.
    MountPoint {
        target: PathBuf,
        like: PathBuf,
    },
    Mount {
        fstype: Option<String>,
        source: PathBuf,
        target: PathBuf,
        flags: MsFlags,
        data: Option<String>,
    },
    /// mount(NULL, target, NULL, flags|MS_REMOUNT) (with MS_BIND: per-mount flags only).
    Remount {
        target: PathBuf,
        flags: MsFlags,
    },
    Symlink {
        target: String,
        link: PathBuf,
    },
    /// chdir(root); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/").
    PivotRoot(PathBuf),
}

fn flag_names(flags: MsFlags) -> Vec<&'static str> {
    const NAMES: &[(MsFlags, &str)] = &[
        (MsFlags::MS_REMOUNT, "remount"),
        (MsFlags::MS_BIND, "bind"),
        (MsFlags::MS_REC, "rec"),
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_STRICTATIME, "strictatime"),
    ];
    NAMES
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect()
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::MakeRprivate => write!(f, "mount --make-rprivate /"),
            Step::Mkdir(p) => write!(f, "mkdir {}", p.display()),
            Step::Touch(p) => write!(f, "touch {}", p.display()),
            Step::MountPoint { target, like } => {
                write!(f, "mountpoint {} like {}", target.display(), like.display())
            }
            Step::Mount {
                fstype,
                source,
                target,
                flags,
                data,
            } => {
                write!(f, "mount")?;
                if let Some(t) = fstype {
                    write!(f, " -t {t}")?;
                }
                write!(f, " {} {}", source.display(), target.display())?;
                let mut opts: Vec<String> =
                    flag_names(*flags).into_iter().map(String::from).collect();
                opts.extend(data.clone());
                if !opts.is_empty() {
                    write!(f, " -o {}", opts.join(","))?;
                }
                Ok(())
            }
            Step::Remount { target, flags } => write!(
                f,
                "mount {} -o remount,{}",
                target.display(),
                flag_names(*flags).join(",")
            ),
            Step::Symlink { target, link } => write!(f, "ln -s {target} {}", link.display()),
            Step::PivotRoot(p) => write!(f, "pivot_root {}", p.display()),
        }
    }
}

/// `root` + `dest` lexically (the symlink-safe resolution happens in `apply`).
fn inside(root: &Path, dest: &str) -> PathBuf {
    root.join(dest.trim_start_matches('/'))
}

fn mount(fstype: &str, source: &str, target: PathBuf, flags: MsFlags, data: &str) -> Step {
    Step::Mount {
        fstype: Some(fstype.to_string()),
        source: PathBuf::from(source),
        target,
        flags,
        data: (!data.is_empty()).then(|| data.to_string()),
    }
}

fn bind(source: PathBuf, target: PathBuf, flags: MsFlags) -> Step {
    Step::Mount {
        fstype: None,
        source,
        target,
        flags: MsFlags::MS_BIND | flags,
        data: None,
    }
}

/// The steps that make the container's root, in order. Empty when `cfg.rootfs` is None
/// (the process then runs on the host's filesystem).
pub fn plan_mounts(cfg: &ContainerConfig) -> Result<Vec<Step>, RuntimeError> {
    let Some(rootfs) = &cfg.rootfs else {
        return Ok(Vec::new());
    };
    if rootfs.layers.is_empty() {
        return Err(RuntimeError::Config(
            "the root filesystem has no layer".into(),
        ));
    }
    for m in &cfg.mounts {
        if !m.destination.starts_with('/')
            || Path::new(&m.destination)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return Err(RuntimeError::Config(format!(
                "mount destination {:?} must be absolute without ..",
                m.destination
            )));
        }
    }
    let root = rootfs.merged.clone();
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let lower: Vec<String> = rootfs
        .layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let mut steps = vec![
        Step::MakeRprivate,
        Step::Mkdir(rootfs.upper.clone()),
        Step::Mkdir(rootfs.work.clone()),
        Step::Mkdir(root.clone()),
        mount(
            "overlay",
            "overlay",
            root.clone(),
            MsFlags::empty(),
            &format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                rootfs.upper.display(),
                rootfs.work.display()
            ),
        ),
        Step::Mkdir(inside(&root, "/proc")),
        mount(
            "proc",
            "proc",
            inside(&root, "/proc"),
            nosuid_nodev_noexec,
            "",
        ),
        Step::Mkdir(inside(&root, "/dev")),
        mount(
            "tmpfs",
            "tmpfs",
            inside(&root, "/dev"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            "mode=755,size=65536k",
        ),
    ];
    for dev in DEVICES {
        let target = inside(&root, &format!("/dev/{dev}"));
        steps.push(Step::Touch(target.clone()));
        steps.push(bind(
            PathBuf::from(format!("/dev/{dev}")),
            target,
            MsFlags::empty(),
        ));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        steps.push(Step::Symlink {
            target: target.to_string(),
            link: inside(&root, &format!("/dev/{link}")),
        });
    }
    steps.extend([
        Step::Mkdir(inside(&root, "/dev/pts")),
        mount(
            "devpts",
            "devpts",
            inside(&root, "/dev/pts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=620,gid=5",
        ),
        Step::Mkdir(inside(&root, "/dev/shm")),
        mount(
            "tmpfs",
            "shm",
            inside(&root, "/dev/shm"),
            nosuid_nodev_noexec,
            "mode=1777,size=65536k",
        ),
        Step::Mkdir(inside(&root, "/dev/mqueue")),
        mount(
            "mqueue",
            "mqueue",
            inside(&root, "/dev/mqueue"),
            nosuid_nodev_noexec,
            "",
        ),
        Step::Mkdir(inside(&root, "/sys")),
        mount(
            "sysfs",
            "sysfs",
            inside(&root, "/sys"),
            if cfg.privileged {
                nosuid_nodev_noexec
            } else {
                nosuid_nodev_noexec | MsFlags::MS_RDONLY
            },
            "",
        ),
    ]);
    for m in &cfg.mounts {
        let target = inside(&root, &m.destination);
        steps.push(Step::MountPoint {
            target: target.clone(),
            like: m.source.clone(),
        });
        steps.push(bind(m.source.clone(), target.clone(), MsFlags::MS_REC));
        if m.read_only {
            steps.push(Step::Remount {
                target,
                flags: MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            });
        }
    }
    if cfg.read_only_rootfs {
        steps.push(Step::Remount {
            target: root.clone(),
            flags: MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        });
    }
    steps.push(Step::PivotRoot(root));
    Ok(steps)
}

/// `root`/`path` with symlinks resolved as if `root` were "/" (like filepath-securejoin):
/// the result never leaves `root`.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    fn parts(p: &Path) -> VecDeque<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    }
    let mut pending = parts(path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        let is_link = std::fs::symlink_metadata(&full)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && links < 255 {
            links += 1;
            if let Ok(target) = std::fs::read_link(&full) {
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut next = parts(&target);
                next.extend(pending);
                pending = next;
                continue;
            }
        }
        resolved = candidate;
    }
    root.join(resolved)
}

/// Runs steps inside one container root.
pub struct Applier {
    /// The container root (merged): targets below it are resolved with `secure_join`.
    pub root: PathBuf,
}

impl Applier {
    fn resolve(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => secure_join(&self.root, rel),
            _ => p.to_path_buf(),
        }
    }

    /// Runs one step; the error is a message in runc's wording.
    pub fn apply(&self, step: &Step) -> Result<(), String> {
        let io = |what: &str, p: &Path| {
            let p = p.display().to_string();
            let what = what.to_string();
            move |e: std::io::Error| format!("{what} {p}: {}", io_text(&e))
        };
        let sys =
            |what: String| move |e: nix::errno::Errno| format!("{what}: {}", super::errno_text(e));
        match step {
            Step::MakeRprivate => nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(sys("making / private".into())),
            Step::Mkdir(p) => {
                let p = self.resolve(p);
                std::fs::create_dir_all(&p).map_err(io("creating", &p))
            }
            Step::Touch(p) => touch(&self.resolve(p)),
            Step::MountPoint { target, like } => {
                let target = self.resolve(target);
                let meta = std::fs::metadata(like).map_err(io("stat", like))?;
                if meta.is_dir() {
                    std::fs::create_dir_all(&target).map_err(io("creating", &target))
                } else {
                    touch(&target)
                }
            }
            Step::Mount {
                fstype,
                source,
                target,
                flags,
                data,
            } => {
                let target = self.resolve(target);
                let what = match fstype {
                    Some(t) => format!("mounting {t} on {}", target.display()),
                    None => format!("mounting {} on {}", source.display(), target.display()),
                };
                nix::mount::mount(
                    Some(source.as_path()),
                    &target,
                    fstype.as_deref(),
                    *flags,
                    data.as_deref(),
                )
                .map_err(sys(what))
            }
            Step::Remount { target, flags } => {
                let target = self.resolve(target);
                nix::mount::mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    *flags | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
                .map_err(sys(format!("remounting {} read-only", target.display())))
            }
            Step::Symlink { target, link } => {
                let link = self.resolve(link);
                if std::fs::symlink_metadata(&link).is_ok() {
                    return Ok(());
                }
                std::os::unix::fs::symlink(target, &link).map_err(io("creating", &link))
            }
            Step::PivotRoot(root) => {
                let what = format!("pivot_root {}", root.display());
                nix::unistd::chdir(root).map_err(sys(what.clone()))?;
                nix::unistd::pivot_root(".", ".").map_err(sys(what.clone()))?;
                nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(sys(what.clone()))?;
                nix::unistd::chdir("/").map_err(sys(what))
            }
        }
    }
}

fn touch(p: &Path) -> Result<(), String> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {}", parent.display(), io_text(&e)))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map(|_| ())
        .map_err(|e| format!("creating {}: {}", p.display(), io_text(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Mount, RootFs};

    fn check(cfg: &ContainerConfig, expect: &str) {
        let text: Vec<String> = plan_mounts(cfg)
            .expect("plan")
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(text.join("\n"), expect.trim());
    }

    fn config() -> ContainerConfig {
        ContainerConfig {
            rootfs: Some(RootFs {
                layers: vec!["/l/base".into(), "/l/top".into()],
                upper: "/c/upper".into(),
                work: "/c/work".into(),
                merged: "/c/m".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn no_rootfs_no_steps() {
        check(&ContainerConfig::default(), "");
    }

    #[test]
    fn full_plan() {
        let mut cfg = config();
        cfg.mounts = vec![
            Mount {
                source: "/v/data".into(),
                destination: "/data".into(),
                read_only: false,
            },
            Mount {
                source: "/v/hosts".into(),
                destination: "/etc/hosts".into(),
                read_only: true,
            },
        ];
        cfg.read_only_rootfs = true;
        check(
            &cfg,
            r#"
mount --make-rprivate /
mkdir /c/upper
mkdir /c/work
mkdir /c/m
mount -t overlay overlay /c/m -o lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work
mkdir /c/m/proc
mount -t proc proc /c/m/proc -o nosuid,nodev,noexec
mkdir /c/m/dev
mount -t tmpfs tmpfs /c/m/dev -o nosuid,strictatime,mode=755,size=65536k
touch /c/m/dev/null
mount /dev/null /c/m/dev/null -o bind
touch /c/m/dev/zero
mount /dev/zero /c/m/dev/zero -o bind
touch /c/m/dev/full
mount /dev/full /c/m/dev/full -o bind
touch /c/m/dev/random
mount /dev/random /c/m/dev/random -o bind
touch /c/m/dev/urandom
mount /dev/urandom /c/m/dev/urandom -o bind
touch /c/m/dev/tty
mount /dev/tty /c/m/dev/tty -o bind
ln -s /proc/self/fd /c/m/dev/fd
ln -s /proc/self/fd/0 /c/m/dev/stdin
ln -s /proc/self/fd/1 /c/m/dev/stdout
ln -s /proc/self/fd/2 /c/m/dev/stderr
ln -s pts/ptmx /c/m/dev/ptmx
mkdir /c/m/dev/pts
mount -t devpts devpts /c/m/dev/pts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=620,gid=5
mkdir /c/m/dev/shm
mount -t tmpfs shm /c/m/dev/shm -o nosuid,nodev,noexec,mode=1777,size=65536k
mkdir /c/m/dev/mqueue
mount -t mqueue mqueue /c/m/dev/mqueue -o nosuid,nodev,noexec
mkdir /c/m/sys
mount -t sysfs sysfs /c/m/sys -o ro,nosuid,nodev,noexec
mountpoint /c/m/data like /v/data
mount /v/data /c/m/data -o bind,rec
mountpoint /c/m/etc/hosts like /v/hosts
mount /v/hosts /c/m/etc/hosts -o bind,rec
mount /c/m/etc/hosts -o remount,bind,ro
mount /c/m -o remount,bind,ro
pivot_root /c/m
"#,
        );
    }

    #[test]
    fn privileged_sysfs_is_writable() {
        let mut cfg = config();
        cfg.privileged = true;
        let steps = plan_mounts(&cfg).expect("plan");
        assert!(steps
            .iter()
            .any(|s| s.to_string() == "mount -t sysfs sysfs /c/m/sys -o nosuid,nodev,noexec"));
    }

    #[test]
    fn bad_destinations() {
        for dest in ["relative", "/a/../../etc"] {
            let mut cfg = config();
            cfg.mounts = vec![Mount {
                source: "/v".into(),
                destination: dest.into(),
                read_only: false,
            }];
            assert!(matches!(plan_mounts(&cfg), Err(RuntimeError::Config(_))));
        }
        assert!(matches!(
            plan_mounts(&ContainerConfig {
                rootfs: Some(RootFs::default()),
                ..Default::default()
            }),
            Err(RuntimeError::Config(_))
        ));
    }

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../etc", root.join("etc/up")).expect("symlink");
        std::os::unix::fs::symlink("/", root.join("etc/resolv.conf")).expect("symlink");
        assert_eq!(secure_join(root, Path::new("abs/x")), root.join("etc/x"));
        assert_eq!(secure_join(root, Path::new("etc/up/y")), root.join("etc/y"));
        assert_eq!(
            secure_join(root, Path::new("/etc/resolv.conf")),
            root.to_path_buf()
        );
        assert_eq!(
            secure_join(root, Path::new("new/dir")),
            root.join("new/dir")
        );
    }
}
