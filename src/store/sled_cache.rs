//! A bounded cache of the sled store's hot values (client records and token index entries),
//! so that reads of a large population hit memory at the granularity of one record instead of
//! one sled leaf (issue #19).
//!
//! Why: sled 0.34 caches whole tree nodes. A leaf holds 8–16 records, so a random read over a
//! large population pulls in (and decodes) a leaf to serve one record, and its page cache of
//! `cache_capacity` bytes, which charges each page its on-disk size rounded up to a power of
//! two, holds about 2,000 leaves in 32 MiB: a small fraction of the records a large population
//! actually reads (BENCHMARKS.md, "sled's cache: why it outgrows `cache_capacity_bytes`").
//! This cache holds single values and evicts with the CLOCK algorithm (one reference bit per
//! entry, a hand per shard).
//!
//! Bound: every entry is charged what it costs in real memory, not just its key and value: the
//! key's and the value's heap blocks (allocator header and rounding included), its slot in the
//! shard's entry vector (twice: a `Vec` may hold up to twice its length), and its slot in the
//! shard's hash index (at the lowest load factor the index has after growing). The bytes charged
//! never exceed the capacity (`HotCache::bytes`).
//!
//! Consistency: every committed change invalidates its keys before the write is acknowledged
//! (`Shared::apply_in`), and a reader fills the cache only if no invalidation hit the key's
//! shard since it took its [`Ticket`] before reading sled, so a value read before a change is
//! never cached after it. While the store is failed the cache is bypassed (the undo log is the
//! authority); it is cleared on failure and on reopen.

use sled::IVec;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

/// Shards (each its own lock and its own CLOCK hand).
const SHARDS: usize = 16;
/// Trees the cache keeps values of (indexes of [`Shard::index`]).
pub(super) const TREES: usize = 2;

/// One cached value.
struct Entry {
    tree: u8,
    /// Shared with the shard's index (one heap block).
    key: Arc<[u8]>,
    value: IVec,
    referenced: bool,
}

/// Heap block size the allocator hands out for `n` requested bytes (glibc: an 8-byte header,
/// 16-byte granules, 32 bytes at least).
fn block(n: usize) -> usize {
    ((n + 8).div_ceil(16) * 16).max(32)
}

/// What one entry costs in memory, in bytes.
fn cost(key: &[u8], value: &IVec) -> usize {
    // The key: one `Arc<[u8]>` (two counters and the bytes).
    let key_block = block(16 + key.len());
    // The value: inline in the `IVec` up to 22 bytes, else its own `Arc<[u8]>` (possibly shared
    // with sled's cached leaf; charged anyway).
    let value_block = if value.len() <= 22 {
        0
    } else {
        block(16 + value.len())
    };
    // Its slot in `entries` (up to twice its size while the vector has spare capacity), and in
    // the index: hashbrown keeps at most 7/8 of its buckets full and doubles when it grows, so
    // after growing an item may own 16/7 buckets, each its slot plus one control byte.
    let entry_slot = 2 * std::mem::size_of::<Entry>();
    let index_slot = (std::mem::size_of::<(Arc<[u8]>, u32)>() + 1) * 16 / 7 + 1;
    key_block + value_block + entry_slot + index_slot
}

#[derive(Default)]
struct Shard {
    /// Key → position in `entries`, one map per tree.
    index: [HashMap<Arc<[u8]>, u32>; TREES],
    /// The cached values, densely; the CLOCK hand walks them.
    entries: Vec<Entry>,
    hand: usize,
    /// Bytes charged (`cost`) for the entries held.
    bytes: usize,
    /// Bumped by every invalidation, so a fill that raced one is dropped.
    epoch: u64,
}

impl Shard {
    /// Drop the entry at `at` (the last one moves into its place).
    fn remove_at(&mut self, at: usize) {
        let gone = self.entries.swap_remove(at);
        self.index[usize::from(gone.tree)].remove(&gone.key);
        self.bytes -= cost(&gone.key, &gone.value);
        if let Some(moved) = self.entries.get(at) {
            if let Some(slot) = self.index[usize::from(moved.tree)].get_mut(&moved.key) {
                *slot = at as u32;
            }
        }
    }

