//! Validation of an `AppRegistration` spec: the operator's defensive second
//! line behind the CEL rules of the CRD.
//!
//! The apiserver enforces most of these rules on `kubectl apply`, but an object
//! can predate a rule, a CRD can be installed without its validation, and some
//! rules (URI parsing, dot segments, Kubernetes key syntax) are beyond what the
//! schema checks. The controller calls [`validate_spec`] on every reconcile and
//! reports what it returns as `Ready=False, reason=InvalidSpec`, using
//! [`summarize`] for the condition message.
//!
//! Everything here is pure: no I/O, no clock, no Kubernetes client. Messages
//! quote offending values (redirect URIs are not secret), cut to 100 characters.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration as StdDuration;

use kube::core::Duration;

use super::app_registration::{
    AppRegistrationSpec, DEFAULT_CLIENT_ID_KEY, DEFAULT_CLIENT_SECRET_KEY, DEFAULT_GRANT_TYPES, DEFAULT_ISSUER_KEY,
    DEFAULT_TOKEN_URL_KEY, GrantType, MANAGED_BY_LABEL, Rotation, SecretKeys, SecretTemplate, WorkloadKind,
    WorkloadRef,
};

/// Longest echoed value, in characters; longer values end with `…`.
const MAX_ECHO_CHARS: usize = 100;
/// Longest [`summarize`] output, in characters.
const MAX_SUMMARY_CHARS: usize = 1000;

const MAX_DISPLAY_NAME_CHARS: usize = 100;
const MAX_GRANT_TYPES: usize = 3;
const MAX_REDIRECT_URIS: usize = 32;
const MAX_REDIRECT_URI_BYTES: usize = 2048;
const MAX_SCOPES: usize = 64;
const MAX_SCOPE_CHARS: usize = 256;
const MAX_RESTART_ON_ROTATE: usize = 16;
const MAX_DNS1123_SUBDOMAIN: usize = 253;
const MAX_SECRET_KEY: usize = 253;
const MAX_LABEL_NAME: usize = 63;
const MAX_LABEL_VALUE: usize = 63;
/// Kubernetes allows 256 KiB of annotations per object; 1 KiB is left for registrar's own.
const MAX_ANNOTATION_BYTES: usize = 255 * 1024;
const MAX_GRACE_PERIOD: StdDuration = StdDuration::from_secs(168 * 3600);
const MIN_ROTATION_INTERVAL: StdDuration = StdDuration::from_secs(60);

/// Label and annotation prefix reserved for registrar.
const RESERVED_PREFIX: &str = "registrar.dev/";
/// Schemes never allowed in a redirect URI, for any client.
const FORBIDDEN_SCHEMES: [&str; 4] = ["javascript", "data", "file", "vbscript"];

/// One rule an AppRegistration spec breaks: the field path (e.g.
/// `spec.redirectUris[2]`) and a complete sentence saying what is wrong and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, as in `spec.redirectUris[2]`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Violation {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Violation { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every violation of the spec, in field order; empty when valid.
pub fn validate_spec(spec: &AppRegistrationSpec) -> Vec<Violation> {
    let mut violations = Vec::new();
    let public_client = spec.public_client.unwrap_or(false);
    check_display_name(&spec.display_name, &mut violations);
    if public_client && spec.require_pkce != Some(true) {
        violations.push(Violation::new(
            "spec.requirePkce",
            "a public client must set requirePkce: true, because it has no secret and PKCE is \
             what protects its authorization codes",
        ));
    }
    check_redirect_uris(&spec.redirect_uris, public_client, &mut violations);
    if let Some(grant_types) = &spec.grant_types {
        check_grant_types(grant_types, public_client, &mut violations);
    }
    check_scopes(&spec.oauth_scopes, &mut violations);
    if let Some(secret) = &spec.secret {
        check_secret(secret, &mut violations);
    }
    if let Some(rotation) = &spec.rotation {
        check_rotation(rotation, &mut violations);
    }
    check_restart_on_rotate(&spec.restart_on_rotate, &mut violations);
    if let Some(client_id) = &spec.client_id
        && let Some(problem) = client_id_problem(client_id)
    {
        violations.push(Violation::new("spec.clientId", problem));
    }
    violations
}

/// The longest imported Client ID.
pub const MAX_CLIENT_ID_CHARS: usize = 128;

/// What is wrong with an imported Client ID, if anything: 1 to 128 characters,
/// letters, digits, `-`, `.`, `_`, `~` (RFC 3986 unreserved: safe in a URL,
/// a header and a form without encoding).
pub fn client_id_problem(client_id: &str) -> Option<String> {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_CHARS {
        return Some(format!(
            "clientId must have 1 to {MAX_CLIENT_ID_CHARS} characters, not {}",
            client_id.chars().count()
        ));
    }
    let bad = client_id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))?;
    Some(format!(
        "clientId may contain only letters, digits, '-', '.', '_' and '~'; it contains {}",
        quote(&bad.to_string())
    ))
}

/// Checks one redirect URI for a client (public or confidential); `Err(message)`
/// names the rule broken.
///
/// Allowed: `https` with a host; `http` only on the loopback IP literals
/// `127.0.0.1` and `[::1]` (any port); reverse-DNS private-use schemes such as
/// `com.example.app:/callback` for public clients only. Never a fragment,
/// userinfo, wildcard, dot segment in the path, or the schemes `javascript:`,
/// `data:`, `file:` and `vbscript:`.
/// The first percent-encoded control character (`%00`–`%1F`, `%7F`) in `uri`.
fn encoded_control_character(uri: &str) -> Option<&str> {
    uri.match_indices('%').find_map(|(i, _)| {
        let escape = uri.get(i..i + 3)?;
        let byte = u8::from_str_radix(&escape[1..], 16).ok()?;
        (byte < 0x20 || byte == 0x7f).then_some(escape)
    })
}

pub fn check_redirect_uri(uri: &str, public_client: bool) -> Result<(), String> {
    let quoted = quote(uri);
    if uri.is_empty() {
        return Err("redirect URI is empty; give an absolute URI such as \
                    https://app.example.com/callback"
            .to_string());
    }
    if uri.len() > MAX_REDIRECT_URI_BYTES {
        return Err(format!(
            "redirect URI {quoted} is {} bytes long; at most {MAX_REDIRECT_URI_BYTES} bytes are allowed",
            uri.len()
        ));
    }
    let parts = split_uri(uri);
    if let Some(parts) = &parts
        && FORBIDDEN_SCHEMES.iter().any(|forbidden| parts.scheme.eq_ignore_ascii_case(forbidden))
    {
        return Err(format!(
            "redirect URI {quoted} uses the forbidden scheme {}:; javascript:, data:, file: \
             and vbscript: are never allowed",
            parts.scheme.to_ascii_lowercase()
        ));
    }
    if uri.contains('#') {
        return Err(format!(
            "redirect URI {quoted} contains a fragment (#); a redirect URI must not have a \
             fragment, not even an empty one (RFC 6749 section 3.1.2)"
        ));
    }
    if uri.contains('*') {
        return Err(format!(
            "redirect URI {quoted} contains a wildcard (*); redirect URIs are matched exactly, \
             so list every URI in full"
        ));
    }
    if let Some(escape) = encoded_control_character(uri) {
        return Err(format!(
            "redirect URI {quoted} contains the percent-encoded control character {escape}; control \
             characters (%00 to %1F and %7F) have no place in a redirect URI"
        ));
    }
    let Some(parts) = parts else {
        return Err(format!(
            "redirect URI {quoted} is not an absolute URI; it must start with a scheme, \
             as in https://app.example.com/callback"
        ));
    };
    let scheme = parts.scheme.to_ascii_lowercase();
    if let Err(problem) = check_uri_characters(uri) {
        return Err(format!("redirect URI {quoted} {problem}"));
    }
    let web = scheme == "https" || scheme == "http";
    match parts.authority.map(split_authority) {
        Some(authority) => {
            if authority.userinfo.is_some() {
                return Err(format!(
                    "redirect URI {quoted} contains userinfo (user@ or user:password@ before \
                     the host); remove it"
                ));
            }
            if web && authority.host.is_empty() {
                return Err(format!(
                    "redirect URI {quoted} has an empty host; give a host name, as in \
                     https://app.example.com/callback"
                ));
            }
            if let (true, Some(port)) = (web, authority.port) {
                check_port(port).map_err(|problem| format!("redirect URI {quoted} {problem}"))?;
            }
        }
        None if web => {
            return Err(format!("redirect URI {quoted} has no host; write it as {scheme}://host/path"));
        }
        None => {}
    }
    check_scheme_policy(uri, &scheme, public_client).map_err(|problem| format!("redirect URI {quoted} {problem}"))?;
    if has_dot_segment(parts.path) {
        return Err(format!(
            "redirect URI {quoted} has a dot segment (. or ..) in its path; redirect URIs are \
             matched exactly, and a path that normalizes to another path is ambiguous, so write \
             the path without . and .. segments"
        ));
    }
    if let Err(error) = url::Url::parse(uri) {
        return Err(format!("redirect URI {quoted} is not a valid URI: {error}"));
    }
    Ok(())
}

