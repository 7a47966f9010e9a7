//! Ownership, pure: who owns an app, and when ownership passes to the
//! organization's owner (seed 003: "an owner who can no longer manage the app
//! is replaced").
//!
//! The owner named is `spec.owner`, or else the user who registered the app
//! (the Registered By annotation). When a SubjectAccessReview says that owner
//! may no longer update AppRegistrations in the app's namespace, ownership
//! passes to the organization's owner (its OrganizationPolicy's `spec.owner`,
//! or registrar's cluster-wide default), recorded in `status.owner` with the
//! time and the owner it was transferred from, with an Event, and a condition
//! recommending a rotation (the previous owner may know the secret) — or a
//! rotation, where the organization asks for one. registrar never writes spec.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::event::PlannedEvent;
use crate::api::{
    Owner, OwnerKind, OwnerStatus,
    conditions::{DesiredCondition, ROTATION_RECOMMENDED, reason},
};
use crate::runtime::kube::to_time;

/// How ownership is decided this pass.
#[derive(Clone, Debug)]
pub struct Ownership {
    /// The owner named (spec.owner, else the registering user), and why it is
    /// the one: `Specified` or `Registered`. `None`: nobody named.
    pub named: Option<(Owner, &'static str)>,
    /// Whether the named owner may manage the app (a SubjectAccessReview);
    /// `None` when not asked this pass (checked periodically and on changes).
    pub can_manage: Option<bool>,
    /// Who takes over: the organization's owner.
    pub organization_owner: Owner,
    /// The organization rotates on a transfer instead of recommending it.
    pub rotate_on_transfer: bool,
}

/// What ownership comes to this pass.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerOutcome {
    pub status: OwnerStatus,
    /// A transfer happened in this pass.
    pub transferred: bool,
    pub event: Option<PlannedEvent>,
}

pub const SPECIFIED: &str = "Specified";
pub const REGISTERED: &str = "Registered";
pub const ORGANIZATION: &str = "Organization";
pub const TRANSFERRED: &str = "Transferred";

fn status_of(owner: &Owner, reason: &str, since: Time, from: Option<String>) -> OwnerStatus {
    OwnerStatus {
        kind: owner.is_group().then_some(OwnerKind::Group),
        name: owner.name.clone(),
        reason: reason.to_owned(),
        since,
        transferred_from: from,
    }
}

fn event(reason: &'static str, note: String) -> PlannedEvent {
    PlannedEvent { warning: false, reason, note, about_secret: false, may_repeat: false }
}

/// The owner in effect after this pass, given the one in status (`current`).
pub fn decide(current: Option<&OwnerStatus>, ownership: &Ownership, now: Timestamp) -> OwnerOutcome {
    let keep_since = |owner: &Owner, reason: &str, from: &Option<String>| {
        current
            .filter(|c| c.owner() == *owner && c.reason == reason && c.transferred_from == *from)
            .map_or_else(|| to_time(now), |c| c.since.clone())
    };
    let Some((named, why)) = &ownership.named else {
        let owner = &ownership.organization_owner;
        let status = status_of(owner, ORGANIZATION, keep_since(owner, ORGANIZATION, &None), None);
        return OwnerOutcome { status, transferred: false, event: None };
    };
    let named_status = || status_of(named, why, keep_since(named, why, &None), None);
    let transferred_from_named = current
        .is_some_and(|c| c.reason == TRANSFERRED && c.transferred_from.as_deref() == Some(named.describe().as_str()));
    match ownership.can_manage {
        Some(true) => {
            let status = named_status();
            let event = transferred_from_named.then(|| {
                event("OwnerRestored", format!("{} can manage the app again and owns it again", named.describe()))
            });
            OwnerOutcome { status, transferred: false, event }
        }
        Some(false) => {
            let to = &ownership.organization_owner;
            let from = Some(named.describe());
            let status = status_of(to, TRANSFERRED, keep_since(to, TRANSFERRED, &from), from);
            let event = (!transferred_from_named).then(|| {
                let then = if ownership.rotate_on_transfer {
                    "the secret is rotated, as the organization asks"
                } else {
                    "rotate the secret: the previous owner may know it"
                };
                event(
                    "OwnerTransferred",
                    format!(
                        "{} can no longer manage the app (update AppRegistrations in this namespace); ownership passed \
                         to {}; {then}",
                        named.describe(),
                        to.describe()
                    ),
                )
            });
            OwnerOutcome { status, transferred: !transferred_from_named, event }
        }
        // Not asked this pass: what status says stands, unless it is about
        // another owner than the one named now (then the named one, until asked).
        None => match current {
            Some(c) if c.owner() == *named || transferred_from_named => {
                OwnerOutcome { status: c.clone(), transferred: false, event: None }
            }
            _ => OwnerOutcome { status: named_status(), transferred: false, event: None },
        },
    }
}

