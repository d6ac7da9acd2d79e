-- policies.jwt: requests need a valid JWT. The whole check is native
-- (src/policies/jwt.rs through `policies.native`): token, signature,
-- claims, consumer, upstream headers, `$consumer`. `jwt_wait` runs only
-- when a key may be in a JWKS fetch under way.
--   policies = [{ use = "jwt", jwks_url = "https://idp/jwks.json", audiences = ["api"] }]
local native = require "policies.native"

local check, wait, WAIT = native.jwt, native.jwt_wait, native.WAIT

local M = {}
M.__index = M

function M.new(_, id)
    return setmetatable({ id = id }, M)
end

function M:access()
    local status, challenge, seen = check(self.id)
    if status == WAIT then
        status, challenge = wait(self.id, seen)
    end
    if status then
        ngx.header["WWW-Authenticate"] = challenge
        return ngx.exit(status)
    end
end

return M
