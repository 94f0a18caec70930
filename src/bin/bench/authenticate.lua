-- POST /admin/clients/{client_id}/authenticate with a random pool client's secret, as an
-- authorization server checks a client at its token endpoint (admin API, scope
-- clients:authenticate). env: BASE  /admin/clients; ADMIN_TOKEN  the admin bearer token.
local admin = assert(os.getenv("ADMIN_TOKEN"), "set ADMIN_TOKEN")
function init(args)
  pool = load_pool()
  math.randomseed(tid * 7919 + os.time())
end
function request()
  local c = pool[math.random(#pool)]
  local headers = { ["Accept"] = "application/json", ["Authorization"] = "Bearer " .. admin,
                    ["Content-Type"] = "application/json" }
  return wrk.format("POST", base .. "/" .. c[1] .. "/authenticate", headers,
                    '{"client_secret":"' .. c[3] .. '"}')
end
