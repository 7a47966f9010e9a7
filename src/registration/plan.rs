//! The pure core of the AppRegistration controller: from what was observed,
//! decide what to do, down to every write, condition and Event.
//!
//! A reconcile is two calls: [`decide`] says what happens to the credentials
//! (whether to (re)mint is a chain of small named checks, in priority order,
//! kept apart from how minting is done: cert-manager's trigger model); the
//! shell hashes what the decision issues (the one expensive step, done on the
//! blocking pool); [`outcome`] then returns the whole outcome — the Secret to
//! write, the workloads to roll, the status with its conditions, the Events and
//! when to look again — which the shell only carries out. Randomness (a fresh
//! Client ID and secret) is passed in, so both are deterministic.
//!
//! What registrar trusts: status (only registrar writes it), the Client ID
//! ledger (`crate::cluster::ledger`, written only by registrar), and a Secret's contents
//! only when its seal verifies (`crate::credentials::seal`). A Secret never
//! sets or changes an app's Client ID unless registrar sealed it for this very
//! app; a Client ID the ledger gives to another app, or revoked, is never used.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    api::{
        AcceptedSpec, AppRegistration, AppRegistrationStatus, AuthServerStatus, ConsentSummary, LedgerState, Verifiers,
        conditions::{self, DesiredCondition, READY, WORKLOADS_RESTARTED, reason},
        validation::{Violation, summarize},
    },
    authserver::{AsError, Capabilities, ClientRegistration},
    cluster::ledger::{Standing, Word},
    credentials::{
        ClientSecret,
        layout::{Issued, Observed, SecretLayout, ServerUrls},
        seal::SealKey,
    },
    runtime::Uid,
    runtime::{Key, kube::to_time},
};

use super::{
    event::PlannedEvent,
    owner::{self, Ownership},
};

use crate::api::keys::{REGISTERED_BY_ANNOTATION, ROTATE_ANNOTATION};
/// How long to wait before looking again at an app whose Secret name is taken
/// (foreign Secrets are not watched).
const CONFLICT_RETRY: Duration = Duration::from_secs(30);

/// Why a secret is minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// The app has no credentials yet.
    Initial,
    /// The credentials Secret was deleted.
    SecretMissing,
    /// The Secret's client secret no longer verifies against status (or its
    /// Client ID or version was altered).
    SecretAltered,
    /// The Secret claims a version ahead of status that registrar did not write
    /// (its seal does not verify): someone else's writing, never adopted.
    SecretUntrusted,
    /// A new `registrar.dev/rotate` value.
    RotateRequested(String),
    /// `rotation.interval` elapsed since the last rotation.
    Scheduled,
    /// The first issuance of an app that takes over a retained Client ID (and
    /// its secret, when the retained Secret still holds it intact).
    TakenOver { kept_secret: bool },
    /// The secret in `secret.sourceRef` changed.
    SourceChanged,
    /// Ownership passed to the organization's owner, whose organization rotates on a transfer.
    OwnerTransferred,
}

impl MintReason {
    /// Rotations keep the previous secret verifying during the grace period;
    /// a re-mint after drift does not (the old secret is lost or tampered with).
    pub fn is_rotation(&self) -> bool {
        matches!(
            self,
            MintReason::RotateRequested(_)
                | MintReason::Scheduled
                | MintReason::SourceChanged
                | MintReason::OwnerTransferred
        )
    }

    /// A small fixed label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            MintReason::Initial => "Initial",
            MintReason::SecretMissing => "SecretMissing",
            MintReason::SecretAltered => "SecretAltered",
            MintReason::SecretUntrusted => "SecretUntrusted",
            MintReason::RotateRequested(_) => "RotateRequested",
            MintReason::Scheduled => "Scheduled",
            MintReason::TakenOver { .. } => "TakenOver",
            MintReason::SourceChanged => "SourceChanged",
            MintReason::OwnerTransferred => "OwnerTransferred",
        }
    }
}

/// What to do with the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The app may not be issued credentials as it stands (a spec the apiserver
    /// did not catch, a scope not permitted here, a Client ID held by another
    /// app): report it and change nothing already issued.
    Reject { reason: &'static str, message: String },
    /// A Secret this app does not control holds the name: never overwrite it.
    Conflict,
    /// Write a new secret version (and the Client ID when there is none yet).
    Mint { reason: MintReason, client_id: String, version: i64, rotate_request: Option<String> },
    /// The Secret is ahead of status and sealed by registrar (a crash between
    /// the two writes): finish from the Secret.
    Adopt(Issued),
    /// Credentials are current. `repair_metadata`: the Secret's labels,
    /// annotations or seal drifted and are rewritten, the secret kept.
    Keep { repair_metadata: bool },
}

/// Whether an app may import a Client ID (`spec.clientId`), as the ledger says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Import {
    /// Nobody has it, or this app claimed it already.
    Free,
    /// Retained in the app's own namespace, in this Secret: the app takes it over.
    Retained(String),
    /// Another app holds it.
    Held,
    /// It was given up (revoked): never used again.
    Revoked,
    /// Retained in another namespace.
    RetainedElsewhere,
}

impl Import {
    /// What the ledger's word on an imported Client ID means for the app
    /// `app` (of UID `uid`).
    pub fn from_word(word: Word, app: &Key, uid: Uid) -> Import {
        match word {
            Word::Free => Import::Free,
            Word::Revoked => Import::Revoked,
            // Claimed by this app already; a takeover not yet settled still
            // names the retained Secret (for its secret).
            Word::Standing(standing) if standing.is_held_by(app, uid) => {
                standing.retained.map_or(Import::Free, |at| Import::Retained(at.secret_name))
            }
            Word::Standing(Standing { state: LedgerState::Retained, holder, retained, .. })
                if holder.namespace == app.namespace =>
            {
                retained.map_or(Import::Held, |at| Import::Retained(at.secret_name))
            }
            Word::Standing(Standing { state: LedgerState::Retained, .. }) => Import::RetainedElsewhere,
            Word::Standing(_) => Import::Held,
        }
    }
}

/// Fresh random credentials, minted by the shell for the plan to use if it
/// decides to mint.
#[derive(Clone, Debug)]
pub struct Fresh {
    pub client_id: String,
    pub secret: ClientSecret,
}

impl Fresh {
    pub fn mint() -> Self {
        Fresh { client_id: crate::credentials::mint_client_id(), secret: ClientSecret::mint() }
    }
}

/// Everything the decision depends on, observed by the shell.
pub struct Inputs<'a> {
    pub app: &'a AppRegistration,
    pub violations: &'a [Violation],
    /// False for a Global app outside the platform namespace.
    pub scope_permitted: bool,
    pub platform_namespace: &'a str,
    pub observed: &'a Observed,
    /// Whether the owned Secret holds the secret status was written for (see
    /// [`secret_verifies`]); `None` when there is nothing to verify.
    pub secret_verifies: Option<bool>,
    /// The Client ID in status is held by another app, or revoked (the ledger).
    pub status_client_id_taken: bool,
    /// The Client ID in the owned Secret is held by another app, or revoked (the ledger).
    pub secret_client_id_taken: bool,
    /// The namespaces holding a granted consent, for status.
    pub consents: Option<ConsentSummary>,
    pub seal_key: &'a SealKey,
    pub fresh: &'a Fresh,
    /// The authorization server registrar registers apps at, if one is configured.
    pub auth_server: Option<AuthServerView<'a>>,
    /// Whether `spec.clientId` may be imported (asked only before the app
    /// has a Client ID).
    pub import: Option<Import>,
    /// The retained Secret this app takes over, if it imports a retained Client ID.
    pub retained: Option<&'a RetainedSecret>,
    /// The secret to issue at the next mint instead of a fresh one (a
    /// retained secret taken over).
    pub chosen_secret: Option<&'a ClientSecret>,
    /// The Client ID retained in a Secret of this app's Secret name, if any.
    pub retention_in_the_way: Option<String>,
    /// What `secret.sourceRef` holds, read by the shell (`None`: no sourceRef).
    pub source: Option<Source>,
    /// Who owns the app, as the shell found out (`None`: not decided here).
    pub ownership: Option<Ownership>,
    pub now: Timestamp,
}

/// The secret of the user's choice (`secret.sourceRef`), as read.
#[derive(Clone, Debug)]
pub struct Source {
    /// The Secret named, and its key.
    pub secret: String,
    pub key: String,
    pub read: SourceRead,
    /// How long until the source is read again without any event.
    pub recheck: Duration,
}

/// What a source holds.
#[derive(Clone, Debug)]
pub enum SourceRead {
    /// A secret that may be issued.
    Value(ClientSecret),
    /// No Secret of that name (yet).
    NoSecret,
    /// The Secret has no such key.
    NoKey,
    /// A value registrar refuses (nothing about the value is told).
    Weak,
    /// Nothing was read: the registering user may not read the Secret, or
    /// registrar cannot tell who they are.
    Forbidden(SourceRefusal),
}

/// Why registrar read nothing for `secret.sourceRef`: it reads a source only
/// for the user who registered the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRefusal {
    /// The app records no registering user.
    NoRegisteringUser,
    /// The record of the registering user is not believed: why.
    RegisteredByDoubted(String),
    /// The registering user may not get the Secret.
    NotAllowed { user: String },
}

impl Source {
    fn value(&self) -> Option<&ClientSecret> {
        match &self.read {
            SourceRead::Value(v) => Some(v),
            _ => None,
        }
    }

    /// `Secret <name>, key <key>`.
    fn describe(&self) -> String {
        format!("Secret {}, key {}", self.secret, self.key)
    }

    /// The reason and message when the source holds nothing to issue.
    fn problem(&self) -> Option<(&'static str, String)> {
        let secret = &self.secret;
        match &self.read {
            SourceRead::Value(_) => None,
            SourceRead::NoSecret => Some((
                reason::SECRET_SOURCE_MISSING,
                format!(
                    "secret.sourceRef: Secret {secret} does not exist (yet); the app is issued once it does, and \
                     nothing is invented meanwhile"
                ),
            )),
            SourceRead::NoKey => Some((
                reason::SECRET_SOURCE_MISSING,
                format!("secret.sourceRef: Secret {secret} has no key {}", self.key),
            )),
            SourceRead::Weak => Some((
                reason::WEAK_SECRET,
                format!(
                    "secret.sourceRef: the secret in {} is refused: registrar takes a secret of at least 32 \
                     characters of text, without control characters or a pattern a guesser tries early (a random \
                     value passes: `openssl rand -base64 32`)",
                    self.describe()
                ),
            )),
            SourceRead::Forbidden(refusal) => {
                let why = match refusal {
                    SourceRefusal::NoRegisteringUser => "this app records no registering user (the annotation \
                         registrar.dev/registered-by, set at admission by deploy/registered-by-policy.yaml), and \
                         registrar reads a source only for the user who registered the app: nothing was read"
                        .to_owned(),
                    SourceRefusal::RegisteredByDoubted(doubt) => format!(
                        "registrar reads a source only for the user who registered the app, and believes the \
                         annotation registrar.dev/registered-by only where the Registered By admission policies \
                         (deploy/registered-by-policy.yaml) set and keep it: {doubt}: nothing was read"
                    ),
                    SourceRefusal::NotAllowed { user } => format!(
                        "{user}, who registered the app, may not get Secret {secret} in this namespace, and \
                         registrar reads a source only for the user who registered the app: nothing was read"
                    ),
                };
                Some((reason::FORBIDDEN, format!("secret.sourceRef: {why}")))
            }
        }
    }
}

/// A retained Secret (`crate::credentials::retention`) an app takes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedSecret {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub client_id: String,
}

/// The authorization server as the plan sees it.
#[derive(Clone, Debug)]
pub struct AuthServerView<'a> {
    pub capabilities: Capabilities,
    /// The issuer and token URL, written into the credentials Secret.
    pub urls: ServerUrls,
    /// Why the last comparison could not reach the server, if it could not.
    pub unreachable: Option<&'a str>,
    /// The last comparison found this app's client missing or altered there.
    pub stale: bool,
}

impl<'a> Inputs<'a> {
    /// The same inputs, with the Secret observed as `observed` instead.
    pub fn observing<'b>(&'b self, observed: &'b Observed) -> Inputs<'b> {
        Inputs {
            app: self.app,
            violations: self.violations,
            scope_permitted: self.scope_permitted,
            platform_namespace: self.platform_namespace,
            observed,
            secret_verifies: None,
            status_client_id_taken: self.status_client_id_taken,
            secret_client_id_taken: false,
            consents: self.consents.clone(),
            seal_key: self.seal_key,
            fresh: self.fresh,
            auth_server: self.auth_server.clone(),
            import: self.import.clone(),
            retained: self.retained,
            chosen_secret: self.chosen_secret,
            retention_in_the_way: self.retention_in_the_way.clone(),
            source: self.source.clone(),
            ownership: self.ownership.clone(),
            now: self.now,
        }
    }

    /// The credentials Secret's layout (with the server's URLs when one is configured).
    pub fn layout(&self) -> SecretLayout {
        SecretLayout::for_app(self.app).with_server(self.auth_server.as_ref().map(|v| v.urls.clone()))
    }
}

fn status_of(app: &AppRegistration) -> AppRegistrationStatus {
    app.status.clone().unwrap_or_default()
}

/// The pending rotate request: the annotation's value when it differs from the
/// last one handled.
pub fn pending_rotate(app: &AppRegistration) -> Option<String> {
    let requested = app.annotations().get(ROTATE_ANNOTATION)?;
    (status_of(app).last_handled_rotate.as_ref() != Some(requested)).then(|| requested.clone())
}

fn interval_due(app: &AppRegistration, now: Timestamp) -> bool {
    next_scheduled_rotation(app).is_some_and(|due| now >= due)
}

/// When `rotation.interval` next rotates the secret.
pub fn next_scheduled_rotation(app: &AppRegistration) -> Option<Timestamp> {
    if app.spec.is_public_client() {
        return None;
    }
    let interval: Duration = app.spec.rotation.as_ref()?.interval?.into();
    let last = status_of(app).last_rotated_at?.0;
    last.checked_add(interval).ok()
}

/// Whether the owned Secret holds the secret `status` was written for: its
/// fingerprint (32 bits of an HMAC under the seal key, or, for an app issued
/// before fingerprints were keyed, of its plain SHA-256) matches
/// `status.secretFingerprint`, and the hash in status is well-formed. `None`
/// when there is nothing to verify (no Secret, nothing issued, or the Secret at
/// another version). A mismatch may be a replaced seal key: the shell then
/// asks argon2id once (and the keyed fingerprint is rewritten).
///
/// Deliberately not an argon2id verification every time: at the password cost
/// of a chosen secret, that is tens of milliseconds of CPU per app, minutes
/// after a restart at 10,000 apps (docs/benchmarks.md), and it would only
/// catch what the fingerprint already catches (a Secret edited by hand or by a
/// tool) except for someone who can write the Secret and searches 2^32 secrets
/// for a colliding fingerprint: they could break the app's credentials more
/// simply by deleting the Deployment. The registry verifies with argon2id on
/// every authentication.
pub fn secret_verifies(status: &AppRegistrationStatus, observed: &Observed, key: &SealKey) -> Option<bool> {
    let Observed::Owned(owned) = observed else {
        return None;
    };
    let (Some(hash), Some(version)) = (&status.secret_hash, status.secret_version) else {
        return None;
    };
    if owned.issued.version != Some(version) {
        return None;
    }
    let Some(secret) = &owned.issued.secret else {
        return Some(false);
    };
    // A hash that does not parse was tampered with, and nothing can verify against it: mint anew.
    let recorded = status.secret_fingerprint.as_deref();
    let matches =
        recorded == Some(key.fingerprint(secret).as_str()) || recorded == Some(secret.plain_fingerprint().as_str());
    Some(matches && crate::credentials::is_well_formed(hash))
}

