//! The Vagrant lab: the Vagrantfile validates, and it provisions with the README's first
//! command (scripts/quickstart.sh, which the test suite itself runs first).

use std::path::Path;
use std::process::Command;

use kins_tests::ok;

#[test]
fn vagrantfile_validates_and_provisions_with_the_quickstart() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vagrant");
    let text = std::fs::read_to_string(dir.join("Vagrantfile"))?;
    assert!(
        text.contains("scripts/quickstart.sh"),
        "the provisioner runs the README's first command"
    );
    let readme = std::fs::read_to_string(dir.join("../README.md"))?;
    assert!(
        readme.contains("bash scripts/quickstart.sh"),
        "the README's first command is the same script"
    );
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(&dir)
        .output()?;
    let text = ok(out)?;
    assert!(
        text.contains("Vagrantfile validated successfully"),
        "{text}"
    );
    Ok(())
}
