-- Shared prelude of every registrar bench script (wrk 4, LuaJIT). The bench binary prepends it.
-- env: BASE  registration path (e.g. /register); POOL  file of "client_id rat [client_secret]" lines;
--      MARK  file prefix a thread touches when it is done (delete / populate scripts)
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
-- CLOCK_MONOTONIC, in seconds: wrk's own runtime always includes its full -d sleep, so scripts
-- that stop early (delete, populate) time themselves.
function now_s()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

base = os.getenv("BASE") or "/register"
json_headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
register_body = '{"redirect_uris":["https://client.example.org/cb"],"client_name":"wrk"}'

-- Pool entries; with `nthreads`, only this thread's share (entry i goes to thread i mod n).
function load_pool(tid, nthreads)
  local pool, i = {}, 0
  local path = assert(os.getenv("POOL"), "set POOL")
  for line in io.lines(path) do
    local id, rat, secret = line:match("^(%S+)%s+(%S+)%s*(%S*)")
    if id then
      i = i + 1
      if not nthreads or (i - 1) % nthreads == tid - 1 then pool[#pool + 1] = { id, rat, secret } end
    end
  end
  return pool
end

function bearer(rat)
  return { ["Accept"] = "application/json", ["Authorization"] = "Bearer " .. rat,
           ["Content-Type"] = "application/json" }
end

function update_request(c)
  local body = '{"client_id":"' .. c[1] .. '","redirect_uris":["https://client.example.org/cb"],"client_name":"wrk updated"}'
  return wrk.format("PUT", base .. "/" .. c[1], bearer(c[2]), body)
end

function read_request(c)
  return wrk.format("GET", base .. "/" .. c[1], bearer(c[2]))
end

local threads, next_tid = {}, 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  threads[#threads + 1] = thread
end

-- One machine-readable line after wrk's report; percentiles straight from wrk's histogram.
-- ok/active_s come from scripts that count their own successes (delete, populate).
function done(summary, latency, requests)
  local e = summary.errors
  local ok, t0, t1 = 0, nil, nil
  for _, t in ipairs(threads) do
    ok = ok + (t:get("n_ok") or 0)
    local a, b = t:get("t_first"), t:get("t_last")
    if a and (not t0 or a < t0) then t0 = a end
    if b and (not t1 or b > t1) then t1 = b end
  end
  io.write(string.format(
    "SUMMARY requests=%d duration_s=%.3f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f non2xx=%d sockerr=%d ok=%d active_s=%.3f\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout,
    ok, (t0 and t1) and (t1 - t0) or 0))
end