/// Why the app may not be issued credentials as it stands, if it may not: the
/// reason and message of its `Ready=False` condition.
pub fn rejection(inputs: &Inputs<'_>) -> Option<(&'static str, String)> {
    if inputs.status_client_id_taken {
        let id = status_of(inputs.app).client_id.unwrap_or_default();
        return Some((
            reason::CLIENT_ID_CONFLICT,
            format!(
                "status.clientId {id} belongs to another AppRegistration; a Client ID is held by exactly one app, \
                 so this one is not served and nothing is issued to it. Delete this AppRegistration and create it \
                 again to be issued a Client ID of its own"
            ),
        ));
    }
    if let Some(message) = import_refusal(inputs) {
        return Some((reason::CLIENT_ID_CONFLICT, message));
    }
    if let Some(source) = inputs.app.spec.secret.as_ref().and_then(|s| s.source_ref.as_ref())
        && source.name == inputs.layout().name
    {
        return Some((
            reason::INVALID_SPEC,
            format!(
                "secret.sourceRef names {}, the credentials Secret itself; name the Secret you provide",
                source.name
            ),
        ));
    }
    // Nothing issued yet, and nothing to issue: never invent a secret.
    if status_of(inputs.app).client_id.is_none()
        && let Some(problem) = inputs.source.as_ref().and_then(Source::problem)
    {
        return Some(problem);
    }
    if !inputs.violations.is_empty() {
        return Some((reason::INVALID_SPEC, summarize(inputs.violations)));
    }
    if !inputs.scope_permitted {
        return Some((
            reason::SCOPE_NOT_PERMITTED,
            format!(
                "scope Global is allowed only in the platform namespace {}; use Organization or Group here",
                inputs.platform_namespace
            ),
        ));
    }
    None
}

/// Why `spec.clientId` cannot be imported, if it cannot. Says nothing of the
/// app or namespace that has it.
fn import_refusal(inputs: &Inputs<'_>) -> Option<String> {
    let id = inputs.app.spec.client_id.as_deref()?;
    match inputs.import.as_ref()? {
        Import::Free | Import::Retained(_) => None,
        // One message whatever the reason: held, revoked or retained in
        // another namespace are other tenants' facts, not for this one to learn.
        Import::Held | Import::Revoked | Import::RetainedElsewhere => Some(format!(
            "spec.clientId {id} is not available to this AppRegistration: a Client ID belongs to one app, \
             cluster-wide, for good (one that holds it, keeps it retained in its own namespace, or gave it up), \
             so nothing is issued to this one. Choose another Client ID, or leave spec.clientId out to be issued one"
        )),
    }
}

/// Decides what to do with the credentials.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let app = inputs.app;
    let status = status_of(app);
    let current_version = status.secret_version.unwrap_or(0);
    let annotation = app.annotations().get(ROTATE_ANNOTATION).cloned();

    // A first issuance uses the imported Client ID, if the spec names one.
    let new_client_id = || app.spec.client_id.clone().unwrap_or_else(|| inputs.fresh.client_id.clone());
    let mint = |reason: MintReason, client_id: Option<String>| Decision::Mint {
        client_id: client_id.unwrap_or_else(new_client_id),
        version: current_version.max(observed_version(inputs.observed)) + 1,
        rotate_request: match &reason {
            MintReason::RotateRequested(value) => Some(value.clone()),
            _ => annotation.clone(),
        },
        reason,
    };

    // A Client ID held by another app is never used, not even to finish a mint.
    if inputs.status_client_id_taken {
        let (reason, message) = rejection(inputs).unwrap_or_default();
        return Decision::Reject { reason, message };
    }
    // Finish an interrupted mint first, whatever the spec says now: until status
    // catches up, the Secret holds a secret that does not verify against it.
    // Only what registrar sealed for this app is adopted.
    let mut untrusted_ahead = false;
    if let Observed::Owned(owned) = inputs.observed {
        let issued = &owned.issued;
        let ahead = issued.version.unwrap_or(0) > current_version;
        let same_client = status.client_id.as_deref().is_none_or(|id| id == issued.client_id);
        let complete = !issued.client_id.is_empty() && (app.spec.is_public_client() || issued.secret.is_some());
        if ahead && owned.sealed && same_client && complete && !inputs.secret_client_id_taken {
            return Decision::Adopt(issued.clone());
        }
        untrusted_ahead = ahead && !owned.sealed;
    }
    if let Some((reason, message)) = rejection(inputs) {
        return Decision::Reject { reason, message };
    }

    // Taking over a retained Client ID: its Secret may hold this app's name.
    let taking_over = status.client_id.is_none()
        && inputs.retained.is_some_and(|r| Some(r.client_id.as_str()) == app.spec.client_id.as_deref());
    let first = || match taking_over {
        true => MintReason::TakenOver { kept_secret: inputs.chosen_secret.is_some() },
        false => MintReason::Initial,
    };
    let owned = match inputs.observed {
        Observed::Foreign if taking_over && inputs.retained.is_some_and(|r| r.name == inputs.layout().name) => {
            return mint(first(), None);
        }
        Observed::Foreign => return Decision::Conflict,
        Observed::Missing => {
            if let Some((reason, message)) = inputs.source.as_ref().and_then(Source::problem) {
                return Decision::Reject { reason, message };
            }
            return match status.client_id {
                None => mint(first(), None),
                Some(id) => mint(MintReason::SecretMissing, Some(id)),
            };
        }
        Observed::Owned(owned) => owned,
    };
    if untrusted_ahead {
        // The version it claims is not registrar's either: count from status.
        return Decision::Mint {
            reason: MintReason::SecretUntrusted,
            client_id: status.client_id.unwrap_or_else(new_client_id),
            version: current_version + 1,
            rotate_request: annotation,
        };
    }

    let issued = &owned.issued;
    let secret_version = issued.version.unwrap_or(0);
    let client_id_matches = status.client_id.as_deref().is_none_or(|id| id == issued.client_id);
    let Some(client_id) = status.client_id.clone() else {
        // A Secret claiming this app, nothing in status, and nothing adoptable:
        // start over (with a fresh or the imported Client ID).
        return mint(first(), None);
    };
    let intact = client_id_matches
        && secret_version == current_version
        && (app.spec.is_public_client() || (issued.secret.is_some() && inputs.secret_verifies == Some(true)));
    if let Some(source) = &inputs.source {
        // The source decides: a new value there is a rotation; with nothing
        // usable there, what is issued stays (a lost Secret is not re-minted:
        // never invent a secret).
        return match (source.value(), intact) {
            (None, true) => Decision::Keep { repair_metadata: !owned.metadata_current },
            (None, false) => {
                let (reason, message) = source.problem().unwrap_or_default();
                Decision::Reject { reason, message }
            }
            (Some(_), false) => mint(MintReason::SecretAltered, Some(client_id)),
            (Some(value), true) if issued.secret.as_ref().map(ClientSecret::digest) != Some(value.digest()) => {
                mint(MintReason::SourceChanged, Some(client_id))
            }
            (Some(_), true) => Decision::Keep { repair_metadata: !owned.metadata_current },
        };
    }
    if !intact {
        return mint(MintReason::SecretAltered, Some(client_id));
    }
    // Ownership passes now, in an organization that rotates on a transfer.
    if let Some(ownership) = &inputs.ownership
        && ownership.rotate_on_transfer
        && !app.spec.is_public_client()
        && owner::decide(status.owner.as_ref(), ownership, inputs.now).transferred
    {
        return mint(MintReason::OwnerTransferred, Some(client_id));
    }
    if let Some(request) = pending_rotate(app)
        && !app.spec.is_public_client()
    {
        return mint(MintReason::RotateRequested(request), Some(client_id));
    }
    if interval_due(app, inputs.now) {
        return mint(MintReason::Scheduled, Some(client_id));
    }
    Decision::Keep { repair_metadata: !owned.metadata_current }
}

fn observed_version(observed: &Observed) -> i64 {
    match observed {
        Observed::Owned(o) => o.issued.version.unwrap_or(0),
        _ => 0,
    }
}

impl Decision {
    /// The Client ID the app holds once this decision is carried out: the
    /// shell makes sure the ledger gives it to the app before any write.
    pub fn client_id<'a>(&'a self, inputs: &'a Inputs<'_>) -> Option<&'a str> {
        match self {
            Decision::Mint { client_id, .. } => Some(client_id),
            Decision::Adopt(issued) => Some(&issued.client_id),
            // Refused or not, an app keeps the Client ID it was issued (an
            // InvalidSpec app is still served its accepted spec), unless the
            // ledger gives it to another app.
            _ if inputs.status_client_id_taken => None,
            _ => inputs.app.status.as_ref()?.client_id.as_deref(),
        }
    }

    /// The credentials this decision writes (Mint) or takes over (Adopt): the
    /// shell hashes their secret before asking for the [`outcome`].
    pub fn issued(&self, inputs: &Inputs<'_>) -> Option<Issued> {
        match self {
            Decision::Mint { client_id, version, rotate_request, .. } => Some(Issued {
                client_id: client_id.clone(),
                secret: (!inputs.app.spec.is_public_client())
                    .then(|| inputs.chosen_secret.cloned().unwrap_or_else(|| inputs.fresh.secret.clone())),
                version: Some(*version),
                rotate_request: rotate_request.clone(),
            }),
            Decision::Adopt(issued) => Some(issued.clone()),
            _ => None,
        }
    }
}

/// The hash side of newly issued credentials, computed by the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedHash {
    /// argon2id PHC string; `None` for a public client.
    pub hash: Option<String>,
    pub fingerprint: Option<String>,
}

/// A write of the credentials Secret.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretWrite {
    /// Create it. Never overwrites: a name taken meanwhile is a conflict.
    Create(Secret),
    /// Server-side apply it, on condition that it is still at `resource_version`.
    Replace { secret: Secret, resource_version: Option<String> },
    /// Take over a retained Secret of the same name: replace the whole object
    /// (its retention record goes), on condition that it is still at `resource_version`.
    TakeOver { secret: Secret, resource_version: String },
}

impl SecretWrite {
    pub fn secret(&self) -> &Secret {
        match self {
            SecretWrite::Create(secret)
            | SecretWrite::Replace { secret, .. }
            | SecretWrite::TakeOver { secret, .. } => secret,
        }
    }
}

/// What to do at the authorization server.
#[derive(Clone, Debug, PartialEq)]
pub enum Registration {
    /// Create the client, or replace registrar's client, with the secret the
    /// app's Secret holds (`None` for a public client): a first registration,
    /// a new secret, or a client the server lost or altered.
    Register { registration: ClientRegistration, secret: Option<ClientSecret> },
    /// Update everything but the secret (a spec edit); should the client be
    /// missing, register it with `secret`.
    Update { registration: ClientRegistration, secret: Option<ClientSecret> },
}

impl Registration {
    /// The Client ID registered.
    pub fn client_id(&self) -> &str {
        match self {
            Registration::Register { registration, .. } | Registration::Update { registration, .. } => {
                &registration.client_id
            }
        }
    }
}

/// Everything one reconcile does. The shell carries it out in this order: the
/// Secret, the registration at the authorization server, the workload
/// restarts, the status (when it differs), the Events; then it looks again
/// after `requeue` (or on the next change).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub secret: Option<SecretWrite>,
    /// What to do at the authorization server, after the Secret.
    pub registration: Option<Registration>,
    /// Roll the `restartOnRotate` workloads to this secret version.
    pub restart: Option<i64>,
    /// The desired status, assuming the restarts succeed (see [`after_restart`]).
    pub status: AppRegistrationStatus,
    pub events: Vec<PlannedEvent>,
    pub requeue: Option<Duration>,
    /// Why a secret is minted, for metrics and logs.
    pub minted: Option<MintReason>,
    /// What the ledger keeps to verify the app's secret when it is one of
    /// someone's choosing (not in status, which whoever may view the app
    /// reads); `None` when status holds a minted secret's hash, or none.
    pub verifiers: Option<Verifiers>,
}

