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
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"
  fi
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked 2>&1
