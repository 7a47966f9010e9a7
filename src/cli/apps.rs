//! Register, Browse, View details, Rotate and Revoke.

use std::{
    collections::BTreeMap,
    io::{BufRead, IsTerminal, Write},
};

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::conditions::is_deleted,
};
use serde::Serialize;
use serde_json::json;

use super::{
    AppName, CliError, Format,
    cluster::{Target, is_not_found},
    render::{self, BAD, BOLD, DIM, GOOD, WARN, paint},
};
use crate::{
    api::{
        AppConsent, AppRegistration, AppRegistrationSpec, DEFAULT_GRANT_TYPES, GrantType, OrganizationPolicy, Owner,
        Scope, conditions,
        keys::{ORGANIZATION_LABEL, ROTATE_ANNOTATION},
        organization_of,
    },
    consent::{
        policy::{Allowance, PolicyApp, PolicyFacts},
        visibility::visible_to,
    },
    credentials::{layout::SecretLayout, seal::SealKey},
};

/// The field manager of everything the plugin writes.
pub const FIELD_MANAGER: &str = crate::api::keys::PLUGIN_FIELD_MANAGER;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    Group,
    Organization,
    Global,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum GrantArg {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The AppRegistration's name.
    pub name: String,
    /// The name users see (default: NAME).
    #[arg(long)]
    pub display_name: Option<String>,
    /// Who may consent to it: its namespace (Group), its organization's
    /// namespaces (Organization), every namespace (Global; platform namespace only).
    #[arg(long, value_enum, default_value = "group")]
    pub scope: ScopeArg,
    /// A callback URL (repeat for more).
    #[arg(long = "redirect-uri", value_name = "URL")]
    pub redirect_uris: Vec<String>,
    /// A public client (browser or native app): no secret, PKCE required.
    #[arg(long)]
    pub public: bool,
    /// Require PKCE (S256) on token requests.
    #[arg(long)]
    pub pkce: bool,
    /// A grant type (repeat; default authorization_code and refresh_token).
    #[arg(long = "grant-type", value_enum, value_name = "GRANT")]
    pub grant_types: Vec<GrantArg>,
    /// An API scope the app asks for (repeat).
    #[arg(long = "oauth-scope", value_name = "SCOPE")]
    pub oauth_scopes: Vec<String>,
    /// A label for the AppRegistration, KEY=VALUE (repeat).
    #[arg(short = 'l', long = "label", value_parser = super::parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// The owner, User:NAME or Group:NAME (default: you).
    #[arg(long, value_parser = parse_owner)]
    pub owner: Option<Owner>,
    /// Print the AppRegistration instead of creating it (for a GitOps repository).
    #[arg(long)]
    pub dry_run: bool,
    /// The format of --dry-run.
    #[arg(short = 'o', long, value_enum, default_value = "yaml", requires = "dry_run")]
    pub output: Format,
}

/// A grace period as typed (`1h`), once it parses.
fn grace_period(text: &str) -> Result<String, String> {
    super::parse_duration(text).map(|_| text.to_owned())
}

fn parse_owner(text: &str) -> Result<Owner, String> {
    text.parse()
}

impl RegisterArgs {
    fn app(&self, namespace: &str) -> AppRegistration {
        let grant_types = (!self.grant_types.is_empty()).then(|| {
            self.grant_types
                .iter()
                .map(|g| match g {
                    GrantArg::AuthorizationCode => GrantType::AuthorizationCode,
                    GrantArg::RefreshToken => GrantType::RefreshToken,
                    GrantArg::ClientCredentials => GrantType::ClientCredentials,
                })
                .collect()
        });
        let spec = AppRegistrationSpec {
            display_name: self.display_name.clone().unwrap_or_else(|| self.name.clone()),
            scope: match self.scope {
                ScopeArg::Group => Scope::Group,
                ScopeArg::Organization => Scope::Organization,
                ScopeArg::Global => Scope::Global,
            },
            public_client: self.public.then_some(true),
            require_pkce: (self.pkce || self.public).then_some(true),
            redirect_uris: self.redirect_uris.clone(),
            grant_types,
            oauth_scopes: self.oauth_scopes.clone(),
            owner: self.owner.clone(),
            ..Default::default()
        };
        let mut app = AppRegistration::new(&self.name, spec);
        app.metadata.namespace = Some(namespace.to_owned());
        if !self.labels.is_empty() {
            app.metadata.labels = Some(self.labels.iter().cloned().collect());
        }
        app
    }
}

