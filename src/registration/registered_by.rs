//! Whether the annotation `registrar.dev/registered-by` can be believed.
//!
//! `secret.sourceRef` reads a Secret for the user who registered the app,
//! and that user is whatever the annotation says. Only admission makes it
//! true: a recorder writes the requesting user at creation — the
//! MutatingAdmissionPolicy of `deploy/registered-by-policy.yaml` (Kubernetes
//! 1.36+) or, on clusters without it, registrar's own admission webhook
//! (`webhook`, configured by a MutatingWebhookConfiguration of the same name)
//! — and the ValidatingAdmissionPolicy `<name>-immutable` keeps anyone from
//! changing it. Without them an editor of apps writes any name there, and
//! registrar would read a Secret for someone who never asked. So registrar
//! believes the annotation only while it can see a recorder and the
//! immutability policy installed, enforcing, and in place since before the
//! app was created (an object deleted and created again has a newer creation
//! time, so "older than the app" means "there all along"). Their state is
//! read at most every [`RECHECK`].

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::admissionregistration::v1::{
        MatchResources, MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, MutatingWebhook,
        MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, Time},
};
use kube::{Api, Client, Resource};
use tokio::time::Instant;

/// How long what was seen of the policies is trusted before asking again.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Seconds after the newest of the policies' creation times from which an
/// app's annotation is believed.
pub const TAKES_EFFECT: i64 = 2;

/// The name of the ValidatingAdmissionPolicy (and binding) that keeps the
/// annotation, given the MutatingAdmissionPolicy's.
pub fn immutable_name(policy: &str) -> String {
    format!("{policy}-immutable")
}

/// What registrar saw of the Registered By policies.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// All four are installed and enforcing; the newest was created then.
    Since(Time),
    /// Why the annotation cannot be believed (ends without a full stop).
    Refused(String),
}

/// The objects, as read (None: not found, or not served by this cluster).
#[derive(Default)]
pub struct Seen {
    pub mutating: Option<MutatingAdmissionPolicy>,
    pub mutating_binding: Option<MutatingAdmissionPolicyBinding>,
    pub webhook: Option<MutatingWebhookConfiguration>,
    pub validating: Option<ValidatingAdmissionPolicy>,
    pub validating_binding: Option<ValidatingAdmissionPolicyBinding>,
}

/// Why a recorder of Registered By cannot be believed.
enum Fault {
    /// Not installed (or not served here).
    Missing(String),
    /// Installed, but it does not record every app.
    Weak(String),
}

/// Judges what was seen of the recorders and the policy named after `policy`.
pub fn judge(policy: &str, seen: &Seen) -> Verdict {
    let immutable = immutable_name(policy);
    // The newest creation time of the recorder registrar believes: either
    // one, the one in place longer when both are.
    let recorded = match (by_policy(policy, seen), by_webhook(policy, seen)) {
        (Ok(a), Ok(b)) => a.min(b),
        (Ok(since), Err(_)) | (Err(_), Ok(since)) => since,
        (Err(Fault::Weak(why)), _) | (Err(Fault::Missing(_)), Err(Fault::Weak(why))) => {
            return Verdict::Refused(why);
        }
        (Err(Fault::Missing(policy_missing)), Err(Fault::Missing(_))) => {
            return Verdict::Refused(format!(
                "{policy_missing}, nor is MutatingWebhookConfiguration {policy} (registrar's webhook, for clusters \
                 without MutatingAdmissionPolicy)"
            ));
        }
    };
    let missing = |kind: &str, name: &str| Verdict::Refused(format!("{kind} {name} is not installed"));
    let Some(validating) = &seen.validating else { return missing("ValidatingAdmissionPolicy", &immutable) };
    let Some(validating_binding) = &seen.validating_binding else {
        return missing("ValidatingAdmissionPolicyBinding", &immutable);
    };
    if validating.spec.as_ref().and_then(|s| s.failure_policy.as_deref()).is_some_and(|p| p != "Fail") {
        return Verdict::Refused(format!("ValidatingAdmissionPolicy {immutable} does not have failurePolicy Fail"));
    }
    let binding = &validating_binding.spec;
    if binding.policy_name != immutable {
        return Verdict::Refused(format!(
            "ValidatingAdmissionPolicyBinding {immutable} does not bind policy {immutable}"
        ));
    }
    if narrows(binding.match_resources.as_ref()) || binding.param_ref.is_some() {
        return Verdict::Refused(format!(
            "ValidatingAdmissionPolicyBinding {immutable} narrows where it applies (matchResources or paramRef)"
        ));
    }
    if !binding.validation_actions.iter().any(|a| a == "Deny") {
        return Verdict::Refused(format!("ValidatingAdmissionPolicyBinding {immutable} does not Deny"));
    }
    let created =
        [validating.meta().creation_timestamp.as_ref(), validating_binding.meta().creation_timestamp.as_ref()];
    match created.into_iter().collect::<Option<Vec<_>>>().and_then(|c| c.into_iter().max().cloned()) {
        Some(newest) => Verdict::Since(newest.max(recorded)),
        None => Verdict::Refused("the Registered By policies record no creation time".into()),
    }
}

