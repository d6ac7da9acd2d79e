//! lua-resty-core's `ngx.re.split(subject, regex, options, ctx, max, res)`
//! as a computation on byte ranges: which pieces land at which indexes of
//! the result table, and where `ctx.pos` ends. The Lua layer writes them.
//!
//! resty.core's loop is followed step by step, quirks included: positions
//! are Lua's 1-based string indexes (so a `ctx.pos` of 0 or below reaches
//! `string.sub`'s counting from the end), an empty match steps one byte
//! (one character under `u`, as everywhere in [`super`]), a later piece
//! restarts at the last empty match, and without `max` trailing empty
//! pieces are dropped.

use super::{Engine, Regex};

/// What `split` leaves in the result table and in `ctx.pos`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// `res[i + 1]` for each `i`: a byte range of the subject, or `None`
    /// for `nil`. Indexes past the end are left alone.
    pub values: Vec<Option<(usize, usize)>>,
    /// `ctx.pos` afterwards (PCRE's 0-based offset of the next search, as
    /// resty.core leaves it).
    pub ctx_pos: i64,
}

/// Lua's `string.sub(s, i, j)` on a subject of `len` bytes, as a byte range.
fn lua_sub(len: usize, i: i64, j: i64) -> (usize, usize) {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let norm = |p: i64| if p < 0 { (len_i + p + 1).max(0) } else { p };
    let start = norm(i).max(1);
    let end = norm(j).min(len_i);
    if start > end {
        return (0, 0);
    }
    let to = |p: i64| usize::try_from(p).unwrap_or(0);
    (to(start - 1), to(end))
}

/// Splits `subject` by `re` starting at Lua index `pos` (`ctx.pos`, 1 when
/// absent) into at most `max` pieces (`max <= 0`: no limit). The caller has
/// already handled `pos > #subject` (an empty result, before compiling).
/// The error is ngx_lua's `pcre_exec() failed: N`.
pub fn split(
    engine: &Engine,
    re: &Regex,
    subject: &[u8],
    pos: i64,
    max: i64,
) -> Result<Split, String> {
    let hay = re.hay(subject)?;
    let len = i64::try_from(subject.len()).unwrap_or(i64::MAX);
    let mut res: Vec<Option<(usize, usize)>> = Vec::new();
    let set = |res: &mut Vec<Option<(usize, usize)>>, idx: usize, v| {
        if res.len() < idx {
            res.resize(idx, None);
        }
        res[idx - 1] = v;
    };
    let mut sub_idx = pos;
    let mut res_idx = 0usize;
    let mut last_empty: Option<i64> = None;
    let mut ctx_pos = sub_idx - 1;
    let mut count = 1;
    loop {
        if max > 0 && count >= max {
            break;
        }
        let start = usize::try_from(ctx_pos.max(0)).unwrap_or(usize::MAX);
        let Some(caps) = engine.exec(re, hay, start)? else {
            break;
        };
        let (from, to) = caps.whole;
        ctx_pos = match hay.next_start(to, from == to) {
            Some(next) => i64::try_from(next).unwrap_or(i64::MAX),
            // resty.core's `to + 1`, past the end: a further search fails
            // on the offset (`pcre_exec() failed: -24`), as there.
            None => i64::try_from(to).unwrap_or(i64::MAX) + 1,
        };
        let from = i64::try_from(from).unwrap_or(i64::MAX) + 1;
        let to = i64::try_from(to).unwrap_or(i64::MAX) + 1;
        // resty.core inserts `sub(subj, caps[2] + 1, caps[3])` when any group
        // took part: with group 1 unset (-1, -1) that is the whole subject.
        let capture = caps.any_group().then(|| {
            caps.get(1)
                .map_or((0, subject.len()), |(s, e)| (s, e.max(s)))
        });
        if let Some(empty) = last_empty {
            sub_idx = empty;
        }
        if from == to {
            last_empty = Some(from);
        }
        if from > sub_idx || last_empty.is_none() {
            count += 1;
            res_idx += 1;
            set(
                &mut res,
                res_idx,
                Some(lua_sub(subject.len(), sub_idx, from - 1)),
            );
            if let Some(c) = capture {
                res_idx += 1;
                set(&mut res, res_idx, Some(c));
            }
            sub_idx = to;
            if sub_idx > len {
                break;
            }
        }
    }
    if max <= 0 && sub_idx > len {
        // Trailing empty pieces are dropped.
        let mut k = res_idx;
        while k >= 1 {
            if res
                .get(k - 1)
                .copied()
                .flatten()
                .is_some_and(|(s, e)| e > s)
            {
                res_idx = k;
                break;
            }
            set(&mut res, k, None);
            k -= 1;
        }
    } else {
        res_idx += 1;
        set(&mut res, res_idx, Some(lua_sub(subject.len(), sub_idx, -1)));
    }
    set(&mut res, res_idx + 1, None);
    Ok(Split {
        values: res,
        ctx_pos,
    })
}