/// `register --dry-run`: the manifest, for a GitOps repository.
pub fn print_dry_run(args: &RegisterArgs, namespace: &str) -> Result<(), CliError> {
    let text = render::structured(&args.app(namespace), args.output)?;
    render::out(text.trim_end());
    Ok(())
}

pub async fn register(target: &Target, args: RegisterArgs) -> Result<(), CliError> {
    let ns = target.namespace.clone();
    let api = target.apps(&ns);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    if let Err(e) = api.create(&params, &args.app(&ns)).await {
        return Err(match e {
            kube::Error::Api(s) if s.code == 409 => CliError::Refused(format!(
                "AppRegistration {:?} already exists in namespace {ns:?} (see `kubectl registrar show {} -n {ns}`)",
                args.name, args.name
            )),
            kube::Error::Api(s) if s.code == 422 => {
                CliError::Refused(format!("the apiserver refused the app: {}", s.message))
            }
            e => target.explain(e, "create", "appregistrations", Some(&ns)).await,
        });
    }
    let app = wait_settled(target, &ns, &args.name, "registrar to issue the app").await?;
    let layout = SecretLayout::for_app(&app);
    // The app is registered whatever happens now: say so before any error.
    let secret = match read_secret(target, &ns, &layout.name).await {
        Ok(secret) => secret,
        Err(e) => {
            let id = status_of(&app).client_id.unwrap_or_default();
            render::out(&format!("Registered {} in {ns} (Client ID {id}).", args.name));
            return Err(CliError::Refused(format!(
                "its credentials are in Secret {ns}/{}, but reading them failed: {e}",
                layout.name
            )));
        }
    };
    let value = |key: &str| secret_value(&secret, key);
    let client_id = status_of(&app).client_id.clone().or_else(|| value(&layout.client_id_key)).unwrap_or_default();
    let client_secret = if is_public(&app) { None } else { value(&layout.client_secret_key) };
    render::out(&format!(
        "Registered {} in {ns} ({}).\n\n{}",
        paint(BOLD, &args.name),
        app.spec.scope.as_str(),
        render::secret_once(&client_id, client_secret.as_deref(), &format!("{ns}/{}", layout.name))
    ));
    Ok(())
}

/// Waits until the app is issued (Ready) or refused for a reason that waiting
/// does not fix; the latter is an error naming the reason and message.
pub(super) async fn wait_settled(
    target: &Target,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<AppRegistration, CliError> {
    let settled =
        |app: Option<&AppRegistration>| app.and_then(ready).is_some_and(|r| r.ready == Some(true) || r.final_);
    let app = target
        .wait_for(target.apps(ns), name, what, settled)
        .await?
        .ok_or_else(|| CliError::Refused(format!("AppRegistration {name:?} was deleted while waiting")))?;
    match ready(&app) {
        Some(r) if r.ready == Some(true) => Ok(app),
        Some(r) => Err(CliError::Refused(format!("{name} is not ready: {} — {}", r.reason, r.message))),
        None => Err(CliError::Refused(format!("{name} is not ready"))),
    }
}

/// The Ready condition for the current generation.
struct ReadyState {
    ready: Option<bool>,
    reason: String,
    message: String,
    /// A refusal waiting does not fix.
    final_: bool,
}

fn ready(app: &AppRegistration) -> Option<ReadyState> {
    let status = app.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == conditions::READY)?;
    if c.observed_generation.is_some() && c.observed_generation != app.metadata.generation {
        return None;
    }
    use conditions::reason as r;
    let final_ = [
        r::INVALID_SPEC,
        r::SECRET_CONFLICT,
        r::SCOPE_NOT_PERMITTED,
        r::CLIENT_ID_CONFLICT,
        r::SECRET_SOURCE_MISSING,
        r::WEAK_SECRET,
        r::REVOKED,
    ]
    .contains(&c.reason.as_str());
    Some(ReadyState { ready: conditions::truth(c), reason: c.reason.clone(), message: c.message.clone(), final_ })
}

