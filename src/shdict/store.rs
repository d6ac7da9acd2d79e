//! The state behind one [`SharedDict`](super::SharedDict)'s lock: the key
//! map, the LRU order, the expiry index and the byte accounting.
//!
//! Everything here runs with the dict's mutex held and is ignorant of Lua and
//! of which operation asked; it keeps the three indexes and `used` in step.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::{DictError, Value};

/// ngx_lua's node header before an item's key and value (on 64-bit:
/// `offsetof(ngx_rbtree_node_t, color)` + `offsetof(shdict_node_t, data)`).
pub(super) const ITEM_OVERHEAD: usize = 68;

/// ngx_lua's list node header before an element's value.
pub(super) const LIST_NODE_OVERHEAD: usize = 21;

/// A list item keeps its queue head (`ngx_queue_t`) as its value.
const LIST_HEAD: usize = 16;

/// nginx's slab page.
pub(super) const PAGE: usize = 4096;

/// What nginx's slab allocator gives for a request of `n` bytes: a
/// power-of-two slot of at least 8 bytes up to half a page, whole pages
/// above.
pub(super) fn slot(n: usize) -> usize {
    if n <= 8 {
        8
    } else if n <= PAGE / 2 {
        n.next_power_of_two()
    } else {
        n.div_ceil(PAGE).saturating_mul(PAGE)
    }
}

/// The bytes of a `size`-byte zone that items can use, as nginx lays a
/// slab pool out in it (64-bit): the pool header, slot and stats tables
/// (664 bytes) and a 24-byte descriptor per page come first, pages start
/// page-aligned. The dict's own header and log name then take a 128-byte
/// and a 32-byte slot ([`Store::charge_header`]), so a 1 MiB dict has 252
/// pages (1032192 bytes) free when empty, as in ngx_lua.
pub(super) fn usable(size: usize) -> usize {
    const POOL_HEADER: usize = 664;
    const PAGE_DESC: usize = 24;
    if size <= POOL_HEADER {
        return 0;
    }
    let pages = (size - POOL_HEADER) / (PAGE + PAGE_DESC);
    let start = (POOL_HEADER + pages * PAGE_DESC).div_ceil(PAGE) * PAGE;
    pages.min(size.saturating_sub(start) / PAGE) * PAGE
}

/// How many least-recently-used items ngx_lua evicts, at most, trying to
/// fit one item before it answers "no memory".
const MAX_FORCED: usize = 30;

/// When an item stops being live.
///
/// `Flushed` sorts before every instant, so `flush_all`ed items are the first
/// the expiry index gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Deadline {
    /// Expired by `flush_all`, whatever the clock says.
    Flushed,
    /// Expired from this instant on.
    At(Instant),
}

impl Deadline {
    fn passed(self, now: Instant) -> bool {
        match self {
            Deadline::Flushed => true,
            Deadline::At(t) => t <= now,
        }
    }
}

/// What an item holds.
pub(super) enum Data {
    Scalar(Value),
    List(VecDeque<Value>),
}

/// One item; its key lives in the map (and, shared, in the indexes).
pub(super) struct Entry {
    pub(super) data: Data,
    pub(super) flags: u32,
    /// `None`: never expires.
    pub(super) deadline: Option<Deadline>,
    /// Position in the LRU order; larger is more recent.
    seq: u64,
    /// Bytes charged against the capacity (the slots of its node and,
    /// for a list, of its elements).
    cost: usize,
    /// The slot of its node.
    node: usize,
}

impl Entry {
    /// An item ready for [`Store::put`], its cost computed from `key_len`.
    pub(super) fn new(data: Data, flags: u32, deadline: Option<Deadline>, key_len: usize) -> Self {
        let header = ITEM_OVERHEAD.saturating_add(key_len);
        let node = match &data {
            Data::Scalar(v) => slot(header.saturating_add(value_bytes(v))),
            Data::List(_) => slot(header.saturating_add(LIST_HEAD)),
        };
        let cost = match &data {
            Data::Scalar(_) => node,
            Data::List(l) => l.iter().map(elem_cost).fold(node, usize::saturating_add),
        };
        Entry {
            data,
            flags,
            deadline,
            seq: 0,
            cost,
            node,
        }
    }

