-- policies.jwt: requests need a valid JWT. The whole check is native
-- (src/policies/jwt.rs through `policies.native`): token, signature,
-- claims, consumer, upstream headers, `$consumer`; `jwt_wait` only when a
-- key may be in a JWKS fetch under way.
--   policies = [{ use = "jwt", jwks_url = "https://idp/jwks.json", audiences = ["api"] }]
local native = require "policies.native"
return require("policies.native_check")(native.jwt, native.jwt_wait, native.WAIT)
