//! The built-in sandbox gateway: Stripe's test-token semantics without a network.
//!
//! Owns the card outcomes of Stripe's test tokens and Stripe-style idempotency, remembered in
//! memory for a bounded number of keys. It must not take real money, reach the network or know
//! anything about orders; it is what `serve` uses when no `--stripe-key` is given, and what the
//! tests use. Its memory is lost at restart, so start-up reconciliation with the sandbox sees an
//! unknown key as a new charge, as a fresh Stripe test account would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use rand::distr::{Alphanumeric, SampleString};

use super::{Charge, ChargeRequest, PaymentError, PaymentGateway};

/// How many idempotency keys the sandbox remembers before forgetting the oldest.
const MAXIMUM_REMEMBERED_KEYS: usize = 100_000;

/// How many random alphanumerics follow `ch_` in a charge id.
const CHARGE_ID_RANDOM_LENGTH: usize = 24;

/// What Stripe answers when an idempotency key comes back with other parameters.
const IDEMPOTENCY_MISMATCH_MESSAGE: &str = "Keys for idempotent requests can only be used with the same parameters they were first used with.";

/// A payment gateway that follows Stripe's test tokens: `tok_visa`, `tok_mastercard` and
/// `tok_amex` succeed, `tok_chargeDeclined` and `tok_chargeDeclinedInsufficientFunds` are
/// declined, and any other token is invalid.
///
/// Like Stripe, it remembers each idempotency key with its request and outcome: the same key with
/// the same request gets the same outcome (the same charge id), and the same key with another
/// amount, currency or token is rejected.
#[derive(Debug)]
pub struct SandboxGateway {
    remembered: Mutex<RememberedCharges>,
}

/// The outcome of each idempotency key, with the keys in the order they were first used so the
/// oldest can be forgotten.
#[derive(Debug)]
struct RememberedCharges {
    capacity: usize,
    outcomes: HashMap<String, RememberedCharge>,
    keys_oldest_first: VecDeque<String>,
}

#[derive(Debug)]
struct RememberedCharge {
    request: ChargeRequest,
    outcome: Result<Charge, PaymentError>,
}

impl SandboxGateway {
    /// A sandbox that remembers nothing yet.
    pub fn new() -> Self {
        SandboxGateway::with_capacity(MAXIMUM_REMEMBERED_KEYS)
    }

    fn with_capacity(capacity: usize) -> Self {
        debug_assert!(capacity > 0, "the sandbox must remember at least one key");
        SandboxGateway {
            remembered: Mutex::new(RememberedCharges {
                capacity,
                outcomes: HashMap::new(),
                keys_oldest_first: VecDeque::new(),
            }),
        }
    }
}

impl Default for SandboxGateway {
    fn default() -> Self {
        SandboxGateway::new()
    }
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    #[tracing::instrument(
        name = "sandbox_charge",
        skip_all,
        fields(idempotency_key = %request.idempotency_key, amount_cents = request.amount_cents)
    )]
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, PaymentError> {
        // The map only ever holds complete entries, so a panic elsewhere cannot leave it torn.
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let outcome = remembered.charge(request);
        match &outcome {
            Ok(charge) => tracing::debug!(charge_id = %charge.id, "sandbox charge succeeded"),
            Err(error) => tracing::debug!(error = %error, "sandbox charge failed"),
        }
        outcome
    }

    fn name(&self) -> &'static str {
        "sandbox"
    }
}

impl RememberedCharges {
    /// Replays the outcome remembered for the request's key, or decides and remembers a new one.
    fn charge(&mut self, request: &ChargeRequest) -> Result<Charge, PaymentError> {
        if let Some(remembered) = self.outcomes.get(&request.idempotency_key) {
            if remembered.request != *request {
                tracing::warn!("idempotency key reused with other parameters");
                return Err(PaymentError::Rejected(
                    IDEMPOTENCY_MISMATCH_MESSAGE.to_string(),
                ));
            }
            tracing::debug!("replaying remembered outcome");
            return remembered.outcome.clone();
        }
        let outcome = outcome_of(&request.source);
        self.remember(request.clone(), outcome.clone());
        outcome
    }

