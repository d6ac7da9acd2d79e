//! Subroutine calls (`(?1)`, `(?&name)`, `(?R)`) in a translated pattern,
//! checked before fancy-regex compiles it. fancy-regex compiles a call as
//! a copy of the group it calls, and a recursive call as copies nested 19
//! deep, so calls of calls multiply: `(a|b(?1)(?1))` (13 bytes) took 5 s
//! and 670 MB to compile, and a fuzzed pattern calling itself twice ran a
//! worker out of memory. PCRE recursion is refused (as the module docs of
//! `ngx::re` say); other calls are kept while the pattern they expand to
//! stays small.

use std::collections::HashMap;

use fancy_regex::Expr;

/// The most syntax-tree nodes a pattern may expand to through calls: a
/// few megabytes of compiled program.
const MAX_EXPANDED_NODES: usize = 100_000;

/// Calls may reach groups that call others this deep (fancy-regex's own
/// limit on recursion is 19 levels).
const MAX_CALL_DEPTH: usize = 20;

/// Refuses recursion and calls that expand `pattern` (fancy-regex syntax)
/// too far. A pattern fancy-regex cannot parse passes: compiling it says why.
pub(super) fn check(pattern: &str) -> Result<(), String> {
    if !pattern.contains("\\g<") {
        return Ok(());
    }
    let Ok(tree) = Expr::parse_tree(pattern) else {
        return Ok(());
    };
    if !tree.contains_subroutines {
        return Ok(());
    }
    let mut groups = vec![&tree.expr];
    number_groups(&tree.expr, &mut groups);
    let mut sizes = Sizes {
        numbers: groups
            .iter()
            .enumerate()
            .skip(1)
            .map(|(n, g)| (*g as *const Expr, n))
            .collect(),
        state: vec![State::Unknown; groups.len()],
        groups: &groups,
    };
    sizes.group(0, 0).map(|_| ())
}

/// Pushes the capturing groups under `e` in the order they are numbered
/// (their opening parentheses: a pre-order walk).
fn number_groups<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    if matches!(e, Expr::Group(_)) {
        out.push(e);
    }
    for child in e.children_iter() {
        number_groups(child, out);
    }
}

#[derive(Clone, Copy)]
enum State {
    Unknown,
    /// Being measured: a call reaching it is a recursion.
    Busy,
    Done(usize),
}

/// The expanded size of each group, measured once.
struct Sizes<'e> {
    /// Group 0 (the whole pattern), then each capturing group's node.
    groups: &'e [&'e Expr],
    /// A capturing group's number by its node's address.
    numbers: HashMap<*const Expr, usize>,
    state: Vec<State>,
}

impl Sizes<'_> {
    /// The nodes group `n` expands to.
    fn group(&mut self, n: usize, depth: usize) -> Result<usize, String> {
        if depth > MAX_CALL_DEPTH {
            return Err(format!(
                "subroutine calls nested more than {MAX_CALL_DEPTH} deep"
            ));
        }
        let Some(&node) = self.groups.get(n) else {
            // A call to a group that does not exist: compiling says so.
            return Ok(1);
        };
        match self.state[n] {
            State::Done(size) => return Ok(size),
            State::Busy => return Err("recursive subroutine calls are not supported".into()),
            State::Unknown => {}
        }
        self.state[n] = State::Busy;
        let mut size = 1usize;
        let children: Vec<&Expr> = if n == 0 {
            vec![node]
        } else {
            node.children_iter().collect()
        };
        for child in children {
            size = size.saturating_add(self.node(child, depth)?);
        }
        self.state[n] = State::Done(size);
        Ok(size)
    }

    /// The nodes `e` expands to.
    fn node(&mut self, e: &Expr, depth: usize) -> Result<usize, String> {
        let size = if let Expr::SubroutineCall(n) = e {
            self.group(*n, depth + 1)?
        } else if let Some(&n) = self.numbers.get(&(e as *const Expr)) {
            self.group(n, depth)?
        } else {
            let mut size = 1usize;
            for child in e.children_iter() {
                size = size.saturating_add(self.node(child, depth)?);
            }
            size
        };
        if size > MAX_EXPANDED_NODES {
            return Err(format!(
                "subroutine calls expand the pattern past {MAX_EXPANDED_NODES} nodes"
            ));
        }
        Ok(size)
    }
}
