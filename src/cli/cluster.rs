//! The connection to the cluster, and the errors people see.

use std::{fmt::Debug, time::Duration};

use kube::{
    Api, Client, Resource,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{Condition, await_condition},
};
use serde::de::DeserializeOwned;

use super::{Global, render};
use crate::api::{AppConsent, AppRegistration};

/// What went wrong, in words. Never carries a secret: the plugin sends none
/// to the apiserver, and these messages are built from names and the
/// apiserver's answers.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "registrar is not installed in this cluster: the API {resource}.registrar.dev/v1alpha1 is not served \
         (install it with `helm install registrar charts/registrar`, or `kubectl apply -f crds/`)"
    )]
    NotInstalled { resource: &'static str },
    #[error("you may not {verb} {resource}{where_} (Kubernetes RBAC){hint}")]
    Forbidden { verb: &'static str, resource: String, where_: String, hint: String },
    #[error("{kind} {name:?} not found in namespace {namespace:?}{hint}")]
    NotFound { kind: &'static str, name: String, namespace: String, hint: String },
    #[error("{0}")]
    Refused(String),
    #[error("gave up after {timeout:?} waiting for {what} (is the registrar operator running? see --timeout)")]
    Timeout { what: String, timeout: Duration },
    #[error("cannot reach the cluster: {0}")]
    Connect(String),
    #[error("{verb} {resource}: {message}")]
    Api { verb: &'static str, resource: String, message: String },
    #[error("{0}")]
    Input(String),
}

/// A kubeconfig's cluster and namespace, with the user's credentials.
pub struct Target {
    pub client: Client,
    pub namespace: String,
    /// The namespace given with -n, if any.
    pub namespace_flag: Option<String>,
    pub timeout: Duration,
    pub default_organization: String,
}

impl Target {
    pub async fn connect(global: &Global) -> Result<Self, CliError> {
        let options = KubeConfigOptions { context: global.context.clone(), ..Default::default() };
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| CliError::Connect(format!("reading {}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| CliError::Connect(e.to_string()))?;
        let mut config = config;
        if let Some(user) = &global.as_user {
            config.auth_info.impersonate = Some(user.clone());
            config.auth_info.impersonate_groups = (!global.as_groups.is_empty()).then(|| global.as_groups.clone());
        }
        let namespace = global.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| CliError::Connect(e.to_string()))?;
        Ok(Target {
            client,
            namespace,
            namespace_flag: global.namespace.clone(),
            timeout: global.timeout,
            default_organization: global.default_organization.clone(),
        })
    }

    pub fn apps(&self, namespace: &str) -> Api<AppRegistration> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub fn consents(&self, namespace: &str) -> Api<AppConsent> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Turns an apiserver error into one that says what to do. `verb` and
    /// `resource` name the request (e.g. "create", "appregistrations");
    /// `namespace` is where (None: cluster-wide).
    pub async fn explain(
        &self,
        error: kube::Error,
        verb: &'static str,
        resource: &'static str,
        namespace: Option<&str>,
    ) -> CliError {
        let where_ = namespace.map_or_else(|| " in all namespaces".to_owned(), |ns| format!(" in namespace {ns:?}"));
        match error {
            // An admission policy's denial is a 403 too; RBAC's says who cannot do what.
            kube::Error::Api(status) if status.code == 403 && !status.message.contains(" cannot ") => {
                CliError::Refused(format!("the apiserver refused to {verb} {resource}: {}", status.message))
            }
            kube::Error::Api(status) if status.code == 403 => {
                let (resource, hint) = if registrar_resource(resource) {
                    (
                        format!("{resource}.registrar.dev"),
                        " — ask a cluster admin for the admin or edit role in the namespace (registrar's chart \
                         extends them to its resources)",
                    )
                } else {
                    (resource.to_owned(), "")
                };
                CliError::Forbidden { verb, resource, where_, hint: hint.to_owned() }
            }
            kube::Error::Api(status)
                if status.code == 404 && registrar_resource(resource) && !self.installed().await =>
            {
                CliError::NotInstalled { resource: registrar_name(resource) }
            }
            kube::Error::Api(status) => CliError::Api { verb, resource: resource.to_owned(), message: status.message },
            other => CliError::Connect(other.to_string()),
        }
    }

    /// Whether the apiserver serves registrar's API group.
    pub async fn installed(&self) -> bool {
        let request = http::Request::get("/apis/registrar.dev/v1alpha1").body(Vec::new());
        match request {
            Ok(request) => self.client.request_text(request).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Waits (with a spinner on a terminal) until `condition` holds for the
    /// object `name`, or it is gone when the condition accepts `None`.
    pub async fn wait_for<K, C>(&self, api: Api<K>, name: &str, what: &str, condition: C) -> Result<Option<K>, CliError>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        C: Condition<K>,
    {
        let spinner = render::spinner(what);
        let waited = tokio::time::timeout(self.timeout, await_condition(api, name, condition)).await.ok();
        spinner.finish_and_clear();
        match waited {
            Some(Ok(found)) => Ok(found),
            Some(Err(e)) => Err(CliError::Connect(format!("watching while waiting for {what}: {e}"))),
            None => Err(CliError::Timeout { what: what.to_owned(), timeout: self.timeout }),
        }
    }
}

fn registrar_resource(resource: &str) -> bool {
    matches!(resource, "appregistrations" | "appconsents" | "organizationpolicies")
}

fn registrar_name(resource: &str) -> &'static str {
    match resource {
        "appconsents" => "appconsents",
        "organizationpolicies" => "organizationpolicies",
        _ => "appregistrations",
    }
}

/// A 404 from the apiserver.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}