fn status_of(app: &AppRegistration) -> crate::api::AppRegistrationStatus {
    app.status.clone().unwrap_or_default()
}

fn is_public(app: &AppRegistration) -> bool {
    app.spec.is_public_client()
}

async fn read_secret(target: &Target, ns: &str, name: &str) -> Result<Secret, CliError> {
    let api: Api<Secret> = Api::namespaced(target.client.clone(), ns);
    match api.get(name).await {
        Ok(secret) => Ok(secret),
        Err(e) if is_not_found(&e) => Err(CliError::NotFound {
            kind: "Secret",
            name: name.to_owned(),
            namespace: ns.to_owned(),
            hint: String::new(),
        }),
        Err(e) => Err(target.explain(e, "get", "secrets", Some(ns)).await),
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The app named, in its namespace or the target's.
pub async fn get_app(target: &Target, app: &AppName) -> Result<AppRegistration, CliError> {
    let ns = app.namespace.clone().unwrap_or_else(|| target.namespace.clone());
    match target.apps(&ns).get_opt(&app.name).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(CliError::NotFound {
            kind: "AppRegistration",
            name: app.name.clone(),
            namespace: ns.clone(),
            hint: format!(" (`kubectl registrar browse -n {ns}` lists the apps it can use)"),
        }),
        Err(e) => Err(target.explain(e, "get", "appregistrations", Some(&ns)).await),
    }
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// NAME, or NAMESPACE/NAME.
    pub app: AppName,
    /// Also show the client secret.
    #[arg(long)]
    pub reveal: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

/// The details view.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Details {
    namespace: String,
    name: String,
    display_name: String,
    scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    public_client: bool,
    redirect_uris: Vec<String>,
    grant_types: Vec<GrantType>,
    oauth_scopes: Vec<String>,
    pkce: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_fingerprint: Option<String>,
    consents: i64,
    consenting_namespaces: Vec<String>,
    ready: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_url: Option<String>,
    secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

pub async fn show(target: &Target, args: ShowArgs) -> Result<(), CliError> {
    let app = get_app(target, &args.app).await?;
    let ns = app.namespace().unwrap_or_default();
    let status = status_of(&app);
    let layout = SecretLayout::for_app(&app);
    // The Secret holds the issuer and token URL where an authorization server
    // is configured; without the right to read it, they are left out.
    let api: Api<Secret> = Api::namespaced(target.client.clone(), &ns);
    let secret = match api.get_opt(&layout.name).await {
        Ok(secret) => secret,
        Err(e) if args.reveal => return Err(target.explain(e, "get", "secrets", Some(&ns)).await),
        Err(_) => None,
    };
    let value = |key: &str| secret.as_ref().and_then(|s| secret_value(s, key));
    let client_secret = match (args.reveal, is_public(&app)) {
        (true, false) => Some(
            value(&layout.client_secret_key)
                .ok_or_else(|| CliError::Refused(format!("Secret {ns}/{} holds no client secret yet", layout.name)))?,
        ),
        _ => None,
    };
    let consents = status.consents.clone().unwrap_or_default();
    let details = Details {
        namespace: ns.clone(),
        name: app.name_any(),
        display_name: app.spec.display_name.clone(),
        scope: app.spec.scope,
        owner: status.owner.as_ref().map(|o| format!("{} ({})", o.owner().describe(), o.reason)),
        registered_by: status.registered_by.clone(),
        client_id: status.client_id.clone(),
        public_client: is_public(&app),
        redirect_uris: app.spec.redirect_uris.clone(),
        grant_types: app.spec.grant_types.clone().unwrap_or_else(|| DEFAULT_GRANT_TYPES.to_vec()),
        oauth_scopes: app.spec.oauth_scopes.clone(),
        pkce: app.spec.require_pkce.unwrap_or(is_public(&app)),
        secret_version: status.secret_version,
        secret_fingerprint: status.secret_fingerprint.clone(),
        consents: consents.count,
        consenting_namespaces: consents.namespaces,
        ready: ready(&app).map_or_else(
            || "Unknown".into(),
            |r| format!("{} ({}) {}", conditions::word(r.ready), r.reason, r.message),
        ),
        issuer: value(&layout.issuer_key),
        token_url: value(&layout.token_url_key),
        secret: format!("{ns}/{}", layout.name),
        client_secret,
    };
    if args.output != Format::Table {
        render::out(render::structured(&details, args.output)?.trim_end());
        return Ok(());
    }
    let list = |items: &[String]| if items.is_empty() { paint(DIM, "none") } else { items.join(", ") };
    let none = || paint(DIM, "none");
    let mut pairs = vec![
        ("Name", format!("{}/{}", details.namespace, details.name)),
        ("Display Name", details.display_name.clone()),
        ("Scope", details.scope.as_str().to_owned()),
        ("Owner", details.owner.clone().unwrap_or_else(none)),
        ("Registered By", details.registered_by.clone().unwrap_or_else(none)),
        ("Client ID", details.client_id.clone().map(|c| paint(BOLD, &c)).unwrap_or_else(none)),
        ("Client Type", if details.public_client { "public".into() } else { "confidential".into() }),
        ("Redirect URIs", list(&details.redirect_uris)),
        (
            "Grant Types",
            details
                .grant_types
                .iter()
                .map(|g| serde_json::to_value(g).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("OAuth Scopes", list(&details.oauth_scopes)),
        ("PKCE", if details.pkce { "required".into() } else { "not required".into() }),
    ];
    if !details.public_client {
        pairs.push((
            "Secret Version",
            match (&details.secret_version, &details.secret_fingerprint) {
                (Some(v), Some(f)) => format!("{v} (fingerprint {f})"),
                (Some(v), None) => v.to_string(),
                _ => none(),
            },
        ));
        pairs.push((
            "Client Secret",
            match &details.client_secret {
                Some(secret) => paint(WARN, secret),
                None => format!("{} {}", "••••••••", paint(DIM, "(hidden: --reveal shows it)")),
            },
        ));
    }
    pairs.push(("Credentials", format!("Secret {}", details.secret)));
    pairs.push((
        "Consents",
        match details.consents {
            0 => paint(DIM, "none"),
            n => format!("{n}: {}", details.consenting_namespaces.join(", ")),
        },
    ));
    if let Some(issuer) = &details.issuer {
        pairs.push(("Issuer", issuer.clone()));
    }
    if let Some(token_url) = &details.token_url {
        pairs.push(("Token URL", token_url.clone()));
    }
    let ready_text = match ready(&app) {
        Some(r) if r.ready == Some(true) => paint(GOOD, "True"),
        Some(r) => format!("{} {} — {}", paint(BAD, "False"), r.reason, r.message),
        None => paint(DIM, "Unknown (not reconciled yet)"),
    };
    pairs.push(("Ready", ready_text));
    render::out(&render::fields(&pairs));
    Ok(())
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// NAME, or NAMESPACE/NAME.
    pub app: AppName,
    /// How long the previous secret keeps working (sets spec.rotation.gracePeriod).
    #[arg(long, value_parser = grace_period, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Do not show the new secret; say where it is.
    #[arg(long)]
    pub no_show: bool,
}

pub async fn rotate(target: &Target, args: RotateArgs) -> Result<(), CliError> {
    let app = get_app(target, &args.app).await?;
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    if is_public(&app) {
        return Err(CliError::Refused(format!("{name} is a public client: it has no secret to rotate")));
    }
    if let Some(source) = app.spec.secret.as_ref().and_then(|s| s.source_ref.as_ref()) {
        return Err(CliError::Refused(format!(
            "{name}'s secret comes from Secret {ns}/{} (spec.secret.sourceRef): write the new value there, and \
             registrar rotates to it",
            source.name
        )));
    }
    let before = status_of(&app).secret_version.unwrap_or(0);
    let api = target.apps(&ns);
    if let Some(grace) = &args.grace {
        let patch = Patch::Merge(json!({ "spec": { "rotation": { "gracePeriod": grace } } }));
        if let Err(e) = api.patch(&name, &PatchParams::default(), &patch).await {
            return Err(target.explain(e, "patch", "appregistrations", Some(&ns)).await);
        }
        render::note(&format!(
            "spec.rotation.gracePeriod is now {grace}; put it in the app's manifest too if a GitOps tool applies it."
        ));
    }
    let request = format!("kubectl-registrar-{}", k8s_openapi::jiff::Timestamp::now().as_millisecond());
    let patch = Patch::Merge(json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: request } } }));
    if let Err(e) = api.patch(&name, &PatchParams::default(), &patch).await {
        return Err(target.explain(e, "patch", "appregistrations", Some(&ns)).await);
    }
    let handled = |a: Option<&AppRegistration>| {
        a.and_then(|a| a.status.as_ref()).is_some_and(|s| {
            s.last_handled_rotate.as_deref() == Some(request.as_str()) && s.secret_version > Some(before)
        })
    };
    let rotated = target
        .wait_for(api, &name, "the new secret", handled)
        .await?
        .ok_or_else(|| CliError::Refused(format!("{name} was deleted while rotating")))?;
    let status = status_of(&rotated);
    let version = status.secret_version.unwrap_or_default();
    let layout = SecretLayout::for_app(&rotated);
    let grace = match &status.previous_secret_expires_at {
        Some(at) => format!("The previous secret keeps working until {}.", at.0),
        None => "The previous secret stopped working at once (no grace period).".to_owned(),
    };
    let where_ = format!("{ns}/{}", layout.name);
    if args.no_show {
        render::out(&format!(
            "Rotated {name} to secret version {version}. The new secret is in Secret {where_}, key {}.\n{grace}",
            layout.client_secret_key
        ));
        return Ok(());
    }
    // The rotation is done whatever happens now: say so before any error.
    let secret = match read_secret(target, &ns, &layout.name).await {
        Ok(secret) => secret,
        Err(e) => {
            render::out(&format!("Rotated {name} to secret version {version}. {grace}"));
            return Err(CliError::Refused(format!("the new secret is in Secret {where_}, but reading it failed: {e}")));
        }
    };
    let value = secret_value(&secret, &layout.client_secret_key);
    let client_id = status.client_id.clone().unwrap_or_default();
    render::out(&format!(
        "Rotated {} to secret version {version}. {grace}\n\n{}",
        paint(BOLD, &name),
        render::secret_once(&client_id, value.as_deref(), &where_)
    ));
    Ok(())
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// NAME, or NAMESPACE/NAME.
    pub app: AppName,
    /// Do not ask for the name to be typed back.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn revoke(target: &Target, args: RevokeArgs) -> Result<(), CliError> {
    let app = get_app(target, &args.app).await?;
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let status = status_of(&app);
    let consents = status.consents.as_ref().map_or(0, |c| c.count);
    let client_id = status.client_id.clone().unwrap_or_else(|| "(none issued)".into());
    let retain = app.spec.deletion_policy == Some(crate::api::DeletionPolicy::Retain);
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Refused(
                "revoke asks you to type the app's name: run it on a terminal, or pass --yes".into(),
            ));
        }
        let consequence = if retain {
            "deletionPolicy is Retain: its Secret and client are kept for a later app naming the Client ID".to_owned()
        } else {
            "its Secret is deleted and the Client ID stops working".to_owned()
        };
        render::note(&format!(
            "{} This revokes {} ({ns}/{name}, Client ID {client_id}): {consequence}; {consents} consent(s) lose it.",
            paint(WARN, "!"),
            paint(BOLD, &app.spec.display_name),
        ));
        let mut stderr = anstream::stderr();
        let _ = write!(stderr, "Type the app's name ({name}) to confirm: ");
        let _ = stderr.flush();
        let mut typed = String::new();
        std::io::stdin().lock().read_line(&mut typed).map_err(|e| CliError::Input(e.to_string()))?;
        if typed.trim() != name {
            return Err(CliError::Refused(format!("{:?} is not {name:?}: nothing was revoked", typed.trim())));
        }
    }
    let api = target.apps(&ns);
    let uid = app.uid().unwrap_or_default();
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        return Err(target.explain(e, "delete", "appregistrations", Some(&ns)).await);
    }
    target.wait_for(api, &name, "the revocation to complete", is_deleted(&uid)).await?;
    let kept = if retain {
        format!(
            " Its Secret and client are retained (deletionPolicy Retain); delete the Secret to give {client_id} up."
        )
    } else {
        " Its Secret is deleted.".to_owned()
    };
    render::out(&format!("Revoked {ns}/{name} (Client ID {client_id}); {consents} consent(s) revoked.{kept}"));
    Ok(())
}