    /// The slab slots it takes: its node's and its list elements'.
    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        let elems = match &self.data {
            Data::Scalar(_) => None,
            Data::List(l) => Some(l.iter().map(elem_cost)),
        };
        std::iter::once(self.node).chain(elems.into_iter().flatten())
    }

    /// Not expired (and not flushed) at `now`.
    pub(super) fn is_live(&self, now: Instant) -> bool {
        self.deadline.is_none_or(|d| !d.passed(now))
    }
}

/// Bytes a value occupies: ngx_lua stores numbers as doubles and booleans as
/// one byte.
pub(super) fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Bool(_) => 1,
        Value::Number(_) => 8,
        Value::Str(s) => s.len(),
    }
}

/// Bytes one list element is charged: its node's slab slot.
pub(super) fn elem_cost(v: &Value) -> usize {
    slot(LIST_NODE_OVERHEAD.saturating_add(value_bytes(v)))
}

/// Slab pages in use: per slot size up to half a page (8 … 2048 bytes),
/// how many slots are taken, packed into pages of that size as nginx's
/// slab does; and whole pages of larger allocations.
#[derive(Default)]
struct Pages {
    small: [usize; 9],
    large: usize,
}

impl Pages {
    fn class(slot: usize) -> usize {
        (slot.trailing_zeros() as usize).saturating_sub(3).min(8)
    }

    /// Pages of slot size `slot` holding `n` slots. Below 64 bytes nginx
    /// keeps a page's bitmap in its first slots (at least one), so a page
    /// holds 504 slots of 8 bytes, 254 of 16, 127 of 32.
    fn of(slot: usize, n: usize) -> usize {
        let slots = PAGE / slot;
        let per_page = if slot < 64 {
            slots - (slots / (slot * 8)).max(1)
        } else {
            slots
        };
        n.div_ceil(per_page)
    }

    fn total(&self) -> usize {
        (0..9)
            .map(|c| Self::of(8 << c, self.small[c]))
            .sum::<usize>()
            + self.large
    }

    fn add(&mut self, slot: usize) {
        if slot <= PAGE / 2 {
            self.small[Self::class(slot)] += 1;
        } else {
            self.large += slot / PAGE;
        }
    }

    fn sub(&mut self, slot: usize) {
        if slot <= PAGE / 2 {
            let c = Self::class(slot);
            self.small[c] = self.small[c].saturating_sub(1);
        } else {
            self.large = self.large.saturating_sub(slot / PAGE);
        }
    }

    /// Pages `slots` more would add.
    fn extra(&self, slots: &[usize]) -> usize {
        let mut after = Pages {
            small: self.small,
            large: self.large,
        };
        for &s in slots {
            after.add(s);
        }
        after.total() - self.total()
    }
}

/// The map and its indexes. Invariants: every map entry has exactly one
/// `lru` slot at its `seq`, one `expiry` slot iff it has a deadline, and
/// `used` is the sum of the entries' costs.
pub(super) struct Store {
    capacity: usize,
    used: usize,
    pages: Pages,
    next_seq: u64,
    map: HashMap<Bytes, Entry>,
    lru: BTreeMap<u64, Bytes>,
    expiry: BTreeSet<(Deadline, Bytes)>,
}

