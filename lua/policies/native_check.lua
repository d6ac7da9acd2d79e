-- policies.native_check: the Lua half of a policy whose whole check is
-- native (`policies.native`): `check(id)` answers at once, or says WAIT
-- when a slow step remains (a JWKS fetch, a bcrypt hash), which
-- `wait(id, ...)` finishes off the event loop. A refusal comes back as a
-- status and a `WWW-Authenticate` value.
--   return require("policies.native_check")(native.jwt, native.jwt_wait, native.WAIT)
return function(check, wait, WAIT)
    local M = {}
    M.__index = M

    function M.new(_, id)
        return setmetatable({ id = id }, M)
    end

    function M:access()
        local status, challenge, more = check(self.id)
        if status == WAIT then
            status, challenge = wait(self.id, more)
        end
        if status then
            ngx.header["WWW-Authenticate"] = challenge
            return ngx.exit(status)
        end
    end

    return M
end
