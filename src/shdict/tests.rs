//! Unit tests for [`super`]: deterministic time (`t0 + n seconds`), no sleeps.

use super::*;
use std::thread;

fn s(b: &'static [u8]) -> Value {
    Value::Str(Bytes::from_static(b))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Cost of a key of `k` bytes holding a string of `v` bytes.
fn cost(k: usize, v: usize) -> usize {
    store::slot(store::ITEM_OVERHEAD + k + v)
}

/// Bytes charged to items.
fn used(d: &SharedDict) -> usize {
    d.lock().used()
}

/// A string whose item takes one whole slab page.
fn page() -> Value {
    long(3000)
}

/// A string of `n` bytes.
fn long(n: usize) -> Value {
    Value::Str(Bytes::from(vec![b'x'; n]))
}

#[test]
fn accounting_follows_nginx_slab() {
    assert_eq!(store::slot(1), 8);
    assert_eq!(store::slot(77), 128);
    assert_eq!(store::slot(2048), 2048);
    assert_eq!(store::slot(2049), 4096);
    assert_eq!(store::slot(9000), 12288);
    // ngx_lua's free_space() of an empty 1 MiB dict (lua-resty-core's
    // shdict tests expect 1032192 or 1036288).
    let d = SharedDict::new("d", 1 << 20);
    assert_eq!((d.capacity(), d.free_space()), (1 << 20, 1_032_192));
    // Items of a 128-byte slot share the page of the dict's header (32
    // slots): 31 fit there, the 32nd takes a new page.
    let t0 = Instant::now();
    for i in 0..31 {
        d.set(format!("k{i:02}").as_bytes(), Some(s(b"v")), None, 0, t0)
            .unwrap();
    }
    assert_eq!(d.free_space(), 1_032_192);
    d.set(b"one more", Some(s(b"v")), None, 0, t0).unwrap();
    assert_eq!(d.free_space(), 1_032_192 - 4096);
    // A zone too small for nginx's pool holds nothing.
    assert_eq!(store::usable(4096), 0);

    // Slots of one size share pages; another size needs a page of its own.
    let d = SharedDict::with_room("d", 2 * store::PAGE);
    let half = long(1900); // a 2048-byte slot
    for k in [&b"a"[..], b"b", b"c", b"e"] {
        assert_eq!(d.safe_set(k, Some(half.clone()), None, 0, t0), Ok(false));
    }
    assert_eq!(d.free_space(), 0);
    assert_eq!(
        d.safe_set(b"f", Some(s(b"v")), None, 0, t0),
        Err(DictError::NoMemory)
    );
    d.delete(b"a");
    d.delete(b"b");
    assert_eq!(d.safe_set(b"f", Some(s(b"v")), None, 0, t0), Ok(false));
    assert_eq!(d.safe_set(b"g", Some(s(b"v")), None, 0, t0), Ok(false));
    assert_eq!(
        d.safe_set(b"a", Some(half.clone()), None, 0, t0),
        Err(DictError::NoMemory)
    );

    // A page of 32-byte slots keeps its bitmap in one of them: 127 list
    // elements of 3 bytes fit (ngx_lua's t/145 "lpush return nil").
    let d = SharedDict::with_room("d", 2 * store::PAGE);
    for n in 1..=127 {
        assert_eq!(d.rpush(b"q", s(b"bar"), t0), Ok(n));
    }
    assert_eq!(d.rpush(b"q", s(b"bar"), t0), Err(DictError::NoMemory));
}

#[test]
fn set_and_get_each_type_with_flags() {
    let d = SharedDict::new("dogs", 1 << 20);
    let t0 = Instant::now();
    let bin = Value::Str(Bytes::from_static(b"a\0b\xff\0"));
    assert_eq!(
        d.set(b"bool", Some(Value::Bool(false)), None, 1, t0),
        Ok(false)
    );
    assert_eq!(
        d.set(b"num", Some(Value::Number(-2.5)), None, 2, t0),
        Ok(false)
    );
    assert_eq!(d.set(b"k\0ey", Some(bin.clone()), None, 7, t0), Ok(false));
    assert_eq!(d.get(b"bool", t0), Ok(Some((Value::Bool(false), 1))));
    assert_eq!(d.get(b"num", t0), Ok(Some((Value::Number(-2.5), 2))));
    assert_eq!(d.get(b"k\0ey", t0), Ok(Some((bin, 7))));
    assert_eq!(d.get(b"k", t0), Ok(None));
    d.set(b"num", Some(s(b"now a string")), None, 0, t0)
        .unwrap();
    assert_eq!(d.get(b"num", t0), Ok(Some((s(b"now a string"), 0))));
    assert_eq!(d.set(b"num", None, None, 0, t0), Ok(false));
    assert_eq!(d.get(b"num", t0), Ok(None));
    d.delete(b"bool");
    assert_eq!(d.get(b"bool", t0), Ok(None));
    assert_eq!(d.name(), "dogs");
}

#[test]
fn ttl_expiry_and_get_stale() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    d.set(b"k", Some(s(b"v")), Some(secs(5)), 3, t0).unwrap();
    d.set(b"forever", Some(s(b"v")), Some(Duration::ZERO), 0, t0)
        .unwrap();
    assert_eq!(d.get(b"k", t0 + secs(4)), Ok(Some((s(b"v"), 3))));
    assert_eq!(
        d.get_stale(b"k", t0 + secs(4)),
        Ok(Some((s(b"v"), 3, false)))
    );
    assert_eq!(d.get(b"k", t0 + secs(5)), Ok(None));
    assert_eq!(
        d.get_stale(b"k", t0 + secs(6)),
        Ok(Some((s(b"v"), 3, true)))
    );
    assert_eq!(
        d.get(b"forever", t0 + secs(100_000)),
        Ok(Some((s(b"v"), 0)))
    );
    assert_eq!(d.flush_expired(0, t0 + secs(6)), 1);
    assert_eq!(d.get_stale(b"k", t0 + secs(6)), Ok(None));
}