impl Store {
    pub(super) fn new(capacity: usize) -> Self {
        Store {
            capacity,
            used: 0,
            pages: Pages::default(),
            next_seq: 0,
            map: HashMap::new(),
            lru: BTreeMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// Takes the slots ngx_lua's dict takes for itself: its shared header
    /// (128-byte slot) and its name for log lines (32-byte slot). Items of
    /// those sizes share their pages, as in nginx.
    pub(super) fn charge_header(&mut self) {
        self.pages.add(128);
        self.pages.add(32);
    }

    /// Bytes charged to items (the sum of their slots).
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Bytes of whole pages no item uses.
    pub(super) fn free_pages_bytes(&self) -> usize {
        self.free_pages() * PAGE
    }

    fn free_pages(&self) -> usize {
        (self.capacity / PAGE).saturating_sub(self.pages.total())
    }

    /// Whether `slots` fit in the pages already used or free ones.
    fn fits(&self, slots: &[usize]) -> bool {
        self.pages.extra(slots) <= self.free_pages()
    }

    /// The item, live or not, without touching the LRU order.
    pub(super) fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// The item if it is live (or, with `stale_ok`, present at all), made the
    /// most recently used.
    pub(super) fn touch(&mut self, key: &[u8], now: Instant, stale_ok: bool) -> Option<&mut Entry> {
        let e = self.map.get_mut(key)?;
        if !stale_ok && !e.is_live(now) {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(k) = self.lru.remove(&e.seq) {
            self.lru.insert(seq, k);
        }
        e.seq = seq;
        Some(e)
    }

    /// Inserts `entry` under `key` (replacing any old item), first making
    /// room: expired items go first, then, if `evict_live`, the least
    /// recently used live ones. Returns whether live items were evicted.
    /// On failure the old item, if any, is gone too (as in ngx_lua).
    pub(super) fn put(
        &mut self,
        key: &[u8],
        entry: Entry,
        now: Instant,
        evict_live: bool,
    ) -> Result<bool, DictError> {
        // As ngx_lua, the old item is freed first and stays freed if the
        // new one does not fit.
        let old = self.remove(key);
        if entry.cost > self.capacity / PAGE * PAGE {
            while self.pop_expired(now) {}
            if !evict_live {
                return Err(DictError::NoMemory);
            }
            let mut evicted = 0;
            while evicted < MAX_FORCED {
                let Some((_, k)) = self.lru.pop_first() else {
                    break;
                };
                self.remove(&k);
                evicted += 1;
            }
            return Err(if evicted > 0 {
                DictError::NoMemoryForcible
            } else {
                DictError::NoMemory
            });
        }
        let slots: Vec<usize> = entry.slots().collect();
        match self.make_room(&slots, now, evict_live) {
            Ok(forcible) => {
                let k = match old {
                    Some((k, _)) => k,
                    None => Bytes::copy_from_slice(key),
                };
                let mut entry = entry;
                entry.seq = self.next_seq;
                self.next_seq += 1;
                self.place(k, entry);
                Ok(forcible)
            }
            Err(e) => Err(e),
        }
    }

    /// Puts an entry into the map and indexes at its own `seq`.
    fn place(&mut self, key: Bytes, entry: Entry) {
        self.used = self.used.saturating_add(entry.cost);
        for s in entry.slots() {
            self.pages.add(s);
        }
        self.lru.insert(entry.seq, key.clone());
        if let Some(d) = entry.deadline {
            self.expiry.insert((d, key.clone()));
        }
        self.map.insert(key, entry);
    }

    /// Removes an item, live or not, returning it with its stored key.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<(Bytes, Entry)> {
        let (k, e) = self.map.remove_entry(key)?;
        self.lru.remove(&e.seq);
        if let Some(d) = e.deadline {
            self.expiry.remove(&(d, k.clone()));
        }
        self.used = self.used.saturating_sub(e.cost);
        for s in e.slots() {
            self.pages.sub(s);
        }
        Some((k, e))
    }

    /// Frees room for slots of `need` bytes; see [`Store::put`].
    fn make_room(
        &mut self,
        need: &[usize],
        now: Instant,
        evict_live: bool,
    ) -> Result<bool, DictError> {
        if need.iter().sum::<usize>() > self.capacity {
            return Err(DictError::NoMemory);
        }
        while !self.fits(need) && self.pop_expired(now) {}
        let mut forcible = false;
        while !self.fits(need) {
            if !evict_live {
                return Err(DictError::NoMemory);
            }
            let Some((_, k)) = self.lru.pop_first() else {
                return Err(DictError::NoMemory);
            };
            self.remove(&k);
            forcible = true;
        }
        Ok(forcible)
    }

    /// Frees the earliest-expiring item if it has expired. The slot is taken
    /// out before the item, so loops over this always make progress.
    fn pop_expired(&mut self, now: Instant) -> bool {
        match self.expiry.first() {
            Some((d, _)) if d.passed(now) => {}
            _ => return false,
        }
        let Some((d, k)) = self.expiry.pop_first() else {
            return false;
        };
        if self.map.get(&k).is_some_and(|e| e.deadline == Some(d)) {
            self.remove(&k);
        }
        true
    }

    /// Frees up to `max` expired items (0 = all), returning how many.
    pub(super) fn flush_expired(&mut self, max: usize, now: Instant) -> usize {
        let mut n = 0;
        while (max == 0 || n < max) && self.pop_expired(now) {
            n += 1;
        }
        n
    }

    /// Marks every item expired; memory comes back lazily.
    pub(super) fn flush_all(&mut self) {
        self.expiry.clear();
        for (k, e) in &mut self.map {
            e.deadline = Some(Deadline::Flushed);
            self.expiry.insert((Deadline::Flushed, k.clone()));
        }
    }

    /// Gives a present item a new deadline (`None` = never expires).
    pub(super) fn set_deadline(&mut self, key: &[u8], deadline: Option<Deadline>) {
        let Some(e) = self.map.get_mut(key) else {
            return;
        };
        let Some(k) = self.lru.get(&e.seq) else {
            return;
        };
        if let Some(old) = e.deadline {
            self.expiry.remove(&(old, k.clone()));
        }
        if let Some(new) = deadline {
            self.expiry.insert((new, k.clone()));
        }
        e.deadline = deadline;
    }

    /// Pushes onto a live list, charging the element; never evicts live
    /// items (ngx_lua's push answers "no memory" instead). Returns the new
    /// length, or `None` if `key` is not a live list.
    pub(super) fn push_live(
        &mut self,
        key: &[u8],
        value: Value,
        front: bool,
        now: Instant,
    ) -> Result<Option<usize>, DictError> {
        match self.peek(key) {
            Some(e) if e.is_live(now) => {
                if !matches!(e.data, Data::List(_)) {
                    return Err(DictError::WrongType);
                }
            }
            _ => return Ok(None),
        }
        let extra = elem_cost(&value);
        // The list is live, so freeing expired items cannot take it away.
        self.make_room(&[extra], now, false)?;
        let Some(e) = self.touch(key, now, false) else {
            return Ok(None);
        };
        let Data::List(list) = &mut e.data else {
            return Err(DictError::WrongType);
        };
        if front {
            list.push_front(value);
        } else {
            list.push_back(value);
        }
        let len = list.len();
        e.cost = e.cost.saturating_add(extra);
        self.used = self.used.saturating_add(extra);
        self.pages.add(extra);
        Ok(Some(len))
    }

    /// Pops from a live list, dropping the key when the list empties.
    pub(super) fn pop(
        &mut self,
        key: &[u8],
        front: bool,
        now: Instant,
    ) -> Result<Option<Value>, DictError> {
        let Some(e) = self.touch(key, now, false) else {
            return Ok(None);
        };
        let Data::List(list) = &mut e.data else {
            return Err(DictError::WrongType);
        };
        let popped = if front {
            list.pop_front()
        } else {
            list.pop_back()
        };
        let empty = list.is_empty();
        if let Some(v) = &popped {
            let freed = elem_cost(v);
            e.cost = e.cost.saturating_sub(freed);
            self.used = self.used.saturating_sub(freed);
            self.pages.sub(freed);
        }
        if empty {
            self.remove(key);
        }
        Ok(popped)
    }

    /// Live keys, most recently used first, at most `max` (0 = all).
    pub(super) fn live_keys(&self, max: usize, now: Instant) -> Vec<Bytes> {
        let live = self
            .lru
            .values()
            .rev()
            .filter(|k| self.map.get(*k).is_some_and(|e| e.is_live(now)))
            .cloned();
        if max == 0 {
            live.collect()
        } else {
            live.take(max).collect()
        }
    }
}
