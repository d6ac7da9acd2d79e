-- policies.api_key: requests need a known API key (a header, or a query
-- argument), from `keys`, a `keys_file` (one "KEY [CONSUMER]" per line,
-- # comments) or a shared dict (`dict`, key -> consumer). No key: 401;
-- an unknown key: 403. Keys of `[consumer.NAME]` entries (`keys = [...]`)
-- are known too. The consumer's name becomes `$consumer` and goes upstream
-- in a header (and X-Consumer-Username); the key itself does not.
--   policies = [{ use = "api_key", header = "X-Api-Key", keys_file = "conf.d/keys.txt" }]
local native = require "policies.native"

local M = {}
M.__index = M

local function read_keys(path, keys)
    local f, err = io.open(path, "r")
    if not f then
        error("api_key: cannot read keys_file " .. path .. ": " .. tostring(err))
    end
    for line in f:lines() do
        local key, consumer = line:match("^%s*([^%s#]+)%s*([^%s#]*)")
        if key then keys[key] = consumer ~= "" and consumer or key end
    end
    f:close()
end

function M.new(opts)
    local keys = {}
    for _, k in ipairs(opts.keys or {}) do keys[k] = k end
    if opts.keys_file then read_keys(opts.keys_file, keys) end
    local header = opts.header or "X-Api-Key"
    return setmetatable({
        header = header,
        var = "http_" .. (header:lower():gsub("-", "_")),
        arg = opts.query_arg and ("arg_" .. opts.query_arg),
        keys = keys,
        dict = opts.dict,
        consumer = opts.consumer_header or "X-Consumer",
    }, M)
end

function M:access()
    local key = ngx.var[self.var]
    if (not key or key == "") and self.arg then key = ngx.var[self.arg] end
    if not key or key == "" then
        ngx.header["WWW-Authenticate"] = 'ApiKey header="' .. self.header .. '"'
        return ngx.exit(ngx.HTTP_UNAUTHORIZED)
    end
    local consumer = self.keys[key]
    if not consumer and self.dict then
        local dict = ngx.shared and ngx.shared[self.dict]
        consumer = dict and dict:get(key)
    end
    consumer = native.api_key(key, consumer)
    if not consumer then
        return ngx.exit(ngx.HTTP_FORBIDDEN)
    end
    ngx.req.set_header(self.consumer, consumer)
    ngx.req.clear_header(self.header)
end

return M
