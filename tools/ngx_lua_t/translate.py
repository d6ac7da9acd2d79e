"""Deciding whether a Test::Nginx block is portable to moongate, and if so
turning its `--- http_config` / `--- config` into a moongate conf.d.

Portability is decided from the block's configuration and test sections
only, before anything runs. `NotPortable(reason)` says why a block is left
out; the reasons are short, stable strings so the report can count them.
"""

import re

import nginxconf
from tparse import Unsupported, Regex, apply_filters

LUA_PHASES = {
    "content_by_lua": "content",
    "rewrite_by_lua": "rewrite",
    "access_by_lua": "access",
    "header_filter_by_lua": "header_filter",
    "body_filter_by_lua": "body_filter",
    "log_by_lua": "log",
}

# Sections that only steer Test::Nginx itself, or tools this runner does not
# use (systemtap); they do not affect portability.
IGNORED_SECTIONS = {
    "stap", "stap2", "stap3", "stap_out", "stap_out2", "stap_out3",
    "stap_out_like", "stap_out_unlike", "stap_out2_like", "no_check_leak",
    "log_level", "wait", "timeout", "ignore_response", "no_error_log",
    "error_log", "config", "http_config", "request", "response_body",
    "response_body_like", "response_body_unlike", "response_headers",
    "response_headers_like", "raw_response_headers_like",
    "raw_response_headers_unlike", "error_code", "error_code_like",
    "more_headers", "user_files", "pipelined_requests", "raw_request",
    "skip_nginx", "skip_nginx2", "no_shuffle", "LAST", "main_config",
    "request_eval", "http_config_eval", "todo", "repeat_each",
}

# Sections whose presence makes a block not portable, with the reason.
UNPORTABLE_SECTIONS = {
    "tcp_listen": "needs a TCP fixture server (--- tcp_listen)",
    "tcp_reply": "needs a TCP fixture server (--- tcp_listen)",
    "tcp_query": "needs a TCP fixture server (--- tcp_listen)",
    "tcp_query_len": "needs a TCP fixture server (--- tcp_listen)",
    "tcp_no_close": "needs a TCP fixture server (--- tcp_listen)",
    "tcp_shutdown": "needs a TCP fixture server (--- tcp_listen)",
    "udp_listen": "needs a UDP fixture server (--- udp_listen)",
    "udp_reply": "needs a UDP fixture server (--- udp_listen)",
    "udp_query": "needs a UDP fixture server (--- udp_listen)",
    "stream_config": "stream subsystem",
    "stream_server_config": "stream subsystem",
    "stream_request": "stream subsystem",
    "stream_response": "stream subsystem",
    "abort": "--- abort (client-side timeout/abort behaviour)",
    "must_die": "--- must_die (nginx start-up failure)",
    "shutdown": "--- shutdown (nginx worker shutdown)",
    "shutdown_error_log": "--- shutdown (nginx worker shutdown)",
    "SKIP": "--- SKIP",
    "skip_eval": "--- skip_eval (Perl)",
    "skip_openssl": "--- skip_openssl",
    "http09": "HTTP/0.9 request",
    "http2": "HTTP/2 test mode",
    "grep_error_log": "--- grep_error_log (nginx's own log lines)",
    "grep_error_log_out": "--- grep_error_log (nginx's own log lines)",
    "request_body_unlike": "--- request_body_unlike",
    "curl": "--- curl",
    "server_name": "--- server_name",
    "init": "--- init (Perl)",
    "post_main_config": "--- post_main_config",
    "quic_max_idle_timeout": "HTTP/3",
    "response_body_filters": "--- response_body_filters (Perl)",
    "access_log": "--- access_log (nginx access log)",
    "no_access_log": "--- access_log (nginx access log)",
    "env": "--- env",
}

EXTERNAL_SERVICES = (
    "TEST_NGINX_MEMCACHED_PORT",
    "TEST_NGINX_REDIS_PORT",
    "TEST_NGINX_MYSQL_PORT",
    "TEST_NGINX_RESOLVER",
    "TEST_NGINX_POSTGRESQL_PORT",
)


