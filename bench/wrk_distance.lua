-- wrk_distance.lua: distance queries, a fresh random pair per request.
--   wrk ... -s bench/wrk_distance.lua URL -- MODEL NODES [FIRST-ID]
-- OIP infer with INT64 source and target, ids in [FIRST-ID, FIRST-ID +
-- NODES), so the oracle's lookups are not served from one warm cache line.
local path, nodes, first

function init(args)
   path = "/v2/models/" .. assert(args[1], "usage: -- MODEL NODES [FIRST-ID]")
      .. "/infer"
   nodes = tonumber(args[2])
   first = tonumber(args[3] or "1")
   math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16)
                                or 0))
end

local fmt = '{"inputs":[{"name":"source","datatype":"INT64","shape":[1],'
   .. '"data":[%d]},{"name":"target","datatype":"INT64","shape":[1],'
   .. '"data":[%d]}]}'

function request()
   local body = string.format(fmt, first + math.random(0, nodes - 1),
                              first + math.random(0, nodes - 1))
   return wrk.format("POST", path,
                     {["Content-Type"] = "application/json"}, body)
end