    fn remove(&mut self, tree: u8, key: &[u8]) {
        if let Some(at) = self.index[usize::from(tree)].get(key).copied() {
            self.remove_at(at as usize);
        }
    }

    /// Evict by CLOCK until at most `capacity` bytes are charged: an entry read since the hand
    /// last passed it gets a second chance.
    fn evict_to(&mut self, capacity: usize) {
        while self.bytes > capacity && !self.entries.is_empty() {
            let at = self.hand % self.entries.len();
            if self.entries[at].referenced {
                self.entries[at].referenced = false;
                self.hand = at + 1;
            } else {
                // The entry moved into `at` is looked at next.
                self.remove_at(at);
                self.hand = at;
            }
        }
    }

    fn clear(&mut self) {
        self.epoch += 1;
        for index in &mut self.index {
            *index = HashMap::new();
        }
        self.entries = Vec::new();
        self.hand = 0;
        self.bytes = 0;
    }
}

/// A ticket for one fill: the shard's epoch when the reader started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket(u64);

/// What a lookup found: the cached value, or the ticket to fill it with after reading sled.
pub(super) enum Probe {
    Hit(IVec),
    Miss(Ticket),
}

/// The cache; `capacity` 0 disables it (every lookup misses, nothing is kept).
pub(super) struct HotCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
}