class NotPortable(Exception):
    pass


class Route:
    def __init__(self, kind, path):
        self.kind = kind  # path | path_exact | path_regex
        self.path = path
        self.lua = {}  # phase -> ("inline", code) | ("file", path)
        self.upstream_self = False
        self.rewrite = None  # (from, to)
        self.static = False  # served from the html dir, as nginx's root


class Plan:
    """Everything needed to run one portable block."""

    def __init__(self):
        self.routes = []
        self.shared_dicts = {}  # name -> size string
        self.init = None  # Lua code
        self.init_worker = None
        self.package_path = None
        self.user_files = []  # (relative name, content)
        self.needs_port = False  # the config names the server's own port
        self.notes = []  # deviations worth saying (e.g. directives dropped)
        self.lua_sources = []  # every Lua text of the block (error_log checks)
        self.requests = []  # list of request specs
        self.pipelined = False
        self.log_level = "debug"
        self.port = 0
        self.more_headers = ""
        self.expects_500 = False  # a raised Lua error is what the block tests
        self.default_types = []  # `default_type` other than text/plain


def nginx_size(v):
    m = re.match(r"^(\d+)([kKmMgG]?)$", v)
    if not m:
        raise NotPortable("lua_shared_dict size %r" % v)
    unit = {"": "B", "k": "KiB", "m": "MiB", "g": "GiB"}[m.group(2).lower()]
    n = int(m.group(1))
    if unit == "B":
        return "%dB" % n if n else "0B"
    return "%d%s" % (n, unit)


def expand_env(text, env, port):
    def sub(m):
        name = m.group(1)
        if name in EXTERNAL_SERVICES:
            raise NotPortable("needs an external service ($%s)" % name)
        if name in ("TEST_NGINX_SERVER_PORT", "TEST_NGINX_PORT"):
            return "@@PORT@@"
        if name == "TEST_NGINX_HTML_DIR":
            return "@@HTML@@"
        if name == "TEST_NGINX_SERVROOT":
            return "@@SERVROOT@@"
        if name in env:
            v = env[name]
            return {"$HTML_DIR": "@@HTML@@"}.get(v, v)
        raise NotPortable("environment $%s" % name)

    return re.sub(r"\$(TEST_NGINX_[_A-Z0-9]+)", sub, text)


def lua_text(d):
    """The Lua code of a `*_by_lua` / `*_by_lua_block` directive."""
    if d.lua is not None:
        return d.lua
    if len(d.args) != 1:
        raise NotPortable("%s with %d arguments" % (d.name, len(d.args)))
    return d.args[0]


def phase_of(name):
    for base, phase in LUA_PHASES.items():
        if name in (base, base + "_block", base + "_file"):
            return phase, name.endswith("_file")
    return None, False


def echo_lua(args):
    """`echo a b;` as Lua, when it is plain text (no nginx variables)."""
    newline = True
    if args and args[0] == "-n":
        newline = False
        args = args[1:]
    if args and args[0] == "--":
        args = args[1:]
    text = " ".join(args)
    if "$" in text:
        raise NotPortable("echo with nginx variables")
    fn = "ngx.say" if newline else "ngx.print"
    return "%s(%s)" % (fn, lua_quote(text))


