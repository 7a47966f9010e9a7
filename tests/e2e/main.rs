//! End-to-end tests against a real kube-apiserver, etcd and
//! kube-controller-manager started once for this test binary.

#[path = "../support/mod.rs"]
mod support;

mod authserver;
mod chart;
mod consent;
mod krew;
mod ledger;
mod plugin;
mod policy;
mod portability;
mod proxies;
mod registration;
mod registry;
mod registry_abuse;
mod scale;
mod smoke;
mod tenancy;
mod terminal;
mod webhook;
