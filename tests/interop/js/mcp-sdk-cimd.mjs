// The MCP TypeScript SDK's Client ID Metadata Document path (an OAuthClientProvider with
// `clientMetadataUrl`) against the registrar. Usage:
//   CIMD_URL=<document URL> CIMD_REDIRECT=<its redirect URI> ADMIN_URL=<admin API> \
//   ADMIN_TOKEN=<clients:read token> node mcp-sdk-cimd.mjs <issuer>
//
// 1. Discovery: the SDK's schema accepts it, and it says client_id_metadata_document_supported
//    with `none` among the auth methods (what the SDK and MCP hosts check).
// 2. auth(): from an MCP server URL to the authorization redirect with the document URL as the
//    client_id, and no registration request at all.
// 3. The authorization server's side: the client_id exactly as it arrived, looked up through the
//    admin API, is a client resolved from the document, with the redirect URI of the request.
import { auth, discoverAuthorizationServerMetadata } from '@modelcontextprotocol/sdk/client/auth.js';
import { capturingProvider, check, checkAuthorizationRedirect, main, startResourceServer } from './flow.mjs';

const lib = 'mcp-sdk-cimd';
const log = (m) => console.log(`[${lib}] ${m}`);

await main(lib, async (issuer) => {
  const { CIMD_URL: documentUrl, CIMD_REDIRECT: redirectUri, ADMIN_URL: admin, ADMIN_TOKEN: token } = process.env;
  check(documentUrl && redirectUri && admin && token, 'CIMD_URL, CIMD_REDIRECT, ADMIN_URL and ADMIN_TOKEN must be set');

  const metadata = await discoverAuthorizationServerMetadata(issuer);
  check(metadata?.client_id_metadata_document_supported === true, 'discovery: client_id_metadata_document_supported is not true');
  check(metadata.token_endpoint_auth_methods_supported?.includes('none'), 'discovery: none is not among token_endpoint_auth_methods_supported');
  log('discovery advertises client ID metadata documents');

  const { resource, close } = await startResourceServer(issuer);
  const clientMetadata = {
    client_name: 'MCP interop CIMD host',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
  const { provider, seen } = capturingProvider(redirectUri, clientMetadata, { clientMetadataUrl: documentUrl });
  const posts = [];
  const fetchFn = (url, init) => {
    if ((init?.method ?? 'GET') === 'POST') posts.push(String(url));
    return fetch(url, init);
  };
  try {
    const result = await auth(provider, { serverUrl: resource, fetchFn });
    check(result === 'REDIRECT', `auth(): expected REDIRECT, got ${result}`);
  } finally {
    close();
  }
  check(posts.length === 0, `auth(): sent ${posts.join(', ')} although the server supports metadata documents`);
  const q = checkAuthorizationRedirect(seen.redirect, metadata, redirectUri, resource);
  check(q.get('client_id') === documentUrl, `auth(): client_id ${q.get('client_id')} is not the document URL`);
  log('auth() redirected with the document URL as client_id, without registering');

  const r = await fetch(`${admin}/admin/clients/${encodeURIComponent(q.get('client_id'))}`, {
    headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
  });
  const text = await r.text();
  check(r.status === 200, `admin lookup: HTTP ${r.status}: ${text}`);
  const client = JSON.parse(text);
  check(client.client_id === documentUrl && client.source === 'metadata_document', `admin lookup: ${text}`);
  check(client.redirect_uris?.includes(q.get('redirect_uri')), 'admin lookup: the redirect_uri of the authorization request is not the client\'s');
  check(client.token_endpoint_auth_method === 'none' && client.disabled === false, `admin lookup: ${text}`);
  log('the authorization server resolves the client from its document');
});