/// The MutatingAdmissionPolicy and its binding, when they record every app:
/// the newer creation time of the two.
fn by_policy(policy: &str, seen: &Seen) -> Result<Time, Fault> {
    let missing = |kind: &str| Fault::Missing(format!("{kind} {policy} is not installed"));
    let Some(mutating) = &seen.mutating else { return Err(missing("MutatingAdmissionPolicy")) };
    let Some(binding) = &seen.mutating_binding else { return Err(missing("MutatingAdmissionPolicyBinding")) };
    // failurePolicy defaults to Fail; Ignore lets objects through unmutated.
    if mutating.spec.as_ref().and_then(|s| s.failure_policy.as_deref()).is_some_and(|p| p != "Fail") {
        return Err(Fault::Weak(format!("MutatingAdmissionPolicy {policy} does not have failurePolicy Fail")));
    }
    let Some(spec) = binding.spec.as_ref() else {
        return Err(Fault::Weak(format!("MutatingAdmissionPolicyBinding {policy} has no spec")));
    };
    if spec.policy_name.as_deref() != Some(policy) {
        return Err(Fault::Weak(format!("MutatingAdmissionPolicyBinding {policy} does not bind policy {policy}")));
    }
    if narrows(spec.match_resources.as_ref()) || spec.param_ref.is_some() {
        return Err(Fault::Weak(format!(
            "MutatingAdmissionPolicyBinding {policy} narrows where it applies (matchResources or paramRef)"
        )));
    }
    newest(&[mutating.meta().creation_timestamp.as_ref(), binding.meta().creation_timestamp.as_ref()])
}

/// The MutatingWebhookConfiguration, when one of its webhooks is sent every
/// CREATE and UPDATE of an AppRegistration and fails closed: its creation time.
/// Where it points is the cluster admin's, as the policy's expressions are.
fn by_webhook(name: &str, seen: &Seen) -> Result<Time, Fault> {
    let Some(configuration) = &seen.webhook else {
        return Err(Fault::Missing(format!("MutatingWebhookConfiguration {name} is not installed")));
    };
    let webhooks = configuration.webhooks.as_deref().unwrap_or_default();
    if !webhooks.iter().any(records_every_app) {
        return Err(Fault::Weak(format!(
            "MutatingWebhookConfiguration {name} has no webhook that is sent every CREATE and UPDATE of \
             appregistrations.registrar.dev with failurePolicy Fail, no namespace or object selector, and no \
             match condition but {:?}",
            super::webhook::NOT_BEING_DELETED.0
        )));
    }
    newest(&[configuration.meta().creation_timestamp.as_ref()])
}

/// Whether a webhook is sent every CREATE and UPDATE of an AppRegistration
/// (but for objects being deleted) and fails closed.
fn records_every_app(webhook: &MutatingWebhook) -> bool {
    use crate::api::AppRegistration;
    let any =
        |list: Option<&Vec<String>>, wanted: &str| list.is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted));
    let rules = webhook.rules.as_deref().unwrap_or_default();
    let covers = |operation: &str| {
        rules.iter().any(|rule| {
            any(rule.api_groups.as_ref(), &AppRegistration::group(&()))
                && any(rule.api_versions.as_ref(), &AppRegistration::version(&()))
                && any(rule.resources.as_ref(), &AppRegistration::plural(&()))
                && any(rule.operations.as_ref(), operation)
                && rule.scope.as_deref().is_none_or(|s| s == "*" || s == "Namespaced")
        })
    };
    let (name, expression) = super::webhook::NOT_BEING_DELETED;
    let conditions_ok = webhook
        .match_conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|c| c.name == name && c.expression.trim() == expression);
    let selects = |s: Option<&LabelSelector>| {
        s.is_some_and(|s| {
            s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
                || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
        })
    };
    webhook.failure_policy.as_deref().is_none_or(|p| p == "Fail")
        && covers("CREATE")
        && covers("UPDATE")
        && conditions_ok
        && !selects(webhook.namespace_selector.as_ref())
        && !selects(webhook.object_selector.as_ref())
}