#[derive(Args, Debug)]
pub struct BrowseArgs {
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

/// One app in the Browse panel.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Entry {
    namespace: String,
    name: String,
    display_name: String,
    scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    client_id: String,
    oauth_scopes: Vec<String>,
    /// Granted, or the reason it is not (a consent exists), or none.
    consent: Option<String>,
    consented: bool,
    allowlisted: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Panel {
    namespace: String,
    organization: String,
    organization_apps: Vec<Entry>,
    global_apps: Vec<Entry>,
}

pub async fn browse(target: &Target, args: BrowseArgs) -> Result<(), CliError> {
    let ns = target.namespace.clone();
    let all: Api<AppRegistration> = Api::all(target.client.clone());
    let apps = match all.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            return Err(match target.explain(e, "list", "appregistrations", None).await {
                CliError::Forbidden { verb, resource, where_, .. } => CliError::Forbidden {
                    verb,
                    resource,
                    where_,
                    hint: format!(
                        " — browse reads every app to find those visible from {ns}; ask a cluster admin for the view \
                         role cluster-wide, or use the registry API's GET /v1/catalog?namespace={ns}"
                    ),
                },
                other => other,
            });
        }
    };
    let namespaces: Api<Namespace> = Api::all(target.client.clone());
    let organizations: BTreeMap<String, String> = match namespaces.list_metadata(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .map(|n| {
                let org = organization_of(
                    n.labels().get(ORGANIZATION_LABEL).map(String::as_str),
                    &target.default_organization,
                );
                (n.name_any(), org.to_owned())
            })
            .collect(),
        Err(e) => return Err(target.explain(e, "list", "namespaces", None).await),
    };
    let org_of = |n: &str| organizations.get(n).cloned().unwrap_or_else(|| target.default_organization.clone());
    let org = org_of(&ns);
    let policies: Api<OrganizationPolicy> = Api::all(target.client.clone());
    // Reading the policy is for organization admins; without it, allowlisted
    // is what an Unrestricted organization allows (everything).
    let policy = policies.get_opt(&org).await.ok().flatten();
    let consents: Vec<AppConsent> = match target.consents(&ns).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return Err(target.explain(e, "list", "appconsents", Some(&ns)).await),
    };
    let throwaway = SealKey::generate();
    let facts = PolicyFacts { organization: &org, policy: policy.as_ref(), seal_key: &throwaway };
    let entry = |app: &AppRegistration| -> Option<Entry> {
        let app_ns = app.namespace()?;
        let status = app.status.as_ref()?;
        let client_id = status.client_id.clone()?;
        if app.meta().deletion_timestamp.is_some() || !visible_to(app.spec.scope, &app_ns, &org_of(&app_ns), &ns, &org)
        {
            return None;
        }
        let app_org = org_of(&app_ns);
        let consent =
            consents.iter().find(|c| c.spec.app_ref.namespace == app_ns && c.spec.app_ref.name == app.name_any());
        let granted = consent.and_then(|c| c.status.as_ref()).and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == conditions::GRANTED)
                .map(|c| (conditions::truth(c) == Some(true), c.reason.clone()))
        });
        let policy_app =
            PolicyApp { namespace: &app_ns, name: &app.name_any(), organization: &app_org, client_id: &client_id };
        let allowlisted = facts.allowance(None, &policy_app) != Allowance::Refused;
        Some(Entry {
            namespace: app_ns.clone(),
            name: app.name_any(),
            display_name: app.spec.display_name.clone(),
            scope: app.spec.scope,
            owner: status.owner.as_ref().map(|o| o.name.clone()),
            client_id,
            oauth_scopes: app.spec.oauth_scopes.clone(),
            consented: granted.as_ref().is_some_and(|g| g.0),
            consent: consent.map(|_| granted.map_or_else(|| "Pending".to_owned(), |g| g.1)),
            allowlisted,
        })
    };
    let mut organization_apps: Vec<Entry> =
        apps.iter().filter(|a| a.spec.scope == Scope::Organization).filter_map(entry).collect();
    let mut global_apps: Vec<Entry> = apps.iter().filter(|a| a.spec.scope == Scope::Global).filter_map(entry).collect();
    for list in [&mut organization_apps, &mut global_apps] {
        list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    }
    let panel = Panel { namespace: ns.clone(), organization: org.clone(), organization_apps, global_apps };
    if args.output != Format::Table {
        render::out(render::structured(&panel, args.output)?.trim_end());
        return Ok(());
    }
    let restricted = facts.restricted();
    let tab = |title: String, entries: &[Entry]| -> String {
        let heading = paint(BOLD, &title);
        if entries.is_empty() {
            return format!("{heading}\n{}", paint(DIM, "  no apps"));
        }
        let mut header = vec!["APP", "DISPLAY NAME", "OWNER", "CLIENT ID", "SCOPES", "CONSENTED"];
        if restricted {
            header.push("ALLOWLISTED");
        }
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let consented = match (&e.consent, e.consented) {
                    (_, true) => paint(GOOD, "yes"),
                    (Some(reason), false) => paint(WARN, &format!("no ({reason})")),
                    (None, false) => "no".to_owned(),
                };
                let mut row = vec![
                    format!("{}/{}", e.namespace, e.name),
                    e.display_name.clone(),
                    e.owner.clone().unwrap_or_else(|| "-".into()),
                    e.client_id.clone(),
                    if e.oauth_scopes.is_empty() { "-".into() } else { e.oauth_scopes.join(",") },
                    consented,
                ];
                if restricted {
                    row.push(if e.allowlisted { "yes".into() } else { paint(WARN, "no") });
                }
                row
            })
            .collect();
        format!("{heading}\n{}", render::table(&header, &rows))
    };
    render::out(&format!(
        "{}\n\n{}\n\nUse one with `kubectl registrar consent add NAMESPACE/NAME -n {ns}`.",
        tab(format!("Organization ({org})"), &panel.organization_apps),
        tab("Global".to_owned(), &panel.global_apps),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RegisterArgs {
        use clap::Parser;
        let mut argv = vec!["kubectl-registrar", "register", "billing"];
        argv.extend_from_slice(extra);
        match super::super::Cli::try_parse_from(argv).expect("parses").command {
            super::super::Command::Register(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn register_builds_the_app_the_flags_describe() {
        let app = args(&[
            "--scope",
            "organization",
            "--redirect-uri",
            "https://b.example.com/cb",
            "--oauth-scope",
            "invoices.read",
            "--grant-type",
            "client_credentials",
            "--owner",
            "Group:billing-admins",
        ])
        .app("team-a");
        assert_eq!(app.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(app.spec.display_name, "billing");
        assert_eq!(app.spec.scope, Scope::Organization);
        assert_eq!(app.spec.redirect_uris, ["https://b.example.com/cb"]);
        assert_eq!(app.spec.grant_types, Some(vec![GrantType::ClientCredentials]));
        assert_eq!(app.spec.owner, Some(Owner::group("billing-admins")));
        assert_eq!((app.spec.public_client, app.spec.require_pkce), (None, None));
    }

    #[test]
    fn a_public_client_requires_pkce() {
        let app = args(&["--public"]).app("team-a");
        assert_eq!((app.spec.public_client, app.spec.require_pkce), (Some(true), Some(true)));
        assert_eq!(app.spec.grant_types, None, "the defaults");
    }
}
