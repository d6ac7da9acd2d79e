#!/usr/bin/env bash
# The project's test command (README.md): installs what the tests need on a
# fresh Debian machine, then runs lint and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
# OpenResty's lua-resty-lrucache, loaded unchanged by the Lua tests.
[ -f /usr/share/lua/5.1/resty/lrucache.lua ] || need_apt+=(lua-resty-lrucache)
# A real Redis for the scope = "redis" rate-limit tests; they start their own
# redis-server on a free loopback port (no system service is used), and a
# 3-master Redis Cluster joined with redis-cli (Debian's redis-tools).
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# HAProxy as the L4 front of examples/cluster (three nodes on a Redis
# Cluster), which tests/it/cluster_example.rs runs in its short mode; it
# starts its own haproxy on a free loopback port (no system service is used).
command -v haproxy >/dev/null || need_apt+=(haproxy)
# A real uWSGI with the python3 plugin for the protocol = "uwsgi" tests
# (tests/it/upstream_uwsgi.rs start their own on a free port or socket).
command -v uwsgi >/dev/null || need_apt+=(uwsgi-core)
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || need_apt+=(uwsgi-plugin-python3)
# PHP-FPM for the FastCGI tests (tests/it/upstream_fastcgi.rs), started by
# each test on a free port; Debian names its binary by PHP version
# (/usr/sbin/php-fpm8.2, not on a user's PATH).
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need_apt+=(php-fpm)
# Apache's htpasswd (Debian's apache2-utils) writes the bcrypt, SHA-crypt,
# apr1 and {SHA} lines that src/auth/htpasswd/tests.rs verifies.
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
# The openssl CLI generates the RSA keys of src/auth/jwt/tests.rs (ring,
# which signs the other test keys, cannot generate RSA keys).
command -v openssl >/dev/null || need_apt+=(openssl)
# Debian's nginx with OpenResty's Lua module for tests/it/import.rs, which
# runs an nginx configuration under the real nginx and its `moongate import`
# under moongate side by side (each test starts its own nginx process on a
# free loopback port, under a temp prefix).
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need_apt+=(libnginx-mod-http-lua)
[ -f /usr/share/lua/5.1/resty/core.lua ] || need_apt+=(lua-resty-core)
# A real headless browser for the admin status page test
# (tests/it/status_page.rs drives /usr/bin/chromium through chromedriver).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "$@"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "$@"
  fi
}
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install "${need_apt[@]}"
fi
# Flask under gunicorn as a managed pool (tests/it/examples.rs, examples/flask):
# from PyPI with pip; where pip is missing or refuses (an externally managed
# Python), Debian's packages.
if ! python3 -c 'import flask, gunicorn' 2>/dev/null; then
  python3 -m pip install --quiet flask gunicorn 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages flask gunicorn 2>/dev/null \
    || apt_install python3-flask python3-gunicorn
  python3 -c 'import flask, gunicorn'
fi
# prometheus_client: its OpenMetrics parser, the reference reader of
# GET /metrics in tests/it/metrics/openmetrics.rs.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install --quiet prometheus-client 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages prometheus-client 2>/dev/null \
    || apt_install python3-prometheus-client
  python3 -c 'import prometheus_client'
fi
# grpcio for the gRPC tests (tests/it) and examples/grpc: the
# echo service examples/grpc/echo_server.py and the client
# tests/grpc/echo_client.py, both raw-bytes messages (no protobuf codegen).
if ! python3 -c 'import grpc' 2>/dev/null; then
  python3 -m pip install --quiet grpcio 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages grpcio 2>/dev/null \
    || apt_install python3-grpcio
  python3 -c 'import grpc'
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The fuzz targets' entry points (src/fuzz_api.rs) exist only with this feature.
cargo clippy --all-targets --locked --features fuzzing -- -D warnings
# The bench build's counting allocator (src/alloc_count.rs, bench/run.py --allocations).
cargo clippy --all-targets --locked --features alloc-count -- -D warnings
cargo test --locked 2>&1
