//! `[consumer.NAME]` tables and the `[consumers]` file → the consumer index
//! (`crate::auth::consumer`): password hashes parsed, JWT keys loaded and
//! fitted to their algorithm, a name or credential used twice refused, each
//! error at the table (or file line) that says it.

use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::paths::{Paths, os_reason};
use super::{only_one, table_place};
use crate::auth::consumer::{Consumer, Consumers, JwtCredential};
use crate::config::error::{ConfigError, Source};
use crate::config::file::{RawConsumer, RawFile};

/// Every consumer of the configuration, and the consumers file (watched
/// with conf.d) when there is one.
pub(super) fn consumers(
    parsed: &[(&Source<'_>, &RawFile)],
    paths: &Paths,
) -> Result<(Arc<Consumers>, Option<PathBuf>), ConfigError> {
    let mut index = Consumers::default();
    for (src, raw) in parsed {
        for (name, def) in &raw.consumer {
            let place = table_place(src, name, def);
            let consumer = consumer(src, name, def, paths)?;
            index
                .insert(consumer)
                .map_err(|e| ConfigError::at(&place, e))?;
        }
    }
    let Some((src, table)) = only_one(parsed, "`[consumers]`", |r| r.consumers.as_ref())? else {
        return Ok((Arc::new(index), None));
    };
    let file = &table.get_ref().file;
    let path = paths.resolve(file.get_ref());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let message = format!(
            "cannot read consumers file {}: {}",
            path.display(),
            os_reason(&e)
        );
        src.err(file.span(), message)
    })?;
    let at_file = |e: String| ConfigError::at(&src.place(file.span()), e);
    for consumer in Consumers::parse_file(&text, &path).map_err(at_file)? {
        index
            .insert(consumer)
            .map_err(|e| at_file(format!("{}: {e}", path.display())))?;
    }
    Ok((Arc::new(index), Some(path)))
}

fn consumer(
    src: &Source<'_>,
    name: &Spanned<String>,
    def: &Spanned<RawConsumer>,
    paths: &Paths,
) -> Result<Consumer, ConfigError> {
    let r = def.get_ref();
    let strings = |list: &Option<Spanned<Vec<Spanned<String>>>>| -> Vec<String> {
        list.iter()
            .flat_map(|l| l.get_ref())
            .map(|s| s.get_ref().clone())
            .collect()
    };
    if let Some(empty) = r
        .keys
        .iter()
        .flat_map(|l| l.get_ref())
        .find(|k| k.get_ref().is_empty())
    {
        return Err(src.err(empty.span(), "an API key cannot be empty"));
    }
    let jwt = match &r.jwt {
        None => None,
        Some(j) => {
            let jr = j.get_ref();
            let file_pem = match &jr.public_key_file {
                None => None,
                Some(f) => {
                    let path = paths.resolve(f.get_ref());
                    let pem = std::fs::read(&path).map_err(|e| {
                        let message = format!(
                            "cannot read `public_key_file` {}: {}",
                            path.display(),
                            os_reason(&e)
                        );
                        src.err(f.span(), message)
                    })?;
                    Some(pem)
                }
            };
            if jr.public_key.is_some() && file_pem.is_some() {
                return Err(src.err(j.span(), "give `public_key` or `public_key_file`, not both"));
            }
            let public =
                (jr.public_key.as_ref().map(|p| p.get_ref().as_bytes())).or(file_pem.as_deref());
            let key = jr
                .key
                .as_ref()
                .map_or_else(|| name.get_ref().clone(), |k| k.get_ref().clone());
            let credential = JwtCredential::new(
                key,
                jr.secret.as_ref().map(|s| s.get_ref().as_str()),
                public,
                jr.algorithm.as_ref().map(|a| a.get_ref().as_str()),
            );
            let at = |e: String| {
                let span = match (&jr.algorithm, e.contains("algorithm")) {
                    (Some(a), true) => a.span(),
                    _ => j.span(),
                };
                src.err(span, format!("consumer `{}`: {e}", name.get_ref()))
            };
            Some(credential.map_err(at)?)
        }
    };
    let hash = r.basic.as_ref().map(|b| &b.get_ref().password_hash);
    Consumer::from_parts(
        name.get_ref().clone(),
        strings(&r.keys),
        jwt,
        hash.map(|h| h.get_ref().as_str()),
        strings(&r.groups),
    )
    .map_err(|e| {
        let span = hash.map_or_else(|| def.span(), |h| h.span());
        src.err(span, e)
    })
}
