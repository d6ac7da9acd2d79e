"""Tests of the runner's own parsing and decisions (no moongate needed):

    python3 -m unittest discover -s tools/ngx_lua_t -p 'test_*.py'
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mgconf  # noqa: E402
import nginxconf  # noqa: E402
import run  # noqa: E402
import tparse  # noqa: E402
import translate  # noqa: E402
from tparse import Regex  # noqa: E402

T_FILE = r"""use Test::Nginx::Socket::Lua;
our $HtmlDir = html_dir;
run_tests();

__DATA__

=== TEST 1: inline lua, quoted
--- http_config
    lua_shared_dict dogs 1m;
--- config
    location = /t {
        content_by_lua '
            ngx.say("a\\tb", [[}]])  -- }
        ';
    }
--- request
GET /t
--- response_body
a	b}
--- error_code: 200
--- no_error_log
[error]



=== TEST 2: block, eval, chomp, array requests
--- config
    location /t {
        content_by_lua_block {
            local s = "}" --[[ } ]]
            ngx.print(s)
        }
    }
--- request eval
["GET /t", "GET /t/x"]
--- response_body eval
["}", qr/^\}$/]
--- more_headers chomp
X-A: 1



=== TEST 3: set is not portable
--- config
    location /t {
        set $foo bar;
        content_by_lua 'ngx.say(1)';
    }
--- request
GET /t
--- response_body
1
"""


class Parsing(unittest.TestCase):
    def setUp(self):
        fd, self.path = tempfile.mkstemp(suffix=".t")
        with os.fdopen(fd, "w") as f:
            f.write(T_FILE)
        self.tf = tparse.parse_file(self.path)

    def tearDown(self):
        os.unlink(self.path)

    def test_blocks_and_sections(self):
        self.assertEqual([b.name for b in self.tf.blocks], [
            "TEST 1: inline lua, quoted",
            "TEST 2: block, eval, chomp, array requests",
            "TEST 3: set is not portable",
        ])
        b = self.tf.blocks[0]
        self.assertEqual(b.sections["response_body"].raw, "a\tb}\n")
        self.assertEqual(b.sections["error_code"].raw, "200")
        self.assertTrue(b.sections["error_code"].inline)
        self.assertEqual(self.tf.perl_vars["HtmlDir"], "@@HTML@@")

    def test_nginx_quoting_and_lua_blocks(self):
        plan = translate.plan_block(self.tf, self.tf.blocks[0])
        (route,) = plan.routes
        self.assertEqual(route.kind, "path_exact")
        code = route.lua["content"][1]
        # nginx turns `\\t` into `\t` inside the quoted directive argument
        self.assertIn('ngx.say("a\\tb", [[}]])', code)
        self.assertEqual(plan.shared_dicts, {"dogs": "1MiB"})
        plan2 = translate.plan_block(self.tf, self.tf.blocks[1])
        self.assertIn('local s = "}" --[[ } ]]', plan2.routes[0].lua["content"][1])
        self.assertEqual(plan2.routes[0].kind, "path")

    def test_eval_and_filters(self):
        b = self.tf.blocks[1]
        translate.plan_block(self.tf, b)
        self.assertEqual(b.get("request"), ["GET /t", "GET /t/x"])
        body = b.get("response_body")
        self.assertEqual(body[0], "}")
        self.assertIsInstance(body[1], Regex)
        self.assertEqual(b.get("more_headers"), "X-A: 1")

    def test_not_portable_reason(self):
        with self.assertRaises(translate.NotPortable) as e:
            translate.plan_block(self.tf, self.tf.blocks[2])
        self.assertEqual(str(e.exception), "directive set")


class Perl(unittest.TestCase):
    def test_strings(self):
        ev = lambda s: tparse.perl_eval(s, {"X": "x"})  # noqa: E731
        self.assertEqual(ev(r'"a\nb\x{41}"'), "a\nbA")
        self.assertEqual(ev(r"'a\nb'"), "a\\nb")
        self.assertEqual(ev('"ab" x 3 . "c"'), "abababc")
        self.assertEqual(ev('"$::X-$X"'), "x-x")
        self.assertEqual(ev("[1, 'two',]"), ["1", "two"])
        with self.assertRaises(tparse.Unsupported):
            ev("my $i = 1; $i")


class Requests(unittest.TestCase):
    def test_build_request(self):
        data, meth = run.build_request("POST /t?a=1\nhello, world\n", "X-A: 1\n")
        self.assertEqual(meth, "POST")
        self.assertEqual(
            data,
            b"POST /t?a=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"X-A: 1\r\nContent-Length: 12\r\n\r\nhello, world",
        )
        data, _ = run.build_request("GET /t HTTP/1.0", "Host: h")
        self.assertEqual(data, b"GET /t HTTP/1.0\r\nConnection: close\r\nHost: h\r\n\r\n")


class Logs(unittest.TestCase):
    def plan(self, code, expects_500=False):
        p = translate.Plan()
        p.lua_sources = [code]
        p.expects_500 = expects_500
        return p

    def test_checkable(self):
        p = self.plan('print("group 1: ", m[2])')
        c = translate.checkable_error_log("group 1: false", p)
        self.assertTrue(c.compile().search("[notice] x: group 1: false"))
        # a chunk reference matches moongate's own file:line
        c = translate.checkable_error_log(
            "[lua] content_by_lua(nginx.conf:40):3: group 1: x", self.plan('print("group 1: ")'))
        self.assertTrue(c.compile().search("moongate::lua: /x/00-test.toml:12: group 1: x"))
        # ngx_lua's own debug lines are never checked
        self.assertIsNone(translate.checkable_error_log("lua ready to sleep for", p))
        # raised errors are checked in blocks that expect a 500
        self.assertIsNone(translate.checkable_error_log('bad "zone" argument', p))
        self.assertIsNotNone(translate.checkable_error_log('bad "zone" argument', self.plan("", True)))

    def test_nginx_style_log(self):
        log = run.nginx_style_log(["2026-12-03T14:00:17.7Z ERROR moongate::lua: f:6: hello"])
        self.assertEqual(log, ["[error] moongate::lua: f:6: hello"])


class Conf(unittest.TestCase):
    def test_toml_strings(self):
        self.assertEqual(mgconf.toml_str("1s"), '"1s"')
        self.assertEqual(mgconf.toml_str("a\nb"), "'''\na\nb'''")
        self.assertEqual(mgconf.toml_str("a'''\nb"), '"a\'\'\'\\nb"')
        self.assertEqual(mgconf.toml_str("a\rb"), '"a\\rb"')

    def test_tokens(self):
        (d,) = nginxconf.parse("location ~ ^/a${b} { echo \"x y\" z; }")
        self.assertEqual(d.args, ["~", "^/a${b}"])
        self.assertEqual(d.children[0].args, ["x y", "z"])


if __name__ == "__main__":
    unittest.main()
