-- PUT a full replacement (RFC 7592 §2.2) of a random pool client; RAT rotation is off on both
-- servers so the pool stays valid.
function init(args)
  pool = load_pool()
  math.randomseed(tid * 7919 + os.time())
end
function request()
  return update_request(pool[math.random(#pool)])
end
