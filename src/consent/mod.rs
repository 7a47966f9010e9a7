//! The AppConsent controller: grants (or says exactly why not) a namespace's
//! consent to a shared app, and keeps that answer current as the app, its
//! scopes, the namespaces' organizations, the organization's policy and the
//! app's deletion change. Every change of the answer is an Event on the
//! consent, published once the statuses have settled ([`crate::runtime::announce`]).

pub mod organizations;
pub mod policy;
pub mod visibility;

use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
    },
};
use tracing::{info, warn};

use crate::{
    api::{AppConsent, AppConsentStatus, OrganizationPolicy, conditions},
    cluster::Caches,
    cluster::ledger::Word,
    credentials::seal::SealKey,
    runtime::announce::Announcer,
    runtime::controller::{self, Harness, Reconciler, Source},
    runtime::kube::{status_patch, to_time},
    runtime::retry,
    runtime::{Key, key_of},
};
use policy::{Allowance, ConsentSeen, PolicyApp, PolicyFacts};
use visibility::{AppFacts, ConsentFacts, evaluate};

/// Why a consent reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of AppConsent {object} failed: {source}")]
    WriteStatus {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// The policy that governs consents in a namespace, as the caches know it.
pub struct NamespacePolicy {
    /// The namespace's organization.
    pub organization: String,
    /// Its policy object, if it has one.
    policy: Option<Arc<OrganizationPolicy>>,
}

impl NamespacePolicy {
    pub fn of(caches: &Caches, namespace: &str) -> Self {
        let (organization, policy) = caches.policy_for(namespace);
        NamespacePolicy { organization, policy }
    }

    /// The policy's rules, checking seals with `seal_key`.
    pub fn facts<'a>(&'a self, seal_key: &'a SealKey) -> PolicyFacts<'a> {
        PolicyFacts { organization: &self.organization, policy: self.policy.as_deref(), seal_key }
    }
}

/// Whether the policy of `namespace` allows the app `app`, holding
/// `client_id`, there: for one of the namespace's consents to it (a grant
/// kept from before a switch to Restricted counts), or, with none, for a
/// consent to come. The app's own namespace always allows it.
pub fn policy_allows(caches: &Caches, namespace: &str, app: &Key, client_id: &str) -> bool {
    if namespace == app.namespace {
        return true;
    }
    let in_force = NamespacePolicy::of(caches, namespace);
    let facts = in_force.facts(caches.seal_key());
    let app_org = caches.organization_of(&app.namespace);
    let subject = PolicyApp { namespace: &app.namespace, name: &app.name, organization: &app_org, client_id };
    let consents = caches.consents_to(namespace, app);
    if consents.is_empty() {
        return facts.allowance(None, &subject) != Allowance::Refused;
    }
    consents.iter().any(|consent| {
        let key = key_of(consent.as_ref()).to_string();
        let seen = ConsentSeen {
            key: &key,
            uid: consent.metadata.uid.as_deref().unwrap_or_default(),
            grant: consent.status.as_ref().and_then(|s| s.grant.as_ref()),
        };
        facts.allowance(Some(&seen), &subject) != Allowance::Refused
    })
}

/// How long a stopping controller publishes the Events still queued.
const ANNOUNCE_ON_STOP: std::time::Duration = std::time::Duration::from_secs(5);

struct Context {
    client: Client,
    /// The read model; its seal key checks and seals the grants' records.
    caches: Caches,
    /// Each change's Event, published once the statuses have settled.
    announcer: Announcer<ObjectReference>,
}

impl Reconciler for Context {
    type Object = AppConsent;
    type Read = AppConsent;
    type Error = Error;
    const KIND: &'static str = "AppConsent";
    const CONTROLLER: &'static str = "appconsent";

    async fn synced(&self) {
        self.caches.synced().await;
    }

    fn everything(&self) -> Vec<Key> {
        self.caches.consents().iter().map(|c| key_of(c.as_ref())).collect()
    }

    fn read(consent: Arc<AppConsent>) -> Arc<AppConsent> {
        consent
    }

    async fn reconcile(&self, consent: Arc<AppConsent>) -> Result<Action, Error> {
        let _in_flight = self.announcer.busy(&consent.namespace().unwrap_or_default());
        evaluate_and_write(&consent, self).await
    }

    fn category(error: &Error) -> &'static str {
        match error {
            Error::WriteStatus { .. } => "write_status",
        }
    }
}

