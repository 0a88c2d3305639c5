//! Linux capabilities of a container: containerd's default set, plus `cap_add`, minus
//! `cap_drop`, as a bit mask (bit n = capability n).

use super::RuntimeError;

/// Capability names by number (linux/capability.h).
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability this table knows.
pub const ALL: u64 = (1 << NAMES.len()) - 1;

/// containerd's (and Docker's) default set.
pub const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The number of a capability named `NET_ADMIN` or `CAP_NET_ADMIN` (any case).
pub fn parse(name: &str) -> Result<u32, RuntimeError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
        .ok_or_else(|| RuntimeError::UnknownCapability(name.to_string()))
}

fn mask(names: &[&str]) -> Result<u64, RuntimeError> {
    names.iter().try_fold(0, |m, n| Ok(m | 1 << parse(n)?))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The container's set, the way containerd computes it: "ALL" in add starts from every
/// capability, "ALL" in drop from none; then single additions, then single drops.
pub fn container_set(add: &[String], drop: &[String]) -> Result<u64, RuntimeError> {
    let mut set = mask(DEFAULT)?;
    if add.iter().any(|c| is_all(c)) {
        set = ALL;
    }
    if drop.iter().any(|c| is_all(c)) {
        set = 0;
    }
    for c in add.iter().filter(|c| !is_all(c)) {
        set |= 1 << parse(c)?;
    }
    for c in drop.iter().filter(|c| !is_all(c)) {
        set &= !(1 << parse(c)?);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(add: &[&str], drop: &[&str], expect: u64) {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            container_set(&s(add), &s(drop)).expect("valid"),
            expect,
            "add {add:?} drop {drop:?}"
        );
    }

    #[test]
    fn sets() {
        check(&[], &[], 0xa80425fb);
        check(&["NET_ADMIN"], &[], 0xa80435fb);
        check(&["cap_net_admin"], &["KILL"], 0xa80435db);
        check(&[], &["ALL"], 0);
        check(&["NET_BIND_SERVICE"], &["ALL"], 1 << 10);
        check(&["ALL"], &["CHOWN"], ALL & !1);
    }

    #[test]
    fn unknown_capability() {
        let e = container_set(&["NOPE".to_string()], &[]).expect_err("unknown");
        assert_eq!(e.to_string(), "unknown capability \"NOPE\"");
    }
}
