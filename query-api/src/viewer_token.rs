//! Viewer tokens: what a platform's backend mints for the embedded viewer
//! of one signed-in user, so the browser holds a short-lived, read-only
//! credential of one org (optionally one workspace or environment) and
//! never a signing secret.
//!
//! A viewer token is an HS256 JWT with the header `kid` [`VIEWER_KID`] and
//! the audience [`VIEWER_AUDIENCE`], signed with the viewer secret (a
//! secret of its own, shared by the query API and the platform's backend
//! only; never the secret of other tokens). The query API verifies it with
//! that secret alone, refuses one that lives longer than the viewer
//! lifetime (15 minutes by default), and gives it read permissions only:
//! its roles are dropped and its permissions are narrowed to
//! [`VIEWER_PERMISSIONS`], whatever it claims. `docs/viewer.md` shows the
//! flow end to end.

use jsonwebtoken::{
    decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::Serialize;

use crate::access::VIEW_AUDIT_LOG;
use crate::auth::{decode_checked, AuthError, Claims};

/// The `kid` that marks a viewer token.
pub const VIEWER_KID: &str = "trailhouse-viewer";
/// The audience a viewer token must name.
pub const VIEWER_AUDIENCE: &str = "trailhouse-viewer";
/// The permissions a viewer token can carry: read only.
pub const VIEWER_PERMISSIONS: [&str; 1] = [VIEW_AUDIT_LOG];
/// The default longest lifetime of a viewer token, in seconds.
pub const DEFAULT_VIEWER_LIFETIME_SECS: i64 = 900;
/// The shortest viewer secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether `token`'s header names the viewer key (read without verifying:
/// the viewer key then verifies it).
pub fn is_viewer_token(token: &str) -> bool {
    decode_header(token).is_ok_and(|h| h.kid.as_deref() == Some(VIEWER_KID))
}

/// The keys and rules that verify viewer tokens: the current secret, and
/// during a rotation the previous one too.
#[derive(Clone)]
pub struct ViewerKey {
    keys: Vec<DecodingKey>,
    validation: Validation,
    max_lifetime: i64,
}

impl ViewerKey {
    /// Verifies viewer tokens signed with `secret` that live at most
    /// `max_lifetime` seconds.
    pub fn new(secret: &[u8], max_lifetime: i64) -> Self {
        Self::rotating(secret, None, max_lifetime)
    }

    /// [`ViewerKey::new`] that also accepts tokens of `previous`, while the
    /// platform's backends move to the new secret.
    pub fn rotating(secret: &[u8], previous: Option<&[u8]>, max_lifetime: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.set_audience(&[VIEWER_AUDIENCE]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let keys = std::iter::once(secret)
            .chain(previous)
            .map(DecodingKey::from_secret)
            .collect();
        ViewerKey {
            keys,
            validation,
            max_lifetime,
        }
    }

    /// The claims of a valid viewer token, narrowed to read access.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut outcome = Err(AuthError::Invalid("no viewer key".into()));
        for key in &self.keys {
            outcome = decode_checked(token, key, &self.validation, self.max_lifetime);
            // Only a bad signature is worth trying the next key for.
            if !matches!(outcome, Err(AuthError::BadSignature)) {
                break;
            }
        }
        let mut claims = outcome?;
        claims.roles.clear();
        claims
            .permissions
            .retain(|p| VIEWER_PERMISSIONS.contains(&p.as_str()));
        Ok(claims)
    }
}

#[derive(Serialize)]
struct WithAudience<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    aud: &'static str,
}

