//! conf.d: arbitrary text through `config::load_str` (TOML parse, serde
//! into the file types, merging and validation). Invariants: no panic; an
//! error names a place in the file (or the whole file, or the built-in
//! defaults) that exists, and renders as `place: message`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(e) = moongate::config::load_str("t.toml", text) else {
        return;
    };
    assert!(!e.message.is_empty(), "an error without a message");
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("{}: ", e.place)), "{shown:?}");
    let place = &e.place;
    if place.line == 0 {
        assert_eq!(place.column, 0);
        return;
    }
    assert_eq!(place.file, Path::new("t.toml"), "{shown}");
    let line = text.split('\n').nth(place.line - 1);
    let Some(line) = line else {
        panic!("{shown}: the text has no line {}", place.line);
    };
    assert!(
        place.column >= 1 && place.column <= line.chars().count() + 1,
        "{shown}: column past the line's end"
    );
});
