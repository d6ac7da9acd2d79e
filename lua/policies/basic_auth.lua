-- policies.basic_auth: requests need a user and password (htpasswd file or
-- consumers), checked natively (src/policies/basic_auth.rs through
-- `policies.native`); a slow hash not yet remembered runs off the event
-- loop (`basic_wait`).
--   policies = [{ use = "basic_auth", htpasswd_file = "conf.d/htpasswd" }]
local native = require "policies.native"
return require("policies.native_check")(native.basic, native.basic_wait, native.WAIT)
