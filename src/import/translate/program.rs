//! nginx's rewrite module (`rewrite`, `return`, `set`, `break`, run in
//! order in the rewrite phase) as the Lua of a route's rewrite (or
//! content) handler, with nginx's rules: `rewrite` replaces the whole URI,
//! a `?` in the replacement sets the arguments (the old ones appended
//! unless it ends in `?`), `last` searches the locations again
//! (`ngx.exec`), `break` stops, `redirect`/`permanent` (or a replacement
//! starting with a scheme) answer 302/301; `return` answers.

use std::fmt::Write as _;

use super::super::parse::Directive;
use super::super::values::{Part, lua_expr, lua_str, parts};

/// The variable that marks server-level rewrites as done, so the routes
/// they lead to (through `ngx.exec`) do not run them again.
pub const SERVER_DONE_VAR: &str = "moongate_import_server_rewrites";

/// Compiled Lua, or why a directive cannot be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The statements (helpers not included).
    pub code: String,
    /// The program always answers (it reaches a `return` no `break` can skip).
    pub terminates: bool,
    /// It changes the URI (so a proxy_pass URI part no longer applies).
    pub rewrites: bool,
}

/// What the program answers `return CODE TEXT` with.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `default_type` in effect (nginx's own default: text/plain).
    pub default_type: Option<String>,
}

/// The helper functions every program starts with.
pub const HELPERS: &str = r#"local function var(name)
    local v = ngx.var[name]
    if v == nil then return "" end
    return tostring(v)
end
local caps -- the captures of the last rewrite regex that matched
local function cap(n)
    local v
    if caps then v = caps[n] else v = ngx.var[n] end
    if v == nil or v == false then return "" end
    return v
end
"#;

/// Compiles the statements of one level. `server` programs run once per
/// request and search the routes again (`ngx.exec`) when they changed
/// the URI, since the route was chosen before they ran.
pub fn compile(
    stmts: &[&Directive],
    ctx: &Context,
    server: bool,
) -> Result<Compiled, (usize, String)> {
    let mut code = String::new();
    let mut terminates = false;
    let mut rewrites = false;
    let mut can_stop = false;
    let mut jumps = server;
    let indent = if server { "    " } else { "" };
    for (i, d) in stmts.iter().enumerate() {
        let mut s = String::new();
        let _ = writeln!(s, "-- {}: {}", d.pos, d.summary().replace('\n', " "));
        let body = match d.name.as_str() {
            "rewrite" => {
                rewrites = true;
                let (lua, stops) = rewrite(d, server).map_err(|e| (i, e))?;
                can_stop |= stops;
                jumps |= lua.contains("jump = true");
                lua
            }
            "return" => {
                let lua = answer(d, ctx).map_err(|e| (i, e))?;
                if !can_stop {
                    terminates = true;
                }
                lua
            }
            "set" => match d.args.as_slice() {
                [name, value] if name.text.starts_with('$') => {
                    format!(
                        "ngx.var[{}] = {}\n",
                        lua_str(&name.text[1..]),
                        lua_expr(&value.text)
                    )
                }
                _ => return Err((i, "`set` takes $name and a value".into())),
            },
            "break" if d.args.is_empty() => {
                can_stop = true;
                "done = true\n".to_owned()
            }
            _ => return Err((i, format!("`{}` is not a rewrite-module directive", d.name))),
        };
        s.push_str("if not done then\n");
        for line in body.lines() {
            let _ = writeln!(s, "    {line}");
        }
        s.push_str("end\n");
        code.push_str(&s);
        if terminates {
            break;
        }
    }
    let mut out = String::new();
    if server {
        let _ = writeln!(out, "if ngx.var.{SERVER_DONE_VAR} == nil then");
        let _ = writeln!(out, "    ngx.var.{SERVER_DONE_VAR} = \"1\"");
    }
    let _ = writeln!(out, "{indent}local done, jump = false, false");
    for line in code.lines() {
        let _ = writeln!(out, "{indent}{line}");
    }
    if jumps {
        let _ = writeln!(
            out,
            "{indent}if jump then return ngx.exec(ngx.var.uri, ngx.var.args) end"
        );
    }
    if server {
        out.push_str("end\n");
    }
    Ok(Compiled {
        code: out,
        terminates: terminates && !server,
        rewrites,
    })
}