/// True for http redirect URIs on the loopback IP literals 127.0.0.1 and
/// [::1] (RFC 8252 section 7.3: any port matches at authorization time).
///
/// `localhost` and other addresses in 127.0.0.0/8 are not loopback literals
/// here. A URI with userinfo or a malformed port is never loopback.
pub fn is_loopback_http(uri: &str) -> bool {
    let Some(parts) = split_uri(uri) else {
        return false;
    };
    let Some(authority) = parts.authority.map(split_authority) else {
        return false;
    };
    parts.scheme.eq_ignore_ascii_case("http")
        && authority.userinfo.is_none()
        && matches!(authority.host, "127.0.0.1" | "[::1]")
        && authority.port.is_none_or(|port| check_port(port).is_ok())
}

/// Joins violations into one message for a status condition, e.g.
/// `"spec.redirectUris[1]: ...; spec.requirePkce: ..."`, bounded to at most
/// about 1000 characters and ending with `and N more` when cut.
pub fn summarize(violations: &[Violation]) -> String {
    // Room kept for "; and N more" while more violations may follow.
    const SUFFIX_ROOM: usize = 20;
    let mut summary = String::new();
    let mut length = 0;
    for (index, violation) in violations.iter().enumerate() {
        let piece = violation.to_string();
        let piece_length = piece.chars().count();
        let separator = if index == 0 { "" } else { "; " };
        let is_last = index + 1 == violations.len();
        let budget = if is_last { MAX_SUMMARY_CHARS } else { MAX_SUMMARY_CHARS - SUFFIX_ROOM };
        if length + separator.len() + piece_length <= budget {
            summary.push_str(separator);
            summary.push_str(&piece);
            length += separator.len() + piece_length;
            continue;
        }
        let mut left_out = violations.len() - index;
        if index == 0 {
            // Even the first violation is too long: keep the start of it.
            summary = cut(&piece, MAX_SUMMARY_CHARS - SUFFIX_ROOM);
            left_out -= 1;
        }
        if left_out > 0 {
            summary.push_str(&format!("; and {left_out} more"));
        }
        break;
    }
    summary
}

// ---------------------------------------------------------------------------
// Fields

fn check_display_name(name: &str, violations: &mut Vec<Violation>) {
    const FIELD: &str = "spec.displayName";
    let length = name.chars().count();
    if length == 0 {
        violations.push(Violation::new(FIELD, "displayName is empty; give the name users see, 1 to 100 characters"));
    } else if length > MAX_DISPLAY_NAME_CHARS {
        violations.push(Violation::new(
            FIELD,
            format!("displayName is {length} characters long; at most {MAX_DISPLAY_NAME_CHARS} are allowed"),
        ));
    }
    if let Some((position, control)) = name.chars().enumerate().find(|(_, c)| c.is_control()) {
        violations.push(Violation::new(
            FIELD,
            format!(
                "displayName contains the control character U+{:04X} at character {}; remove \
                 control characters such as newlines and tabs",
                u32::from(control),
                position + 1
            ),
        ));
    }
}

fn check_redirect_uris(uris: &[String], public_client: bool, violations: &mut Vec<Violation>) {
    if uris.len() > MAX_REDIRECT_URIS {
        violations.push(Violation::new(
            "spec.redirectUris",
            format!("redirectUris lists {} URIs; at most {MAX_REDIRECT_URIS} are allowed", uris.len()),
        ));
    }
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (index, uri) in uris.iter().enumerate() {
        let field = format!("spec.redirectUris[{index}]");
        if let Some(&earlier) = first_seen.get(uri.as_str()) {
            violations.push(Violation::new(
                field,
                format!("redirect URI {} duplicates redirectUris[{earlier}]; list each URI once", quote(uri)),
            ));
            continue;
        }
        first_seen.insert(uri, index);
        if let Err(message) = check_redirect_uri(uri, public_client) {
            violations.push(Violation::new(field, message));
        }
    }
}

fn check_grant_types(grant_types: &[GrantType], public_client: bool, violations: &mut Vec<Violation>) {
    if grant_types.is_empty() {
        let defaults: Vec<&str> = DEFAULT_GRANT_TYPES.iter().map(|g| grant_name(*g)).collect();
        violations.push(Violation::new(
            "spec.grantTypes",
            format!(
                "grantTypes is empty; list at least one grant type, or omit the field for the \
                 default {}",
                defaults.join(" and ")
            ),
        ));
    } else if grant_types.len() > MAX_GRANT_TYPES {
        violations.push(Violation::new(
            "spec.grantTypes",
            format!(
                "grantTypes lists {} entries; at most {MAX_GRANT_TYPES} are allowed \
                 (authorization_code, refresh_token and client_credentials, each once)",
                grant_types.len()
            ),
        ));
    }
    let mut first_seen: HashMap<GrantType, usize> = HashMap::new();
    for (index, grant) in grant_types.iter().enumerate() {
        let field = format!("spec.grantTypes[{index}]");
        if let Some(&earlier) = first_seen.get(grant) {
            violations.push(Violation::new(
                field,
                format!(
                    "grant type {} duplicates grantTypes[{earlier}]; list each grant type once",
                    grant_name(*grant)
                ),
            ));
            continue;
        }
        first_seen.insert(*grant, index);
        if public_client && *grant == GrantType::ClientCredentials {
            violations.push(Violation::new(
                field,
                "a public client cannot use the client_credentials grant, because it has no \
                 secret to authenticate with; remove it, or register a confidential client",
            ));
        }
    }
}

fn check_scopes(scopes: &[String], violations: &mut Vec<Violation>) {
    if scopes.len() > MAX_SCOPES {
        violations.push(Violation::new(
            "spec.oauthScopes",
            format!("oauthScopes lists {} scopes; at most {MAX_SCOPES} are allowed", scopes.len()),
        ));
    }
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (index, scope) in scopes.iter().enumerate() {
        let field = format!("spec.oauthScopes[{index}]");
        if let Some(&earlier) = first_seen.get(scope.as_str()) {
            violations.push(Violation::new(
                field,
                format!("scope {} duplicates oauthScopes[{earlier}]; list each scope once", quote(scope)),
            ));
            continue;
        }
        first_seen.insert(scope, index);
        if let Some(problem) = scope_problem(scope) {
            violations.push(Violation::new(field, problem));
        }
    }
}

fn scope_problem(scope: &str) -> Option<String> {
    let length = scope.chars().count();
    if length == 0 {
        return Some("scope is empty; a scope is 1 to 256 characters".to_string());
    }
    if length > MAX_SCOPE_CHARS {
        return Some(format!(
            "scope {} is {length} characters long; at most {MAX_SCOPE_CHARS} are allowed",
            quote(scope)
        ));
    }
    let bad = scope.chars().find(|c| !is_scope_char(*c))?;
    Some(format!(
        "scope {} contains {}, which is not allowed in a scope token; RFC 6749 section 3.3 \
         allows printable ASCII except space, '\"' and '\\'",
        quote(scope),
        describe_char(bad)
    ))
}

/// `%x21 / %x23-5B / %x5D-7E` (RFC 6749 section 3.3).
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

fn check_secret(secret: &SecretTemplate, violations: &mut Vec<Violation>) {
    if let Some(name) = &secret.name
        && let Some(problem) = dns1123_subdomain_problem(name)
    {
        violations.push(Violation::new(
            "spec.secret.name",
            format!(
                "secret.name {} {problem}; a Secret name is a DNS-1123 subdomain: lowercase \
                 letters, digits, '-' and '.', at most 253 characters, each dot-separated part \
                 starting and ending with a letter or digit",
                quote(name)
            ),
        ));
    }
    if let Some(keys) = &secret.keys {
        check_secret_keys(keys, violations);
    }
    for (key, value) in &secret.labels {
        let field = format!("spec.secret.labels[{}]", cut(key, MAX_ECHO_CHARS));
        if key.starts_with(RESERVED_PREFIX) || key == MANAGED_BY_LABEL {
            violations.push(Violation::new(
                field,
                format!(
                    "label {} is reserved: registrar owns the registrar.dev/ labels and \
                     app.kubernetes.io/managed-by on its Secrets; choose another key",
                    quote(key)
                ),
            ));
            continue;
        }
        if let Some(problem) = qualified_name_problem(key) {
            violations.push(Violation::new(field.clone(), format!("label key {} {problem}", quote(key))));
        }
        if let Some(problem) = label_value_problem(value) {
            violations.push(Violation::new(
                field,
                format!(
                    "label value {} {problem}; a label value is at most 63 characters of \
                     letters, digits, '-', '_' and '.', starting and ending with a letter or \
                     digit, or empty",
                    quote(value)
                ),
            ));
        }
    }
    check_annotations(&secret.annotations, violations);
}

