-- wrk -s script for the "cache-1000" and "cache-slow" scenarios: spreads requests
-- over 1000 cache keys, GET /api/item/1 ... /api/item/1000.
-- Each wrk thread walks the 1000 paths round-robin from its own starting point
-- (deterministic: no random numbers, so every run sends the same sequence).
local counter = 0
local threads = 0

function setup(thread)
   thread:set("start", threads * 397)   -- a different starting point per thread
   threads = threads + 1
end

function init(args)
   counter = tonumber(start) or 0
end

function request()
   counter = counter + 1
   return wrk.format("GET", "/api/item/" .. ((counter % 1000) + 1))
end
