-- Access check for the gRPC echo service (examples/grpc/grpc.toml): gRPC
-- metadata are HTTP/2 headers, so the caller's `x-api-key` metadata is
-- ngx.var.http_x_api_key, as for any other request. moongate turns the
-- statuses into gRPC ones for a gRPC caller: 401 -> grpc-status 16
-- (UNAUTHENTICATED), 403 -> 7 (PERMISSION_DENIED), both with HTTP 200.
--
-- The keys are a table here to keep the example in one file; a real
-- deployment would load them in [lua] init, or use the bundled api_key
-- policy (README "Lua policies").
local KEYS = {
    ["demo-grpc-key"] = "alice",
}

local key = ngx.var.http_x_api_key
if key == nil or key == "" then
    return ngx.exit(ngx.HTTP_UNAUTHORIZED)
end
local user = KEYS[key]
if user == nil then
    return ngx.exit(ngx.HTTP_FORBIDDEN)
end
-- The service sees who called (Unary echoes it back as echo-x-user); set
-- here, so a caller cannot choose it.
ngx.req.set_header("x-user", user)
