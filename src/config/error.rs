//! Config errors: a place (file:line:column) and a plain-words message.
//!
//! Owns [`Place`], [`ConfigError`] and the byte-offset → line:column mapping. Knows nothing
//! of the schema; `explain` and `validate` decide what the messages say.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where something is in conf.d, so an operator can jump straight to it.
///
/// `line` and `column` are 1-based; `column` counts characters, not bytes. A place with
/// `line == 0` stands for the whole file (or directory), e.g. when it cannot be read, and
/// displays as just the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file's display name, as given to the loader (e.g. `conf.d/10-app.toml`).
    pub file: PathBuf,
    /// 1-based line number; 0 means "the whole file".
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Place {
    /// A place that names a file or directory as a whole, for errors that have no line.
    pub fn whole(file: impl Into<PathBuf>) -> Self {
        Place {
            file: file.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// A configuration error: what is wrong and where.
///
/// Kept separate from the request-path error type: a bad config never reaches a request,
/// it stops `check`/startup or makes a reload keep the old config.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Where the problem is (the second definition, for duplicates).
    pub place: Place,
    /// What is wrong, in plain words, without the place.
    pub message: String,
    /// For "defined twice" errors: where the first definition is.
    pub also: Option<Place>,
}

impl ConfigError {
    /// An error at `place`. Later stages (e.g. loading TLS certificates) use this to report
    /// against the place the config gave them.
    pub fn at(place: &Place, message: impl Into<String>) -> Self {
        ConfigError {
            place: place.clone(),
            message: message.into(),
            also: None,
        }
    }

    /// The same error, also pointing at the first definition of a duplicated thing.
    pub(crate) fn also_at(mut self, place: &Place) -> Self {
        self.also = Some(place.clone());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)?;
        if let Some(also) = &self.also {
            write!(f, " (also defined at {also})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One conf.d file's name and text, with the line starts needed to turn toml's byte spans
/// into places.
pub(crate) struct Source<'a> {
    /// Display name used in every [`Place`] from this file.
    pub name: &'a Path,
    /// The file's full text; spans index into it.
    pub text: &'a str,
    /// Byte offset where each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(name: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            name,
            text,
            line_starts,
        }
    }

    /// The place of a byte offset (clamped to the text, rounded down to a char boundary).
    pub fn place_of(&self, offset: usize) -> Place {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        Place {
            file: self.name.to_path_buf(),
            line,
            column,
        }
    }

    /// The place where a span starts.
    pub fn place(&self, span: Range<usize>) -> Place {
        self.place_of(span.start)
    }

    /// An error at the start of `span`.
    pub fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.place(span), message)
    }

    /// The text a span covers, or "" if the span is out of range.
    pub fn slice(&self, span: Range<usize>) -> &'a str {
        self.text.get(span).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, offset: usize) -> String {
        Source::new(Path::new("f.toml"), text)
            .place_of(offset)
            .to_string()
    }

    #[test]
    fn offsets_become_one_based_line_and_column() {
        let text = "a = 1\n\nbb = \"x\"\n";
        assert_eq!(at(text, 0), "f.toml:1:1");
        assert_eq!(at(text, 4), "f.toml:1:5");
        assert_eq!(at(text, 5), "f.toml:1:6"); // the newline itself
        assert_eq!(at(text, 6), "f.toml:2:1");
        assert_eq!(at(text, 12), "f.toml:3:6");
        assert_eq!(at(text, 999), "f.toml:4:1"); // past the end: after the last newline
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "k = \"éé\" x";
        // 'x' is at byte 11 (two 2-byte chars) but character column 10.
        assert_eq!(at(text, 11), "f.toml:1:10");
        // Mid-character offsets round down instead of panicking.
        assert_eq!(at(text, 6), "f.toml:1:6");
    }

    #[test]
    fn display_with_and_without_also() {
        let here = Place {
            file: "conf.d/30-x.toml".into(),
            line: 1,
            column: 1,
        };
        let first = Place {
            file: "conf.d/10-app.toml".into(),
            line: 4,
            column: 2,
        };
        let e = ConfigError::at(&here, "upstream `app` is defined twice");
        assert_eq!(
            e.to_string(),
            "conf.d/30-x.toml:1:1: upstream `app` is defined twice"
        );
        assert_eq!(
            e.also_at(&first).to_string(),
            "conf.d/30-x.toml:1:1: upstream `app` is defined twice (also defined at conf.d/10-app.toml:4:2)"
        );
        let whole = ConfigError::at(&Place::whole("conf.d"), "no *.toml files");
        assert_eq!(whole.to_string(), "conf.d: no *.toml files");
    }
}
