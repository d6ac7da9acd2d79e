//! `compress = {...}` on `[server]` and `[[route]]` → [`Settings`]: each key
//! from the route's table when it has it, else from `[server]`'s, checked
//! where it was written.

use std::sync::Arc;

use toml::Spanned;

use crate::compress::{Algorithm, Settings};
use crate::config::error::{ConfigError, Source};
use crate::config::file::RawCompress;

/// One written `compress` table and the file it is in.
pub(super) type Layer<'a> = (&'a Source<'a>, &'a Spanned<RawCompress>);

/// The settings from the route's table over `[server]`'s; `None` when
/// neither has one or the result says `enabled = false`.
pub(super) fn settings(
    server: Option<Layer<'_>>,
    route: Option<Layer<'_>>,
) -> Result<Option<Arc<Settings>>, ConfigError> {
    if server.is_none() && route.is_none() {
        return Ok(None);
    }
    // The layer that sets a key: the route's first.
    fn pick<'a, T>(
        layers: [Option<Layer<'a>>; 2],
        key: impl Fn(&'a RawCompress) -> Option<&'a Spanned<T>>,
    ) -> Option<(&'a Source<'a>, &'a Spanned<T>)> {
        layers
            .into_iter()
            .flatten()
            .find_map(|(src, table)| Some((src, key(table.get_ref())?)))
    }
    let layers = [route, server];
    let enabled = pick(layers, |t| t.enabled.as_ref()).is_none_or(|(_, v)| *v.get_ref());
    let mut settings = Settings::default();

    if let Some((src, list)) = pick(layers, |t| t.types.as_ref()) {
        if list.get_ref().is_empty() {
            let message = "`types` in `compress` is empty; list content types like \"text/html\", or set `enabled = false`";
            return Err(src.err(list.span(), message));
        }
        settings.types = list
            .get_ref()
            .iter()
            .map(|t| content_type(src, t))
            .collect::<Result<_, _>>()?;
    }
    if let Some((_, size)) = pick(layers, |t| t.min_length.as_ref()) {
        settings.min_length = size.get_ref().0;
    }
    if let Some((src, list)) = pick(layers, |t| t.algorithms.as_ref()) {
        if list.get_ref().is_empty() {
            let message = "`algorithms` in `compress` is empty; list some of \"zstd\", \"br\", \"gzip\", or set `enabled = false`";
            return Err(src.err(list.span(), message));
        }
        let mut algs = Vec::new();
        for name in list.get_ref() {
            let Some(alg) = Algorithm::from_name(name.get_ref()) else {
                let message = format!(
                    "`algorithms` lists {:?}, which moongate cannot compress in; use \"zstd\", \"br\" or \"gzip\"",
                    name.get_ref()
                );
                return Err(src.err(name.span(), message));
            };
            if algs.contains(&alg) {
                let message = format!("`algorithms` lists {:?} twice", name.get_ref());
                return Err(src.err(name.span(), message));
            }
            algs.push(alg);
        }
        settings.algorithms = algs;
    }
    if let Some((src, level)) = pick(layers, |t| t.level.as_ref()) {
        let offered = settings.algorithms.clone();
        levels(src, level, &offered, &mut settings.levels)?;
    }
    Ok(enabled.then(|| Arc::new(settings)))
}

/// One `types` entry: `type/subtype`, `type/*` or `*`, lowercased.
fn content_type(src: &Source<'_>, t: &Spanned<String>) -> Result<String, ConfigError> {
    let text = t.get_ref().trim().to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let ok = text == "*"
        || text
            .split_once('/')
            .is_some_and(|(major, minor)| token(major) && (minor == "*" || token(minor)));
    if ok {
        Ok(text)
    } else {
        let message = format!(
            "`types` lists {:?}, which is not a content type like \"text/html\", \"text/*\" or \"*\" (no parameters)",
            t.get_ref()
        );
        Err(src.err(t.span(), message))
    }
}

/// `level = N` (every offered coding, within each one's range) or
/// `level = { gzip = N, br = N, zstd = N }`.
fn levels(
    src: &Source<'_>,
    level: &Spanned<toml::Value>,
    offered: &[Algorithm],
    out: &mut [i32; 3],
) -> Result<(), ConfigError> {
    let all = [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd];
    let check = |alg: Algorithm, value: &toml::Value| -> Result<i32, ConfigError> {
        let range = alg.levels();
        match value.as_integer() {
            // Within an i32 range, so the conversion holds.
            Some(n) if range.contains(&n) => Ok(i32::try_from(n).unwrap_or(0)),
            Some(n) => Err(src.err(
                level.span(),
                format!(
                    "`level` {n} is out of range for {}: {}..={}",
                    alg.token(),
                    range.start(),
                    range.end()
                ),
            )),
            None => Err(src.err(
                level.span(),
                format!("`level` for {} must be an integer", alg.token()),
            )),
        }
    };
    match level.get_ref() {
        toml::Value::Integer(_) => {
            for (slot, alg) in out.iter_mut().zip(all) {
                if offered.contains(&alg) {
                    *slot = check(alg, level.get_ref())?;
                }
            }
        }
        toml::Value::Table(table) => {
            for (name, value) in table {
                let Some(alg) = Algorithm::from_name(name) else {
                    let message = format!(
                        "`level` names {name:?}; give levels for \"gzip\", \"br\" or \"zstd\""
                    );
                    return Err(src.err(level.span(), message));
                };
                if let Some((slot, _)) = out.iter_mut().zip(all).find(|(_, a)| *a == alg) {
                    *slot = check(alg, value)?;
                }
            }
        }
        _ => {
            let message = "`level` is one integer for every coding, or a table like { gzip = 6, br = 4, zstd = 3 }";
            return Err(src.err(level.span(), message));
        }
    }
    Ok(())
}
