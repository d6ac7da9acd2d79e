//! The stores behind `ngx.shared.DICT`: one [`SharedDict`] per configured
//! `[lua.shared_dict]`, shared by every worker thread through an `Arc`,
//! bounded by its byte size and evicting least-recently-used items the way
//! ngx_lua does; and [`Dicts`], the registry that keeps them across reloads.
//!
//! Plain Rust: it knows nothing of Lua, requests or clocks. Every call takes
//! `now`, so TTLs are tested without sleeping. The Lua layer checks what
//! ngx_lua checks before reaching the zone (nil/empty/over-long keys, value
//! types other than string, number and boolean, negative TTLs) and turns a
//! [`DictError`] into `nil, err` with its `Display` string.
//!
//! Memory is accounted, not measured, after nginx's slab allocator so that
//! `capacity()`/`free_space()` read close to ngx_lua's: an item costs the
//! slab slot of its node (a 68-byte header, its key and its value: 8 bytes
//! for a number, 1 for a boolean, the length of a string), where a slot is
//! a power of two from 8 to 2048 bytes and whole 4 KiB pages above; a list
//! costs the slot of its node (header, key, 16-byte queue head) plus, per
//! element, the slot of a 21-byte header and the value. The items of a
//! dict of `size` bytes share the pages nginx's slab pool would have free
//! in a zone of that size (see `store::usable`; less the dict's own header:
//! 252 pages free for 1 MiB), slots
//! of one size packed into pages of their own as the slab packs them (a
//! page of 8-, 16- or 32-byte slots loses some to its bitmap); an
//! item fits if its slots fit in its sizes' partly used pages or in free
//! ones, and `free_space()` counts whole free pages, as ngx_lua's does.
//!
//! `store` keeps the map, LRU order, expiry index and accounting under the
//! dict's lock; this file is the ngx_lua-shaped API over it.

mod store;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use store::{Data, Deadline, Entry, Store};

/// A value kept in a dict; a Lua `nil` is the absence of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A Lua boolean.
    Bool(bool),
    /// A Lua number.
    Number(f64),
    /// A Lua string: any bytes, NULs included.
    Str(Bytes),
}

/// Why an operation did nothing; `Display` is ngx_lua's error string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DictError {
    /// The item cannot be stored: it is larger than the whole dict, or a
    /// `safe_*`/push operation would have had to evict live items.
    #[error("no memory")]
    NoMemory,
    /// The item is larger than the whole dict: it was refused after
    /// evicting up to 30 least-recently-used items, as ngx_lua does
    /// (which then also says `forcible`).
    #[error("no memory")]
    NoMemoryForcible,
    /// `add` found a live item under the key.
    #[error("exists")]
    Exists,
    /// The key is absent or expired (`replace`, `incr` without init, `ttl`,
    /// `expire`).
    #[error("not found")]
    NotFound,
    /// `get` on a list.
    #[error("value is a list")]
    IsList,
    /// `add` or `replace` with a nil value.
    #[error("attempt to add or replace nil values")]
    NilValue,
    /// `incr` on a value that is not a number.
    #[error("not a number")]
    NotANumber,
    /// A list operation on a non-list value, or a push of a boolean.
    #[error("value not a list")]
    WrongType,
    /// A string longer than ngx_lua's 32-bit value length.
    #[error("value too large")]
    ValueTooLarge,
}

/// What the store operations return: `Ok(forcible)`, where `forcible` says
/// that other live items were evicted to make room.
pub type SetResult = Result<bool, DictError>;

/// The longest string a dict takes (ngx_lua stores value lengths in 32 bits).
const MAX_VALUE_LEN: usize = u32::MAX as usize;

/// How a store operation treats an existing key.
#[derive(Clone, Copy)]
enum Mode {
    Set,
    Add,
    Replace,
}

/// One `ngx.shared.DICT`: a bounded, LRU-evicting key-value store with TTLs,
/// numbers that `incr` atomically and lists; all operations on one dict are
/// serialised by one mutex.
pub struct SharedDict {
    name: String,
    capacity: usize,
    store: Mutex<Store>,
}

impl fmt::Debug for SharedDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedDict")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("used", &self.lock().used())
            .finish()
    }
}

impl SharedDict {
    /// An empty dict called `name` holding at most `capacity_bytes` of
    /// accounted items.
    pub fn new(name: &str, capacity_bytes: usize) -> Self {
        SharedDict {
            name: name.to_owned(),
            capacity: capacity_bytes,
            store: Mutex::new({
                let mut s = Store::new(store::usable(capacity_bytes));
                s.charge_header();
                s
            }),
        }
    }

    /// A dict whose items have exactly `room` bytes (unit tests).
    #[cfg(test)]
    fn with_room(name: &str, room: usize) -> Self {
        SharedDict {
            name: name.to_owned(),
            capacity: room,
            store: Mutex::new(Store::new(room)),
        }
    }

