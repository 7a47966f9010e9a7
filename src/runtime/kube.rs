//! Helpers for talking to the apiserver that every controller shares: the
//! conditional status write, and the timestamps status carries.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Resource,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::api::keys::FIELD_MANAGER;

/// Truncates to whole seconds: metav1.Time has second precision, and a value
/// that does not survive a round trip would make every comparison differ.
pub fn to_time(ts: Timestamp) -> Time {
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

/// The status write of `object` (an AppRegistration, an AppConsent or an
/// OrganizationPolicy) from `current` to `desired`, on condition that the
/// object is still at the resourceVersion it was read at, so an instance
/// acting on an old view (a stalled former leader) cannot roll status back: a
/// server-side apply under registrar's field manager; or, when `current`
/// holds fields `desired` has not (written by someone else who may write the
/// status, which an apply would leave in place), a merge patch that also
/// removes them.
pub fn status_patch<K>(
    object: &K,
    current: Option<&impl serde::Serialize>,
    desired: &impl serde::Serialize,
) -> (PatchParams, Patch<serde_json::Value>)
where
    K: Resource<DynamicType = ()>,
{
    let mut status = serde_json::to_value(desired).unwrap_or_default();
    let current = current.and_then(|c| serde_json::to_value(c).ok()).unwrap_or_default();
    let metadata = json!({ "resourceVersion": object.meta().resource_version });
    if null_strays(&current, &mut status) {
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        return (params, Patch::Merge(json!({ "metadata": metadata, "status": status })));
    }
    let apply = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(apply))
}

/// Puts a null in `desired` for each field of `current` it lacks, in objects
/// at any depth (a merge patch removes them); whether there was any.
fn null_strays(current: &serde_json::Value, desired: &mut serde_json::Value) -> bool {
    let (serde_json::Value::Object(current), serde_json::Value::Object(desired)) = (current, desired) else {
        return false;
    };
    let mut any = false;
    for (key, value) in current {
        match desired.get_mut(key) {
            Some(wanted) => any |= null_strays(value, wanted),
            None => {
                desired.insert(key.clone(), serde_json::Value::Null);
                any = true;
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn namespace(resource_version: &str) -> Namespace {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some("team".into());
        namespace.metadata.resource_version = Some(resource_version.into());
        namespace
    }

    #[test]
    fn to_time_drops_the_sub_second_part_and_keeps_whole_seconds() {
        let whole = Time(Timestamp::from_second(NOW).unwrap());
        assert_eq!(to_time(Timestamp::new(NOW, 999_999_999).unwrap()), whole);
        assert_eq!(to_time(Timestamp::new(NOW, 1).unwrap()), whole);
        assert_eq!(to_time(Timestamp::from_second(NOW).unwrap()), whole);
        assert_eq!(to_time(Timestamp::from_second(0).unwrap()), Time(Timestamp::from_second(0).unwrap()));
    }

    #[test]
    fn to_time_survives_a_json_round_trip() {
        let t = to_time(Timestamp::new(NOW, 123_456_789).unwrap());
        let back: Time = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn status_patches_are_conditional_on_the_resource_version_read() {
        let object = namespace("42");
        let (params, Patch::Apply(body)) =
            status_patch(&object, None::<&serde_json::Value>, &json!({ "phase": "Active" }))
        else {
            panic!("not an apply patch")
        };
        assert_eq!(params.field_manager.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["kind"], "Namespace");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"]["phase"], "Active");
    }

    #[test]
    fn fields_someone_else_wrote_into_status_are_removed() {
        let object = namespace("7");
        let forged = json!({ "clientId": "victim", "grantedScopes": ["admin"] });
        let desired = json!({ "grantedScopes": ["read"] });
        let (params, Patch::Merge(body)) = status_patch(&object, Some(&forged), &desired) else {
            panic!("not a merge patch")
        };
        assert_eq!(params.field_manager.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["status"]["clientId"], serde_json::Value::Null, "removed");
        assert_eq!(body["status"]["grantedScopes"], json!(["read"]));
        // Nested: a list is replaced whole; objects field by field.
        let mut current = json!({ "a": { "b": 1, "c": 2 }, "d": [1, 2] });
        let mut wanted = json!({ "a": { "b": 1 }, "d": [1] });
        assert!(null_strays(&current, &mut wanted));
        assert_eq!(wanted, json!({ "a": { "b": 1, "c": null }, "d": [1] }));
        current = json!({ "a": 1 });
        let mut same = json!({ "a": 2 });
        assert!(!null_strays(&current, &mut same), "nothing stray: an apply");
    }
}
