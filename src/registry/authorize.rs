//! The authorization check, pure: may this client start an authorization with
//! this redirect URI, PKCE method, group and scopes?

use serde::{Deserialize, Serialize};

use crate::api::{AcceptedSpec, GrantType, validation::is_loopback_http};

/// An authorization server's question.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthorizeRequest {
    pub redirect_uri: String,
    /// The namespace (group) the user acts in.
    pub group: String,
    /// Requested scopes: a list, or one space-separated string (RFC 6749 §3.3).
    #[serde(default)]
    pub scope: Option<ScopeParam>,
    #[serde(default)]
    pub code_challenge_method: Option<String>,
    /// The code challenge itself, if the authorization request carries one: a
    /// challenge without a method is `plain` (RFC 7636 §4.3), never accepted.
    #[serde(default)]
    pub code_challenge: Option<String>,
}

/// `scope` as a list or as a space-separated string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ScopeParam {
    List(Vec<String>),
    Text(String),
}

impl AuthorizeRequest {
    pub fn scopes(&self) -> Vec<String> {
        match &self.scope {
            None => Vec::new(),
            Some(ScopeParam::List(list)) => list.clone(),
            Some(ScopeParam::Text(text)) => text.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        }
    }
}

/// Why an authorization is refused: machine-readable, stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    Revoked,
    /// The app may not use the authorization_code grant.
    UnauthorizedClient,
    /// The group's organization is Restricted and does not allow the app.
    NotAllowlisted,
    RedirectMismatch,
    PkceRequired,
    PkceMethodNotAllowed,
    NotConsented,
    ScopeNotGranted,
}

impl Denial {
    pub fn description(self) -> &'static str {
        match self {
            Denial::Revoked => "the client was revoked",
            Denial::UnauthorizedClient => "the client may not use the authorization_code grant",
            Denial::NotAllowlisted => "the group's organization does not allow this client (OrganizationPolicy)",
            Denial::RedirectMismatch => "redirect_uri is not registered for this client",
            Denial::PkceRequired => "this client requires PKCE (code_challenge_method S256)",
            Denial::PkceMethodNotAllowed => "only the S256 code challenge method is accepted",
            Denial::NotConsented => "the group has not consented to this client",
            Denial::ScopeNotGranted => "a requested scope is not granted to this client in the group",
        }
    }
}

/// Whether `requested` matches a registered redirect URI: exactly, or for http
/// on a loopback IP literal, with any port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    if !is_loopback_http(requested) {
        return false;
    }
    let wanted = without_port(requested);
    registered.iter().filter(|r| is_loopback_http(r)).any(|r| without_port(r) == wanted)
}

/// `http://127.0.0.1:8080/cb` → `http://127.0.0.1/cb` (for loopback URIs only).
fn without_port(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.to_owned() };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    };
    format!("{}://{host}{path}", scheme.to_ascii_lowercase())
}

/// Decides. `deleting`: the app is being revoked. `granted`: the scopes the
/// group may use — the app's own scopes in its own namespace, a granted
/// consent's scopes elsewhere, `None` without a granted consent.
pub fn authorize(
    app: &AcceptedSpec,
    deleting: bool,
    policy_allows: bool,
    granted: Option<&[String]>,
    request: &AuthorizeRequest,
) -> Result<(), Denial> {
    if deleting {
        return Err(Denial::Revoked);
    }
    if !app.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(Denial::UnauthorizedClient);
    }
    if !redirect_matches(&app.redirect_uris, &request.redirect_uri) {
        return Err(Denial::RedirectMismatch);
    }
    let challenge = request.code_challenge.as_deref().is_some_and(|c| !c.is_empty());
    match request.code_challenge_method.as_deref().filter(|m| !m.is_empty()) {
        Some("S256") => {}
        Some(_) => return Err(Denial::PkceMethodNotAllowed),
        // A challenge without a method is plain.
        None if challenge => return Err(Denial::PkceMethodNotAllowed),
        None if app.require_pkce => return Err(Denial::PkceRequired),
        None => {}
    }
    if !policy_allows {
        return Err(Denial::NotAllowlisted);
    }
    let Some(granted) = granted else { return Err(Denial::NotConsented) };
    if request.scopes().iter().all(|s| granted.contains(s)) { Ok(()) } else { Err(Denial::ScopeNotGranted) }
}

