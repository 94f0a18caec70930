"""The MCP Python SDK (`mcp`) against the registrar, configured as the README's "Using it with an
MCP server" recipe says. Usage: python mcp_client.py <issuer>

1. Its discovery helpers and `OAuthMetadata` model accept the registrar's discovery document.
2. Its registration helpers (`create_client_registration_request`, `handle_registration_response`,
   `check_registration_usable`) register the client an MCP host registers, and the
   `OAuthClientInformationFull` model reads the answer; a refused registration surfaces as the
   SDK's typed `OAuthRegistrationError`.
3. `OAuthClientProvider` (an httpx2 auth flow) from an MCP server's 401 through RFC 9728
   protected-resource metadata (served here), discovery and registration up to the authorization
   redirect, which the redirect handler captures and this driver checks.
4. RFC 7592 read / update (sending back what GET returned) / delete with plain HTTP.
"""

import asyncio
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthRegistrationError
from mcp.client.auth.oauth2 import check_registration_usable
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    create_client_registration_request,
    create_oauth_metadata_request,
    handle_auth_metadata_response,
    handle_registration_response,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

from interop_driver import Deviation, check, logger

LIB = "mcp-python"
# The SDK logs the exception that stops the flow at the redirect (StopAtRedirect) with a
# traceback; it is the expected end of step 3, not a failure.
logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)
log = logger(LIB)