#[test]
fn add_replace_and_safe_variants() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    assert_eq!(d.add(b"k", Some(s(b"1")), Some(secs(5)), 0, t0), Ok(false));
    assert_eq!(
        d.add(b"k", Some(s(b"2")), None, 0, t0),
        Err(DictError::Exists)
    );
    assert_eq!(
        d.safe_add(b"k", Some(s(b"2")), None, 0, t0),
        Err(DictError::Exists)
    );
    assert_eq!(d.get(b"k", t0), Ok(Some((s(b"1"), 0))));
    // Expired counts as absent for both add and replace.
    let t6 = t0 + secs(6);
    assert_eq!(
        d.replace(b"k", Some(s(b"3")), None, 0, t6),
        Err(DictError::NotFound)
    );
    assert_eq!(d.safe_add(b"k", Some(s(b"4")), None, 0, t6), Ok(false));
    assert_eq!(d.replace(b"k", Some(s(b"5")), None, 9, t6), Ok(false));
    assert_eq!(d.get(b"k", t6), Ok(Some((s(b"5"), 9))));
    assert_eq!(
        d.replace(b"nope", Some(s(b"5")), None, 0, t6),
        Err(DictError::NotFound)
    );
    assert_eq!(
        d.safe_set(b"n", Some(Value::Number(1.0)), None, 0, t6),
        Ok(false)
    );
    assert_eq!(d.get(b"n", t6), Ok(Some((Value::Number(1.0), 0))));
}

