//! The L2 cache's files (`cache::disk::entry`) and the entry in them
//! (`cache::entry`): arbitrary bytes as read from disk. Invariants: no
//! panic; a file that decodes re-encodes to the same bytes; an entry that
//! decodes re-encodes to bytes that decode to the same entry; any one byte
//! changed in a valid file makes it a miss, never other data.
//!
//! Input: a mode byte, then 0: the file's bytes; 1: a key length byte and
//! a meta length byte, then key, meta and body, made into a valid file
//! (so the checksum is no wall), with a byte to flip chosen by the mode
//! byte's high bits; 2: an entry's meta bytes with an empty body.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use moongate::cache::entry::Entry;
use moongate::fuzz_api::{decode_disk_entry, encode_disk_entry};

/// An entry's meta and body decode; if they do, they round-trip.
fn entry_round_trip(meta: &[u8], body: &[u8]) -> Option<Entry> {
    let entry = Entry::decode(meta, Bytes::copy_from_slice(body))?;
    let (meta2, body2) = entry.encode();
    assert_eq!(Entry::decode(&meta2, body2.clone()).as_ref(), Some(&entry));
    // And through a file.
    let file = encode_disk_entry("k", &meta2, &body2).unwrap_or_else(|| panic!("cannot encode"));
    let (key, meta3, body3) =
        decode_disk_entry(&file).unwrap_or_else(|| panic!("own file refused"));
    assert_eq!((key, meta3, body3), ("k", &meta2[..], &body2[..]));
    Some(entry)
}

/// A file: if it decodes, it is exactly the encoding of what it holds.
fn file_round_trip(file: &[u8]) -> bool {
    let Some((key, meta, body)) = decode_disk_entry(file) else {
        return false;
    };
    assert_eq!(encode_disk_entry(key, meta, body).as_deref(), Some(file));
    entry_round_trip(meta, body);
    true
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 | 3 => {
            file_round_trip(rest);
        }
        1 => {
            let [klen, mlen, rest @ ..] = rest else {
                return;
            };
            let (key, rest) = rest.split_at(usize::from(*klen).min(rest.len()));
            let (meta, body) = rest.split_at(usize::from(*mlen).min(rest.len()));
            let key = String::from_utf8_lossy(key);
            let file =
                encode_disk_entry(&key, meta, body).unwrap_or_else(|| panic!("cannot encode"));
            assert!(file_round_trip(&file), "a valid file is refused");
            let mut flipped = file.clone();
            let at = (usize::from(mode >> 2) * 7919 + rest.len()) % flipped.len();
            flipped[at] ^= 1 << (mode & 7);
            assert!(
                decode_disk_entry(&flipped).is_none(),
                "byte {at} changed and still read"
            );
        }
        _ => {
            entry_round_trip(rest, b"");
        }
    }
});