/// The whole outcome of `decision`, given the hash of what it issues (Mint and
/// Adopt; `None` otherwise).
pub fn outcome(inputs: &Inputs<'_>, decision: &Decision, hash: Option<&IssuedHash>) -> Outcome {
    let app = inputs.app;
    let status = status_of(app);
    let layout = inputs.layout();
    let public = app.spec.is_public_client();
    let mut secret = None;
    let mut restart = status.pending_restart.filter(|_| !app.spec.restart_on_rotate.is_empty());
    let mut events = Vec::new();
    let mut minted = None;
    let mut requeue_after = None;
    let no_hash = IssuedHash { hash: None, fingerprint: None };

    let (condition, issued) = match decision {
        Decision::Reject { reason, message } => (DesiredCondition::not_ready(reason, message.clone()), None),
        Decision::Conflict => {
            requeue_after = Some(CONFLICT_RETRY);
            let message = match &inputs.retention_in_the_way {
                Some(id) => format!(
                    "Secret {} holds the retained Client ID {id} (deletionPolicy: Retain of a deleted app); set \
                     spec.clientId: {id} on a new AppRegistration to take it over, or delete that Secret to give it up",
                    layout.name
                ),
                None => format!(
                    "Secret {} already exists and is not managed by this AppRegistration; registrar never overwrites \
                     it. Delete or rename that Secret, or set spec.secret.name",
                    layout.name
                ),
            };
            (DesiredCondition::not_ready(reason::SECRET_CONFLICT, message), None)
        }
        Decision::Mint { reason: why, .. } => {
            let issued = decision.issued(inputs).unwrap_or_else(|| unreachable_issued(app));
            let desired = layout.desired(app, &issued, inputs.seal_key);
            secret = Some(match (inputs.observed, inputs.retained) {
                (Observed::Owned(owned), _) => {
                    SecretWrite::Replace { secret: desired, resource_version: owned.resource_version.clone() }
                }
                // The retained Secret of this name becomes this app's.
                (Observed::Foreign, Some(retained)) if retained.name == layout.name => {
                    SecretWrite::TakeOver { secret: desired, resource_version: retained.resource_version.clone() }
                }
                _ => SecretWrite::Create(desired),
            });
            let first_issuance = matches!(why, MintReason::Initial | MintReason::TakenOver { .. });
            if !first_issuance && !app.spec.restart_on_rotate.is_empty() {
                restart = issued.version;
            }
            events.push(mint_event(why, &layout, &issued));
            minted = Some(why.clone());
            let condition = issued_condition(&issued.client_id, issued.version, public);
            (condition, Some((issued, why.is_rotation())))
        }
        Decision::Adopt(issued) => {
            if issued.version.is_some_and(|v| v > 1) && !app.spec.restart_on_rotate.is_empty() {
                restart = issued.version;
            }
            // Finishing the interrupted mint comes first; a spec that turned
            // invalid meanwhile is still reported.
            let condition = match rejection(inputs) {
                Some((reason, message)) => DesiredCondition::not_ready(reason, message),
                None => issued_condition(&issued.client_id, issued.version, public),
            };
            (condition, Some((issued.clone(), status.client_id.is_some())))
        }
        Decision::Keep { repair_metadata } => {
            if *repair_metadata && let Observed::Owned(owned) = inputs.observed {
                secret = Some(SecretWrite::Replace {
                    secret: layout.desired(app, &owned.issued, inputs.seal_key),
                    resource_version: owned.resource_version.clone(),
                });
            }
            let condition =
                issued_condition(status.client_id.as_deref().unwrap_or_default(), status.secret_version, public);
            (condition, None)
        }
    };

    // The authorization server: what it should hold after this pass.
    let mut conditions = vec![condition];
    let mut registration = None;
    let mut registered_status = status.authorization_server.clone();
    let registrable = !matches!(decision, Decision::Reject { .. } | Decision::Conflict);
    if let Some(view) = &inputs.auth_server
        && registrable
    {
        let (client_id, version) = match &issued {
            Some((issued, _)) => (Some(issued.client_id.as_str()), issued.version),
            None => (status.client_id.as_deref(), status.secret_version),
        };
        if let Some(client_id) = client_id {
            let desired = view.stored(ClientRegistration::for_app(app, client_id));
            let recorded = status.authorization_server.clone().unwrap_or_default();
            let registered = match view.unreachable {
                Some(why) => DesiredCondition::registered(false, reason::UNAVAILABLE, why.to_owned()),
                None => {
                    let plaintext = match (&issued, inputs.observed) {
                        (Some((issued, _)), _) => issued.secret.clone(),
                        (None, Observed::Owned(owned)) => owned.issued.secret.clone(),
                        (None, _) => None,
                    };
                    let needs_secret =
                        view.stale || recorded.registered.is_none() || recorded.secret_version != version;
                    let digest = desired.digest();
                    if needs_secret && (public || plaintext.is_some()) {
                        registration = Some(Registration::Register { registration: desired, secret: plaintext });
                    } else if recorded.registered.as_deref() != Some(digest.as_str()) {
                        registration = Some(Registration::Update { registration: desired, secret: plaintext });
                    }
                    registered_status = Some(AuthServerStatus { registered: Some(digest), secret_version: version });
                    registered_condition(view, app, client_id)
                }
            };
            gate_ready(&mut conditions, &registered, view, client_id);
            conditions.push(registered);
        }
    }
    if let Some(ready) = conditions.first()
        && !ready.status
        && condition_is_new(app, ready)
    {
        events.push(PlannedEvent::warning(ready.reason, ready.message.clone()));
    }
    // Where the secret comes from, for an app with secret.sourceRef.
    if let Some(source) = &inputs.source {
        let sourced = match source.problem() {
            None => DesiredCondition::sourced(
                true,
                reason::SOURCED,
                format!("the client secret comes from {}; a new value there is a rotation", source.describe()),
            ),
            Some((reason, message)) => DesiredCondition::sourced(false, reason, message),
        };
        let ready_says_it = conditions.first().is_some_and(|r| !r.status && r.reason == sourced.reason);
        if !sourced.status && !ready_says_it && condition_is_new(app, &sourced) {
            events.push(PlannedEvent::warning(
                sourced.reason,
                format!("{}; what is issued stays valid", sourced.message),
            ));
        }
        conditions.push(sourced);
    }

    let issued_with_hash = issued.as_ref().map(|(issued, rotation)| (issued, hash.unwrap_or(&no_hash), *rotation));
    if let Some(version) = restart
        && conditions::find(&status.conditions, WORKLOADS_RESTARTED).is_some()
    {
        conditions.push(DesiredCondition::restarted(
            true,
            reason::RESTARTED,
            format!("the restartOnRotate workloads were rolled to secret version {version}"),
        ));
    }
    // Who owns it, and whether a rotation is due because ownership passed.
    let owner = inputs.ownership.as_ref().map(|o| owner::decide(status.owner.as_ref(), o, inputs.now));
    if let Some(owner) = &owner {
        events.extend(owner.event.clone());
        let last_rotated = match &issued {
            Some(_) => Some(to_time(inputs.now)),
            None => status.last_rotated_at.clone(),
        };
        let had = conditions::find(&status.conditions, conditions::ROTATION_RECOMMENDED).is_some();
        conditions.extend(owner::rotation_recommended(&owner.status, last_rotated.as_ref(), public, had));
    }
    let mut next =
        desired_status(StatusInputs { app, now: inputs.now, conditions: &conditions, issued: issued_with_hash });
    if let Some(owner) = owner {
        next.owner = Some(owner.status);
    }
    // A fingerprint from before fingerprints were keyed, or under a seal key
    // since replaced, is written again under the current key.
    if let (Decision::Keep { .. }, Observed::Owned(owned)) = (decision, inputs.observed)
        && inputs.secret_verifies == Some(true)
        && let Some(secret) = &owned.issued.secret
    {
        next.secret_fingerprint = Some(inputs.seal_key.fingerprint(secret));
    }
    next.consents = inputs.consents.clone();
    next.pending_restart = None;
    next.authorization_server = registered_status;
    // What the registry serves: this spec once it is accepted; a rejected
    // one leaves the last accepted in place.
    if !matches!(decision, Decision::Reject { .. }) && next.client_id.is_some() {
        next.accepted = Some(AcceptedSpec::of(&app.spec, app.metadata.generation.unwrap_or_default()));
    }
    let requeue = requeue_after.or_else(|| next_wakeup(app, &next, inputs.now));
    let verifiers = chosen_verifiers(&mut next);
    // A source is read again on its own schedule: nothing tells registrar it
    // changed. (A named owner is asked again by the controller's sweep, not a
    // timer per app: kube's scheduler holds memory for every scheduled app.)
    let requeue = [requeue, inputs.source.as_ref().map(|s| s.recheck)].into_iter().flatten().min();
    Outcome { secret, registration, restart, status: next, events, requeue, minted, verifiers }
}

/// Takes the verifiers of a chosen secret out of `status` (whoever may view
/// the app reads status; a chosen secret may be guessable from its hash):
/// the ledger keeps them. A minted secret's hash stays: 256 random bits.
fn chosen_verifiers(status: &mut AppRegistrationStatus) -> Option<Verifiers> {
    let chosen = |hash: &Option<String>| hash.as_deref().is_some_and(|h| !crate::credentials::is_minted_hash(h));
    if !chosen(&status.secret_hash) && !chosen(&status.previous_secret_hash) {
        return None;
    }
    let current = status.secret_hash.take()?;
    Some(Verifiers {
        current,
        previous: status.previous_secret_hash.take(),
        previous_expires_at: status.previous_secret_expires_at.take(),
    })
}

impl AuthServerView<'_> {
    /// `registration` as the server stores it: Hydra gives a client
    /// registered without scopes its default ones.
    pub fn stored(&self, mut registration: ClientRegistration) -> ClientRegistration {
        if registration.scopes.is_empty() {
            registration.scopes = self.capabilities.default_scopes.iter().map(|s| (*s).to_owned()).collect();
        }
        registration
    }
}

/// `Registered=True`, saying plainly what the server does not do.
fn registered_condition(view: &AuthServerView<'_>, app: &AppRegistration, client_id: &str) -> DesiredCondition {
    let name = view.capabilities.name;
    let mut message = format!("{name} holds Client ID {client_id} with the current secret and spec");
    let grace: Duration = app.spec.rotation.as_ref().and_then(|r| r.grace_period).map(Into::into).unwrap_or_default();
    if !grace.is_zero() && !view.capabilities.keeps_previous_secret && !app.spec.is_public_client() {
        message.push_str(&format!(
            "; {name} keeps one secret per client, so after a rotation the previous secret stops working at {name} \
             at once: rotation.gracePeriod applies to the registry API only"
        ));
    }
    DesiredCondition::registered(true, reason::REGISTERED, message)
}

/// With an authorization server, Ready means issued and registered.
fn gate_ready(conditions: &mut [DesiredCondition], registered: &DesiredCondition, view: &AuthServerView<'_>, id: &str) {
    if let Some(ready) = conditions.first_mut()
        && ready.type_ == READY
        && ready.status
        && !registered.status
    {
        *ready = not_registered(view, id, registered);
    }
}

/// `Ready=False`: issued, but the server does not hold it as issued.
fn not_registered(view: &AuthServerView<'_>, id: &str, registered: &DesiredCondition) -> DesiredCondition {
    DesiredCondition::not_ready(
        reason::NOT_REGISTERED,
        format!(
            "Client ID {id} is issued but {} does not hold it as issued: {}",
            view.capabilities.name, registered.message
        ),
    )
}

/// Amends `outcome` with what its registration at the authorization server
/// came to. On failure the status keeps what the server held before (so the
/// next pass tries again), says why (`Registered=False` with the server's
/// reason, `Ready=False`), and warns once; the shell retries with backoff.
/// Nothing issued changes: the server being down never costs a secret.
pub fn after_registration(inputs: &Inputs<'_>, outcome: &mut Outcome, result: &Result<(), AsError>) {
    let (Err(error), Some(view)) = (result, &inputs.auth_server) else {
        return;
    };
    let app = inputs.app;
    outcome.status.authorization_server = status_of(app).authorization_server;
    let client_id = outcome.status.client_id.clone().unwrap_or_default();
    let registered = DesiredCondition::registered(false, registered_reason(error), error.to_string());
    let mut desired = Vec::new();
    if conditions::is_true(&outcome.status.conditions, READY) {
        desired.push(not_registered(view, &client_id, &registered));
    }
    desired.push(registered);
    let now = to_time(inputs.now);
    outcome.status.conditions = conditions::settle(&outcome.status.conditions, &desired, app.metadata.generation, &now);
    // One Warning says it all: Ready's message carries the server's words.
    if let Some(first) = desired.first()
        && condition_is_new(app, first)
    {
        outcome.events.push(PlannedEvent::warning(first.reason, first.message.clone()));
    }
}

/// The `Registered` reason of a failed call.
fn registered_reason(error: &AsError) -> &'static str {
    match error {
        AsError::Unavailable { .. } | AsError::Busy { .. } => reason::UNAVAILABLE,
        AsError::Refused { .. } => reason::REFUSED,
        AsError::NotOurs { .. } => reason::CLIENT_EXISTS,
    }
}

/// Never reached: `Decision::issued` is `Some` for Mint.
fn unreachable_issued(app: &AppRegistration) -> Issued {
    let status = status_of(app);
    Issued {
        client_id: status.client_id.unwrap_or_default(),
        secret: None,
        version: status.secret_version,
        rotate_request: None,
    }
}

/// Whether the Ready condition moves to a new reason or message, so a
/// persisting problem is reported once, not on every pass.
fn condition_is_new(app: &AppRegistration, condition: &DesiredCondition) -> bool {
    let current = app.status.as_ref().and_then(|s| conditions::find(&s.conditions, condition.type_));
    current.is_none_or(|c| c.reason != condition.reason || c.message != condition.message)
}

fn mint_event(reason: &MintReason, layout: &SecretLayout, issued: &Issued) -> PlannedEvent {
    let version = issued.version.unwrap_or_default();
    let name = &layout.name;
    match reason {
        MintReason::Initial => PlannedEvent::once(
            false,
            "Issued",
            format!("Issued Client ID {} into Secret {name} (secret version {version})", issued.client_id),
        ),
        MintReason::OwnerTransferred => PlannedEvent::once(
            false,
            "Rotated",
            format!(
                "Rotated the client secret to version {version}: ownership passed, and the organization rotates on a \
                 transfer (rotateOnOwnerTransfer)"
            ),
        ),
        MintReason::SourceChanged => PlannedEvent::once(
            false,
            "Rotated",
            format!("Rotated the client secret to version {version}: the secret in secret.sourceRef changed"),
        ),
        MintReason::TakenOver { kept_secret: true } => PlannedEvent::once(
            false,
            "TakenOver",
            format!(
                "Took over the retained Client ID {} with its secret, into Secret {name} (secret version {version})",
                issued.client_id
            ),
        ),
        MintReason::TakenOver { kept_secret: false } => PlannedEvent::once(
            true,
            "TakenOver",
            format!(
                "Took over the retained Client ID {} into Secret {name} with a new secret (version {version}): the \
                 retained Secret no longer held the secret registrar retained",
                issued.client_id
            ),
        ),
        MintReason::RotateRequested(value) => PlannedEvent::once(
            false,
            "Rotated",
            format!("Rotated the client secret to version {version} as requested by registrar.dev/rotate={value}"),
        ),
        MintReason::Scheduled => PlannedEvent::once(
            false,
            "Rotated",
            format!("Rotated the client secret to version {version} on schedule (rotation.interval)"),
        ),
        MintReason::SecretMissing => PlannedEvent::once(
            true,
            "SecretRecreated",
            format!(
                "Secret {name} was deleted; a secret cannot be recovered, so a new one was minted (version {version})"
            ),
        ),
        MintReason::SecretAltered => PlannedEvent::once(
            true,
            "SecretReminted",
            format!(
                "The client secret in Secret {name} no longer matched the registration; a new one was minted \
                 (version {version})"
            ),
        ),
        MintReason::SecretUntrusted => PlannedEvent::once(
            true,
            "SecretUntrusted",
            format!(
                "Secret {name} held credentials that registrar did not write (they claimed a newer version, without \
                 registrar's seal); they were not adopted, and new ones were minted (version {version}, Client ID {})",
                issued.client_id
            ),
        ),
    }
}

/// What the restarts of an outcome came to, reported by the shell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartReport {
    /// Workloads named in `restartOnRotate` that do not exist (`Kind/name`): skipped.
    pub missing: Vec<String>,
    /// The first refused restart (`Kind/name`) and the apiserver's answer.
    pub failed: Option<(String, String)>,
}

/// Amends `outcome` with what its restarts came to: a missing workload is
/// reported and skipped; a refused restart leaves the rotation complete (status
/// follows the Secret) with the restart pending, a `WorkloadsRestarted=False`
/// condition and a Warning Event. The shell then retries with backoff.
pub fn after_restart(inputs: &Inputs<'_>, outcome: &mut Outcome, report: &RestartReport) {
    for workload in &report.missing {
        outcome.events.push(PlannedEvent::warning(
            "RestartTargetMissing",
            format!("{workload} named in restartOnRotate does not exist"),
        ));
    }
    let (Some(version), Some((workload, error))) = (outcome.restart, &report.failed) else {
        return;
    };
    let message = format!(
        "rolling {workload} to secret version {version} was refused: {error}; the new secret is issued, and the \
         restart is retried with backoff"
    );
    let condition = DesiredCondition::restarted(false, reason::RESTART_FAILED, message.clone());
    let now = to_time(inputs.now);
    outcome.status.conditions =
        conditions::settle(&outcome.status.conditions, &[condition], inputs.app.metadata.generation, &now);
    outcome.status.pending_restart = Some(version);
    outcome.events.push(PlannedEvent::warning(reason::RESTART_FAILED, message));
}

/// The status after the decision's credentials are in place.
pub struct StatusInputs<'a> {
    pub app: &'a AppRegistration,
    pub now: Timestamp,
    /// The conditions this pass sets (Ready, and others it changes).
    pub conditions: &'a [DesiredCondition],
    /// Newly issued credentials (Mint or Adopt): what they are, their hash, and
    /// whether they are a rotation.
    pub issued: Option<(&'a Issued, &'a IssuedHash, bool)>,
}

/// Builds the desired status. Deterministic: for an unchanged app it returns
/// the current status exactly, so nothing is written.
pub fn desired_status(inputs: StatusInputs<'_>) -> AppRegistrationStatus {
    let app = inputs.app;
    let current = status_of(app);
    let now_time = to_time(inputs.now);
    let mut next = current.clone();

    if let Some((issued, hash, is_rotation)) = inputs.issued {
        let grace: Duration =
            app.spec.rotation.as_ref().and_then(|r| r.grace_period).map(Into::into).unwrap_or_default();
        let (previous_hash, previous_expires) = match (&current.secret_hash, is_rotation && !grace.is_zero()) {
            (Some(old), true) => (Some(old.clone()), inputs.now.checked_add(grace).ok().map(to_time)),
            _ => (None, None),
        };
        next.client_id = Some(issued.client_id.clone());
        next.secret_hash = hash.hash.clone();
        next.secret_fingerprint = hash.fingerprint.clone();
        next.secret_version = issued.version;
        next.previous_secret_hash = previous_hash;
        next.previous_secret_expires_at = previous_expires;
        next.last_rotated_at = Some(now_time.clone());
        if let Some(request) = &issued.rotate_request {
            next.last_handled_rotate = Some(request.clone());
        }
    }
    if app.spec.is_public_client()
        && let Some(request) = app.annotations().get(ROTATE_ANNOTATION)
    {
        // A public client has no secret: a rotate request is acknowledged as is.
        next.last_handled_rotate = Some(request.clone());
    }
    // The previous secret stops verifying when its grace period ends.
    if next.previous_secret_expires_at.as_ref().is_none_or(|t| t.0 <= inputs.now) {
        next.previous_secret_hash = None;
        next.previous_secret_expires_at = None;
    }
    if let Some(user) = app.annotations().get(REGISTERED_BY_ANNOTATION) {
        next.registered_by = Some(user.clone());
    }
    next.observed_generation = app.metadata.generation;
    next.conditions = conditions::settle(&current.conditions, inputs.conditions, app.metadata.generation, &now_time);
    next
}

