"""Ory Hydra's Python SDK (ory-hydra-client, OidcApi) against a registration server.

Usage: python hydra_client.py <issuer URL>

The SDK uses the fixed paths /oauth2/register and /oauth2/register/{id}. The round trip:
register -> read -> update -> read -> delete -> read-after-delete (must fail), plus one invalid
registration (must fail with invalid_redirect_uri). Any deviation exits 1 with a message.
"""

import json
import sys

import ory_hydra_client
from ory_hydra_client.exceptions import ApiException
from ory_hydra_client.models.o_auth2_client import OAuth2Client

from interop_driver import Deviation, check, logger

LIB = "ory-hydra-client"
log = logger(LIB)


def bearer(token):
    # RFC 7592 §2: the registration access token authenticates every management call.
    return {"in": "header", "type": "bearer", "key": "Authorization", "value": f"Bearer {token}"}


def round_trip(issuer):
    config = ory_hydra_client.Configuration(host=issuer.rstrip("/"))
    with ory_hydra_client.ApiClient(config) as api_client:
        api = ory_hydra_client.OidcApi(api_client)
        redirect = "https://client.example.org/hydra/cb"

        # POST must be 201: the SDK deserializes a 200 to None.
        created = api.create_oidc_dynamic_client(OAuth2Client(
            redirect_uris=[redirect],
            client_name=f"{LIB} interop",
            token_endpoint_auth_method="client_secret_basic",
            contacts=["ops@client.example.org"],
            scope="openid",
        ))
        check(created is not None, "register: no client information (was the answer 201?)")
        check(isinstance(created.client_id, str) and created.client_id, "register: no client_id")
        check(isinstance(created.client_secret, str) and created.client_secret, "register: no client_secret")
        check(isinstance(created.client_secret_expires_at, int), "register: client_secret_expires_at is not an int")
        check(created.registration_access_token, "register: no registration_access_token")
        check(created.registration_client_uri, "register: no registration_client_uri")
        check(created.redirect_uris == [redirect], "register: redirect_uris not echoed")
        check(created.client_name == f"{LIB} interop", "register: client_name not echoed")
        check(created.scope == "openid", "register: scope not echoed")
        client_id = created.client_id
        token = created.registration_access_token
        log(f"registered {client_id}")

        read = api.get_oidc_dynamic_client(client_id, _request_auth=bearer(token))
        check(read.client_id == client_id, "read: another client_id")
        check(read.client_name == f"{LIB} interop", "read: client_name differs")
        check(read.contacts == ["ops@client.example.org"], "read: contacts differ")
        token = read.registration_access_token or token
        log("read ok")

        # Send the read result back, changed: what an SDK user naturally does.
        update = read.model_copy(update={
            "client_name": f"{LIB} interop (updated)",
            "redirect_uris": [redirect, redirect + "2"],
        })
        updated = api.set_oidc_dynamic_client(client_id, update, _request_auth=bearer(token))
        check(updated.client_id == client_id, "update: another client_id")
        check(updated.client_name == f"{LIB} interop (updated)", "update: client_name not updated")
        check(updated.redirect_uris == [redirect, redirect + "2"], "update: redirect_uris not updated")
        check(updated.registration_access_token, "update: no registration_access_token")
        rotated = updated.registration_access_token != token
        token = updated.registration_access_token
        log(f"updated (token {'rotated' if rotated else 'kept'})")

        reread = api.get_oidc_dynamic_client(client_id, _request_auth=bearer(token))
        check(reread.client_name == f"{LIB} interop (updated)", "read after update: old client_name")
        check(len(reread.redirect_uris or []) == 2, "read after update: old redirect_uris")
        log("read after update ok")

        response = api.delete_oidc_dynamic_client_with_http_info(client_id, _request_auth=bearer(token))
        check(response.status_code == 204, f"delete: expected HTTP 204, got {response.status_code}")
        log("deleted")

        try:
            api.get_oidc_dynamic_client(client_id, _request_auth=bearer(token))
            raise Deviation("read after delete: the deleted client was returned")
        except ApiException as e:
            check(e.status == 401, f"read after delete: expected 401, got {e.status}: {e.body}")
            log(f"read after delete refused: {e.status}")

        try:
            api.create_oidc_dynamic_client(OAuth2Client(
                redirect_uris=["https://client.example.org/cb#fragment"], client_name=f"{LIB} invalid"))
            raise Deviation("invalid registration: a redirect URI with a fragment was accepted")
        except ApiException as e:
            error = json.loads(e.body or "{}").get("error")
            check(e.status == 400 and error == "invalid_redirect_uri",
                  f"invalid registration: expected 400 invalid_redirect_uri, got {e.status} {e.body}")
            log(f"invalid registration refused: {e.status} {error}")


def main():
    if len(sys.argv) != 2:
        print("usage: python hydra_client.py <issuer URL>", file=sys.stderr)
        return 2
    try:
        round_trip(sys.argv[1])
    except Deviation as e:
        print(f"[{LIB}] FAIL: {e}", file=sys.stderr)
        return 1
    except ApiException as e:
        print(f"[{LIB}] FAIL: unexpected HTTP {e.status}: {e.body}", file=sys.stderr)
        return 1
    print(f"[{LIB}] PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
