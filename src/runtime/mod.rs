//! The operator runtime: the machinery the controllers share, which knows no
//! domain type (src/layering.rs checks that it imports nothing of the domain).
//! It grows as the controllers' common parts move in (issue 28).

pub mod admin_server;
pub mod announce;
pub mod catch_up;
pub mod kube;
pub mod leadership;
pub mod metrics;
pub mod retry;
pub mod telemetry;

/// `(namespace, name)` of an object.
pub type Key = (String, String);
