//! `ngx.re` on PCRE2 and `require "ngx.re"` through real requests: each
//! test serves a Lua content handler that runs the calls and prints what
//! they returned, and checks the body.

use crate::support::{Moongate, client};

/// A server whose `/t` route runs `lua` as its content handler.
fn server(lua: &str) -> Moongate {
    Moongate::start(&format!(
        r##"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[[route]]
path_exact = "/t"
lua.content_inline = '''
{lua}
'''
"##
    ))
}

async fn body(mg: &Moongate) -> String {
    let r = client().get(mg.url("/t")).send().await.expect("GET /t");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    text
}

/// The values a call returned, as "a|b|c" (with `nil` for nils), so that
/// the number of returned values shows too.
const SHOW: &str = r##"
local function show(...)
    local out = {}
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        if type(v) == "table" then
            local parts = {}
            for j = 0, 9 do
                if v[j] ~= nil then parts[#parts + 1] = j .. "=" .. tostring(v[j]) end
            end
            v = "{" .. table.concat(parts, ",") .. "}"
        end
        out[#out + 1] = tostring(v)
    end
    ngx.say(table.concat(out, "|"))
end
-- The first line of a raised error's message.
local function raised(ok, e)
    return tostring(ok) .. " " .. tostring(e):gsub("^runtime error: ", ""):match("^[^\n]*")
end
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_with_d_and_the_javascript_option() {
    let mg = server(&format!(
        r##"{SHOW}
local m = ngx.re.match("hello, world", [[(?<named>\w+), (?<named>\w+)]], "D")
ngx.say(type(m.named), " ", table.concat(m.named, ","), " ", m[1], " ", m[2])
-- Groups of a duplicated name that did not take part are left out.
m = ngx.re.match("b", [[(?<n>a)|(?<n>b)]], "D")
ngx.say(#m.n, " ", m.n[1], " ", tostring(m[1]))
-- Without D a repeated name is a compile error, returned.
show(ngx.re.match("ab", [[(?<n>a)|(?<n>b)]]))
-- J: \u escapes, empty classes and unset back references as JavaScript has them.
show(ngx.re.find("xA", [[\u0041]], "J"))
show(ngx.re.find("ab", [[a[]|b]], "J"))
show(ngx.re.find("b", [[(a)?\1b]], "J"))
show(ngx.re.find("b", [[(a)?\1b]]))
local _, _, err = ngx.re.find("A", [[\u0041]])
ngx.say(err:sub(1, 23))
"##
    ));
    assert_eq!(
        body(&mg).await,
        "table hello,world hello world\n\
         1 b false\n\
         nil|pcre_compile() failed: two named subpatterns have the same name in \"(?<n>a)|(?<n>b)\" at \"b)\"\n\
         2|2\n\
         2|2\n\
         1|1\n\
         nil\n\
         pcre_compile() failed: \n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_tables_nth_and_ctx_pos() {
    let mg = server(&format!(
        r##"{SHOW}
-- match's fifth argument is the table to fill (and the one returned).
local res = {{}}
local m = ngx.re.match("key=val", [[(\w+)=(\w+)]], "", nil, res)
ngx.say(m == res, " ", res[0], " ", res[1], " ", res[2])
m = ngx.re.match("a-b", [[(\w)-(\w)]], "jo", nil, res)
ngx.say(m == res, " ", res[0], " ", res[1], " ", res[2])
-- find's fifth argument picks a group; a group that did not take part
-- gives two nils, one past the last group is an error.
show(ngx.re.find("hello, 1234", [[([0-9])([0-9]+)]], "jo", nil, 2))
show(ngx.re.find("hello", [[(h)|(x)]], "", nil, 2))
show(ngx.re.find("hello", [[(h)|(x)]], "", nil, 3))
show(ngx.re.find("hello", "z", "", nil, 3))
-- ctx.pos: where to start (1-based), and past the match afterwards.
local ctx = {{ pos = 3 }}
show(ngx.re.find("a1b2c3", [[\d]], "", ctx))
ngx.say(ctx.pos)
show(ngx.re.match("a1b2c3", [[\d]], "", ctx))
ngx.say(ctx.pos)
show(ngx.re.match("ab", "b", "a", {{ pos = 1 }}))
show(ngx.re.match("ab", "b", "a", {{ pos = 2 }}))
-- gmatch, and sub/gsub with a template and with a function.
local out = {{}}
for w in ngx.re.gmatch("one two  three", [[\w+]]) do out[#out + 1] = w[0] end
ngx.say(table.concat(out, ","))
show(ngx.re.gsub("hello, world", [[([a-z])([a-z]+)]], "$2$1ay"))
show(ngx.re.sub("hello, world", [[(?<w>[a-z]+)]], function(m) return "<" .. m.w .. ">" end))
show(ngx.re.gsub("ab", "x*", "-"))
show(ngx.re.gsub("a", "a", "$name"))
show(ngx.re.gsub(123, "2", 7))
"##
    ));
    assert_eq!(
        body(&mg).await,
        "true key=val key val\n\
         true a-b a b\n\
         9|11\n\
         nil|nil\n\
         nil|nil|nth out of bound\n\
         nil\n\
         4|4\n\
         5\n\
         {0=3}\n\
         7\n\
         nil\n\
         {0=b}\n\
         one,two,three\n\
         ellohay, orldway|2\n\
         <hello>, world|1\n\
         -a-b-|3\n\
         nil|nil|failed to compile the replacement template\n\
         173|1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfa_mode_takes_the_longest_match() {
    let mg = server(&format!(
        r##"{SHOW}
show(ngx.re.match("xabcd", "a|ab|abc"))
show(ngx.re.match("xabcd", "a|ab|abc", "d"))
-- No captures in DFA mode: groups and names are absent.
local m = ngx.re.match("abc", "(?<first>a)(b)", "d")
ngx.say(m[0], " ", tostring(m[1]), " ", tostring(m.first))
show(ngx.re.find("abc", "(a)(b)", "d", nil, 1))
show(ngx.re.gsub("aab aaab", "a+|b", "<$0>", "d"))
-- A DFA cannot match back references: PCRE's DFA_UITEM.
show(ngx.re.match("aa", [[(a)\1]], "d"))
"##
    ));
    assert_eq!(
        body(&mg).await,
        "{0=a}\n\
         {0=abc}\n\
         ab nil nil\n\
         nil|nil|nth out of bound\n\
         <aa><b> <aaa><b>|4\n\
         nil|pcre_exec() failed: -16\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_re_split_and_opt() {
    let mg = server(
        r##"
local ngx_re = require "ngx.re"
local function raised(ok, e)
    return tostring(ok) .. " " .. tostring(e):gsub("^runtime error: ", ""):match("^[^\n]*")
end
local function say(t) ngx.say(table.concat(t, "|"), " (", #t, ")") end
say(ngx_re.split("a,b,c,d", ","))
say(ngx_re.split("a,b,c,d", "(,)"))
say(ngx_re.split("abcd", ""))
say(ngx_re.split("a,b,c,d", ",", nil, { pos = 5 }))
say(ngx_re.split("a,b,c,d", ",", nil, nil, 3))
say(ngx_re.split("a;b;c", "(;)", nil, nil, 2))
-- Without max, trailing empty pieces are dropped; with it they stay.
say(ngx_re.split("a,b,,", ","))
say(ngx_re.split("a,b,,", ",", nil, nil, 10))
-- A reused table is not cleared: a nil follows the pieces.
local mine = { "W", "X", "Y", "Z" }
local res = ngx_re.split("a,b", ",", nil, nil, nil, mine)
ngx.say(res == mine, " ", mine[1], mine[2], tostring(mine[3]), mine[4])
local ctx = {}
ngx_re.split("a,b,c", ",", nil, ctx)
ngx.say("ctx.pos ", ctx.pos)
local r, err = ngx_re.split("abc", "(")
ngx.say(tostring(r), " ", err)
ngx.say(raised(pcall(ngx_re.split, "a", ",", nil, nil, nil, "x")))
ngx.say(raised(pcall(ngx_re.opt, "nope", 1)))
ngx.say(select("#", ngx_re.opt("jit_stack_size", 256 * 1024)))
-- Once an "o" pattern is cached, the JIT stack size is fixed (resty.core).
ngx.re.match("x", "x", "o")
ngx.say(raised(pcall(ngx_re.opt, "jit_stack_size", 512 * 1024)))
"##,
    );
    assert_eq!(
        body(&mg).await,
        "a|b|c|d (4)\n\
         a|,|b|,|c|,|d (7)\n\
         a|b|c|d (4)\n\
         c|d (2)\n\
         a|b|c,d (3)\n\
         a|;|b;c (3)\n\
         a|b (2)\n\
         a|b|| (4)\n\
         true abnilZ\n\
         ctx.pos 4\n\
         nil pcre_compile() failed: missing ) in \"(\"\n\
         false res is not a table\n\
         false unrecognized option name\n\
         0\n\
         false changing jit stack size is not allowed when some regexs have already been compiled and cached\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_ngx_lua_s() {
    let mg = server(&format!(
        r##"{SHOW}
show(ngx.re.match("x", "(abc"))
show(ngx.re.find("x", "(abc"))
show(ngx.re.gsub("x", "(abc", ""))
show(ngx.re.gmatch("x", "(abc"))
ngx.say(raised(pcall(ngx.re.match, "x", "x", "Hm")))
-- PCRE's match limit: catastrophic backtracking fails the call, not the request.
show(ngx.re.match(string.rep("a", 64) .. "!", [[^(\w+\s?)*$]]))
show(ngx.re.find(string.rep("a", 64) .. "!", [[^(\w+\s?)*$]], "jo"))
-- Invalid UTF-8 under u.
show(ngx.re.match(string.sub("你好", 1, 4), "你好", "u"))
local it = ngx.re.gmatch("\255", ".", "u")
show(it())
show(it())
"##
    ));
    let text = body(&mg).await;
    assert_eq!(
        text,
        "nil|pcre_compile() failed: missing ) in \"(abc\"\n\
         nil|nil|pcre_compile() failed: missing ) in \"(abc\"\n\
         nil|nil|pcre_compile() failed: missing ) in \"(abc\"\n\
         nil|pcre_compile() failed: missing ) in \"(abc\"\n\
         false unknown flag \"H\" (flags \"Hm\")\n\
         nil|pcre_exec() failed: -8\n\
         nil|nil|pcre_exec() failed: -8\n\
         nil|pcre_exec() failed: -10\n\
         nil|pcre_exec() failed: -10\n\
         nil\n"
    );
}