fn check_secret_keys(keys: &SecretKeys, violations: &mut Vec<Violation>) {
    let named = [
        ("clientId", &keys.client_id),
        ("clientSecret", &keys.client_secret),
        ("issuer", &keys.issuer),
        ("tokenUrl", &keys.token_url),
    ];
    for (name, key) in named {
        if let Some(key) = key
            && let Some(problem) = secret_key_problem(key)
        {
            violations.push(Violation::new(
                format!("spec.secret.keys.{name}"),
                format!(
                    "secret.keys.{name} {} {problem}; a Secret data key is at most 253 \
                     characters of letters, digits, '-', '_' and '.', and is not '.' or '..' \
                     and does not start with '..'",
                    quote(key)
                ),
            ));
        }
    }
    let client_id_key = keys.client_id.as_deref().unwrap_or(DEFAULT_CLIENT_ID_KEY);
    let client_secret_key = keys.client_secret.as_deref().unwrap_or(DEFAULT_CLIENT_SECRET_KEY);
    if client_id_key == client_secret_key {
        violations.push(Violation::new(
            "spec.secret.keys",
            format!(
                "secret.keys.clientId and secret.keys.clientSecret are both {}; the two keys \
                 must differ (defaults: client_id and client_secret)",
                quote(client_id_key)
            ),
        ));
    }
    let issuer_key = keys.issuer.as_deref().unwrap_or(DEFAULT_ISSUER_KEY);
    let token_url_key = keys.token_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL_KEY);
    for (name, key) in [("issuer", issuer_key), ("tokenUrl", token_url_key)] {
        let clashes = [client_id_key, client_secret_key].contains(&key) || (name == "tokenUrl" && key == issuer_key);
        if clashes {
            violations.push(Violation::new(
                format!("spec.secret.keys.{name}"),
                format!(
                    "secret.keys.{name} {} is already the key of another value; the Client ID, Client Secret, \
                     issuer and token URL keys must all differ (defaults: client_id, client_secret, issuer, token_url)",
                    quote(key)
                ),
            ));
        }
    }
}

fn check_annotations(annotations: &BTreeMap<String, String>, violations: &mut Vec<Violation>) {
    for key in annotations.keys() {
        let field = format!("spec.secret.annotations[{}]", cut(key, MAX_ECHO_CHARS));
        if key.starts_with(RESERVED_PREFIX) {
            violations.push(Violation::new(
                field,
                format!(
                    "annotation {} is reserved: registrar owns the registrar.dev/ annotations \
                     on its Secrets; choose another key",
                    quote(key)
                ),
            ));
        } else if let Some(problem) = qualified_name_problem(key) {
            violations.push(Violation::new(field, format!("annotation key {} {problem}", quote(key))));
        }
    }
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATION_BYTES {
        violations.push(Violation::new(
            "spec.secret.annotations",
            format!(
                "secret.annotations add up to {total} bytes; at most {MAX_ANNOTATION_BYTES} bytes \
                 (255 KiB) are allowed, because Kubernetes limits an object's annotations to \
                 256 KiB and registrar adds its own"
            ),
        ));
    }
}

fn check_rotation(rotation: &Rotation, violations: &mut Vec<Violation>) {
    if let Some(grace) = rotation.grace_period {
        let magnitude = StdDuration::from(grace);
        if grace.is_negative() && !magnitude.is_zero() {
            violations.push(Violation::new(
                "spec.rotation.gracePeriod",
                format!(
                    "rotation.gracePeriod is {}, which is negative; it must be between 0s and 168h",
                    go_duration(grace)
                ),
            ));
        } else if magnitude > MAX_GRACE_PERIOD {
            violations.push(Violation::new(
                "spec.rotation.gracePeriod",
                format!("rotation.gracePeriod is {}; it must be between 0s and 168h (7 days)", go_duration(grace)),
            ));
        }
    }
    if let Some(interval) = rotation.interval
        && (interval.is_negative() || StdDuration::from(interval) < MIN_ROTATION_INTERVAL)
    {
        violations.push(Violation::new(
            "spec.rotation.interval",
            format!(
                "rotation.interval is {}; it must be at least 1m, or omitted to rotate only on \
                 request",
                go_duration(interval)
            ),
        ));
    }
}

