//! lua-resty-core's and lua-resty-string's modules provided natively, the
//! `debug` library, `ngx.semaphore` between requests and the details of
//! `ngx.shared.DICT`, through real requests. Each script prints what it
//! observed; the test compares it with what ngx_lua documents.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Moongate, client};

/// A server on `root/conf` (one worker, so requests share Lua state),
/// with `root/lib` on `package_path` and `toml` after `[server]`.
fn start(root: tempfile::TempDir, toml: &str) -> Moongate {
    let conf = root.path().join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    std::fs::create_dir_all(root.path().join("lib")).expect("lib dir");
    let lib = root.path().join("lib");
    let text = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1

[lua]
package_path = "{lib}/?.lua;;"
{toml}"#,
        lib = lib.display()
    );
    std::fs::write(conf.join("main.toml"), text).expect("write conf");
    Moongate::start_at(root, conf)
}

/// Writes `text` to `root/rel`, creating directories.
fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write file");
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// A route at `path` answering with `lua`.
fn route(path: &str, lua: &str) -> String {
    format!("\n[[route]]\npath_exact = \"{path}\"\nlua.content_inline = '''\n{lua}\n'''\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resty_core_modules_win_over_package_path() {
    let root = tempfile::tempdir().expect("temp dir");
    // A lua-resty-core on package_path, as Debian installs it, would call
    // nginx's C symbols; these fakes fail loudly if they are ever loaded.
    for m in [
        "resty/core/shdict",
        "resty/core/base",
        "resty/core",
        "ngx/semaphore",
    ] {
        put(
            root.path(),
            &format!("lib/{m}.lua"),
            "error('package_path copy loaded')",
        );
    }
    let mg = start(
        root,
        &route(
            "/t",
            r#"
local names = { "resty.core", "resty.core.base", "resty.core.shdict", "resty.core.var",
    "resty.core.ctx", "resty.core.regex", "resty.core.time", "resty.core.request",
    "resty.core.response", "resty.core.exit", "resty.core.worker", "resty.core.phase",
    "resty.core.uri", "resty.core.hash", "resty.core.base64", "resty.core.misc",
    "ngx.semaphore", "ngx.resp", "ngx.process", "ngx.errlog", "ngx.base64", "ngx.ssl" }
for _, name in ipairs(names) do
    local ok, m = pcall(require, name)
    if not ok or type(m) ~= "table" then
        ngx.say(name, ": ", tostring(m))
    end
end
local base = require "resty.core.base"
ngx.say("version ", base.version, " FFI_OK ", base.FFI_OK, " FFI_DECLINED ", base.FFI_DECLINED)
ngx.say("allows http: ", tostring(pcall(base.allows_subsystem, "http")))
local ok, err = pcall(base.allows_subsystem, "stream")
ngx.say("allows stream: ", tostring(ok), " ", err)
local t = base.new_tab(4, 0)
ngx.say("ref: ", base.ref_in_table(t, "a"), base.ref_in_table(t, "b"))
ngx.say("request: ", base.get_request() ~= nil)
"#,
        ),
    );
    let (status, _, body) = get(&mg.url("/t")).await;
    assert_eq!(status, 200, "{body} {:?}", mg.log_lines());
    assert_eq!(
        body,
        "version 0.1.28 FFI_OK 0 FFI_DECLINED -5\n\
         allows http: true\n\
         allows stream: false unsupported subsystem: http\n\
         ref: 12\n\
         request: true\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_modules_resp_process_errlog_base64_ssl() {
    let root = tempfile::tempdir().expect("temp dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    put(root.path(), "lib/cert.pem", &ck.cert.pem());
    put(root.path(), "lib/key.pem", &ck.signing_key.serialize_pem());
    let lib = root.path().join("lib").display().to_string();
    let lua = format!(
        r#"
local function read(name)
    local f = assert(io.open("{lib}/" .. name))
    local s = f:read("*a")
    f:close()
    return s
end
local resp = require "ngx.resp"
ngx.header["X-Multi"] = "one"
resp.add_header("X-Multi", "two")
resp.add_header("X_Num", 3)
local process = require "ngx.process"
ngx.say("type: ", process.type())
ngx.say("agent: ", select(2, process.enable_privileged_agent()))
local errlog = require "ngx.errlog"
errlog.raw_log(ngx.ERR, "raw log line from errlog")
ngx.say("filter level: ", errlog.get_sys_filter_level() >= ngx.ERR)
ngx.say("get_logs: ", select(2, errlog.get_logs()))
ngx.say("raw_log bad: ", select(2, pcall(errlog.raw_log, "x", "y")))
local b64 = require "ngx.base64"
ngx.say("url: ", b64.encode_base64url("\255\254\253 hi?"))
ngx.say("back: ", b64.decode_base64url("__79IGhpPw") == "\255\254\253 hi?")
ngx.say("bad: ", select(2, b64.decode_base64url("a")))
ngx.say("not string: ", select(2, b64.encode_base64url(12)))
local ssl = require "ngx.ssl"
local cert, err = ssl.parse_pem_cert(read("cert.pem"))
ngx.say("cert: ", type(cert), " ", tostring(err))
local key, err = ssl.parse_pem_priv_key(read("key.pem"))
ngx.say("key: ", type(key), " ", tostring(err))
ngx.say("bad cert: ", select(2, ssl.parse_pem_cert("garbage")))
local der = ssl.cert_pem_to_der(read("cert.pem"))
ngx.say("der starts with SEQUENCE: ", der:byte(1) == 0x30)
ngx.say("set_cert: ", select(2, pcall(ssl.set_cert, cert)))
"#
    );
    let mg = start(root, &route("/t", &lua));
    let (status, headers, body) = get(&mg.url("/t")).await;
    assert_eq!(status, 200, "{body} {:?}", mg.log_lines());
    let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(headers["x-num"], "3");
    assert_eq!(
        body,
        "type: worker\n\
         agent: API disabled in the current context\n\
         filter level: true\n\
         get_logs: directive \"lua_capture_error_log\" is not set\n\
         raw_log bad: bad argument #1 to 'raw_log' (must be a number)\n\
         url: __79IGhpPw\n\
         back: true\n\
         bad: invalid input\n\
         not string: must provide a string\n\
         cert: userdata nil\n\
         key: userdata nil\n\
         bad cert: PEM_read_bio_X509_AUX() failed\n\
         der starts with SEQUENCE: true\n\
         set_cert: ngx.ssl.set_cert is not supported in moongate\n"
    );
    mg.wait_log("raw log line from errlog", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resty_hmac_and_aes() {
    let root = tempfile::tempdir().expect("temp dir");
    let mg = start(
        root,
        &route(
            "/t",
            r#"
local hmac = require "resty.hmac"
local str = require "resty.string"
-- RFC 4231 test case 2, RFC 2202 test case 2.
local h = hmac:new("Jefe", hmac.ALGOS.SHA256)
h:update("what do ya ")
ngx.say("sha256: ", h:final("want for nothing?", true))
h:reset()
ngx.say("again: ", str.to_hex(h:final("what do ya want for nothing?")))
ngx.say("sha1: ", hmac:new("Jefe", hmac.ALGOS.SHA1):final("what do ya want for nothing?", true))
ngx.say("md5: ", hmac:new("Jefe", hmac.ALGOS.MD5):final("what do ya want for nothing?", true))
-- RFC 4231 test case 1 (20 bytes of 0x0b).
ngx.say("sha512: ", hmac:new(string.rep("\11", 20), hmac.ALGOS.SHA512):final("Hi There", true):sub(1, 32))

local md5 = require("resty.md5"):new()
md5:update("hel")
md5:update("loxxx", 2)
ngx.say("md5 len: ", str.to_hex(md5:final()))

local aes = require "resty.aes"
-- printf 'hello world' | openssl enc -aes-128-cbc -md md5 -S 0102030405060708 -pass pass:secret
local a = aes:new("secret", "\1\2\3\4\5\6\7\8", aes.cipher(128, "cbc"), aes.hash.md5)
local enc = a:encrypt("hello world")
ngx.say("openssl: ", str.to_hex(enc))
ngx.say("decrypt: ", a:decrypt(enc))
local def = aes:new("some key")
ngx.say("default: ", def:decrypt(def:encrypt("round trip")))
local iv = aes:new("0123456789abcdef0123456789abcdef", nil, aes.cipher(256, "ctr"), { iv = "fedcba9876543210" })
ngx.say("ctr: ", iv:decrypt(iv:encrypt("stream mode")))
local g = aes:new("0123456789abcdef", nil, aes.cipher(128, "gcm"), { iv = "123456789012" })
local sealed = g:encrypt("sealed", "aad")
ngx.say("gcm: ", #sealed[2], " ", g:decrypt(sealed[1], sealed[2], "aad"), " ", select(2, g:decrypt(sealed[1], sealed[2], "other")))
ngx.say("bad salt: ", select(2, aes:new("k", "short")))
ngx.say("bad key: ", select(2, aes:new("short", nil, aes.cipher(128, "cbc"), { iv = "1234567890123456" })))
ngx.say("cfb1: ", tostring(aes.cipher(128, "cfb1")))
"#,
        ),
    );
    let (status, _, body) = get(&mg.url("/t")).await;
    assert_eq!(status, 200, "{body} {:?}", mg.log_lines());
    assert_eq!(
        body,
        "sha256: 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843\n\
         again: 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843\n\
         sha1: effcdf6ae5eb2fa2d27416d5f184df9c259a7c79\n\
         md5: 750c783e6ab0b503eaa86e310a5db738\n\
         sha512: 87aa7cdea5ef619d4ff0b4241a1d6cb0\n\
         md5 len: 5d41402abc4b2a76b9719d911017c592\n\
         openssl: 071c941f3544608e7c05eda85a9c9a68\n\
         decrypt: hello world\n\
         default: round trip\n\
         ctr: stream mode\n\
         gcm: 16 sealed EVP_DecryptFinal_ex failed\n\
         bad salt: salt must be 8 characters or nil\n\
         bad key: bad key length\n\
         cfb1: nil\n"
    );
}

/// `xpcall(f, debug.traceback)` names the failing function; the sandbox
/// keeps only introspection; `debug.sethook` (which would remove the
/// time budget's hook) is never there.
async fn debug_library(sandbox: bool) {
    let root = tempfile::tempdir().expect("temp dir");
    let mg = start(
        root,
        &format!(
            "sandbox = {sandbox}\nffi = {}\n{}",
            !sandbox,
            route(
                "/t",
                r#"
local function failing() error("boom") end
local ok, trace = xpcall(failing, debug.traceback)
ngx.say(tostring(ok), " ", trace:match("boom") ~= nil, " ", trace:match("stack traceback:") ~= nil, " ", trace:match("main.toml:%d+:") ~= nil)
local info = debug.getinfo(1, "Sl")
ngx.say("getinfo: ", info.currentline > 0, " ", info.what, " ", info.short_src:match("main.toml") ~= nil)
ngx.say("sethook: ", type(debug.sethook), " debug.debug: ", type(debug.debug))
ngx.say("getlocal: ", type(debug.getlocal), " setupvalue: ", type(debug.setupvalue), " getregistry: ", type(debug.getregistry))
ngx.say("ffi: ", (pcall(require, "ffi")), " loadlib: ", tostring((package.loadlib("/lib/x86_64-linux-gnu/libc.so.6", "*"))))
local t0 = ngx.now()
"#,
            )
        ),
    );
    let (status, _, body) = get(&mg.url("/t")).await;
    assert_eq!(status, 200, "{body} {:?}", mg.log_lines());
    let ffi = !sandbox;
    let (present, other) = if sandbox {
        ("nil", "nil")
    } else {
        ("function", "function")
    };
    assert_eq!(
        body,
        format!(
            "false true true true\n\
             getinfo: true main true\n\
             sethook: nil debug.debug: nil\n\
             getlocal: {present} setupvalue: {other} getregistry: nil\n\
             ffi: {ffi} loadlib: nil\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_traceback_without_sandbox() {
    debug_library(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_traceback_under_sandbox() {
    debug_library(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_hands_off_between_requests() {
    let root = tempfile::tempdir().expect("temp dir");
    // A module-level table: one semaphore per worker, shared by requests.
    put(
        root.path(),
        "lib/handoff.lua",
        "return { sema = require('ngx.semaphore').new(0) }",
    );
    let mg = start(
        root,
        &format!(
            "{}{}{}",
            route(
                "/wait",
                r#"
local sema = require("handoff").sema
local ok, err = sema:wait(tonumber(ngx.var.arg_t))
ngx.say(tostring(ok), " ", tostring(err), " count=", sema:count())
"#
            ),
            route(
                "/post",
                r#"
local sema = require("handoff").sema
ngx.say("waiting=", -sema:count())
sema:post(1)
ngx.say("posted count=", sema:count())
"#
            ),
            route(
                "/errors",
                r#"
local semaphore = require "ngx.semaphore"
ngx.say(select(2, pcall(semaphore.new, -1)))
local s = semaphore.new(2)
ngx.say(s:count(), " ", tostring(s:wait(0)), " ", s:count())
ngx.say(select(2, pcall(s.post, s, 0)))
ngx.say(select(2, pcall(s.wait, {}, 1)))
"#
            )
        ),
    );
    let waiter = {
        let url = mg.url("/wait?t=10");
        tokio::spawn(async move {
            let t0 = Instant::now();
            let (_, _, body) = get(&url).await;
            (body, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter returned before any post");
    let (_, _, posted) = get(&mg.url("/post")).await;
    assert_eq!(posted, "waiting=1\nposted count=0\n");
    let (body, took) = waiter.await.expect("waiter");
    assert_eq!(body, "true nil count=0\n");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5));

    let t0 = Instant::now();
    let (_, _, body) = get(&mg.url("/wait?t=0.2")).await;
    assert_eq!(body, "nil timeout count=0\n");
    assert!(t0.elapsed() >= Duration::from_millis(200));

    let (_, _, body) = get(&mg.url("/errors")).await;
    assert!(body.starts_with("no negative number"), "{body}");
    assert!(body.contains("\n2 true 1\n"), "{body}");
    assert!(body.contains("positive number required"), "{body}");
    assert!(body.contains("not a semaphore instance"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_dict_details() {
    let root = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[lua.shared_dict]\ndogs = \"1MiB\"\nsmall = \"50KiB\"\n{}",
        route(
            "/t",
            r#"
local dogs, small = ngx.shared.dogs, ngx.shared.small
ngx.say("type: ", type(dogs), " ", type(dogs.get))
ngx.say("zone: ", (select(2, pcall(dogs.get, "dogs", "k")):match('bad "zone" argument')))
ngx.say("capacity: ", dogs:capacity(), " free: ", dogs:free_space())
-- list keys and scalar keys
dogs:lpush("list", "a")
ngx.say("get list: ", dogs:get("list"), " ", select(2, dogs:get("list")))
ngx.say("stale list: ", select(2, dogs:get_stale("list")))
ngx.say("add list: ", dogs:add("list", 1))
ngx.say("incr list: ", select(2, dogs:incr("list", 1)))
dogs:set("scalar", "x")
ngx.say("lpush scalar: ", select(2, dogs:lpush("scalar", "y")))
ngx.say("llen scalar: ", select(2, dogs:llen("scalar")))
ngx.say("rpop scalar: ", select(2, dogs:rpop("scalar")))
-- value types, nil adds
ngx.say("bad value: ", dogs:set("t", {}))
ngx.say("bad push: ", select(2, dogs:rpush("l2", true)))
ngx.say("add nil: ", dogs:add("new", nil))
ngx.say("replace nil: ", dogs:replace("scalar", nil))
ngx.say("nil key: ", dogs:get(nil))
-- flags, stale
dogs:set("flagged", "v", 0, 7)
ngx.say("flags: ", dogs:get("flagged"))
dogs:set("short", "old", 0.05, 3)
ngx.sleep(0.1)
ngx.say("expired: ", dogs:get("short"), " stale: ", dogs:get_stale("short"))
-- incr
ngx.say("incr missing: ", dogs:incr("n", 1))
ngx.say("incr init: ", dogs:incr("n", 2, 40))
ngx.say("incr: ", dogs:incr("n", 1))
ngx.say("incr string: ", dogs:incr("scalar", 1))
ngx.say("incr init_ttl: ", dogs:incr("m", 1, 0, 100), " ttl>99: ", dogs:ttl("m") > 99)
ngx.say("init_ttl alone: ", (select(2, pcall(dogs.incr, dogs, "m", 1, nil, 5)):match('must provide "init" when providing "init_ttl"')))
-- expire / ttl
ngx.say("ttl missing: ", dogs:ttl("nope"))
ngx.say("expire missing: ", dogs:expire("nope", 1))
ngx.say("expire: ", dogs:expire("scalar", 10), " ttl<=10: ", dogs:ttl("scalar") <= 10)
ngx.say("bad exptime: ", (select(2, pcall(dogs.set, dogs, "k", "v", -1)):match('bad "exptime" argument')))
-- too big for the dict
ngx.say("too big alone: ", small:set("foo", string.rep("helloworld", 10000)))
small:set("bah", "hello")
ngx.say("too big forcible: ", small:set("foo", string.rep("helloworld", 10000)))
ngx.say("bah evicted: ", small:get("bah"))
-- lpush into a full dict
local n = 0
while true do
    local len, err = small:lpush("q", string.rep("x", 1000))
    if not len then
        ngx.say("full lpush: ", len, " ", err, " after ", n > 10)
        break
    end
    n = len
end
ngx.say("small free: ", small:free_space())
-- get_keys
dogs:flush_all()
dogs:flush_expired()
for i = 1, 1100 do dogs:set("key" .. i, i) end
ngx.say("keys: ", #dogs:get_keys(), " ", #dogs:get_keys(0), " ", #dogs:get_keys(10))
"#,
        )
    );
    let mg = start(root, &toml);
    let (status, _, body) = get(&mg.url("/t")).await;
    assert_eq!(status, 200, "{body} {:?}", mg.log_lines());
    assert_eq!(
        body,
        "type: table function\n\
         zone: bad \"zone\" argument\n\
         capacity: 1048576 free: 1032192\n\
         get list: nil value is a list\n\
         stale list: value is a list\n\
         add list: falseexistsfalse\n\
         incr list: not a number\n\
         lpush scalar: value not a list\n\
         llen scalar: value not a list\n\
         rpop scalar: value not a list\n\
         bad value: nilbad value type\n\
         bad push: bad value type\n\
         add nil: falseattempt to add or replace nil valuesfalse\n\
         replace nil: falseattempt to add or replace nil valuesfalse\n\
         nil key: nilnil key\n\
         flags: v7\n\
         expired: nil stale: old3true\n\
         incr missing: nilnot found\n\
         incr init: 42nilfalse\n\
         incr: 43\n\
         incr string: nilnot a number\n\
         incr init_ttl: 1 ttl>99: true\n\
         init_ttl alone: must provide \"init\" when providing \"init_ttl\"\n\
         ttl missing: nilnot found\n\
         expire missing: nilnot found\n\
         expire: true ttl<=10: true\n\
         bad exptime: bad \"exptime\" argument\n\
         too big alone: falseno memoryfalse\n\
         too big forcible: falseno memorytrue\n\
         bah evicted: nil\n\
         full lpush: nil no memory after true\n\
         small free: 0\n\
         keys: 1024 1100 10\n"
    );
}
