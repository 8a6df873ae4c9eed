//! Sessions: HS256 JWTs of `{id, email, iat, exp}` carried in the classic platform's `session`
//! cookie (base64 of `{"jwt": token}`) or as a Bearer token.
//!
//! Owns signing, verifying and the cookie format, byte for byte as cookie-session writes it, so
//! a cookie made by the classic platform with the same key works here. It must not look users
//! up: a valid token is the whole proof.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{Email, Timestamp, UserId};

/// The claims of a session token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub id: String,
    pub email: String,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// A verified session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user_id: UserId,
    pub claims: Claims,
}

/// Signs and verifies session tokens with the JWT key.
pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
    secure_cookies: bool,
}

/// The exact `Set-Cookie` value that clears the session, as the classic platform sends it.
pub const CLEARED_COOKIE: &str =
    "session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly";

impl SessionKeys {
    /// Keys from the shared secret; tokens live for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration, secure_cookies: bool) -> SessionKeys {
        SessionKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
            secure_cookies,
        }
    }

    /// Issues a token for a user, valid from `now` for the session TTL.
    pub fn issue(
        &self,
        user_id: UserId,
        email: &Email,
        now: Timestamp,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            id: user_id.to_string(),
            email: email.as_str().to_string(),
            iat: now.seconds(),
            exp: Some(now.plus(self.ttl).seconds()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies a token: HS256 only, a valid signature, `exp` (if present) in the future and
    /// `iat` within the session TTL.
    pub fn verify(&self, token: &str, now: Timestamp) -> Option<Session> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = true;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        let claims = data.claims;
        if let Some(exp) = claims.exp
            && exp <= now.seconds()
        {
            return None;
        }
        let ttl_seconds = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        if claims.iat > now.seconds() + 60 || now.seconds().saturating_sub(claims.iat) > ttl_seconds
        {
            return None;
        }
        let user_id = UserId::parse(&claims.id).ok()?;
        Some(Session { user_id, claims })
    }

    /// The `Set-Cookie` value carrying `token`.
    pub fn cookie(&self, token: &str) -> String {
        let value = STANDARD.encode(serde_json::json!({ "jwt": token }).to_string());
        let secure = if self.secure_cookies { "; secure" } else { "" };
        format!("session={value}; path=/; samesite=lax{secure}; httponly")
    }
}

/// The JWT inside a `session` cookie value, if it is one.
pub fn token_from_cookie_value(value: &str) -> Option<String> {
    let bytes = [&STANDARD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value.trim()).ok())?;
    #[derive(Deserialize)]
    struct CookieSession {
        jwt: String,
    }
    serde_json::from_slice::<CookieSession>(&bytes)
        .ok()
        .map(|session| session.jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ObjectId;

    fn keys() -> SessionKeys {
        SessionKeys::new(b"secret", Duration::from_secs(3600), false)
    }

    fn user() -> (UserId, Email) {
        (
            UserId(ObjectId::from_parts(1, [1; 5], 1)),
            Email::parse("a@example.com").unwrap(),
        )
    }

    #[test]
    fn issued_tokens_verify_and_round_trip_through_the_cookie() {
        let (id, email) = user();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let token = keys().issue(id, &email, now).unwrap();
        let cookie = keys().cookie(&token);
        let value = cookie
            .strip_prefix("session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        assert_eq!(
            token_from_cookie_value(value).as_deref(),
            Some(token.as_str())
        );
        let session = keys().verify(&token, now).unwrap();
        assert_eq!(session.user_id, id);
        assert!(
            keys()
                .verify(&token, now.plus(Duration::from_secs(3601)))
                .is_none()
        );
    }

    #[test]
    fn refuses_other_keys_algorithms_and_garbage() {
        let (id, email) = user();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let other = SessionKeys::new(b"other", Duration::from_secs(3600), false);
        let token = other.issue(id, &email, now).unwrap();
        assert!(keys().verify(&token, now).is_none());
        assert!(keys().verify("garbage", now).is_none());
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"id":"{id}","email":"a@example.com","iat":{}}}"#,
                now.seconds()
            ))
        );
        assert!(keys().verify(&unsigned, now).is_none());
    }

    #[test]
    fn accepts_classic_tokens_without_exp() {
        let (id, _) = user();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let claims = serde_json::json!({"id": id.to_string(), "email": "a@example.com", "iat": now.seconds()});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(keys().verify(&token, now).is_some());
        assert!(
            keys()
                .verify(&token, now.plus(Duration::from_secs(7200)))
                .is_none()
        );
    }
}