    /// The configured name (`ngx.shared.NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live value and its flags; `None` when absent or expired,
    /// `Err(IsList)` for a list. Makes the item the most recently used.
    pub fn get(&self, key: &[u8], now: Instant) -> Result<Option<(Value, u32)>, DictError> {
        let mut s = self.lock();
        let Some(e) = s.touch(key, now, false) else {
            return Ok(None);
        };
        match &e.data {
            Data::Scalar(v) => Ok(Some((v.clone(), e.flags))),
            Data::List(_) => Err(DictError::IsList),
        }
    }

    /// Like [`SharedDict::get`] but also returns items that have expired (or
    /// were flushed) and are not yet freed, with `stale = true`.
    pub fn get_stale(
        &self,
        key: &[u8],
        now: Instant,
    ) -> Result<Option<(Value, u32, bool)>, DictError> {
        let mut s = self.lock();
        let Some(e) = s.touch(key, now, true) else {
            return Ok(None);
        };
        match &e.data {
            Data::Scalar(v) => Ok(Some((v.clone(), e.flags, !e.is_live(now)))),
            Data::List(_) => Err(DictError::IsList),
        }
    }

    /// Stores `value` (or deletes the key when `None`) with an optional TTL
    /// (`None` or zero: never expires) and user flags, evicting expired and
    /// then least-recently-used items if it needs room.
    pub fn set(
        &self,
        key: &[u8],
        value: Option<Value>,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> SetResult {
        self.store(Mode::Set, true, key, value, ttl, flags, now)
    }

    /// Like [`SharedDict::set`] but never evicts live items: `Err(NoMemory)`
    /// instead (expired items are still freed).
    pub fn safe_set(
        &self,
        key: &[u8],
        value: Option<Value>,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> SetResult {
        self.store(Mode::Set, false, key, value, ttl, flags, now)
    }

    /// Like [`SharedDict::set`] but only when no live item has the key:
    /// `Err(Exists)` otherwise.
    pub fn add(
        &self,
        key: &[u8],
        value: Option<Value>,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> SetResult {
        self.store(Mode::Add, true, key, value, ttl, flags, now)
    }

    /// [`SharedDict::add`] that never evicts live items.
    pub fn safe_add(
        &self,
        key: &[u8],
        value: Option<Value>,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> SetResult {
        self.store(Mode::Add, false, key, value, ttl, flags, now)
    }

    /// Like [`SharedDict::set`] but only when a live item has the key:
    /// `Err(NotFound)` otherwise.
    pub fn replace(
        &self,
        key: &[u8],
        value: Option<Value>,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> SetResult {
        self.store(Mode::Replace, true, key, value, ttl, flags, now)
    }

    /// Removes the key, live or expired.
    pub fn delete(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// Adds `by` to a live number and returns the sum. An absent or expired
    /// key is `Err(NotFound)` unless `init` is given; then it is created as
    /// `init + by` with `init_ttl` and flags 0, possibly evicting (`forcible`).
    /// An existing item keeps its TTL and flags.
    pub fn incr(
        &self,
        key: &[u8],
        by: f64,
        init: Option<f64>,
        init_ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(f64, bool), DictError> {
        let mut s = self.lock();
        if let Some(e) = s.touch(key, now, false) {
            return match &mut e.data {
                Data::Scalar(Value::Number(n)) => {
                    *n += by;
                    Ok((*n, false))
                }
                _ => Err(DictError::NotANumber),
            };
        }
        let Some(init) = init else {
            return Err(DictError::NotFound);
        };
        let sum = init + by;
        let entry = Entry::new(
            Data::Scalar(Value::Number(sum)),
            0,
            deadline(init_ttl, now),
            key.len(),
        );
        let forcible = s.put(key, entry, now, true)?;
        Ok((sum, forcible))
    }

    /// Pushes onto the head of the list at `key`, creating it (no TTL) when
    /// absent or expired; returns the new length.
    pub fn lpush(&self, key: &[u8], value: Value, now: Instant) -> Result<usize, DictError> {
        self.push(key, value, true, now)
    }

    /// Pushes onto the tail of the list at `key`; see [`SharedDict::lpush`].
    pub fn rpush(&self, key: &[u8], value: Value, now: Instant) -> Result<usize, DictError> {
        self.push(key, value, false, now)
    }

    /// Removes and returns the head of the list (`None` if absent or
    /// expired); the key goes when its list empties.
    pub fn lpop(&self, key: &[u8], now: Instant) -> Result<Option<Value>, DictError> {
        self.lock().pop(key, true, now)
    }

    /// Removes and returns the tail of the list; see [`SharedDict::lpop`].
    pub fn rpop(&self, key: &[u8], now: Instant) -> Result<Option<Value>, DictError> {
        self.lock().pop(key, false, now)
    }

    /// The list's length; 0 when absent or expired.
    pub fn llen(&self, key: &[u8], now: Instant) -> Result<usize, DictError> {
        let mut s = self.lock();
        match s.touch(key, now, false) {
            None => Ok(0),
            Some(Entry {
                data: Data::List(l),
                ..
            }) => Ok(l.len()),
            Some(_) => Err(DictError::WrongType),
        }
    }

    /// The time left to live (`None`: never expires) of a live key.
    pub fn ttl(&self, key: &[u8], now: Instant) -> Result<Option<Duration>, DictError> {
        let s = self.lock();
        match s.peek(key) {
            Some(e) if e.is_live(now) => Ok(match e.deadline {
                None => None,
                Some(Deadline::At(t)) => Some(t.saturating_duration_since(now)),
                Some(Deadline::Flushed) => Some(Duration::ZERO),
            }),
            _ => Err(DictError::NotFound),
        }
    }

    /// Gives a live key a new TTL from `now` (`None` or zero: never expires).
    pub fn expire(&self, key: &[u8], ttl: Option<Duration>, now: Instant) -> Result<(), DictError> {
        let mut s = self.lock();
        match s.peek(key) {
            Some(e) if e.is_live(now) => {
                s.set_deadline(key, deadline(ttl, now));
                Ok(())
            }
            _ => Err(DictError::NotFound),
        }
    }

    /// Marks every item expired, as ngx_lua does: reads miss at once (but
    /// `get_stale` still sees them); memory returns as items are overwritten,
    /// evicted or freed by [`SharedDict::flush_expired`].
    pub fn flush_all(&self) {
        self.lock().flush_all();
    }

    /// Frees up to `max_count` expired items (0 = all) and returns how many.
    pub fn flush_expired(&self, max_count: usize, now: Instant) -> usize {
        self.lock().flush_expired(max_count, now)
    }

    /// Up to `max_count` live keys (0 = all; ngx_lua's Lua default is 1024),
    /// most recently used first.
    pub fn get_keys(&self, max_count: usize, now: Instant) -> Vec<Bytes> {
        self.lock().live_keys(max_count, now)
    }

    /// The configured size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of whole slab pages not charged to any item (expired items
    /// are charged until freed), as ngx_lua's `free_space()`.
    pub fn free_space(&self) -> usize {
        self.lock().free_pages_bytes()
    }

    /// The store, even if a thread panicked while holding it: every
    /// operation leaves the indexes consistent before anything can panic.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        mode: Mode,
        evict: bool,
        key: &[u8],
        value: Option<Value>,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> SetResult {
        if value.is_none() && matches!(mode, Mode::Add | Mode::Replace) {
            return Err(DictError::NilValue);
        }
        let mut s = self.lock();
        let live = s.peek(key).is_some_and(|e| e.is_live(now));
        match mode {
            Mode::Add if live => return Err(DictError::Exists),
            Mode::Replace if !live => return Err(DictError::NotFound),
            _ => {}
        }
        let Some(value) = value else {
            s.remove(key);
            return Ok(false);
        };
        check_len(&value, MAX_VALUE_LEN)?;
        let entry = Entry::new(Data::Scalar(value), flags, deadline(ttl, now), key.len());
        s.put(key, entry, now, evict)
    }

    fn push(
        &self,
        key: &[u8],
        value: Value,
        front: bool,
        now: Instant,
    ) -> Result<usize, DictError> {
        if matches!(value, Value::Bool(_)) {
            return Err(DictError::WrongType);
        }
        check_len(&value, MAX_VALUE_LEN)?;
        let mut s = self.lock();
        if let Some(len) = s.push_live(key, value.clone(), front, now)? {
            return Ok(len);
        }
        let entry = Entry::new(Data::List(VecDeque::from([value])), 0, None, key.len());
        s.put(key, entry, now, false)?;
        Ok(1)
    }
}

/// The deadline for a TTL given at `now`; zero means none, as in ngx_lua, and
/// a TTL past the clock's range is taken as none too.
fn deadline(ttl: Option<Duration>, now: Instant) -> Option<Deadline> {
    ttl.filter(|d| !d.is_zero())
        .and_then(|d| now.checked_add(d))
        .map(Deadline::At)
}

fn check_len(v: &Value, max: usize) -> Result<(), DictError> {
    match v {
        Value::Str(s) if s.len() > max => Err(DictError::ValueTooLarge),
        _ => Ok(()),
    }
}

/// The registry of dicts by name. A reload asks for the configured set and
/// gets the same `Arc` (and so the same data) for every dict whose size did
/// not change.
#[derive(Debug, Default)]
pub struct Dicts {
    by_name: Mutex<BTreeMap<String, Arc<SharedDict>>>,
}

impl Dicts {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the registry hold exactly `wanted` (name, capacity) and returns
    /// it: a dict with the same name and size is kept with its data; a new or
    /// resized one starts empty; a dropped one is forgotten (requests still
    /// holding it finish with it). A repeated name takes its last size.
    pub fn reconcile(&self, wanted: &[(String, usize)]) -> BTreeMap<String, Arc<SharedDict>> {
        let mut current = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: BTreeMap<String, Arc<SharedDict>> = BTreeMap::new();
        for (name, size) in wanted {
            let kept = next
                .get(name)
                .or_else(|| current.get(name))
                .filter(|d| d.capacity() == *size)
                .cloned();
            let dict = kept.unwrap_or_else(|| Arc::new(SharedDict::new(name, *size)));
            next.insert(name.clone(), dict);
        }
        *current = next.clone();
        next
    }

    /// The dict called `name`, as of the last [`Dicts::reconcile`].
    pub fn get(&self, name: &str) -> Option<Arc<SharedDict>> {
        self.by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests;
