-- policies.redirect: answer with a redirect instead of serving the route:
-- to the same URL over HTTPS (`http_to_https`, only for plain-HTTP
-- requests), or to `location`, a `$var` template rendered per request.
--   policies = [{ use = "redirect", location = "https://new.example.com$request_uri", status_code = 308 }]
local template = require "policies.template"

local M = {}
M.__index = M

function M.new(opts)
    return setmetatable({
        location = opts.location and template.parse(opts.location),
        https_port = opts.https_port,
        status = opts.status_code,
    }, M)
end

function M:rewrite()
    if self.location then
        return ngx.redirect(template.render(self.location), self.status)
    end
    if ngx.var.scheme == "https" then return end
    local host = ngx.var.host
    if host:find(":", 1, true) and host:byte(1) ~= 91 then -- IPv6, bare
        host = "[" .. host .. "]"
    end
    if self.https_port ~= 443 then host = host .. ":" .. self.https_port end
    return ngx.redirect("https://" .. host .. ngx.var.request_uri, self.status)
end

return M
