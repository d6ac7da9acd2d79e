"""A reader for the nginx configuration snippets of Test::Nginx blocks.

Tokenises like nginx's `ngx_conf_read_token` (quotes, `\\` escapes, `#`
comments, `{`/`}`/`;`) and reads `*_by_lua_block { ... }` bodies the way
ngx_lua does: Lua-aware, so braces inside Lua strings, long brackets and
comments do not count.
"""

import re

from tparse import Unsupported


class Directive:
    """`name args... ;`, `name args... { children }`, or a `*_by_lua_block`."""

    def __init__(self, name, args, children=None, lua=None):
        self.name = name
        self.args = args
        self.children = children
        self.lua = lua  # the code of a *_by_lua_block

    def __repr__(self):
        return "Directive(%r, %r, %s)" % (
            self.name,
            self.args,
            "lua" if self.lua is not None else self.children,
        )


def unescape(word):
    out = []
    i = 0
    while i < len(word):
        c = word[i]
        if c == "\\" and i + 1 < len(word):
            d = word[i + 1]
            if d in "\"'\\":
                out.append(d)
                i += 2
                continue
            if d == "t":
                out.append("\t")
                i += 2
                continue
            if d == "r":
                out.append("\r")
                i += 2
                continue
            if d == "n":
                out.append("\n")
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


class Parser:
    def __init__(self, text):
        self.s = text
        self.i = 0

    def skip_ws(self):
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = len(s) if j < 0 else j + 1
            else:
                return

    def token(self):
        """Returns ('word', text) | ('{',) | ('}',) | (';',) | None at end."""
        self.skip_ws()
        s = self.s
        if self.i >= len(s):
            return None
        c = s[self.i]
        if c in "{};":
            self.i += 1
            return (c,)
        if c in "\"'":
            q = c
            j = self.i + 1
            while j < len(s):
                if s[j] == "\\":
                    j += 2
                    continue
                if s[j] == q:
                    break
                j += 1
            else:
                raise Unsupported("nginx config: unterminated quote")
            word = unescape(s[self.i + 1:j])
            self.i = j + 1
            return ("word", word)
        j = self.i
        while j < len(s):
            d = s[j]
            if d == "\\":
                j += 2
                continue
            if d in " \t\r\n;" or (d == "{" and not (j > 0 and s[j - 1] == "$")):
                break
            j += 1
        word = unescape(s[self.i:j])
        self.i = j
        return ("word", word)

    def lua_block(self):
        """After `name args`, at `{`: returns the Lua code up to the matching `}`."""
        self.skip_ws()
        s = self.s
        if self.i >= len(s) or s[self.i] != "{":
            raise Unsupported("nginx config: *_by_lua_block without {")
        i = self.i + 1
        start = i
        depth = 1
        while i < len(s):
            c = s[i]
            if c == "-" and s.startswith("--", i):
                m = re.compile(r"--\[(=*)\[").match(s, i)
                if m:
                    end = s.find("]" + m.group(1) + "]", m.end())
                    if end < 0:
                        raise Unsupported("nginx config: unterminated Lua comment")
                    i = end + len(m.group(1)) + 2
                else:
                    j = s.find("\n", i)
                    i = len(s) if j < 0 else j + 1
                continue
            if c == "[":
                m = re.compile(r"\[(=*)\[").match(s, i)
                if m:
                    end = s.find("]" + m.group(1) + "]", m.end())
                    if end < 0:
                        raise Unsupported("nginx config: unterminated Lua long string")
                    i = end + len(m.group(1)) + 2
                    continue
            if c in "\"'":
                j = i + 1
                while j < len(s) and s[j] != c:
                    if s[j] == "\\":
                        j += 1
                    elif s[j] == "\n":
                        raise Unsupported("nginx config: unterminated Lua string")
                    j += 1
                i = j + 1
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    self.i = i + 1
                    return s[start:i]
            i += 1
        raise Unsupported("nginx config: unterminated *_by_lua_block")

    def block(self, top):
        out = []
        while True:
            t = self.token()
            if t is None:
                if not top:
                    raise Unsupported("nginx config: missing }")
                return out
            if t[0] == "}":
                if top:
                    raise Unsupported("nginx config: unexpected }")
                return out
            if t[0] != "word":
                raise Unsupported("nginx config: unexpected %r" % t[0])
            name = t[1]
            args = []
            if name.endswith("_by_lua_block"):
                while True:
                    self.skip_ws()
                    if self.s.startswith("{", self.i):
                        break
                    a = self.token()
                    if a is None or a[0] != "word":
                        raise Unsupported("nginx config: bad %s" % name)
                    args.append(a[1])
                out.append(Directive(name, args, lua=self.lua_block()))
                continue
            while True:
                a = self.token()
                if a is None:
                    raise Unsupported("nginx config: unterminated directive %s" % name)
                if a[0] == "word":
                    args.append(a[1])
                elif a[0] == ";":
                    out.append(Directive(name, args))
                    break
                elif a[0] == "{":
                    out.append(Directive(name, args, children=self.block(False)))
                    break
                else:
                    raise Unsupported("nginx config: unexpected }")


def parse(text):
    return Parser(text).block(True)
