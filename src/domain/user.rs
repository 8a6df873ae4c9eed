//! Users: a normalised email, a password that meets the rules, and the stored account.
//!
//! Owns what a valid email and password are. It must not hash passwords (that is slow work for
//! the HTTP layer's blocking pool) nor know how sessions are carried.

use serde::{Deserialize, Serialize};

use super::id::UserId;
use super::validation::FieldError;

/// An email address, trimmed and lower-cased, so comparisons ignore case. Deserialising
/// parses too, so an invalid address cannot arrive from storage or the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Email::parse(&text).map_err(|error| error.message)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> String {
        email.0
    }
}

const EMAIL_MESSAGE: &str = "Email must be valid";

impl Email {
    /// Parses an address of the form `local@domain.tld`.
    pub fn parse(text: &str) -> Result<Email, FieldError> {
        let text = text.trim().to_lowercase();
        let invalid = || FieldError::new("email", EMAIL_MESSAGE);
        if text.is_empty() || text.len() > 254 {
            return Err(invalid());
        }
        let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && labels.last().is_some_and(|tld| {
                tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic)
            });
        if local_ok && domain_ok {
            Ok(Email(text))
        } else {
            Err(invalid())
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of 4 to 20 characters after trimming, as the classic platform requires.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Parses a new password for signing up.
    pub fn parse(text: &str) -> Result<Password, FieldError> {
        let trimmed = text.trim();
        let length = trimmed.chars().count();
        if (4..=20).contains(&length) {
            Ok(Password(trimmed.to_string()))
        } else {
            Err(FieldError::new(
                "password",
                "Password must be between 4 and 20 characters",
            ))
        }
    }

    /// Accepts any non-empty password for signing in (the rules may have changed since signup).
    pub fn parse_for_signin(text: &str) -> Result<Password, FieldError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            Err(FieldError::new("password", "You must supply a password"))
        } else {
            Ok(Password(trimmed.to_string()))
        }
    }

    /// The secret, to be hashed or verified.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Password(..)")
    }
}

/// A stored account. The password is only ever kept as an Argon2id PHC string.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The normalised email, unique across users.
    pub email: Email,
    /// The Argon2id hash in PHC format.
    pub password_hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_and_normalises_case() {
        assert_eq!(
            Email::parse(" Test@Test.COM ").unwrap().as_str(),
            "test@test.com"
        );
        assert!(Email::parse("a.b+c@sub.example.org").is_ok());
        assert!(Email::parse("josé@exämple.de").is_ok());
    }

    #[test]
    fn refuses_malformed_addresses() {
        for text in [
            "alskdflaskjfd",
            "",
            "@example.com",
            "a@",
            "a@b",
            "a@b.c",
            "a b@example.com",
            "a@@example.com",
            "a@exa mple.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example.c0m",
        ] {
            assert_eq!(
                Email::parse(text),
                Err(FieldError::new("email", EMAIL_MESSAGE)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn deserialising_parses() {
        let email: Email = serde_json::from_str("\"A@Example.com\"").unwrap();
        assert_eq!(email.as_str(), "a@example.com");
        assert!(serde_json::from_str::<Email>("\"nope\"").is_err());
    }

    #[test]
    fn password_length_is_checked_after_trimming() {
        assert!(Password::parse("p").is_err());
        assert!(Password::parse("  abc  ").is_err());
        assert!(Password::parse("abcd").is_ok());
        assert!(Password::parse(&"x".repeat(20)).is_ok());
        assert!(Password::parse(&"x".repeat(21)).is_err());
        assert!(Password::parse_for_signin("   ").is_err());
        assert_eq!(Password::parse_for_signin(" pw ").unwrap().expose(), "pw");
    }
}