/// The `RotationRecommended` condition: True after a transfer until a secret
/// is minted after it; `None` when there is nothing to say (no transfer, and
/// the condition was never set).
pub fn rotation_recommended(
    owner: &OwnerStatus,
    last_rotated_at: Option<&Time>,
    public: bool,
    had_condition: bool,
) -> Option<DesiredCondition> {
    if owner.reason != TRANSFERRED {
        return had_condition.then(|| DesiredCondition {
            type_: ROTATION_RECOMMENDED,
            status: false,
            reason: reason::OWNER_IN_EFFECT,
            message: "ownership was not transferred".to_owned(),
        });
    }
    let from = owner.transferred_from.as_deref().unwrap_or("the previous owner");
    let rotated_since = last_rotated_at.is_some_and(|t| t.0 >= owner.since.0);
    Some(if public || rotated_since {
        DesiredCondition {
            type_: ROTATION_RECOMMENDED,
            status: false,
            reason: reason::ROTATED,
            message: if public {
                "a public client has no secret to rotate".to_owned()
            } else {
                format!("the secret was rotated after ownership passed from {from}")
            },
        }
    } else {
        DesiredCondition {
            type_: ROTATION_RECOMMENDED,
            status: true,
            reason: reason::OWNER_TRANSFERRED,
            message: format!(
                "ownership passed from {from} to {} {}; {from} may know the client secret: rotate it \
                 (kubectl annotate appreg <name> registrar.dev/rotate=$(date +%s) --overwrite)",
                if owner.kind == Some(OwnerKind::Group) { "Group" } else { "User" },
                owner.name
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn ownership(can_manage: Option<bool>) -> Ownership {
        Ownership {
            named: Some((Owner::user("olivia"), SPECIFIED)),
            can_manage,
            organization_owner: Owner::group("acme-admins"),
            rotate_on_transfer: false,
        }
    }

    #[test]
    fn the_named_owner_is_in_effect_while_they_can_manage_the_app() {
        let first = decide(None, &ownership(Some(true)), at(100));
        assert_eq!((first.status.name.as_str(), first.status.reason.as_str()), ("olivia", SPECIFIED));
        assert_eq!(first.event, None);
        // Stable: the same answer later keeps its time.
        let again = decide(Some(&first.status), &ownership(Some(true)), at(200));
        assert_eq!(again.status, first.status);
        // Not asked: status stands.
        assert_eq!(decide(Some(&first.status), &ownership(None), at(300)).status, first.status);
    }

    #[test]
    fn an_owner_who_can_no_longer_manage_it_is_replaced_once_with_an_event() {
        let olivia = decide(None, &ownership(Some(true)), at(100)).status;
        let moved = decide(Some(&olivia), &ownership(Some(false)), at(200));
        assert!(moved.transferred);
        assert_eq!(moved.status.owner(), Owner::group("acme-admins"));
        assert_eq!(moved.status.reason, TRANSFERRED);
        assert_eq!(moved.status.transferred_from.as_deref(), Some("User olivia"));
        assert_eq!(moved.status.since, to_time(at(200)));
        let event = moved.event.expect("an Event");
        assert!(!event.warning && event.reason == "OwnerTransferred" && event.note.contains("User olivia"));
        // Asked again, or not asked: no second transfer, no second Event.
        for can in [Some(false), None] {
            let later = decide(Some(&moved.status), &ownership(can), at(300));
            assert!(!later.transferred && later.event.is_none());
            assert_eq!(later.status, moved.status);
        }
        // Olivia regains the right: she owns it again.
        let back = decide(Some(&moved.status), &ownership(Some(true)), at(400));
        assert_eq!(back.status.owner(), Owner::user("olivia"));
        assert_eq!(back.event.map(|e| e.reason), Some("OwnerRestored"));
    }

    #[test]
    fn a_new_owner_named_in_spec_takes_effect_and_nobody_named_means_the_organization() {
        let moved = decide(None, &ownership(Some(false)), at(200)).status;
        let named = Ownership { named: Some((Owner::user("nadia"), SPECIFIED)), ..ownership(None) };
        assert_eq!(decide(Some(&moved), &named, at(300)).status.owner(), Owner::user("nadia"));
        let nobody = Ownership { named: None, ..ownership(None) };
        let org = decide(None, &nobody, at(300));
        assert_eq!((org.status.owner(), org.status.reason.as_str()), (Owner::group("acme-admins"), ORGANIZATION));
    }

    #[test]
    fn rotation_is_recommended_after_a_transfer_until_a_secret_is_minted() {
        let moved = decide(None, &ownership(Some(false)), at(200)).status;
        let before = rotation_recommended(&moved, Some(&to_time(at(100))), false, false).expect("condition");
        assert!(before.status && before.reason == reason::OWNER_TRANSFERRED, "{before:?}");
        assert!(before.message.contains("User olivia") && before.message.contains("registrar.dev/rotate"));
        let after = rotation_recommended(&moved, Some(&to_time(at(250))), false, true).expect("condition");
        assert!(!after.status && after.reason == reason::ROTATED);
        let olivia = decide(None, &ownership(Some(true)), at(100)).status;
        assert_eq!(rotation_recommended(&olivia, None, false, false), None, "nothing to say");
        assert!(rotation_recommended(&olivia, None, false, true).is_some_and(|c| !c.status));
    }
}
