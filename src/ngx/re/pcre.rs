//! The only code that calls PCRE2 (through `pcre2-sys`): compiling a
//! pattern, JIT-compiling it, reading its name table, and running it with
//! `pcre2_match` or `pcre2_dfa_match`. Everything above this module is safe
//! Rust; nothing here knows ngx_lua's conventions.
//!
//! `unsafe` is allowed here (and only here in `ngx::re`) because the safe
//! `pcre2` crate cannot do what ngx_lua does: it takes patterns as `&str`
//! (ngx_lua's are bytes), and it has no `PCRE2_ANCHORED`, no
//! JavaScript-compatibility options, no match or heap limits and no DFA
//! matching. The invariants each call relies on are stated where it is made;
//! the types below own their PCRE2 objects and free them on drop.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};

use pcre2_sys::*;

/// `pcre2_match` error codes this crate's callers look at.
pub(super) const ERROR_NOMATCH: i32 = -1;
pub(super) const ERROR_JIT_STACKLIMIT: i32 = -46;
pub(super) const ERROR_NOMEMORY: i32 = -48;

/// `PCRE2_ERROR_*` codes at and above this are compile errors.
const COMPILE_ERROR_BASE: i32 = 100;

/// ngx_lua's DFA workspace: 100 ints (`NGX_LUA_RE_DFA_MODE_WORKSPACE_COUNT`).
const DFA_WORKSPACE: usize = 100;

/// PCRE2's own minimum (and default) JIT stack: 32 KiB.
pub(super) const MIN_JIT_STACK: usize = 32 * 1024;

/// A failed `pcre2_compile`: PCRE2's error code and text, and the offset in
/// the pattern where it was found.
#[derive(Debug)]
pub(super) struct CompileError {
    /// PCRE2's code: 101 and up for syntax errors; negative for an invalid
    /// UTF-8 pattern in UTF mode.
    pub code: i32,
    /// PCRE2's text for `code`.
    pub message: String,
    /// The offset in the pattern (bytes).
    pub offset: usize,
}

impl CompileError {
    /// Whether the pattern was refused as invalid UTF-8 (in UTF mode).
    pub fn is_bad_utf(&self) -> bool {
        self.code < 0
    }

    /// The error's number among PCRE2's compile errors (`code - 100`).
    pub fn number(&self) -> i32 {
        self.code - COMPILE_ERROR_BASE
    }
}

/// PCRE2's text for error `code` (compile or match).
pub(super) fn error_message(code: i32) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed;
    // PCRE2 writes at most that many code units and NUL-terminates.
    let n = unsafe { pcre2_get_error_message_8(code, buf.as_mut_ptr(), buf.len()) };
    match usize::try_from(n) {
        Ok(n) => String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned(),
        Err(_) => format!("PCRE2 error {code}"),
    }
}

/// Whether this PCRE2 was built with JIT support.
pub(super) fn jit_available() -> bool {
    let mut yes: u32 = 0;
    // SAFETY: PCRE2_CONFIG_JIT writes one uint32_t to the pointer.
    let rc = unsafe { pcre2_config_8(PCRE2_CONFIG_JIT, (&raw mut yes).cast::<c_void>()) };
    rc >= 0 && yes == 1
}

/// A compiled pattern (`pcre2_code`), freed on drop. Immutable once
/// [`Code::jit_compile`] has run, which takes `&mut self`.
#[derive(Debug)]
pub(super) struct Code {
    ptr: NonNull<pcre2_code_8>,
}

impl Drop for Code {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from pcre2_compile and is freed only here.
        unsafe { pcre2_code_free_8(self.ptr.as_ptr()) }
    }
}

impl Code {
    /// `pcre2_compile` with `options` (`PCRE2_*` compile options) and the
    /// default compile context.
    pub fn compile(pattern: &[u8], options: u32) -> Result<Code, CompileError> {
        let mut code: c_int = 0;
        let mut offset: usize = 0;
        // SAFETY: the pattern pointer is valid for `pattern.len()` bytes
        // (PCRE2 reads no further when given a length); the two out
        // pointers are valid; a null context means the defaults.
        let raw = unsafe {
            pcre2_compile_8(
                pattern.as_ptr(),
                pattern.len(),
                options,
                &raw mut code,
                &raw mut offset,
                ptr::null_mut(),
            )
        };
        NonNull::new(raw)
            .map(|ptr| Code { ptr })
            .ok_or_else(|| CompileError {
                code,
                message: error_message(code),
                offset,
            })
    }

    /// JIT-compiles the pattern for complete matches; false when the JIT
    /// cannot (no JIT support, or a pattern it refuses): matching then
    /// uses the interpreter.
    pub fn jit_compile(&mut self) -> bool {
        // SAFETY: `ptr` is a valid compiled pattern, and `&mut self` means
        // no match is running on it.
        unsafe { pcre2_jit_compile_8(self.ptr.as_ptr(), PCRE2_JIT_COMPLETE) == 0 }
    }

