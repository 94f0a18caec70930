// The round trip every JavaScript interop driver performs, written once:
// register -> read -> update -> read -> delete -> read-after-delete (must fail),
// plus one invalid registration (must fail with invalid_redirect_uri).
// A driver supplies `register(metadata)` (returns the client information response),
// `call(method, url, token, body)` (returns a fetch Response) and `describeError(err)`.
// Any deviation throws; main() prints it and exits 1.

export class Deviation extends Error {}

export function check(condition, message) {
  if (!condition) throw new Deviation(message);
}

function log(lib, message) {
  console.log(`[${lib}] ${message}`);
}

// RFC 7592 §2.2: the update carries every registered member except the four read-only ones.
const READ_ONLY = ['registration_access_token', 'registration_client_uri', 'client_secret_expires_at', 'client_id_issued_at'];

async function json(response, expectedStatus, what) {
  const text = await response.text();
  check(response.status === expectedStatus, `${what}: expected HTTP ${expectedStatus}, got ${response.status}: ${text}`);
  const type = response.headers.get('content-type') ?? '';
  check(/^application\/(.+\+)?json/i.test(type), `${what}: expected a JSON content type, got ${JSON.stringify(type)}`);
  check(response.headers.get('cache-control')?.includes('no-store'), `${what}: expected Cache-Control: no-store`);
  return JSON.parse(text);
}

export async function roundTrip(lib, driver) {
  const redirect = `https://client.example.org/${lib}/cb`;
  const registered = await driver.register({
    redirect_uris: [redirect],
    client_name: `${lib} interop`,
    token_endpoint_auth_method: 'client_secret_basic',
    contacts: ['ops@client.example.org'],
  });
  check(typeof registered.client_id === 'string' && registered.client_id.length > 0, 'register: no client_id');
  check(typeof registered.client_secret === 'string', 'register: client_secret_basic client got no client_secret');
  check(typeof registered.client_secret_expires_at === 'number', 'register: client_secret_expires_at is not a number');
  check(typeof registered.registration_access_token === 'string', 'register: no registration_access_token');
  check(typeof registered.registration_client_uri === 'string', 'register: no registration_client_uri');
  check(registered.client_name === `${lib} interop`, 'register: client_name not echoed');
  check(JSON.stringify(registered.redirect_uris) === JSON.stringify([redirect]), 'register: redirect_uris not echoed');
  const uri = registered.registration_client_uri;
  let token = registered.registration_access_token;
  log(lib, `registered ${registered.client_id}`);

  const read = await json(await driver.call('GET', uri, token), 200, 'read');
  check(read.client_id === registered.client_id, 'read: another client_id');
  check(read.client_name === `${lib} interop`, 'read: client_name differs');
  check(typeof read.registration_access_token === 'string', 'read: no registration_access_token (RFC 7592 §3)');
  check(read.registration_client_uri === uri, 'read: registration_client_uri differs');
  token = read.registration_access_token;
  log(lib, 'read ok');

  const update = { ...read, client_name: `${lib} interop (updated)`, redirect_uris: [redirect, `${redirect}2`] };
  for (const member of READ_ONLY) delete update[member];
  const updated = await json(await driver.call('PUT', uri, token, update), 200, 'update');
  check(updated.client_id === registered.client_id, 'update: another client_id');
  check(updated.client_name === `${lib} interop (updated)`, 'update: client_name not updated');
  check(JSON.stringify(updated.redirect_uris) === JSON.stringify([redirect, `${redirect}2`]), 'update: redirect_uris not updated');
  check(typeof updated.registration_access_token === 'string', 'update: no registration_access_token');
  token = updated.registration_access_token;
  log(lib, `updated (token ${token === read.registration_access_token ? 'kept' : 'rotated'})`);

  const reread = await json(await driver.call('GET', uri, token), 200, 'read after update');
  check(reread.client_name === `${lib} interop (updated)`, 'read after update: old client_name');
  check(reread.redirect_uris.length === 2, 'read after update: old redirect_uris');
  log(lib, 'read after update ok');

  const deleted = await driver.call('DELETE', uri, token);
  check(deleted.status === 204, `delete: expected HTTP 204, got ${deleted.status}`);
  log(lib, 'deleted');

  let afterDelete;
  try {
    afterDelete = await driver.call('GET', uri, token);
  } catch (err) {
    afterDelete = err;
  }
  const failure = driver.describeError(afterDelete);
  check(failure.status === 401, `read after delete: expected a 401 failure, got ${JSON.stringify(failure)}`);
  log(lib, `read after delete refused: ${JSON.stringify(failure)}`);

  let invalid;
  try {
    invalid = await driver.register({ redirect_uris: ['https://client.example.org/cb#fragment'], client_name: `${lib} invalid` });
  } catch (err) {
    invalid = err;
  }
  const refused = driver.describeError(invalid);
  check(refused.status === 400 && refused.error === 'invalid_redirect_uri',
    `invalid registration: expected 400 invalid_redirect_uri, got ${JSON.stringify(refused)}`);
  log(lib, `invalid registration refused: ${JSON.stringify(refused)}`);
}

