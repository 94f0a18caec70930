//! The sled-backed `ClientStore`: the only file that knows sled.
//!
//! Layout: tree `clients` maps `client_id` → versioned record; tree `rat` maps the registration
//! access token's HMAC tag → `client_id`; tree `counters` maps a counter name → big-endian u64
//! (initial access token uses, `jti` replay, policy quotas); tree `meta` holds the server key.
//! A `commit` is atomic over the first three trees (and the event trees): the flusher thread
//! applies every commit queued so far in one sled transaction, each commit checked before it
//! writes so that a refused one fails alone (`Shared::apply_group`).
//!
//! Durability: sled makes writes durable only on `flush` (otherwise a background fsync every
//! 500 ms). The flusher thread takes every write and waiter queued so far, applies the writes,
//! flushes once and answers them all, so N concurrent writers cost one transaction and one
//! flush (group commit).
//!
//! Cache: `storage.cache_capacity_bytes` is split between a record cache of our own
//! (`sled_cache.rs`, `storage.record_cache_percent` of it: single client records and token index
//! entries, each charged what it takes in memory) and sled's page cache (the rest), which caches
//! whole leaves of 8–16 records and counts their on-disk size. A read that hits the record cache
//! takes no sled lookup and no handles lock.
//!
//! Storage failure (disk full, I/O error): sled turns any I/O error into a sticky global error
//! that lasts until the database is reopened, and its in-memory trees keep the writes whose flush
//! failed. So on the first failed write or flush the store turns *failed*:
//! - writes are refused at once (`StoreError::Unavailable`, a 503 upstream);
//! - reads keep working and show the last durable state: every write since the last successful
//!   flush left its before-image in an undo log, and reads of those keys answer from it, so a
//!   client whose update got a 503 still reads its old registration with its old token;
//! - the flusher thread probes the data directory for free space with backoff and, once a probe
//!   file of `PROBE_BYTES` can be written and synced, closes and reopens the database, which
//!   recovers exactly what was flushed. No operator action is needed.

use super::sled_cache::{HotCache, Probe};
use super::sled_events::{self, EventTrees};
use super::{
    BoxFuture, Change, ClientRecord, ClientStore, CounterOp, OpenError, StoreError, WriteBatch,
};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use sled::IVec;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Free space a recovery probe must be able to write before the database is reopened: a few of
/// sled's 512 KiB log segments, so the reopened database can write its snapshot and a new segment.
const PROBE_BYTES: usize = 2 << 20;
/// First and longest wait between recovery attempts.
const RECOVERY_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));
/// How long `SledStore::open` waits for a lock that a just-closed store in this process may still
/// hold (another process holding it fails after this too, just as clearly).
const OPEN_PATIENCE: Duration = Duration::from_millis(500);
/// Smallest page cache given to sled whatever the split (its LRU has 256 shards, and its index
/// nodes should stay cached).
const SLED_MIN_CACHE: u64 = 256 << 10;
/// Default share of `storage.cache_capacity_bytes` for the record cache, in percent.
pub const DEFAULT_RECORD_CACHE_PERCENT: u8 = 75;
/// Name of the probe file inside the data directory.
const PROBE_FILE: &str = "space-probe.tmp";

/// Create the data directory (and missing parents) mode 0700, and tighten an existing one to
/// 0700: it holds every client's secret hash and the RAT index, which no other local user needs
/// (issue #12 item 14). The files sled creates inside it later inherit the process umask, but
/// cannot be reached through a 0700 directory.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    builder.create(dir)?;
    Ok(())
}

/// Set every regular file under `dir` to 0600 (sled creates `conf`, `db` and `blobs/` with the
/// umask, typically 0644).
fn private_files(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
                private_files(&entry.path())?;
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// One open database and its trees.
struct Handles {
    db: sled::Db,
    clients: sled::Tree,
    rats: sled::Tree,
    counters: sled::Tree,
    meta: sled::Tree,
    /// The audit trail and the webhook outbox (`sled_events.rs`).
    events: EventTrees,
}

impl Handles {
    /// Open, waiting up to `patience` while the directory's lock is held. sled finishes writing
    /// a closed database's last buffers on its background thread pool, so the lock outlives the
    /// last handle by a moment: reopening in the same process (recovery, tests) must wait for it.
    fn open_waiting(
        dir: &Path,
        cache_capacity: u64,
        patience: Duration,
    ) -> Result<Self, OpenError> {
        let deadline = Instant::now() + patience;
        loop {
            match Self::open(dir, cache_capacity) {
                Err(OpenError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn open(dir: &Path, cache_capacity: u64) -> Result<Self, OpenError> {
        let shown = dir.display().to_string();
        private_dir(dir).map_err(|e| OpenError::Other(shown.clone(), e.to_string()))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            // The flusher thread below decides when to fsync; sled's own timer stays as a
            // backstop for anything written outside a request.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    OpenError::Locked(shown.clone())
                }
                sled::Error::Io(ref io) if io.to_string().contains("lock") => {
                    OpenError::Locked(shown.clone())
                }
                other => OpenError::Other(shown.clone(), other.to_string()),
            })?;
        let open_tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| OpenError::Other(shown.clone(), e.to_string()))
        };
        let clients = open_tree("clients")?;
        let rats = open_tree("rat")?;
        let counters = open_tree("counters")?;
        let meta = open_tree("meta")?;
        let events =
            EventTrees::open(&db).map_err(|e| OpenError::Other(shown.clone(), e.to_string()))?;
        private_files(dir).map_err(|e| OpenError::Other(shown.clone(), e.to_string()))?;
        // The count lets an operator notice a store that came back smaller than it was: sled
        // stops recovery at the first bad checksum in its log, which it cannot tell from a torn
        // final write, so damage to the files loses later records without an error.
        tracing::info!(
            clients = clients.len(),
            // sled's `was_recovered`: the files existed (any restart, clean or not), not that
            // anything needed repair; named so an operator does not read it as a crash.
            existing = db.was_recovered(),
            dir = %shown,
            "store opened"
        );
        Ok(Self {
            db,
            clients,
            rats,
            counters,
            meta,
            events,
        })
    }
}

/// Which tree an undo entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TreeId {
    Clients,
    Rats,
    Counters,
}

/// A value as it was before a write (`None`: absent).
type Before = Option<Vec<u8>>;
/// Where a value lives: tree and key.
type Slot = (TreeId, Vec<u8>);
/// Unflushed writes of one slot: sequence number and before-image, oldest first.
type Versions = VecDeque<(u64, Before)>;
/// One change a write makes: tree, key, value before.
type Undo = (TreeId, Vec<u8>, Before);

/// Before-images of every write since the last successful flush, oldest first per key.
#[derive(Default)]
struct UndoLog {
    /// Sequence number of the latest recorded write.
    last: u64,
    entries: HashMap<Slot, Versions>,
}

impl UndoLog {
    fn record(&mut self, changes: Vec<Undo>) {
        self.last += 1;
        for (tree, key, before) in changes {
            self.entries
                .entry((tree, key))
                .or_default()
                .push_back((self.last, before));
        }
    }

    /// Writes up to `seq` are on stable storage.
    fn forget_through(&mut self, seq: u64) {
        self.entries.retain(|_, versions| {
            while versions.front().is_some_and(|(s, _)| *s <= seq) {
                versions.pop_front();
            }
            !versions.is_empty()
        });
    }

