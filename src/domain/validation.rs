//! Validation failures, one per invalid field, in the words the contract gives the client.
//!
//! Owns the shape of a refusal caused by bad input. It must not know about HTTP: the HTTP layer
//! turns a `ValidationErrors` into a 400 with one `{message, field}` entry per failure.

/// One invalid field and the message the client sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name in the request body (`email`, `price`, ...).
    pub field: &'static str,
    /// The contract's message, e.g. `Email must be valid`.
    pub message: String,
}

impl FieldError {
    /// A failure of `field` with `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// Every invalid field of one request, in field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("validation failed: {0:?}")]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// Records the failure of `result`, if any, and passes its value on.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    /// `Ok(())` when no field failed.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(error: FieldError) -> Self {
        ValidationErrors(vec![error])
    }
}