#[test]
fn incr_with_and_without_init() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    assert_eq!(d.incr(b"c", 1.0, None, None, t0), Err(DictError::NotFound));
    assert_eq!(
        d.incr(b"c", 2.0, Some(10.0), Some(secs(10)), t0),
        Ok((12.0, false))
    );
    assert_eq!(d.ttl(b"c", t0), Ok(Some(secs(10))));
    // init and init_ttl are ignored once the key exists.
    assert_eq!(
        d.incr(b"c", -0.5, Some(100.0), Some(secs(99)), t0 + secs(1)),
        Ok((11.5, false))
    );
    assert_eq!(d.ttl(b"c", t0 + secs(1)), Ok(Some(secs(9))));
    assert_eq!(
        d.get(b"c", t0 + secs(1)),
        Ok(Some((Value::Number(11.5), 0)))
    );
    // Once expired it is not found again, or restarts from init.
    let t11 = t0 + secs(11);
    assert_eq!(d.incr(b"c", 1.0, None, None, t11), Err(DictError::NotFound));
    assert_eq!(d.incr(b"c", 1.0, Some(0.0), None, t11), Ok((1.0, false)));
    assert_eq!(d.ttl(b"c", t11), Ok(None));
    // An existing number keeps its flags and ttl.
    d.set(b"f", Some(Value::Number(1.0)), Some(secs(3)), 5, t0)
        .unwrap();
    assert_eq!(d.incr(b"f", 1.0, None, None, t0), Ok((2.0, false)));
    assert_eq!(d.get(b"f", t0), Ok(Some((Value::Number(2.0), 5))));
    assert_eq!(d.ttl(b"f", t0), Ok(Some(secs(3))));
    d.set(b"s", Some(s(b"1")), None, 0, t0).unwrap();
    assert_eq!(
        d.incr(b"s", 1.0, Some(0.0), None, t0),
        Err(DictError::NotANumber)
    );
    d.rpush(b"l", Value::Number(1.0), t0).unwrap();
    assert_eq!(
        d.incr(b"l", 1.0, None, None, t0),
        Err(DictError::NotANumber)
    );
}

#[test]
fn lists_push_pop_len_and_wrong_type() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    assert_eq!(d.rpush(b"q", s(b"a"), t0), Ok(1));
    assert_eq!(d.rpush(b"q", Value::Number(2.0), t0), Ok(2));
    assert_eq!(d.lpush(b"q", s(b"c"), t0), Ok(3));
    assert_eq!(d.llen(b"q", t0), Ok(3));
    assert_eq!(d.get(b"q", t0), Err(DictError::IsList));
    assert_eq!(d.get_stale(b"q", t0), Err(DictError::IsList));
    assert_eq!(d.lpop(b"q", t0), Ok(Some(s(b"c"))));
    assert_eq!(d.rpop(b"q", t0), Ok(Some(Value::Number(2.0))));
    assert_eq!(d.rpop(b"q", t0), Ok(Some(s(b"a"))));
    // The emptied list is gone, memory included.
    assert_eq!(d.get_keys(0, t0), Vec::<Bytes>::new());
    assert_eq!(used(&d), 0);
    assert_eq!(d.lpop(b"q", t0), Ok(None));
    assert_eq!(d.llen(b"q", t0), Ok(0));

    d.set(b"str", Some(s(b"x")), None, 0, t0).unwrap();
    assert_eq!(d.lpush(b"str", s(b"a"), t0), Err(DictError::WrongType));
    assert_eq!(d.rpop(b"str", t0), Err(DictError::WrongType));
    assert_eq!(d.llen(b"str", t0), Err(DictError::WrongType));
    assert_eq!(
        d.rpush(b"q", Value::Bool(true), t0),
        Err(DictError::WrongType)
    );
    // An expired scalar is replaced by a new list.
    d.set(b"old", Some(s(b"x")), Some(secs(1)), 0, t0).unwrap();
    assert_eq!(d.rpush(b"old", s(b"y"), t0 + secs(2)), Ok(1));
    assert_eq!(d.ttl(b"old", t0 + secs(2)), Ok(None));
    // set may overwrite a list.
    assert_eq!(d.set(b"old", Some(s(b"z")), None, 0, t0), Ok(false));
    assert_eq!(d.get(b"old", t0), Ok(Some((s(b"z"), 0))));
}

