-- policies.basic_auth: requests need a user and password (htpasswd file or
-- consumers), checked natively (src/policies/basic_auth.rs through
-- `policies.native`; slow hashes off the event loop).
--   policies = [{ use = "basic_auth", htpasswd_file = "conf.d/htpasswd" }]
local native = require "policies.native"

local M = {}
M.__index = M

function M.new(_, id)
    return setmetatable({ id = id }, M)
end

function M:access()
    local status, challenge = native.basic(self.id)
    if status then
        ngx.header["WWW-Authenticate"] = challenge
        return ngx.exit(status)
    end
end

return M
