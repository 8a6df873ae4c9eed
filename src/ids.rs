//! Makes new ObjectIds: seconds since the epoch, 5 random bytes per process, and a counter.
//!
//! Owns id generation (clock and randomness), which the pure domain must not do.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::domain::ObjectId;

/// Generates ids unique across processes (random part) and increasing within one (counter).
pub struct IdGenerator {
    random: [u8; 5],
    counter: AtomicU32,
}

impl IdGenerator {
    /// A generator with fresh randomness.
    pub fn new() -> IdGenerator {
        let random: [u8; 5] = rand::random();
        IdGenerator {
            random,
            counter: AtomicU32::new(rand::random::<u32>() & 0x00ff_ffff),
        }
    }

    /// The next id.
    pub fn next(&self) -> ObjectId {
        let seconds = u32::try_from(crate::clock::now().seconds()).unwrap_or(u32::MAX);
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        ObjectId::from_parts(seconds, self.random, counter)
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        IdGenerator::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let generator = IdGenerator::new();
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| generator.next()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
