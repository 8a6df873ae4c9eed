//! Identifiers: 12-byte ObjectIds written as 24 hex digits, and one typed id per entity.
//!
//! Owns parsing and printing of ids. It must not generate them: making an id needs a clock and
//! randomness, which live outside the pure domain (`crate::ids`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A MongoDB-style ObjectId: 4 bytes of seconds, 5 random bytes, a 3-byte counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 12]);

/// The text was not 24 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 24-hex-digit id")]
pub struct InvalidId;

impl ObjectId {
    /// Builds an id from its parts; ids made later in one process sort after earlier ones.
    pub fn from_parts(seconds: u32, random: [u8; 5], counter: u32) -> ObjectId {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        bytes[4..9].copy_from_slice(&random);
        bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        ObjectId(bytes)
    }

    /// The id of these raw bytes.
    pub fn from_bytes(bytes: [u8; 12]) -> ObjectId {
        ObjectId(bytes)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> [u8; 12] {
        self.0
    }

    /// Parses 24 hex digits (either case); anything else is refused.
    pub fn parse(text: &str) -> Result<ObjectId, InvalidId> {
        let text = text.as_bytes();
        if text.len() != 24 {
            return Err(InvalidId);
        }
        let mut bytes = [0u8; 12];
        for (index, pair) in text.chunks(2).enumerate() {
            bytes[index] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(ObjectId(bytes))
    }

    /// A stable hash of the id (FNV-1a), used to place it on a shard. Specified here rather than
    /// taken from `std` so every node and every release agrees.
    pub fn stable_hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.0 {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
}

fn hex_value(digit: u8) -> Result<u8, InvalidId> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(InvalidId),
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids are formatted for every event, key and log line: one write, not twelve.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 24];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        formatter.pad(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = InvalidId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ObjectId::parse(text)
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ObjectId::parse(&text).map_err(serde::de::Error::custom)
    }
}

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub ObjectId);

        impl $name {
            /// Parses 24 hex digits.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                ObjectId::parse(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $name::parse(text)
            }
        }
    };
}

typed_id!(
    /// Identifies a user.
    UserId
);
typed_id!(
    /// Identifies a ticket (and its actor).
    TicketId
);
typed_id!(
    /// Identifies an order (and its actor).
    OrderId
);
typed_id!(
    /// Identifies a payment.
    PaymentId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_hex() {
        let id = ObjectId::parse("5f1d7a2b3c4d5e6f70818293").unwrap();
        assert_eq!(id.to_string(), "5f1d7a2b3c4d5e6f70818293");
        assert_eq!(
            ObjectId::parse("5F1D7A2B3C4D5E6F70818293").unwrap(),
            id,
            "upper case is the same id"
        );
    }

    #[test]
    fn refuses_everything_else() {
        for text in [
            "",
            "abc",
            "5f1d7a2b3c4d5e6f7081829",
            "5f1d7a2b3c4d5e6f708182930",
            "zz1d7a2b3c4d5e6f70818293",
            "5f1d7a2b3c4d5e6f7081829é",
        ] {
            assert_eq!(ObjectId::parse(text), Err(InvalidId), "{text:?}");
        }
    }

    #[test]
    fn parts_sort_by_time_then_counter() {
        let first = ObjectId::from_parts(10, [9; 5], 2);
        let second = ObjectId::from_parts(10, [9; 5], 3);
        let third = ObjectId::from_parts(11, [0; 5], 0);
        assert!(first < second && second < third);
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::array::uniform12(any::<u8>())) {
            let id = ObjectId(bytes);
            prop_assert_eq!(ObjectId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