    fn remember(&mut self, request: ChargeRequest, outcome: Result<Charge, PaymentError>) {
        while self.keys_oldest_first.len() >= self.capacity {
            match self.keys_oldest_first.pop_front() {
                Some(oldest) => {
                    self.outcomes.remove(&oldest);
                }
                None => break,
            }
        }
        self.keys_oldest_first
            .push_back(request.idempotency_key.clone());
        self.outcomes.insert(
            request.idempotency_key.clone(),
            RememberedCharge { request, outcome },
        );
        debug_assert_eq!(self.outcomes.len(), self.keys_oldest_first.len());
        debug_assert!(self.outcomes.len() <= self.capacity);
    }
}

/// What Stripe's test mode does with each test token.
fn outcome_of(source: &str) -> Result<Charge, PaymentError> {
    match source {
        "tok_visa" | "tok_mastercard" | "tok_amex" => Ok(Charge {
            id: new_charge_id(),
        }),
        "tok_chargeDeclined" => Err(PaymentError::Declined(
            "Your card was declined.".to_string(),
        )),
        "tok_chargeDeclinedInsufficientFunds" => Err(PaymentError::Declined(
            "Your card has insufficient funds.".to_string(),
        )),
        _ => Err(PaymentError::InvalidToken),
    }
}

