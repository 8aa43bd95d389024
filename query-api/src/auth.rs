//! Bearer JWT verification. The org (and environment/workspace scope) always
//! comes from the token, never from request parameters.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::viewer_token::{is_viewer_token, ViewerKey};

/// The claims we read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
}

/// The default longest remaining lifetime of a token, in seconds (a day:
/// what `mint-token` issues by default).
pub const MAX_LIFETIME_SECS: i64 = 24 * 3600;

/// The largest token accepted, in bytes; a real one is well under 2 KB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("invalid token: the signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has no org_id")]
    NoOrg,
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("token is valid for longer than the {0} s a token may live")]
    TooLong(i64),
}

impl AuthError {
    /// The bounded reason label of the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) | AuthError::BadSignature => "invalid",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::NoOrg => "no_org",
            AuthError::TooLarge => "too_large",
            AuthError::TooLong(_) => "too_long",
        }
    }
}

/// How tokens are verified.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: i64,
    /// Short-lived viewer tokens, when enabled ([`crate::viewer_token`]).
    viewer: Option<ViewerKey>,
}

/// A public-key JWT algorithm (HS256 takes a shared secret instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

/// A public key that does not load.
#[derive(Debug, thiserror::Error)]
#[error("invalid JWT key: {0}")]
pub struct KeyError(String);

impl Verifier {
    /// HS256 with a shared secret (local use).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 or ES256 with a PEM public key (production).
    pub fn public_key(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let (key, alg) = match algorithm {
            JwtAlgorithm::Rs256 => (DecodingKey::from_rsa_pem(pem), Algorithm::RS256),
            JwtAlgorithm::Es256 => (DecodingKey::from_ec_pem(pem), Algorithm::ES256),
        };
        Ok(Self::with(key.map_err(|e| KeyError(e.to_string()))?, alg))
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Verifier {
            key,
            validation,
            max_lifetime: MAX_LIFETIME_SECS,
            viewer: None,
        }
    }

    /// Also accepts viewer tokens signed with `key`.
    pub fn with_viewer(mut self, key: Option<ViewerKey>) -> Self {
        self.viewer = key;
        self
    }

    /// Refuses tokens whose `exp` is more than `secs` away.
    pub fn max_lifetime(mut self, secs: i64) -> Self {
        self.max_lifetime = secs;
        self
    }

    /// Requires `iss` / `aud` when configured.
    pub fn expect_issuer_audience(mut self, iss: Option<&str>, aud: Option<&str>) -> Self {
        if let Some(i) = iss {
            self.validation.set_issuer(&[i]);
        }
        match aud {
            Some(a) => self.validation.set_audience(&[a]),
            None => self.validation.validate_aud = false,
        }
        self
    }

    /// Verifies an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let h = header.ok_or(AuthError::Missing)?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?;
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        if is_viewer_token(token) {
            return match &self.viewer {
                Some(v) => v.verify(token),
                None => Err(AuthError::Invalid(
                    "viewer tokens are not enabled on this server".into(),
                )),
            };
        }
        decode_checked(token, &self.key, &self.validation, self.max_lifetime)
    }
}

/// Decodes and validates `token`, then checks what `jsonwebtoken` does
/// not: an org, and at most `max_lifetime` seconds left.
pub(crate) fn decode_checked(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    max_lifetime: i64,
) -> Result<Claims, AuthError> {
    let data = decode::<Claims>(token, key, validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            _ => AuthError::Invalid(e.to_string()),
        }
    })?;
    if data.claims.org_id.is_empty() {
        return Err(AuthError::NoOrg);
    }
    let remaining = data
        .claims
        .exp
        .saturating_sub(chrono::Utc::now().timestamp());
    if remaining > max_lifetime + validation.leeway as i64 {
        return Err(AuthError::TooLong(max_lifetime));
    }
    Ok(data.claims)
}

/// Mints an HS256 token (local development and tests).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(org: &str, exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            org_id: org.into(),
            environment_id: None,
            workspace_id: None,
            roles: vec!["admin".into()],
            permissions: vec![],
            exp,
            iat: 0,
        }
    }

    #[test]
    fn tokens_verify_and_fail_cleanly() {
        let future = chrono::Utc::now().timestamp() + 600;
        let v = Verifier::hs256(b"s3cret").expect_issuer_audience(None, None);
        let t = mint_hs256(b"s3cret", &claims("acme", future)).expect("mint");
        assert_eq!(
            v.verify_header(Some(&format!("Bearer {t}")))
                .expect("ok")
                .org_id,
            "acme"
        );
        assert!(matches!(v.verify_header(None), Err(AuthError::Missing)));
        assert!(matches!(v.verify_header(Some(&t)), Err(AuthError::Missing)));
        let other = mint_hs256(b"other", &claims("acme", future)).expect("mint");
        assert!(matches!(
            v.verify_header(Some(&format!("Bearer {other}"))),
            Err(AuthError::BadSignature)
        ));
        assert!(matches!(
            v.verify_header(Some("Bearer not-a-jwt")),
            Err(AuthError::Invalid(_))
        ));
        let expired = mint_hs256(b"s3cret", &claims("acme", 1000)).expect("mint");
        assert!(matches!(
            v.verify_header(Some(&format!("Bearer {expired}"))),
            Err(AuthError::Expired)
        ));
        let no_org = mint_hs256(b"s3cret", &claims("", future)).expect("mint");
        assert!(matches!(
            v.verify_header(Some(&format!("Bearer {no_org}"))),
            Err(AuthError::NoOrg)
        ));
        assert!(Verifier::public_key(JwtAlgorithm::Rs256, b"not a pem").is_err());
    }
}
