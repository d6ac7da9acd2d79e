use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::entry::{self, HEADER_LEN};
use super::{DiskOptions, DiskStore};

const WAIT: Duration = Duration::from_secs(10);

fn store(dir: &Path, max: u64) -> DiskStore {
    DiskStore::open(dir.to_path_buf(), max).unwrap()
}

fn put(s: &DiskStore, key: &str, meta: &[u8], body: &[u8]) {
    s.put(key.to_owned(), meta.to_vec(), Bytes::copy_from_slice(body));
}

fn path_of(dir: &Path, key: &str) -> PathBuf {
    entry::entry_path(dir, entry::name_of(key))
}

/// Size on disk of an entry with these lengths.
fn cost(key: &str, meta: usize, body: usize) -> u64 {
    (HEADER_LEN + key.len() + meta + body) as u64
}

#[test]
fn put_flush_get_returns_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    put(&s, "http://a/x", b"headers", &body);
    assert!(s.flush_blocking(WAIT));
    let (meta, got) = s.get_blocking("http://a/x").unwrap();
    assert_eq!(meta, b"headers");
    assert_eq!(&got[..], &body[..]);
    assert_eq!(s.len(), 1);
    assert_eq!(s.used_bytes(), cost("http://a/x", 7, 5000));
    assert_eq!(
        fs::metadata(path_of(dir.path(), "http://a/x"))
            .unwrap()
            .len(),
        s.used_bytes()
    );
    assert!(s.get_blocking("http://a/other").is_none());
}

#[tokio::test]
async fn async_get_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    put(&s, "k", b"m", b"body");
    assert!(s.flush(WAIT).await);
    let (meta, body) = s.get("k").await.unwrap();
    assert_eq!((meta.as_slice(), &body[..]), (&b"m"[..], &b"body"[..]));
    assert!(s.get("nope").await.is_none());
}

#[test]
fn entries_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = store(dir.path(), 1 << 20);
        put(&s, "a", b"meta-a", b"body-a");
        put(&s, "b", b"", b"");
        // No flush: dropping the store writes what was queued.
    }
    let s = store(dir.path(), 1 << 20);
    assert_eq!(s.len(), 2);
    assert_eq!(s.used_bytes(), cost("a", 6, 6) + cost("b", 0, 0));
    let (meta, body) = s.get_blocking("a").unwrap();
    assert_eq!(
        (meta.as_slice(), &body[..]),
        (&b"meta-a"[..], &b"body-a"[..])
    );
    let (meta, body) = s.get_blocking("b").unwrap();
    assert!(meta.is_empty() && body.is_empty());
}

#[test]
fn flipped_body_byte_is_a_miss_and_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    put(&s, "k", b"meta", b"the body");
    assert!(s.flush_blocking(WAIT));
    let path = path_of(dir.path(), "k");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    assert!(s.get_blocking("k").is_none());
    assert!(!path.exists());
    assert_eq!((s.len(), s.used_bytes()), (0, 0));
    assert_eq!(s.stats().corrupt_removed, 1);
}

#[test]
fn truncated_file_is_a_miss_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    put(&s, "k", b"meta", b"the body");
    assert!(s.flush_blocking(WAIT));
    let path = path_of(dir.path(), "k");
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(s.get_blocking("k").is_none());
    assert!(!path.exists());
    assert_eq!(s.len(), 0);
    assert_eq!(s.stats().corrupt_removed, 1);
}

#[test]
fn file_holding_another_key_is_a_miss_and_removed() {
    // What a hash collision or a misplaced file looks like to a reader.
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    put(&s, "one", b"m1", b"b1");
    put(&s, "two", b"m2", b"b2");
    assert!(s.flush_blocking(WAIT));
    fs::copy(path_of(dir.path(), "one"), path_of(dir.path(), "two")).unwrap();
    assert!(s.get_blocking("two").is_none());
    assert!(!path_of(dir.path(), "two").exists());
    assert_eq!(s.get_blocking("one").unwrap().1, Bytes::from_static(b"b1"));
}

