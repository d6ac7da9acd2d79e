"""Reading Test::Nginx `.t` files: blocks, sections, Test::Base filters, and
the small subset of Perl that block sections evaluate (`--- x eval`).

Only what the portable blocks need is understood; anything else raises
`Unsupported`, which the caller turns into a "not portable" reason.
"""

import re


class Unsupported(Exception):
    """A feature this runner does not translate (the reason is the message)."""


class Section:
    """One `--- name filters` section of a block, filters applied."""

    def __init__(self, name, filters, raw, inline):
        self.name = name
        self.filters = filters  # list of filter names, in order
        self.raw = raw  # the text as written (after trim)
        self.inline = inline  # written as `--- name: value`
        self.value = None  # set by apply_filters: str, list, or Regex


class Regex:
    """A Perl `qr/.../flags` value."""

    def __init__(self, pattern, flags=""):
        self.pattern = pattern
        self.flags = flags

    def compile(self, extra=""):
        return compile_perl_regex(self.pattern, self.flags + extra)

    def __repr__(self):
        return "qr/%s/%s" % (self.pattern, self.flags)


class Block:
    """One `=== TEST N: name` block."""

    def __init__(self, name, line, sections, order):
        self.name = name
        self.line = line
        self.sections = sections  # name -> Section
        self.order = order

    def has(self, name):
        return name in self.sections

    def get(self, name, default=None):
        s = self.sections.get(name)
        return default if s is None else s.value


class TFile:
    def __init__(self, path, header, blocks, perl_vars, env):
        self.path = path
        self.header = header
        self.blocks = blocks
        self.perl_vars = perl_vars  # `our $X = ...` string values from the header
        self.env = env  # $ENV{...} defaults from the header


SECTION_RE = re.compile(r"^--- +\(?(\w+)\)? *(.*)?\n", re.M)


def trim(text):
    text = re.sub(r"\A([ \t]*\n)+", "", text)
    text = re.sub(r"(?<=\n)\s*\Z", "", text)
    return text


