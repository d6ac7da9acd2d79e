-- policies.forward_auth: each request is first put to an auth service
-- (nginx auth_request, Traefik ForwardAuth, APISIX forward-auth). A 2xx
-- answer lets it on with the answer's `upstream_headers`; any other answer
-- goes to the client (status, body, `client_headers`). Answers may be kept
-- per `cache_key` for `cache_ttl` in a store every worker thread shares.
--   policies = [{ use = "forward_auth", uri = "http://auth:9000/verify", upstream_headers = ["X-User-Id"] }]
local mg = require "moongate"
local cjson = require "cjson.safe"
local template = require "policies.template"

local M = {}
M.__index = M

-- The client's headers never sent on: the auth service gets its own
-- Host, the connection's hop-by-hop headers and the body's framing belong
-- to the client's exchange, and the X-Forwarded-* ones are moongate's.
local NOT_SENT = {
    host = true, connection = true, ["keep-alive"] = true,
    ["proxy-connection"] = true, te = true, trailer = true,
    ["transfer-encoding"] = true, upgrade = true, ["content-length"] = true,
    expect = true, ["x-forwarded-proto"] = true, ["x-forwarded-method"] = true,
    ["x-forwarded-host"] = true, ["x-forwarded-uri"] = true,
    ["x-forwarded-for"] = true,
}

local function lower_all(list)
    if not list then return nil end
    local out = {}
    for i, name in ipairs(list) do out[i] = name:lower() end
    return out
end

function M.new(opts, id)
    local self = setmetatable({
        uri = opts.uri,
        method = opts.request_method,
        request_headers = lower_all(opts.request_headers),
        upstream_headers = lower_all(opts.upstream_headers),
        client_headers = lower_all(opts.client_headers),
        timeout = opts.timeout,
        ssl_verify = opts.ssl_verify,
        status_on_error = opts.status_on_error,
        allow_degradation = opts.allow_degradation,
    }, M)
    if opts.cache_key then
        self.cache_key = template.parse(opts.cache_key)
        self.cache_ttl = opts.cache_ttl
        self.store = __moongate_policy_store(id, opts.cache_size)
    end
    return self
end

-- The request to the auth service: the client's headers and moongate's
-- X-Forwarded-* ones, and for POST the client's body.
function M:ask()
    local client = ngx.req.get_headers(0)
    local sent = {}
    if self.request_headers then
        for _, name in ipairs(self.request_headers) do
            if not NOT_SENT[name] then sent[name] = client[name] end
        end
    else
        for name, value in pairs(client) do
            if not NOT_SENT[name] then sent[name] = value end
        end
    end
    sent["x-forwarded-proto"] = ngx.var.scheme
    sent["x-forwarded-method"] = ngx.req.get_method()
    sent["x-forwarded-host"] = ngx.var.host
    sent["x-forwarded-uri"] = ngx.var.request_uri
    sent["x-forwarded-for"] = ngx.var.remote_addr
    local body
    if self.method == "POST" then
        ngx.req.read_body()
        body = ngx.req.get_body_data()
        local file = not body and ngx.req.get_body_file()
        if file then
            local f, err = io.open(file, "rb")
            if not f then return nil, "cannot read the request body: " .. tostring(err) end
            body = f:read("*a")
            f:close()
        end
    end
    return mg.http.request{
        method = self.method, url = self.uri, headers = sent, body = body,
        timeout = self.timeout, ssl_verify = self.ssl_verify,
    }
end

-- What is kept of a response: an allow with the upstream headers, or a
-- refusal with its status, body and client headers.
function M:answer(res)
    local allow = res.status >= 200 and res.status < 300
    local headers = {}
    for _, name in ipairs(allow and self.upstream_headers or self.client_headers) do
        headers[name] = res.headers[name]
    end
    if allow then return { allow = true, headers = headers } end
    return {
        status = res.status, headers = headers, body = res.body,
        content_type = res.headers["content-type"],
    }
end

-- The client's own headers of the `upstream_headers` names go, whatever
-- the answer: only the auth service's may reach the upstream.
function M:pass(headers)
    for _, name in ipairs(self.upstream_headers) do
        local value = headers[name]
        if value == nil then
            ngx.req.clear_header(name)
        else
            ngx.req.set_header(name, value)
        end
    end
end

function M:access()
    local key = self.store and template.render(self.cache_key)
    if key == "" then key = nil end
    local answer
    if key then
        local kept = self.store:get(key)
        answer = kept and cjson.decode(kept)
        -- JSON holds text: the body, any bytes, is kept in base64.
        if answer and answer.body then answer.body = ngx.decode_base64(answer.body) end
    end
    if not answer then
        local res, err = self:ask()
        if not res then
            ngx.log(ngx.ERR, "forward_auth: cannot ask ", self.uri, ": ", err)
            if self.allow_degradation then return self:pass({}) end
            return ngx.exit(self.status_on_error)
        end
        answer = self:answer(res)
        if key and res.status < 500 then
            local body = answer.body
            answer.body = body and ngx.encode_base64(body)
            local kept = cjson.encode(answer)
            if kept then self.store:set(key, kept, self.cache_ttl) end
            answer.body = body
        end
    end
    if answer.allow then return self:pass(answer.headers) end
    ngx.status = answer.status
    for name, value in pairs(answer.headers) do ngx.header[name] = value end
    if answer.body == "" then return ngx.exit(answer.status) end
    ngx.header["Content-Type"] = answer.content_type
    ngx.print(answer.body)
    return ngx.exit(answer.status)
end

return M
