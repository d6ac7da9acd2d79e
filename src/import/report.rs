//! What the import could not carry over, and why: one [`Note`] per
//! directive (or parameter) that was dropped, translated with a
//! difference, or left out because moongate does it anyway.

use std::fmt;

use super::parse::Pos;

/// How far a directive made it into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Dropped: moongate's configuration has nothing that does this.
    NotTranslated,
    /// Translated, but moongate behaves differently in the way said.
    Differs,
    /// Dropped because moongate needs no such setting (it does it
    /// anyway, or the setting tunes something moongate does not have).
    Unneeded,
}

impl Severity {
    /// The words printed before the reason.
    pub fn label(self) -> &'static str {
        match self {
            Severity::NotTranslated => "not translated",
            Severity::Differs => "translated with a difference",
            Severity::Unneeded => "not needed",
        }
    }
}

/// Which generated file a note belongs in (besides the full report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `00-import.toml` (main, http, upstreams, zones).
    Global,
    /// The routes of the nth `server { }` block.
    Server(usize),
}

/// One thing the import has to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where the directive is.
    pub pos: Pos,
    /// The directive, shortened (`proxy_redirect off`).
    pub directive: String,
    /// What happened to it.
    pub severity: Severity,
    /// Why, in plain words.
    pub why: String,
    /// The generated file it concerns.
    pub owner: Owner,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {}: {}",
            self.pos,
            self.directive,
            self.severity.label(),
            self.why
        )
    }
}

/// Every note, in the order the directives were met.
#[derive(Debug, Default)]
pub struct Report {
    /// The notes.
    pub notes: Vec<Note>,
}

impl Report {
    /// Adds a note.
    pub fn add(
        &mut self,
        pos: &Pos,
        directive: impl Into<String>,
        severity: Severity,
        why: impl Into<String>,
        owner: Owner,
    ) {
        self.notes.push(Note {
            pos: pos.clone(),
            directive: directive.into(),
            severity,
            why: why.into(),
            owner,
        });
    }

    /// How many notes have this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.notes.iter().filter(|n| n.severity == severity).count()
    }

    /// The counts by severity, as one line: `2 not translated, 1
    /// translated with a difference, 5 not needed`.
    pub fn summary(&self) -> String {
        format!(
            "{} not translated, {} translated with a difference, {} not needed",
            self.count(Severity::NotTranslated),
            self.count(Severity::Differs),
            self.count(Severity::Unneeded)
        )
    }

    /// The notes for one generated file, in order.
    pub fn for_owner(&self, owner: Owner) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(move |n| n.owner == owner)
    }
}
