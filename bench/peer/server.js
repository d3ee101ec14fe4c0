// The peer of `make bench`: node-oidc-provider doing the token service's job minus legal
// entities (bench/peer.py starts it, pinned to the service's core, and drives it).
//
// - refresh tokens rotate on every use (the consumed one is refused, a reuse revokes the grant);
// - access tokens for the default resource are RS256 JWTs (RFC 9068), 300 s, like ours;
// - client_credentials (admin-cli) gets such a JWT too;
// - introspection (order-service) of an opaque access token (the userinfo audience's);
// - the in-memory adapter, no TLS, no logging;
// - no password and no login page: GET /interaction/:uid logs the fixed account in and grants
//   what the authorization request asked for, so that bench/peer.py can run the authorization
//   code flow with PKCE once per refresh chain before the clock starts.
//
// Env: PORT, PEER_CLIENT_SECRET (the confidential clients' secret).
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.PORT);
const secret = process.env.PEER_CLIENT_SECRET;
if (!port || !secret) throw new Error('PORT and PEER_CLIENT_SECRET are required');

const API = 'urn:commerce-api';
// As many scopes as an ADMIN's refresh gives in the service's demo, so the tokens weigh the same.
const API_SCOPES = [
  'approval.approval_manage', 'approval.approval_manage_own', 'approval.approval_read',
  'approval.approval_read_own', 'customer.customer_read_own', 'customer.customerprofile_edit',
  'customer.customerprofile_view', 'customermanagement.legalentity_read_own',
  'iam.assignment_create_own', 'iam.assignment_delete_own', 'order.history_view',
  'order.order_create', 'order.order_read_le', 'quote.quote_manage_own', 'quote.quote_read_own',
].join(' ');
const ACCOUNT = 'alice';
const OIDC_SCOPES = new Set(['openid', 'offline_access']);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'bench' };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: 'storefront',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
    {
      client_id: 'admin-cli',
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'order-service',
      client_secret: secret,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // As the service's introspection asks for token.introspect: only the resource server.
      allowedPolicy: async (ctx, client) => client.clientId === 'order-service',
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? API,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== API) throw new errors.InvalidTarget();
        return {
          scope: API_SCOPES,
          audience: 'commerce-api',
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // The service gives every login a refresh token and rotates it on every use: so does the peer.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  ttl: {
    Interaction: 600,
    IdToken: 300,
    AccessToken: 300,
    ClientCredentials: 300,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
  },
  routes: { token: '/oauth/token', introspection: '/oauth/introspect' },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

// The bench's interaction: log the account in and grant what was asked, with no page.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) return next();
  const { params } = await provider.interactionDetails(ctx.req, ctx.res);
  const scopes = String(params.scope ?? '').split(' ').filter(Boolean);
  const grant = new provider.Grant({ accountId: ACCOUNT, clientId: params.client_id });
  grant.addOIDCScope(scopes.filter((s) => OIDC_SCOPES.has(s)).join(' '));
  if (params.resource) {
    grant.addResourceScope(params.resource, scopes.filter((s) => !OIDC_SCOPES.has(s)).join(' '));
  }
  const result = { login: { accountId: ACCOUNT }, consent: { grantId: await grant.save() } };
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
});

provider.listen(port, '127.0.0.1');