/// The status of an app being deleted: its credentials are revoked. With the
/// Event saying which Client ID (`held`: the one the app held, if any).
pub fn revoked(app: &AppRegistration, held: Option<&str>, now: Timestamp) -> (AppRegistrationStatus, PlannedEvent) {
    let condition = DesiredCondition::not_ready(
        reason::REVOKED,
        "the AppRegistration is being deleted; its credentials are revoked",
    );
    let mut status = desired_status(StatusInputs { app, now, conditions: &[condition], issued: None });
    status.consents = app.status.as_ref().and_then(|s| s.consents.clone());
    let note = match held {
        Some(id) => format!("Client ID {id} is revoked and its Secret deleted"),
        None => "The AppRegistration is deleted; it held no Client ID of its own, so none was revoked".to_owned(),
    };
    (status, PlannedEvent { warning: false, reason: "Revoked", note, about_secret: false, may_repeat: false })
}

/// How a deleted app's Client ID leaves the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// Revoked: a tombstone, never issued again.
    Revoke,
    /// Released (the entry deleted): the Client ID was never issued anywhere
    /// — with an authorization server configured, the server holds another
    /// client of that ID and never held registrar's — so nothing is revoked,
    /// and its owner can still import it.
    Release,
}

/// How the deleted `app`'s Client ID leaves the ledger (`backend`: an
/// authorization server is configured).
pub fn giving_up(app: &AppRegistration, backend: bool) -> GiveUp {
    let status = status_of(app);
    let never_registered =
        status.authorization_server.as_ref().is_none_or(|a| a.registered.is_none()) && status.client_exists_at_server();
    if backend && never_registered { GiveUp::Release } else { GiveUp::Revoke }
}

/// The status and Event of an app whose credentials are retained on deletion
/// (`deletionPolicy: Retain`): `client_id` stays in Secret `secret_name`.
pub fn retained(
    app: &AppRegistration,
    client_id: &str,
    secret_name: &str,
    now: Timestamp,
) -> (AppRegistrationStatus, PlannedEvent) {
    let condition = DesiredCondition::not_ready(
        reason::RETAINED,
        format!("the AppRegistration is being deleted; Client ID {client_id} is retained in Secret {secret_name}"),
    );
    let mut status = desired_status(StatusInputs { app, now, conditions: &[condition], issued: None });
    status.consents = app.status.as_ref().and_then(|s| s.consents.clone());
    let note = format!(
        "Client ID {client_id} is retained (deletionPolicy: Retain): Secret {secret_name} is kept, and the client keeps \
         working; an AppRegistration in this namespace with spec.clientId {client_id} takes it over"
    );
    (status, PlannedEvent { warning: false, reason: "Retained", note, about_secret: false, may_repeat: false })
}

/// When the controller must look at the app again without any event: the end
/// of a grace period or the next scheduled rotation.
pub fn next_wakeup(app: &AppRegistration, status: &AppRegistrationStatus, now: Timestamp) -> Option<Duration> {
    let grace_end = status.previous_secret_expires_at.as_ref().map(|t| t.0);
    let rotation = {
        let mut with_status = app.clone();
        with_status.status = Some(status.clone());
        next_scheduled_rotation(&with_status)
    };
    // A time already past needs no wake-up: the pass that just ran acted on it,
    // or a rejected spec blocks it until the spec changes (which is an event).
    [grace_end, rotation]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .min()
        .map(|at| at.duration_since(now).try_into().unwrap_or(Duration::ZERO).max(Duration::from_secs(1)))
}

