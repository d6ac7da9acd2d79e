-- policies.request_transform: changes the request on its way upstream, in
-- Kong's request-transformer order: remove, rename, set, add (only when
-- absent), append (one more value); headers and query arguments alike,
-- values being `$var` templates rendered per request.
--   policies = [{ use = "request_transform", set_headers = { "X-Client" = "$remote_addr" }, remove_querystring = ["debug"] }]
local template = require "policies.template"

local M = {}
M.__index = M

function M.new(opts)
    return setmetatable({
        h = {
            remove = opts.remove_headers,
            rename = opts.rename_headers,
            set = template.parse_all(opts.set_headers),
            add = template.parse_all(opts.add_headers),
            append = template.parse_all(opts.append_headers),
        },
        q = {
            remove = opts.remove_querystring,
            rename = opts.rename_querystring,
            set = template.parse_all(opts.set_querystring),
            add = template.parse_all(opts.add_querystring),
            append = template.parse_all(opts.append_querystring),
        },
        query = opts.remove_querystring or opts.rename_querystring or opts.set_querystring
            or opts.add_querystring or opts.append_querystring,
    }, M)
end

local function more(current, value)
    if current == nil then return value end
    if type(current) == "table" then
        local out = { unpack(current) }
        out[#out + 1] = value
        return out
    end
    return { current, value }
end

-- The values of set / add / append, rendered.
local function render(ops)
    local out = { set = {}, add = {}, append = {} }
    for step, values in pairs(out) do
        for name, parts in pairs(ops[step] or {}) do
            values[name] = template.render(parts)
        end
    end
    return out
end

-- The steps over a get(name) / put(name, value-or-nil) pair.
local function apply(ops, values, get, put)
    for _, name in ipairs(ops.remove or {}) do put(name, nil) end
    for from, to in pairs(ops.rename or {}) do
        local v = get(from)
        if v ~= nil then
            put(from, nil)
            put(to, v)
        end
    end
    for name, v in pairs(values.set) do put(name, v) end
    for name, v in pairs(values.add) do
        if get(name) == nil then put(name, v) end
    end
    for name, v in pairs(values.append) do put(name, more(get(name), v)) end
end

local REMOVED = {}

function M:access()
    -- Every template reads the request as it came, before any change.
    local header_values = render(self.h)
    local query_values = self.query and render(self.q)
    local headers = ngx.req.get_headers()
    -- What this policy wrote, by lower-case name (REMOVED for a removal),
    -- read before the request's own headers.
    local written = {}
    apply(self.h, header_values, function(name)
        local v = written[name:lower()]
        if v == REMOVED then return nil end
        if v ~= nil then return v end
        return headers[name:lower()]
    end, function(name, value)
        written[name:lower()] = value == nil and REMOVED or value
        if value == nil then
            ngx.req.clear_header(name)
        else
            ngx.req.set_header(name, value)
        end
    end)
    if not self.query then return end
    local args = ngx.req.get_uri_args()
    apply(self.q, query_values, function(name)
        return args[name]
    end, function(name, value)
        args[name] = value
    end)
    ngx.req.set_uri_args(args)
end

return M