#[test]
fn leftovers_and_garbage_are_removed_at_open_not_indexed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = store(dir.path(), 1 << 20);
        put(&s, "good", b"m", b"body");
        put(&s, "short", b"m", b"body that will be truncated");
    }
    let good = path_of(dir.path(), "good");
    let short = path_of(dir.path(), "short");
    let len = fs::metadata(&short).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let shard = good.parent().unwrap().to_path_buf();
    let tmp = shard.join(format!("{}0123456789abcdef-7", entry::TMP_PREFIX));
    fs::write(&tmp, b"half-written").unwrap();
    let garbage = shard.join("0000000000000000");
    fs::write(
        &garbage,
        b"not an entry at all, but long enough for a header",
    )
    .unwrap();
    let stray = dir.path().join("stray.txt");
    fs::write(&stray, b"x").unwrap();
    let foreign_dir = dir.path().join("lost+found");
    fs::create_dir(&foreign_dir).unwrap();

    let s = store(dir.path(), 1 << 20);
    assert_eq!(s.len(), 1);
    assert!(s.get_blocking("good").is_some());
    assert!(s.get_blocking("short").is_none());
    for gone in [&short, &tmp, &garbage, &stray] {
        assert!(!gone.exists(), "{} should be gone", gone.display());
    }
    assert!(good.exists() && foreign_dir.exists());
    assert_eq!(s.stats().corrupt_removed, 4);
}

#[test]
fn over_max_evicts_least_recently_used_and_get_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let each = cost("k1", 0, 100);
    let s = store(dir.path(), each * 3);
    for k in ["k1", "k2", "k3"] {
        put(&s, k, b"", &[7; 100]);
    }
    assert!(s.flush_blocking(WAIT));
    assert!(s.get_blocking("k1").is_some()); // k2 is now the oldest
    put(&s, "k4", b"", &[7; 100]);
    assert!(s.flush_blocking(WAIT));
    assert!(s.get_blocking("k2").is_none());
    assert!(!path_of(dir.path(), "k2").exists());
    for k in ["k1", "k3", "k4"] {
        assert!(s.get_blocking(k).is_some(), "{k}");
    }
    assert_eq!(s.used_bytes(), each * 3);
    assert_eq!(s.stats().evicted, 1);
}

#[test]
fn restart_with_a_smaller_bound_evicts_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let each = cost("k1", 0, 100);
    {
        let s = store(dir.path(), each * 3);
        for k in ["k1", "k2", "k3"] {
            put(&s, k, b"", &[1; 100]);
            // Distinct modification times: the restart order comes from them.
            assert!(s.flush_blocking(WAIT));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let s = store(dir.path(), each * 2);
    assert_eq!(s.len(), 2);
    assert!(s.get_blocking("k1").is_none());
    assert!(!path_of(dir.path(), "k1").exists());
    assert!(s.get_blocking("k3").is_some());
}

#[test]
fn overwriting_a_key_keeps_one_file_and_right_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    put(&s, "k", b"old", b"old body");
    put(&s, "k", b"new", b"new!");
    assert!(s.flush_blocking(WAIT));
    assert_eq!(s.get_blocking("k").unwrap().1, Bytes::from_static(b"new!"));
    assert_eq!((s.len(), s.used_bytes()), (1, cost("k", 3, 4)));
}

#[test]
fn entry_bigger_than_max_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 100);
    put(&s, "small", b"", b"fits");
    put(&s, "big", b"", &[0; 100]);
    assert!(s.flush_blocking(WAIT));
    assert!(s.get_blocking("big").is_none());
    assert!(!path_of(dir.path(), "big").exists());
    assert!(s.get_blocking("small").is_some());
    assert_eq!(s.stats().oversized, 1);
}

#[test]
fn full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let options = DiskOptions {
        queue_len: 16,
        queue_bytes: 50,
    };
    let s = DiskStore::open_with(dir.path().to_path_buf(), 1 << 20, options).unwrap();
    put(&s, "big", b"", &[0; 100]);
    put(&s, "small", b"", b"ok");
    assert!(s.flush_blocking(WAIT));
    assert!(s.get_blocking("big").is_none());
    assert!(s.get_blocking("small").is_some());
    assert_eq!(s.stats().dropped_writes, 1);
}