    /// The durable value of `key` if a later write has not been flushed: the before-image of
    /// the oldest unflushed write.
    fn durable_value(&self, tree: TreeId, key: &[u8]) -> Option<Before> {
        self.entries
            .get(&(tree, key.to_vec()))
            .and_then(|versions| versions.front())
            .map(|(_, before)| before.clone())
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// State shared by the store and its flusher thread.
struct Shared {
    dir: PathBuf,
    cache_capacity: u64,
    /// `None` only while a reopen is failing.
    handles: RwLock<Option<Arc<Handles>>>,
    /// A write or flush failed; writes are refused until the database has been reopened.
    failed: AtomicBool,
    /// Held across every write so sequence numbers follow commit order.
    undo: Mutex<UndoLog>,
    /// Told the size of each group commit (the `registrar_store_commit_batch_size` metric).
    events: std::sync::OnceLock<Arc<super::StoreEvents>>,
    /// Hot client records and token index entries (`sled_cache.rs`).
    hot: HotCache,
}

impl Shared {
    /// The handles for a read on the calling thread, if that cannot wait: `None` while the
    /// store is failed (reads then see the durable state through the undo log) or while the
    /// handles lock is taken (a reopen holds it for as long as opening takes).
    fn handles_now(&self) -> Option<Arc<Handles>> {
        if self.is_failed() {
            return None;
        }
        self.handles.try_read().ok().and_then(|h| h.clone())
    }

    fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        self.handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable("the store is being reopened after a storage error".into())
            })
    }

    fn undo(&self) -> MutexGuard<'_, UndoLog> {
        self.undo.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn fail(&self, cause: &StoreError) {
        let first = !self.failed.swap(true, Ordering::AcqRel);
        // After `failed` is set: reads bypass the cache from now on, and a fill whose ticket
        // predates this is refused.
        self.hot.clear();
        if first {
            tracing::error!(%cause, "store write failed; refusing writes, serving the last durable state to reads, and reopening once the data directory has space again");
        }
    }

    /// Refuse writes while failed.
    fn writable(&self) -> Result<(), StoreError> {
        if self.is_failed() {
            Err(StoreError::Unavailable(
                "the store refuses writes until storage recovers".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// The durable value of `key` while failed, from the undo log.
    fn durable_override(&self, tree: TreeId, key: &[u8]) -> Option<Before> {
        if self.is_failed() {
            self.undo().durable_value(tree, key)
        } else {
            None
        }
    }

    /// Apply one batch in one transaction over the clients, token index and counters: refuse
    /// it while failed, record its before-images unless it was refused (lost compare-and-swap,
    /// exhausted counter), and fail the store on a storage error. May wait for the handles
    /// lock while the database is reopened: off the async workers.
    fn apply(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.writable()?;
        let handles = self.handles()?;
        let encoded = batch
            .change
            .as_ref()
            .map(encode_change)
            .transpose()?
            .flatten();
        let mut outcomes = self.apply_group(&handles, &[(batch, encoded.as_deref())]);
        outcomes.pop().unwrap_or(Ok(()))
    }

    /// Apply `batches` (each with the bytes [`encode_change`] made of its change) in one sled
    /// transaction, and say how each fared. The transaction changes sled's in-memory trees and
    /// log buffer only; writing and syncing the log is the flusher's `flush`.
    ///
    /// One transaction for a whole group, not one per batch, because sled seals and writes its
    /// log buffer twice around every transaction (`pin_log` in sled's page cache: a write and
    /// a `sync_file_range` on its I/O pool each time), which cost more than everything else a
    /// registration does (BENCHMARKS.md). A batch refused in the normal course leaves no trace
    /// and the others go on (see [`apply_batch`]); if the transaction aborts anyway (damage
    /// found while writing), each batch is applied again alone, so that only the batch that
    /// meets the damage fails.
    fn apply_group(
        &self,
        handles: &Handles,
        batches: &[(&WriteBatch, Option<&[u8]>)],
    ) -> Vec<Result<(), StoreError>> {
        if let Err(e) = self.writable() {
            return batches.iter().map(|_| Err(e.clone())).collect();
        }
        // sled runs every transaction under one global lock: the records were encoded before
        // it, so that the lock is held for the tree work only.
        let prepared: Vec<Option<PreparedChange<'_>>> = batches
            .iter()
            .map(|(batch, encoded)| {
                batch
                    .change
                    .as_ref()
                    .map(|c| PreparedChange::new(c, *encoded))
            })
            .collect();
        // Per batch: its outcome and the before-images of what it wrote.
        let outcomes = RefCell::new(Vec::with_capacity(batches.len()));
        // Held across the transaction so sequence numbers follow commit order.
        let mut undo = self.undo();
        let ev = &handles.events;
        let result = (
            &handles.clients,
            &handles.rats,
            &handles.counters,
            &ev.audit,
            &ev.outbox,
            &ev.dead,
            &ev.meta,
        )
            .transaction(|(clients, rats, counters, audit, outbox, dead, events)| {
                let trees = TxTrees {
                    clients,
                    rats,
                    counters,
                    audit,
                    outbox,
                    dead,
                    events,
                };
                // sled may run the closure again after a conflict: start afresh.
                let mut outcomes = outcomes.borrow_mut();
                outcomes.clear();
                for ((batch, _), change) in batches.iter().zip(&prepared) {
                    let mut before = Vec::new();
                    match apply_batch(&trees, batch, change.as_ref(), &mut before) {
                        Ok(outcome) => outcomes.push((outcome, before)),
                        Err(e) => {
                            // Kept for the undo log if this is a storage error.
                            outcomes.push((Ok(()), before));
                            return Err(e);
                        }
                    }
                }
                Ok(())
            });
        let outcomes = outcomes.into_inner();
        match result {
            Ok(()) | Err(TransactionError::Storage(_)) => {
                // Before the writes are acknowledged: no later read answers an old value from
                // the record cache, and a read that raced a change does not cache it.
                for (tree, key, _) in outcomes.iter().flat_map(|(_, before)| before) {
                    if let Some(slot) = cached_tree(*tree) {
                        self.hot.invalidate(slot, key);
                    }
                }
                // A storage error may have left part of the writes in memory: keep their
                // before-images so reads mask them, like any other unflushed write.
                let mut answers = Vec::with_capacity(outcomes.len());
                for (outcome, before) in outcomes {
                    if outcome.is_ok() {
                        undo.record(before);
                    }
                    answers.push(outcome);
                }
                drop(undo);
                if let Err(TransactionError::Storage(e)) = result {
                    let e = io(e);
                    self.fail(&e);
                    return batches.iter().map(|_| Err(e.clone())).collect();
                }
                answers
            }
            Err(TransactionError::Abort(e)) => {
                drop(undo);
                if batches.len() == 1 {
                    if matches!(e, StoreError::Unavailable(_)) {
                        self.fail(&e);
                    }
                    return vec![Err(e)];
                }
                batches
                    .iter()
                    .flat_map(|one| self.apply_group(handles, std::slice::from_ref(one)))
                    .collect()
            }
        }
    }

    /// Flush; on success the undo log forgets what is now durable.
    fn flush(&self) -> Result<(), StoreError> {
        let through = self.undo().last;
        let result = self.handles()?.db.flush().map(|_| ()).map_err(io);
        match &result {
            Ok(()) => self.undo().forget_through(through),
            Err(e) => self.fail(e),
        }
        result
    }

    /// Reopen the database if the data directory has room again. True when writable again.
    fn try_recover(&self) -> bool {
        if let Err(e) = probe_space(&self.dir) {
            tracing::debug!(error = %e, "store still cannot write");
            return false;
        }
        let mut slot = self.handles.write().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = slot.take() {
            // Readers clone the handles only for the length of one call; with the write lock
            // held no new clone can appear, so wait for those to finish.
            loop {
                match Arc::try_unwrap(old) {
                    Ok(handles) => {
                        drop(handles);
                        break;
                    }
                    Err(still_shared) => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        match Handles::open_waiting(&self.dir, self.cache_capacity, Duration::from_secs(5)) {
            Ok(handles) => {
                *slot = Some(Arc::new(handles));
                self.undo().clear();
                self.hot.clear();
                self.failed.store(false, Ordering::Release);
                tracing::warn!("store reopened after a storage error; writes accepted again");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "store reopen failed; retrying");
                false
            }
        }
    }
}

/// Write and sync `PROBE_BYTES` in the data directory, then remove the file.
fn probe_space(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..PROBE_BYTES / chunk.len() {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// A `ClientStore` on sled.
pub struct SledStore {
    shared: Arc<Shared>,
    flush_tx: Option<mpsc::Sender<Job>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl SledStore {
    /// Open (or create) the store in `dir` with caches of `cache_capacity` bytes in all, the
    /// default share of them ([`DEFAULT_RECORD_CACHE_PERCENT`]) for the record cache.
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Self, OpenError> {
        Self::open_with(dir, cache_capacity, DEFAULT_RECORD_CACHE_PERCENT)
    }

    /// Open (or create) the store in `dir` with caches of `cache_capacity` bytes in all:
    /// `record_cache_percent` of them (at most 100) for the record cache of single records and
    /// token index entries, the rest (at least `SLED_MIN_CACHE`) for sled's page cache.
    pub fn open_with(
        dir: &Path,
        cache_capacity: u64,
        record_cache_percent: u8,
    ) -> Result<Self, OpenError> {
        let (record_cache, cache_capacity) = split_cache(cache_capacity, record_cache_percent);
        let handles = Handles::open_waiting(dir, cache_capacity, OPEN_PATIENCE)?;
        let _ = std::fs::remove_file(dir.join(PROBE_FILE)); // left over from a crash mid-probe
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            cache_capacity,
            handles: RwLock::new(Some(Arc::new(handles))),
            failed: AtomicBool::new(false),
            undo: Mutex::new(UndoLog::default()),
            events: std::sync::OnceLock::new(),
            hot: HotCache::new(record_cache),
        });
        let (flush_tx, flush_rx) = mpsc::channel::<Job>();
        let flusher_shared = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || group_commit(&flusher_shared, flush_rx))
            .map_err(|e| OpenError::Other(dir.display().to_string(), e.to_string()))?;
        Ok(Self {
            shared,
            flush_tx: Some(flush_tx),
            flusher: Some(flusher),
        })
    }

    /// Flush everything now (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush()
    }

    /// Apply a batch without waiting for it to be durable: for bulk loading (the bench
    /// loader), which calls [`SledStore::flush`] once at the end. Blocking.
    pub fn apply_unflushed(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.shared.apply(batch)
    }

    /// Number of stored clients, synchronously (tools that open a stopped server's store).
    pub fn len(&self) -> usize {
        self.shared.handles().map_or(0, |h| h.clients.len())
    }

    /// Whether no client is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check every stored record: it decodes, and the token index and the records agree (each
    /// index entry names a client whose record carries that tag, and each client with a tag has
    /// its index entry). Returns the number of clients. The crash and disk-full tests run it on
    /// the directory a killed or stopped server left behind.
    pub fn verify(&self) -> Result<usize, StoreError> {
        let handles = self.shared.handles()?;
        let mut count = 0;
        for entry in handles.clients.iter() {
            let (key, bytes) = entry.map_err(io)?;
            let record = ClientRecord::decode(&bytes)?;
            if record.client_id.as_bytes() != key.as_ref() {
                return Err(StoreError::Corrupt(format!(
                    "record {} stored under another key",
                    record.client_id
                )));
            }
            for tag in record.rat_tags() {
                let owner = handles.rats.get(tag).map_err(io)?;
                if owner.as_deref() != Some(key.as_ref()) {
                    return Err(StoreError::Corrupt(format!(
                        "client {} has no token index entry",
                        record.client_id
                    )));
                }
            }
            count += 1;
        }
        for entry in handles.rats.iter() {
            let (tag, owner) = entry.map_err(io)?;
            let record = handles.clients.get(&owner).map_err(io)?;
            let record = record.map(|b| ClientRecord::decode(&b)).transpose()?;
            if record.is_none_or(|r| !r.rat_tags().any(|t| t == tag.as_ref())) {
                return Err(StoreError::Corrupt(format!(
                    "token index entry for {} does not match a record",
                    String::from_utf8_lossy(&owner)
                )));
            }
        }
        Ok(count)
    }
}

/// A write queued for the flusher, which applies it with every other write queued meanwhile
/// in one transaction (see [`Shared::apply_group`]) and answers once it is durable.
struct Queued {
    batch: WriteBatch,
    /// The change's record, encoded on the writer's thread ([`encode_change`]).
    encoded: Option<Vec<u8>>,
    waiter: Waiter,
}

/// What the flusher is asked.
enum Job {
    /// Answer once everything written before the request is durable.
    Flush(Waiter),
    /// Apply this write, then answer once it is durable.
    Apply(Box<Queued>),
}

/// The flusher loop: it takes every job queued so far, applies their writes in one
/// transaction, flushes once and answers them all (group commit). A write refused in the
/// normal course (lost compare-and-swap, exhausted counter) is answered before the flush. While
/// the store is failed, jobs are refused at once and the loop tries to recover with backoff.
///
/// There is no linger before a group: the writes that arrive while one group is applied and
/// flushed make the next. (When each writer ran its own transaction, a 1.5 ms linger gathered
/// larger groups and paid; with the group applied here it left the cores idle: 32 concurrent
/// registrations went from 7.0–7.9k/s with it to 11.2–13.0k/s without, A/B 2026-12-02.)
fn group_commit(shared: &Shared, rx: mpsc::Receiver<Job>) {
    let mut backoff = RECOVERY_BACKOFF.0;
    let mut next_attempt = Instant::now();
    // Whether this loop has already seen the store failed: a failure noticed for the first time
    // (set by another thread) waits one backoff before the first reopen, so the jobs queued
    // right behind the failure are refused rather than raced by a reopen.
    let mut seen_failed = false;
    loop {
        let failed = shared.is_failed();
        if failed && !seen_failed {
            next_attempt = next_attempt.max(Instant::now() + RECOVERY_BACKOFF.0);
        }
        seen_failed = failed;
        let first = if failed {
            let now = Instant::now();
            if now >= next_attempt {
                if shared.try_recover() {
                    backoff = RECOVERY_BACKOFF.0;
                } else {
                    next_attempt = now + backoff;
                    backoff = (backoff * 2).min(RECOVERY_BACKOFF.1);
                }
                continue;
            }
            match rx.recv_timeout(next_attempt - now) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(first) => first,
                Err(_) => return,
            }
        };
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let mut waiters = Vec::with_capacity(jobs.len());
        let mut writes = Vec::new();
        for job in jobs {
            match job {
                Job::Flush(waiter) => waiters.push(waiter),
                Job::Apply(queued) => writes.push(*queued),
            }
        }
        if !writes.is_empty() {
            let outcomes = match shared.writable().and_then(|()| shared.handles()) {
                Ok(handles) => {
                    let batches: Vec<(&WriteBatch, Option<&[u8]>)> = writes
                        .iter()
                        .map(|q| (&q.batch, q.encoded.as_deref()))
                        .collect();
                    shared.apply_group(&handles, &batches)
                }
                Err(e) => writes.iter().map(|_| Err(e.clone())).collect(),
            };
            for (queued, outcome) in writes.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => waiters.push(queued.waiter),
                    Err(e) => {
                        let _ = queued.waiter.send(Err(e));
                    }
                }
            }
        }
        if waiters.is_empty() {
            continue;
        }
        let result = shared.writable().and_then(|()| shared.flush());
        if let Some(events) = shared.events.get() {
            (events.commit_batch)(waiters.len());
        }
        if result.is_err() {
            next_attempt = Instant::now();
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

fn counter_value(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The transactional views of every tree a batch writes.
struct TxTrees<'a> {
    clients: &'a TransactionalTree,
    rats: &'a TransactionalTree,
    counters: &'a TransactionalTree,
    audit: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    dead: &'a TransactionalTree,
    events: &'a TransactionalTree,
}

/// One counter as a batch leaves it: key, value before the batch, value after, and whether
/// any operation wrote it (a release at zero does not).
type PlannedCounter<'a> = (&'a [u8], Option<IVec>, u64, bool);

/// The counter operations of a batch, computed without writing: `Ok(Err(exhausted))` when a
/// `Take` finds its counter at the limit. sled's transactional `get` sees the transaction's
/// earlier writes (an earlier batch of a group commit), and operations on one key compose.
fn plan_counters<'a>(
    counters: &TransactionalTree,
    ops: &'a [CounterOp],
) -> TxResult<Result<Vec<PlannedCounter<'a>>, StoreError>> {
    let mut planned: Vec<PlannedCounter<'a>> = Vec::new();
    for op in ops {
        let key = match op {
            CounterOp::Take { key, .. }
            | CounterOp::Release { key }
            | CounterOp::Set { key, .. } => key,
        };
        let k = key.as_bytes();
        let slot = match planned.iter().position(|(p, ..)| *p == k) {
            Some(i) => i,
            None => {
                let current = counters.get(k)?;
                let value = counter_value(current.as_deref());
                planned.push((k, current, value, false));
                planned.len() - 1
            }
        };
        let value = planned[slot].2;
        let next = match op {
            CounterOp::Take { limit, .. } if value >= *limit => {
                return Ok(Err(StoreError::CounterExhausted(key.clone())))
            }
            CounterOp::Take { .. } => value + 1,
            CounterOp::Release { .. } if value == 0 => continue,
            CounterOp::Release { .. } => value - 1,
            CounterOp::Set { value, .. } => *value,
        };
        planned[slot].2 = next;
        planned[slot].3 = true;
    }
    Ok(Ok(planned))
}

/// A batch's record change as its transaction applies it: the record as it will be stored
/// (an update's revision already advanced) and its encoded bytes, made before the transaction.
struct PreparedChange<'a> {
    client_id: &'a str,
    /// The revision the stored record must have; `None` for an insert.
    expected: Option<u64>,
    /// The record after the change (its revision is the encoded one's) and its bytes; `None`
    /// for a delete.
    new: Option<(&'a ClientRecord, &'a [u8])>,
}

