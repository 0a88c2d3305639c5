//! `kins image load|ls|rm|build-host`: the image store a cluster's nodes share
//! (`<data>/<cluster>/images`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use runtime::image::{ImageError, ImageStore};

use super::Usage;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Import images from a `docker save` or OCI-layout archive (plain or gzip).
    Load {
        /// The archive, or `-` for standard input.
        file: String,
        #[arg(long, default_value = "kins")]
        cluster: String,
    },
    /// List the images: reference, id, size, and the host packages of host-built ones.
    Ls {
        #[arg(long, default_value = "kins")]
        cluster: String,
        /// Show the whole BUILT FROM list.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove images; blobs and layers no other image uses are deleted.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
        #[arg(long, default_value = "kins")]
        cluster: String,
    },
    /// Build (again) an offline image from the host's packages: nginx, curlimages/curl, busybox.
    BuildHost {
        name: String,
        #[arg(long, default_value = "kins")]
        cluster: String,
    },
}

/// The store of a cluster: `<data base>/<cluster>/images`.
pub fn store_root(data_base: &Path, cluster: &str) -> anyhow::Result<PathBuf> {
    Ok(lab::Paths::new(data_base, cluster)?.data.join("images"))
}

fn open(data_base: &Path, cluster: &str) -> anyhow::Result<ImageStore> {
    let root = store_root(data_base, cluster)?;
    ImageStore::open(&root).with_context(|| format!("image store {}", root.display()))
}

/// Bad references are usage errors (exit 2).
fn usage_if_invalid(e: ImageError) -> anyhow::Error {
    match e {
        ImageError::InvalidReference { .. } | ImageError::NoRecipe { .. } => {
            Usage(e.to_string()).into()
        }
        e => e.into(),
    }
}

/// 187MB, like docker (powers of 1000).
fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else if v < 10.0 {
        format!("{v:.2}{}", units[i])
    } else if v < 100.0 {
        format!("{v:.1}{}", units[i])
    } else {
        format!("{v:.0}{}", units[i])
    }
}

/// The BUILT FROM column: cut after 60 characters unless --no-trunc.
fn built_from(label: Option<&str>, no_trunc: bool) -> String {
    match label {
        None => "-".to_string(),
        Some(l) if no_trunc || l.chars().count() <= 60 => l.to_string(),
        Some(l) => format!("{}...", l.chars().take(57).collect::<String>()),
    }
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Load { file, cluster } => {
            let store = open(data_base, &cluster)?;
            let input: Box<dyn Read> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(
                    std::fs::File::open(&file)
                        .map_err(|e| Usage(format!("cannot open {file}: {e}")))?,
                )
            };
            let refs = store
                .load_archive(input)
                .with_context(|| format!("loading {file}"))?;
            for r in refs {
                println!("Loaded image: {r}");
            }
            Ok(())
        }
        ImageCommand::Ls { cluster, no_trunc } => {
            let store = open(data_base, &cluster)?;
            let images = store.list()?;
            println!(
                "{:<44} {:<16} {:<13} {:<9} BUILT FROM",
                "IMAGE", "TAG", "IMAGE ID", "SIZE"
            );
            for i in images {
                let (repo, tag) = match runtime::image::reference::parse(&i.reference) {
                    Ok(r) => (r.repository, r.tag.unwrap_or_else(|| "<none>".to_string())),
                    Err(_) => (i.reference.clone(), "<none>".to_string()),
                };
                let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
                println!(
                    "{:<44} {:<16} {:<13} {:<9} {}",
                    repo,
                    tag,
                    &id[..id.len().min(12)],
                    human_size(i.size),
                    built_from(i.built_from.as_deref(), no_trunc)
                );
            }
            Ok(())
        }
        ImageCommand::Rm {
            references,
            cluster,
        } => {
            // Every reference must parse before anything is removed.
            let mut normalized = Vec::new();
            for r in &references {
                normalized.push(runtime::image::normalize(r).map_err(usage_if_invalid)?);
            }
            let store = open(data_base, &cluster)?;
            let mut failed = Vec::new();
            for r in normalized {
                match store.remove(&r) {
                    Ok(()) => println!("Untagged: {r}"),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{}", failed.join("; "))
            }
        }
        ImageCommand::BuildHost { name, cluster } => {
            let store = open(data_base, &cluster)?;
            let img = store.build_host(&name).map_err(usage_if_invalid)?;
            println!("Built image: {} ({})", img.reference, img.id);
            if let Some(from) = img.built_from {
                println!("{from}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_like_docker() {
        for (n, s) in [
            (512, "512B"),
            (1_500, "1.50kB"),
            (187_000_000, "187MB"),
            (12_340_000, "12.3MB"),
        ] {
            assert_eq!(human_size(n), s);
        }
    }
}
