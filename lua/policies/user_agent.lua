-- policies.user_agent: refuse clients by User-Agent. A User-Agent matching
-- a `deny` regex gets `status` (403) unless it also matches an `allow`
-- regex (the exceptions, checked first, as Kong's bot-detection). A
-- request without User-Agent is matched as "".
--   policies = [{ use = "user_agent", deny = ["(?i)curl", "bot"], allow = ["Googlebot"] }]
local M = {}
M.__index = M

function M.new(opts)
    return setmetatable({
        allow = opts.allow or {},
        deny = opts.deny,
        status = opts.status,
    }, M)
end

local function any(list, ua)
    for _, re in ipairs(list) do
        if ngx.re.find(ua, re, "jo") then return true end
    end
    return false
end

function M:access()
    local ua = ngx.var.http_user_agent or ""
    if any(self.allow, ua) then return end
    if any(self.deny, ua) then return ngx.exit(self.status) end
end

return M