/// The newest of creation times, all of which must be known.
fn newest(created: &[Option<&Time>]) -> Result<Time, Fault> {
    created
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .and_then(|c| c.into_iter().max().cloned())
        .ok_or_else(|| Fault::Weak("the Registered By policies record no creation time".into()))
}

/// Whether a binding's matchResources leaves out some of what its policy
/// matches (the apiserver fills in empty selectors itself).
fn narrows(matched: Option<&MatchResources>) -> bool {
    let selects = |s: Option<&LabelSelector>| {
        s.is_some_and(|s| {
            s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
                || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
        })
    };
    matched.is_some_and(|m| {
        selects(m.namespace_selector.as_ref())
            || selects(m.object_selector.as_ref())
            || m.resource_rules.as_ref().is_some_and(|r| !r.is_empty())
            || m.exclude_resource_rules.as_ref().is_some_and(|r| !r.is_empty())
    })
}

/// Why the annotation on an app created at `created` cannot be believed,
/// under `verdict`; None when it can.
pub fn doubt(verdict: &Verdict, created: Option<&Time>) -> Option<String> {
    match (verdict, created) {
        (Verdict::Refused(why), _) => Some(why.clone()),
        // Creation times count whole seconds, and the apiserver takes a
        // moment to act on a new policy: an app is believed from
        // [`TAKES_EFFECT`] after the newest object's second.
        (Verdict::Since(since), Some(created)) if created.0.as_second() >= since.0.as_second() + TAKES_EFFECT => None,
        (Verdict::Since(since), _) => Some(format!(
            "the app was created before the Registered By policies were in place (the newest at {}, in effect \
             {TAKES_EFFECT} s later), so who registered it is not known; an app created now is",
            since.0
        )),
    }
}

/// Reads the policies at most every [`RECHECK`].
pub struct Guard {
    policy: String,
    last: Mutex<Option<(Instant, Verdict)>>,
}

impl Guard {
    pub fn new(policy: String) -> Self {
        Guard { policy, last: Mutex::new(None) }
    }

