//! Applying scripts: the [`Nft`] seam, the `nft` binary behind it, and a recording fake.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::script::TABLE;
use crate::ProxyError;

/// Something that applies an `nft -f` script as one transaction.
pub trait Nft: Send + Sync {
    fn apply(&self, script: &str) -> Result<(), ProxyError>;
}

/// The `nft` binary, run in the caller's network namespace with the script on stdin.
#[derive(Debug, Clone)]
pub struct NftCommand {
    /// The program to run (`nft` from `PATH` by default).
    pub program: String,
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand {
            program: "nft".into(),
        }
    }
}

impl Nft for NftCommand {
    fn apply(&self, script: &str) -> Result<(), ProxyError> {
        let spawn = |e| ProxyError::Spawn {
            program: self.program.clone(),
            source: e,
        };
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let written = stdin.write_all(script.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ProxyError::Nft {
                status: out.status.to_string(),
                stderr: stderr.lines().take(20).collect::<Vec<_>>().join("\n"),
            });
        }
        written.map_err(spawn)
    }
}

/// Records every script and fails when told to: for unit tests.
#[derive(Debug, Default)]
pub struct RecordingNft {
    scripts: Mutex<Vec<String>>,
    fail_next: Mutex<u32>,
}

impl RecordingNft {
    /// The scripts applied so far (failed ones included).
    pub fn scripts(&self) -> Vec<String> {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the next `n` applies fail.
    pub fn fail_next(&self, n: u32) {
        *self.fail_next.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }
}

impl Nft for RecordingNft {
    fn apply(&self, script: &str) -> Result<(), ProxyError> {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(script.to_owned());
        let mut fail = self.fail_next.lock().unwrap_or_else(|e| e.into_inner());
        if *fail > 0 {
            *fail -= 1;
            return Err(ProxyError::Nft {
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        Ok(())
    }
}

/// Removes the proxy's table (no error when it is absent).
pub fn remove_table(nft: &dyn Nft) -> Result<(), ProxyError> {
    nft.apply(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n"))
}
