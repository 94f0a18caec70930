// openid-client v6 against the registrar: dynamicClientRegistration (with discovery), then
// fetchProtectedResource for RFC 7592 read/update/delete. Usage: node openid-client.mjs <issuer>
import * as client from 'openid-client';
import { main, roundTrip } from './flow.mjs';

await main('openid-client', async (issuer) => {
  let config; // the Configuration of the registered client, for fetchProtectedResource
  await roundTrip('openid-client', {
    async register(metadata) {
      // allowInsecureRequests: the test registrar is plain http on 127.0.0.1.
      const registered = await client.dynamicClientRegistration(issuer, metadata, undefined, {
        execute: [client.allowInsecureRequests],
      });
      config ??= registered;
      return registered.clientMetadata();
    },
    call(method, url, token, body) {
      const headers = new Headers({ accept: 'application/json' });
      if (body !== undefined) headers.set('content-type', 'application/json');
      return client.fetchProtectedResource(config, token, new URL(url), method,
        body === undefined ? null : JSON.stringify(body), headers);
    },
    describeError(err) {
      if (err instanceof client.WWWAuthenticateChallengeError) {
        return { status: err.status, challenge: err.cause?.[0]?.scheme, error: err.cause?.[0]?.parameters?.error };
      }
      if (err instanceof client.ResponseBodyError) return { status: err.status, error: err.error };
      if (err instanceof Response) return { status: err.status };
      return { unexpected: String(err) };
    },
  });
});