/// The bytes a change stores (`None` for a delete), encoded before the transaction: on the
/// writer's thread, not under sled's transaction lock or on the flusher.
fn encode_change(change: &Change) -> Result<Option<Vec<u8>>, StoreError> {
    match change {
        Change::Insert(record) => record.encode().map(Some),
        Change::Update {
            expected_revision,
            record,
        } => record.encode_at(expected_revision + 1).map(Some),
        Change::Delete { .. } => Ok(None),
    }
}

impl<'a> PreparedChange<'a> {
    /// `change` with the bytes [`encode_change`] made of it.
    fn new(change: &'a Change, encoded: Option<&'a [u8]>) -> Self {
        match change {
            Change::Insert(record) => Self {
                client_id: &record.client_id,
                expected: None,
                new: encoded.map(|bytes| (record, bytes)),
            },
            Change::Update {
                expected_revision,
                record,
            } => Self {
                client_id: &record.client_id,
                expected: Some(*expected_revision),
                new: encoded.map(|bytes| (record, bytes)),
            },
            Change::Delete {
                client_id,
                expected_revision,
            } => Self {
                client_id,
                expected: Some(*expected_revision),
                new: None,
            },
        }
    }
}

/// A checked record change: the stored bytes it replaces and their record.
type Checked = (Option<IVec>, Option<ClientRecord>);

