-- policies.request_id: pass a valid X-Request-Id through, or generate one;
-- the upstream receives it, and so does the client in the response.
--   policies = [{ use = "request_id", header = "X-Request-Id" }]
local M = {}
M.__index = M

function M.new(opts)
    return setmetatable({ header = opts.header or "X-Request-Id" }, M)
end

local function valid(id)
    return type(id) == "string" and #id > 0 and #id <= 200 and not id:find("[^%w%._%-]")
end

function M:rewrite()
    local id = ngx.req.get_headers()[self.header]
    if type(id) == "table" then id = id[1] end
    if not valid(id) then
        -- The request's $request_id: logs and the header agree.
        id = ngx.var.request_id
    end
    ngx.req.set_header(self.header, id)
    ngx.ctx.request_id = id
end

function M:header_filter()
    local id = ngx.ctx.request_id
    if id then ngx.header[self.header] = id end
end

return M
