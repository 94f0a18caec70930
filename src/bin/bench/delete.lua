-- DELETE (RFC 7592 §2.3) each client of this thread's share of the pool once, then stop. Counts
-- its own 204s and times itself (n_ok / active_s), since wrk's runtime includes its full -d.
-- Once the share is used up, connections still waiting get a GET /healthz every 50 ms (status
-- 200, not counted; a handful against tens of thousands of deletes) until the last delete answer
-- arrives. wrk sometimes drops one scripted request's answer
-- (seen with 4.1: n deletes sent, n-1 answers), so a thread also stops once no delete answer came
-- for 0.3 s after its share ran out; active time ends at the last delete answer either way.
local NTHREADS = tonumber(os.getenv("THREADS") or "1")
function init(args)
  pool = load_pool(tid, NTHREADS)
  nxt, answered, n_ok = 1, 0, 0
  mark = os.getenv("MARK")
  if #pool == 0 then finish() end
end
function finish()
  t_last = t_last or now_s()
  if mark then local f = io.open(mark .. "." .. tid, "w"); f:write("done\n"); f:close() end
  wrk.thread:stop()
end
function request()
  if not t_first then t_first = now_s() end
  local c = pool[nxt]
  if not c then
    if not stopped and t_last and now_s() - t_last > 0.3 then stopped = true; finish() end
    return wrk.format("GET", "/healthz")
  end
  nxt = nxt + 1
  return wrk.format("DELETE", base .. "/" .. c[1], bearer(c[2]))
end
function delay()
  if pool[nxt] then return 0 end
  return 50
end
function response(status, headers, body)
  if status == 200 then return end
  answered = answered + 1
  t_last = now_s()
  if status == 204 then n_ok = n_ok + 1 end
  if answered == #pool and not stopped then stopped = true; finish() end
end
