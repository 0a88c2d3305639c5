//! Driving an interactive kubectl as a person at a terminal would: the command runs under
//! script(1), so its stdin is a terminal (of the size set first with stty); the test
//! types a line once the expected output has appeared, never after a fixed delay.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One command running at a terminal.
pub struct Term {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
}

impl Term {
    /// Runs the shell command `cmd` at a 100x30 terminal, with `env` set.
    pub fn spawn(cmd: &str, env: &[(&str, &str)]) -> Result<Term> {
        let line = format!("stty cols 100 rows 30; exec {cmd}");
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().context("running script(1)")?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().context("script's stdout")?;
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = sink.lock() {
                    o.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Term {
            child,
            stdin,
            output,
        })
    }

    /// Everything the terminal showed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until the output contains `text` (the whole output so far on success).
    pub fn expect(&mut self, text: &str, secs: u64) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.output();
            if out.contains(text) {
                return Ok(out);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader may still be catching up.
                std::thread::sleep(Duration::from_millis(100));
                let out = self.output();
                if out.contains(text) {
                    return Ok(out);
                }
                bail!("the command ended ({status}) before {text:?} appeared: {out:?}");
            }
            if Instant::now() > deadline {
                bail!("{text:?} did not appear within {secs} s: {out:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` (a trailing "\n" is Enter).
    pub fn send(&mut self, text: &str) -> Result<()> {
        let w = self.stdin.as_mut().context("stdin already closed")?;
        w.write_all(text.as_bytes())?;
        w.flush()?;
        Ok(())
    }

    /// Waits for the command to end; its exit code and the whole output.
    pub fn wait(mut self, secs: u64) -> Result<(Option<i32>, String)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                return Ok((status.code(), self.output()));
            }
            if Instant::now() > deadline {
                let out = self.output();
                let _ = self.child.kill();
                bail!("the command did not end within {secs} s: {out:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the command (and what it runs) as closing the terminal would: SIGHUP to the
    /// command, and nothing typed. script(1)'s stdin is closed only once the command is
    /// gone, because script turns the end of its input into the terminal's EOF character
    /// (^D), which an attached shell would read as "exit".
    pub fn hang_up(mut self) -> String {
        // The command is script(1)'s child (exec'd by its shell); script ends with it.
        let _ = Command::new("pkill")
            .args(["-HUP", "-P", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
        self.output()
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
