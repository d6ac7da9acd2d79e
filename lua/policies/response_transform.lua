-- policies.response_transform: changes the response head on its way to
-- the client (a header filter), in Kong's response-transformer order:
-- remove, rename, set, add (only when absent), append (one more value);
-- values are `$var` templates rendered per request.
--   policies = [{ use = "response_transform", remove_headers = ["Server"], set_headers = { "X-Served-By" = "edge" } }]
local template = require "policies.template"

local M = {}
M.__index = M

function M.new(opts)
    return setmetatable({
        remove = opts.remove_headers or {},
        rename = opts.rename_headers or {},
        set = template.parse_all(opts.set_headers) or {},
        add = template.parse_all(opts.add_headers) or {},
        append = template.parse_all(opts.append_headers) or {},
    }, M)
end

function M:header_filter()
    local h = ngx.header
    for _, name in ipairs(self.remove) do h[name] = nil end
    for from, to in pairs(self.rename) do
        local v = h[from]
        if v ~= nil then
            h[from] = nil
            h[to] = v
        end
    end
    for name, parts in pairs(self.set) do h[name] = template.render(parts) end
    for name, parts in pairs(self.add) do
        if h[name] == nil then h[name] = template.render(parts) end
    end
    for name, parts in pairs(self.append) do
        local v, cur = template.render(parts), h[name]
        if cur == nil then
            h[name] = v
        elseif type(cur) == "table" then
            cur[#cur + 1] = v
            h[name] = cur
        else
            h[name] = { cur, v }
        end
    end
end

return M
