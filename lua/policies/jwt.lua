-- policies.jwt: requests need a valid JWT. The whole check is native
-- (src/policies/jwt.rs through `policies.native`): token, signature,
-- claims, consumer, upstream headers, `$consumer`.
--   policies = [{ use = "jwt", jwks_url = "https://idp/jwks.json", audiences = ["api"] }]
local native = require "policies.native"

local M = {}
M.__index = M

function M.new(_, id)
    return setmetatable({ id = id }, M)
end

function M:access()
    local status, challenge = native.jwt(self.id)
    if status then
        ngx.header["WWW-Authenticate"] = challenge
        return ngx.exit(status)
    end
end

return M
