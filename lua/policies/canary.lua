-- policies.canary: send part of a route's requests to another upstream.
-- A request matching `header`, `cookie` or `arg` (with its `*_value` when
-- given) goes to the canary; of the others, `percentage` percent do: by
-- the CRC32 of the `hash_on` key modulo 100 (sticky, and raising the
-- percentage only moves keys towards the canary), or at random when there
-- is no key or it renders empty. The route's own upstream serves the rest.
--   policies = [{ use = "canary", upstream = "api_v2", percentage = 10, hash_on = "$cookie_user" }]
local mg = require "moongate"
local template = require "policies.template"

local random = math.random

local M = {}
M.__index = M

function M.new(opts)
    local conditions = {}
    local function when(var, value)
        conditions[#conditions + 1] = { var = var, value = value }
    end
    if opts.header then
        when("http_" .. opts.header:lower():gsub("-", "_"), opts.header_value)
    end
    if opts.cookie then when("cookie_" .. opts.cookie, opts.cookie_value) end
    if opts.arg then when("arg_" .. opts.arg, opts.arg_value) end
    return setmetatable({
        upstream = opts.upstream,
        percentage = opts.percentage or 0,
        key = opts.hash_on and template.parse(opts.hash_on),
        conditions = conditions,
    }, M)
end

-- Whether the request asks for the canary: a condition's variable is
-- set, non-empty, and equal to its value when one is given.
local function asked(conditions)
    for i = 1, #conditions do
        local c = conditions[i]
        local v = ngx.var[c.var]
        if v and v ~= "" and (c.value == nil or v == c.value) then
            return true
        end
    end
    return false
end

-- Whether the split sends this request to the canary. A key's bucket is
-- fixed, so the buckets below the percentage only grow as it is raised.
function M:split()
    local percentage = self.percentage
    if percentage <= 0 then return false end
    if percentage >= 100 then return true end
    local key = self.key and template.render(self.key)
    if key and key ~= "" then
        return ngx.crc32_long(key) % 100 < percentage
    end
    return random(0, 99) < percentage
end

function M:access()
    if not asked(self.conditions) and not self:split() then return end
    local ok, err = mg.upstream.set(self.upstream)
    if not ok then
        -- `moongate check` made sure the upstream exists; keep the route's.
        ngx.log(ngx.ERR, "canary: ", err)
        return
    end
    -- Neither side may be served the other's answers from the cache (on
    -- a route without one these return nil, err and change nothing).
    mg.cache.bypass()
    mg.cache.no_store()
end

return M