/// `rewrite REGEX REPLACEMENT [FLAG]`; whether it can stop the rest.
fn rewrite(d: &Directive, server: bool) -> Result<(String, bool), String> {
    let (regex, replacement, flag) = match d.args.as_slice() {
        [r, t] => (&r.text, &t.text, ""),
        [r, t, f] => (&r.text, &t.text, f.text.as_str()),
        _ => return Err("`rewrite` takes a regex, a replacement and a flag".into()),
    };
    if !matches!(flag, "" | "last" | "break" | "redirect" | "permanent") {
        return Err(format!("unknown flag `{flag}`"));
    }
    let (text, add_args) = match replacement.strip_suffix('?') {
        Some(t) => (t.to_owned(), false),
        None => (replacement.clone(), true),
    };
    let redirect = matches!(flag, "redirect" | "permanent")
        || ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| text.starts_with(p));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "local m = ngx.re.match(ngx.var.uri, {}, \"jo\")",
        lua_long(regex)
    );
    s.push_str("if m then\n    caps = m\n");
    let (path, args) = split_args(&text);
    if redirect {
        let status = if flag == "permanent" { 301 } else { 302 };
        let _ = writeln!(s, "    local to = {}", lua_expr(&text));
        if add_args {
            let sep = if args.is_some() { "&" } else { "?" };
            let _ = writeln!(
                s,
                "    local a = ngx.var.args\n    if a and a ~= \"\" then to = to .. {} .. a end",
                lua_str(sep)
            );
        }
        let _ = writeln!(s, "    return ngx.redirect(to, {status})");
        s.push_str("end\n");
        return Ok((s, false));
    }
    let _ = writeln!(s, "    local uri = {}", lua_expr(&path));
    match (&args, add_args) {
        (Some(a), true) => {
            let _ = writeln!(
                s,
                "    local args = {}\n    local old = ngx.var.args\n    if old and old ~= \"\" then args = args .. \"&\" .. old end",
                lua_expr(a)
            );
        }
        (Some(a), false) => {
            let _ = writeln!(s, "    local args = {}", lua_expr(a));
        }
        (None, true) => s.push_str("    local args = ngx.var.args\n"),
        (None, false) => s.push_str("    local args = \"\"\n"),
    }
    s.push_str("    ngx.req.set_uri(uri)\n    ngx.req.set_uri_args(args or \"\")\n");
    let stops = match flag {
        "last" => {
            s.push_str("    return ngx.exec(uri, args)\n");
            false
        }
        "break" if server => {
            // The URI changed before a route was chosen for it.
            s.push_str("    done, jump = true, true\n");
            true
        }
        "break" => {
            s.push_str("    done = true\n");
            true
        }
        _ => {
            s.push_str("    jump = true\n");
            false
        }
    };
    s.push_str("end\n");
    Ok((s, stops))
}

/// `return CODE [TEXT]`, `return CODE URL`, `return URL`.
fn answer(d: &Directive, ctx: &Context) -> Result<String, String> {
    let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
    let is_url = |s: &str| {
        ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| s.starts_with(p))
    };
    let (code, text): (u16, Option<&str>) = match args.as_slice() {
        [url] if is_url(url) => (302, Some(url)),
        [code] => (code.parse().map_err(|_| "not a status code")?, None),
        [code, text] => (code.parse().map_err(|_| "not a status code")?, Some(text)),
        _ => return Err("`return` takes a code and a text or URL".into()),
    };
    if code == 444 {
        return Err(
            "444 (close the connection without answering) has no moongate equivalent".into(),
        );
    }
    Ok(match (code, text) {
        (301 | 302 | 303 | 307 | 308, Some(url)) => {
            format!("return ngx.redirect({}, {code})\n", lua_expr(url))
        }
        (_, Some(text)) => {
            let ctype = ctx.default_type.as_deref().unwrap_or("text/plain");
            format!(
                "ngx.status = {code}\nngx.header[\"Content-Type\"] = {}\nngx.print({})\nreturn ngx.exit(ngx.HTTP_OK)\n",
                lua_str(ctype),
                lua_expr(text)
            )
        }
        (c, None) if c < 300 => {
            let ctype = ctx.default_type.as_deref().unwrap_or("text/plain");
            format!(
                "ngx.status = {c}\nngx.header[\"Content-Type\"] = {}\nngx.send_headers()\nreturn ngx.exit(ngx.HTTP_OK)\n",
                lua_str(ctype)
            )
        }
        (c, None) => format!("return ngx.exit({c})\n"),
    })
}

/// A replacement split at its first literal `?` into path and arguments.
fn split_args(text: &str) -> (String, Option<String>) {
    let mut path = String::new();
    let mut args: Option<String> = None;
    for p in parts(text) {
        let raw = match &p {
            Part::Lit(s) => s.clone(),
            Part::Var(n) => format!("${{{n}}}"),
            Part::Capture(n) => format!("${n}"),
        };
        match (&mut args, &p) {
            (Some(a), _) => a.push_str(&raw),
            (None, Part::Lit(s)) if s.contains('?') => {
                let (before, after) = s.split_once('?').unwrap_or((s, ""));
                path.push_str(before);
                args = Some(after.to_owned());
            }
            (None, _) => path.push_str(&raw),
        }
    }
    (path, args)
}

