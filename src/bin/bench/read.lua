-- GET registration_client_uri of a random pool client with its RAT (RFC 7592 §2.1).
function init(args)
  pool = load_pool()
  math.randomseed(tid * 7919 + os.time())
end
function request()
  return read_request(pool[math.random(#pool)])
end