    fn info_u32(&self, what: u32) -> u32 {
        let mut value: u32 = 0;
        // SAFETY: every `what` passed here writes one uint32_t.
        let rc = unsafe {
            pcre2_pattern_info_8(self.ptr.as_ptr(), what, (&raw mut value).cast::<c_void>())
        };
        if rc == 0 { value } else { 0 }
    }

    /// The number of capture groups.
    pub fn capture_count(&self) -> usize {
        self.info_u32(PCRE2_INFO_CAPTURECOUNT) as usize
    }

    /// The compile options in force, including those set by the pattern
    /// itself (such as `(*UTF)`).
    pub fn all_options(&self) -> u32 {
        self.info_u32(PCRE2_INFO_ALLOPTIONS)
    }

    /// The name table in PCRE2's order (by name; a duplicated name's groups
    /// in number order): each name with its group number.
    pub fn names(&self) -> Vec<(Vec<u8>, usize)> {
        let count = self.info_u32(PCRE2_INFO_NAMECOUNT) as usize;
        let size = self.info_u32(PCRE2_INFO_NAMEENTRYSIZE) as usize;
        if count == 0 || size < 3 {
            return Vec::new();
        }
        let mut table: *const u8 = ptr::null();
        // SAFETY: PCRE2_INFO_NAMETABLE writes one PCRE2_SPTR.
        let rc = unsafe {
            pcre2_pattern_info_8(
                self.ptr.as_ptr(),
                PCRE2_INFO_NAMETABLE,
                (&raw mut table).cast::<c_void>(),
            )
        };
        if rc != 0 || table.is_null() {
            return Vec::new();
        }
        // SAFETY: the table is `count` entries of `size` bytes, owned by
        // the compiled pattern, which outlives this borrow.
        let bytes = unsafe { std::slice::from_raw_parts(table, count * size) };
        bytes
            .chunks_exact(size)
            .map(|entry| {
                let number = usize::from(entry[0]) << 8 | usize::from(entry[1]);
                let name = &entry[2..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                (name[..end].to_vec(), number)
            })
            .collect()
    }
}

/// A subject ready for matching: any bytes, or bytes known to be valid
/// UTF-8 (checked by Rust, so PCRE2 need not check them again on every
/// call; see [`Matcher::exec`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Subject<'s> {
    /// Bytes, for a pattern not in UTF mode.
    Bytes(&'s [u8]),
    /// Valid UTF-8, for a pattern in UTF mode.
    Utf8(&'s str),
}

impl Subject<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Subject::Bytes(b) => b,
            Subject::Utf8(s) => s.as_bytes(),
        }
    }
}

/// Limits on one match, set in the match context.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// `pcre2_set_match_limit`: PCRE's default is 10,000,000.
    pub match_limit: u32,
    /// `pcre2_set_heap_limit`, in KiB: the interpreter's backtracking memory.
    pub heap_limit_kib: u32,
}

/// What matching needs besides the pattern: match data (the offsets), a
/// match context (limits, the JIT stack) and the JIT stack. One per worker,
/// reused by every match there.
#[derive(Debug)]
pub(super) struct Matcher {
    data: NonNull<pcre2_match_data_8>,
    /// Offset pairs `data` holds.
    pairs: u32,
    context: NonNull<pcre2_match_context_8>,
    jit_stack: Option<NonNull<pcre2_jit_stack_8>>,
}

impl Drop for Matcher {
    fn drop(&mut self) {
        // SAFETY: each pointer was created by PCRE2 for this value and is
        // freed only here; the context refers to the JIT stack, so the
        // context goes first.
        unsafe {
            pcre2_match_data_free_8(self.data.as_ptr());
            pcre2_match_context_free_8(self.context.as_ptr());
            if let Some(stack) = self.jit_stack {
                pcre2_jit_stack_free_8(stack.as_ptr());
            }
        }
    }
}

fn new_match_data(pairs: u32) -> Option<NonNull<pcre2_match_data_8>> {
    // SAFETY: a null general context means malloc.
    NonNull::new(unsafe { pcre2_match_data_create_8(pairs, ptr::null_mut()) })
}

impl Matcher {
    /// A matcher with `limits`; `None` when PCRE2 could not allocate.
    pub fn new(limits: Limits) -> Option<Matcher> {
        // SAFETY: a null general context means malloc.
        let context = NonNull::new(unsafe { pcre2_match_context_create_8(ptr::null_mut()) })?;
        // SAFETY: `context` is a valid match context.
        unsafe {
            pcre2_set_match_limit_8(context.as_ptr(), limits.match_limit);
            pcre2_set_heap_limit_8(context.as_ptr(), limits.heap_limit_kib);
        }
        let Some(data) = new_match_data(8) else {
            // SAFETY: created above, not shared.
            unsafe { pcre2_match_context_free_8(context.as_ptr()) };
            return None;
        };
        Some(Matcher {
            data,
            pairs: 8,
            context,
            jit_stack: None,
        })
    }

