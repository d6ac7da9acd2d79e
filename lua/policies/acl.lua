-- policies.acl: lets requests on by their consumer's groups (set by an
-- authentication policy listed before it), natively through
-- `policies.native`.
--   policies = [{ use = "jwt", ... }, { use = "acl", allow = ["admins"] }]
local native = require "policies.native"

local M = {}
M.__index = M

function M.new(_, id)
    return setmetatable({ id = id }, M)
end

function M:access()
    local status = native.acl(self.id)
    if status then
        return ngx.exit(status)
    end
end

return M
