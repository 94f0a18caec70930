-- 80% GET, 15% PUT on random pool clients, 5% POST registrations.
function init(args)
  pool = load_pool()
  math.randomseed(tid * 7919 + os.time())
end
function request()
  local r = math.random()
  if r < 0.80 then return read_request(pool[math.random(#pool)]) end
  if r < 0.95 then return update_request(pool[math.random(#pool)]) end
  return wrk.format("POST", base, json_headers, register_body)
end
