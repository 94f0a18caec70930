-- POST a minimal valid web client (the peer baseline's body) to the registration endpoint.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = register_body
