-- wrk script for bench/http_infer.sh: POST one prepared body over and over.
--   wrk ... -s bench/http_infer.lua URL -- BODY_FILE CONTENT_TYPE [JSON_HEADER_BYTES]
-- JSON_HEADER_BYTES, when given, is sent as Inference-Header-Content-Length
-- (Triton's binary tensor extension: a JSON header, then raw tensor bytes).
local req

function init(args)
   local f = assert(io.open(args[1], "rb"))
   local body = f:read("*a")
   f:close()
   local headers = {["Content-Type"] = args[2]}
   if args[3] then
      headers["Inference-Header-Content-Length"] = args[3]
   end
   req = wrk.format("POST", nil, headers, body)
end

function request()
   return req
end
