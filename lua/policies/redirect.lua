-- policies.redirect: answer with a redirect instead of serving the route:
-- to the same URL over HTTPS (`http_to_https`, only for plain-HTTP
-- requests), or to `location`, a `$var` template rendered per request.
--   policies = [{ use = "redirect", location = "https://new.example.com$request_uri", status_code = 308 }]
local M = {}
M.__index = M

-- The template as literal and variable parts, split once per VM.
local function parse(template)
    local parts, pos = {}, 1
    while true do
        local s, e, braced, plain = template:find("%$(%b{})", pos)
        local s2, e2, name = template:find("%$([%w_]+)", pos)
        if s2 and (not s or s2 < s) then
            s, e, plain, braced = s2, e2, name, nil
        end
        if not s then break end
        if s > pos then parts[#parts + 1] = { lit = template:sub(pos, s - 1) } end
        parts[#parts + 1] = { var = plain or braced:sub(2, -2) }
        pos = e + 1
    end
    if pos <= #template then parts[#parts + 1] = { lit = template:sub(pos) } end
    return parts
end

local function render(parts)
    local out = {}
    for i, p in ipairs(parts) do
        out[i] = p.lit or ngx.var[p.var] or ""
    end
    return table.concat(out)
end

function M.new(opts)
    return setmetatable({
        location = opts.location and parse(opts.location),
        https_port = opts.https_port,
        status = opts.status_code,
    }, M)
end

function M:rewrite()
    if self.location then
        return ngx.redirect(render(self.location), self.status)
    end
    if ngx.var.scheme == "https" then return end
    local host = ngx.var.host
    if host:find(":", 1, true) then host = "[" .. host .. "]" end
    if self.https_port ~= 443 then host = host .. ":" .. self.https_port end
    return ngx.redirect("https://" .. host .. ngx.var.request_uri, self.status)
end

return M