/// The revision check of a record change, without writing: the stored record it replaces, or
/// `Ok(Err(refusal))` (a lost compare-and-swap, a stored record that does not decode).
fn check_change(
    clients: &TransactionalTree,
    change: &PreparedChange<'_>,
) -> TxResult<Result<Checked, StoreError>> {
    let current = clients.get(change.client_id.as_bytes())?;
    let old = match (change.expected, &current) {
        (None, None) => None,
        (Some(revision), Some(bytes)) => match ClientRecord::decode(bytes) {
            Ok(old) if old.revision == revision => Some(old),
            Ok(_) => return Ok(Err(StoreError::Conflict)),
            Err(e) => return Ok(Err(e)),
        },
        _ => return Ok(Err(StoreError::Conflict)),
    };
    Ok(Ok((current, old)))
}

/// The writes of a checked record change: the record and its token index entries together.
fn write_change(
    trees: &TxTrees<'_>,
    change: &PreparedChange<'_>,
    (current, old): Checked,
    before: &mut Vec<Undo>,
) -> TxResult<()> {
    let key = change.client_id.as_bytes();
    before.push((TreeId::Clients, key.to_vec(), current.map(|v| v.to_vec())));
    let old_tags: Vec<&[u8]> = old.iter().flat_map(ClientRecord::rat_tags).collect();
    let new_tags: Vec<&[u8]> = change.new.iter().flat_map(|(r, _)| r.rat_tags()).collect();
    for tag in old_tags.iter().filter(|t| !new_tags.contains(t)) {
        before.push((TreeId::Rats, tag.to_vec(), Some(key.to_vec())));
        trees.rats.remove(*tag)?;
    }
    for tag in new_tags.iter().filter(|t| !old_tags.contains(t)) {
        let previous = trees.rats.insert(*tag, key)?;
        before.push((TreeId::Rats, tag.to_vec(), previous.map(|v| v.to_vec())));
    }
    match change.new {
        Some((_, bytes)) => {
            trees.clients.insert(key, bytes)?;
        }
        None => {
            trees.clients.remove(key)?;
        }
    }
    Ok(())
}

