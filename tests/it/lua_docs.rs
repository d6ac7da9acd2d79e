//! docs/lua-api.md keeps up with the API: a real VM lists what it offers
//! (the keys of `ngx` and of its tables, the methods of a shared dict and
//! of the cosockets, the modules in `package.preload`) and every name must
//! appear in the reference, so a function added to moongate without a line
//! in the doc fails here.

use std::collections::BTreeSet;

use crate::support::{Moongate, client};

/// A server whose `/names` route prints one `kind name` line per thing the
/// VM offers: `ngx NAME` for `ngx.NAME`, `in TABLE NAME` for the keys of
/// `ngx.TABLE` and the methods of dicts and sockets, `module NAME` for the
/// modules `require` finds built in.
const CONF: &str = r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[lua.shared_dict]
d = "64KiB"

[[route]]
path_exact = "/names"
lua.content_inline = '''
local function each(t, f)
  local names = {}
  -- `__index` is metatable plumbing (a table whose methods are its own
  -- fields), not a name of the API.
  for k in pairs(t) do
    if k ~= "__index" then names[#names + 1] = tostring(k) end
  end
  table.sort(names)
  for _, k in ipairs(names) do f(k) end
end
each(ngx, function(k)
  ngx.say("ngx ", k)
  local v = ngx[k]
  if type(v) == "table" and k ~= "var" and k ~= "header" and k ~= "arg"
      and k ~= "shared" then
    each(v, function(kk) ngx.say("in ngx.", k, " ", kk) end)
  end
end)
each(getmetatable(ngx.shared.d).__index, function(k) ngx.say("in shdict ", k) end)
local function methods(what, sock)
  local mt = getmetatable(sock)
  local t = type(mt) == "table" and type(mt.__index) == "table" and mt.__index or sock
  each(t, function(k) ngx.say("in ", what, " ", k) end)
end
methods("tcpsock", ngx.socket.tcp())
methods("udpsock", ngx.socket.udp())
each(package.preload, function(k) ngx.say("module ", k) end)
'''
"#;

/// The identifiers inside the doc's backtick spans (`ngx.req.get_headers(max?)`
/// gives `ngx`, `req`, `get_headers`, `max`).
fn code_words(doc: &str) -> BTreeSet<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_the_vm_offers_is_in_the_reference() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/lua-api.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/lua-api.md");
    let words = code_words(&doc);

    let mg = Moongate::start(CONF);
    let res = client()
        .get(mg.url("/names"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body = res.text().await.expect("body");

    let mut missing = Vec::new();
    let mut seen = 0;
    for line in body.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let found = match parts.as_slice() {
            // `ngx.NAME` written out, or NAME in a list of constants.
            ["ngx", name] => doc.contains(&format!("ngx.{name}")) || words.contains(*name),
            ["in", _, name] => words.contains(*name),
            // Bundled policies are documented in the README.
            ["module", name] if name.starts_with("policies.") => true,
            // `resty.core.shdict` written out, or listed as `shdict` after
            // `resty.core.*`'s row names the family.
            ["module", name] => {
                doc.contains(&format!("`{name}`"))
                    || name.rsplit_once('.').is_some_and(|(parent, last)| {
                        doc.contains(&format!("`{parent}")) && words.contains(last)
                    })
            }
            _ => panic!("unexpected line {line:?}"),
        };
        seen += 1;
        if !found {
            missing.push(line.to_string());
        }
    }
    // The listing is real: ngx alone has more than a hundred names.
    assert!(seen > 150, "only {seen} names listed:\n{body}");
    assert!(missing.is_empty(), "not in docs/lua-api.md: {missing:#?}");
}
