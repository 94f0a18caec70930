-- Setup, not measured: register clients and record "client_id rat client_secret" of each 201 in OUT.<tid>
-- until this thread has its share of COUNT, then stop.
local NTHREADS = tonumber(os.getenv("THREADS") or "1")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = register_body
function init(args)
  quota = math.ceil(tonumber(os.getenv("COUNT")) / NTHREADS)
  out = {}
  n_ok = 0
  mark = os.getenv("MARK")
  stopped = false
end
function response(status, headers, body)
  if stopped or status ~= 201 then return end
  local id = body:match('"client_id"%s*:%s*"([^"]+)"')
  local rat = body:match('"registration_access_token"%s*:%s*"([^"]+)"')
  local secret = body:match('"client_secret"%s*:%s*"([^"]+)"')
  if id and rat then
    out[#out + 1] = id .. " " .. rat .. (secret and (" " .. secret) or "")
    n_ok = n_ok + 1
  end
  if n_ok >= quota then
    stopped = true
    local f = io.open(os.getenv("OUT") .. "." .. tid, "w")
    f:write(table.concat(out, "\n"), "\n")
    f:close()
    local m = io.open(mark .. "." .. tid, "w"); m:write("done\n"); m:close()
    wrk.thread:stop()
  end
end