/// A Lua long string holding `s` exactly (no escapes: regexes read as written).
pub fn lua_long(s: &str) -> String {
    let mut level = 0;
    loop {
        let eq = "=".repeat(level);
        let close = format!("]{eq}]");
        if !s.contains(&close) && !s.ends_with(&format!("]{eq}")) {
            // A leading newline would be dropped by Lua: keep it.
            let lead = if s.starts_with('\n') { "\n" } else { "" };
            return format!("[{eq}[{lead}{s}]{eq}]");
        }
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::lexer::tokenize;
    use super::super::super::parse::parse;
    use super::*;

    fn program(text: &str, server: bool) -> Compiled {
        let tree = parse(&"t".into(), tokenize(text).unwrap()).unwrap();
        let stmts: Vec<&Directive> = tree.iter().collect();
        compile(&stmts, &Context::default(), server).unwrap()
    }

    #[test]
    fn rewrite_flags() {
        let p = program("rewrite ^/old/(.*)$ /new/$1 break;", false);
        assert!(
            p.code
                .contains("ngx.re.match(ngx.var.uri, [[^/old/(.*)$]], \"jo\")"),
            "{}",
            p.code
        );
        assert!(
            p.code.contains("local uri = \"/new/\" .. cap(1)"),
            "{}",
            p.code
        );
        assert!(p.code.contains("done = true"));
        assert!(p.rewrites && !p.terminates);
        let p = program("rewrite ^/a$ /b last;", false);
        assert!(p.code.contains("return ngx.exec(uri, args)"), "{}", p.code);
        let p = program(
            "rewrite ^/a$ https://x.example$request_uri? permanent;",
            false,
        );
        assert!(
            p.code.contains("return ngx.redirect(to, 301)"),
            "{}",
            p.code
        );
        assert!(!p.code.contains("ngx.var.args\n    if a"), "{}", p.code);
    }

    #[test]
    fn arguments_in_the_replacement() {
        let p = program("rewrite ^/u/(\\d+)$ /user?id=$1;", false);
        assert!(p.code.contains("local uri = \"/user\""), "{}", p.code);
        assert!(
            p.code.contains("local args = \"id=\" .. cap(1)"),
            "{}",
            p.code
        );
        assert!(p.code.contains("args = args .. \"&\" .. old"), "{}", p.code);
        assert!(p.code.contains("jump = true"));
        let p = program("rewrite ^ /x?;", false);
        assert!(p.code.contains("local args = \"\""), "{}", p.code);
    }

    #[test]
    fn return_forms() {
        let p = program("return 200 \"hi $host\\n\";", false);
        assert!(p.terminates);
        assert!(
            p.code
                .contains("ngx.print(\"hi \" .. var(\"host\") .. \"\\n\")"),
            "{}",
            p.code
        );
        assert!(
            p.code
                .contains("ngx.header[\"Content-Type\"] = \"text/plain\"")
        );
        let p = program("return 301 https://$host$request_uri;", false);
        assert!(p.code.contains(
            "return ngx.redirect(\"https://\" .. var(\"host\") .. var(\"request_uri\"), 301)"
        ));
        let p = program("return https://example.com/;", false);
        assert!(p.code.contains("302)"));
        let p = program("return 404;", false);
        assert!(p.code.contains("return ngx.exit(404)"));
        let tree = parse(&"t".into(), tokenize("return 444;").unwrap()).unwrap();
        assert!(compile(&[&tree[0]], &Context::default(), false).is_err());
    }

    #[test]
    fn a_break_before_a_return_means_it_may_not_answer() {
        let p = program("rewrite ^/a /b break; return 403;", false);
        assert!(!p.terminates);
        let p = program("set $x 1; return 403; rewrite ^ /never;", false);
        assert!(p.terminates);
        assert!(
            !p.code.contains("/never"),
            "statements after return are dead: {}",
            p.code
        );
        assert!(p.code.contains("ngx.var[\"x\"] = \"1\""));
    }

    #[test]
    fn server_programs_run_once_and_search_again() {
        let p = program("rewrite ^/old(.*) /new$1 break;", true);
        assert!(
            p.code
                .starts_with(&format!("if ngx.var.{SERVER_DONE_VAR} == nil then")),
            "{}",
            p.code
        );
        assert!(p.code.contains("done, jump = true, true"));
        assert!(
            p.code
                .contains("if jump then return ngx.exec(ngx.var.uri, ngx.var.args) end")
        );
    }

    #[test]
    fn long_strings_never_close_early() {
        assert_eq!(lua_long("^/a$"), "[[^/a$]]");
        assert_eq!(lua_long("a]]b"), "[=[a]]b]=]");
        assert_eq!(lua_long("x]"), "[=[x]]=]");
    }
}