#[test]
fn ttl_and_expire() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    assert_eq!(d.ttl(b"k", t0), Err(DictError::NotFound));
    assert_eq!(d.expire(b"k", Some(secs(1)), t0), Err(DictError::NotFound));
    d.set(b"k", Some(s(b"v")), None, 0, t0).unwrap();
    assert_eq!(d.ttl(b"k", t0), Ok(None));
    assert_eq!(d.expire(b"k", Some(secs(10)), t0), Ok(()));
    assert_eq!(d.ttl(b"k", t0 + secs(4)), Ok(Some(secs(6))));
    assert_eq!(d.expire(b"k", Some(secs(1)), t0 + secs(4)), Ok(()));
    assert_eq!(d.get(b"k", t0 + secs(5)), Ok(None));
    assert_eq!(d.ttl(b"k", t0 + secs(5)), Err(DictError::NotFound));
    assert_eq!(d.expire(b"k", None, t0 + secs(5)), Err(DictError::NotFound));
    d.set(b"j", Some(s(b"v")), Some(secs(2)), 0, t0).unwrap();
    assert_eq!(d.expire(b"j", None, t0), Ok(()));
    assert_eq!(d.ttl(b"j", t0 + secs(50)), Ok(None));
    // The expiry index follows expire(): only the expired k is freed.
    assert_eq!(d.flush_expired(0, t0 + secs(50)), 1);
    assert_eq!(d.get(b"j", t0 + secs(50)), Ok(Some((s(b"v"), 0))));
}

#[test]
fn flush_all_then_flush_expired() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    for k in [&b"a"[..], b"b", b"c"] {
        d.set(k, Some(s(b"v")), None, 0, t0).unwrap();
    }
    d.rpush(b"l", s(b"x"), t0).unwrap();
    let charged = used(&d);
    d.flush_all();
    assert_eq!(d.get(b"a", t0), Ok(None));
    assert_eq!(d.llen(b"l", t0), Ok(0));
    assert_eq!(d.get_stale(b"b", t0), Ok(Some((s(b"v"), 0, true))));
    assert_eq!(d.get_keys(0, t0), Vec::<Bytes>::new());
    assert_eq!(used(&d), charged);
    assert_eq!(d.flush_expired(3, t0), 3);
    assert_eq!(d.flush_expired(0, t0), 1);
    assert_eq!(d.flush_expired(0, t0), 0);
    assert_eq!(used(&d), 0);
    // The dict works normally afterwards.
    d.set(b"a", Some(s(b"new")), None, 0, t0).unwrap();
    assert_eq!(d.get(b"a", t0), Ok(Some((s(b"new"), 0))));
}

#[test]
fn flush_expired_frees_only_expired() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    d.set(b"a", Some(s(b"v")), Some(secs(1)), 0, t0).unwrap();
    d.set(b"b", Some(s(b"v")), Some(secs(2)), 0, t0).unwrap();
    d.set(b"c", Some(s(b"v")), Some(secs(9)), 0, t0).unwrap();
    d.set(b"d", Some(s(b"v")), None, 0, t0).unwrap();
    assert_eq!(d.flush_expired(0, t0 + secs(3)), 2);
    assert_eq!(d.get_keys(0, t0 + secs(3)).len(), 2);
    assert_eq!(d.get_stale(b"a", t0 + secs(3)), Ok(None));
}

#[test]
fn get_keys_limit_order_and_liveness() {
    let d = SharedDict::new("d", 1 << 20);
    let t0 = Instant::now();
    for k in [&b"k1"[..], b"k2", b"k3", b"k4"] {
        d.set(k, Some(Value::Bool(true)), None, 0, t0).unwrap();
    }
    d.set(b"gone", Some(Value::Bool(true)), Some(secs(1)), 0, t0)
        .unwrap();
    let _ = d.get(b"k1", t0);
    let t2 = t0 + secs(2);
    assert_eq!(
        d.get_keys(2, t2),
        vec![Bytes::from_static(b"k1"), Bytes::from_static(b"k4")]
    );
    let mut all = d.get_keys(0, t2);
    all.sort();
    assert_eq!(
        all,
        [&b"k1"[..], b"k2", b"k3", b"k4"]
            .map(Bytes::from_static)
            .to_vec()
    );
}

