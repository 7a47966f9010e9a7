//! registrar: OAuth 2.0 client registrations as declarative Kubernetes resources.
//!
//! An `AppRegistration` declares an app; the operator mints its Client ID and
//! Client Secret into a Kubernetes Secret, rotates and revokes it. An
//! `AppConsent` enables a shared app for another namespace. README.md maps the
//! product onto Kubernetes (resources, fields, the security model).
#![forbid(unsafe_code)]

pub mod admin_server;
pub mod announce;
pub mod api;
pub mod authserver;
pub mod catch_up;
pub mod cli;
pub mod consent;
pub mod credentials;
pub mod index;
pub mod kept;
pub mod leadership;
pub mod ledger;
pub mod metrics;
pub mod packed;
pub mod registration;
pub mod registry;
pub mod retry;
pub mod telemetry;
pub mod watches;
