-- policies.ip: allow or deny clients by address (CIDRs, IPv4 and IPv6).
-- A denied client, or one outside a given allow list, gets `status` (403).
--   policies = [{ use = "ip", allow = ["10.0.0.0/8"], deny = ["10.9.0.0/16"] }]
local mg = require "moongate"

local M = {}
M.__index = M

function M.new(opts)
    return setmetatable({
        allow = opts.allow and mg.ip.matcher(opts.allow),
        deny = opts.deny and mg.ip.matcher(opts.deny),
        status = opts.status or ngx.HTTP_FORBIDDEN,
    }, M)
end

function M:access()
    local ip = ngx.var.remote_addr
    if self.deny and self.deny:contains(ip) then
        return ngx.exit(self.status)
    end
    if self.allow and not self.allow:contains(ip) then
        return ngx.exit(self.status)
    end
end

return M