/// One batch inside a transaction, its own or a group commit's. Everything that can refuse a
/// batch in the normal course (a counter at its limit, a lost compare-and-swap) is checked
/// before it writes anything, so a refused batch, `Ok(Err(refusal))`, leaves the transaction
/// as it found it and the other batches of the group go on. An `Err` aborts the whole
/// transaction (storage, or damage found while writing the events).
fn apply_batch(
    trees: &TxTrees<'_>,
    batch: &WriteBatch,
    change: Option<&PreparedChange<'_>>,
    before: &mut Vec<Undo>,
) -> TxResult<Result<(), StoreError>> {
    let counters = match plan_counters(trees.counters, &batch.counters)? {
        Ok(planned) => planned,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let checked = match change.map(|c| check_change(trees.clients, c)).transpose()? {
        Some(Err(refusal)) => return Ok(Err(refusal)),
        Some(Ok(checked)) => Some(checked),
        None => None,
    };
    for (key, current, value, written) in counters {
        if written {
            before.push((TreeId::Counters, key.to_vec(), current.map(|v| v.to_vec())));
            trees.counters.insert(key, value.to_be_bytes().to_vec())?;
        }
    }
    if let (Some(change), Some(checked)) = (change, checked) {
        write_change(trees, change, checked, before)?;
    }
    // The chain head is read and rewritten here, in the change's transaction, so concurrent
    // commits cannot fork the chain.
    sled_events::append(trees.audit, trees.events, &batch.audit)?;
    sled_events::apply_outbox(trees.outbox, trees.dead, trees.events, &batch.outbox)?;
    Ok(Ok(()))
}

/// `(record cache, sled page cache)` bytes out of `total`: `percent` (at most 100) of it for the
/// record cache, and at least `SLED_MIN_CACHE` (or all of `total`, if less) left for sled.
fn split_cache(total: u64, percent: u8) -> (u64, u64) {
    let percent = u64::from(percent.min(100));
    let record = total / 100 * percent + total % 100 * percent / 100;
    let sled = (total - record).max(SLED_MIN_CACHE.min(total));
    (total - sled, sled)
}

/// The record cache's tree number for `tree`, if the cache keeps its values.
fn cached_tree(tree: TreeId) -> Option<u8> {
    match tree {
        TreeId::Clients => Some(0),
        TreeId::Rats => Some(1),
        TreeId::Counters => None,
    }
}

fn tree_of(handles: &Handles, tree: TreeId) -> &sled::Tree {
    match tree {
        TreeId::Clients => &handles.clients,
        TreeId::Rats => &handles.rats,
        TreeId::Counters => &handles.counters,
    }
}

/// The value of `key` in `tree` if the record cache has it and the store is not failed: no
/// sled call and no handles lock, so the caller answers at once.
fn cached(shared: &Shared, tree: TreeId, key: &[u8]) -> Option<IVec> {
    let slot = cached_tree(tree)?;
    if shared.is_failed() {
        return None;
    }
    match shared.hot.probe(slot, key) {
        Probe::Hit(value) => Some(value),
        Probe::Miss(_) => None,
    }
}

/// Tell the metrics (`StoreEvents::record_cache`) how one lookup that consulted the record
/// cache was answered.
fn count_lookup(shared: &Shared, tree: TreeId, hit: bool) {
    let name = match tree {
        TreeId::Clients => "clients",
        TreeId::Rats => "rat",
        TreeId::Counters => return,
    };
    if let Some(events) = shared.events.get() {
        (events.record_cache)(name, hit);
    }
}

/// The live value of `key` in `tree` (the caller found no durable override): from the record
/// cache, else from sled, keeping it in the cache unless a change of its shard raced the read.
/// While the store is failed the cache is neither read nor filled.
fn lookup(
    shared: &Shared,
    handles: &Handles,
    tree: TreeId,
    key: &[u8],
) -> Result<Option<IVec>, StoreError> {
    let live = tree_of(handles, tree);
    let Some(slot) = cached_tree(tree).filter(|_| shared.hot.enabled()) else {
        return live.get(key).map_err(io);
    };
    if shared.is_failed() {
        return live.get(key).map_err(io);
    }
    // One probe: the hit, or the ticket for the fill. The ticket before the failure check: a
    // failure after it clears the cache, which refuses this fill; one before it is seen here.
    let ticket = match shared.hot.probe(slot, key) {
        Probe::Hit(value) => {
            count_lookup(shared, tree, true);
            return Ok(Some(value));
        }
        Probe::Miss(ticket) => ticket,
    };
    count_lookup(shared, tree, false);
    if shared.is_failed() {
        return live.get(key).map_err(io);
    }
    let value = live.get(key).map_err(io)?;
    if let Some(v) = &value {
        shared.hot.fill(slot, key, v.clone(), ticket);
    }
    Ok(value)
}

fn read_client(shared: &Shared, key: &[u8]) -> Result<Option<ClientRecord>, StoreError> {
    match shared.durable_override(TreeId::Clients, key) {
        Some(durable) => durable.map(|b| ClientRecord::decode(&b)).transpose(),
        None => read_client_in(shared, &*shared.handles()?, key),
    }
}

/// The record under `key` in the live trees (no durable override).
fn read_client_in(
    shared: &Shared,
    handles: &Handles,
    key: &[u8],
) -> Result<Option<ClientRecord>, StoreError> {
    lookup(shared, handles, TreeId::Clients, key)?
        .map(|v| ClientRecord::decode(&v))
        .transpose()
}

fn read_rat_owner(shared: &Shared, tag: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    match shared.durable_override(TreeId::Rats, tag) {
        Some(durable) => Ok(durable),
        None => read_rat_owner_in(shared, &*shared.handles()?, tag),
    }
}

fn read_rat_owner_in(
    shared: &Shared,
    handles: &Handles,
    tag: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(lookup(shared, handles, TreeId::Rats, tag)?.map(|v| v.to_vec()))
}

/// The client that holds `tag` (current or previous RAT), read through `handles`.
fn client_by_rat_in(
    shared: &Shared,
    handles: &Handles,
    tag: &[u8],
) -> Result<Option<ClientRecord>, StoreError> {
    let Some(owner) = read_rat_owner_in(shared, handles, tag)? else {
        return Ok(None);
    };
    // Index and records change in one transaction, so they agree; a record that does not carry
    // the tag (damage `verify` would report) is not this token's client.
    Ok(read_client_in(shared, handles, &owner)?.filter(|r| r.rat_tags().any(|t| t == tag)))
}

/// The client that holds `tag`, answered from the record cache alone (`None`: not all of it is
/// cached, ask sled).
fn cached_client_by_rat(
    shared: &Shared,
    tag: &[u8],
) -> Option<Result<Option<ClientRecord>, StoreError>> {
    let owner = cached(shared, TreeId::Rats, tag)?;
    let bytes = cached(shared, TreeId::Clients, &owner)?;
    // Counted only when both hit; otherwise `lookup` counts each tree as it answers.
    count_lookup(shared, TreeId::Rats, true);
    count_lookup(shared, TreeId::Clients, true);
    Some(ClientRecord::decode(&bytes).map(|r| Some(r).filter(|r| r.rat_tags().any(|t| t == tag))))
}

fn read_counter(shared: &Shared, key: &[u8]) -> Result<u64, StoreError> {
    let bytes = match shared.durable_override(TreeId::Counters, key) {
        Some(durable) => durable,
        None => shared
            .handles()?
            .counters
            .get(key)
            .map_err(io)?
            .map(|v| v.to_vec()),
    };
    Ok(counter_value(bytes.as_deref()))
}

/// Up to `limit` items of `tree` in key order after `after` (exclusive): `read` turns a key into
/// its item, or `None` to leave the key out.
fn keyset<T>(
    shared: &Shared,
    tree: TreeId,
    after: Option<Vec<u8>>,
    limit: usize,
    read: impl Fn(&[u8]) -> Result<Option<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    use std::ops::Bound;
    let start = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    let handles = shared.handles()?;
    let tree = tree_of(&handles, tree);
    let mut page = Vec::new();
    for entry in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
        if page.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(io)?;
        if let Some(item) = read(&key)? {
            page.push(item);
        }
    }
    Ok(page)
}

/// The key under which `meta` keeps the RAT server key.
const SERVER_KEY: &[u8] = b"server_key";

impl SledStore {
    /// Run a sled call on tokio's blocking pool: sled may wait on disk (a cache miss, a log
    /// write), which must not stall an actix worker.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&shared))
                .await
                .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task: {e}"))))
        })
    }

    /// Resolves when every write that returned before the call is on stable storage (one
    /// shared flush for all the writers queued meanwhile: group commit).
    fn durable(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.ask(Job::Flush(tx), rx)
    }

    /// Queue `batch` for the flusher, which applies it with the writes queued meanwhile in one
    /// transaction and resolves once it is durable (or refused).
    fn queue(&self, batch: WriteBatch) -> BoxFuture<'static, Result<(), StoreError>> {
        let encoded = match batch.change.as_ref().map(encode_change).transpose() {
            Ok(encoded) => encoded.flatten(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (tx, rx) = oneshot::channel();
        let queued = Queued {
            batch,
            encoded,
            waiter: tx,
        };
        self.ask(Job::Apply(Box::new(queued)), rx)
    }

    fn ask(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<(), StoreError>>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let sent = match &self.flush_tx {
            Some(flush_tx) => flush_tx.send(job).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError::Unavailable("flusher stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("flusher stopped".into())))
        })
    }
}

impl ClientStore for SledStore {
    fn observe(&self, events: Arc<super::StoreEvents>) {
        let _ = self.shared.events.set(events);
    }

    fn get(&self, client_id: &str) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>> {
        // Lookups run on the calling thread while the store is healthy (see `handles_now`): a
        // sled get of a cached page takes microseconds, less than the two thread hand-offs of
        // the blocking pool (BENCHMARKS.md, issue #19). A page that is not cached is read with
        // one pread, from the OS page cache in the common case. Writes and flushes stay on
        // the blocking pool.
        // A record cache hit needs neither (`sled_cache.rs`).
        if let Some(bytes) = cached(&self.shared, TreeId::Clients, client_id.as_bytes()) {
            count_lookup(&self.shared, TreeId::Clients, true);
            return Box::pin(std::future::ready(ClientRecord::decode(&bytes).map(Some)));
        }
        if let Some(handles) = self.shared.handles_now() {
            return Box::pin(std::future::ready(read_client_in(
                &self.shared,
                &handles,
                client_id.as_bytes(),
            )));
        }
        let id = client_id.to_owned();
        self.blocking(move |shared| read_client(shared, id.as_bytes()))
    }