class StopAtRedirect(Exception):
    """Raised by the callback handler: the flow is driven up to the authorization redirect."""


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def resource_server(issuer):
    """An MCP server that answers 401 and publishes RFC 9728 metadata naming the registrar's issuer."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path.startswith("/.well-known/oauth-protected-resource"):
                body = json.dumps({
                    "resource": f"{base}/mcp",
                    "authorization_servers": [issuer],
                    "scopes_supported": ["mcp"],
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
            else:
                body = b'{"error":"invalid_token"}'
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header(
                    "www-authenticate",
                    f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"',
                )
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def manage(client, raw):
    """RFC 7592 with plain HTTP: read, update with the GET body sent back, delete, read again."""
    uri, token = raw.get("registration_client_uri"), raw.get("registration_access_token")
    check(isinstance(uri, str) and isinstance(token, str), "register: no registration_client_uri / token")
    auth = lambda t: {"authorization": f"Bearer {t}"}
    read = await client.get(uri, headers=auth(token))
    check(read.status_code == 200, f"read: HTTP {read.status_code} {read.text}")
    check("no-store" in read.headers.get("cache-control", ""), "read: no Cache-Control: no-store")
    body = read.json()
    check(body["client_id"] == raw["client_id"], "read: another client_id")
    body["client_name"] = f"{body.get('client_name')} (updated)"
    updated = await client.put(uri, headers=auth(body["registration_access_token"]), json=body)
    check(updated.status_code == 200, f"update: HTTP {updated.status_code} {updated.text}")
    check(updated.json()["client_name"] == body["client_name"], "update: client_name not updated")
    token = updated.json()["registration_access_token"]
    log(f"read and updated {raw['client_id']} (GET body sent back)")
    deleted = await client.delete(uri, headers=auth(token))
    check(deleted.status_code == 204, f"delete: HTTP {deleted.status_code}")
    after = await client.get(uri, headers=auth(token))
    check(after.status_code == 401, f"read after delete: HTTP {after.status_code}")
    log("deleted; read after delete refused")


async def run(issuer):
    async with httpx2.AsyncClient(timeout=10) as client:
        # 1. Discovery with the SDK's helpers and model.
        asm = None
        for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
            ok, asm = await handle_auth_metadata_response(await client.send(create_oauth_metadata_request(url)))
            if asm is not None:
                break
        check(asm is not None, "discovery: OAuthMetadata did not accept any discovery document")
        check(asm.registration_endpoint is not None, "discovery: no registration_endpoint")
        check("S256" in (asm.code_challenge_methods_supported or []), "discovery: S256 not advertised")
        log(f"discovery accepted (token_endpoint {asm.token_endpoint})")

        # 2. Registration helpers and models, with the metadata the SDK sends by default
        #    (application_type native, code + refresh_token, no token_endpoint_auth_method).
        metadata = OAuthClientMetadata(
            redirect_uris=["http://localhost:53682/callback"],
            client_name="MCP Python interop",
            scope="openid",
        )
        response = await client.send(create_client_registration_request(asm, metadata, issuer))
        raw = json.loads(await response.aread())
        info = await handle_registration_response(response)
        check(isinstance(info, OAuthClientInformationFull), "register: not an OAuthClientInformationFull")
        check_registration_usable(info)
        check(info.token_endpoint_auth_method == "client_secret_basic" and info.client_secret,
              f"register: {info.token_endpoint_auth_method} without a usable secret")
        check(info.application_type == "native", f"register: application_type {info.application_type}")
        check([str(u) for u in info.redirect_uris] == ["http://localhost:53682/callback"], "register: redirect_uris")
        log(f"registered {info.client_id} with the SDK's helpers")
        bad = OAuthClientMetadata(redirect_uris=["https://client.example.org/cb#fragment"], application_type="web")
        try:
            await handle_registration_response(
                await client.send(create_client_registration_request(asm, bad, issuer)))
            raise Deviation("invalid registration accepted")
        except OAuthRegistrationError as e:
            check("400" in str(e) and "invalid_redirect_uri" in str(e), f"invalid registration: {e}")
            log("invalid registration refused (OAuthRegistrationError 400 invalid_redirect_uri)")
        await manage(client, raw)

    # 3. OAuthClientProvider, from a 401 up to the authorization redirect.
    server = resource_server(issuer)
    resource = f"http://127.0.0.1:{server.server_address[1]}/mcp"
    redirected = []
    seen = []

    async def redirect_handler(url):
        redirected.append(url)

    async def callback_handler():
        raise StopAtRedirect()

    async def record(response):
        if response.request.method == "POST":
            await response.aread()
            seen.append(response.json())

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=resource,
        client_metadata=OAuthClientMetadata(
            redirect_uris=["http://localhost:53683/callback"], client_name="MCP Python auth flow"),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    try:
        async with httpx2.AsyncClient(auth=provider, timeout=10, event_hooks={"response": [record]}) as client:
            try:
                await client.get(resource)
                raise Deviation("the flow never reached the authorization redirect")
            except StopAtRedirect:
                pass
    finally:
        server.shutdown()
    check(len(redirected) == 1, f"redirect handler called {len(redirected)} times")
    check(storage.client_info is not None, "auth flow: no client registered")
    url = urlsplit(redirected[0])
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    check(f"{url.scheme}://{url.netloc}{url.path}" == str(asm.authorization_endpoint), f"redirected to {redirected[0]}")
    check(q.get("response_type") == "code", "redirect: response_type")
    check(q.get("client_id") == storage.client_info.client_id, "redirect: client_id is not the registered one")
    check(q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) >= 43, "redirect: no S256 PKCE")
    check(q.get("redirect_uri") == "http://localhost:53683/callback", "redirect: redirect_uri")
    check(q.get("resource") == resource, f"redirect: resource {q.get('resource')}")
    log(f"OAuthClientProvider redirected to the authorization endpoint (client {storage.client_info.client_id}, PKCE S256)")
    registration = next((r for r in seen if r.get("client_id") == storage.client_info.client_id), None)
    check(registration is not None, "auth flow: the registration answer was not seen")
    async with httpx2.AsyncClient(timeout=10) as client:
        await manage(client, registration)


def main():
    if len(sys.argv) != 2:
        print("usage: python mcp_client.py <issuer>", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(run(sys.argv[1]))
    except Deviation as e:
        print(f"[{LIB}] FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"[{LIB}] PASS")


if __name__ == "__main__":
    main()
