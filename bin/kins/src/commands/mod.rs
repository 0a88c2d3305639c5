//! One file per command.

pub mod agent;
pub mod agnhost;
pub mod apiserver;
pub mod cni;
pub mod controller_manager;
pub mod demo;
pub mod dns;
pub mod down;
pub mod exec;
pub mod image;
pub mod ingress;
pub mod kubeconfig;
pub mod node;
pub mod pause;
pub mod shim;
pub mod status;
pub mod supervise;
pub mod up;

/// A usage error (exit code 2) as opposed to a failure (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// 2 for bad input, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some()
        || matches!(
            e.downcast_ref::<lab::LabError>(),
            Some(lab::LabError::BadName(_)) | Some(lab::LabError::NoSuchCluster(_))
        )
    {
        2
    } else {
        1
    }
}

/// The API client of an add-on process (`kins dns`, `kins ingress`): a kubeconfig when
/// given, else the pod's in-cluster service account, else $KUBECONFIG.
pub async fn addon_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    match kubeconfig {
        Some(path) => Ok(controllers::client_from_kubeconfig(path).await?),
        None => kube::Client::try_default()
            .await
            .context("no in-cluster service account or kubeconfig"),
    }
}
