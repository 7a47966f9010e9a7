//! The operator runtime: the machinery the controllers share, which knows no
//! domain type. It grows as the controllers' common parts move in (issue 28).

pub mod kube;