    /// The MutatingAdmissionPolicy's name.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// What the policies are now (read again when older than [`RECHECK`]).
    /// An error other than "not found" or "forbidden" is returned, to retry.
    pub async fn verdict(&self, client: &Client) -> Result<Verdict, kube::Error> {
        if let Some((at, verdict)) = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && at.elapsed() < RECHECK
        {
            return Ok(verdict);
        }
        let verdict = match self.read(client).await {
            Ok(seen) => judge(&self.policy, &seen),
            Err(kube::Error::Api(status)) if status.is_forbidden() => Verdict::Refused(format!(
                "registrar may not get the Registered By policies (grant it get on MutatingAdmissionPolicy, \
                 MutatingAdmissionPolicyBinding and MutatingWebhookConfiguration {0}, ValidatingAdmissionPolicy \
                 and ValidatingAdmissionPolicyBinding {0}-immutable)",
                self.policy
            )),
            Err(e) => return Err(e),
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), verdict.clone()));
        Ok(verdict)
    }

    async fn read(&self, client: &Client) -> Result<Seen, kube::Error> {
        let immutable = immutable_name(&self.policy);
        let (m, mb, w, v, vb) = (
            Api::<MutatingAdmissionPolicy>::all(client.clone()),
            Api::<MutatingAdmissionPolicyBinding>::all(client.clone()),
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            Api::<ValidatingAdmissionPolicy>::all(client.clone()),
            Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
        );
        // On a cluster without MutatingAdmissionPolicy (1.35) its reads find
        // nothing, as for one not installed.
        let (mutating, mutating_binding, webhook, validating, validating_binding) = tokio::try_join!(
            m.get_opt(&self.policy),
            mb.get_opt(&self.policy),
            w.get_opt(&self.policy),
            v.get_opt(&immutable),
            vb.get_opt(&immutable),
        )?;
        Ok(Seen { mutating, mutating_binding, webhook, validating, validating_binding })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "registrar-registered-by";

    /// A change to what was seen.
    type Change = fn(&mut Seen);

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + seconds).expect("time"))
    }

    fn installed() -> Seen {
        let policy = |name: &str, created: i64| -> serde_json::Value {
            serde_json::json!({ "name": name, "creationTimestamp": at(created) })
        };
        fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
            serde_json::from_value(v).expect("object")
        }
        Seen {
            mutating: Some(from(serde_json::json!({
                "metadata": policy(POLICY, 1), "spec": { "failurePolicy": "Fail" }
            }))),
            mutating_binding: Some(from(serde_json::json!({
                "metadata": policy(POLICY, 2), "spec": { "policyName": POLICY }
            }))),
            webhook: None,
            validating: Some(from(serde_json::json!({
                "metadata": policy("registrar-registered-by-immutable", 3), "spec": {}
            }))),
            validating_binding: Some(from(serde_json::json!({
                "metadata": policy("registrar-registered-by-immutable", 4),
                "spec": { "policyName": "registrar-registered-by-immutable", "validationActions": ["Deny"] }
            }))),
        }
    }

    #[test]
    fn installed_policies_are_believed_for_apps_created_after_the_newest() {
        let verdict = judge(POLICY, &installed());
        assert_eq!(verdict, Verdict::Since(at(4)));
        assert_eq!(doubt(&verdict, Some(&at(6))), None);
        assert!(doubt(&verdict, Some(&at(5))).is_some(), "not yet in effect for certain");
        let doubted = doubt(&verdict, Some(&at(4))).expect("same second: not known which came first");
        assert!(doubted.contains("created before the Registered By policies were in place"), "{doubted}");
        assert!(doubt(&verdict, Some(&at(0))).is_some());
        assert!(doubt(&verdict, None).is_some());
    }

    /// As the chart installs it on a cluster without MutatingAdmissionPolicy.
    fn webhook(created: i64) -> MutatingWebhookConfiguration {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": POLICY, "creationTimestamp": at(created) },
            "webhooks": [{
                "name": "registered-by.registrar.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "clientConfig": { "service": { "namespace": "registrar-system", "name": "registrar-webhook" } },
                "rules": [{
                    "apiGroups": ["registrar.dev"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["appregistrations"], "scope": "Namespaced"
                }],
                "matchConditions": [{ "name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)" }],
                "namespaceSelector": {}, "objectSelector": {}
            }]
        }))
        .expect("a webhook configuration")
    }

    /// The webhook in place of the MutatingAdmissionPolicy (Kubernetes 1.35).
    fn with_webhook() -> Seen {
        Seen { mutating: None, mutating_binding: None, webhook: Some(webhook(5)), ..installed() }
    }

    #[test]
    fn the_webhook_records_in_place_of_the_mutating_policy() {
        let verdict = judge(POLICY, &with_webhook());
        assert_eq!(verdict, Verdict::Since(at(5)));
        assert_eq!(doubt(&verdict, Some(&at(7))), None);
        assert!(doubt(&verdict, Some(&at(5))).is_some());

        // Both: the one in place longer counts (the policy's newest at 2,
        // the immutability policy's at 4).
        let both = Seen { webhook: Some(webhook(5)), ..installed() };
        assert_eq!(judge(POLICY, &both), Verdict::Since(at(4)));
        // A policy that does not enforce, with a webhook that does: the webhook records.
        let mut weak_policy = Seen { webhook: Some(webhook(5)), ..installed() };
        weak_policy.mutating.as_mut().unwrap().spec.as_mut().unwrap().failure_policy = Some("Ignore".into());
        assert_eq!(judge(POLICY, &weak_policy), Verdict::Since(at(5)));
        // Without the immutability policy nothing is believed.
        let unkept = Seen { validating: None, ..with_webhook() };
        assert_eq!(
            judge(POLICY, &unkept),
            Verdict::Refused("ValidatingAdmissionPolicy registrar-registered-by-immutable is not installed".into())
        );
    }

    #[test]
    fn a_webhook_that_misses_apps_is_not_believed() {
        type WebhookChange = fn(&mut MutatingWebhook);
        let cases: [WebhookChange; 7] = [
            |w| w.failure_policy = Some("Ignore".into()),
            |w| w.rules.as_mut().unwrap()[0].operations = Some(vec!["CREATE".into()]),
            |w| w.rules.as_mut().unwrap()[0].resources = Some(vec!["appregistrations/status".into()]),
            |w| w.rules.as_mut().unwrap()[0].api_groups = Some(vec!["example.com".into()]),
            |w| {
                w.namespace_selector = Some(LabelSelector {
                    match_labels: Some([("team".to_string(), "a".to_string())].into()),
                    ..Default::default()
                })
            },
            |w| {
                w.object_selector = Some(LabelSelector {
                    match_labels: Some([("registered".to_string(), "yes".to_string())].into()),
                    ..Default::default()
                })
            },
            |w| {
                w.match_conditions.as_mut().unwrap().push(
                    serde_json::from_value(serde_json::json!({
                        "name": "not-mallory", "expression": "request.userInfo.username != 'mallory'"
                    }))
                    .unwrap(),
                )
            },
        ];
        for change in cases {
            let mut seen = with_webhook();
            change(&mut seen.webhook.as_mut().unwrap().webhooks.as_mut().unwrap()[0]);
            match judge(POLICY, &seen) {
                Verdict::Refused(why) => assert!(
                    why.starts_with("MutatingWebhookConfiguration registrar-registered-by has no webhook that is sent"),
                    "{why}"
                ),
                other => panic!("believed: {other:?}"),
            }
        }
        // "*" covers everything; no failurePolicy means Fail.
        let mut seen = with_webhook();
        let hook = &mut seen.webhook.as_mut().unwrap().webhooks.as_mut().unwrap()[0];
        hook.failure_policy = None;
        hook.rules.as_mut().unwrap()[0].operations = Some(vec!["*".into()]);
        hook.match_conditions = None;
        assert_eq!(judge(POLICY, &seen), Verdict::Since(at(5)));
    }

    #[test]
    fn each_missing_object_is_named() {
        let nor = ", nor is MutatingWebhookConfiguration registrar-registered-by (registrar's webhook, for clusters \
                   without MutatingAdmissionPolicy)";
        let cases: [(Change, &str); 4] = [
            (|s| s.mutating = None, "MutatingAdmissionPolicy registrar-registered-by is not installed"),
            (|s| s.mutating_binding = None, "MutatingAdmissionPolicyBinding registrar-registered-by is not installed"),
            (|s| s.validating = None, "ValidatingAdmissionPolicy registrar-registered-by-immutable is not installed"),
            (
                |s| s.validating_binding = None,
                "ValidatingAdmissionPolicyBinding registrar-registered-by-immutable is not installed",
            ),
        ];
        for (remove, expected) in cases {
            let expected =
                if expected.starts_with("Mutating") { format!("{expected}{nor}") } else { expected.to_owned() };
            let mut seen = installed();
            remove(&mut seen);
            let verdict = judge(POLICY, &seen);
            assert_eq!(verdict, Verdict::Refused(expected.clone()));
            assert_eq!(doubt(&verdict, Some(&at(100))), Some(expected));
        }
    }

    #[test]
    fn policies_that_do_not_enforce_are_not_believed() {
        let cases: [(Change, &str); 5] = [
            (
                |s| s.mutating.as_mut().unwrap().spec.as_mut().unwrap().failure_policy = Some("Ignore".into()),
                "does not have failurePolicy Fail",
            ),
            (
                |s| s.mutating_binding.as_mut().unwrap().spec.as_mut().unwrap().policy_name = Some("other".into()),
                "does not bind policy registrar-registered-by",
            ),
            (
                |s| s.validating_binding.as_mut().unwrap().spec.validation_actions = vec!["Audit".into()],
                "does not Deny",
            ),
            (
                |s| {
                    s.validating_binding.as_mut().unwrap().spec.match_resources = Some(MatchResources {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some([("team".to_string(), "a".to_string())].into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                },
                "narrows where it applies",
            ),
            (
                |s| s.validating.as_mut().unwrap().spec.as_mut().unwrap().failure_policy = Some("Ignore".into()),
                "ValidatingAdmissionPolicy registrar-registered-by-immutable does not have failurePolicy Fail",
            ),
        ];
        for (change, expected) in cases {
            let mut seen = installed();
            change(&mut seen);
            match judge(POLICY, &seen) {
                Verdict::Refused(why) => assert!(why.contains(expected), "{why}"),
                other => panic!("believed: {other:?}"),
            }
        }
    }

    #[test]
    fn names_follow_the_policy() {
        let verdict = judge("rel-registrar-registered-by", &Seen::default());
        match verdict {
            Verdict::Refused(why) => assert!(
                why.starts_with(
                    "MutatingAdmissionPolicy rel-registrar-registered-by is not installed, nor is \
                                 MutatingWebhookConfiguration rel-registrar-registered-by"
                ),
                "{why}"
            ),
            other => panic!("believed: {other:?}"),
        }
        assert_eq!(immutable_name("rel-registrar-registered-by"), "rel-registrar-registered-by-immutable");
    }
}