    fn get_by_rat(
        &self,
        rat_tag: &[u8],
    ) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>> {
        if rat_tag.is_empty() {
            return Box::pin(std::future::ready(Ok(None)));
        }
        // On the calling thread while healthy, as `get`; from the record cache alone when it
        // holds both the index entry and the record.
        if let Some(found) = cached_client_by_rat(&self.shared, rat_tag) {
            return Box::pin(std::future::ready(found));
        }
        if let Some(handles) = self.shared.handles_now() {
            return Box::pin(std::future::ready(client_by_rat_in(
                &self.shared,
                &handles,
                rat_tag,
            )));
        }
        let tag = rat_tag.to_vec();
        self.blocking(move |shared| {
            let Some(owner) = read_rat_owner(shared, &tag)? else {
                return Ok(None);
            };
            // Index and records change in one transaction, so they agree; a record that does
            // not carry the tag (damage `verify` would report) is not this token's client.
            Ok(read_client(shared, &owner)?.filter(|r| r.rat_tags().any(|t| t == tag)))
        })
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        // The flusher thread applies every write queued meanwhile in one transaction and
        // flushes once (`group_commit`); the record is encoded here, on the writer's thread.
        self.queue(batch)
    }

    fn counter(&self, key: &str) -> BoxFuture<'_, Result<u64, StoreError>> {
        let key = key.to_owned();
        self.blocking(move |shared| read_counter(shared, key.as_bytes()))
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.blocking(|shared| Ok(shared.handles()?.clients.len() as u64))
    }

    fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ClientRecord>, StoreError>> {
        let after = after.map(|a| a.as_bytes().to_vec());
        // While failed, each listed record is its durable version (a client deleted but not yet
        // flushed is missing from the listing until the store recovers).
        self.blocking(move |shared| {
            keyset(shared, TreeId::Clients, after, limit, |key| {
                read_client(shared, key)
            })
        })
    }

    fn scan_counters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        let after = after.map(|a| a.as_bytes().to_vec());
        self.blocking(move |shared| {
            keyset(shared, TreeId::Counters, after, limit, |key| {
                let value = read_counter(shared, key)?;
                Ok(Some((String::from_utf8_lossy(key).into_owned(), value)))
            })
        })
    }

    fn server_key(&self, proposed: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        let stored = self.blocking(move |shared| {
            let meta = shared.handles()?.meta.clone();
            if let Some(existing) = meta.get(SERVER_KEY).map_err(io)? {
                return Ok((existing.to_vec(), false));
            }
            shared.writable()?;
            match meta
                .compare_and_swap(SERVER_KEY, None::<&[u8]>, Some(proposed.as_slice()))
                .map_err(io)?
            {
                Ok(()) => Ok((proposed, true)),
                Err(lost) => Ok((lost.current.map(|v| v.to_vec()).unwrap_or_default(), false)),
            }
        });
        Box::pin(async move {
            let (key, created) = stored.await?;
            if created {
                self.durable().await?;
            }
            Ok(key)
        })
    }

    fn writable(&self) -> bool {
        !self.shared.is_failed()
    }
}

impl crate::events::AuditLog for SledStore {
    fn audit_scan(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::events::StoredAudit>, StoreError>> {
        self.blocking(move |shared| {
            sled_events::scan(&shared.handles()?.events.audit, after, limit)
        })
    }

    fn audit_prune(
        &self,
        cutoff: i64,
        now: i64,
    ) -> BoxFuture<'_, Result<Option<crate::events::Checkpoint>, StoreError>> {
        let pruned = self.blocking(move |shared| {
            shared.writable()?;
            sled_events::prune(&shared.handles()?.events, cutoff, now)
        });
        Box::pin(async move {
            let checkpoint = pruned.await?;
            self.durable().await?;
            Ok(checkpoint)
        })
    }
}

