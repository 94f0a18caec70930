// oauth4webapi v3 against the registrar: discovery, dynamicClientRegistrationRequest +
// processDynamicClientRegistrationResponse, then protectedResourceRequest for RFC 7592
// read/update/delete. Usage: node oauth4webapi.mjs <issuer>
import * as oauth from 'oauth4webapi';
import { check, main, roundTrip } from './flow.mjs';

await main('oauth4webapi', async (issuer) => {
  // allowInsecureRequests: the test registrar is plain http on 127.0.0.1.
  const insecure = { [oauth.allowInsecureRequests]: true };
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
  check(typeof as.registration_endpoint === 'string', 'discovery: no registration_endpoint');
  await roundTrip('oauth4webapi', {
    async register(metadata) {
      const response = await oauth.dynamicClientRegistrationRequest(as, metadata, insecure);
      return oauth.processDynamicClientRegistrationResponse(response);
    },
    call(method, url, token, body) {
      const headers = new Headers({ accept: 'application/json' });
      if (body !== undefined) headers.set('content-type', 'application/json');
      return oauth.protectedResourceRequest(token, method, new URL(url), headers,
        body === undefined ? null : JSON.stringify(body), insecure);
    },
    describeError(err) {
      if (err instanceof oauth.WWWAuthenticateChallengeError) {
        return { status: err.status, challenge: err.cause?.[0]?.scheme, error: err.cause?.[0]?.parameters?.error };
      }
      if (err instanceof oauth.ResponseBodyError) return { status: err.status, error: err.error };
      if (err instanceof Response) return { status: err.status };
      return { unexpected: String(err) };
    },
  });
});
