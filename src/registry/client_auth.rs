//! Reading what callers send: client credentials (RFC 6749 §2.3.1: HTTP Basic
//! with form-urlencoded parts, or `client_id` / `client_secret` form fields)
//! and the caller's own bearer token. Untrusted input, parsed here only.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::{Engine, engine::general_purpose::STANDARD};

use crate::credentials::ClientSecret;

/// The header that carries the caller's bearer token when `Authorization`
/// carries client credentials.
pub const CALLER_HEADER: &str = "x-registry-authorization";

/// Client credentials from HTTP Basic, or else from the form body.
pub fn credentials(headers: &HeaderMap, body: &[u8]) -> Option<(String, ClientSecret)> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(encoded) = basic(value)
    {
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let (id, secret) = (form_unescape(id)?, form_unescape(secret)?);
        if id.is_empty() {
            return None;
        }
        return Some((id, ClientSecret::from_bytes(secret.as_bytes())?));
    }
    let mut id = None;
    let mut secret = None;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "client_id" => id = Some(v.into_owned()),
            "client_secret" => secret = ClientSecret::from_bytes(v.as_bytes()),
            _ => {}
        }
    }
    Some((id.filter(|i| !i.is_empty())?, secret?))
}

/// The credentials of a `Basic` authorization value (the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn basic(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then_some(rest)
}

/// RFC 6749 §2.3.1: each part is application/x-www-form-urlencoded (`+` is a
/// space, `%XY` a byte). `None` for an escape that is not two hex digits, or
/// bytes that are not UTF-8.
fn form_unescape(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The caller's `Authorization` header: from `X-Registry-Authorization` when
/// present (the Authorization header then carries client credentials), or
/// else `Authorization` itself.
pub fn caller_authorization(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(CALLER_HEADER).or_else(|| headers.get(header::AUTHORIZATION))
}

/// The bearer token of an authorization value (the scheme is case-insensitive).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic_headers(raw: &str, scheme: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("{scheme} {}", STANDARD.encode(raw));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        headers
    }

    fn parsed(headers: &HeaderMap, body: &[u8]) -> Option<(String, String)> {
        credentials(headers, body).map(|(id, s)| (id, s.expose().to_owned()))
    }

    #[test]
    fn basic_credentials_are_form_unescaped() {
        let h = basic_headers("my%20client:p%40ss%2Bword+x", "Basic");
        assert_eq!(parsed(&h, b""), Some(("my client".into(), "p@ss+word x".into())));
    }

    #[test]
    fn the_basic_scheme_is_case_insensitive() {
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            assert_eq!(parsed(&basic_headers("id:secret", scheme), b""), Some(("id".into(), "secret".into())));
        }
    }

    #[test]
    fn malformed_basic_credentials_are_refused() {
        for raw in ["no-colon", ":secret-without-id", "id:bad%zzescape", "id:truncated%4"] {
            assert_eq!(parsed(&basic_headers(raw, "Basic"), b""), None, "{raw}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!not-base64"));
        assert_eq!(parsed(&h, b""), None);
    }

    #[test]
    fn raw_ampersands_and_equals_signs_survive() {
        assert_eq!(parsed(&basic_headers("id:a&b=c", "Basic"), b""), Some(("id".into(), "a&b=c".into())));
    }

    #[test]
    fn a_colon_in_the_secret_is_kept() {
        assert_eq!(parsed(&basic_headers("id:a:b", "Basic"), b""), Some(("id".into(), "a:b".into())));
    }

    #[test]
    fn without_basic_the_form_body_is_read() {
        let body = b"grant_type=client_credentials&client_id=id&client_secret=s%26cret";
        assert_eq!(parsed(&HeaderMap::new(), body), Some(("id".into(), "s&cret".into())));
        assert_eq!(parsed(&HeaderMap::new(), b"client_id=id"), None, "no secret");
        assert_eq!(parsed(&HeaderMap::new(), b"client_secret=s"), None, "no id");
        // A bearer Authorization header is not client credentials.
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer token"));
        assert_eq!(parsed(&h, b"client_id=id&client_secret=s"), Some(("id".into(), "s".into())));
    }

    #[test]
    fn the_caller_token_comes_from_its_own_header_first() {
        let mut h = basic_headers("id:secret", "Basic");
        assert_eq!(caller_authorization(&h).and_then(|v| v.to_str().ok()).and_then(bearer), None);
        h.insert(CALLER_HEADER, HeaderValue::from_static("bearer  tok  "));
        assert_eq!(caller_authorization(&h).and_then(|v| v.to_str().ok()).and_then(bearer), Some("tok"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Token x"), None);
    }
}
