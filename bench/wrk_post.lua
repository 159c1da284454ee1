-- wrk_post.lua: POST the same body on every request.
--   wrk ... -s bench/wrk_post.lua URL -- PATH CONTENT-TYPE BODY-FILE
-- The body is read once per wrk thread; the request is formatted once.
local req

function init(args)
   local path, ctype, file = args[1], args[2], args[3]
   if not (path and ctype and file) then
      error("usage: -- PATH CONTENT-TYPE BODY-FILE")
   end
   local f = assert(io.open(file, "rb"))
   local body = f:read("*a")
   f:close()
   req = wrk.format("POST", path, {["Content-Type"] = ctype}, body)
end

function request()
   return req
end