export async function main(lib, run) {
  const issuer = process.argv[2];
  if (!issuer) {
    console.error(`usage: node ${lib}.mjs <issuer URL>`);
    process.exit(2);
  }
  try {
    await run(new URL(issuer));
    console.log(`[${lib}] PASS`);
  } catch (err) {
    console.error(`[${lib}] FAIL: ${err instanceof Deviation ? err.message : err?.stack ?? err}`);
    if (err?.cause) console.error(`[${lib}] cause: ${JSON.stringify(err.cause)}`);
    process.exit(1);
  }
}

// RFC 7592 with plain HTTP, for libraries that stop at registration (the MCP SDKs): read, update
// sending back exactly what GET returned (registration_access_token and registration_client_uri
// included, which RFC 7592 §2.2 lets a server accept unchanged) with one member changed, delete,
// and read-after-delete (must be 401).
export async function manageWithPlainHttp(lib, registered) {
  const uri = registered.registration_client_uri;
  let token = registered.registration_access_token;
  check(typeof uri === 'string' && typeof token === 'string', 'register: no registration_client_uri / registration_access_token');
  const call = (method, token, body) => fetch(uri, {
    method,
    headers: { authorization: `Bearer ${token}`, accept: 'application/json', ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const read = await json(await call('GET', token), 200, 'read');
  check(read.client_id === registered.client_id, 'read: another client_id');
  check(JSON.stringify(read.redirect_uris) === JSON.stringify(registered.redirect_uris), 'read: redirect_uris differ');
  log(lib, 'read ok');
  const updated = await json(await call('PUT', read.registration_access_token, { ...read, client_name: `${read.client_name} (updated)` }), 200, 'update');
  check(updated.client_name === `${read.client_name} (updated)`, 'update: client_name not updated');
  token = updated.registration_access_token;
  log(lib, 'updated with the GET body sent back');
  const deleted = await call('DELETE', token);
  check(deleted.status === 204, `delete: expected HTTP 204, got ${deleted.status}`);
  const after = await call('GET', token);
  check(after.status === 401, `read after delete: expected 401, got ${after.status}`);
  log(lib, 'deleted; read after delete refused');
}

// An MCP server's RFC 9728 protected-resource metadata naming `issuer` as its authorization
// server, on a local port; returns the resource URL and a close function.
export async function startResourceServer(issuer) {
  const { default: http } = await import('node:http');
  let resource;
  const server = http.createServer((req, res) => {
    if (req.url === '/.well-known/oauth-protected-resource/mcp' || req.url === '/.well-known/oauth-protected-resource') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ resource, authorization_servers: [issuer.href.replace(/\/$/, '')], scopes_supported: ['mcp'] }));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{}');
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  resource = `http://127.0.0.1:${server.address().port}/mcp`;
  return { resource, close: () => server.close() };
}

// An OAuthClientProvider of the MCP SDKs that keeps what auth() hands it and captures the
// authorization redirect instead of opening a browser; `extra` adds members (clientMetadataUrl).
export function capturingProvider(redirectUrl, clientMetadata, extra = {}) {
  const seen = {};
  const provider = {
    get redirectUrl() { return redirectUrl; },
    get clientMetadata() { return clientMetadata; },
    state: () => 'interop-state',
    clientInformation: () => seen.client,
    saveClientInformation: (i) => { seen.client = i; },
    tokens: () => undefined,
    saveTokens: () => { throw new Error('no tokens expected before the redirect'); },
    redirectToAuthorization: (url) => { seen.redirect = url; },
    saveCodeVerifier: (v) => { seen.verifier = v; },
    codeVerifier: () => seen.verifier,
    ...extra,
  };
  return { provider, seen };
}

// The checks every authorization redirect of an MCP SDK's auth() must pass: the authorization
// endpoint, code flow, PKCE S256, state, the resource (RFC 8707); returns the query.
export function checkAuthorizationRedirect(redirect, metadata, redirectUri, resource) {
  check(redirect instanceof URL, 'auth(): redirectToAuthorization not called');
  check(`${redirect.origin}${redirect.pathname}` === metadata.authorization_endpoint, `auth(): redirected to ${redirect.href}`);
  const q = redirect.searchParams;
  check(q.get('response_type') === 'code', 'auth(): response_type');
  check(q.get('redirect_uri') === redirectUri, 'auth(): redirect_uri');
  check(q.get('code_challenge_method') === 'S256' && (q.get('code_challenge') ?? '').length >= 43, 'auth(): no S256 PKCE challenge');
  check(q.get('state') === 'interop-state', 'auth(): state');
  check(q.get('resource') === resource, `auth(): resource ${q.get('resource')}`);
  return q;
}
