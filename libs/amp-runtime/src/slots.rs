//! Concurrency bounded per key (a tenant, a destination) inside a shared pool: one slow
//! destination can hold at most `per_key` of the pool's slots, so it cannot stall the work
//! of every other (a tarpit that answers after the whole timeout).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// In-flight counts per key, each at most `per_key`. Keys with nothing in flight take no
/// memory.
#[derive(Debug)]
pub struct KeyedSlots {
    per_key: usize,
    busy: Mutex<HashMap<String, usize>>,
}

/// One slot of a key, given back when dropped.
#[derive(Debug)]
pub struct KeyedSlot {
    slots: Arc<KeyedSlots>,
    key: String,
}

impl KeyedSlots {
    /// At most `per_key` (at least 1) in flight per key.
    pub fn new(per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            per_key: per_key.max(1),
            busy: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `key`, or `None` when the key already has `per_key` in flight.
    pub fn try_acquire(self: &Arc<Self>, key: &str) -> Option<KeyedSlot> {
        let mut busy = self.busy.lock();
        let n = busy.entry(key.to_owned()).or_insert(0);
        if *n >= self.per_key {
            return None;
        }
        *n += 1;
        Some(KeyedSlot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }

    /// How many are in flight for `key`.
    pub fn in_flight(&self, key: &str) -> usize {
        self.busy.lock().get(key).copied().unwrap_or(0)
    }
}

impl Drop for KeyedSlot {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock();
        if let Some(n) = busy.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_key_and_released_on_drop() {
        let s = KeyedSlots::new(2);
        let a = s.try_acquire("slow").expect("one");
        let b = s.try_acquire("slow").expect("two");
        assert!(s.try_acquire("slow").is_none());
        assert!(s.try_acquire("other").is_some());
        drop(a);
        assert_eq!(s.in_flight("slow"), 1);
        drop(b);
        assert_eq!(s.in_flight("slow"), 0);
        assert!(s.busy.lock().is_empty(), "idle keys take no memory");
    }
}
