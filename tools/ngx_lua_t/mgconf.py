"""Writing a moongate conf.d (TOML) for a translated block (see translate.Plan)."""

import os
import re


def toml_str(s):
    """A TOML string holding `s` exactly: a literal multi-line string when
    possible (Lua code reads best that way), else a basic string."""
    if "\n" in s and "'''" not in s and all(c in "\n\t" or ord(c) >= 32 for c in s) and "\x7f" not in s:
        # A newline right after the opening delimiter is trimmed by TOML.
        return "'''\n" + s + "'''"
    out = ['"']
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 32 or ord(c) == 127:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def subst(text, port, html, servroot):
    return (
        text.replace("@@PORT@@", str(port) if port else "0")
        .replace("@@HTML@@", html)
        .replace("@@SERVROOT@@", servroot)
    )


# The html/index.html Test::Nginx puts in the server root (no newline).
TEST_NGINX_INDEX = "<html><head><title>It works!</title></head><body>It works!</body></html>"


def write_conf(plan, root, port, time_budget=None):
    """Writes root/conf.d/00-test.toml (+ root/html/*, root/lua/*) and returns
    the conf.d path. `port` is the listen port (0: any)."""
    conf = os.path.join(root, "conf.d")
    html = os.path.join(root, "html")
    os.makedirs(conf, exist_ok=True)
    os.makedirs(html, exist_ok=True)
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    S = lambda t: subst(t, port, html, root)  # noqa: E731
    # Test::Nginx writes this index.html into every server root.
    with open(os.path.join(html, "index.html"), "w", encoding="utf-8") as f:
        f.write(TEST_NGINX_INDEX)
    for name, content in plan.user_files:
        p = os.path.join(html, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(S(content))
    lines = [
        "[server]",
        'listen = ["127.0.0.1:%d"]' % port,
        "workers = 1",
        'access_log = "off"',
        'error_format = "html"',
        "",
    ]
    lua = []
    if time_budget:
        lua.append("time_budget = %s" % toml_str(time_budget))
    if plan.package_path is not None:
        pp = S(plan.package_path).replace("$prefix", root + "/")
        parts = [p for p in pp.split(";") if p]
        lua.append("package_path = %s" % toml_str(";".join(parts)))
    if plan.init is not None:
        with open(os.path.join(root, "init.lua"), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(S(plan.init))
        lua.append('init = "init.lua"')
    if plan.init_worker is not None:
        with open(os.path.join(root, "init_worker.lua"), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(S(plan.init_worker))
        lua.append('init_worker = "init_worker.lua"')
    if lua or plan.shared_dicts:  # noqa: SIM102
        lines.append("[lua]")
        lines.extend(lua)
        lines.append("")
    if plan.shared_dicts:
        lines.append("[lua.shared_dict]")
        for name, size in plan.shared_dicts.items():
            lines.append("%s = %s" % (toml_quote_key(name), toml_str(size)))
        lines.append("")
    if any(r.upstream_self for r in plan.routes):
        lines.append("[upstream.self]")
        lines.append("retries = 0")
        lines.append('servers = [{ addr = "127.0.0.1:%d" }]' % port)
        lines.append("")
    has_root = False
    for r in plan.routes:
        lines.append("[[route]]")
        kind, path = r.kind, S(r.path)
        if r.static and kind == "path" and os.path.isfile(os.path.join(html, path.strip("/"))):
            # A prefix naming a file (`location /a.txt`): moongate would strip
            # all of it; a regex route keeps the path whole under root.
            kind, path = "path_regex", "^" + re.escape(path)
        lines.append("%s = %s" % (kind, toml_str(path)))
        if r.kind == "path" and r.path == "/":
            has_root = True
        if r.upstream_self:
            lines.append('upstream = "self"')
        if r.static:
            # moongate strips a prefix route's path before looking in root;
            # nginx's `root` does not: root the route at html/PREFIX.
            d = html
            if kind == "path":
                d = os.path.join(html, S(r.path).strip("/"))
            os.makedirs(d, exist_ok=True)
            lines.append("root = %s" % toml_str(d.rstrip("/")))
        if r.rewrite:
            lines.append("rewrite = { from = %s, to = %s }" % (toml_str(r.rewrite[0]), toml_str(r.rewrite[1])))
        for phase, (kind, v) in r.lua.items():
            if kind == "inline":
                lines.append("lua.%s_inline = %s" % (phase, toml_str(S(v))))
            else:
                p = S(v)
                if not os.path.isabs(p):
                    p = os.path.join(root, p)
                lines.append("lua.%s = %s" % (phase, toml_str(p)))
        lines.append("")
    if not has_root:
        # Test::Nginx serves `location / { root html; }` next to the test's own.
        lines.append("[[route]]")
        lines.append('path = "/"')
        lines.append("root = %s" % toml_str(html))
        lines.append("")
    with open(os.path.join(conf, "00-test.toml"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("\n".join(lines))
    return conf


def toml_quote_key(k):
    if re.match(r"^[A-Za-z0-9_-]+$", k):
        return k
    return toml_str(k) if "'''" in k else '"%s"' % k.replace("\\", "\\\\").replace('"', '\\"')