/// Runs the AppConsent controller until `shutdown` resolves.
pub async fn run(
    harness: Harness,
    caches: Caches,
    triggers: mpsc::Receiver<ObjectRef<AppConsent>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = harness.client.clone();
    let reporter = Reporter { controller: "registrar".into(), instance: harness.instance.clone() };
    let publisher = client.clone();
    let (announcer, announcing) = Announcer::start(move |event: Event, consent: ObjectReference| {
        // A change of answer names the change: nothing to fold into a series,
        // so not the shared recorder, which keeps every Event it publishes for
        // six minutes and scans them all on each publish (a revocation of
        // 10,000 consents would hold 10,000 Events).
        let publisher = Recorder::new(publisher.clone(), reporter.clone());
        async move {
            if let Err(e) = publisher.publish(&event, &consent).await {
                let (namespace, name) = (consent.namespace.unwrap_or_default(), consent.name.unwrap_or_default());
                warn!(namespace, name, error = %e, "could not publish an Event");
            }
        }
    });
    let store = caches.consent_store();
    let ctx = Arc::new(Context { client, caches, announcer });
    controller::run(ctx.clone(), harness, Source::Cache(store), triggers, shutdown).await;
    // The Events still queued go out now, for a moment at most.
    ctx.announcer.stop();
    if tokio::time::timeout(ANNOUNCE_ON_STOP, announcing).await.is_err() {
        warn!("some consent Events were not published before the controller stopped");
    }
}

async fn evaluate_and_write(consent: &AppConsent, ctx: &Context) -> Result<Action, Error> {
    let namespace = consent.namespace().unwrap_or_default();
    let app_ref = &consent.spec.app_ref;
    let app = ctx.caches.app(&app_ref.namespace, &app_ref.name);
    // The organization's policy: what it allows this app, and what to ask for.
    let in_force = NamespacePolicy::of(&ctx.caches, &namespace);
    let consent_org = &in_force.organization;
    let app_org = ctx.caches.organization_of(&app_ref.namespace);
    let current = consent.status.clone().unwrap_or_default();
    let facts = app.as_deref().map(|app| {
        let status = app.status.as_ref();
        // A Client ID the ledger gives another app is not this app's; one it
        // revoked is this app's only while the app is being deleted (its own
        // revocation).
        let app_key = Key::new(&app_ref.namespace, &app_ref.name);
        let uid = crate::runtime::Uid::of(app.meta().uid.as_deref().unwrap_or_default());
        let deleting = app.meta().deletion_timestamp.is_some();
        let client_id = status.and_then(|s| s.client_id.as_deref()).filter(|id| match ctx.caches.ledger().word(id) {
            Word::Free => true,
            Word::Revoked => deleting,
            Word::Standing(standing) => standing.holder == app_key && standing.uid == uid,
        });
        AppFacts {
            namespace: &app_ref.namespace,
            name: &app_ref.name,
            organization: &app_org,
            scope: app.spec.scope,
            display_name: &app.spec.display_name,
            client_id,
            oauth_scopes: &app.spec.oauth_scopes,
            deleting: app.meta().deletion_timestamp.is_some(),
        }
    });
    let policy = in_force.facts(ctx.caches.seal_key());
    let consent_key = key_of(consent).to_string();
    let seen = ConsentSeen {
        key: &consent_key,
        uid: consent.metadata.uid.as_deref().unwrap_or_default(),
        grant: current.grant.as_ref(),
    };
    let app_key = format!("{}/{}", app_ref.namespace, app_ref.name);
    let policy_app = facts.as_ref().and_then(|app| {
        Some(PolicyApp {
            namespace: app.namespace,
            name: app.name,
            organization: app.organization,
            client_id: app.client_id?,
        })
    });
    let (allowance, refusal) = match (&facts, &policy_app) {
        (Some(app), Some(policy_app)) => {
            let allowance = policy.allowance(Some(&seen), policy_app);
            let refusal = (allowance == Allowance::Refused).then(|| {
                let needed: Vec<&str> = match consent.spec.oauth_scopes.as_deref() {
                    Some(requested) => requested.iter().map(String::as_str).collect(),
                    None => app.oauth_scopes.iter().map(String::as_str).collect(),
                };
                // Bound to this Client ID: it was granted once (the binding
                // outlives a denial, so the message stays the same on every pass).
                let was_granted = current.client_id.as_deref() == app.client_id;
                policy.refusal(policy_app, &needed, was_granted)
            });
            (allowance, refusal)
        }
        _ => (Allowance::Unpinned, None),
    };
    let evaluation = evaluate(
        &ConsentFacts {
            namespace: &namespace,
            app: &app_key,
            organization: consent_org,
            requested_scopes: consent.spec.oauth_scopes.as_deref(),
            status: &current,
            allowance,
            refusal,
        },
        facts.as_ref(),
    );
    let changed = conditions::find(&current.conditions, conditions::GRANTED)
        .is_none_or(|c| c.reason != evaluation.condition.reason || c.message != evaluation.condition.message);
    let announce = changed.then(|| evaluation.condition.clone());

    let now = Timestamp::now();
    // registrar's record of the grant, which a switch to Restricted keeps.
    let grant = policy_app.as_ref().and_then(|app| {
        let granted = evaluation.condition.status.then_some(evaluation.granted_scopes.as_slice());
        policy.record(&seen, app, granted, now)
    });
    let generation = consent.metadata.generation;
    let desired = AppConsentStatus {
        app: Some(app_key),
        client_id: evaluation.client_id,
        display_name: evaluation.display_name,
        granted_scopes: evaluation.granted_scopes,
        pending_scopes: evaluation.pending_scopes,
        held_scopes: evaluation.held_scopes,
        grant,
        observed_generation: generation,
        conditions: conditions::settle(&current.conditions, &[evaluation.condition], generation, &to_time(now)),
    };
    if consent.status.as_ref() != Some(&desired) {
        let reason = desired.conditions.first().map(|c| c.reason.clone()).unwrap_or_default();
        info!(namespace, name = consent.name_any(), app = desired.app, reason, "consent evaluated");
        let api: Api<AppConsent> = Api::namespaced(ctx.client.clone(), &namespace);
        let (params, patch) = status_patch(consent, consent.status.as_ref(), &desired);
        match api.patch_status(&consent.name_any(), &params, &patch).await {
            Ok(_) => {}
            // Changed since it was read: the change brings it back to this controller.
            Err(kube::Error::Api(s)) if s.is_conflict() => return Ok(Action::await_change()),
            Err(e) => {
                return Err(Error::WriteStatus {
                    object: format!("{namespace}/{}", consent.name_any()),
                    source: Box::new(e),
                });
            }
        }
        if let Some(condition) = announce {
            announce_change(consent, &condition, ctx).await;
        }
    }
    Ok(Action::await_change())
}

