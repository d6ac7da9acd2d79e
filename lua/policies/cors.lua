-- policies.cors: Cross-Origin Resource Sharing at the edge. A preflight
-- (OPTIONS with Origin and Access-Control-Request-Method) is answered here
-- with 204 and never reaches the upstream; other responses get the
-- Access-Control-Allow-* headers when their Origin is allowed. An origin
-- not allowed gets no Access-Control-Allow-Origin (the browser refuses).
-- `Vary: Origin` goes on every answer whose headers depend on the Origin,
-- so a cache keeps one variant per origin.
--   policies = [{ use = "cors", origins = ["https://app.example.com"], credentials = true }]
local M = {}
M.__index = M

-- Kong's rule: only URL characters is an exact origin, else a regex.
local function is_exact(entry)
    return entry:find("^[A-Za-z0-9.:/-]+$") ~= nil
end

local function list(items)
    if items and #items > 0 then return table.concat(items, ", ") end
end

function M.new(opts)
    local self = setmetatable({
        any = false,
        exact = {},
        patterns = {},
        methods = list(opts.methods),
        headers = list(opts.headers),
        exposed = list(opts.exposed_headers),
        credentials = opts.credentials,
        max_age = opts.max_age and tostring(opts.max_age),
    }, M)
    for _, o in ipairs(opts.origins) do
        if o == "*" then
            self.any = true
        elseif is_exact(o) then
            self.exact[o:lower()] = true
        else
            self.patterns[#self.patterns + 1] = "^(?:" .. o .. ")$"
        end
    end
    -- "*" for everyone needs no Origin; with credentials browsers refuse
    -- "*", so the request's Origin is echoed and the answer depends on it.
    self.echo = not self.any or self.credentials
    return self
end

function M:allowed(origin)
    if self.any or self.exact[origin:lower()] then return true end
    for _, p in ipairs(self.patterns) do
        if ngx.re.find(origin, p, "jo") then return true end
    end
    return false
end

local function add_vary(name)
    local v = ngx.header["Vary"]
    if type(v) == "table" then v = table.concat(v, ", ") end
    if not v or v == "" then
        ngx.header["Vary"] = name
    elseif v ~= "*" and not (", " .. v:lower() .. ","):find("[ ,]" .. name:lower() .. ",") then
        ngx.header["Vary"] = v .. ", " .. name
    end
end

function M:allow_origin(origin)
    ngx.header["Access-Control-Allow-Origin"] = self.echo and origin or "*"
    if self.credentials then
        ngx.header["Access-Control-Allow-Credentials"] = "true"
    end
end

function M:access()
    if ngx.req.get_method() ~= "OPTIONS" then return end
    local origin = ngx.var.http_origin
    if not origin or not ngx.var.http_access_control_request_method then
        return -- a plain OPTIONS is the upstream's
    end
    ngx.ctx[self] = true
    if self.echo then add_vary("Origin") end
    if self:allowed(origin) then
        self:allow_origin(origin)
        ngx.header["Access-Control-Allow-Methods"] = self.methods
        local headers = self.headers
        if not headers then
            -- No list: whatever the browser asks for, as Kong does.
            headers = ngx.var.http_access_control_request_headers
            add_vary("Access-Control-Request-Headers")
        end
        if headers then ngx.header["Access-Control-Allow-Headers"] = headers end
        if self.max_age then ngx.header["Access-Control-Max-Age"] = self.max_age end
    end
    return ngx.exit(ngx.HTTP_NO_CONTENT)
end

function M:header_filter()
    -- A preflight's answer has its headers (ngx.ctx only looked at then).
    if ngx.req.get_method() == "OPTIONS" and ngx.ctx[self] then return end
    if self.echo then add_vary("Origin") end
    local origin = ngx.var.http_origin
    if not origin or not self:allowed(origin) then return end
    self:allow_origin(origin)
    if self.exposed then
        ngx.header["Access-Control-Expose-Headers"] = self.exposed
    end
end

return M