impl HotCache {
    /// A cache that charges at most `capacity` bytes (see the module docs for what is charged).
    pub(super) fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity / SHARDS,
        }
    }

    /// Whether the cache keeps anything at all.
    pub(super) fn enabled(&self) -> bool {
        self.shard_capacity > 0
    }

    fn shard(&self, tree: u8, key: &[u8]) -> MutexGuard<'_, Shard> {
        let mut h = DefaultHasher::new();
        tree.hash(&mut h);
        key.hash(&mut h);
        let i = (h.finish() as usize) % SHARDS;
        // A panic while a shard was held (none is expected: nothing in here panics on input)
        // cannot leave a stale value behind: values change only under invalidation.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value of `key` in `tree`, or, under the same lock, the ticket a reader takes
    /// before reading it from sled.
    pub(super) fn probe(&self, tree: u8, key: &[u8]) -> Probe {
        if !self.enabled() {
            return Probe::Miss(Ticket(0));
        }
        let mut shard = self.shard(tree, key);
        match shard.index[usize::from(tree)].get(key).copied() {
            Some(at) => {
                let entry = &mut shard.entries[at as usize];
                entry.referenced = true;
                Probe::Hit(entry.value.clone())
            }
            None => Probe::Miss(Ticket(shard.epoch)),
        }
    }

    /// The cached value of `key` in `tree`.
    #[cfg(test)]
    pub(super) fn get(&self, tree: u8, key: &[u8]) -> Option<IVec> {
        match self.probe(tree, key) {
            Probe::Hit(value) => Some(value),
            Probe::Miss(_) => None,
        }
    }

    /// Take a ticket before reading `key` from sled.
    #[cfg(test)]
    pub(super) fn ticket(&self, tree: u8, key: &[u8]) -> Ticket {
        match self.probe(tree, key) {
            Probe::Hit(_) => Ticket(self.shard(tree, key).epoch),
            Probe::Miss(ticket) => ticket,
        }
    }

    /// Keep `value`, read from sled after `ticket` was taken, unless an invalidation of its
    /// shard came in between (or it alone costs more than a shard holds).
    pub(super) fn fill(&self, tree: u8, key: &[u8], value: IVec, ticket: Ticket) {
        let size = cost(key, &value);
        if size > self.shard_capacity {
            return;
        }
        let mut shard = self.shard(tree, key);
        if shard.epoch != ticket.0 || shard.index[usize::from(tree)].contains_key(key) {
            return;
        }
        let capacity = self.shard_capacity;
        // Make room first, so the charged bytes never exceed the capacity.
        shard.evict_to(capacity - size);
        let key: Arc<[u8]> = Arc::from(key);
        let at = shard.entries.len() as u32;
        shard.index[usize::from(tree)].insert(key.clone(), at);
        shard.entries.push(Entry {
            tree,
            key,
            value,
            referenced: false,
        });
        shard.bytes += size;
    }

    /// Forget `key` in `tree` (its value is changing).
    pub(super) fn invalidate(&self, tree: u8, key: &[u8]) {
        if !self.enabled() {
            return;
        }
        let mut shard = self.shard(tree, key);
        shard.epoch += 1;
        shard.remove(tree, key);
    }

    /// Forget everything (the store failed or was reopened); fills already under way are
    /// dropped.
    pub(super) fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Bytes charged for what is held.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(cache: &HotCache, tree: u8, key: &[u8], value: &[u8]) {
        let ticket = cache.ticket(tree, key);
        cache.fill(tree, key, IVec::from(value), ticket);
    }

    #[test]
    fn a_fill_is_a_hit_and_trees_are_apart() {
        let cache = HotCache::new(1 << 20);
        assert_eq!(cache.get(0, b"a"), None);
        fill(&cache, 0, b"a", b"value of a");
        assert_eq!(cache.get(0, b"a").as_deref(), Some(&b"value of a"[..]));
        assert_eq!(cache.get(1, b"a"), None, "trees are apart");
        fill(&cache, 1, b"a", b"other");
        assert_eq!(cache.get(0, b"a").as_deref(), Some(&b"value of a"[..]));
        assert_eq!(cache.get(1, b"a").as_deref(), Some(&b"other"[..]));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_fill_after_an_invalidation_of_its_shard_is_dropped() {
        let cache = HotCache::new(1 << 20);
        let ticket = cache.ticket(0, b"a");
        cache.invalidate(0, b"a");
        cache.fill(0, b"a", IVec::from(&b"old"[..]), ticket);
        assert_eq!(cache.get(0, b"a"), None, "the value read before the change");
        let ticket = cache.ticket(0, b"a");
        cache.clear();
        cache.fill(0, b"a", IVec::from(&b"old"[..]), ticket);
        assert_eq!(cache.get(0, b"a"), None, "a clear drops fills under way");
        fill(&cache, 0, b"a", b"new");
        assert_eq!(cache.get(0, b"a").as_deref(), Some(&b"new"[..]));
        cache.invalidate(0, b"a");
        assert_eq!(cache.get(0, b"a"), None);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_cache_stays_within_its_bytes_and_keeps_what_is_read_again() {
        let value = vec![7u8; 600];
        let one = cost(b"client000", &IVec::from(&value[..]));
        let capacity = SHARDS * 8 * one;
        let cache = HotCache::new(capacity as u64);
        let key = |i: u32| format!("client{i:03}").into_bytes();
        // A hot key read between fills survives a stream of cold ones.
        let hot = b"hot client".to_vec();
        fill(&cache, 0, &hot, &value);
        for i in 0..2000 {
            fill(&cache, 0, &key(i), &value);
            assert!(cache.bytes() <= capacity, "{} > {capacity}", cache.bytes());
            assert!(cache.get(0, &hot).is_some(), "hot key evicted after {i}");
        }
        assert!(cache.len() > SHARDS * 4, "{} entries held", cache.len());
        // What is held is findable, and what was evicted is gone from the index.
        let held = (0..2000)
            .filter(|i| cache.get(0, &key(*i)).is_some())
            .count();
        assert_eq!(held + 1, cache.len());
        cache.clear();
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.get(0, &hot), None);
    }

    #[test]
    fn an_entry_is_charged_at_least_what_it_takes() {
        let value = IVec::from(vec![1u8; 600]);
        let charged = cost(&[0; 36], &value);
        assert!(charged >= 36 + 600 + std::mem::size_of::<Entry>() + 24);
        // Small values live inside the IVec.
        assert!(cost(b"k", &IVec::from(&b"small"[..])) < cost(b"k", &value));
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let cache = HotCache::new(0);
        fill(&cache, 0, b"a", b"v");
        assert_eq!(cache.get(0, b"a"), None);
        assert_eq!(cache.bytes(), 0);
    }
}