#[test]
fn capacity_and_free_space_track_items() {
    let d = SharedDict::with_room("d", 10 * store::PAGE);
    let t0 = Instant::now();
    assert_eq!(d.free_space(), 10 * store::PAGE);
    d.set(b"key", Some(s(b"12345")), None, 0, t0).unwrap();
    assert_eq!(used(&d), cost(3, 5));
    assert_eq!(d.free_space(), 9 * store::PAGE);
    d.set(b"key", Some(Value::Number(1.0)), None, 0, t0)
        .unwrap();
    assert_eq!(used(&d), cost(3, 8));
    d.rpush(b"l", s(b"ab"), t0).unwrap();
    d.rpush(b"l", s(b"cde"), t0).unwrap();
    let elem = |n| store::slot(store::LIST_NODE_OVERHEAD + n);
    let list = store::slot(store::ITEM_OVERHEAD + 1 + 16) + elem(2) + elem(3);
    assert_eq!(used(&d), cost(3, 8) + list);
    d.lpop(b"l", t0).unwrap();
    assert_eq!(used(&d), cost(3, 8) + list - elem(2));
    d.delete(b"key");
    d.delete(b"l");
    assert_eq!(used(&d), 0);
    assert_eq!(d.free_space(), 10 * store::PAGE);
}

#[test]
fn full_dict_evicts_least_recently_used() {
    // Room for exactly three one-byte keys with one-page values.
    let d = SharedDict::with_room("d", 3 * cost(1, 3000));
    let t0 = Instant::now();
    for k in [&b"a"[..], b"b", b"c"] {
        assert_eq!(d.set(k, Some(page()), None, 0, t0), Ok(false));
    }
    assert_eq!(used(&d), 3 * cost(1, 3000));
    assert!(d.get(b"a", t0).is_ok_and(|v| v.is_some()));
    assert_eq!(d.set(b"d", Some(page()), None, 0, t0), Ok(true));
    assert_eq!(d.get(b"b", t0), Ok(None));
    assert!(d.get(b"a", t0).is_ok_and(|v| v.is_some()));
    assert!(d.get(b"c", t0).is_ok_and(|v| v.is_some()));
    assert!(d.get(b"d", t0).is_ok_and(|v| v.is_some()));
    // Overwriting a key with a bigger value evicts others, never itself.
    assert_eq!(d.set(b"d", Some(long(5000)), None, 0, t0), Ok(true));
    assert_eq!(d.get(b"d", t0), Ok(Some((long(5000), 0))));
    assert_eq!(d.get(b"a", t0), Ok(None));
    assert!(d.get(b"c", t0).is_ok_and(|v| v.is_some()));
}

#[test]
fn expired_items_go_before_live_ones() {
    let d = SharedDict::with_room("d", 3 * cost(1, 3000));
    let t0 = Instant::now();
    d.set(b"a", Some(page()), None, 0, t0).unwrap();
    d.set(b"b", Some(page()), None, 0, t0).unwrap();
    d.set(b"c", Some(page()), Some(secs(1)), 0, t0).unwrap();
    let t2 = t0 + secs(2);
    assert_eq!(d.set(b"d", Some(page()), None, 0, t2), Ok(false));
    assert!(d.get(b"a", t2).is_ok_and(|v| v.is_some()));
    assert!(d.get(b"b", t2).is_ok_and(|v| v.is_some()));
    assert_eq!(d.get_stale(b"c", t2), Ok(None));
    // incr with init evicts like set, and says so.
    assert_eq!(d.incr(b"e", 1.0, Some(0.0), None, t2), Ok((1.0, true)));
}

#[test]
fn safe_operations_and_push_never_evict() {
    let d = SharedDict::with_room("d", 2 * cost(1, 3000));
    let t0 = Instant::now();
    d.set(b"a", Some(page()), None, 0, t0).unwrap();
    d.set(b"b", Some(page()), Some(secs(1)), 0, t0).unwrap();
    assert_eq!(
        d.safe_set(b"c", Some(page()), None, 0, t0),
        Err(DictError::NoMemory)
    );
    assert_eq!(
        d.safe_add(b"c", Some(page()), None, 0, t0),
        Err(DictError::NoMemory)
    );
    assert_eq!(d.rpush(b"c", page(), t0), Err(DictError::NoMemory));
    assert_eq!(d.get_keys(0, t0).len(), 2);
    // A failed safe_set has freed the old value first, as ngx_lua's does.
    assert_eq!(
        d.safe_set(b"a", Some(long(5000)), None, 0, t0),
        Err(DictError::NoMemory)
    );
    assert_eq!(d.get(b"a", t0), Ok(None));
    d.set(b"a", Some(page()), None, 0, t0).unwrap();
    // Expired items are still fair game.
    let t2 = t0 + secs(2);
    assert_eq!(d.safe_set(b"c", Some(page()), None, 0, t2), Ok(false));
    assert!(d.get(b"a", t2).is_ok_and(|v| v.is_some()));
    assert!(d.get(b"c", t2).is_ok_and(|v| v.is_some()));
}