/// Decides a token request at the authorization server (its token hook: a
/// code exchange or a refresh): may the group still use the client, with the
/// scopes granted? Redirect URI and PKCE were decided when the authorization
/// began; a scope the app does not offer (OpenID Connect's, which the server
/// allows by itself) is not the registry's to judge.
pub fn token_allowed(
    app: &AcceptedSpec,
    deleting: bool,
    policy_allows: bool,
    granted: Option<&[String]>,
    scopes: &[String],
) -> Result<(), Denial> {
    if deleting {
        return Err(Denial::Revoked);
    }
    if !policy_allows {
        return Err(Denial::NotAllowlisted);
    }
    let Some(granted) = granted else { return Err(Denial::NotConsented) };
    let offered = |s: &&String| app.oauth_scopes.contains(s);
    if scopes.iter().filter(offered).all(|s| granted.contains(s)) { Ok(()) } else { Err(Denial::ScopeNotGranted) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AppRegistrationSpec;

    fn app(uris: &[&str], pkce: bool) -> AcceptedSpec {
        let spec = AppRegistrationSpec {
            display_name: "Billing".into(),
            redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
            require_pkce: pkce.then_some(true),
            oauth_scopes: vec!["read".into(), "write".into()],
            ..Default::default()
        };
        AcceptedSpec::of(&spec, 1)
    }

    fn request(uri: &str, method: Option<&str>, scope: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            redirect_uri: uri.into(),
            group: "team-a".into(),
            scope: Some(ScopeParam::Text(scope.into())),
            code_challenge_method: method.map(str::to_owned),
            code_challenge: method.map(|_| "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        }
    }

    const CB: &str = "https://app.example.com/cb";
    fn all() -> Vec<String> {
        vec!["read".into(), "write".into()]
    }

    #[test]
    fn an_exact_redirect_with_granted_scopes_is_allowed() {
        assert_eq!(authorize(&app(&[CB], false), false, true, Some(&all()), &request(CB, None, "read")), Ok(()));
    }

    #[test]
    fn redirects_must_match_exactly() {
        let a = app(&[CB], false);
        for uri in [
            "https://app.example.com/cb/../x",
            "https://app.example.com:8443/cb",
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com/cb?x=1",
        ] {
            assert_eq!(
                authorize(&a, false, true, Some(&all()), &request(uri, None, "")),
                Err(Denial::RedirectMismatch),
                "{uri}"
            );
        }
    }

    #[test]
    fn loopback_http_redirects_match_any_port() {
        let a = app(&["http://127.0.0.1/cb", "http://[::1]:8080/cb"], false);
        for uri in ["http://127.0.0.1:9999/cb", "http://127.0.0.1/cb", "http://[::1]/cb", "http://[::1]:1/cb"] {
            assert_eq!(authorize(&a, false, true, Some(&all()), &request(uri, None, "")), Ok(()), "{uri}");
        }
        for uri in ["http://127.0.0.1:9999/other", "http://localhost:9999/cb", "https://127.0.0.1:9999/cb"] {
            assert_eq!(
                authorize(&a, false, true, Some(&all()), &request(uri, None, "")),
                Err(Denial::RedirectMismatch),
                "{uri}"
            );
        }
    }

    #[test]
    fn pkce_is_s256_only_and_required_when_the_app_says_so() {
        let strict = app(&[CB], true);
        assert_eq!(authorize(&strict, false, true, Some(&all()), &request(CB, None, "")), Err(Denial::PkceRequired));
        assert_eq!(
            authorize(&strict, false, true, Some(&all()), &request(CB, Some("plain"), "")),
            Err(Denial::PkceMethodNotAllowed)
        );
        assert_eq!(authorize(&strict, false, true, Some(&all()), &request(CB, Some("S256"), "")), Ok(()));
        let lax = app(&[CB], false);
        assert_eq!(
            authorize(&lax, false, true, Some(&all()), &request(CB, Some("plain"), "")),
            Err(Denial::PkceMethodNotAllowed)
        );
    }

    #[test]
    fn a_challenge_without_a_method_is_plain_and_refused() {
        for app in [app(&[CB], true), app(&[CB], false)] {
            let plain = AuthorizeRequest { code_challenge: Some("challenge".into()), ..request(CB, None, "") };
            assert_eq!(authorize(&app, false, true, Some(&all()), &plain), Err(Denial::PkceMethodNotAllowed));
            let empty_method = AuthorizeRequest { code_challenge_method: Some(String::new()), ..plain };
            assert_eq!(authorize(&app, false, true, Some(&all()), &empty_method), Err(Denial::PkceMethodNotAllowed));
        }
    }

    #[test]
    fn an_app_without_the_authorization_code_grant_is_refused() {
        let mut machine = app(&[CB], false);
        machine.grant_types = vec![GrantType::ClientCredentials];
        assert_eq!(
            authorize(&machine, false, true, Some(&all()), &request(CB, Some("S256"), "")),
            Err(Denial::UnauthorizedClient)
        );
        machine.grant_types = vec![GrantType::RefreshToken, GrantType::AuthorizationCode];
        assert_eq!(authorize(&machine, false, true, Some(&all()), &request(CB, Some("S256"), "")), Ok(()));
    }

    #[test]
    fn consent_and_scopes_are_checked_last() {
        let a = app(&[CB], false);
        assert_eq!(authorize(&a, false, true, None, &request(CB, None, "read")), Err(Denial::NotConsented));
        let read = vec!["read".to_string()];
        assert_eq!(
            authorize(&a, false, true, Some(&read), &request(CB, None, "read write")),
            Err(Denial::ScopeNotGranted)
        );
        assert_eq!(authorize(&a, false, true, Some(&read), &request(CB, None, "read")), Ok(()));
    }

    #[test]
    fn an_app_the_groups_organization_does_not_allow_is_refused_before_consent() {
        let a = app(&[CB], false);
        assert_eq!(authorize(&a, false, false, Some(&all()), &request(CB, None, "")), Err(Denial::NotAllowlisted));
        assert_eq!(authorize(&a, false, false, None, &request(CB, None, "")), Err(Denial::NotAllowlisted));
    }

    #[test]
    fn a_revoked_client_is_refused_first() {
        assert_eq!(
            authorize(&app(&[CB], false), true, true, Some(&all()), &request(CB, None, "")),
            Err(Denial::Revoked)
        );
    }

    #[test]
    fn scopes_come_as_a_list_or_a_string() {
        let mut r = request(CB, None, " read  write ");
        assert_eq!(r.scopes(), ["read", "write"]);
        r.scope = Some(ScopeParam::List(vec!["a".into()]));
        assert_eq!(r.scopes(), ["a"]);
        r.scope = None;
        assert!(r.scopes().is_empty());
    }

    #[test]
    fn a_token_request_is_judged_on_revocation_policy_consent_and_offered_scopes() {
        let a = app(&[CB], false);
        let scopes = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let read = scopes(&["read"]);
        // OpenID Connect scopes are the server's business; the app's are the group's grant.
        assert_eq!(token_allowed(&a, false, true, Some(&read), &scopes(&["openid", "offline", "read"])), Ok(()));
        assert_eq!(
            token_allowed(&a, false, true, Some(&read), &scopes(&["read", "write"])),
            Err(Denial::ScopeNotGranted)
        );
        assert_eq!(token_allowed(&a, false, true, None, &scopes(&["openid"])), Err(Denial::NotConsented));
        assert_eq!(token_allowed(&a, false, false, Some(&read), &read), Err(Denial::NotAllowlisted));
        assert_eq!(token_allowed(&a, true, true, Some(&read), &read), Err(Denial::Revoked));
    }
}
