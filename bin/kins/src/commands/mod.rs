//! One file per command.

pub mod agent;
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
