//! Lines made by Debian's real `htpasswd` (apache2-utils, installed by
//! test.sh) for every scheme it writes, checked with our verifier.

use super::*;

/// `htpasswd -nb FLAGS user password`'s line; panics (fails the test) when
/// the binary is missing rather than skipping.
fn htpasswd_line(flags: &[&str], user: &str, password: &str) -> String {
    let out = std::process::Command::new("htpasswd")
        .arg("-nb")
        .args(flags)
        .arg(user)
        .arg(password)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run htpasswd ({e}): install apache2-utils (test.sh does)")
        });
    assert!(out.status.success(), "htpasswd {flags:?} failed: {out:?}");
    let line = String::from_utf8(out.stdout).expect("htpasswd prints text");
    line.trim().to_string()
}

#[test]
fn every_htpasswd_scheme_verifies() {
    let cases: [(&[&str], &str); 6] = [
        (&["-B", "-C", "4"], "$2y$"),
        (&["-m"], "$apr1$"),
        (&["-s"], "{SHA}"),
        (&["-2"], "$5$"),
        (&["-5"], "$6$"),
        (&["-5", "-r", "1200"], "$6$rounds=1200$"),
    ];
    let cache = VerifyCache::new(100, Duration::from_secs(60));
    for (flags, prefix) in cases {
        let password = "s3cret pass:wörd";
        let line = htpasswd_line(flags, "alice", password);
        let file = Htpasswd::parse(&format!("# made by htpasswd\n\n{line}\n"))
            .unwrap_or_else(|e| panic!("{flags:?}: {line} refused: {e:?}"));
        let hash = file.get("alice").expect("alice is in the file");
        assert!(line.starts_with(&format!("alice:{prefix}")), "{line}");
        assert!(hash.verify(password.as_bytes()), "{flags:?} {line}");
        assert!(!hash.verify(b"s3cret pass:word"), "{flags:?} {line}");
        assert!(!hash.verify(b""), "{flags:?} {line}");
        assert!(file.verify(&cache, "alice", password.as_bytes()));
        assert!(!file.verify(&cache, "alice", b"wrong"));
        assert!(!file.verify(&cache, "bob", password.as_bytes()));
    }
}

#[test]
fn bad_lines_are_reported_with_their_numbers() {
    let good = htpasswd_line(&["-m"], "ann", "pw");
    let text = format!(
        "# users\n{good}\nnocolon\nplain:secret\n:$apr1$x$y\nann:$apr1$abc$short\n{good}\n\
         des:abJnggxhB/yWI\nsha:{{SHA}}!!!\nmd:$1$salt$hash\n"
    );
    let errs = Htpasswd::parse(&text).expect_err("bad lines");
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10], "{errs:?}");
    assert!(errs[0].message.contains("user:hash"), "{errs:?}");
    assert!(errs[1].message.contains("plain-text"), "{errs:?}");
    assert!(errs[4].message.contains("twice"), "{errs:?}");
    assert!(errs[7].message.contains("unsupported"), "{errs:?}");
}

#[test]
fn load_names_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users");
    std::fs::write(&path, "a:$apr1$x\n").expect("write");
    let err = Htpasswd::load(&path).expect_err("bad file");
    assert!(err.starts_with(&format!("{}:1: ", path.display())), "{err}");
    let err = Htpasswd::load(&dir.path().join("missing")).expect_err("missing");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn cache_remembers_only_successes_and_follows_the_stored_hash() {
    let line = htpasswd_line(&["-B", "-C", "4"], "carol", "pw1");
    let file = Htpasswd::parse(&line).expect("bcrypt line");
    let cache = VerifyCache::new(10, Duration::from_secs(60));
    assert!(!file.verify(&cache, "carol", b"nope"));
    assert!(cache.is_empty(), "a failure is not cached");
    assert!(file.verify(&cache, "carol", b"pw1"));
    assert_eq!(cache.len(), 1);
    assert!(file.verify(&cache, "carol", b"pw1"));
    assert_eq!(cache.len(), 1);
    // A new hash for the same user and password is a new key: the
    // cached success of the old file does not vouch for it.
    let other =
        Htpasswd::parse(&htpasswd_line(&["-B", "-C", "4"], "carol", "pw2")).expect("second line");
    assert!(!other.verify(&cache, "carol", b"pw1"));
    assert!(other.verify(&cache, "carol", b"pw2"));
    assert_eq!(cache.len(), 2);
    // {SHA} is cheaper than the cache key and bypasses it.
    let sha = Htpasswd::parse(&htpasswd_line(&["-s"], "dan", "x")).expect("sha");
    assert!(sha.verify(&cache, "dan", b"x"));
    assert_eq!(cache.len(), 2);
}

#[test]
fn sha_crypt_rounds_are_clamped_like_glibc() {
    let h = PasswordHash::parse(&format!("$5$rounds=10$salt${}", "a".repeat(43))).expect("parses");
    assert!(matches!(h, PasswordHash::Sha256Crypt { rounds: 1000, .. }));
    assert!(PasswordHash::parse("$5$salt$tooshort").is_err());
    assert!(PasswordHash::parse("$2y$99$abc").is_err());
}