fn check_restart_on_rotate(workloads: &[WorkloadRef], violations: &mut Vec<Violation>) {
    if workloads.len() > MAX_RESTART_ON_ROTATE {
        violations.push(Violation::new(
            "spec.restartOnRotate",
            format!("restartOnRotate lists {} workloads; at most {MAX_RESTART_ON_ROTATE} are allowed", workloads.len()),
        ));
    }
    let mut first_seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, workload) in workloads.iter().enumerate() {
        let kind = kind_name(workload.kind);
        let key = (kind, workload.name.as_str());
        if let Some(&earlier) = first_seen.get(&key) {
            violations.push(Violation::new(
                format!("spec.restartOnRotate[{index}]"),
                format!(
                    "{kind} {} duplicates restartOnRotate[{earlier}]; list each workload once",
                    quote(&workload.name)
                ),
            ));
            continue;
        }
        first_seen.insert(key, index);
        if let Some(problem) = dns1123_subdomain_problem(&workload.name) {
            violations.push(Violation::new(
                format!("spec.restartOnRotate[{index}].name"),
                format!(
                    "{kind} name {} {problem}; a workload name is a DNS-1123 subdomain: \
                     lowercase letters, digits, '-' and '.', at most 253 characters",
                    quote(&workload.name)
                ),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Redirect URI parts

/// The parts of an absolute URI that the rules look at (RFC 3986 section 3).
struct UriParts<'a> {
    scheme: &'a str,
    authority: Option<&'a str>,
    /// The path, without query or fragment.
    path: &'a str,
}

/// Splits `scheme:[//authority]path[?query][#fragment]`; `None` without a valid scheme.
fn split_uri(uri: &str) -> Option<UriParts<'_>> {
    let (scheme, rest) = uri.split_once(':')?;
    if !is_valid_scheme(scheme) {
        return None;
    }
    let hierarchical = rest.find(['?', '#']).map_or(rest, |end| &rest[..end]);
    Some(match hierarchical.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            UriParts { scheme, authority: Some(&after[..end]), path: &after[end..] }
        }
        None => UriParts { scheme, authority: None, path: hierarchical },
    })
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`
fn is_valid_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `[userinfo@]host[:port]`, the host of an IP literal keeping its brackets.
struct Authority<'a> {
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
}

fn split_authority(authority: &str) -> Authority<'_> {
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        match host_port.find(']') {
            Some(close) => {
                let (host, rest) = host_port.split_at(close + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (host_port, None),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    Authority { userinfo, host, port }
}

fn check_port(port: &str) -> Result<(), String> {
    if port.is_empty() {
        return Err("has an empty port after ':'; remove the ':' or give a port number".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
        return Err(format!("has the invalid port {}; a port is a number from 0 to 65535", quote(port)));
    }
    Ok(())
}

/// Which schemes the client may use; `Err` completes "redirect URI \"…\" ".
fn check_scheme_policy(uri: &str, scheme: &str, public_client: bool) -> Result<(), String> {
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_http(uri) => Ok(()),
        "http" => {
            let localhost = split_uri(uri)
                .and_then(|parts| parts.authority)
                .map(split_authority)
                .is_some_and(|authority| authority.host.eq_ignore_ascii_case("localhost"));
            let hint =
                if localhost { " (localhost is not accepted: write the IP literal 127.0.0.1 or [::1])" } else { "" };
            Err(format!("uses http on a host other than 127.0.0.1 or [::1]; use https{hint}"))
        }
        _ if is_reverse_dns_scheme(scheme) => {
            if public_client {
                Ok(())
            } else {
                Err(format!(
                    "uses the private-use scheme {}:, which is allowed only for public clients \
                     (publicClient: true); a confidential client must use https, or http on \
                     127.0.0.1 or [::1]",
                    cut(scheme, MAX_ECHO_CHARS)
                ))
            }
        }
        _ if public_client => Err(format!(
            "uses the scheme {}:, which is neither https nor a reverse-DNS private-use scheme; \
             use https, or a scheme containing a dot such as com.example.app: (RFC 8252 \
             section 7.1)",
            cut(scheme, MAX_ECHO_CHARS)
        )),
        _ => Err(format!(
            "uses the scheme {}:; a confidential client's redirect URIs must use https, or \
             http on 127.0.0.1 or [::1]",
            cut(scheme, MAX_ECHO_CHARS)
        )),
    }
}

/// A private-use scheme in reverse-DNS form (RFC 8252 section 7.1), such as
/// `com.example.app`: at least two dot-separated, non-empty parts.
fn is_reverse_dns_scheme(scheme: &str) -> bool {
    scheme.contains('.') && scheme.split('.').all(|part| !part.is_empty())
}

/// Whether the path has a `.` or `..` segment, percent-encoded dots included.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// Every character must be allowed by RFC 3986, and every `%` must start `%XX`.
/// `Err` completes "redirect URI \"…\" ".
fn check_uri_characters(uri: &str) -> Result<(), String> {
    let bytes = uri.as_bytes();
    for (at, c) in uri.char_indices() {
        if c == '%' {
            let encoded = bytes.get(at + 1..at + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
            if !encoded {
                return Err("has a '%' that does not start a percent-encoded octet (%XX); write a \
                     literal '%' as %25"
                    .to_string());
            }
        } else if !is_uri_char(c) {
            let hint =
                if c.is_ascii() { "" } else { ", and write an international host name in its xn-- (punycode) form" };
            return Err(format!(
                "contains {}, which is not allowed in a URI (RFC 3986); percent-encode it{hint}",
                describe_char(c)
            ));
        }
    }
    Ok(())
}

/// RFC 3986 unreserved and reserved characters (`%` is handled apart).
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=".contains(c)
}

// ---------------------------------------------------------------------------
// Kubernetes names

/// Why `value` is not a DNS-1123 subdomain, completing "secret.name \"…\" ".
fn dns1123_subdomain_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".to_string());
    }
    if value.len() > MAX_DNS1123_SUBDOMAIN {
        return Some(format!("is {} characters long, more than {MAX_DNS1123_SUBDOMAIN}", value.len()));
    }
    for part in value.split('.') {
        if part.is_empty() {
            return Some("starts or ends with a dot, or has two dots in a row".to_string());
        }
        if let Some(bad) = part.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Some(format!("contains {}", describe_char(bad)));
        }
        if part.starts_with('-') || part.ends_with('-') {
            return Some("has a part that starts or ends with '-'".to_string());
        }
    }
    None
}

/// Why `key` is not a valid Secret data key.
fn secret_key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("is empty".to_string());
    }
    if key.len() > MAX_SECRET_KEY {
        return Some(format!("is {} characters long, more than {MAX_SECRET_KEY}", key.len()));
    }
    if let Some(bad) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Some(format!("contains {}", describe_char(bad)));
    }
    if key.starts_with("..") || key == "." {
        return Some("is '.', '..' or starts with '..'".to_string());
    }
    None
}

/// Why `key` is not a Kubernetes qualified name (`[prefix/]name`), as a
/// phrase completing "label key \"…\" ".
fn qualified_name_problem(key: &str) -> Option<String> {
    const ALLOWED: &str = "a key is an optional DNS subdomain prefix and '/', then a name of at \
                           most 63 letters, digits, '-', '_' and '.', starting and ending with \
                           a letter or digit";
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Some(problem) = dns1123_subdomain_problem(prefix)
    {
        return Some(format!("has a prefix that {problem}; {ALLOWED}"));
    }
    if name.is_empty() {
        return Some(format!("has an empty name; {ALLOWED}"));
    }
    if name.len() > MAX_LABEL_NAME {
        return Some(format!("has a name of {} characters, more than {MAX_LABEL_NAME}; {ALLOWED}", name.len()));
    }
    if !is_label_token(name) {
        return Some(format!("has an invalid name; {ALLOWED}"));
    }
    None
}

/// Why `value` is not a valid label value, completing "label value \"…\" ".
fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > MAX_LABEL_VALUE {
        return Some(format!("is {} characters long, more than {MAX_LABEL_VALUE}", value.len()));
    }
    if !value.is_empty() && !is_label_token(value) {
        return Some("is not a valid label value".to_string());
    }
    None
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_token(value: &str) -> bool {
    let inner_ok = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    inner_ok && edge(value.chars().next()) && edge(value.chars().last())
}

// ---------------------------------------------------------------------------
// Formatting

/// `value` cut to [`MAX_ECHO_CHARS`] and quoted, with control characters escaped.
fn quote(value: &str) -> String {
    format!("{:?}", cut(value, MAX_ECHO_CHARS))
}

/// At most `max` characters of `value`, the last one `…` when cut.
fn cut(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_string();
    }
    let mut kept: String = value.chars().take(max.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// A character for a message: `' ' (U+0020)`.
fn describe_char(c: char) -> String {
    format!("{c:?} (U+{:04X})", u32::from(c))
}

/// A duration as Go prints it for whole seconds (`1h30m0s`), else as kube-core does.
pub fn go_duration(duration: Duration) -> String {
    let magnitude = StdDuration::from(duration);
    if magnitude.subsec_nanos() != 0 {
        return duration.to_string();
    }
    let sign = if duration.is_negative() { "-" } else { "" };
    let seconds = magnitude.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

fn grant_name(grant: GrantType) -> &'static str {
    match grant {
        GrantType::AuthorizationCode => "authorization_code",
        GrantType::RefreshToken => "refresh_token",
        GrantType::ClientCredentials => "client_credentials",
    }
}

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::app_registration::Scope;

    fn duration(text: &str) -> Duration {
        text.parse().expect("valid Go duration")
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    /// A confidential app that uses every field, validly.
    fn confidential_app() -> AppRegistrationSpec {
        AppRegistrationSpec {
            display_name: "Billing Portal".to_string(),
            scope: Scope::Organization,
            public_client: Some(false),
            require_pkce: Some(true),
            redirect_uris: strings(&[
                "https://billing.example.com/oauth/callback",
                "https://billing.example.com:8443/cb?tenant=acme",
                "http://127.0.0.1:8080/cb",
            ]),
            grant_types: Some(vec![
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::ClientCredentials,
            ]),
            oauth_scopes: strings(&["openid", "billing:read", "https://api.example.com/invoices"]),
            secret: Some(SecretTemplate {
                name: Some("billing-portal-oauth".to_string()),
                keys: Some(SecretKeys {
                    client_id: Some("CLIENT_ID".to_string()),
                    client_secret: Some("CLIENT_SECRET".to_string()),
                    ..Default::default()
                }),
                labels: BTreeMap::from([
                    ("team".to_string(), "billing".to_string()),
                    ("example.com/tier".to_string(), String::new()),
                ]),
                annotations: BTreeMap::from([(
                    "example.com/owner".to_string(),
                    "Billing team <billing@example.com>".to_string(),
                )]),
                source_ref: Some(crate::api::SecretSourceRef {
                    name: "billing-portal-secret".to_string(),
                    key: Some("secret".to_string()),
                }),
            }),
            rotation: Some(Rotation { grace_period: Some(duration("1h")), interval: Some(duration("720h")) }),
            restart_on_rotate: vec![
                WorkloadRef { kind: WorkloadKind::Deployment, name: "billing-api".to_string() },
                WorkloadRef { kind: WorkloadKind::StatefulSet, name: "billing-api".to_string() },
            ],
            client_id: Some("legacy.billing-portal_01~".to_string()),
            deletion_policy: Some(crate::api::DeletionPolicy::Retain),
            owner: Some(crate::api::Owner::group("billing-admins")),
        }
    }

    /// A public (native) app with PKCE and a private-use scheme.
    fn public_app() -> AppRegistrationSpec {
        AppRegistrationSpec {
            display_name: "Acme Mobile".to_string(),
            public_client: Some(true),
            require_pkce: Some(true),
            redirect_uris: strings(&[
                "com.example.app:/callback",
                "http://[::1]:8080/cb",
                "https://app.example.com/cb",
            ]),
            ..AppRegistrationSpec::default()
        }
    }

    /// The spec's only violation; fails when there are none or several.
    fn only_violation(spec: &AppRegistrationSpec) -> Violation {
        let violations = validate_spec(spec);
        assert_eq!(violations.len(), 1, "expected one violation, got {violations:#?}");
        violations[0].clone()
    }

    fn assert_only_violation(spec: &AppRegistrationSpec, field: &str, phrase: &str) {
        let violation = only_violation(spec);
        assert_eq!(violation.field, field, "{violation}");
        assert!(violation.message.contains(phrase), "message {:?} does not contain {phrase:?}", violation.message);
    }

    fn with_redirect_uris(public_client: bool, uris: &[&str]) -> AppRegistrationSpec {
        let mut spec = if public_client { public_app() } else { confidential_app() };
        spec.redirect_uris = strings(uris);
        spec
    }

    fn rejected(uri: &str, public_client: bool) -> String {
        match check_redirect_uri(uri, public_client) {
            Ok(()) => panic!("{uri:?} should be rejected (public client: {public_client})"),
            Err(message) => message,
        }
    }

    fn assert_rejected(uri: &str, public_client: bool, phrase: &str) {
        let message = rejected(uri, public_client);
        assert!(message.contains(phrase), "message for {uri:?} is {message:?}, without {phrase:?}");
    }

    fn assert_accepted(uri: &str, public_client: bool) {
        if let Err(message) = check_redirect_uri(uri, public_client) {
            panic!("{uri:?} should be accepted (public client: {public_client}): {message}");
        }
    }

    // --- whole specs -------------------------------------------------------

    #[test]
    fn valid_confidential_app_has_no_violations() {
        assert_eq!(validate_spec(&confidential_app()), []);
    }

    #[test]
    fn valid_public_app_has_no_violations() {
        assert_eq!(validate_spec(&public_app()), []);
    }

    #[test]
    fn minimal_app_with_only_a_display_name_is_valid() {
        let spec = AppRegistrationSpec { display_name: "x".to_string(), ..AppRegistrationSpec::default() };
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn violations_come_in_field_order() {
        let mut spec = public_app();
        spec.display_name = String::new();
        spec.require_pkce = None;
        spec.redirect_uris = strings(&["https://a.example.com/cb", "javascript:alert(1)"]);
        spec.oauth_scopes = strings(&["a b"]);
        spec.rotation = Some(Rotation { grace_period: None, interval: Some(duration("30s")) });
        let fields: Vec<String> = validate_spec(&spec).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "spec.displayName",
                "spec.requirePkce",
                "spec.redirectUris[1]",
                "spec.oauthScopes[0]",
                "spec.rotation.interval",
            ]
        );
    }

    #[test]
    fn violation_displays_as_field_colon_message() {
        let violation = Violation::new("spec.requirePkce", "must be true");
        assert_eq!(violation.to_string(), "spec.requirePkce: must be true");
    }

    // --- displayName -------------------------------------------------------

    #[test]
    fn empty_display_name_is_rejected() {
        let mut spec = confidential_app();
        spec.display_name = String::new();
        assert_only_violation(&spec, "spec.displayName", "displayName is empty");
    }

    #[test]
    fn display_name_of_100_characters_is_accepted_even_when_longer_in_bytes() {
        let mut spec = confidential_app();
        spec.display_name = "é".repeat(100);
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn display_name_over_100_characters_is_rejected() {
        let mut spec = confidential_app();
        spec.display_name = "a".repeat(101);
        assert_only_violation(&spec, "spec.displayName", "101 characters long; at most 100");
    }

    #[test]
    fn display_name_with_a_control_character_is_rejected() {
        let mut spec = confidential_app();
        spec.display_name = "Billing\nPortal".to_string();
        assert_only_violation(&spec, "spec.displayName", "control character U+000A at character 8");
    }

    #[test]
    fn display_name_with_delete_or_c1_control_is_rejected() {
        for name in ["Billing\u{7f}", "Billing\u{85}"] {
            let mut spec = confidential_app();
            spec.display_name = name.to_string();
            assert_only_violation(&spec, "spec.displayName", "control character");
        }
    }

    #[test]
    fn display_name_with_unicode_letters_and_emoji_is_accepted() {
        let mut spec = confidential_app();
        spec.display_name = "Zahlungsübersicht 💶 (beta)".to_string();
        assert_eq!(validate_spec(&spec), []);
    }

    // --- publicClient and requirePkce --------------------------------------

    #[test]
    fn public_client_without_require_pkce_is_rejected() {
        let mut spec = public_app();
        spec.require_pkce = None;
        assert_only_violation(&spec, "spec.requirePkce", "must set requirePkce: true");
    }

    #[test]
    fn public_client_with_require_pkce_false_is_rejected() {
        let mut spec = public_app();
        spec.require_pkce = Some(false);
        assert_only_violation(&spec, "spec.requirePkce", "public client");
    }

    #[test]
    fn confidential_client_may_omit_require_pkce() {
        let mut spec = confidential_app();
        spec.require_pkce = None;
        spec.public_client = None;
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn public_client_cannot_use_client_credentials() {
        let mut spec = public_app();
        spec.grant_types = Some(vec![GrantType::AuthorizationCode, GrantType::ClientCredentials]);
        assert_only_violation(&spec, "spec.grantTypes[1]", "cannot use the client_credentials grant");
    }

    #[test]
    fn confidential_client_may_use_client_credentials_alone() {
        let mut spec = confidential_app();
        spec.grant_types = Some(vec![GrantType::ClientCredentials]);
        assert_eq!(validate_spec(&spec), []);
    }

    // --- grantTypes --------------------------------------------------------

    #[test]
    fn empty_grant_types_are_rejected_and_name_the_default() {
        let mut spec = confidential_app();
        spec.grant_types = Some(vec![]);
        assert_only_violation(
            &spec,
            "spec.grantTypes",
            "omit the field for the default authorization_code and refresh_token",
        );
    }

    #[test]
    fn duplicate_grant_type_is_reported_at_the_later_index() {
        let mut spec = confidential_app();
        spec.grant_types = Some(vec![GrantType::RefreshToken, GrantType::AuthorizationCode, GrantType::RefreshToken]);
        assert_only_violation(&spec, "spec.grantTypes[2]", "refresh_token duplicates grantTypes[0]");
    }

    #[test]
    fn more_than_three_grant_types_are_rejected() {
        let mut spec = confidential_app();
        spec.grant_types = Some(vec![
            GrantType::AuthorizationCode,
            GrantType::RefreshToken,
            GrantType::ClientCredentials,
            GrantType::AuthorizationCode,
        ]);
        let violations = validate_spec(&spec);
        assert_eq!(violations[0].field, "spec.grantTypes");
        assert!(violations[0].message.contains("at most 3"), "{}", violations[0]);
        assert_eq!(violations[1].field, "spec.grantTypes[3]");
        assert_eq!(violations.len(), 2, "{violations:#?}");
    }

    // --- redirectUris: acceptance cases ------------------------------------

    #[test]
    fn javascript_uri_is_rejected_for_every_client() {
        for public_client in [false, true] {
            let spec = with_redirect_uris(public_client, &["javascript:alert(1)"]);
            assert_only_violation(&spec, "spec.redirectUris[0]", "forbidden scheme javascript:");
        }
    }

    #[test]
    fn forbidden_schemes_are_rejected_case_insensitively() {
        for uri in [
            "JavaScript:alert(1)",
            "data:text/html,hi",
            "DATA:text/html,hi",
            "file:///etc/passwd",
            "vbscript:msgbox(1)",
            "VBScript:msgbox(1)",
        ] {
            assert_rejected(uri, true, "forbidden scheme");
            assert_rejected(uri, false, "forbidden scheme");
        }
    }

    #[test]
    fn percent_encoded_control_characters_are_rejected() {
        for uri in [
            "https://app.example.com/cb%00",
            "https://app.example.com/cb?next=%0d%0aSet-Cookie:x",
            "https://app.example.com/%1F",
            "https://app.example.com/%7f",
        ] {
            let spec = with_redirect_uris(false, &[uri]);
            assert_only_violation(&spec, "spec.redirectUris[0]", "percent-encoded control character");
        }
        for uri in ["https://app.example.com/a%20b", "https://app.example.com/%2F", "https://app.example.com/%80"] {
            assert_accepted(uri, false);
        }
    }

    #[test]
    fn uri_with_fragment_is_rejected() {
        let spec = with_redirect_uris(false, &["https://app.example.com/cb#frag"]);
        assert_only_violation(&spec, "spec.redirectUris[0]", "contains a fragment (#)");
    }

    #[test]
    fn uri_with_empty_fragment_is_rejected() {
        assert_rejected("https://app.example.com/cb#", false, "not even an empty one");
        assert_rejected("com.example.app:/cb#", true, "fragment");
    }

    #[test]
    fn http_on_a_public_host_is_rejected_with_the_documented_message() {
        let spec = with_redirect_uris(false, &["http://example.com/cb"]);
        let violation = only_violation(&spec);
        assert_eq!(violation.field, "spec.redirectUris[0]");
        assert_eq!(
            violation.message,
            "redirect URI \"http://example.com/cb\" uses http on a host other than 127.0.0.1 or [::1]; use https"
        );
    }

    #[test]
    fn http_is_rejected_for_public_clients_too() {
        assert_rejected("http://example.com/cb", true, "uses http on a host other than");
    }

    #[test]
    fn userinfo_is_rejected() {
        let spec = with_redirect_uris(false, &["https://user@host/cb"]);
        assert_only_violation(&spec, "spec.redirectUris[0]", "contains userinfo");
    }

    #[test]
    fn userinfo_with_password_or_empty_user_is_rejected() {
        for uri in [
            "https://user:pass@app.example.com/cb",
            "https://@app.example.com/cb",
            "http://user@127.0.0.1/cb",
            "com.example.app://user@cb",
        ] {
            assert_rejected(uri, true, "userinfo");
        }
    }

    #[test]
    fn at_sign_in_path_or_query_is_not_userinfo() {
        assert_accepted("https://app.example.com/users/@me/cb?who=a@b", false);
    }

    #[test]
    fn dot_segments_in_the_path_are_rejected_as_ambiguous() {
        let spec = with_redirect_uris(false, &["https://app.example.com/cb/../x"]);
        assert_only_violation(&spec, "spec.redirectUris[0]", "ambiguous");
        for uri in [
            "https://app.example.com/./cb",
            "https://app.example.com/cb/..",
            "https://app.example.com/cb/.",
            "https://app.example.com/cb/%2E%2E/x",
            "https://app.example.com/cb/.%2e?x=1",
            "http://127.0.0.1/a/../b",
            "com.example.app:/a/../b",
        ] {
            assert_rejected(uri, true, "dot segment");
        }
    }

    #[test]
    fn dots_inside_path_segments_and_the_query_are_accepted() {
        assert_accepted("https://app.example.com/v1.2/..cb/.well-known/x...y", false);
        assert_accepted("https://app.example.com/cb?next=/../x", false);
    }

    // --- redirectUris: loopback --------------------------------------------

    #[test]
    fn http_on_loopback_ip_literals_is_accepted_with_any_port() {
        for uri in [
            "http://127.0.0.1/cb",
            "http://127.0.0.1:9999/cb",
            "http://[::1]:8080/cb",
            "http://[::1]/cb",
            "http://127.0.0.1",
            "HTTP://127.0.0.1:1/cb?x=y",
        ] {
            assert_accepted(uri, false);
            assert_accepted(uri, true);
            assert!(is_loopback_http(uri), "{uri} should be loopback http");
        }
    }

    #[test]
    fn http_on_localhost_is_rejected_with_a_hint() {
        let message = rejected("http://localhost/cb", false);
        assert!(message.contains("uses http on a host other than 127.0.0.1 or [::1]"), "{message}");
        assert!(message.contains("localhost is not accepted"), "{message}");
        assert!(!is_loopback_http("http://localhost/cb"));
    }

    #[test]
    fn http_on_other_loopback_forms_is_rejected() {
        for uri in [
            "http://127.0.0.2/cb",
            "http://127.1/cb",
            "http://2130706433/cb",
            "http://127.0.0.1./cb",
            "http://[0:0:0:0:0:0:0:1]/cb",
            "http://127.0.0.1.nip.io/cb",
        ] {
            assert_rejected(uri, true, "uses http on a host other than");
            assert!(!is_loopback_http(uri), "{uri} should not be loopback http");
        }
    }

    #[test]
    fn https_on_loopback_is_not_loopback_http() {
        assert!(!is_loopback_http("https://127.0.0.1/cb"));
        assert_accepted("https://127.0.0.1/cb", false);
    }

    #[test]
    fn loopback_with_userinfo_or_bad_port_is_not_loopback_http() {
        assert!(!is_loopback_http("http://u@127.0.0.1/cb"));
        assert!(!is_loopback_http("http://127.0.0.1:/cb"));
        assert!(!is_loopback_http("http://127.0.0.1:99999/cb"));
        assert!(!is_loopback_http("not a uri"));
        assert!(!is_loopback_http("http:127.0.0.1/cb"));
    }

    // --- redirectUris: schemes ---------------------------------------------

    #[test]
    fn private_use_scheme_is_accepted_for_public_clients() {
        assert_accepted("com.example.app:/callback", true);
        assert_accepted("com.example.app://callback", true);
        assert_accepted("Com.Example.App:/oauth2redirect/example-provider", true);
    }

    #[test]
    fn private_use_scheme_is_rejected_for_confidential_clients() {
        let spec = with_redirect_uris(false, &["com.example.app:/callback"]);
        assert_only_violation(
            &spec,
            "spec.redirectUris[0]",
            "private-use scheme com.example.app:, which is allowed only for public clients",
        );
    }

    #[test]
    fn custom_scheme_without_a_dot_is_rejected_for_public_clients() {
        let spec = with_redirect_uris(true, &["myapp:/callback"]);
        assert_only_violation(
            &spec,
            "spec.redirectUris[0]",
            "uses the scheme myapp:, which is neither https nor a reverse-DNS private-use scheme",
        );
    }

    #[test]
    fn malformed_reverse_dns_scheme_is_rejected() {
        assert_rejected("com..app:/cb", true, "neither https nor a reverse-DNS");
        assert_rejected("com.app.:/cb", true, "neither https nor a reverse-DNS");
    }

    #[test]
    fn other_schemes_are_rejected_for_confidential_clients() {
        for uri in ["ftp://files.example.com/cb", "myapp:/callback", "urn:ietf:wg:oauth:2.0:oob"] {
            assert_rejected(uri, false, "a confidential client's redirect URIs must use https");
        }
    }

    #[test]
    fn https_scheme_is_matched_case_insensitively() {
        assert_accepted("HTTPS://App.Example.com/cb", false);
    }

    // --- redirectUris: syntax ----------------------------------------------

    #[test]
    fn relative_and_scheme_less_uris_are_rejected() {
        for uri in ["/callback", "app.example.com/cb", "1https://x/cb", "://x/cb", " https://x/cb"] {
            assert_rejected(uri, false, "is not an absolute URI");
        }
    }

    #[test]
    fn empty_uri_is_rejected() {
        let spec = with_redirect_uris(false, &[""]);
        assert_only_violation(&spec, "spec.redirectUris[0]", "redirect URI is empty");
    }

    #[test]
    fn wildcards_are_rejected_anywhere() {
        for uri in [
            "https://*.example.com/cb",
            "https://app.example.com/*",
            "https://app.example.com/cb?x=*",
            "com.example.*:/cb",
        ] {
            assert_rejected(uri, true, "wildcard (*)");
        }
    }

    #[test]
    fn https_without_a_host_is_rejected() {
        assert_rejected("https:///cb", false, "has an empty host");
        assert_rejected("https://:443/cb", false, "has an empty host");
        assert_rejected("https:app.example.com/cb", false, "has no host");
        assert_rejected("https:/app.example.com/cb", false, "has no host");
    }

    #[test]
    fn invalid_ports_are_rejected() {
        assert_rejected("https://app.example.com:/cb", false, "empty port");
        assert_rejected("https://app.example.com:65536/cb", false, "invalid port");
        assert_rejected("https://app.example.com:8o/cb", false, "invalid port");
        assert_rejected("http://[::1]:x/cb", false, "invalid port");
    }

    #[test]
    fn characters_outside_rfc_3986_are_rejected() {
        for uri in [
            "https://app.example.com/c b",
            "https://app.example.com/cb\t",
            "https://app.example.com\\@evil.example/cb",
            "https://app.example.com/cb?q=\"x\"",
            "https://app.example.com/{cb}",
        ] {
            assert_rejected(uri, false, "not allowed in a URI (RFC 3986)");
        }
    }

    #[test]
    fn non_ascii_host_is_rejected_with_a_punycode_hint() {
        assert_rejected("https://bücher.example/cb", false, "xn-- (punycode)");
        assert_accepted("https://xn--bcher-kva.example/cb", false);
    }

    #[test]
    fn malformed_percent_encoding_is_rejected() {
        assert_rejected("https://app.example.com/cb%zz", false, "percent-encoded octet");
        assert_rejected("https://app.example.com/cb%2", false, "percent-encoded octet");
        assert_accepted("https://app.example.com/c%20b", false);
    }

    #[test]
    fn hosts_the_url_parser_rejects_are_reported() {
        assert_rejected("https://[::1/cb", false, "is not a valid URI");
        assert_rejected("https://[12345::1]/cb", false, "is not a valid URI: invalid IPv6 address");
        assert_rejected("https://1.2.3.999/cb", false, "is not a valid URI");
    }

    #[test]
    fn uri_of_2048_bytes_is_accepted_and_longer_is_rejected() {
        let prefix = "https://app.example.com/";
        let fits = format!("{prefix}{}", "a".repeat(2048 - prefix.len()));
        assert_accepted(&fits, false);
        let too_long = format!("{fits}a");
        let spec = with_redirect_uris(false, &[&too_long]);
        assert_only_violation(&spec, "spec.redirectUris[0]", "2049 bytes long; at most 2048");
    }

    #[test]
    fn echoed_uri_is_cut_to_100_characters() {
        let long = format!("http://example.com/{}", "a".repeat(500));
        let message = rejected(&long, false);
        let quoted = message.split('"').nth(1).expect("the message quotes the URI");
        assert_eq!(quoted.chars().count(), 100);
        assert!(quoted.ends_with('…'), "{quoted}");
    }

    #[test]
    fn control_characters_in_echoed_uri_are_escaped() {
        let message = rejected("https://app.example.com/cb\n", false);
        assert!(message.contains("\\n"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    // --- redirectUris: the list --------------------------------------------

    #[test]
    fn duplicate_redirect_uri_is_reported_at_the_later_index() {
        let spec = with_redirect_uris(
            false,
            &["https://a.example.com/cb", "https://b.example.com/cb", "https://a.example.com/cb"],
        );
        assert_only_violation(&spec, "spec.redirectUris[2]", "duplicates redirectUris[0]");
    }

    #[test]
    fn more_than_32_redirect_uris_are_rejected() {
        let uris: Vec<String> = (0..33).map(|i| format!("https://app.example.com/cb{i}")).collect();
        let mut spec = confidential_app();
        spec.redirect_uris = uris;
        assert_only_violation(&spec, "spec.redirectUris", "33 URIs; at most 32");
    }

    #[test]
    fn each_bad_redirect_uri_is_reported_with_its_index() {
        let spec = with_redirect_uris(
            false,
            &["https://ok.example.com/cb", "javascript:alert(1)", "https://ok.example.com/x", "http://example.com/cb"],
        );
        let violations = validate_spec(&spec);
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["spec.redirectUris[1]", "spec.redirectUris[3]"]);
    }

    // --- oauthScopes -------------------------------------------------------

    #[test]
    fn scope_tokens_with_all_allowed_punctuation_are_accepted() {
        let mut spec = confidential_app();
        spec.oauth_scopes = strings(&["!#$%&'()*+,-./:;<=>?@[]^_`{|}~", "read:user", "A"]);
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn scope_with_space_quote_or_backslash_is_rejected() {
        for scope in ["read write", "say\"hi\"", "back\\slash", "café"] {
            let mut spec = confidential_app();
            spec.oauth_scopes = strings(&["openid", scope]);
            assert_only_violation(&spec, "spec.oauthScopes[1]", "not allowed in a scope token");
        }
    }

    #[test]
    fn empty_scope_is_rejected() {
        let mut spec = confidential_app();
        spec.oauth_scopes = strings(&[""]);
        assert_only_violation(&spec, "spec.oauthScopes[0]", "scope is empty");
    }

    #[test]
    fn scope_over_256_characters_is_rejected() {
        let mut spec = confidential_app();
        spec.oauth_scopes = vec!["s".repeat(256), "t".repeat(257)];
        assert_only_violation(&spec, "spec.oauthScopes[1]", "257 characters long; at most 256");
    }

    #[test]
    fn duplicate_scope_is_reported_at_the_later_index() {
        let mut spec = confidential_app();
        spec.oauth_scopes = strings(&["openid", "profile", "openid"]);
        assert_only_violation(&spec, "spec.oauthScopes[2]", "duplicates oauthScopes[0]");
    }

    #[test]
    fn more_than_64_scopes_are_rejected() {
        let mut spec = confidential_app();
        spec.oauth_scopes = (0..65).map(|i| format!("scope{i}")).collect();
        assert_only_violation(&spec, "spec.oauthScopes", "65 scopes; at most 64");
    }

    // --- secret ------------------------------------------------------------

    fn with_secret(edit: impl FnOnce(&mut SecretTemplate)) -> AppRegistrationSpec {
        let mut spec = confidential_app();
        let mut secret = spec.secret.take().unwrap_or_default();
        edit(&mut secret);
        spec.secret = Some(secret);
        spec
    }

    #[test]
    fn secret_name_must_be_a_dns_1123_subdomain() {
        for name in
            ["", "Billing", "billing_creds", "-billing", "billing-", "billing..creds", ".billing", "billing.-creds"]
        {
            let spec = with_secret(|s| s.name = Some(name.to_string()));
            assert_only_violation(&spec, "spec.secret.name", "DNS-1123 subdomain");
        }
    }

    #[test]
    fn secret_name_of_253_characters_is_accepted_and_254_rejected() {
        let label = "a".repeat(63);
        let name = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(name.len(), 253);
        assert_eq!(validate_spec(&with_secret(|s| s.name = Some(name.clone()))), []);
        let spec = with_secret(|s| s.name = Some(format!("{name}c")));
        assert_only_violation(&spec, "spec.secret.name", "more than 253");
    }

    #[test]
    fn secret_keys_must_be_valid_data_keys() {
        for key in ["", ".", "..", "..hidden", "client id", "client/id", "ключ"] {
            let spec =
                with_secret(|s| s.keys = Some(SecretKeys { client_id: Some(key.to_string()), ..Default::default() }));
            assert_only_violation(&spec, "spec.secret.keys.clientId", "Secret data key");
        }
        let spec =
            with_secret(|s| s.keys = Some(SecretKeys { client_secret: Some("x".repeat(254)), ..Default::default() }));
        assert_only_violation(&spec, "spec.secret.keys.clientSecret", "more than 253");
    }

    #[test]
    fn dotted_secret_keys_are_accepted() {
        let spec = with_secret(|s| {
            s.keys = Some(SecretKeys {
                client_id: Some(".client.id".to_string()),
                client_secret: Some("client-secret_2".to_string()),
                ..Default::default()
            })
        });
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn equal_effective_secret_keys_are_rejected() {
        let spec = with_secret(|s| {
            s.keys = Some(SecretKeys { client_id: Some("client_secret".to_string()), ..Default::default() })
        });
        assert_only_violation(&spec, "spec.secret.keys", "the two keys must differ");
        let spec = with_secret(|s| {
            s.keys = Some(SecretKeys {
                client_id: Some("key".to_string()),
                client_secret: Some("key".to_string()),
                ..Default::default()
            })
        });
        assert_only_violation(&spec, "spec.secret.keys", "\"key\"");
    }

    #[test]
    fn issuer_and_token_url_keys_must_differ_from_every_other_key() {
        let spec =
            with_secret(|s| s.keys = Some(SecretKeys { issuer: Some("client_id".into()), ..Default::default() }));
        assert_only_violation(&spec, "spec.secret.keys.issuer", "must all differ");
        let spec =
            with_secret(|s| s.keys = Some(SecretKeys { token_url: Some("issuer".into()), ..Default::default() }));
        assert_only_violation(&spec, "spec.secret.keys.tokenUrl", "must all differ");
        let spec = with_secret(|s| s.keys = Some(SecretKeys { issuer: Some("bad key".into()), ..Default::default() }));
        assert_only_violation(&spec, "spec.secret.keys.issuer", "Secret data key");
        let spec = with_secret(|s| {
            s.keys = Some(SecretKeys {
                issuer: Some("OAUTH_ISSUER".into()),
                token_url: Some("OAUTH_TOKEN_URL".into()),
                ..Default::default()
            })
        });
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn reserved_labels_are_rejected() {
        for key in ["registrar.dev/app", "app.kubernetes.io/managed-by"] {
            let spec = with_secret(|s| {
                s.labels.insert(key.to_string(), "x".to_string());
            });
            assert_only_violation(&spec, &format!("spec.secret.labels[{key}]"), "is reserved");
        }
    }

    #[test]
    fn other_app_kubernetes_io_labels_are_accepted() {
        let spec = with_secret(|s| {
            s.labels.insert("app.kubernetes.io/part-of".to_string(), "billing".to_string());
        });
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn reserved_annotations_are_rejected() {
        let spec = with_secret(|s| {
            s.annotations.insert("registrar.dev/client-id".to_string(), "x".to_string());
        });
        assert_only_violation(&spec, "spec.secret.annotations[registrar.dev/client-id]", "is reserved");
    }

    #[test]
    fn managed_by_is_allowed_as_an_annotation() {
        let spec = with_secret(|s| {
            s.annotations.insert(MANAGED_BY_LABEL.to_string(), "someone".to_string());
        });
        assert_eq!(validate_spec(&spec), []);
    }

    #[test]
    fn invalid_label_values_are_rejected() {
        for value in ["-x", "x-", "has space", "a/b", &"v".repeat(64)] {
            let spec = with_secret(|s| {
                s.labels.insert("team".to_string(), value.to_string());
            });
            assert_only_violation(&spec, "spec.secret.labels[team]", "label value");
        }
    }

    #[test]
    fn valid_label_values_are_accepted() {
        for value in ["", "a", "A.b_c-9", &"v".repeat(63)] {
            let spec = with_secret(|s| {
                s.labels.insert("team".to_string(), value.to_string());
            });
            assert_eq!(validate_spec(&spec), [], "{value:?}");
        }
    }

    #[test]
    fn invalid_label_and_annotation_keys_are_rejected() {
        for key in ["", "/team", "Example.com/team", "team/", "a/b/c", "-team", &"k".repeat(64)] {
            let spec = with_secret(|s| {
                s.labels.insert(key.to_string(), "x".to_string());
            });
            assert_only_violation(
                &spec,
                &format!("spec.secret.labels[{key}]"),
                "a key is an optional DNS subdomain prefix",
            );
            let spec = with_secret(|s| {
                s.annotations.insert(key.to_string(), "x".to_string());
            });
            assert_only_violation(&spec, &format!("spec.secret.annotations[{key}]"), "annotation key");
        }
    }

    #[test]
    fn oversized_annotations_are_rejected() {
        let spec = with_secret(|s| {
            s.annotations.insert("example.com/blob".to_string(), "x".repeat(256 * 1024));
        });
        assert_only_violation(&spec, "spec.secret.annotations", "Kubernetes limits");
    }

    #[test]
    fn long_map_key_in_field_path_is_cut() {
        let key = format!("example.com/{}", "k".repeat(300));
        let spec = with_secret(|s| {
            s.labels.insert(key.clone(), "x".to_string());
        });
        let violation = only_violation(&spec);
        assert!(violation.field.starts_with("spec.secret.labels[example.com/kkk"));
        assert!(violation.field.ends_with("…]"), "{}", violation.field);
        assert!(violation.field.chars().count() < 130, "{}", violation.field);
    }

    // --- rotation ----------------------------------------------------------

    fn with_rotation(grace_period: Option<&str>, interval: Option<&str>) -> AppRegistrationSpec {
        let mut spec = confidential_app();
        spec.rotation = Some(Rotation { grace_period: grace_period.map(duration), interval: interval.map(duration) });
        spec
    }

    #[test]
    fn grace_period_bounds_are_accepted() {
        for grace in ["0s", "-0s", "1ns", "168h", "10080m"] {
            assert_eq!(validate_spec(&with_rotation(Some(grace), None)), [], "{grace}");
        }
    }

    #[test]
    fn negative_grace_period_is_rejected() {
        let spec = with_rotation(Some("-1s"), None);
        assert_only_violation(&spec, "spec.rotation.gracePeriod", "-1s, which is negative");
    }

    #[test]
    fn grace_period_over_168h_is_rejected() {
        let spec = with_rotation(Some("168h0m1s"), None);
        assert_only_violation(&spec, "spec.rotation.gracePeriod", "is 168h0m1s; it must be between 0s and 168h");
    }

    #[test]
    fn interval_of_one_minute_or_more_is_accepted() {
        for interval in ["1m", "60s", "8760h"] {
            assert_eq!(validate_spec(&with_rotation(None, Some(interval))), [], "{interval}");
        }
    }

    #[test]
    fn interval_under_one_minute_is_rejected() {
        for (interval, shown) in [("59s", "59s"), ("0s", "0s"), ("-5m", "-5m0s"), ("59.5s", "59.5s")] {
            let spec = with_rotation(None, Some(interval));
            assert_only_violation(
                &spec,
                "spec.rotation.interval",
                &format!("rotation.interval is {shown}; it must be at least 1m"),
            );
        }
    }

    // --- restartOnRotate ---------------------------------------------------

    fn workload(kind: WorkloadKind, name: &str) -> WorkloadRef {
        WorkloadRef { kind, name: name.to_string() }
    }

    #[test]
    fn duplicate_workload_is_reported_at_the_later_index() {
        let mut spec = confidential_app();
        spec.restart_on_rotate = vec![
            workload(WorkloadKind::Deployment, "api"),
            workload(WorkloadKind::DaemonSet, "api"),
            workload(WorkloadKind::Deployment, "api"),
        ];
        assert_only_violation(&spec, "spec.restartOnRotate[2]", "Deployment \"api\" duplicates restartOnRotate[0]");
    }

    #[test]
    fn workload_name_must_be_a_dns_1123_subdomain() {
        for name in ["", "API", "api_v2", "api-", &"a".repeat(254)] {
            let mut spec = confidential_app();
            spec.restart_on_rotate = vec![workload(WorkloadKind::StatefulSet, name)];
            assert_only_violation(&spec, "spec.restartOnRotate[0].name", "DNS-1123 subdomain");
        }
    }

    #[test]
    fn more_than_16_workloads_are_rejected() {
        let mut spec = confidential_app();
        spec.restart_on_rotate = (0..17).map(|i| workload(WorkloadKind::Deployment, &format!("api-{i}"))).collect();
        assert_only_violation(&spec, "spec.restartOnRotate", "17 workloads; at most 16");
    }

    // --- summarize ---------------------------------------------------------

    #[test]
    fn summarize_of_no_violations_is_empty() {
        assert_eq!(summarize(&[]), "");
    }

    #[test]
    fn summarize_joins_violations_with_semicolons() {
        let violations =
            [Violation::new("spec.redirectUris[1]", "is bad"), Violation::new("spec.requirePkce", "must be true")];
        assert_eq!(summarize(&violations), "spec.redirectUris[1]: is bad; spec.requirePkce: must be true");
    }

    #[test]
    fn summarize_cuts_long_lists_and_counts_the_rest() {
        let violations: Vec<Violation> =
            (0..40).map(|i| Violation::new(format!("spec.oauthScopes[{i}]"), "x".repeat(60))).collect();
        let summary = summarize(&violations);
        assert!(summary.chars().count() <= 1000, "{} chars", summary.chars().count());
        let shown = summary.matches("spec.oauthScopes[").count();
        assert!(shown > 5, "{summary}");
        assert!(summary.ends_with(&format!("; and {} more", 40 - shown)), "{summary}");
    }

    #[test]
    fn summarize_keeps_a_list_that_just_fits() {
        // Two pieces of 499 characters and one separator: 1000 characters.
        let violations: Vec<Violation> = (0..2).map(|i| Violation::new(format!("f{i}"), "y".repeat(495))).collect();
        let summary = summarize(&violations);
        assert_eq!(summary.chars().count(), 1000);
        assert!(!summary.contains("more"), "{summary}");
    }

    #[test]
    fn summarize_cuts_a_single_huge_violation() {
        let violations =
            [Violation::new("spec.displayName", "z".repeat(5000)), Violation::new("spec.requirePkce", "must be true")];
        let summary = summarize(&violations);
        assert!(summary.chars().count() <= 1000, "{} chars", summary.chars().count());
        assert!(summary.starts_with("spec.displayName: zzz"));
        assert!(summary.ends_with("…; and 1 more"), "{summary}");
    }

    #[test]
    fn summarize_of_a_real_spec_names_every_field() {
        let mut spec = public_app();
        spec.require_pkce = None;
        spec.redirect_uris = strings(&["https://app.example.com/cb", "http://example.com/cb"]);
        let summary = summarize(&validate_spec(&spec));
        assert_eq!(
            summary,
            "spec.requirePkce: a public client must set requirePkce: true, because it has no \
             secret and PKCE is what protects its authorization codes; spec.redirectUris[1]: \
             redirect URI \"http://example.com/cb\" uses http on a host other than 127.0.0.1 \
             or [::1]; use https"
        );
    }

    #[test]
    fn imported_client_ids_are_unreserved_characters_of_bounded_length() {
        assert_eq!(client_id_problem("legacy.billing-portal_01~"), None);
        assert_eq!(client_id_problem("a"), None);
        assert!(client_id_problem("").is_some());
        assert!(client_id_problem(&"x".repeat(129)).is_some());
        for bad in ["has space", "slash/", "colon:", "percent%41", "ünïcode", "line\nbreak"] {
            let problem = client_id_problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(problem.contains("only letters, digits"), "{problem}");
        }
    }
}
