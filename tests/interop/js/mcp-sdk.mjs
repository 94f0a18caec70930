// The MCP TypeScript SDK (@modelcontextprotocol/sdk) against the registrar, configured as the
// README's "Using it with an MCP server" recipe says. Usage: node mcp-sdk.mjs <issuer>
//
// 1. discoverAuthorizationServerMetadata: the SDK's zod schema accepts the registrar's discovery.
// 2. registerClient with the metadata an MCP host sends (loopback redirect, public client, no
//    application_type), parsed by the SDK's OAuthClientInformationFull schema.
// 3. auth(): the whole flow from an MCP server URL (RFC 9728 protected-resource metadata, served
//    here by the driver) through discovery and registration to the authorization redirect,
//    which an OAuthClientProvider captures and this driver checks (PKCE S256, resource, client).
// 4. RFC 7592 read / update / delete of both registrations with plain HTTP.
import { auth, discoverAuthorizationServerMetadata, registerClient } from '@modelcontextprotocol/sdk/client/auth.js';
import { OAuthClientInformationFullSchema } from '@modelcontextprotocol/sdk/shared/auth.js';
import { capturingProvider, check, checkAuthorizationRedirect, main, manageWithPlainHttp, startResourceServer } from './flow.mjs';

const lib = 'mcp-sdk';
const log = (m) => console.log(`[${lib}] ${m}`);

// The SDK keeps only the RFC 7591 members it models and drops registration_access_token and
// registration_client_uri; the RFC 7592 steps need them, so the raw answer is kept here.
function recordingFetch(seen) {
  return async (url, init) => {
    const response = await fetch(url, init);
    if ((init?.method ?? 'GET') === 'POST') seen.push(await response.clone().json());
    return response;
  };
}

await main(lib, async (issuer) => {
  const metadata = await discoverAuthorizationServerMetadata(issuer);
  check(metadata !== undefined, 'discovery: no metadata found');
  check(metadata.registration_endpoint === new URL('/register', issuer).href, `discovery: registration_endpoint ${metadata.registration_endpoint}`);
  check(typeof metadata.authorization_endpoint === 'string' && typeof metadata.token_endpoint === 'string', 'discovery: no AS endpoints');
  check(metadata.code_challenge_methods_supported?.includes('S256'), 'discovery: S256 not advertised');
  log(`discovery accepted (authorization_endpoint ${metadata.authorization_endpoint})`);

  // What an MCP host registers: a loopback callback, public, code + refresh, no application_type.
  const port = 40000 + Math.floor(Math.random() * 20000);
  const clientMetadata = {
    client_name: 'MCP interop host',
    redirect_uris: [`http://localhost:${port}/callback`],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
  const raw = [];
  const info = await registerClient(issuer, { metadata, clientMetadata, scope: 'openid', fetchFn: recordingFetch(raw) });
  check(OAuthClientInformationFullSchema.safeParse(info).success, 'register: response does not fit OAuthClientInformationFull');
  check(typeof info.client_id === 'string' && info.client_secret === undefined, 'register: a public client got a secret or no client_id');
  check(JSON.stringify(info.redirect_uris) === JSON.stringify(clientMetadata.redirect_uris), 'register: redirect_uris not echoed');
  check(info.scope === 'openid', `register: scope ${info.scope}`);
  log(`registerClient ok (${info.client_id})`);

  // An MCP server's RFC 9728 metadata pointing at the authorization server (the registrar's issuer).
  const { resource, close } = await startResourceServer(issuer);
  const { provider, seen } = capturingProvider(clientMetadata.redirect_uris[0], { ...clientMetadata, client_name: 'MCP interop auth()' });
  const rawAuth = [];
  try {
    const result = await auth(provider, { serverUrl: resource, fetchFn: recordingFetch(rawAuth) });
    check(result === 'REDIRECT', `auth(): expected REDIRECT, got ${result}`);
  } finally {
    close();
  }
  const saved = seen.client;
  check(saved?.client_id, 'auth(): no client registered');
  const q = checkAuthorizationRedirect(seen.redirect, metadata, clientMetadata.redirect_uris[0], resource);
  check(q.get('client_id') === saved.client_id, 'auth(): client_id is not the registered one');
  check(q.get('scope') === 'mcp', `auth(): scope ${q.get('scope')} (the resource's scopes_supported)`);
  log(`auth() redirected to the authorization endpoint (client ${saved.client_id}, PKCE S256)`);

  const authRegistration = rawAuth.find((r) => r.client_id === saved.client_id);
  check(authRegistration, 'auth(): the registration answer was not seen');
  await manageWithPlainHttp(lib, raw[0]);
  await manageWithPlainHttp(lib, authRegistration);
});