/// The Ready condition once credentials are in place.
pub fn issued_condition(status_client_id: &str, version: Option<i64>, public: bool) -> DesiredCondition {
    let message = match (public, version) {
        (true, _) => format!("Client ID {status_client_id} is issued (public client: no secret)"),
        (false, Some(v)) => {
            format!("Client ID {status_client_id} and client secret version {v} are issued")
        }
        (false, None) => format!("Client ID {status_client_id} is issued"),
    };
    DesiredCondition::ready(reason::ISSUED, message)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        api::{AppRegistrationSpec, Rotation, Scope, conditions::READY},
        credentials::{
            ClientSecret,
            layout::{APP_LABEL, OwnedSecret, SecretLayout},
            seal::SealKey,
        },
    };

    const PLATFORM_NAMESPACE: &str = "registrar-system";
    /// The Client ID status already holds (22 characters, like a minted one).
    const CLIENT_ID: &str = "c2xpZW50LWlkLTAwMDAwMQ";
    const PLAINTEXT: &str = "plaintext-client-secret-never-shown";
    /// The Client ID and secret the shell offers for a mint.
    const FRESH_ID: &str = "ZnJlc2gtY2xpZW50LWlkIQ";
    const FRESH_SECRET: &str = "fresh-secret-offered-by-the-shell";
    const OLD_HASH: &str = "$argon2id$v=19$m=256,t=1,p=1$b2xk$b2xkLWhhc2g";
    const NEW_HASH: &str = "$argon2id$v=19$m=256,t=1,p=1$bmV3$bmV3LWhhc2g";
    /// When the current secret was minted.
    const T0: i64 = 1_700_000_000;
    /// When the reconcile under test runs: one minute after `T0`.
    const NOW: i64 = T0 + 60;

    // ---- fixtures -------------------------------------------------------

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn time(second: i64) -> Time {
        Time(at(second))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A confidential Group app in "team-a", uid "uid-1", generation 1, no status.
    fn app() -> AppRegistration {
        let mut app = AppRegistration::new(
            "billing",
            AppRegistrationSpec { display_name: "Billing".into(), scope: Scope::Group, ..Default::default() },
        );
        app.metadata.namespace = Some("team-a".into());
        app.metadata.uid = Some("uid-1".into());
        app.metadata.generation = Some(1);
        app
    }

    fn public_app() -> AppRegistration {
        let mut app = app();
        app.spec.public_client = Some(true);
        app.spec.require_pkce = Some(true);
        app
    }

    fn annotated(mut app: AppRegistration, key: &str, value: &str) -> AppRegistration {
        app.annotations_mut().insert(key.into(), value.into());
        app
    }

    fn with_status(mut app: AppRegistration, status: AppRegistrationStatus) -> AppRegistration {
        app.status = Some(status);
        app
    }

    fn with_rotation(mut app: AppRegistration, grace_period: Option<&str>, interval: Option<&str>) -> AppRegistration {
        app.spec.rotation = Some(Rotation {
            grace_period: grace_period.map(|d| d.parse().unwrap()),
            interval: interval.map(|d| d.parse().unwrap()),
        });
        app
    }

    /// Status of an app whose secret `version` was minted at `T0`.
    fn issued_status(version: i64) -> AppRegistrationStatus {
        AppRegistrationStatus {
            client_id: Some(CLIENT_ID.into()),
            secret_hash: Some(OLD_HASH.into()),
            secret_version: Some(version),
            secret_fingerprint: Some(key().fingerprint(&ClientSecret::from_bytes(PLAINTEXT.as_bytes()).unwrap())),
            last_rotated_at: Some(time(T0)),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    /// Status of a public app (no secret) whose `version` was minted at `T0`.
    fn public_status(version: i64) -> AppRegistrationStatus {
        AppRegistrationStatus { secret_hash: None, secret_fingerprint: None, ..issued_status(version) }
    }

    fn issued(client_id: &str, version: i64) -> Issued {
        Issued {
            client_id: client_id.into(),
            secret: ClientSecret::from_bytes(PLAINTEXT.as_bytes()),
            version: Some(version),
            rotate_request: None,
        }
    }

    fn public_issued(client_id: &str, version: i64) -> Issued {
        Issued { secret: None, ..issued(client_id, version) }
    }

    /// The operator's seal key in these tests.
    fn key() -> SealKey {
        SealKey::from_bytes(&[7; 32]).unwrap()
    }

    /// The fresh credentials the shell offers: a Client ID of 22 characters.
    fn fresh() -> Fresh {
        Fresh { client_id: FRESH_ID.into(), secret: ClientSecret::from_bytes(FRESH_SECRET.as_bytes()).unwrap() }
    }

    /// What the reconciler observes when the app's Secret holds `issued`,
    /// written (and sealed) by `SecretLayout::desired` and read back by `observe`.
    fn observe(app: &AppRegistration, issued: &Issued) -> Observed {
        let layout = SecretLayout::for_app(app);
        layout.observe(app, Some(&layout.desired(app, issued, &key())), &key())
    }

    /// What the reconciler observes when someone other than registrar wrote a
    /// Secret holding `issued` that claims the app (owner reference and all).
    fn forged(app: &AppRegistration, issued: &Issued) -> Observed {
        let layout = SecretLayout::for_app(app);
        let attacker = SealKey::from_bytes(&[66; 32]).unwrap();
        layout.observe(app, Some(&layout.desired(app, issued, &attacker)), &key())
    }

    fn owned(app: &AppRegistration, issued: &Issued) -> OwnedSecret {
        match observe(app, issued) {
            Observed::Owned(owned) => owned,
            other => panic!("expected an owned Secret, got {other:?}"),
        }
    }

    /// Inputs of a valid, permitted app whose Secret verifies, at `NOW`.
    fn inputs<'a>(app: &'a AppRegistration, observed: &'a Observed) -> Inputs<'a> {
        static KEY: std::sync::LazyLock<SealKey> = std::sync::LazyLock::new(key);
        static FRESH: std::sync::LazyLock<Fresh> = std::sync::LazyLock::new(fresh);
        Inputs {
            app,
            violations: &[],
            scope_permitted: true,
            platform_namespace: PLATFORM_NAMESPACE,
            observed,
            secret_verifies: Some(true),
            status_client_id_taken: false,
            secret_client_id_taken: false,
            consents: None,
            seal_key: &KEY,
            fresh: &FRESH,
            auth_server: None,
            import: None,
            retained: None,
            chosen_secret: None,
            retention_in_the_way: None,
            source: None,
            ownership: None,
            now: at(NOW),
        }
    }

    fn violation(field: &str, message: &str) -> Violation {
        Violation { field: field.into(), message: message.into() }
    }

    fn new_hash() -> IssuedHash {
        IssuedHash { hash: Some(NEW_HASH.into()), fingerprint: Some("feedc0de".into()) }
    }

    fn public_hash() -> IssuedHash {
        IssuedHash { hash: None, fingerprint: None }
    }

    /// `desired_status` with the Ready condition the reconciler builds for it.
    fn status_after(
        app: &AppRegistration,
        now: Timestamp,
        issued: Option<(&Issued, &IssuedHash, bool)>,
    ) -> AppRegistrationStatus {
        let public = app.spec.is_public_client();
        let condition = match issued {
            Some((issued, _, _)) => issued_condition(&issued.client_id, issued.version, public),
            None => {
                let status = status_of(app);
                issued_condition(status.client_id.as_deref().unwrap_or_default(), status.secret_version, public)
            }
        };
        desired_status(StatusInputs { app, now, conditions: &[condition], issued })
    }

    fn assert_fresh_client_id(client_id: &str) {
        assert_eq!(client_id.len(), 22, "128 bits, base64url without padding: {client_id}");
        assert!(client_id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{client_id}");
        assert_ne!(client_id, CLIENT_ID);
    }

    // ---- decide: mint on missing Secret ---------------------------------

    #[test]
    fn missing_secret_without_client_id_mints_initial_credentials() {
        let app = app();
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) });
        let Decision::Mint { reason, client_id, version, rotate_request } = decision else {
            panic!("expected a mint, got {decision:?}");
        };
        assert_eq!(reason, MintReason::Initial);
        assert_fresh_client_id(&client_id);
        assert_eq!(version, 1);
        assert_eq!(rotate_request, None);
    }

    // Imported Client IDs and retained credentials taken over.

    fn importing(id: &str) -> AppRegistration {
        let mut app = app();
        app.spec.client_id = Some(id.into());
        app
    }

    #[test]
    fn the_ledgers_word_decides_whether_a_client_id_may_be_imported() {
        use crate::cluster::ledger::RetainedAt;
        let app = Key::new("team-a", "portal");
        let (uid, other) = (Uid::of("11111111-1111-1111-1111-111111111111"), Uid::of("2"));
        let standing = |state, ns: &str, uid, retained: bool| {
            Word::Standing(Standing {
                state,
                holder: Key::new(ns, "old"),
                uid,
                retained: retained.then(|| Box::new(RetainedAt { secret_name: "kept".into(), verifier: None })),
                taken_over_from: None,
                verifiers: None,
            })
        };
        let mine = |retained: bool| {
            let mut word = standing(LedgerState::Active, "team-a", uid, retained);
            if let Word::Standing(s) = &mut word {
                s.holder = app.clone();
            }
            word
        };
        let cases = [
            (Word::Free, Import::Free),
            (Word::Revoked, Import::Revoked),
            (mine(false), Import::Free),
            (mine(true), Import::Retained("kept".into())),
            (standing(LedgerState::Active, "team-a", other, false), Import::Held),
            (standing(LedgerState::Active, "team-b", other, false), Import::Held),
            (standing(LedgerState::Retained, "team-a", other, true), Import::Retained("kept".into())),
            (standing(LedgerState::Retained, "team-b", other, true), Import::RetainedElsewhere),
        ];
        for (word, expected) in cases {
            assert_eq!(Import::from_word(word.clone(), &app, uid), expected, "{word:?}");
        }
    }

    #[test]
    fn an_app_holds_its_issued_client_id_whatever_the_decision_unless_another_app_does() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &issued(CLIENT_ID, 1));
        let held = inputs(&app, &observed);
        for decision in [
            Decision::Keep { repair_metadata: false },
            Decision::Conflict,
            Decision::Reject { reason: reason::INVALID_SPEC, message: String::new() },
        ] {
            assert_eq!(decision.client_id(&held), Some(CLIENT_ID), "{decision:?}");
        }
        let taken = Inputs { status_client_id_taken: true, ..inputs(&app, &observed) };
        let refused = Decision::Reject { reason: reason::CLIENT_ID_CONFLICT, message: String::new() };
        assert_eq!(refused.client_id(&taken), None);
        let importer = importing("legacy-portal");
        let fresh = Inputs { import: Some(Import::Free), ..inputs(&importer, &Observed::Missing) };
        assert_eq!(decide(&fresh).client_id(&fresh), Some("legacy-portal"), "a first mint holds what it issues");
    }

    #[test]
    fn a_deleted_app_releases_only_a_client_id_the_server_never_held_as_its() {
        let mut app = with_status(app(), issued_status(1));
        assert_eq!(giving_up(&app, false), GiveUp::Revoke, "without a server, everything issued is revoked");
        assert_eq!(giving_up(&app, true), GiveUp::Revoke);
        let exists = DesiredCondition::registered(false, reason::CLIENT_EXISTS, "someone else's".to_owned());
        let now = time(NOW);
        let conditions = conditions::settle(&[], &[exists], app.metadata.generation, &now);
        app.status.as_mut().unwrap().conditions = conditions;
        assert_eq!(giving_up(&app, true), GiveUp::Release, "the server never held registrar's client");
        app.status.as_mut().unwrap().authorization_server =
            Some(AuthServerStatus { registered: Some("digest".into()), secret_version: Some(1) });
        assert_eq!(giving_up(&app, true), GiveUp::Revoke, "registered once: issued, so revoked");
    }

    #[test]
    fn an_imported_client_id_is_issued_with_a_fresh_secret() {
        let app = importing("legacy-portal");
        let decision = decide(&Inputs { import: Some(Import::Free), ..inputs(&app, &Observed::Missing) });
        let Decision::Mint { reason, client_id, version, .. } = &decision else { panic!("{decision:?}") };
        assert_eq!((reason, client_id.as_str(), *version), (&MintReason::Initial, "legacy-portal", 1));
        let issued = decision.issued(&inputs(&app, &Observed::Missing)).expect("issued");
        assert_eq!(issued.secret.map(|s| s.expose().to_owned()).as_deref(), Some(FRESH_SECRET));
    }

    #[test]
    fn an_imported_client_id_held_revoked_or_retained_elsewhere_issues_nothing_and_says_the_same() {
        let app = importing("legacy-portal");
        let mut messages = Vec::new();
        for state in [Import::Held, Import::Revoked, Import::RetainedElsewhere] {
            let inputs = Inputs { import: Some(state.clone()), ..inputs(&app, &Observed::Missing) };
            let Decision::Reject { reason, message } = decide(&inputs) else { panic!("{state:?} must be refused") };
            assert_eq!(reason, reason::CLIENT_ID_CONFLICT);
            assert!(message.contains("spec.clientId legacy-portal") && message.contains("not available"), "{message}");
            let outcome = outcome(&inputs, &decide(&inputs), None);
            assert!(outcome.secret.is_none() && outcome.status.client_id.is_none(), "nothing issued");
            messages.push(message);
        }
        messages.dedup();
        assert_eq!(messages.len(), 1, "held, revoked or retained elsewhere read alike: {messages:?}");
    }

    #[test]
    fn a_retained_secret_of_the_same_name_is_taken_over_with_its_secret() {
        let app = importing("legacy-portal");
        let layout = SecretLayout::for_app(&app);
        let retained = RetainedSecret {
            name: layout.name.clone(),
            uid: "secret-uid".into(),
            resource_version: "77".into(),
            client_id: "legacy-portal".into(),
        };
        let kept = ClientSecret::from_bytes(PLAINTEXT.as_bytes()).unwrap();
        let inputs = Inputs {
            import: Some(Import::Retained(layout.name.clone())),
            retained: Some(&retained),
            chosen_secret: Some(&kept),
            ..inputs(&app, &Observed::Foreign)
        };
        let decision = decide(&inputs);
        let Decision::Mint { reason, client_id, .. } = &decision else { panic!("{decision:?}") };
        assert_eq!((reason, client_id.as_str()), (&MintReason::TakenOver { kept_secret: true }, "legacy-portal"));
        let issued = decision.issued(&inputs).expect("issued");
        assert_eq!(issued.secret.as_ref().map(ClientSecret::expose), Some(PLAINTEXT), "the retained secret is kept");
        let hash = IssuedHash { hash: Some(NEW_HASH.into()), fingerprint: Some("cafef00d".into()) };
        let outcome = outcome(&inputs, &decision, Some(&hash));
        let Some(SecretWrite::TakeOver { resource_version, secret }) = &outcome.secret else {
            panic!("{:?}", outcome.secret)
        };
        assert_eq!(resource_version, "77");
        assert!(secret.metadata.owner_references.is_some(), "the Secret is the new app's");
        assert!(outcome.restart.is_none(), "a first issuance rolls nothing");
        assert_eq!(outcome.events[0].reason, "TakenOver");
        assert_eq!(outcome.status.client_id.as_deref(), Some("legacy-portal"));
    }

    #[test]
    fn a_retention_in_the_way_says_how_to_take_it_over() {
        let app = app();
        let inputs = Inputs { retention_in_the_way: Some("legacy-portal".into()), ..inputs(&app, &Observed::Foreign) };
        let decision = decide(&inputs);
        assert_eq!(decision, Decision::Conflict);
        let outcome = outcome(&inputs, &decision, None);
        let ready = &outcome.status.conditions[0];
        assert!(ready.message.contains("spec.clientId: legacy-portal"), "{}", ready.message);
    }

    // A secret of the user's choice (secret.sourceRef).

    fn source(read: SourceRead) -> Option<Source> {
        Some(Source { secret: "chosen".into(), key: "client_secret".into(), read, recheck: secs(60) })
    }

    fn chosen(value: &str) -> ClientSecret {
        ClientSecret::from_bytes(value.as_bytes()).unwrap()
    }

    #[test]
    fn a_missing_weak_or_forbidden_source_issues_nothing_and_says_why() {
        let app = app();
        for (read, expected, says) in [
            (SourceRead::NoSecret, reason::SECRET_SOURCE_MISSING, "Secret chosen does not exist (yet)"),
            (SourceRead::NoKey, reason::SECRET_SOURCE_MISSING, "Secret chosen has no key client_secret"),
            (SourceRead::Weak, reason::WEAK_SECRET, "the secret in Secret chosen, key client_secret is refused"),
            (SourceRead::Forbidden(SourceRefusal::NoRegisteringUser), reason::FORBIDDEN, "records no registering user"),
            (
                SourceRead::Forbidden(SourceRefusal::RegisteredByDoubted("not installed".into())),
                reason::FORBIDDEN,
                "set and keep it: not installed: nothing was read",
            ),
            (
                SourceRead::Forbidden(SourceRefusal::NotAllowed { user: "alice".into() }),
                reason::FORBIDDEN,
                "alice, who registered the app, may not get Secret chosen",
            ),
        ] {
            let inputs = Inputs { source: source(read), ..inputs(&app, &Observed::Missing) };
            let decision = decide(&inputs);
            assert!(matches!(&decision, Decision::Reject { reason, .. } if *reason == expected), "{decision:?}");
            let outcome = outcome(&inputs, &decision, None);
            assert!(outcome.secret.is_none() && outcome.status.client_id.is_none(), "nothing invented");
            assert_eq!(outcome.requeue, Some(secs(60)), "read again on schedule");
            let sourced = conditions::find(&outcome.status.conditions, conditions::SECRET_SOURCE).expect("condition");
            assert_eq!((sourced.status.as_str(), sourced.reason.as_str()), ("False", expected));
            assert!(sourced.message.starts_with("secret.sourceRef: ") && sourced.message.contains(says), "{says}");
        }
    }

    #[test]
    fn the_source_value_is_issued_and_a_new_one_rotates() {
        let value = chosen(PLAINTEXT);
        let fresh_app = app();
        let first = Inputs {
            source: source(SourceRead::Value(value.clone())),
            chosen_secret: Some(&value),
            ..inputs(&fresh_app, &Observed::Missing)
        };
        let minted = decide(&first).issued(&first).expect("issued");
        assert_eq!(minted.secret.as_ref().map(ClientSecret::expose), Some(PLAINTEXT));

        // Issued from the source: the same value keeps; a new one rotates.
        let issued_app = with_status(app(), issued_status(1));
        let app = &issued_app;
        let observed = observe(app, &issued(CLIENT_ID, 1));
        let same = Inputs { source: source(SourceRead::Value(value.clone())), ..inputs(app, &observed) };
        assert!(matches!(decide(&same), Decision::Keep { .. }), "{:?}", decide(&same));
        let new = chosen("another-chosen-secret-of-32-chars-or-more");
        let changed = Inputs {
            source: source(SourceRead::Value(new.clone())),
            chosen_secret: Some(&new),
            ..inputs(app, &observed)
        };
        let decision = decide(&changed);
        assert!(
            matches!(&decision, Decision::Mint { reason: MintReason::SourceChanged, version: 2, .. }),
            "{decision:?}"
        );
        assert!(MintReason::SourceChanged.is_rotation(), "grace period and restarts apply");
        // A rotate annotation does nothing to a sourced secret.
        let rotate = with_status(annotated(super::tests::app(), ROTATE_ANNOTATION, "now"), issued_status(1));
        let observed = observe(&rotate, &issued(CLIENT_ID, 1));
        let sourced = Inputs { source: source(SourceRead::Value(value)), ..inputs(&rotate, &observed) };
        assert!(matches!(decide(&sourced), Decision::Keep { .. }));
    }

    #[test]
    fn fingerprints_are_keyed_and_older_ones_are_rewritten_without_a_new_secret() {
        let plaintext = ClientSecret::from_bytes(PLAINTEXT.as_bytes()).unwrap();
        let keyed = key().fingerprint(&plaintext);
        assert_ne!(keyed, plaintext.plain_fingerprint(), "not the plain SHA-256 anyone could test guesses against");
        assert_eq!(keyed.len(), 8);
        assert_ne!(keyed, SealKey::from_bytes(&[9; 32]).unwrap().fingerprint(&plaintext), "another key, another one");
        // An app issued before fingerprints were keyed: its Secret still verifies, and the fingerprint is rewritten.
        let real_hash = crate::credentials::hash_now_with(&plaintext, crate::credentials::HashParams::MINTED).unwrap();
        let legacy = AppRegistrationStatus {
            secret_fingerprint: Some(plaintext.plain_fingerprint()),
            secret_hash: Some(real_hash.clone()),
            ..issued_status(1)
        };
        let app = with_status(app(), legacy.clone());
        let observed = observe(&app, &issued(CLIENT_ID, 1));
        assert_eq!(secret_verifies(&legacy, &observed, &key()), Some(true));
        let inputs = inputs(&app, &observed);
        let (decision, outcome) = planned(&inputs);
        assert!(matches!(decision, Decision::Keep { .. }), "{decision:?}");
        assert_eq!(outcome.status.secret_fingerprint.as_deref(), Some(keyed.as_str()));
        assert!(outcome.secret.is_none() && outcome.minted.is_none(), "no new secret");
        // Under a key since replaced: the fingerprint alone does not tell (the shell asks argon2id).
        let replaced = AppRegistrationStatus {
            secret_fingerprint: Some(SealKey::from_bytes(&[9; 32]).unwrap().fingerprint(&plaintext)),
            secret_hash: Some(real_hash),
            ..issued_status(1)
        };
        assert_eq!(secret_verifies(&replaced, &observed, &key()), Some(false));
    }

    #[test]
    fn a_chosen_secrets_verifiers_go_to_the_ledger_not_status() {
        const CHOSEN_OLD: &str = "$argon2id$v=19$m=19456,t=2,p=1$b2xk$Y2hvc2VuLW9sZA";
        const CHOSEN_NEW: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmV3$Y2hvc2VuLW5ldw";
        // As the shell shows it to the plan: status with the ledger's verifier.
        let shown = AppRegistrationStatus { secret_hash: Some(CHOSEN_OLD.into()), ..issued_status(1) };
        let app = with_rotation(with_status(app(), shown), Some("1h"), None);
        let observed = observe(&app, &issued(CLIENT_ID, 1));
        let new = chosen("another-chosen-secret-of-32-chars-or-more");
        let inputs = Inputs {
            source: source(SourceRead::Value(new.clone())),
            chosen_secret: Some(&new),
            ..inputs(&app, &observed)
        };
        let decision = decide(&inputs);
        assert!(matches!(decision, Decision::Mint { reason: MintReason::SourceChanged, .. }), "{decision:?}");
        let hash = IssuedHash { hash: Some(CHOSEN_NEW.into()), fingerprint: Some(key().fingerprint(&new)) };
        let outcome = outcome(&inputs, &decision, Some(&hash));
        assert_eq!(outcome.status.secret_hash, None, "status, which view reads, holds no verifier of it");
        assert_eq!(outcome.status.previous_secret_hash, None);
        let verifiers = outcome.verifiers.expect("the ledger's");
        assert_eq!(verifiers.current, CHOSEN_NEW);
        assert_eq!(verifiers.previous.as_deref(), Some(CHOSEN_OLD), "the grace period's, in the ledger too");
        assert!(verifiers.previous_expires_at.is_some());
        assert_eq!(outcome.status.secret_fingerprint.as_deref(), Some(key().fingerprint(&new).as_str()));
        // A minted secret's hash stays in status.
        let minted = with_status(super::tests::app(), issued_status(1));
        let observed = observe(&minted, &issued(CLIENT_ID, 1));
        let kept = outcome_of(&inputs_for(&minted, &observed));
        assert_eq!(kept.verifiers, None);
        assert_eq!(kept.status.secret_hash.as_deref(), Some(OLD_HASH));
    }

    fn inputs_for<'a>(app: &'a AppRegistration, observed: &'a Observed) -> Inputs<'a> {
        inputs(app, observed)
    }

    fn outcome_of(inputs: &Inputs<'_>) -> Outcome {
        planned(inputs).1
    }

    #[test]
    fn a_weak_new_value_keeps_what_is_issued_and_warns() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &issued(CLIENT_ID, 1));
        let weak = Inputs { source: source(SourceRead::Weak), ..inputs(&app, &observed) };
        let decision = decide(&weak);
        assert!(matches!(decision, Decision::Keep { .. }), "{decision:?}");
        let outcome = outcome(&weak, &decision, None);
        assert_eq!(outcome.status.secret_version, Some(1), "nothing issued changes");
        assert!(conditions::is_true(&outcome.status.conditions, READY), "still Ready: the issued secret works");
        assert!(outcome.events.iter().any(|e| e.warning && e.reason == reason::WEAK_SECRET), "{:?}", outcome.events);
        // The credentials Secret lost, with nothing usable at the source: not re-minted.
        let inputs = Inputs { source: source(SourceRead::NoSecret), ..inputs(&app, &Observed::Missing) };
        assert!(matches!(decide(&inputs), Decision::Reject { reason: reason::SECRET_SOURCE_MISSING, .. }));
    }

    #[test]
    fn initial_mint_uses_the_fresh_client_id_passed_in() {
        let app = app();
        let decision = decide(&inputs(&app, &Observed::Missing));
        assert!(matches!(&decision, Decision::Mint { client_id, .. } if client_id == FRESH_ID), "{decision:?}");
    }

    #[test]
    fn initial_mint_answers_the_current_rotate_annotation() {
        let app = annotated(app(), ROTATE_ANNOTATION, "2024-01-01");
        let decision = decide(&inputs(&app, &Observed::Missing));
        let Decision::Mint { reason, rotate_request, version, .. } = decision else {
            panic!("expected a mint, got {decision:?}");
        };
        assert_eq!(reason, MintReason::Initial);
        assert_eq!(version, 1);
        assert_eq!(rotate_request.as_deref(), Some("2024-01-01"), "re-applying the manifest must not rotate later");
    }

    #[test]
    fn missing_secret_with_client_id_keeps_the_client_id_and_bumps_the_version() {
        let app = with_status(app(), issued_status(3));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretMissing,
                client_id: CLIENT_ID.into(),
                version: 4,
                rotate_request: None
            }
        );
    }

    #[test]
    fn missing_secret_remint_carries_the_current_rotate_annotation() {
        let app = annotated(with_status(app(), issued_status(3)), ROTATE_ANNOTATION, "r1");
        let decision = decide(&inputs(&app, &Observed::Missing));
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretMissing,
                client_id: CLIENT_ID.into(),
                version: 4,
                rotate_request: Some("r1".into())
            }
        );
    }

    #[test]
    fn missing_secret_of_a_public_client_remints_its_client_id_secret() {
        let app = with_status(public_app(), public_status(2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretMissing,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    // ---- decide: conflict and rejection ---------------------------------

    #[test]
    fn foreign_secret_is_a_conflict() {
        let app = app();
        assert_eq!(decide(&inputs(&app, &Observed::Foreign)), Decision::Conflict);
        let issued_app = with_status(app, issued_status(2));
        assert_eq!(decide(&inputs(&issued_app, &Observed::Foreign)), Decision::Conflict);
    }

    #[test]
    fn foreign_secret_seen_through_the_layout_is_a_conflict() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(CLIENT_ID, 1), &key());
        secret.metadata.owner_references = None;
        let observed = layout.observe(&app, Some(&secret), &key());
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Conflict);
    }

    #[test]
    fn violations_reject_with_invalid_spec_and_the_summarized_message() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let violations = [
            violation("spec.redirectUris[1]", "redirect URI http://example.com/cb must use https"),
            violation("spec.requirePkce", "a public client must set requirePkce: true"),
        ];
        let decision = decide(&Inputs { violations: &violations, ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Reject {
                reason: reason::INVALID_SPEC,
                message: "spec.redirectUris[1]: redirect URI http://example.com/cb must use https; \
                          spec.requirePkce: a public client must set requirePkce: true"
                    .into(),
            }
        );
        assert_eq!(decision, Decision::Reject { reason: "InvalidSpec", message: summarize(&violations) });
    }

    #[test]
    fn violations_are_rejected_before_anything_is_minted_or_conflicts() {
        let app = app();
        let violations = [violation("spec.displayName", "must not be blank")];
        for observed in [Observed::Missing, Observed::Foreign] {
            let decision = decide(&Inputs { violations: &violations, ..inputs(&app, &observed) });
            assert!(matches!(decision, Decision::Reject { reason: reason::INVALID_SPEC, .. }), "{decision:?}");
        }
    }

    #[test]
    fn scope_not_permitted_rejects_naming_the_platform_namespace() {
        let mut app = app();
        app.spec.scope = Scope::Global;
        let decision = decide(&Inputs { scope_permitted: false, ..inputs(&app, &Observed::Missing) });
        let Decision::Reject { reason, message } = decision else {
            panic!("expected a rejection, got {decision:?}");
        };
        assert_eq!(reason, reason::SCOPE_NOT_PERMITTED);
        assert!(message.contains(PLATFORM_NAMESPACE), "{message}");
        assert!(message.contains("Global"), "{message}");
    }

    #[test]
    fn invalid_spec_is_reported_before_scope_not_permitted() {
        let app = app();
        let violations = [violation("spec.displayName", "must not be blank")];
        let decision =
            decide(&Inputs { violations: &violations, scope_permitted: false, ..inputs(&app, &Observed::Missing) });
        assert!(matches!(decision, Decision::Reject { reason: reason::INVALID_SPEC, .. }), "{decision:?}");
    }

    // ---- decide: finishing an interrupted mint --------------------------

    #[test]
    fn secret_ahead_of_status_is_adopted() {
        let app = with_status(app(), issued_status(1));
        let ahead = Issued { rotate_request: Some("r1".into()), ..issued(CLIENT_ID, 2) };
        let observed = observe(&app, &ahead);
        // The new secret cannot verify against the old hash still in status.
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(ahead));
    }

    #[test]
    fn secret_written_before_the_first_status_is_adopted() {
        let app = app();
        let first = issued("bmV3LWNsaWVudC1pZC0wMDE", 1);
        let observed = observe(&app, &first);
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(first));
    }

    #[test]
    fn public_secret_ahead_of_status_is_adopted_without_a_secret() {
        let app = with_status(public_app(), public_status(1));
        let ahead = public_issued(CLIENT_ID, 2);
        let observed = observe(&app, &ahead);
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(ahead));
    }

    #[test]
    fn secret_ahead_with_a_different_client_id_mints_secret_altered_instead_of_adopting() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &issued("b3RoZXItY2xpZW50LWlkLTE", 2));
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            },
            "the status Client ID is kept, and the version passes the Secret's"
        );
    }

    #[test]
    fn confidential_secret_ahead_without_its_secret_is_reminted_not_adopted() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &Issued { secret: None, ..issued(CLIENT_ID, 2) });
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    #[test]
    fn owned_secret_without_client_id_or_version_and_empty_status_starts_over() {
        let app = app();
        let observed = observe(&app, &Issued { client_id: String::new(), version: None, ..issued(CLIENT_ID, 1) });
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        let Decision::Mint { reason, client_id, version, .. } = decision else {
            panic!("expected a mint, got {decision:?}");
        };
        assert_eq!(reason, MintReason::Initial);
        assert_fresh_client_id(&client_id);
        assert_eq!(version, 1);
    }

    // ---- decide: drift --------------------------------------------------

    #[test]
    fn owned_secret_that_does_not_verify_mints_secret_altered() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    #[test]
    fn owned_secret_that_could_not_be_verified_is_not_trusted() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert!(
            matches!(decision, Decision::Mint { reason: MintReason::SecretAltered, version: 3, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn owned_secret_whose_client_secret_was_removed_mints_secret_altered() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &Issued { secret: None, ..issued(CLIENT_ID, 2) });
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert!(
            matches!(decision, Decision::Mint { reason: MintReason::SecretAltered, version: 3, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn owned_secret_with_a_version_lower_than_status_mints_secret_altered() {
        let app = with_status(app(), issued_status(3));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&inputs(&app, &observed));
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 4,
                rotate_request: None
            }
        );
    }

    #[test]
    fn owned_secret_with_an_altered_client_id_mints_secret_altered_keeping_the_status_client_id() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued("YWx0ZXJlZC1jbGllbnQtaWQ", 2));
        let decision = decide(&inputs(&app, &observed));
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    #[test]
    fn drift_remint_answers_a_pending_rotate_request() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: Some("r1".into())
            }
        );
    }

    #[test]
    fn metadata_drift_keeps_the_secret_and_repairs_its_metadata() {
        let app = with_status(app(), issued_status(2));
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(CLIENT_ID, 2), &key());
        secret.metadata.labels.as_mut().unwrap().remove(APP_LABEL);
        let observed = layout.observe(&app, Some(&secret), &key());
        assert!(matches!(&observed, Observed::Owned(o) if !o.metadata_current));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: true });
    }

    #[test]
    fn metadata_drift_is_repaired_from_an_owned_secret_built_by_hand() {
        let app = with_status(app(), issued_status(2));
        let observed = Observed::Owned(OwnedSecret { metadata_current: false, ..owned(&app, &issued(CLIENT_ID, 2)) });
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: true });
    }

    #[test]
    fn intact_secret_is_kept_without_repair() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn intact_public_secret_is_kept_without_verification() {
        let app = with_status(public_app(), public_status(2));
        let observed = observe(&app, &public_issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    // ---- decide: rotation -----------------------------------------------

    #[test]
    fn pending_rotate_annotation_mints_rotate_requested_with_the_next_version() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        assert_eq!(
            decide(&inputs(&app, &observed)),
            Decision::Mint {
                reason: MintReason::RotateRequested("r2".into()),
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: Some("r2".into())
            }
        );
    }

    #[test]
    fn rotate_annotation_different_from_the_last_handled_one_rotates() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r2");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&inputs(&app, &observed));
        assert!(
            matches!(&decision, Decision::Mint { reason: MintReason::RotateRequested(r), version: 3, .. } if r == "r2"),
            "{decision:?}"
        );
    }

    #[test]
    fn rotate_annotation_equal_to_the_last_handled_one_keeps() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn public_client_with_a_rotate_annotation_keeps_without_minting() {
        let app = annotated(with_status(public_app(), public_status(2)), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &public_issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn elapsed_rotation_interval_mints_scheduled() {
        let app = with_rotation(with_status(app(), issued_status(2)), None, Some("1h"));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::Scheduled,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
        let later = decide(&Inputs { now: at(T0 + 7 * 3600), ..inputs(&app, &observed) });
        assert!(matches!(later, Decision::Mint { reason: MintReason::Scheduled, .. }), "{later:?}");
    }

    #[test]
    fn scheduled_rotation_carries_the_already_handled_rotate_annotation() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_rotation(with_status(app(), status), None, Some("1h")), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), ..inputs(&app, &observed) });
        assert!(
            matches!(&decision, Decision::Mint { reason: MintReason::Scheduled, rotate_request: Some(r), .. } if r == "r1"),
            "{decision:?}"
        );
    }

    #[test]
    fn rotation_interval_not_yet_elapsed_keeps() {
        let app = with_rotation(with_status(app(), issued_status(2)), None, Some("1h"));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3599), ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn public_client_is_never_rotated_on_schedule() {
        let app = with_rotation(with_status(public_app(), public_status(2)), None, Some("1h"));
        let observed = observe(&app, &public_issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 10 * 3600), secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn rotate_request_takes_priority_over_a_due_schedule() {
        let app =
            annotated(with_rotation(with_status(app(), issued_status(2)), None, Some("1h")), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), ..inputs(&app, &observed) });
        assert!(matches!(decision, Decision::Mint { reason: MintReason::RotateRequested(_), .. }), "{decision:?}");
    }

    #[test]
    fn drift_takes_priority_over_a_pending_rotation() {
        let app =
            annotated(with_rotation(with_status(app(), issued_status(2)), None, Some("1h")), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert!(matches!(decision, Decision::Mint { reason: MintReason::SecretAltered, .. }), "{decision:?}");
    }

    #[test]
    fn only_requested_and_scheduled_mints_are_rotations() {
        assert!(MintReason::RotateRequested("r1".into()).is_rotation());
        assert!(MintReason::Scheduled.is_rotation());
        assert!(!MintReason::Initial.is_rotation());
        assert!(!MintReason::SecretMissing.is_rotation());
        assert!(!MintReason::SecretAltered.is_rotation());
        assert!(!MintReason::SecretUntrusted.is_rotation());
    }

    /// The invariant: no path leaves a Secret whose secret does not verify
    /// against status. A crash between the Secret and the status writes (e.g. the
    /// operator pod replaced by an upgrade whose validation is stricter) followed
    /// by a spec that now fails validation leaves the Secret ahead of status for
    /// as long as the spec stays invalid: workloads mounting it fail to authenticate.
    #[test]
    fn interrupted_mint_is_finished_even_when_the_spec_turned_invalid() {
        let app = with_status(app(), issued_status(1));
        let ahead = issued(CLIENT_ID, 2);
        let observed = observe(&app, &ahead);
        let violations = [violation("spec.redirectUris[0]", "redirect URI must use https")];
        let decision =
            decide(&Inputs { violations: &violations, secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(ahead));
    }

    // ---- decide: what registrar trusts -----------------------------------

    /// The other app's Client ID, which a forged Secret names.
    const OTHER_ID: &str = "b3RoZXItYXBwcy1jbGllbnQ";

    /// Status of an app whose secret `version` was minted at `T0` and is held
    /// by the authorization server.
    fn registered_status(version: i64) -> AppRegistrationStatus {
        let held = AuthServerStatus { registered: Some("0123456789abcdef".into()), secret_version: Some(version) };
        AppRegistrationStatus { authorization_server: Some(held), ..issued_status(version) }
    }

    #[test]
    fn a_forged_secret_before_the_first_mint_is_not_adopted_and_a_fresh_client_id_is_minted() {
        let app = app();
        let observed = forged(&app, &issued(OTHER_ID, 1));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretUntrusted,
                client_id: FRESH_ID.into(),
                version: 1,
                rotate_request: None
            }
        );
    }

    #[test]
    fn a_forged_version_bump_is_reminted_keeping_the_status_client_id() {
        let app = with_status(app(), issued_status(1));
        for forged_secret in [issued(CLIENT_ID, 2), issued(OTHER_ID, 2), issued(CLIENT_ID, 9)] {
            let observed = forged(&app, &forged_secret);
            let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
            assert_eq!(
                decision,
                Decision::Mint {
                    reason: MintReason::SecretUntrusted,
                    client_id: CLIENT_ID.into(),
                    version: 2,
                    rotate_request: None
                },
                "{forged_secret:?}"
            );
        }
    }

    #[test]
    fn a_forged_secret_for_an_app_with_an_invalid_spec_is_never_adopted() {
        let violations = [violation("spec.displayName", "must not be blank")];
        for app in [app(), with_status(app(), issued_status(1))] {
            let observed = forged(&app, &issued(OTHER_ID, 2));
            let decision = decide(&Inputs { violations: &violations, ..inputs(&app, &observed) });
            assert!(matches!(decision, Decision::Reject { reason: reason::INVALID_SPEC, .. }), "{decision:?}");
        }
    }

    #[test]
    fn a_sealed_secret_whose_client_id_another_app_holds_is_not_adopted() {
        let app = app();
        let observed = observe(&app, &issued(OTHER_ID, 1));
        let decision =
            decide(&Inputs { secret_verifies: None, secret_client_id_taken: true, ..inputs(&app, &observed) });
        assert!(
            matches!(&decision, Decision::Mint { reason: MintReason::Initial, client_id, .. } if client_id == FRESH_ID),
            "{decision:?}"
        );
    }

    #[test]
    fn a_client_id_held_by_another_app_is_refused_and_nothing_is_written() {
        let app = with_status(app(), issued_status(1));
        // Even with a sealed Secret ahead of status.
        for observed in [Observed::Missing, observe(&app, &issued(CLIENT_ID, 2)), observe(&app, &issued(CLIENT_ID, 1))]
        {
            let inputs = Inputs { status_client_id_taken: true, ..inputs(&app, &observed) };
            let decision = decide(&inputs);
            let Decision::Reject { reason, message } = &decision else {
                panic!("expected a rejection, got {decision:?}")
            };
            assert_eq!(*reason, reason::CLIENT_ID_CONFLICT);
            assert!(message.contains(CLIENT_ID) && message.contains("another AppRegistration"), "{message}");
            let outcome = outcome(&inputs, &decision, None);
            assert_eq!(outcome.secret, None);
            assert_eq!(outcome.restart, None);
            assert_eq!(outcome.status.client_id.as_deref(), Some(CLIENT_ID), "status is left as it was");
            assert_eq!(outcome.status.secret_hash.as_deref(), Some(OLD_HASH));
            assert_eq!(conditions::find(&outcome.status.conditions, READY).unwrap().reason, "ClientIdConflict");
            assert_eq!(outcome.events.len(), 1);
            assert!(outcome.events[0].warning);
        }
    }

    #[test]
    fn an_unsealed_secret_at_the_status_version_is_kept_and_sealed() {
        // A Secret written before secrets were sealed: status vouches for it.
        let app = with_status(app(), issued_status(2));
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(CLIENT_ID, 2), &key());
        secret.metadata.annotations.as_mut().unwrap().remove(crate::credentials::seal::SEAL_ANNOTATION);
        let observed = layout.observe(&app, Some(&secret), &key());
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: true });
        let outcome = outcome(&inputs(&app, &observed), &Decision::Keep { repair_metadata: true }, None);
        let Some(SecretWrite::Replace { secret, .. }) = &outcome.secret else { panic!("{:?}", outcome.secret) };
        let resealed = layout.observe(&app, Some(secret), &key());
        assert!(matches!(resealed, Observed::Owned(o) if o.sealed && o.metadata_current));
    }

    // ---- outcome --------------------------------------------------------

    fn hash_of(decision: &Decision, inputs: &Inputs<'_>) -> Option<IssuedHash> {
        decision.issued(inputs).map(|issued| match issued.secret {
            Some(secret) => IssuedHash { hash: Some(NEW_HASH.into()), fingerprint: Some(key().fingerprint(&secret)) },
            None => public_hash(),
        })
    }

    fn planned(inputs: &Inputs<'_>) -> (Decision, Outcome) {
        let decision = decide(inputs);
        let hash = hash_of(&decision, inputs);
        let outcome = outcome(inputs, &decision, hash.as_ref());
        (decision, outcome)
    }

    fn with_restarts(mut app: AppRegistration) -> AppRegistration {
        app.spec.restart_on_rotate =
            vec![crate::api::WorkloadRef { kind: crate::api::WorkloadKind::Deployment, name: "web".into() }];
        app
    }

    #[test]
    fn the_initial_mint_creates_a_sealed_secret_then_status_then_an_issued_event() {
        let app = annotated(app(), REGISTERED_BY_ANNOTATION, "alice");
        let inputs = Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) };
        let (_, outcome) = planned(&inputs);
        let Some(SecretWrite::Create(secret)) = &outcome.secret else { panic!("{:?}", outcome.secret) };
        let Observed::Owned(written) = SecretLayout::for_app(&app).observe(&app, Some(secret), &key()) else {
            panic!("not owned")
        };
        assert!(written.sealed);
        assert_eq!(written.issued.client_id, FRESH_ID);
        assert_eq!(written.issued.secret.as_ref().map(ClientSecret::expose), Some(FRESH_SECRET));
        assert_eq!(outcome.status.client_id.as_deref(), Some(FRESH_ID));
        assert_eq!(outcome.status.secret_version, Some(1));
        assert_eq!(outcome.status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(outcome.status.registered_by.as_deref(), Some("alice"));
        assert_eq!(outcome.status.client_id_seal, None, "the ledger records who holds it, not a seal in status");
        assert!(conditions::is_true(&outcome.status.conditions, READY));
        assert_eq!(outcome.restart, None, "nothing to restart for a first secret");
        assert_eq!(outcome.minted, Some(MintReason::Initial));
        assert_eq!(outcome.requeue, None);
        let [event] = outcome.events.as_slice() else { panic!("{:?}", outcome.events) };
        assert_eq!((event.warning, event.reason, event.about_secret), (false, "Issued", true));
        assert!(event.note.contains(FRESH_ID) && event.note.contains("billing-credentials"), "{}", event.note);
        let everything = format!("{:?} {:?}", outcome.status, outcome.events);
        assert!(!everything.contains(FRESH_SECRET));
    }

    #[test]
    fn an_unchanged_healthy_app_plans_nothing() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let (_, first) = planned(&inputs(&app, &observed));
        let app = with_status(app.clone(), first.status);
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let (decision, outcome) = planned(&inputs(&app, &observed));
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
        assert_eq!(outcome.secret, None);
        assert_eq!(Some(&outcome.status), app.status.as_ref(), "status is written only when it differs");
        assert!(outcome.events.is_empty());
    }

    #[test]
    fn an_untrusted_secret_is_replaced_on_condition_with_a_warning_naming_what_happened() {
        let app = with_status(app(), issued_status(1));
        let observed = forged(&app, &issued(OTHER_ID, 2));
        let Observed::Owned(forged_secret) = &observed else { panic!() };
        let (_, outcome) = planned(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        let Some(SecretWrite::Replace { resource_version, .. }) = &outcome.secret else { panic!() };
        assert_eq!(resource_version, &forged_secret.resource_version);
        assert_eq!(outcome.status.client_id.as_deref(), Some(CLIENT_ID));
        let [event] = outcome.events.as_slice() else { panic!("{:?}", outcome.events) };
        assert_eq!((event.warning, event.reason), (true, "SecretUntrusted"));
        assert!(event.note.contains("did not write") && event.note.contains(CLIENT_ID), "{}", event.note);
        assert!(!event.note.contains(OTHER_ID), "{}", event.note);
    }

    #[test]
    fn a_rejection_warns_once_per_new_reason_or_message() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let violations = [violation("spec.displayName", "must not be blank")];
        let inputs = Inputs { violations: &violations, ..inputs(&app, &observed) };
        let (_, first) = planned(&inputs);
        assert_eq!(first.events.len(), 1);
        assert_eq!(first.events[0].reason, reason::INVALID_SPEC);
        let app = with_status(app.clone(), first.status.clone());
        let (_, again) = planned(&Inputs { app: &app, ..inputs });
        assert!(again.events.is_empty(), "{:?}", again.events);
        assert_eq!(again.status, first.status);
    }

    #[test]
    fn a_foreign_secret_is_a_conflict_retried_later() {
        let app = app();
        let (_, outcome) = planned(&inputs(&app, &Observed::Foreign));
        assert_eq!(outcome.secret, None);
        assert_eq!(outcome.requeue, Some(CONFLICT_RETRY));
        let ready = conditions::find(&outcome.status.conditions, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SecretConflict"));
        assert!(ready.message.contains("billing-credentials"));
    }

    #[test]
    fn a_rotation_rolls_the_workloads_and_a_refused_restart_leaves_the_rotation_complete() {
        let app = annotated(with_restarts(with_status(app(), issued_status(2))), ROTATE_ANNOTATION, "r3");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let inputs = inputs(&app, &observed);
        let (_, mut outcome) = planned(&inputs);
        assert_eq!(outcome.restart, Some(3));
        assert!(conditions::find(&outcome.status.conditions, WORKLOADS_RESTARTED).is_none());

        let report = RestartReport {
            missing: vec!["Deployment gone".into()],
            failed: Some(("Deployment web".into(), "deployments.apps \"web\" is forbidden".into())),
        };
        after_restart(&inputs, &mut outcome, &report);
        assert_eq!(outcome.status.secret_version, Some(3), "status follows the Secret at once");
        assert_eq!(outcome.status.pending_restart, Some(3));
        assert!(conditions::is_true(&outcome.status.conditions, READY), "credentials are not blocked");
        let restarted = conditions::find(&outcome.status.conditions, WORKLOADS_RESTARTED).unwrap();
        assert_eq!((restarted.status.as_str(), restarted.reason.as_str()), ("False", "RestartFailed"));
        assert!(restarted.message.contains("Deployment web") && restarted.message.contains("forbidden"));
        let reasons: Vec<_> = outcome.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["Rotated", "RestartTargetMissing", "RestartFailed"]);

        // The next pass retries the restart, and its success clears it.
        let app = with_status(app.clone(), outcome.status.clone());
        let observed = observe(&app, &Issued { rotate_request: Some("r3".into()), ..issued(CLIENT_ID, 3) });
        let inputs = Inputs { secret_verifies: Some(true), ..self::inputs(&app, &observed) };
        let (decision, mut retry) = planned(&inputs);
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
        assert_eq!(retry.restart, Some(3));
        after_restart(&inputs, &mut retry, &RestartReport::default());
        assert_eq!(retry.status.pending_restart, None);
        let restarted = conditions::find(&retry.status.conditions, WORKLOADS_RESTARTED).unwrap();
        assert_eq!((restarted.status.as_str(), restarted.reason.as_str()), ("True", "Restarted"));
        assert!(retry.events.is_empty());
    }

    #[test]
    fn adopting_a_rotation_rolls_the_workloads_too() {
        let app = with_restarts(with_status(app(), issued_status(2)));
        let observed = observe(&app, &issued(CLIENT_ID, 3));
        let (decision, outcome) = planned(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert!(matches!(decision, Decision::Adopt(_)), "{decision:?}");
        assert_eq!(outcome.secret, None, "the Secret is already written");
        assert_eq!(outcome.restart, Some(3));
        assert_eq!(outcome.status.secret_version, Some(3));
        assert_eq!(outcome.minted, None);
    }

    #[test]
    fn revocation_names_the_client_id_only_when_the_app_held_it() {
        let app = with_status(app(), issued_status(2));
        let (status, event) = revoked(&app, Some(CLIENT_ID), at(NOW));
        assert_eq!(conditions::find(&status.conditions, READY).unwrap().reason, reason::REVOKED);
        assert!(event.note.contains(CLIENT_ID), "{}", event.note);
        let (_, event) = revoked(&app, None, at(NOW));
        assert!(!event.note.contains(CLIENT_ID), "{}", event.note);
        assert!(event.note.contains("none was revoked"), "{}", event.note);
    }

    // ---- outcome: the authorization server --------------------------------

    fn hydra_view() -> AuthServerView<'static> {
        AuthServerView {
            capabilities: crate::authserver::hydra::CAPABILITIES,
            urls: ServerUrls { issuer: "http://id.example".into(), token_url: "http://id.example/oauth2/token".into() },
            unreachable: None,
            stale: false,
        }
    }

    fn with_server<'a>(inputs: Inputs<'a>, view: AuthServerView<'a>) -> Inputs<'a> {
        Inputs { auth_server: Some(view), ..inputs }
    }

    /// The app as a pass with the server left it (status fed back).
    fn after(app: &AppRegistration, outcome: &Outcome) -> AppRegistration {
        with_status(app.clone(), outcome.status.clone())
    }

    fn condition<'a>(status: &'a AppRegistrationStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = conditions::find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn the_first_mint_registers_the_client_with_its_secret_in_the_same_pass() {
        let app = app();
        let inputs = with_server(Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) }, hydra_view());
        let (_, outcome) = planned(&inputs);
        let Some(Registration::Register { registration, secret }) = &outcome.registration else {
            panic!("{:?}", outcome.registration)
        };
        assert_eq!(registration.client_id, FRESH_ID);
        assert_eq!(registration.app, "team-a/billing");
        assert_eq!(registration.scopes, ["offline", "offline_access", "openid"], "Hydra's defaults, as it stores them");
        assert_eq!(secret.as_ref().map(ClientSecret::expose), Some(FRESH_SECRET));
        let recorded = outcome.status.authorization_server.clone().expect("recorded");
        assert_eq!(recorded.secret_version, Some(1));
        assert_eq!(recorded.registered.as_deref(), Some(registration.digest().as_str()));
        assert_eq!(condition(&outcome.status, READY).0, "True");
        assert_eq!(condition(&outcome.status, "Registered").1, "Registered");
        let Some(SecretWrite::Create(written)) = &outcome.secret else { panic!() };
        let data = written.data.as_ref().unwrap();
        assert_eq!(data["issuer"].0, b"http://id.example");
        assert_eq!(data["token_url"].0, b"http://id.example/oauth2/token");
    }

    #[test]
    fn the_server_follows_edits_rotations_and_losses_and_an_unchanged_app_costs_it_nothing() {
        let app = app();
        let (_, first) =
            planned(&with_server(Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) }, hydra_view()));
        let app = after(&app, &first);
        let fresh_issued = Issued { secret: Some(fresh().secret), ..issued(FRESH_ID, 1) };
        let observed = observe(&app, &fresh_issued);

        // Unchanged: nothing at the server, nothing written.
        let (_, quiet) = planned(&with_server(inputs(&app, &observed), hydra_view()));
        assert_eq!(quiet.registration, None);
        assert_eq!(Some(&quiet.status), app.status.as_ref());

        // A spec edit: everything but the secret.
        let mut edited = app.clone();
        edited.spec.display_name = "Billing v2".into();
        edited.metadata.generation = Some(2);
        let (_, edit) = planned(&with_server(inputs(&edited, &observed), hydra_view()));
        let Some(Registration::Update { registration, .. }) = &edit.registration else {
            panic!("{:?}", edit.registration)
        };
        assert_eq!(registration.name, "Billing v2");
        assert_eq!(edit.secret, None, "the secret is never touched by an edit");

        // A rotation: the new secret at the server in the same pass.
        let rotating = annotated(app.clone(), ROTATE_ANNOTATION, "r1");
        let (_, rotated) = planned(&with_server(inputs(&rotating, &observed), hydra_view()));
        let Some(Registration::Register { secret, .. }) = &rotated.registration else { panic!() };
        assert_eq!(secret.as_ref().map(ClientSecret::expose), Some(FRESH_SECRET));
        assert_eq!(rotated.status.authorization_server.as_ref().and_then(|a| a.secret_version), Some(2));

        // Lost or altered at the server: registered again, with the Secret's secret.
        let (_, repaired) =
            planned(&with_server(inputs(&app, &observed), AuthServerView { stale: true, ..hydra_view() }));
        let Some(Registration::Register { secret, .. }) = &repaired.registration else { panic!() };
        assert_eq!(secret.as_ref().map(ClientSecret::expose), Some(FRESH_SECRET));
        assert_eq!(repaired.secret, None);
    }

    #[test]
    fn an_unreachable_server_costs_no_secret_and_shows_until_it_returns() {
        let app = app();
        let (_, first) =
            planned(&with_server(Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) }, hydra_view()));
        let app = after(&app, &first);
        let observed = observe(&app, &Issued { secret: Some(fresh().secret), ..issued(FRESH_ID, 1) });
        let down = AuthServerView { unreachable: Some("Hydra is unavailable: cannot connect"), ..hydra_view() };
        let (decision, outcome) = planned(&with_server(inputs(&app, &observed), down));
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
        assert_eq!((&outcome.secret, &outcome.registration), (&None, &None));
        assert_eq!(outcome.status.secret_version, Some(1));
        assert_eq!(outcome.status.authorization_server, first.status.authorization_server, "what the server held");
        assert_eq!(condition(&outcome.status, "Registered").1, "Unavailable");
        let (ready, reason, message) = condition(&outcome.status, READY);
        assert_eq!((ready, reason), ("False", "NotRegistered"));
        assert!(message.contains("cannot connect") && message.contains(FRESH_ID), "{message}");
        assert_eq!(outcome.events.len(), 1, "warned once: {:?}", outcome.events);
        // Back: Ready again, no call needed (the server kept the client).
        let app = after(&app, &outcome);
        let (_, back) = planned(&with_server(inputs(&app, &observed), hydra_view()));
        assert_eq!(back.registration, None);
        assert_eq!(condition(&back.status, READY).0, "True");
        assert_eq!(condition(&back.status, "Registered").0, "True");
    }

    #[test]
    fn a_failed_registration_keeps_what_the_server_held_and_says_why() {
        let app = annotated(app(), ROTATE_ANNOTATION, "r1");
        let app = with_status(app, registered_status(1));
        let observed = observe(&app, &issued(CLIENT_ID, 1));
        let inputs = with_server(inputs(&app, &observed), hydra_view());
        let (_, mut outcome) = planned(&inputs);
        assert!(matches!(outcome.registration, Some(Registration::Register { .. })));
        let refused = AsError::Refused { server: "Hydra", message: "invalid_redirect_uri: bad (HTTP 400)".into() };
        after_registration(&inputs, &mut outcome, &Err(refused));
        assert_eq!(outcome.status.secret_version, Some(2), "the rotation itself stands");
        assert_eq!(outcome.status.authorization_server, app.status.as_ref().unwrap().authorization_server);
        let (_, reason, message) = condition(&outcome.status, "Registered");
        assert_eq!(reason, "Refused");
        assert!(message.contains("invalid_redirect_uri"), "{message}");
        assert_eq!(condition(&outcome.status, READY).1, "NotRegistered");
        assert!(outcome.events.iter().any(|e| e.warning && e.reason == "NotRegistered"), "{:?}", outcome.events);
    }

    #[test]
    fn a_grace_period_the_server_cannot_keep_is_said_plainly() {
        let app = with_rotation(app(), Some("1h"), None);
        let (_, outcome) =
            planned(&with_server(Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) }, hydra_view()));
        let (_, _, message) = condition(&outcome.status, "Registered");
        assert!(message.contains("keeps one secret per client") && message.contains("registry API only"), "{message}");
        let (_, outcome) = planned(&with_server(
            Inputs { secret_verifies: None, ..inputs(&self::app(), &Observed::Missing) },
            hydra_view(),
        ));
        assert!(!condition(&outcome.status, "Registered").2.contains("gracePeriod"));
    }

    #[test]
    fn a_rejected_or_conflicting_app_is_not_registered() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &issued(CLIENT_ID, 1));
        let violations = [violation("spec.displayName", "must not be blank")];
        let (_, rejected) =
            planned(&with_server(Inputs { violations: &violations, ..inputs(&app, &observed) }, hydra_view()));
        assert_eq!(rejected.registration, None);
        let (_, conflict) = planned(&with_server(inputs(&app, &Observed::Foreign), hydra_view()));
        assert_eq!(conflict.registration, None);
        let (_, taken) =
            planned(&with_server(Inputs { status_client_id_taken: true, ..inputs(&app, &observed) }, hydra_view()));
        assert_eq!(taken.registration, None);
    }

    // ---- desired_status -------------------------------------------------

    #[test]
    fn initial_mint_status_holds_the_issued_credentials_at_second_precision() {
        let app = app();
        let first = issued("bmV3LWNsaWVudC1pZC0wMDE", 1);
        let now = Timestamp::new(NOW, 750_000_000).unwrap();
        let status = status_after(&app, now, Some((&first, &new_hash(), false)));
        assert_eq!(status.client_id.as_deref(), Some("bmV3LWNsaWVudC1pZC0wMDE"));
        assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(status.secret_fingerprint.as_deref(), Some("feedc0de"));
        assert_eq!(status.secret_version, Some(1));
        assert_eq!(status.last_rotated_at, Some(time(NOW)), "sub-second part dropped");
        assert_eq!(status.last_handled_rotate, None);
        assert_eq!(status.previous_secret_hash, None);
        assert_eq!(status.previous_secret_expires_at, None);
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn mint_status_records_the_answered_rotate_request_as_handled() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2");
        let rotated = Issued { rotate_request: Some("r2".into()), ..issued(CLIENT_ID, 3) };
        let status = status_after(&app, at(NOW), Some((&rotated, &new_hash(), true)));
        assert_eq!(status.last_handled_rotate.as_deref(), Some("r2"));
        assert_eq!(status.secret_version, Some(3));
        assert_eq!(status.last_rotated_at, Some(time(NOW)));
    }

    #[test]
    fn mint_without_a_rotate_request_keeps_the_last_handled_rotate() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = with_status(app(), status);
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 3), &new_hash(), false)));
        assert_eq!(status.last_handled_rotate.as_deref(), Some("r1"));
    }

    #[test]
    fn rotation_with_a_grace_period_keeps_the_previous_hash_until_now_plus_grace() {
        let app = with_rotation(with_status(app(), issued_status(2)), Some("1h"), None);
        let now = Timestamp::new(NOW, 400_000_000).unwrap();
        let status = status_after(&app, now, Some((&issued(CLIENT_ID, 3), &new_hash(), true)));
        assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(status.previous_secret_hash.as_deref(), Some(OLD_HASH));
        assert_eq!(status.previous_secret_expires_at, Some(time(NOW + 3600)));
    }

    #[test]
    fn rotation_with_a_zero_grace_period_drops_the_previous_hash_at_once() {
        for app in [
            with_status(app(), issued_status(2)),
            with_rotation(with_status(app(), issued_status(2)), Some("0s"), None),
        ] {
            let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 3), &new_hash(), true)));
            assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
            assert_eq!(status.previous_secret_hash, None);
            assert_eq!(status.previous_secret_expires_at, None);
        }
    }

    #[test]
    fn drift_remint_keeps_no_previous_hash_even_with_a_grace_period() {
        let status = AppRegistrationStatus {
            previous_secret_hash: Some("$argon2id$older".into()),
            previous_secret_expires_at: Some(time(NOW + 600)),
            ..issued_status(2)
        };
        let app = with_rotation(with_status(app(), status), Some("1h"), None);
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 3), &new_hash(), false)));
        assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(status.previous_secret_hash, None);
        assert_eq!(status.previous_secret_expires_at, None);
    }

    #[test]
    fn public_client_rotation_has_no_hash_and_no_previous_hash() {
        let app = with_rotation(with_status(public_app(), public_status(1)), Some("1h"), None);
        let status = status_after(&app, at(NOW), Some((&public_issued(CLIENT_ID, 2), &public_hash(), true)));
        assert_eq!(status.secret_hash, None);
        assert_eq!(status.secret_fingerprint, None);
        assert_eq!(status.previous_secret_hash, None);
        assert_eq!(status.previous_secret_expires_at, None);
        assert_eq!(status.secret_version, Some(2));
    }

    #[test]
    fn expired_previous_hash_is_dropped() {
        for expires in [NOW - 1, NOW] {
            let status = AppRegistrationStatus {
                previous_secret_hash: Some(OLD_HASH.into()),
                previous_secret_expires_at: Some(time(expires)),
                ..issued_status(3)
            };
            let app = with_status(app(), status);
            let status = status_after(&app, at(NOW), None);
            assert_eq!(status.previous_secret_hash, None, "expired at {expires}");
            assert_eq!(status.previous_secret_expires_at, None, "expired at {expires}");
        }
    }

    #[test]
    fn unexpired_previous_hash_is_kept() {
        let status = AppRegistrationStatus {
            previous_secret_hash: Some(OLD_HASH.into()),
            previous_secret_expires_at: Some(time(NOW + 1)),
            ..issued_status(3)
        };
        let app = with_status(app(), status);
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.previous_secret_hash.as_deref(), Some(OLD_HASH));
        assert_eq!(status.previous_secret_expires_at, Some(time(NOW + 1)));
    }

    #[test]
    fn previous_hash_without_an_expiry_is_dropped() {
        let status = AppRegistrationStatus { previous_secret_hash: Some(OLD_HASH.into()), ..issued_status(3) };
        let status = status_after(&with_status(app(), status), at(NOW), None);
        assert_eq!(status.previous_secret_hash, None);
    }

    #[test]
    fn registered_by_is_copied_from_the_annotation() {
        let app = annotated(app(), REGISTERED_BY_ANNOTATION, "alice@example.com");
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 1), &new_hash(), false)));
        assert_eq!(status.registered_by.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn registered_by_is_kept_when_the_annotation_is_absent() {
        let status = AppRegistrationStatus { registered_by: Some("alice@example.com".into()), ..issued_status(1) };
        let status = status_after(&with_status(app(), status), at(NOW), None);
        assert_eq!(status.registered_by.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn observed_generation_follows_metadata_generation() {
        let mut app = with_status(app(), issued_status(1));
        app.metadata.generation = Some(7);
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.observed_generation, Some(7));
        let ready = conditions::find(&status.conditions, READY).expect("a Ready condition");
        assert_eq!(ready.observed_generation, Some(7));
    }

    #[test]
    fn status_carries_the_ready_condition_given() {
        let app = app();
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 1), &new_hash(), false)));
        assert_eq!(status.conditions.len(), 1);
        let ready = &status.conditions[0];
        assert_eq!(ready.type_, READY);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, reason::ISSUED);
        assert_eq!(ready.last_transition_time, time(NOW));
    }

    #[test]
    fn status_without_issued_credentials_leaves_them_untouched() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(4) };
        let app = with_status(app(), status.clone());
        let condition = DesiredCondition::not_ready(reason::INVALID_SPEC, "spec.displayName: must not be blank");
        let next = desired_status(StatusInputs { app: &app, now: at(NOW), conditions: &[condition], issued: None });
        assert_eq!(next.client_id, status.client_id);
        assert_eq!(next.secret_hash, status.secret_hash);
        assert_eq!(next.secret_fingerprint, status.secret_fingerprint);
        assert_eq!(next.secret_version, status.secret_version);
        assert_eq!(next.last_rotated_at, status.last_rotated_at);
        assert_eq!(next.last_handled_rotate, status.last_handled_rotate);
        assert!(!conditions::is_true(&next.conditions, READY));
        assert_eq!(conditions::find(&next.conditions, READY).unwrap().reason, reason::INVALID_SPEC);
    }

    #[test]
    fn public_client_rotate_annotation_is_acknowledged_without_a_mint() {
        let app = annotated(with_status(public_app(), public_status(2)), ROTATE_ANNOTATION, "r1");
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.last_handled_rotate.as_deref(), Some("r1"));
        assert_eq!(status.secret_version, Some(2));
        assert_eq!(status.last_rotated_at, Some(time(T0)));
    }

    #[test]
    fn confidential_rotate_annotation_is_not_acknowledged_without_a_mint() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r1");
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.last_handled_rotate, None);
    }

    #[test]
    fn desired_status_never_holds_the_plaintext_secret() {
        let app =
            with_rotation(annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2"), Some("1h"), None);
        let rotated = Issued { rotate_request: Some("r2".into()), ..issued(CLIENT_ID, 3) };
        let status = status_after(&app, at(NOW), Some((&rotated, &new_hash(), true)));
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains(PLAINTEXT), "{json}");
    }

    /// Quietness: feeding the computed status back in, later, computes it again
    /// exactly, so an unchanged app is never rewritten.
    fn assert_quiet(app: &AppRegistration, first: AppRegistrationStatus, later: Timestamp) {
        let app = with_status(app.clone(), first.clone());
        let again = status_after(&app, later, None);
        assert_eq!(again, first, "an unchanged app's status must not change");
    }

    #[test]
    fn unchanged_healthy_app_status_is_quiet() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(
            annotated(with_rotation(with_status(app(), status), None, Some("24h")), ROTATE_ANNOTATION, "r1"),
            REGISTERED_BY_ANNOTATION,
            "alice@example.com",
        );
        let first = status_after(&app, at(NOW), None);
        assert_quiet(&app, first, at(NOW + 3600));
    }

    #[test]
    fn status_after_a_rotation_in_its_grace_period_is_quiet() {
        let app =
            with_rotation(annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2"), Some("1h"), None);
        let rotated = Issued { rotate_request: Some("r2".into()), ..issued(CLIENT_ID, 3) };
        let now = Timestamp::new(NOW, 999_000_000).unwrap();
        let first = status_after(&app, now, Some((&rotated, &new_hash(), true)));
        assert_quiet(&app, first, at(NOW + 1800));
    }

    #[test]
    fn status_after_an_initial_mint_is_quiet() {
        let app = annotated(app(), REGISTERED_BY_ANNOTATION, "alice@example.com");
        let first = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 1), &new_hash(), false)));
        assert_quiet(&app, first, at(NOW + 86_400));
    }

    #[test]
    fn acknowledged_public_client_status_is_quiet() {
        let app = annotated(with_status(public_app(), public_status(1)), ROTATE_ANNOTATION, "r1");
        let first = status_after(&app, at(NOW), None);
        assert_quiet(&app, first, at(NOW + 60));
    }

    #[test]
    fn rejected_app_status_is_quiet() {
        let app = with_status(app(), issued_status(2));
        let condition = || DesiredCondition::not_ready(reason::INVALID_SPEC, "spec.displayName: must not be blank");
        let first = desired_status(StatusInputs { app: &app, now: at(NOW), conditions: &[condition()], issued: None });
        let app = with_status(app, first.clone());
        let again =
            desired_status(StatusInputs { app: &app, now: at(NOW + 600), conditions: &[condition()], issued: None });
        assert_eq!(again, first);
    }

    // ---- next_wakeup ----------------------------------------------------

    fn in_grace_until(expires: i64) -> AppRegistrationStatus {
        AppRegistrationStatus {
            previous_secret_hash: Some(OLD_HASH.into()),
            previous_secret_expires_at: Some(time(expires)),
            ..issued_status(3)
        }
    }

    #[test]
    fn next_wakeup_is_the_end_of_the_grace_period() {
        let app = with_rotation(app(), Some("1h"), None);
        assert_eq!(next_wakeup(&app, &in_grace_until(NOW + 300), at(NOW)), Some(secs(300)));
    }

    #[test]
    fn next_wakeup_is_the_next_scheduled_rotation() {
        let app = with_rotation(app(), None, Some("1h"));
        // Minted at T0, so due at T0 + 3600, one hour less a minute from NOW.
        assert_eq!(next_wakeup(&app, &issued_status(2), at(NOW)), Some(secs(3540)));
    }

    #[test]
    fn next_wakeup_reads_the_schedule_from_the_status_given_not_the_apps() {
        let app = with_rotation(with_status(app(), issued_status(1)), None, Some("1h"));
        let rotated_now = AppRegistrationStatus { last_rotated_at: Some(time(NOW)), ..issued_status(2) };
        assert_eq!(next_wakeup(&app, &rotated_now, at(NOW)), Some(secs(3600)));
    }

    #[test]
    fn next_wakeup_is_the_earlier_of_grace_end_and_scheduled_rotation() {
        let app = with_rotation(app(), Some("1h"), Some("2h"));
        // Rotation due at T0 + 7200.
        assert_eq!(next_wakeup(&app, &in_grace_until(NOW + 600), at(NOW)), Some(secs(600)));
        let app = with_rotation(app, Some("1h"), Some("5m"));
        // Rotation due at T0 + 300 = NOW + 240, before the grace ends.
        assert_eq!(next_wakeup(&app, &in_grace_until(NOW + 600), at(NOW)), Some(secs(240)));
    }

    #[test]
    fn next_wakeup_is_none_without_grace_period_or_schedule() {
        let app = app();
        assert_eq!(next_wakeup(&app, &issued_status(2), at(NOW)), None);
        assert_eq!(next_wakeup(&app, &AppRegistrationStatus::default(), at(NOW)), None);
        let scheduled_but_never_minted = with_rotation(app, None, Some("1h"));
        assert_eq!(next_wakeup(&scheduled_but_never_minted, &AppRegistrationStatus::default(), at(NOW)), None);
    }

    #[test]
    fn next_wakeup_ignores_the_schedule_of_a_public_client() {
        let app = with_rotation(public_app(), None, Some("1h"));
        assert_eq!(next_wakeup(&app, &public_status(2), at(NOW)), None);
    }

    #[test]
    fn next_wakeup_is_at_least_one_second_and_never_for_a_past_time() {
        let graced = with_rotation(app(), Some("1h"), None);
        assert_eq!(next_wakeup(&graced, &in_grace_until(NOW), at(NOW)), None, "due now: handled by this pass");
        assert_eq!(next_wakeup(&graced, &in_grace_until(NOW - 30), at(NOW)), None, "overdue: handled by this pass");
        let half_second_before = Timestamp::new(NOW - 1, 500_000_000).unwrap();
        assert_eq!(next_wakeup(&graced, &in_grace_until(NOW), half_second_before), Some(secs(1)), "sub-second");
        let overdue_rotation = with_rotation(app(), None, Some("1m"));
        assert_eq!(
            next_wakeup(&overdue_rotation, &issued_status(2), at(NOW + 3600)),
            None,
            "an overdue rotation blocked by a rejected spec waits for the spec to change"
        );
    }

    // ---- next_scheduled_rotation ----------------------------------------

    #[test]
    fn scheduled_rotation_is_interval_after_the_last_rotation() {
        let app = with_rotation(with_status(app(), issued_status(2)), None, Some("90m"));
        assert_eq!(next_scheduled_rotation(&app), Some(at(T0 + 5400)));
    }

    #[test]
    fn no_scheduled_rotation_without_interval_last_rotation_or_secret() {
        assert_eq!(next_scheduled_rotation(&with_status(app(), issued_status(2))), None);
        assert_eq!(
            next_scheduled_rotation(&with_rotation(with_status(app(), issued_status(2)), Some("1h"), None)),
            None
        );
        let never_rotated = AppRegistrationStatus { last_rotated_at: None, ..issued_status(2) };
        assert_eq!(next_scheduled_rotation(&with_rotation(with_status(app(), never_rotated), None, Some("1h"))), None);
        assert_eq!(
            next_scheduled_rotation(&with_rotation(with_status(public_app(), public_status(2)), None, Some("1h"))),
            None
        );
    }

    // ---- pending_rotate -------------------------------------------------

    #[test]
    fn pending_rotate_is_none_without_the_annotation() {
        assert_eq!(pending_rotate(&app()), None);
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        assert_eq!(pending_rotate(&with_status(app(), status)), None);
    }

    #[test]
    fn pending_rotate_is_the_annotation_when_nothing_was_handled() {
        assert_eq!(pending_rotate(&annotated(app(), ROTATE_ANNOTATION, "r1")).as_deref(), Some("r1"));
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r1");
        assert_eq!(pending_rotate(&app).as_deref(), Some("r1"));
    }

    #[test]
    fn pending_rotate_is_a_new_value_different_from_the_last_handled() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r2");
        assert_eq!(pending_rotate(&app).as_deref(), Some("r2"));
    }

    #[test]
    fn pending_rotate_is_none_once_the_value_was_handled() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r1");
        assert_eq!(pending_rotate(&app), None);
    }

    #[test]
    fn pending_rotate_ignores_other_annotations() {
        let mut app = app();
        app.metadata.annotations = Some(BTreeMap::from([("registrar.dev/rotate-request".into(), "r1".into())]));
        assert_eq!(pending_rotate(&app), None);
    }

    // ---- issued_condition -----------------------------------------------

    #[test]
    fn issued_condition_is_ready_with_reason_issued() {
        let condition = issued_condition(CLIENT_ID, Some(3), false);
        assert_eq!(condition.type_, READY);
        assert!(condition.status);
        assert_eq!(condition.reason, reason::ISSUED);
    }

    #[test]
    fn issued_condition_messages_name_the_client_id_and_version() {
        assert_eq!(
            issued_condition(CLIENT_ID, Some(3), false).message,
            format!("Client ID {CLIENT_ID} and client secret version 3 are issued")
        );
        assert_eq!(
            issued_condition(CLIENT_ID, Some(3), true).message,
            format!("Client ID {CLIENT_ID} is issued (public client: no secret)")
        );
        assert_eq!(issued_condition(CLIENT_ID, None, false).message, format!("Client ID {CLIENT_ID} is issued"));
    }

    #[test]
    fn issued_condition_messages_never_contain_a_secret() {
        let secret = ClientSecret::mint();
        let app = with_status(app(), issued_status(1));
        let rotated = Issued { secret: Some(secret.clone()), ..issued(CLIENT_ID, 2) };
        for (version, public) in [(Some(2), false), (None, false), (Some(2), true), (None, true)] {
            let message = issued_condition(&rotated.client_id, version, public).message;
            assert!(!message.contains(secret.expose()), "{message}");
            assert!(!message.contains(PLAINTEXT), "{message}");
        }
        let status = status_after(&app, at(NOW), Some((&rotated, &new_hash(), true)));
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains(secret.expose()), "{json}");
    }
}
