//! Integration tests: the real moongate binary on loopback in front of real
//! origins, driven by real HTTP clients. One test binary (link time on 2
//! cores), one module per feature.

mod support;
mod balance;
mod upstream_health;
mod proxying;
mod reload;
mod shutdown;
mod websocket;
mod embed;
mod access_log;
mod limits;
mod static_files;
mod tls;
mod check;
mod check_paths;
mod timeouts;
mod admin;
mod lua;
mod lua_response;
mod lua_threads;
mod lua_balancer;
mod lua_socket;
mod lua_subrequest;
mod lua_api;
mod lua_req_socket;
mod lua_docs;
mod lua_resty;
mod lua_re;
mod ratelimit;
mod ratelimit_redis;
mod cache;
mod cache_lua;
mod cache_purge;
mod cache_stream;
mod cache_refresh;
mod cache_conditional;
mod workers;
mod examples;
mod upgrade;
mod http1_strict;
mod http1_server;
mod http1_discard;
mod route_redirect;
mod h2;
mod listen;