def lua_quote(s):
    out = ['"']
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 32 or ord(c) == 127:
            out.append("\\%d" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


SELF_PROXY = re.compile(
    r"^http://(?:127\.0\.0\.1|localhost):(?:\$server_port|@@PORT@@)(/[^$]*)?$"
)

def translate_location(d, plan):
    if d.children is None:
        raise NotPortable("location without a block")
    args = d.args
    if len(args) == 1:
        mod, path = "", args[0]
    elif len(args) == 2:
        mod, path = args
    else:
        raise NotPortable("location syntax")
    if path.startswith("@") or mod.startswith("@"):
        raise NotPortable("named location (@name)")
    if mod == "=":
        route = Route("path_exact", path)
    elif mod in ("", "^~"):
        route = Route("path", path)
    elif mod == "~":
        route = Route("path_regex", path)
    elif mod == "~*":
        route = Route("path_regex", "(?i)" + path)
    else:
        raise NotPortable("location modifier %r" % mod)
    echo = []
    for c in d.children:
        phase, is_file = phase_of(c.name)
        if phase:
            if phase in route.lua:
                raise NotPortable("two %s handlers" % phase)
            if is_file:
                if len(c.args) != 1:
                    raise NotPortable("%s syntax" % c.name)
                p = c.args[0]
                if "$" in p:
                    raise NotPortable("%s with nginx variables" % c.name)
                route.lua[phase] = ("file", p)
            else:
                code = lua_text(c)
                route.lua[phase] = ("inline", code)
                plan.lua_sources.append(code)
            continue
        if c.name == "location":
            raise NotPortable("nested location")
        if c.name == "echo":
            echo.append(echo_lua(c.args))
            continue
        if c.name == "default_type":
            # Test::Nginx's own default is text/plain; moongate has no setting
            # for another one.
            if c.args != ["text/plain"]:
                plan.default_types.append(c.args)
            continue
        if c.name == "lua_code_cache" and c.args == ["on"]:
            continue
        if c.name == "proxy_pass":
            if len(c.args) != 1:
                raise NotPortable("proxy_pass syntax")
            m = SELF_PROXY.match(c.args[0])
            if not m:
                raise NotPortable("proxy_pass to another server")
            if route.kind == "path_regex" and m.group(1):
                raise NotPortable("proxy_pass with a URI in a regex location")
            route.upstream_self = True
            plan.needs_port = True
            if m.group(1):
                if route.kind == "path_exact":
                    route.rewrite = ("^" + re.escape(path) + "$", m.group(1))
                else:
                    route.rewrite = ("^" + re.escape(path) + "(.*)$", m.group(1) + "$1")
            continue
        raise NotPortable("directive %s" % c.name)
    if echo:
        if "content" in route.lua or route.upstream_self:
            raise NotPortable("echo next to another content handler")
        route.lua["content"] = ("inline", "\n".join(echo))
    if "content" in route.lua and route.upstream_self:
        raise NotPortable("content handler and proxy_pass")
    if "content" not in route.lua and not route.upstream_self:
        # nginx's static handler serves such a location from `root html`.
        route.static = True
    return route


def translate_http_config(dirs, plan):
    for d in dirs:
        n = d.name
        if n == "lua_shared_dict":
            if len(d.args) != 2:
                raise NotPortable("lua_shared_dict syntax")
            plan.shared_dicts[d.args[0]] = nginx_size(d.args[1])
        elif n in ("init_by_lua", "init_by_lua_block"):
            plan.init = lua_text(d)
            plan.lua_sources.append(plan.init)
        elif n in ("init_worker_by_lua", "init_worker_by_lua_block"):
            plan.init_worker = lua_text(d)
            plan.lua_sources.append(plan.init_worker)
        elif n == "lua_package_path":
            if len(d.args) != 1:
                raise NotPortable("lua_package_path syntax")
            plan.package_path = d.args[0]
        elif n == "lua_package_cpath":
            continue
        elif n == "lua_code_cache" and d.args == ["on"]:
            continue
        else:
            raise NotPortable("http_config directive %s" % n)


def translate_config(dirs, plan):
    for d in dirs:
        if d.name == "location":
            plan.routes.append(translate_location(d, plan))
        elif d.name == "lua_code_cache" and d.args == ["on"]:
            continue
        else:
            raise NotPortable("server directive %s" % d.name)
    if not plan.routes:
        raise NotPortable("no location")


def section_value(block, name, perl_vars):
    sec = block.sections.get(name)
    if sec is None:
        return None
    if sec.value is None:
        try:
            apply_filters(sec, perl_vars)
        except Unsupported as e:
            raise NotPortable(str(e))
    return sec.value


def plan_block(tfile, block):
    """Returns a Plan for a portable block, or raises NotPortable."""
    for name in block.order:
        if name in UNPORTABLE_SECTIONS:
            raise NotPortable(UNPORTABLE_SECTIONS[name])
        if name == "ONLY":
            continue
        if name not in IGNORED_SECTIONS and name not in UNPORTABLE_SECTIONS:
            raise NotPortable("section --- %s" % name)
    pv = tfile.perl_vars
    plan = Plan()
    # Test-side sections: evaluate them now so Perl we cannot read is found
    # before running.
    for name in block.order:
        if not name.startswith("stap"):
            section_value(block, name, pv)
    skip = block.get("skip_nginx")
    if skip is not None and not skip_nginx_false(skip):
        raise NotPortable("--- skip_nginx")
    if block.has("main_config") and (block.get("main_config") or "").strip():
        raise NotPortable("--- main_config")
    http_config = block.get("http_config") or ""
    config = block.get("config") or ""
    if not isinstance(config, str) or not isinstance(http_config, str):
        raise NotPortable("config is not a string")
    http_config = expand_env(http_config, tfile.env, None)
    config = expand_env(config, tfile.env, None)
    if "@@PORT@@" in http_config + config:
        plan.needs_port = True
    files = block.get("user_files")
    if files:
        if not isinstance(files, str):
            raise NotPortable("--- user_files eval")
        plan.user_files = parse_user_files(files)
    try:
        translate_http_config(nginxconf.parse(http_config), plan)
        translate_config(nginxconf.parse(config), plan)
    except Unsupported as e:
        raise NotPortable(str(e))
    if plan.default_types:
        # Dropping it is harmless unless the test looks at Content-Type.
        seen = "\n".join(str(block.get(n) or "") for n in block.order if not n.startswith("stap"))
        if re.search(r"content[-_]type", seen, re.I):
            raise NotPortable("default_type other than text/plain, and the test looks at Content-Type")
    for r in plan.routes:
        for phase, (kind, v) in r.lua.items():
            if kind == "file":
                content = resolve_user_file(v, plan.user_files)
                if content is None:
                    raise NotPortable("*_by_lua_file outside user_files")
                plan.lua_sources.append(content)
    plan.requests = request_specs(block, pv, tfile.env)
    mh = block.get("more_headers")
    if isinstance(mh, list):
        plan.more_headers = [expand_env(x, tfile.env, None) for x in mh]
    elif isinstance(mh, str):
        plan.more_headers = expand_env(mh, tfile.env, None)
    elif mh is not None:
        raise NotPortable("--- more_headers type")
    plan.log_level = (block.get("log_level") or "debug").strip()
    codes = block.get("error_code")
    plan.expects_500 = "500" in [str(c).strip() for c in as_list(codes) or []]
    if block.has("ignore_response") and not checkable_logs(block, plan):
        raise NotPortable("--- ignore_response with nothing moongate-checkable")
    return plan


def skip_nginx_false(spec):
    """`--- skip_nginx: 2: < 0.8.54` etc.: true when our nginx (1.21.4, the
    one ngx_lua v0.10.23 was tested with) is *not* skipped."""
    m = re.match(r"^\s*(\d+)\s*:\s*([<>]=?)\s*([\d.]+)", spec or "")
    if not m:
        return False
    have = (1, 21, 4)
    want = tuple(int(x) for x in m.group(3).split("."))
    op = m.group(2)
    skip = {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[op]
    return not skip


def parse_user_files(text):
    files = []
    cur = None
    for line in text.split("\n"):
        m = re.match(r"^>>> (\S+)(?:\s+(\d+))?\s*$", line)
        if m:
            if cur:
                files.append(cur)
            cur = [m.group(1), []]
        elif cur is not None:
            cur[1].append(line)
    if cur:
        files.append(cur)
    return [(n, "\n".join(lines).rstrip("\n") + "\n") for n, lines in files]


def resolve_user_file(p, user_files):
    p2 = p.replace("@@HTML@@/", "").replace("@@HTML@@", "")
    if p2.startswith("html/"):
        p2 = p2[len("html/"):]
    for n, content in user_files:
        if n == p2:
            return content
    return None


def as_list(v):
    if v is None:
        return None
    return v if isinstance(v, list) else [v]


def request_specs(block, pv, env):
    reqs = []
    if block.has("pipelined_requests"):
        v = block.get("pipelined_requests")
        if not isinstance(v, list):
            raise NotPortable("--- pipelined_requests")
        return [("pipelined", expand_env(x, env, None)) for x in v]
    if block.has("raw_request"):
        v = block.get("raw_request")
        if not isinstance(v, str):
            raise NotPortable("--- raw_request in packets")
        return [("raw", expand_env(v, env, None))]
    v = block.get("request")
    if v is None:
        raise NotPortable("no --- request")
    if isinstance(v, list):
        for x in v:
            if not isinstance(x, str):
                raise NotPortable("request packets")
            reqs.append(("request", x))
    elif isinstance(v, str):
        reqs.append(("request", v))
    else:
        raise NotPortable("request type")
    return [(k, expand_env(r, env, None)) for k, r in reqs]


def error_log_patterns(block):
    v = block.get("error_log")
    if v is None:
        return []
    return [p for p in as_list(v) if p != ""] if isinstance(v, list) else [
        p for p in v.split("\n") if p.strip() != ""
    ] if isinstance(v, str) else [v]


# ngx_lua names a chunk `content_by_lua(nginx.conf:40):3:`; moongate names
# it `/path/conf.d/00-test.toml:12:`. In a pattern (as regex source) such a
# reference becomes a wildcard. `[lua] ` (ngx.log's prefix) is dropped.
CHUNK_REF = re.compile(
    r"(?:\\\[lua\\\]\\? ?|\[lua\] ?)?"
    r"[\w.\\]*?_by_lua(?:_block|_file)?\\?\((?:\\?[^)\\]|\\.)*?\\?\):(?:\\d\+|\d+):"
)

# ngx_lua's and nginx's own log lines (debug traces, internal notices):
# moongate has its own wording, so these are never checked.
INTERNAL = re.compile(
    r"^(?:\^)?(?:lua |pcre JIT|unsafe URI|\[lua\] ?lua |http |ngx_http_|\w+ \d+ bytes)"
)


def checkable_error_log(pat, plan):
    """An `--- error_log` pattern in a form to look for in moongate's log,
    or None when it cannot be checked there.

    Checked: messages the block's own Lua writes (`ngx.log`, `print`,
    `error`: their leading text appears in the block's Lua source), and, in
    blocks that expect a 500, the error string a failing `ngx.*` call raised
    (moongate logs it with the failed request). Chunk references like
    `content_by_lua(nginx.conf:40):3:` match any `file:line:`. Not checked:
    ngx_lua's and nginx's own log lines (`lua ready to sleep for`, ...)."""
    src = pat.pattern if isinstance(pat, Regex) else re.escape(pat)
    flags = pat.flags if isinstance(pat, Regex) else ""
    src = CHUNK_REF.sub(".*?", src)
    # The literal text the pattern starts with, after any chunk reference.
    body = re.sub(r"^(?:\.\*\?\s*)+", "", src)
    body = re.sub(r"^(?:\\ )+", "", body)
    body = re.sub(r"^lua (?:user|entry) thread aborted: ", "", body)
    lit = re.match(r"^((?:\\[^a-zA-Z0-9]|[^\\.^$*+?()\[\]{}|])*)", body).group(1)
    lit = re.sub(r"\\(.)", r"\1", lit).strip()
    if INTERNAL.match(lit) or INTERNAL.match(body):
        return None
    if len(lit) < 3:
        return None
    # The message's leading text must be written in the script (a literal
    # followed by computed values, like `print("group 1: ", m[2])`).
    n = 0
    for k in range(len(lit), 2, -1):
        if any(lit[:k] in s for s in plan.lua_sources):
            n = k
            break
    from_script = n >= min(len(lit), 8)
    if not from_script and not plan.expects_500:
        return None
    return Regex(src, flags)


def checkable_logs(block, plan):
    return any(checkable_error_log(p, plan) is not None for p in error_log_patterns(block))
