//! SPDY/3.1 as Kubernetes streaming clients speak it (client-go's spdystream): the wire
//! format in [`frame`] (no IO) and a server session in [`session`] (tokio). The kubelet's
//! port-forward and exec endpoints use it for kubectl's SPDY upgrades, plain or tunnelled
//! through WebSocket.

pub mod frame;
pub mod session;

pub use frame::{header, Frame, Headers};
pub use session::{Session, Stream};
