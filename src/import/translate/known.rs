//! Why a directive moongate does not take is left out: a table of the
//! nginx directives the import knows it drops, each with its reason and
//! whether moongate needs it at all.

use super::super::report::Severity;

/// Why a directive moongate does not take is left out, for the ones
/// whose reason is known.
pub fn why(name: &str) -> Option<(Severity, &'static str)> {
    use Severity::{NotTranslated, Unneeded};
    Some(match name {
        "sendfile" | "tcp_nopush" | "tcp_nodelay" | "aio" | "directio" | "output_buffers"
        | "postpone_output" | "sendfile_max_chunk" => (
            Unneeded,
            "moongate writes responses its own way; there is nothing to tune",
        ),
        "types_hash_max_size"
        | "types_hash_bucket_size"
        | "server_names_hash_bucket_size"
        | "server_names_hash_max_size"
        | "variables_hash_max_size"
        | "variables_hash_bucket_size"
        | "proxy_headers_hash_max_size"
        | "proxy_headers_hash_bucket_size"
        | "map_hash_bucket_size" => (Unneeded, "moongate has no such hash tables to size"),
        "types" => (
            Unneeded,
            "moongate gives static files their Content-Type by file extension itself",
        ),
        "proxy_http_version" => (
            Unneeded,
            "moongate speaks HTTP/1.1 with keep-alive to upstreams",
        ),
        "proxy_buffering"
        | "proxy_buffers"
        | "proxy_buffer_size"
        | "proxy_busy_buffers_size"
        | "proxy_max_temp_file_size"
        | "proxy_temp_file_write_size"
        | "proxy_request_buffering"
        | "client_body_buffer_size"
        | "client_header_buffer_size"
        | "large_client_header_buffers" => {
            (Unneeded, "moongate streams bodies without nginx's buffers")
        }
        "client_body_temp_path"
        | "proxy_temp_path"
        | "fastcgi_temp_path"
        | "uwsgi_temp_path"
        | "scgi_temp_path" => (
            Unneeded,
            "moongate keeps no temp directories of nginx's kind",
        ),
        "ssl_protocols"
        | "ssl_ciphers"
        | "ssl_prefer_server_ciphers"
        | "ssl_ecdh_curve"
        | "ssl_session_cache"
        | "ssl_session_timeout"
        | "ssl_session_tickets"
        | "ssl_dhparam"
        | "ssl_buffer_size"
        | "ssl_conf_command" => (
            Unneeded,
            "TLS is rustls: TLS 1.2 and 1.3 with its own safe cipher suites and session resumption",
        ),
        "ssl_stapling"
        | "ssl_stapling_verify"
        | "ssl_trusted_certificate"
        | "ssl_client_certificate"
        | "ssl_verify_client"
        | "ssl_verify_depth"
        | "ssl_crl"
        | "ssl_early_data"
        | "ssl_password_file" => (
            NotTranslated,
            "moongate's TLS listeners have no such setting (no OCSP stapling, client certificates or 0-RTT)",
        ),
        "error_log" => (Unneeded, "moongate logs to stderr; RUST_LOG sets the level"),
        "user"
        | "daemon"
        | "master_process"
        | "worker_rlimit_nofile"
        | "worker_cpu_affinity"
        | "worker_priority"
        | "pcre_jit"
        | "timer_resolution"
        | "lock_file"
        | "thread_pool"
        | "working_directory"
        | "worker_rlimit_core"
        | "env"
        | "ssl_engine"
        | "accept_mutex"
        | "multi_accept"
        | "worker_connections"
        | "use" => (
            Unneeded,
            "process settings: moongate runs as one process, in the foreground, as its caller",
        ),
        "resolver" | "resolver_timeout" => (
            Unneeded,
            "moongate resolves upstream host names with the system resolver when the configuration loads",
        ),
        "keepalive_requests" | "keepalive_time" => (
            Unneeded,
            "moongate does not cap the requests or the time of a connection",
        ),
        "open_file_cache"
        | "open_file_cache_valid"
        | "open_file_cache_min_uses"
        | "open_file_cache_errors"
        | "log_not_found"
        | "log_subrequest"
        | "reset_timedout_connection"
        | "lingering_close"
        | "lingering_time"
        | "lingering_timeout"
        | "server_name_in_redirect"
        | "port_in_redirect"
        | "absolute_redirect"
        | "msie_padding"
        | "msie_refresh"
        | "etag"
        | "if_modified_since" => (
            Unneeded,
            "moongate has fixed behaviour here (nginx's defaults)",
        ),
        "gzip_vary" => (
            Unneeded,
            "moongate always sends Vary: Accept-Encoding with compressible responses",
        ),
        "gzip_http_version" | "gzip_buffers" | "gzip_proxied" | "gzip_disable" => (
            Unneeded,
            "moongate compresses for any client that accepts gzip, proxied or not",
        ),
        "gzip_static" => (
            Unneeded,
            "static routes serve precompressed .gz and .br siblings by themselves",
        ),
        "lua_code_cache"
        | "lua_load_resty_core"
        | "lua_regex_cache_max_entries"
        | "lua_regex_match_limit"
        | "lua_max_pending_timers"
        | "lua_max_running_timers"
        | "lua_socket_pool_size"
        | "lua_socket_log_errors"
        | "lua_check_client_abort"
        | "lua_ssl_verify_depth"
        | "lua_malloc_trim"
        | "lua_sa_restart"
        | "lua_use_default_type"
        | "lua_http10_buffering"
        | "lua_thread_cache_max_entries"
        | "lua_socket_connect_timeout"
        | "lua_socket_send_timeout"
        | "lua_socket_read_timeout"
        | "lua_socket_buffer_size"
        | "lua_socket_keepalive_timeout"
        | "lua_need_request_body"
        | "lua_transform_underscores_in_response_headers"
        | "lua_capture_error_log" => (
            Unneeded,
            "moongate's Lua runtime fixes this itself (scripts are compiled at load and on change; see docs/lua-api.md)",
        ),
        "if" => (
            NotTranslated,
            "moongate has no `if`; write the condition in a Lua rewrite or access handler",
        ),
        "set" => (
            NotTranslated,
            "moongate has no `set` outside Lua; set ngx.var.NAME in a Lua handler",
        ),
        "try_files" => (
            NotTranslated,
            "moongate has no try_files; a static route serves the file, the directory's index.html, or 404",
        ),
        "error_page" | "proxy_intercept_errors" | "recursive_error_pages" => (
            NotTranslated,
            "moongate has no error_page: its own errors are JSON or HTML (error_format); a header_filter can replace others",
        ),
        "proxy_redirect" => (
            NotTranslated,
            "moongate does not rewrite the upstream's Location headers",
        ),
        "proxy_pass_header"
        | "proxy_ignore_headers"
        | "proxy_pass_request_headers"
        | "proxy_pass_request_body"
        | "proxy_set_body"
        | "proxy_method"
        | "proxy_bind"
        | "proxy_ignore_client_abort"
        | "proxy_cookie_domain"
        | "proxy_cookie_path"
        | "proxy_ssl_server_name"
        | "proxy_ssl_name"
        | "proxy_ssl_certificate"
        | "proxy_ssl_certificate_key"
        | "proxy_ssl_trusted_certificate"
        | "proxy_ssl_protocols" => (NotTranslated, "moongate's proxy has no such setting"),
        "proxy_cache_use_stale"
        | "proxy_cache_bypass"
        | "proxy_no_cache"
        | "proxy_cache_min_uses"
        | "proxy_cache_revalidate"
        | "proxy_cache_background_update"
        | "proxy_cache_lock_timeout"
        | "proxy_cache_lock_age"
        | "proxy_cache_convert_head"
        | "proxy_cache_purge" => (
            NotTranslated,
            "set the cache zone's stale_while_revalidate / stale_if_error / lock_timeout, or steer it from Lua (mg.cache)",
        ),
        "autoindex" | "autoindex_exact_size" | "autoindex_format" | "autoindex_localtime" => {
            (NotTranslated, "moongate does not list directories")
        }
        "stub_status" => (
            NotTranslated,
            "moongate's status is on the admin listener: GET /status and /metrics",
        ),
        "fastcgi_pass" | "uwsgi_pass" | "grpc_pass" | "scgi_pass" | "memcached_pass" => (
            NotTranslated,
            "write the upstream with protocol = \"fastcgi\", \"uwsgi\" or \"grpc\" by hand (see README)",
        ),
        "sub_filter" | "sub_filter_once" | "sub_filter_types" | "ssi" | "addition_types"
        | "charset" | "source_charset" | "charset_types" | "image_filter" | "xslt_stylesheet" => (
            NotTranslated,
            "moongate has no response body filters of this kind; a Lua body_filter can do it",
        ),
        "limit_rate" | "limit_rate_after" => (
            NotTranslated,
            "moongate does not throttle response bandwidth",
        ),
        "satisfy" | "auth_basic" | "auth_basic_user_file" => (
            NotTranslated,
            "use the basic_auth policy with [consumer.NAME] basic = { password_hash } (see docs/policies.md)",
        ),
        "internal" => (NotTranslated, "moongate has no internal-only routes"),
        "server_tokens" => (
            NotTranslated,
            "server_tokens is global in moongate ([server]); set it in the http block",
        ),
        "chunked_transfer_encoding" | "max_ranges" | "merge_slashes" | "ignore_invalid_headers" => {
            (Unneeded, "moongate has fixed behaviour here")
        }
        "ssl" | "http2" | "listen" | "server_name" => (NotTranslated, "not valid here"),
        "keepalive_timeout"
        | "client_header_timeout"
        | "client_body_timeout"
        | "send_timeout"
        | "underscores_in_headers"
        | "access_log"
        | "log_format" => (
            NotTranslated,
            "moongate sets this once for every route, in [server]; only the http block's is translated",
        ),
        _ => return None,
    })
}