/// A charge id shaped like Stripe's: `ch_` and 24 random alphanumerics.
fn new_charge_id() -> String {
    let mut id = String::from("ch_");
    Alphanumeric.append_string(&mut rand::rng(), &mut id, CHARGE_ID_RANDOM_LENGTH);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(source: &str, idempotency_key: &str) -> ChargeRequest {
        ChargeRequest {
            amount_cents: 1250,
            currency: "usd".to_string(),
            source: source.to_string(),
            idempotency_key: idempotency_key.to_string(),
        }
    }

    fn assert_charge_id(charge: &Charge) {
        let random = charge
            .id
            .strip_prefix("ch_")
            .unwrap_or_else(|| panic!("charge id {:?} starts with ch_", charge.id));
        assert_eq!(random.len(), CHARGE_ID_RANDOM_LENGTH, "{:?}", charge.id);
        assert!(
            random.chars().all(|c| c.is_ascii_alphanumeric()),
            "{:?}",
            charge.id
        );
    }

    #[tokio::test]
    async fn succeeding_test_tokens_make_a_charge() {
        let gateway = SandboxGateway::new();
        for token in ["tok_visa", "tok_mastercard", "tok_amex"] {
            let charge = gateway
                .charge(&request(token, &format!("key-{token}")))
                .await
                .unwrap_or_else(|error| panic!("{token} should succeed, got {error:?}"));
            assert_charge_id(&charge);
        }
    }

    #[tokio::test]
    async fn declined_card_is_declined_with_stripes_message() {
        let gateway = SandboxGateway::new();
        let outcome = gateway.charge(&request("tok_chargeDeclined", "key")).await;
        assert_eq!(
            outcome,
            Err(PaymentError::Declined(
                "Your card was declined.".to_string()
            ))
        );
    }

    #[tokio::test]
    async fn insufficient_funds_is_declined_with_stripes_message() {
        let gateway = SandboxGateway::new();
        let outcome = gateway
            .charge(&request("tok_chargeDeclinedInsufficientFunds", "key"))
            .await;
        assert_eq!(
            outcome,
            Err(PaymentError::Declined(
                "Your card has insufficient funds.".to_string()
            ))
        );
    }

    #[tokio::test]
    async fn unknown_tokens_are_invalid() {
        let gateway = SandboxGateway::new();
        for token in ["", "tok_unknown", "TOK_VISA", "tok_visa ", "ch_123"] {
            let outcome = gateway
                .charge(&request(token, &format!("key-{token}")))
                .await;
            assert_eq!(outcome, Err(PaymentError::InvalidToken), "token {token:?}");
        }
    }

    #[tokio::test]
    async fn same_key_and_request_replays_the_same_charge() {
        let gateway = SandboxGateway::new();
        let first = gateway.charge(&request("tok_visa", "order-1")).await;
        let second = gateway.charge(&request("tok_visa", "order-1")).await;
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(first, second);
    }

    #[tokio::test]
    async fn same_key_and_request_replays_a_decline() {
        let gateway = SandboxGateway::new();
        let first = gateway
            .charge(&request("tok_chargeDeclined", "order-1"))
            .await;
        let second = gateway
            .charge(&request("tok_chargeDeclined", "order-1"))
            .await;
        assert!(matches!(first, Err(PaymentError::Declined(_))), "{first:?}");
        assert_eq!(first, second);
    }

    #[tokio::test]
    async fn different_keys_make_different_charges() {
        let gateway = SandboxGateway::new();
        let first = gateway
            .charge(&request("tok_visa", "order-1-attempt-1"))
            .await;
        let second = gateway
            .charge(&request("tok_visa", "order-1-attempt-2"))
            .await;
        assert_ne!(first.expect("first charge"), second.expect("second charge"));
    }

    #[tokio::test]
    async fn key_reused_with_other_parameters_is_rejected() {
        let gateway = SandboxGateway::new();
        let original = request("tok_visa", "order-1");
        let charge = gateway.charge(&original).await.expect("first charge");

        let other_amount = ChargeRequest {
            amount_cents: 999,
            ..original.clone()
        };
        let other_currency = ChargeRequest {
            currency: "eur".to_string(),
            ..original.clone()
        };
        let other_source = ChargeRequest {
            source: "tok_mastercard".to_string(),
            ..original.clone()
        };
        for changed in [other_amount, other_currency, other_source] {
            assert_eq!(
                gateway.charge(&changed).await,
                Err(PaymentError::Rejected(
                    IDEMPOTENCY_MISMATCH_MESSAGE.to_string()
                )),
                "{changed:?}"
            );
        }
        // The refused reuse does not disturb the original outcome.
        assert_eq!(gateway.charge(&original).await, Ok(charge));
    }

    #[tokio::test]
    async fn key_of_a_decline_cannot_be_reused_with_another_card() {
        let gateway = SandboxGateway::new();
        let _ = gateway
            .charge(&request("tok_chargeDeclined", "order-1"))
            .await;
        assert_eq!(
            gateway.charge(&request("tok_visa", "order-1")).await,
            Err(PaymentError::Rejected(
                IDEMPOTENCY_MISMATCH_MESSAGE.to_string()
            ))
        );
    }

    #[tokio::test]
    async fn oldest_keys_are_forgotten_beyond_capacity() {
        let gateway = SandboxGateway::with_capacity(2);
        let mut charges = Vec::new();
        for key in ["key-1", "key-2", "key-3"] {
            let charge = gateway.charge(&request("tok_visa", key)).await;
            charges.push(charge.expect("charge"));
        }

        // key-2 and key-3 are remembered: they replay their charges.
        assert_eq!(
            gateway.charge(&request("tok_visa", "key-2")).await,
            Ok(charges[1].clone())
        );
        assert_eq!(
            gateway.charge(&request("tok_visa", "key-3")).await,
            Ok(charges[2].clone())
        );
        // key-1 was forgotten: it makes a new charge, even with another card.
        let again = gateway
            .charge(&request("tok_mastercard", "key-1"))
            .await
            .expect("key-1 is usable again");
        assert_ne!(again, charges[0]);

        let remembered = gateway.remembered.lock().expect("lock");
        assert_eq!(remembered.outcomes.len(), 2);
        assert_eq!(remembered.keys_oldest_first.len(), 2);
        assert!(
            !remembered.outcomes.contains_key("key-2"),
            "key-2 is now the oldest"
        );
    }

    #[test]
    fn name_is_sandbox() {
        assert_eq!(SandboxGateway::default().name(), "sandbox");
    }
}
