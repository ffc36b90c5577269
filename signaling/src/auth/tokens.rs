//! Access tokens: HS256 JWTs carrying subject, role, session and expiry. Expiry is checked
//! against the injected clock, not the system time, so tests can move time.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::clock::Millis;
use crate::domain::identity::Role;

const ISSUER: &str = "cloud-window";

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject: staff, resident or device id.
    pub sub: Uuid,
    /// Role.
    pub role: Role,
    /// Sign-in session, when the token came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: Uuid,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Well-formed and signed, but past its expiry.
    #[error("token expired")]
    Expired,
    /// Malformed, forged or for another issuer.
    #[error("invalid token")]
    Invalid,
}

/// Issues and checks access tokens.
pub struct Tokens {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens signed with `secret`, valid for `ttl_secs`.
    pub fn new(secret: &[u8], ttl_secs: i64) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked against the injected clock below
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Ok(Tokens {
            enc: EncodingKey::from_secret(secret)?,
            dec: DecodingKey::from_secret(secret)?,
            validation,
            ttl_secs,
        })
    }

    /// Lifetime of new tokens, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Issues a token for `sub` as `role`.
    pub fn issue(&self, sub: Uuid, role: Role, sid: Option<Uuid>, now: Millis) -> String {
        let iat = now / 1000;
        let claims = Claims {
            sub,
            role,
            sid,
            iat,
            exp: iat + self.ttl_secs,
            iss: ISSUER.into(),
            jti: Uuid::new_v4(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .expect("HS256 signing does not fail")
    }

    /// Checks a token's signature and issuer but not its expiry: a signaling session resumed
    /// on a new socket keeps its call even when the token expired meanwhile.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .map(|d| d.claims)
            .map_err(|_| TokenError::Invalid)
    }

    /// Checks a token's signature, issuer and expiry.
    pub fn verify(&self, token: &str, now: Millis) -> Result<Claims, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp * 1000 <= now {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_expiry_and_forgeries_fail() {
        let t = Tokens::new(b"secret-one", 60).unwrap();
        let sub = Uuid::now_v7();
        let tok = t.issue(sub, Role::Agent, None, 1_000_000);
        let c = t.verify(&tok, 1_000_000).unwrap();
        assert_eq!((c.sub, c.role), (sub, Role::Agent));
        assert_eq!(t.verify(&tok, 1_060_000), Err(TokenError::Expired));
        assert_eq!(Tokens::new(b"secret-two", 60).unwrap().verify(&tok, 1_000_000), Err(TokenError::Invalid));
        let mut parts: Vec<&str> = tok.split('.').collect();
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::json!({"sub": sub, "role": "admin", "iat": 1000, "exp": 9_999_999_999i64, "iss": "cloud-window", "jti": sub})
                .to_string(),
        );
        parts[1] = &forged_payload;
        assert_eq!(t.verify(&parts.join("."), 1_000_000), Err(TokenError::Invalid));
        assert_eq!(t.verify("not.a.jwt", 0), Err(TokenError::Invalid));
    }
}
