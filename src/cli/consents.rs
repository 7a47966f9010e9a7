//! Add Consent and Remove Consent.

use clap::{Args, Subcommand};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::conditions::is_deleted,
};

use super::{
    AppName, CliError,
    apps::FIELD_MANAGER,
    cluster::Target,
    render::{self, BOLD, GOOD, paint},
};
use crate::api::{AppConsent, AppConsentSpec, AppRef, conditions};

#[derive(Subcommand, Debug)]
pub enum ConsentCommand {
    /// Consent to an app: this namespace may use it. Waits for the outcome.
    #[command(after_help = "Examples:
  kubectl registrar consent add team-a/billing-portal -n team-b
  kubectl registrar consent add registrar-system/vendor-analytics -n team-b --oauth-scope reports.read")]
    Add(AddArgs),
    /// Remove this namespace's consent to an app: it may no longer use it.
    #[command(after_help = "Examples:
  kubectl registrar consent remove team-a/billing-portal -n team-b")]
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The app: NAMESPACE/NAME (NAME alone: an app of this namespace).
    pub app: AppName,
    /// Only these of the app's scopes (repeat; default: all of them).
    #[arg(long = "oauth-scope", value_name = "SCOPE")]
    pub oauth_scopes: Vec<String>,
    /// The AppConsent's name (default: the app's name).
    #[arg(long)]
    pub name: Option<String>,
    /// A label for the AppConsent, KEY=VALUE (repeat).
    #[arg(short = 'l', long = "label", value_parser = super::parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The app (NAMESPACE/NAME), or the AppConsent's name.
    pub app: AppName,
}

pub async fn run(target: &Target, command: ConsentCommand) -> Result<(), CliError> {
    match command {
        ConsentCommand::Add(args) => add(target, args).await,
        ConsentCommand::Remove(args) => remove(target, args).await,
    }
}

async fn add(target: &Target, args: AddArgs) -> Result<(), CliError> {
    let ns = target.namespace.clone();
    let app_ref =
        AppRef { namespace: args.app.namespace.clone().unwrap_or_else(|| ns.clone()), name: args.app.name.clone() };
    let name = args.name.clone().unwrap_or_else(|| args.app.name.clone());
    let api = target.consents(&ns);
    let existing = match api.get_opt(&name).await {
        Ok(found) => found,
        Err(e) => return Err(target.explain(e, "get", "appconsents", Some(&ns)).await),
    };
    match existing {
        Some(c) if c.spec.app_ref != app_ref => {
            return Err(CliError::Refused(format!(
                "AppConsent {name:?} in {ns} is for {}/{}: give this one another name with --name",
                c.spec.app_ref.namespace, c.spec.app_ref.name
            )));
        }
        Some(_) => render::note(&format!("AppConsent {name:?} already exists in {ns}; its outcome:")),
        None => {
            let spec = AppConsentSpec {
                app_ref: app_ref.clone(),
                oauth_scopes: (!args.oauth_scopes.is_empty()).then(|| args.oauth_scopes.clone()),
            };
            let mut consent = AppConsent::new(&name, spec);
            consent.metadata.namespace = Some(ns.clone());
            if !args.labels.is_empty() {
                consent.metadata.labels = Some(args.labels.iter().cloned().collect());
            }
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            if let Err(e) = api.create(&params, &consent).await {
                return Err(match e {
                    kube::Error::Api(s) if s.code == 422 => {
                        CliError::Refused(format!("the apiserver refused the consent: {}", s.message))
                    }
                    e => target.explain(e, "create", "appconsents", Some(&ns)).await,
                });
            }
        }
    }
    let decided = |c: Option<&AppConsent>| c.and_then(granted).is_some();
    let consent = target
        .wait_for(api, &name, "registrar to decide on the consent", decided)
        .await?
        .ok_or_else(|| CliError::Refused(format!("AppConsent {name:?} was deleted while waiting")))?;
    let (status, reason, message) = granted(&consent).unwrap_or_default();
    let app = format!("{}/{}", app_ref.namespace, app_ref.name);
    if status {
        let st = consent.status.clone().unwrap_or_default();
        let scopes = if st.granted_scopes.is_empty() { "no scopes".to_owned() } else { st.granted_scopes.join(", ") };
        render::out(&format!(
            "{} {ns} may use {} ({app}, Client ID {}) with {scopes}.",
            paint(GOOD, "Granted:"),
            paint(BOLD, st.display_name.as_deref().unwrap_or(&app_ref.name)),
            st.client_id.as_deref().unwrap_or("-"),
        ));
        return Ok(());
    }
    Err(CliError::Refused(format!(
        "not granted: {} ({reason}): {message}. The AppConsent {ns}/{name} stays and is granted once this changes; \
         `kubectl registrar consent remove {app} -n {ns}` withdraws it.",
        in_words(&reason)
    )))
}

/// The Granted condition for the current generation: (status, reason, message).
fn granted(consent: &AppConsent) -> Option<(bool, String, String)> {
    let status = consent.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == conditions::GRANTED)?;
    if c.observed_generation.is_some() && c.observed_generation != consent.metadata.generation {
        return None;
    }
    Some((conditions::truth(c) == Some(true), c.reason.clone(), c.message.clone()))
}

/// A consent's reason, in words.
pub fn in_words(reason: &str) -> &'static str {
    use conditions::consent_reason as r;
    match reason {
        r::GRANTED => "granted",
        r::APP_NOT_FOUND => "the app does not exist",
        r::NOT_VISIBLE => "the app is not visible from this namespace",
        r::SCOPE_MISMATCH => "it asks for scopes the app does not have",
        r::APP_REVOKED => "the app was revoked",
        r::NOT_ALLOWLISTED => "the organization's policy does not allow this app",
        r::POLICY_PENDING => "the organization's policy is switching to Restricted; asked again once it is in force",
        _ => "see the message",
    }
}

async fn remove(target: &Target, args: RemoveArgs) -> Result<(), CliError> {
    let ns = target.namespace.clone();
    let api: Api<AppConsent> = target.consents(&ns);
    let consents = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return Err(target.explain(e, "list", "appconsents", Some(&ns)).await),
    };
    let found = consents.into_iter().find(|c| match &args.app.namespace {
        Some(app_ns) => c.spec.app_ref.namespace == *app_ns && c.spec.app_ref.name == args.app.name,
        None => c.name_any() == args.app.name,
    });
    let Some(consent) = found else {
        return Err(CliError::NotFound {
            kind: "AppConsent",
            name: args.app.namespace.as_ref().map_or(args.app.name.clone(), |n| format!("for {n}/{}", args.app.name)),
            namespace: ns.clone(),
            hint: format!(" (`kubectl get appconsents -n {ns}` lists them)"),
        });
    };
    let name = consent.name_any();
    let uid = consent.uid().unwrap_or_default();
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        return Err(target.explain(e, "delete", "appconsents", Some(&ns)).await);
    }
    target.wait_for(api, &name, "the consent to be removed", is_deleted(&uid)).await?;
    let app = format!("{}/{}", consent.spec.app_ref.namespace, consent.spec.app_ref.name);
    render::out(&format!("Removed the consent to {app}: {ns} may no longer use it."));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consent_reason_has_words() {
        use conditions::consent_reason as r;
        for reason in [
            r::GRANTED,
            r::APP_NOT_FOUND,
            r::NOT_VISIBLE,
            r::SCOPE_MISMATCH,
            r::APP_REVOKED,
            r::NOT_ALLOWLISTED,
            r::POLICY_PENDING,
        ] {
            assert_ne!(in_words(reason), "see the message", "{reason}");
        }
    }
}