/// Mints a viewer token: what a platform's backend does with any JWT
/// library (this is the reference, used by `mint-viewer-token` and tests).
pub fn mint_viewer_token(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(VIEWER_KID.to_string());
    let body = WithAudience {
        claims,
        aud: VIEWER_AUDIENCE,
    };
    encode(&header, &body, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{mint_hs256, Verifier};

    const MAIN: &[u8] = b"the-main-secret-0123456789";
    const VIEWER: &[u8] = b"the-viewer-secret-0123456789abcdef";

    fn claims(ttl: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "user-7".into(),
            org_id: "acme".into(),
            environment_id: None,
            workspace_id: Some("ws_1".into()),
            roles: vec!["owner".into()],
            permissions: vec![VIEW_AUDIT_LOG.into(), "manageStreams".into()],
            exp: now + ttl,
            iat: now,
        }
    }

    fn verifier(viewer: bool) -> Verifier {
        Verifier::hs256(MAIN)
            .expect_issuer_audience(None, None)
            .with_viewer(viewer.then(|| ViewerKey::new(VIEWER, DEFAULT_VIEWER_LIFETIME_SECS)))
    }

    fn verify(v: &Verifier, token: &str) -> Result<Claims, AuthError> {
        v.verify_header(Some(&format!("Bearer {token}")))
    }

    #[test]
    fn a_viewer_token_reads_one_org_and_nothing_more() {
        let token = mint_viewer_token(VIEWER, &claims(600)).expect("mint");
        assert!(is_viewer_token(&token));
        let c = verify(&verifier(true), &token).expect("valid");
        assert_eq!(
            (c.org_id.as_str(), c.workspace_id.as_deref()),
            ("acme", Some("ws_1"))
        );
        assert!(c.roles.is_empty(), "roles are dropped");
        assert_eq!(c.permissions, vec![VIEW_AUDIT_LOG.to_string()]);
    }

    #[test]
    fn viewer_tokens_are_refused_when_they_should_be() {
        let v = verifier(true);
        let cases: Vec<(&str, String)> = vec![
            (
                "signed with the main secret",
                mint_viewer_token(MAIN, &claims(600)).expect("mint"),
            ),
            (
                "too long-lived",
                mint_viewer_token(VIEWER, &claims(3600)).expect("mint"),
            ),
            (
                "expired",
                mint_viewer_token(VIEWER, &claims(-600)).expect("mint"),
            ),
            (
                "no viewer kid: checked against the main key",
                mint_hs256(VIEWER, &claims(600)).expect("mint"),
            ),
        ];
        for (what, token) in cases {
            assert!(verify(&v, &token).is_err(), "{what}");
        }
        let mut no_aud = Header::new(Algorithm::HS256);
        no_aud.kid = Some(VIEWER_KID.into());
        let token = encode(&no_aud, &claims(600), &EncodingKey::from_secret(VIEWER)).expect("mint");
        assert!(verify(&v, &token).is_err(), "no audience");
        let token = mint_viewer_token(VIEWER, &claims(600)).expect("mint");
        let off = verify(&verifier(false), &token).expect_err("not enabled");
        assert!(
            off.to_string().contains("viewer tokens are not enabled"),
            "{off}"
        );
        assert!(!is_viewer_token("not.a.jwt"));
    }

    #[test]
    fn during_a_rotation_both_secrets_are_valid() {
        const NEXT: &[u8] = b"the-next-viewer-secret-0123456789abcdef";
        let v = Verifier::hs256(MAIN)
            .expect_issuer_audience(None, None)
            .with_viewer(Some(ViewerKey::rotating(
                NEXT,
                Some(VIEWER),
                DEFAULT_VIEWER_LIFETIME_SECS,
            )));
        for secret in [NEXT, VIEWER] {
            let token = mint_viewer_token(secret, &claims(600)).expect("mint");
            assert!(verify(&v, &token).is_ok());
        }
        let other =
            mint_viewer_token(b"some-other-secret-0123456789abcdefgh", &claims(600)).expect("mint");
        assert!(verify(&v, &other).is_err());
        let expired = mint_viewer_token(VIEWER, &claims(-600)).expect("mint");
        assert!(matches!(verify(&v, &expired), Err(AuthError::Expired)));
    }
}