    /// Gives JIT matches a stack of up to `max` bytes (PCRE2's own 32 KiB
    /// on the machine stack otherwise). False when it cannot be allocated.
    pub fn set_jit_stack(&mut self, max: usize) -> bool {
        let max = max.max(MIN_JIT_STACK);
        // SAFETY: sizes are plain numbers; a null general context means malloc.
        let Some(stack) =
            NonNull::new(unsafe { pcre2_jit_stack_create_8(MIN_JIT_STACK, max, ptr::null_mut()) })
        else {
            return false;
        };
        // SAFETY: with a null callback, the third argument is the stack to
        // use; it stays alive as long as the context (both are ours, and
        // the old stack is freed only after the context stops naming it).
        unsafe {
            pcre2_jit_stack_assign_8(self.context.as_ptr(), None, stack.as_ptr().cast());
            if let Some(old) = self.jit_stack.replace(stack) {
                pcre2_jit_stack_free_8(old.as_ptr());
            }
        }
        true
    }

    /// Makes room for `pairs` offset pairs. False when PCRE2 could not
    /// allocate.
    fn reserve(&mut self, pairs: u32) -> bool {
        if self.pairs >= pairs {
            return true;
        }
        let Some(data) = new_match_data(pairs) else {
            return false;
        };
        // SAFETY: the old match data is ours and no longer used.
        unsafe { pcre2_match_data_free_8(self.data.as_ptr()) };
        self.data = data;
        self.pairs = pairs;
        true
    }

    /// Frees the interpreter's backtracking memory kept in the match data
    /// when it grew past `keep` bytes (PCRE2 keeps it for the next match).
    pub fn trim(&mut self, keep: usize) {
        // SAFETY: `data` is a valid match data.
        let held = unsafe { pcre2_get_match_data_heapframes_size_8(self.data.as_ptr()) };
        if held > keep
            && let Some(data) = new_match_data(self.pairs)
        {
            // SAFETY: the old match data is ours and no longer used.
            unsafe { pcre2_match_data_free_8(self.data.as_ptr()) };
            self.data = data;
        }
    }

    /// Runs `code` on `subject` from byte `start` (`pcre2_match`, or
    /// `pcre2_dfa_match` when `dfa`) with match `options`, and returns
    /// PCRE2's result: the number of offset pairs set, 0 when there were
    /// more than `pairs`, or a negative error code. The pairs are then read
    /// with [`Matcher::pair`].
    ///
    /// A [`Subject::Utf8`] subject is passed with `PCRE2_NO_UTF_CHECK`
    /// (Rust has checked it) when `start` is on a character boundary; any
    /// other start is refused as PCRE2 would (`PCRE2_ERROR_BADUTFOFFSET`).
    pub fn exec(
        &mut self,
        code: &Code,
        subject: Subject<'_>,
        start: usize,
        options: u32,
        dfa: bool,
        pairs: usize,
    ) -> i32 {
        let pairs = u32::try_from(pairs.max(1)).unwrap_or(u32::MAX);
        if !self.reserve(pairs) {
            return ERROR_NOMEMORY;
        }
        let mut options = options;
        if let Subject::Utf8(s) = subject {
            if start <= s.len() && !s.is_char_boundary(start) {
                return -36; // PCRE2_ERROR_BADUTFOFFSET
            }
            // Valid UTF-8 (a `str`) and a start on a boundary: exactly
            // what PCRE2_NO_UTF_CHECK requires.
            options |= PCRE2_NO_UTF_CHECK;
        }
        let bytes = subject.bytes();
        // SAFETY: `code`, `data` and `context` are valid PCRE2 objects; the
        // subject pointer is valid for `bytes.len()` bytes for the whole
        // call; PCRE2 checks `start` against the length itself. The DFA
        // workspace is a local array whose length is passed.
        unsafe {
            if dfa {
                let mut workspace = [0 as c_int; DFA_WORKSPACE];
                pcre2_dfa_match_8(
                    code.ptr.as_ptr(),
                    bytes.as_ptr(),
                    bytes.len(),
                    start,
                    options,
                    self.data.as_ptr(),
                    self.context.as_ptr(),
                    workspace.as_mut_ptr(),
                    workspace.len(),
                )
            } else {
                pcre2_match_8(
                    code.ptr.as_ptr(),
                    bytes.as_ptr(),
                    bytes.len(),
                    start,
                    options,
                    self.data.as_ptr(),
                    self.context.as_ptr(),
                )
            }
        }
    }

    /// Offset pair `i` of the last match: `None` when unset (or past the
    /// pairs the match data holds).
    pub fn pair(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.pairs as usize {
            return None;
        }
        // SAFETY: the ovector holds `2 * pairs` size_t values and lives as
        // long as `data`, which `&self` keeps alive and unchanged.
        let (s, e) = unsafe {
            let ov = pcre2_get_ovector_pointer_8(self.data.as_ptr());
            (*ov.add(2 * i), *ov.add(2 * i + 1))
        };
        (s != PCRE2_UNSET && e != PCRE2_UNSET).then_some((s, e))
    }
}
