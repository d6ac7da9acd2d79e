-- policies.basic_auth: requests need a user and password (htpasswd file or
-- consumers), checked natively (src/policies/basic_auth.rs through
-- `policies.native`); a slow hash not yet remembered runs off the event
-- loop (`basic_wait`).
--   policies = [{ use = "basic_auth", htpasswd_file = "conf.d/htpasswd" }]
local native = require "policies.native"

local check, wait, WAIT = native.basic, native.basic_wait, native.WAIT

local M = {}
M.__index = M

function M.new(_, id)
    return setmetatable({ id = id }, M)
end

function M:access()
    local status, challenge = check(self.id)
    if status == WAIT then
        status, challenge = wait(self.id)
    end
    if status then
        ngx.header["WWW-Authenticate"] = challenge
        return ngx.exit(status)
    end
end

return M