#[cfg(unix)]
#[test]
fn unwritable_dir_drops_writes_but_reads_work() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    put(&s, "before", b"m", b"stored before");
    assert!(s.flush_blocking(WAIT));
    let shard_of = |k: &str| entry::shard_dir(dir.path(), entry::name_of(k));
    let keys: Vec<String> = (0..)
        .map(|i| format!("after-{i}"))
        .filter(|k| shard_of(k) != shard_of("before"))
        .take(5)
        .collect();
    let set_mode = |mode: u32| {
        for d in [dir.path().to_path_buf(), shard_of("before")] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set_mode(0o500);
    let probe = shard_of("before").join("probe");
    let root = fs::write(&probe, b"").is_ok();
    if root {
        // Root ignores the mode: make the writes fail another way, with a
        // file where their shard directories would go.
        set_mode(0o700);
        fs::remove_file(&probe).unwrap();
        for k in &keys {
            fs::write(shard_of(k), b"in the way").unwrap();
        }
    }
    for k in &keys {
        put(&s, k, b"m", b"not stored");
    }
    assert!(s.flush_blocking(WAIT));
    let stats = s.stats();
    if root {
        for k in &keys {
            let _ = fs::remove_file(shard_of(k));
        }
    } else {
        set_mode(0o700);
    }
    assert_eq!(stats.write_errors, 5);
    assert_eq!(stats.entries, 1);
    assert!(s.get_blocking(&keys[0]).is_none());
    assert_eq!(
        s.get_blocking("before").unwrap().1,
        Bytes::from_static(b"stored before")
    );
    // Writable again: writes recover.
    put(&s, &keys[0], b"", b"x");
    assert!(s.flush_blocking(WAIT));
    assert!(s.get_blocking(&keys[0]).is_some());
}

#[test]
fn remove_and_remove_prefix_clear_index_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    for k in ["a/1", "a/2", "b/1"] {
        put(&s, k, b"", k.as_bytes());
    }
    assert!(s.flush_blocking(WAIT));
    assert!(s.remove("b/1"));
    assert!(!s.remove("b/1"));
    assert!(!path_of(dir.path(), "b/1").exists());
    assert_eq!(s.remove_prefix("a/"), 2);
    for k in ["a/1", "a/2", "b/1"] {
        assert!(s.get_blocking(k).is_none(), "{k}");
        assert!(!path_of(dir.path(), k).exists(), "{k}");
    }
    assert_eq!((s.len(), s.used_bytes()), (0, 0));
}

#[test]
fn purge_cancels_writes_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    for i in 0..200 {
        put(&s, &format!("p/{i}"), b"", &[0; 1000]);
    }
    put(&s, "k", b"", b"queued");
    s.remove("k");
    s.remove_prefix("p/");
    put(&s, "k", b"", b"after purge");
    assert!(s.flush_blocking(WAIT));
    assert_eq!(s.len(), 1);
    assert_eq!(
        s.get_blocking("k").unwrap().1,
        Bytes::from_static(b"after purge")
    );
}

#[test]
fn flush_waits_for_queued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30);
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        put(&s, k, b"meta", &[3; 4096]);
    }
    assert!(s.flush_blocking(WAIT));
    assert_eq!(s.len(), keys.len());
    for k in &keys {
        assert!(path_of(dir.path(), k).exists(), "{k}");
    }
}

#[test]
fn concurrent_puts_and_gets_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), 1 << 30));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..200 {
                    let key = format!("k{}", i % 50);
                    // The body names its key: any hit must match it.
                    let body = format!("{key}:{t}:{i}").repeat(10);
                    s.put(key.clone(), key.clone().into_bytes(), Bytes::from(body));
                    if let Some((meta, body)) = s.get_blocking(&key) {
                        assert_eq!(meta, key.as_bytes());
                        assert!(body.starts_with(format!("{key}:").as_bytes()));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(s.flush_blocking(WAIT));
    let stats = s.stats();
    assert_eq!(stats.corrupt_removed, 0);
    assert_eq!(stats.dropped_writes, 0);
    let mut sum = 0;
    for i in 0..50 {
        let key = format!("k{i}");
        if let Some((meta, body)) = s.get_blocking(&key) {
            assert_eq!(meta, key.as_bytes());
            sum += fs::metadata(path_of(dir.path(), &key)).unwrap().len();
            assert_eq!(
                cost(&key, meta.len(), body.len()),
                fs::metadata(path_of(dir.path(), &key)).unwrap().len()
            );
        }
    }
    assert_eq!(sum, s.used_bytes());
    assert_eq!(s.len(), 50);
}
