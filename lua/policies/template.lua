-- policies.template: `$var` templates for the bundled policies
-- ("https://$host$request_uri", "${http_x_user}-x"), split once into
-- literal and variable parts, rendered per request from ngx.var (an
-- unset variable renders as ""). `moongate check` has already checked
-- the variable names.
local M = {}

function M.parse(template)
    local parts, pos = {}, 1
    while true do
        local s, e, braced = template:find("%$(%b{})", pos)
        local s2, e2, plain = template:find("%$([%w_]+)", pos)
        local name
        if s2 and (not s or s2 < s) then
            s, e, name = s2, e2, plain
        elseif s then
            name = braced:sub(2, -2)
        end
        if not s then break end
        if s > pos then parts[#parts + 1] = { lit = template:sub(pos, s - 1) } end
        parts[#parts + 1] = { var = name }
        pos = e + 1
    end
    if pos <= #template then parts[#parts + 1] = { lit = template:sub(pos) } end
    return parts
end

function M.render(parts)
    local out = {}
    for i, p in ipairs(parts) do
        out[i] = p.lit or ngx.var[p.var] or ""
    end
    return table.concat(out)
end

-- A table of name -> template as name -> parts (nil stays nil).
function M.parse_all(map)
    if not map then return nil end
    local out = {}
    for name, template in pairs(map) do out[name] = M.parse(template) end
    return out
end

return M