def norm(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_file(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    head, sep, data = text.partition("\n__DATA__\n")
    if not sep:
        raise Unsupported("no __DATA__")
    data = re.split(r"^__END__\s*$", data, maxsplit=1, flags=re.M)[0]
    perl_vars, env = parse_header(head)
    blocks = []
    line_of = 1 + head.count("\n") + 2
    hunks = re.findall(r"^(===.*?(?=^===|\Z))", data, flags=re.M | re.S)
    pos = 0
    for hunk in hunks:
        idx = data.index(hunk, pos)
        line = line_of + data.count("\n", 0, idx)
        pos = idx + len(hunk)
        blocks.append(make_block(hunk, line))
    return TFile(path, head, blocks, perl_vars, env)


def make_block(hunk, line):
    m = re.match(r"===[ \t]*(.*)\s+", hunk)
    name = m.group(1).strip()
    hunk = hunk[m.end():]
    parts = SECTION_RE.split(hunk)
    sections = {}
    order = []
    rest = parts[1:]
    for i in range(0, len(rest), 3):
        sname, filters, value = rest[i], rest[i + 1] or "", rest[i + 2] or ""
        inline = False
        if re.search(r":(\s|\Z)", filters):
            inline = True
            fsplit = re.split(r"\s*:(?:\s+|\Z)", filters, maxsplit=1)
            filters = fsplit[0]
            value = fsplit[1] if len(fsplit) > 1 else ""
            value = value.strip()
        value = trim(norm(value))
        sec = Section(sname, filters.split(), value, inline)
        sections[sname] = sec
        order.append(sname)
    return Block(name, line, sections, order)


HEADER_OUR_RE = re.compile(r"^\s*our\s+\$(\w+)\s*=\s*", re.M)


def parse_header(head):
    """`our $Name = <perl string>;` and `$ENV{X} ||= value;` from the header."""
    perl_vars = {}
    env = {}
    for m in HEADER_OUR_RE.finditer(head):
        name = m.group(1)
        rest = head[m.end():]
        hd = re.match(r"<<\s*(['\"]?)(\w+)\1\s*;[^\n]*\n(.*?)^\2$", rest, re.S | re.M)
        try:
            if hd:
                # A heredoc: `<<'X'` is literal, `<<X` / `<<"X"` interpolates.
                value = hd.group(3) if hd.group(1) == "'" else perl_interpolate(hd.group(3), perl_vars)
            else:
                value, _ = PerlEval(rest, perl_vars).expr_prefix()
        except Unsupported:
            continue
        if isinstance(value, str):
            perl_vars[name] = value
    if re.search(r"^\s*our\s+\$HtmlDir\s*=\s*html_dir\b", head, re.M):
        perl_vars["HtmlDir"] = "@@HTML@@"  # the block's html dir, filled in at run time
    if re.search(r"^\s*our\s+\$LuaCpath\s*=", head, re.M):
        perl_vars["LuaCpath"] = ""  # only ever used in lua_package_cpath, which is dropped
    for m in re.finditer(r"\$ENV\{(\w+)\}\s*(\|\|)?=\s*([^;]+);", head):
        v = m.group(3).strip()
        mm = re.match(r"""^(['"])(.*)\1$""", v)
        if mm:
            env[m.group(1)] = mm.group(2)
        elif re.match(r"^\d+$", v):
            env[m.group(1)] = v
        elif v in ("html_dir", "html_dir()", "$HtmlDir"):
            env[m.group(1)] = "$HTML_DIR"
    return perl_vars, env


# ---------------------------------------------------------------- Perl subset


class PerlEval:
    """Evaluates a tiny subset of Perl expressions: string literals ('..',
    "..", q{}, qq{}, heredocs), qr//, `.` concatenation, `x` repetition,
    array refs `[...]`, lists, `$::Var` / `$Var` of the header's `our`
    strings, and `chr(N)`. Anything else raises Unsupported."""

    def __init__(self, src, perl_vars):
        self.s = src
        self.i = 0
        self.vars = perl_vars

    def ws(self):
        while True:
            m = re.compile(r"\s+|#[^\n]*").match(self.s, self.i)
            if not m or m.end() == self.i:
                return
            self.i = m.end()

    def peek(self, lit):
        self.ws()
        return self.s.startswith(lit, self.i)

    def eat(self, lit):
        if self.peek(lit):
            self.i += len(lit)
            return True
        return False

    def expr_prefix(self):
        """Parses one expression (a list if commas) and returns (value, end)."""
        v = self.list_expr()
        return v, self.i

    def full(self):
        v = self.list_expr()
        self.ws()
        if self.i < len(self.s) and self.s[self.i] == ";":
            self.i += 1
            self.ws()
        if self.i != len(self.s):
            raise Unsupported("complex Perl eval: %r" % self.s[self.i:self.i + 40])
        return v

    def list_expr(self):
        items = [self.concat()]
        while self.eat(",") or self.eat("=>"):
            self.ws()
            if self.i >= len(self.s) or self.s[self.i] in "]);":
                break
            items.append(self.concat())
        return items[0] if len(items) == 1 else items

    def concat(self):
        v = self.repeat()
        while True:
            self.ws()
            if self.s.startswith(".", self.i) and not self.s.startswith("..", self.i):
                self.i += 1
                w = self.repeat()
                if not (isinstance(v, str) and isinstance(w, str)):
                    raise Unsupported("complex Perl eval: concat of non-strings")
                v = v + w
            else:
                return v

    def repeat(self):
        v = self.term()
        while True:
            self.ws()
            m = re.compile(r"x\s*(\d+)").match(self.s, self.i)
            if m and not re.match(r"\w", self.s[m.end():m.end() + 1] or " "):
                n = int(m.group(1))
                self.i = m.end()
                if isinstance(v, str):
                    v = v * n
                elif isinstance(v, list):
                    v = v * n
                else:
                    raise Unsupported("complex Perl eval: x")
                continue
            m = re.compile(r"x\s*\(").match(self.s, self.i)
            if m and isinstance(v, list):
                self.i = m.end() - 1
                raise Unsupported("complex Perl eval: x (expr)")
            return v

    def term(self):
        self.ws()
        s, i = self.s, self.i
        if i >= len(s):
            raise Unsupported("complex Perl eval: unexpected end")
        c = s[i]
        if c == "'":
            return self.single_quoted("'", "'")
        if c == '"':
            self.i += 1
            return self.double_quoted('"', '"')
        if c == "[":
            self.i += 1
            items = []
            self.ws()
            if self.eat("]"):
                return []
            v = self.list_expr()
            if not self.eat("]"):
                raise Unsupported("complex Perl eval: array")
            return v if isinstance(v, list) else [v]
        if c == "(":
            self.i += 1
            if self.eat(")"):
                return []
            v = self.list_expr()
            if not self.eat(")"):
                raise Unsupported("complex Perl eval: parens")
            return v
        m = re.compile(r"(qq|q|qr)\s*([^\w\s])").match(s, i)
        if m:
            kind, open_ = m.group(1), m.group(2)
            close = {"{": "}", "(": ")", "[": "]", "<": ">"}.get(open_, open_)
            self.i = m.end()
            if kind == "q":
                self.i -= 1
                return self.single_quoted(open_, close)
            if kind == "qq":
                return self.double_quoted(open_, close)
            body = self.raw_delimited(open_, close)
            fm = re.compile(r"[msixpn]*").match(s, self.i)
            self.i = fm.end()
            return Regex(body, fm.group(0))
        m = re.compile(r"<<\s*(['\"]?)(\w+)\1\s*;?").match(s, i)
        if m:
            raise Unsupported("complex Perl eval: heredoc")
        m = re.compile(r"\$(?:::)?(\w+)").match(s, i)
        if m:
            name = m.group(1)
            if name in self.vars:
                self.i = m.end()
                return self.vars[name]
            raise Unsupported("complex Perl eval: variable $%s" % name)
        m = re.compile(r"chr\s*\(\s*(\d+)\s*\)").match(s, i)
        if m:
            self.i = m.end()
            return chr(int(m.group(1)))
        m = re.compile(r"-?\d+(\.\d+)?").match(s, i)
        if m:
            self.i = m.end()
            return m.group(0)
        raise Unsupported("complex Perl eval: %r" % s[i:i + 30])

    def raw_delimited(self, open_, close):
        s = self.s
        depth = 1
        out = []
        i = self.i
        while i < len(s):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                out.append(s[i:i + 2])
                i += 2
                continue
            if open_ != close and c == open_:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    self.i = i + 1
                    return "".join(out)
            out.append(c)
            i += 1
        raise Unsupported("complex Perl eval: unterminated")

    def single_quoted(self, open_, close):
        self.i += 1
        body = self.raw_delimited(open_, close)
        return re.sub(r"\\([\\%s%s])" % (re.escape(open_), re.escape(close)), r"\1", body)

    def double_quoted(self, open_, close):
        body = self.raw_delimited(open_, close)
        return perl_interpolate(body, self.vars)


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "e": "\x1b", "f": "\f"}


def perl_interpolate(body, perl_vars):
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            d = body[i + 1]
            if d in ESCAPES:
                out.append(ESCAPES[d])
                i += 2
                continue
            if d == "x":
                m = re.compile(r"x\{([0-9a-fA-F]+)\}|x([0-9a-fA-F]{1,2})").match(body, i + 1)
                if m:
                    out.append(chr(int(m.group(1) or m.group(2), 16)))
                    i = m.end()
                    continue
            if d.isdigit():
                m = re.compile(r"[0-7]{1,3}").match(body, i + 1)
                out.append(chr(int(m.group(0), 8)))
                i = m.end()
                continue
            out.append(d)
            i += 2
            continue
        if c == "$":
            m = re.compile(r"\$(?:::)?(\w+)|\$\{(\w+)\}").match(body, i)
            if m:
                name = m.group(1) or m.group(2)
                if name in perl_vars:
                    out.append(perl_vars[name])
                    i = m.end()
                    continue
                raise Unsupported("complex Perl eval: interpolates $%s" % name)
        if c == "@":
            m = re.compile(r"@(?:::)?\w").match(body, i)
            if m:
                raise Unsupported("complex Perl eval: interpolates an array")
        out.append(c)
        i += 1
    return "".join(out)


def perl_eval(src, perl_vars):
    return PerlEval(src, perl_vars).full()


def apply_filters(sec, perl_vars):
    value = sec.raw
    for f in sec.filters:
        if f == "eval":
            if not isinstance(value, str):
                raise Unsupported("eval of non-string")
            value = perl_eval(value, perl_vars)
        elif f == "chomp":
            if isinstance(value, str) and value.endswith("\n"):
                value = value[:-1]
        elif f == "chop":
            if isinstance(value, str) and value:
                value = value[:-1]
        elif f in ("", "env"):
            pass
        else:
            raise Unsupported("section filter %r" % f)
    sec.value = value
    return value


# ------------------------------------------------------------- Perl regexes


def compile_perl_regex(pattern, flags):
    fl = 0
    for c in flags:
        if c == "i":
            fl |= re.I
        elif c == "s":
            fl |= re.S
        elif c == "m":
            fl |= re.M
        elif c == "x":
            fl |= re.X
    # \Q...\E quotes its text literally.
    pat = re.sub(r"\\Q(.*?)(?:\\E|$)", lambda m: re.escape(m.group(1)), pattern, flags=re.S)
    # Perl-only syntax that Python spells differently.
    pat = pat.replace(r"\z", r"\Z")
    pat = re.sub(r"\\Z(?!\))", r"\\Z", pat)
    pat = pat.replace("(?<", "(?P<") if re.search(r"\(\?<\w+>", pat) else pat
    pat = re.sub(r"\\x\{([0-9a-fA-F]+)\}", lambda m: "\\x%02x" % int(m.group(1), 16)
                 if int(m.group(1), 16) < 256 else chr(int(m.group(1), 16)), pat)
    try:
        return re.compile(pat, fl)
    except re.error as e:
        raise Unsupported("Perl regex %r: %s" % (pattern, e))
