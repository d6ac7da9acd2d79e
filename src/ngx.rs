//! Plain-Rust building blocks behind the `ngx` Lua API, with ngx_lua's
//! exact behaviour and no Lua in them: codecs and hashes ([`codec`]),
//! HTTP and log times ([`time`]), and PCRE-style regular expressions for
//! `ngx.re` ([`re`]).

pub mod codec;
pub mod time;
pub mod re;