#[test]
fn an_item_larger_than_the_dict_is_refused() {
    let d = SharedDict::with_room("d", 4 * store::PAGE);
    let t0 = Instant::now();
    let big = long(5 * store::PAGE);
    // Alone in the dict: refused, nothing evicted.
    assert_eq!(
        d.set(b"k", Some(big.clone()), None, 0, t0),
        Err(DictError::NoMemory)
    );
    d.set(b"k", Some(s(b"small")), None, 0, t0).unwrap();
    d.set(b"other", Some(s(b"small")), None, 0, t0).unwrap();
    // safe_set evicts nothing, but the old value is freed first.
    assert_eq!(
        d.safe_set(b"other", Some(big.clone()), None, 0, t0),
        Err(DictError::NoMemory)
    );
    assert_eq!(d.get(b"other", t0), Ok(None));
    // set evicts (up to 30 items) before it gives up: forcible.
    assert_eq!(
        d.set(b"x", Some(big.clone()), None, 0, t0),
        Err(DictError::NoMemoryForcible)
    );
    assert_eq!(d.get(b"k", t0), Ok(None));
    assert_eq!(d.rpush(b"l", big.clone(), t0), Err(DictError::NoMemory));
    assert_eq!(
        check_len(&big, 5 * store::PAGE - 1),
        Err(DictError::ValueTooLarge)
    );
    assert_eq!(check_len(&big, 5 * store::PAGE), Ok(()));
}

#[test]
fn errors_display_as_ngx_lua_strings() {
    let all = [
        (DictError::NoMemory, "no memory"),
        (DictError::Exists, "exists"),
        (DictError::NotFound, "not found"),
        (DictError::NotANumber, "not a number"),
        (DictError::WrongType, "value not a list"),
        (DictError::ValueTooLarge, "value too large"),
        (DictError::IsList, "value is a list"),
        (DictError::NilValue, "attempt to add or replace nil values"),
        (DictError::NoMemoryForcible, "no memory"),
    ];
    for (e, text) in all {
        assert_eq!(e.to_string(), text);
    }
}

#[test]
fn reconcile_keeps_unchanged_dicts() {
    let dicts = Dicts::new();
    let t0 = Instant::now();
    let first = dicts.reconcile(&[
        ("a".into(), 65536),
        ("b".into(), 65536),
        ("c".into(), 65536),
    ]);
    for d in first.values() {
        d.set(b"k", Some(Value::Bool(true)), None, 0, t0).unwrap();
    }
    let second = dicts.reconcile(&[
        ("a".into(), 65536),
        ("b".into(), 131072),
        ("d".into(), 65536),
    ]);
    assert_eq!(second.keys().collect::<Vec<_>>(), ["a", "b", "d"]);
    assert!(Arc::ptr_eq(&first["a"], &second["a"]));
    assert_eq!(second["a"].get(b"k", t0), Ok(Some((Value::Bool(true), 0))));
    assert!(!Arc::ptr_eq(&first["b"], &second["b"]));
    assert_eq!(second["b"].capacity(), 131072);
    assert_eq!(second["b"].get(b"k", t0), Ok(None));
    assert_eq!(second["d"].name(), "d");
    assert!(dicts.get("c").is_none());
    // A dropped dict comes back empty.
    let third = dicts.reconcile(&[("c".into(), 1000)]);
    assert_eq!(third["c"].get(b"k", t0), Ok(None));
    assert!(Arc::ptr_eq(&dicts.get("c").unwrap(), &third["c"]));
}

#[test]
fn concurrent_incr_from_four_threads() {
    let d = Arc::new(SharedDict::new("d", 1 << 20));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let d = Arc::clone(&d);
            thread::spawn(move || {
                for _ in 0..1000 {
                    d.incr(b"hits", 1.0, Some(0.0), None, t0).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(d.get(b"hits", t0), Ok(Some((Value::Number(4000.0), 0))));
}