/// An Event on the consent for each change of its answer: Normal when it is
/// granted, Warning with the reason when not (queued: [`crate::runtime::announce`]).
async fn announce_change(consent: &AppConsent, condition: &conditions::DesiredCondition, ctx: &Context) {
    let event = Event {
        type_: if condition.status { EventType::Normal } else { EventType::Warning },
        reason: condition.reason.into(),
        note: Some(retry::event_note(&condition.message)),
        action: "Evaluate".into(),
        secondary: None,
    };
    ctx.announcer.announce(&consent.namespace().unwrap_or_default(), event, consent.object_ref(&())).await;
}

/// The shell against a mock apiserver: the exact requests a consent's
/// evaluation makes.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::api::ObjectMeta;
    use tokio::sync::mpsc as queue;

    use super::*;
    use crate::{
        api::{
            AppConsentSpec, AppRef, AppRegistration, AppRegistrationSpec, AppRegistrationStatus, ClientIdEntry, Holder,
            Scope,
        },
        cluster::Contents,
        runtime::mock,
    };

    const APP_UID: &str = "11111111-1111-1111-1111-111111111111";

    fn app() -> AppRegistration {
        let spec = AppRegistrationSpec {
            display_name: "Billing".into(),
            scope: Scope::Organization,
            oauth_scopes: vec!["invoices.read".into()],
            ..Default::default()
        };
        let mut app = AppRegistration::new("billing", spec);
        app.metadata.namespace = Some("owner".into());
        app.metadata.uid = Some(APP_UID.into());
        app.status = Some(AppRegistrationStatus { client_id: Some("id-billing".into()), ..Default::default() });
        app
    }

    fn consent(status: Option<AppConsentStatus>) -> AppConsent {
        let spec = AppConsentSpec {
            app_ref: AppRef { namespace: "owner".into(), name: "billing".into() },
            oauth_scopes: None,
        };
        AppConsent {
            metadata: ObjectMeta {
                name: Some("use-billing".into()),
                namespace: Some("team".into()),
                uid: Some("22222222-2222-2222-2222-222222222222".into()),
                resource_version: Some("5".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec,
            status,
        }
    }

    /// The context over caches holding the app, its Client ID in the ledger
    /// and `consent`; the Events it would publish come out of the receiver.
    fn context(client: Client, consent: &AppConsent) -> (Arc<Context>, queue::UnboundedReceiver<Event>) {
        let holder = Holder { namespace: "owner".into(), name: "billing".into(), uid: APP_UID.into() };
        let caches = Caches::holding(Contents {
            apps: vec![app()],
            consents: vec![consent.clone()],
            ledger: vec![ClientIdEntry::active("id-billing", holder)],
            namespaces: vec![("owner", None), ("team", None)],
            ..Default::default()
        });
        let (events, published) = queue::unbounded_channel();
        let (announcer, _publishing) = Announcer::start(move |event: Event, _: ObjectReference| {
            let _ = events.send(event);
            async {}
        });
        (Arc::new(Context { client, caches, announcer }), published)
    }

    fn evaluate(consent: &AppConsent, ctx: &Arc<Context>) -> tokio::task::JoinHandle<Result<Action, Error>> {
        let (consent, ctx) = (consent.clone(), ctx.clone());
        tokio::spawn(async move { evaluate_and_write(&consent, &ctx).await })
    }

    /// A new consent to an app of its organization: one status write,
    /// conditional on the resourceVersion read, then one Event.
    #[tokio::test]
    async fn a_new_consent_is_granted_with_one_status_write_then_one_event() {
        let (client, mut apiserver) = mock::pair();
        let new = consent(None);
        let (ctx, mut events) = context(client, &new);
        let evaluating = evaluate(&new, &ctx);

        let write = apiserver.next().await;
        assert_eq!(write.method, http::Method::PATCH);
        assert_eq!(write.path, "/apis/registrar.dev/v1alpha1/namespaces/team/appconsents/use-billing/status");
        assert_eq!(write.body["metadata"]["resourceVersion"], "5", "conditional on the version read");
        let status = &write.body["status"];
        assert_eq!(status["conditions"][0]["type"], "Granted");
        assert_eq!(status["conditions"][0]["status"], "True", "{status}");
        assert_eq!(status["clientId"], "id-billing");
        assert_eq!(status["grantedScopes"], serde_json::json!(["invoices.read"]));
        let mut written = new.clone();
        written.status = Some(serde_json::from_value(status.clone()).expect("a status"));
        write.answer(200, &serde_json::to_value(&written).expect("JSON"));

        assert_eq!(evaluating.await.expect("joined").expect("evaluated"), Action::await_change());
        let event = events.recv().await.expect("an Event");
        assert_eq!((event.type_, event.reason.as_str()), (EventType::Normal, "Granted"));
        apiserver.expect_none_within(Duration::from_millis(200)).await;

        // Evaluated again as written: nothing to do, no request at all.
        let (client, mut apiserver) = mock::pair();
        let (ctx, mut events) = context(client, &written);
        let again = evaluate(&written, &ctx);
        apiserver.expect_none_within(Duration::from_millis(200)).await;
        assert_eq!(again.await.expect("joined").expect("evaluated"), Action::await_change());
        assert!(events.try_recv().is_err(), "no Event without a change");
    }

    /// Changed since it was read: no Event, and the change brings it back.
    #[tokio::test]
    async fn a_conflicting_write_waits_for_the_change_and_tells_nothing() {
        let (client, mut apiserver) = mock::pair();
        let new = consent(None);
        let (ctx, mut events) = context(client, &new);
        let evaluating = evaluate(&new, &ctx);
        apiserver.next().await.fail(409, "Conflict");
        assert_eq!(evaluating.await.expect("joined").expect("no failure"), Action::await_change());
        assert!(events.try_recv().is_err(), "no Event for an answer not written");
    }

    /// A refused write is an error the harness retries, named by its category.
    #[tokio::test]
    async fn a_refused_write_is_a_write_status_error() {
        let (client, mut apiserver) = mock::pair();
        let new = consent(None);
        let (ctx, _events) = context(client, &new);
        let evaluating = evaluate(&new, &ctx);
        apiserver.next().await.fail(403, "Forbidden");
        let error = evaluating.await.expect("joined").expect_err("a failure");
        assert_eq!(<Context as Reconciler>::category(&error), "write_status");
        assert!(error.to_string().starts_with("writing the status of AppConsent team/use-billing failed"), "{error}");
    }
}