impl crate::events::OutboxQueue for SledStore {
    fn outbox_pending(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::events::OutboxRow>, StoreError>> {
        let rows =
            self.blocking(move |shared| sled_events::pending(&shared.handles()?.events, limit));
        Box::pin(async move {
            let rows = rows.await?;
            if !rows.is_empty() {
                // A row is visible as soon as its transaction is in sled, a moment before the
                // flush makes it durable: wait for that flush, so no webhook reports a change
                // that a crash could still undo.
                self.durable().await?;
            }
            Ok(rows)
        })
    }

    fn outbox_dead(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::events::OutboxRow>, StoreError>> {
        self.blocking(move |shared| sled_events::dead(&shared.handles()?.events, after, limit))
    }

    fn outbox_apply(
        &self,
        ops: Vec<crate::events::OutboxOp>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        // The delivery worker's outcomes join the flusher's group like any write.
        self.queue(WriteBatch {
            outbox: ops,
            ..WriteBatch::default()
        })
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if !self.shared.is_failed() {
            let _ = self.shared.flush();
        }
        // Closing the channel ends the flusher; joining it releases its handle on the database,
        // so the directory can be opened again at once (a restart in the same process).
        self.flush_tx.take();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract::record;
    use super::*;

    fn insert(r: &ClientRecord) -> WriteBatch {
        WriteBatch::change(Change::Insert(r.clone()))
    }

    #[tokio::test]
    async fn sled_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        super::super::contract::all(&store).await;
    }

    /// Whether the record cache holds `key` of `tree`.
    fn held(store: &SledStore, tree: TreeId, key: &[u8]) -> bool {
        let slot = cached_tree(tree).unwrap();
        store.shared.hot.get(slot, key).is_some()
    }

    /// Every lookup that consults the record cache is counted once, by tree and outcome, for
    /// `registrar_store_record_cache_lookups_total`.
    #[tokio::test]
    async fn record_cache_lookups_are_counted_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        store.observe(Arc::new(super::super::StoreEvents {
            commit_batch: Box::new(|_| {}),
            retry: Box::new(|| {}),
            group_redo: Box::new(|| {}),
            record_cache: Box::new(move |tree, hit| log.lock().unwrap().push((tree, hit))),
        }));
        store.commit(insert(&record("k", 3))).await.unwrap();
        let take = || std::mem::take(&mut *seen.lock().unwrap());
        assert!(take().is_empty(), "a write looks nothing up");
        store.get("k").await.unwrap().unwrap();
        assert_eq!(take(), [("clients", false)]);
        store.get("k").await.unwrap().unwrap();
        assert_eq!(take(), [("clients", true)]);
        // The token's entry is not cached yet, the record is.
        store.get_by_rat(&[3; 32]).await.unwrap().unwrap();
        assert_eq!(take(), [("rat", false), ("clients", true)]);
        store.get_by_rat(&[3; 32]).await.unwrap().unwrap();
        assert_eq!(take(), [("rat", true), ("clients", true)]);
        // Absent: a miss, not cached.
        assert!(store.get("nobody").await.unwrap().is_none());
        assert_eq!(take(), [("clients", false)]);
    }

    /// Reads answered from the record cache follow every kind of write: insert, update (a new
    /// token, the old one kept as the previous during a grace, then dropped), delete and
    /// re-insert; a lost compare-and-swap changes nothing.
    #[tokio::test]
    async fn cached_reads_see_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        assert!(store.shared.hot.enabled());
        store.commit(insert(&record("k", 3))).await.unwrap();
        assert!(store.get("nobody").await.unwrap().is_none());
        for _ in 0..2 {
            assert_eq!(store.get("k").await.unwrap().unwrap().revision, 1);
            assert_eq!(
                store.get_by_rat(&[3; 32]).await.unwrap().unwrap().client_id,
                "k"
            );
        }
        assert!(held(&store, TreeId::Clients, b"k"), "the reads filled it");
        assert!(held(&store, TreeId::Rats, &[3; 32]));
        assert!(
            !held(&store, TreeId::Clients, b"nobody"),
            "absence is not kept"
        );

        // Rotation: a new token, the old one still valid as the previous.
        let mut rotated = record("k", 4);
        rotated.previous_rat_tag = Some(vec![3; 32]);
        store
            .commit(WriteBatch::change(Change::Update {
                expected_revision: 1,
                record: rotated,
            }))
            .await
            .unwrap();
        assert!(!held(&store, TreeId::Clients, b"k"), "invalidated");
        assert_eq!(store.get("k").await.unwrap().unwrap().revision, 2);
        assert_eq!(
            store.get_by_rat(&[3; 32]).await.unwrap().unwrap().revision,
            2
        );
        assert_eq!(
            store.get_by_rat(&[4; 32]).await.unwrap().unwrap().revision,
            2
        );
        // The grace ends: the previous token is dropped.
        store
            .commit(WriteBatch::change(Change::Update {
                expected_revision: 2,
                record: record("k", 4),
            }))
            .await
            .unwrap();
        assert!(store.get_by_rat(&[3; 32]).await.unwrap().is_none());
        assert!(!held(&store, TreeId::Rats, &[3; 32]));
        assert_eq!(
            store.get_by_rat(&[4; 32]).await.unwrap().unwrap().revision,
            3
        );
        // A lost compare-and-swap leaves the cached value.
        let stale = WriteBatch::change(Change::Update {
            expected_revision: 1,
            record: record("k", 9),
        });
        assert!(matches!(
            store.commit(stale).await,
            Err(StoreError::Conflict)
        ));
        assert!(held(&store, TreeId::Clients, b"k"));
        assert_eq!(store.get("k").await.unwrap().unwrap().revision, 3);

        store
            .commit(WriteBatch::change(Change::Delete {
                client_id: "k".into(),
                expected_revision: 3,
            }))
            .await
            .unwrap();
        assert!(store.get("k").await.unwrap().is_none());
        assert!(store.get_by_rat(&[4; 32]).await.unwrap().is_none());
        assert!(!held(&store, TreeId::Clients, b"k"));
        assert!(!held(&store, TreeId::Rats, &[4; 32]));
        store.commit(insert(&record("k", 5))).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().rat_tag, vec![5; 32]);
        assert_eq!(
            store.get_by_rat(&[5; 32]).await.unwrap().unwrap().revision,
            1
        );
        assert_eq!(store.verify().unwrap(), 1);
    }

    /// A read that took its ticket before a change and read sled before it too does not leave
    /// the old value cached: the commit's invalidation bumped the shard's epoch.
    #[tokio::test]
    async fn a_read_racing_a_change_does_not_cache_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        store.commit(insert(&record("k", 3))).await.unwrap();
        let slot = cached_tree(TreeId::Clients).unwrap();
        // The reader's steps of `lookup`, with the commit in between.
        let ticket = store.shared.hot.ticket(slot, b"k");
        let old = store.shared.handles().unwrap().clients.get(b"k").unwrap();
        store
            .commit(WriteBatch::change(Change::Update {
                expected_revision: 1,
                record: record("k", 4),
            }))
            .await
            .unwrap();
        store.shared.hot.fill(slot, b"k", old.unwrap(), ticket);
        assert!(
            !held(&store, TreeId::Clients, b"k"),
            "the old value was kept"
        );
        assert_eq!(store.get("k").await.unwrap().unwrap().revision, 2);
        assert!(held(&store, TreeId::Clients, b"k"));
    }

    /// While failed the cache is cleared and neither read nor filled (reads answer the durable
    /// state); after the reopen it fills again.
    #[tokio::test]
    async fn a_failed_store_bypasses_the_record_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        let a = record("a", 1);
        store.commit(insert(&a)).await.unwrap();
        store.commit(insert(&record("c", 3))).await.unwrap();
        let mut b = a.clone();
        b.rat_tag = vec![2; 32];
        store
            .shared
            .apply(&WriteBatch::change(Change::Update {
                expected_revision: 1,
                record: b,
            }))
            .unwrap();
        // The unflushed update is what the live trees (and so the cache) show.
        assert_eq!(store.get("a").await.unwrap().unwrap().revision, 2);
        assert!(held(&store, TreeId::Clients, b"a"));
        store
            .shared
            .fail(&StoreError::Unavailable("simulated: no space left".into()));
        assert_eq!(store.shared.hot.bytes(), 0, "cleared on failure");
        assert_eq!(store.get("a").await.unwrap(), Some(a.clone()), "durable");
        assert_eq!(store.get_by_rat(&[1; 32]).await.unwrap(), Some(a));
        assert_eq!(store.get("c").await.unwrap().unwrap().revision, 1);
        assert_eq!(store.shared.hot.bytes(), 0, "nothing filled while failed");
        // A refused write wakes the flusher, which reopens the database (this disk has room).
        assert!(store.commit(insert(&record("d", 4))).await.is_err());
        for _ in 0..250 {
            if store.writable() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(store.writable(), "the store did not reopen");
        assert_eq!(store.get("c").await.unwrap().unwrap().revision, 1);
        assert!(held(&store, TreeId::Clients, b"c"));
    }

    /// The store contract holds with the record cache off (the other contract test has it on),
    /// and an off cache keeps nothing.
    #[tokio::test]
    async fn sled_store_meets_the_contract_without_the_record_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open_with(dir.path(), 1 << 20, 0).unwrap();
        assert!(!store.shared.hot.enabled());
        super::super::contract::all(&store).await;
        store.commit(insert(&record("k", 3))).await.unwrap();
        assert!(store.get("k").await.unwrap().is_some());
        assert!(!held(&store, TreeId::Clients, b"k"));
    }

    #[test]
    fn the_budget_split_leaves_sled_its_minimum() {
        assert_eq!(split_cache(32 << 20, 75), (24 << 20, 8 << 20));
        assert_eq!(split_cache(32 << 20, 0), (0, 32 << 20));
        assert_eq!(
            split_cache(32 << 20, 100),
            ((32 << 20) - SLED_MIN_CACHE, SLED_MIN_CACHE)
        );
        assert_eq!(split_cache(32 << 20, 200), split_cache(32 << 20, 100));
        assert_eq!(split_cache(1000, 75), (0, 1000));
        let (record, sled) = split_cache(u64::MAX, 99);
        assert_eq!(record.checked_add(sled), Some(u64::MAX));
    }

    #[tokio::test]
    async fn records_counters_and_the_key_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            let batch = insert(&record("k", 3)).with_counters([CounterOp::Take {
                key: "c".into(),
                limit: 9,
            }]);
            store.commit(batch).await.unwrap();
            store.server_key(vec![5; 32]).await.unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().rat_tag, vec![3; 32]);
        assert_eq!(store.counter("c").await.unwrap(), 1);
        assert_eq!(store.server_key(vec![6; 32]).await.unwrap(), vec![5; 32]);
    }

    /// A store written before revisions existed (records in the exact byte form of that
    /// version, no `revision` member) opens, and its records update from revision 0.
    #[tokio::test]
    async fn records_without_a_revision_update_from_revision_zero() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            let handles = store.shared.handles().unwrap();
            let old = br#"{"client_id":"old","client_id_issued_at":1,"rat_tag":[4,4],"metadata":{"client_name":"x"},"updated_at":1}"#;
            let mut bytes = vec![1u8]; // the format byte of that version
            bytes.extend_from_slice(old);
            handles.clients.insert("old", bytes).unwrap();
            handles.rats.insert([4u8, 4], "old").unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let old = store.get("old").await.unwrap().unwrap();
        assert_eq!(old.revision, 0);
        let mut new = old.clone();
        new.metadata.insert("client_name".into(), "y".into());
        store
            .commit(WriteBatch::change(Change::Update {
                expected_revision: 0,
                record: new,
            }))
            .await
            .unwrap();
        let stored = store.get_by_rat(&[4, 4]).await.unwrap().unwrap();
        assert_eq!(stored.revision, 1);
        assert_eq!(stored.metadata["client_name"], "y");
    }

    #[test]
    fn the_undo_log_keeps_the_oldest_unflushed_before_image() {
        let mut log = UndoLog::default();
        log.record(vec![(TreeId::Clients, b"a".to_vec(), None)]);
        let first = log.last;
        log.record(vec![(TreeId::Clients, b"a".to_vec(), Some(b"v1".to_vec()))]);
        log.record(vec![(TreeId::Rats, b"t".to_vec(), Some(b"a".to_vec()))]);
        assert_eq!(log.durable_value(TreeId::Clients, b"a"), Some(None));
        assert_eq!(log.durable_value(TreeId::Clients, b"b"), None);
        log.forget_through(first);
        assert_eq!(
            log.durable_value(TreeId::Clients, b"a"),
            Some(Some(b"v1".to_vec()))
        );
        assert_eq!(
            log.durable_value(TreeId::Rats, b"t"),
            Some(Some(b"a".to_vec()))
        );
        log.forget_through(log.last);
        assert!(log.entries.is_empty());
    }

    /// Apply `batches` as one group commit of the flusher would, without the flush.
    fn group(store: &SledStore, batches: &[WriteBatch]) -> Vec<Result<(), StoreError>> {
        let encoded: Vec<Option<Vec<u8>>> = batches
            .iter()
            .map(|b| b.change.as_ref().and_then(|c| encode_change(c).unwrap()))
            .collect();
        let items: Vec<(&WriteBatch, Option<&[u8]>)> = batches
            .iter()
            .zip(&encoded)
            .map(|(b, e)| (b, e.as_deref()))
            .collect();
        let handles = store.shared.handles().unwrap();
        store.shared.apply_group(&handles, &items)
    }

    #[tokio::test]
    async fn a_group_commit_refuses_one_batch_and_applies_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let a = record("a", 1);
        store.commit(insert(&a)).await.unwrap();
        let take = |limit| CounterOp::Take {
            key: "n".into(),
            limit,
        };
        let mut a2 = a.clone();
        a2.metadata.insert("client_name".into(), "second".into());
        let update = |expected_revision, record: &ClientRecord| {
            WriteBatch::change(Change::Update {
                expected_revision,
                record: record.clone(),
            })
        };
        let b = record("b", 2);
        let outcomes = group(
            &store,
            &[
                // Seen by the later batches of the same transaction: the counter reaches its
                // limit of 1, and the record is at revision 2.
                insert(&record("c", 3)).with_counters([take(1)]),
                update(1, &a2),
                // Refused: the counter is at its limit, so this batch's insert must not happen.
                insert(&b).with_counters([take(1)]),
                // Refused: revision 1 is gone (the update above made 2).
                update(1, &a2).with_counters([CounterOp::Set {
                    key: "m".into(),
                    value: 7,
                }]),
                update(2, &a2),
            ],
        );
        assert_eq!(
            outcomes,
            vec![
                Ok(()),
                Ok(()),
                Err(StoreError::CounterExhausted("n".into())),
                Err(StoreError::Conflict),
                Ok(()),
            ]
        );
        assert_eq!(store.counter("n").await.unwrap(), 1);
        assert_eq!(
            store.counter("m").await.unwrap(),
            0,
            "refused batch left no counter"
        );
        assert_eq!(store.get("b").await.unwrap(), None);
        assert_eq!(store.get_by_rat(&[2; 32]).await.unwrap(), None);
        let stored = store.get("a").await.unwrap().unwrap();
        assert_eq!(stored.revision, 3);
        assert_eq!(stored.metadata, a2.metadata);
        assert!(store.get("c").await.unwrap().is_some());
        // The group is durable after one flush, as the flusher does it.
        drop(store);
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get("a").await.unwrap().unwrap().revision, 3);
        assert_eq!(store.counter("n").await.unwrap(), 1);
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn a_batch_that_meets_damage_fails_alone_in_its_group() {
        use crate::events::EventType;
        use crate::store::event_log::contract::entry;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let handles = store.shared.handles().unwrap();
        // A damaged audit chain head: any batch with an audit entry aborts its transaction.
        handles
            .events
            .meta
            .insert("audit_head", b"not json".as_slice())
            .unwrap();
        let mut audited = insert(&record("a", 1));
        audited.audit.push(entry(1, "a", EventType::Registered));
        let outcomes = group(&store, &[audited, insert(&record("b", 2))]);
        assert!(
            matches!(outcomes[0], Err(StoreError::Corrupt(_))),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[1], Ok(()));
        assert_eq!(store.get("a").await.unwrap(), None);
        assert!(store.get("b").await.unwrap().is_some());
        assert!(store.writable(), "damage is not a storage failure");
    }

    #[tokio::test]
    async fn concurrent_writers_share_group_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let writers = (0..64u8).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = record(&format!("c{i}"), i);
                store
                    .commit(insert(&r).with_counters([CounterOp::Take {
                        key: "n".into(),
                        limit: 50,
                    }]))
                    .await
            })
        });
        let outcomes: Vec<_> = futures_util::future::join_all(writers)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let stored = outcomes.iter().filter(|r| r.is_ok()).count();
        let refused = outcomes
            .iter()
            .filter(|r| matches!(r, Err(StoreError::CounterExhausted(_))))
            .count();
        assert_eq!((stored, refused), (50, 14), "{outcomes:?}");
        assert_eq!(store.counter("n").await.unwrap(), 50);
        assert_eq!(store.len(), 50);
        assert_eq!(store.verify().unwrap(), 50);
    }

    #[tokio::test]
    async fn verify_accepts_a_consistent_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.commit(insert(&record("v", 4))).await.unwrap();
        assert_eq!(store.verify().unwrap(), 1);
        assert!(store.writable());
    }

    #[tokio::test]
    async fn a_failed_store_refuses_writes_reads_the_durable_state_and_reopens_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let a = record("a", 1);
        let take = |key: &str| CounterOp::Take {
            key: key.into(),
            limit: 5,
        };
        store
            .commit(insert(&a).with_counters([take("n")]))
            .await
            .unwrap();
        // An update (with a counter) that reached sled's memory but whose flush then fails.
        let mut b = a.clone();
        b.rat_tag = vec![2; 32];
        b.metadata.insert("client_name".into(), "new".into());
        let update = WriteBatch::change(Change::Update {
            expected_revision: 1,
            record: b.clone(),
        })
        .with_counters([take("n")]);
        store.shared.apply(&update).unwrap();
        store
            .shared
            .fail(&StoreError::Unavailable("simulated: no space left".into()));

        assert!(!store.writable());
        assert_eq!(
            store.get("a").await.unwrap(),
            Some(a.clone()),
            "durable state"
        );
        assert_eq!(store.get_by_rat(&[1; 32]).await.unwrap(), Some(a.clone()));
        assert_eq!(store.get_by_rat(&[2; 32]).await.unwrap(), None);
        assert_eq!(store.counter("n").await.unwrap(), 1);
        let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
        assert!(refused(store.commit(insert(&record("c", 3))).await));
        assert!(refused(store.commit(update.clone()).await));

        // This disk has room, so the flusher's probe passes and it reopens the database.
        for _ in 0..250 {
            if store.writable() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(store.writable(), "the store did not reopen");
        // Nothing really failed here, so the update's bytes reached the disk and it is whole.
        let stored = store.get("a").await.unwrap().unwrap();
        assert_eq!((stored.revision, &stored.rat_tag), (2, &b.rat_tag));
        assert_eq!(store.get_by_rat(&[1; 32]).await.unwrap(), None);
        assert_eq!(store.counter("n").await.unwrap(), 2);
        assert_eq!(store.verify().unwrap(), 1);
        store.commit(insert(&record("c", 3))).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 2);
        assert!(!dir.path().join(PROBE_FILE).exists());
    }

    #[tokio::test]
    async fn verify_reports_a_token_index_that_disagrees_with_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.commit(insert(&record("a", 1))).await.unwrap();
        // An index entry pointing at a client whose record carries another tag.
        let handles = store.shared.handles().unwrap();
        handles.rats.insert([9u8; 32], "a".as_bytes()).unwrap();
        assert!(matches!(store.verify(), Err(StoreError::Corrupt(_))));
        assert_eq!(store.get_by_rat(&[9; 32]).await.unwrap(), None);
        handles.rats.remove([9u8; 32]).unwrap();
        handles.rats.remove([1u8; 32]).unwrap();
        assert!(matches!(store.verify(), Err(StoreError::Corrupt(_))));
    }
}
