//! One worker's regex engine ([`Engine`]): its bounded cache of compiled
//! patterns and its PCRE2 match scratch (match data, match context with
//! the limits, the JIT stack). It belongs to one thread and is used
//! without locks; nothing in it is shared between workers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use super::pcre::{self, Matcher};
use super::{Captures, Flags, Hay, Matches, Regex, new_matcher, parse_flags};

/// ngx_lua's default `lua_regex_cache_max_entries`.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// Pattern → its compiled variants, by [`Flags::key`].
type CacheMap = HashMap<Box<[u8]>, Vec<(u16, Rc<Regex>)>>;

/// One worker's compiled patterns and match scratch. Compiled patterns are
/// cached by (pattern, options) whether or not `o` is given; when the cache
/// is full an arbitrary entry makes room. Failed compiles are not cached.
pub struct Engine {
    capacity: usize,
    cache: RefCell<CacheMap>,
    len: Cell<usize>,
    /// Reused by every match (made on first use); taken out while a match
    /// runs, so a nested use (none is expected) makes its own.
    matcher: RefCell<Option<Matcher>>,
    /// `ngx.re.opt("jit_stack_size", n)`: the JIT stack every match gets.
    jit_stack: Cell<Option<usize>>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::with_capacity(DEFAULT_CACHE_ENTRIES)
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("jit_stack", &self.jit_stack.get())
            .finish()
    }
}

impl Engine {
    /// An engine caching at most `capacity` regexes (0: none).
    pub fn with_capacity(capacity: usize) -> Engine {
        Engine {
            capacity,
            cache: RefCell::new(HashMap::new()),
            len: Cell::new(0),
            matcher: RefCell::new(None),
            jit_stack: Cell::new(None),
        }
    }

    /// Parses `opts` and compiles (or finds) `pattern`. Both kinds of
    /// failure come back as the message; call [`parse_flags`] first to
    /// tell an unknown flag (raised by ngx_lua) from a bad pattern
    /// (returned as `nil, err`).
    pub fn compile_opts(
        &self,
        pattern: impl AsRef<[u8]>,
        opts: impl AsRef<[u8]>,
    ) -> Result<Rc<Regex>, String> {
        self.compile(pattern, parse_flags(opts)?)
    }

    /// Compiles (or finds in the cache) `pattern` with `flags`.
    pub fn compile(&self, pattern: impl AsRef<[u8]>, flags: Flags) -> Result<Rc<Regex>, String> {
        let pattern = pattern.as_ref();
        let key = flags.key();
        if let Ok(cache) = self.cache.try_borrow()
            && let Some(re) = cache
                .get(pattern)
                .and_then(|v| v.iter().find(|(k, _)| *k == key))
        {
            return Ok(Rc::clone(&re.1));
        }
        let re = Rc::new(Regex::new(pattern, flags)?);
        if self.capacity > 0
            && let Ok(mut cache) = self.cache.try_borrow_mut()
        {
            if self.len.get() >= self.capacity
                && let Some(victim) = cache.keys().next().cloned()
                && let Some(gone) = cache.remove(&victim)
            {
                self.len.set(self.len.get() - gone.len());
            }
            cache
                .entry(pattern.into())
                .or_default()
                .push((key, Rc::clone(&re)));
            self.len.set(self.len.get() + 1);
        }
        Ok(re)
    }

    /// How many regexes are cached.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `ngx.re.opt("jit_stack_size", size)`: JIT matches get a stack of
    /// `size` bytes (at least PCRE's 32 KiB). The error is ngx_lua's.
    pub fn set_jit_stack_size(&self, size: usize) -> Result<(), String> {
        if !pcre::jit_available() {
            return Err("no pcre jit support found".to_string());
        }
        let size = size.max(pcre::MIN_JIT_STACK);
        let mut slot = self
            .matcher
            .try_borrow_mut()
            .map_err(|_| "pcre jit stack allocation failed".to_string())?;
        if slot.is_none() {
            *slot = new_matcher();
        }
        if slot.as_mut().is_some_and(|m| m.set_jit_stack(size)) {
            self.jit_stack.set(Some(size));
            Ok(())
        } else {
            Err("pcre jit stack allocation failed".to_string())
        }
    }

    /// Matches `re` once on a checked subject from byte `start`; see
    /// [`Engine::find_at`].
    pub fn exec(&self, re: &Regex, hay: Hay<'_>, start: usize) -> Result<Option<Captures>, String> {
        if start > hay.bytes().len() {
            return Err(super::exec_failed(-33));
        }
        // The worker's matcher, taken out for the call; a fresh one when
        // it is in use or could not be made.
        let mut held = self
            .matcher
            .try_borrow_mut()
            .ok()
            .and_then(|mut slot| slot.take());
        if held.is_none() {
            held = new_matcher();
            if let (Some(m), Some(size)) = (held.as_mut(), self.jit_stack.get()) {
                m.set_jit_stack(size);
            }
        }
        let Some(mut matcher) = held else {
            return Err(super::exec_failed(pcre::ERROR_NOMEMORY));
        };
        let result = re.exec(&mut matcher, hay, start);
        if let Ok(mut slot) = self.matcher.try_borrow_mut()
            && slot.is_none()
        {
            *slot = Some(matcher);
        }
        result
    }

    /// The first match of `re` in `subject` at or after byte `start`
    /// (0-based; with `a`, only one starting at `start`). `Ok(None)` is no
    /// match; an error is ngx_lua's `pcre_exec() failed: N` (`start` past
    /// the end, invalid UTF-8 in UTF mode, a start inside a UTF-8
    /// character, or a limit).
    pub fn find_at(
        &self,
        re: &Regex,
        subject: &[u8],
        start: usize,
    ) -> Result<Option<Captures>, String> {
        let hay = re.hay(subject)?;
        self.exec(re, hay, start)
    }

    /// Successive matches of `re` in `subject`, as `ngx.re.gmatch` (and
    /// `gsub`) find them.
    pub fn matches<'e, 'r, 's>(&'e self, re: &'r Regex, subject: &'s [u8]) -> Matches<'e, 'r, 's> {
        let (hay, error, pos) = match re.hay(subject) {
            Ok(hay) => (Some(hay), None, Some(0)),
            Err(e) => (None, Some(e), None),
        };
        Matches {
            engine: self,
            re,
            hay,
            error,
            pos,
        }
    }
}
