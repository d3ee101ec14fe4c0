// The storefront flow with libraries this project did not write: oauth4webapi (discovery, token
// endpoint, introspection, revocation) and jose (offline verification of the access tokens).
//
//   node storefront.mjs ISSUER
//
// ORDER_SERVICE_SECRET in the environment adds introspection (as order-service) and revocation.
// Prints one JSON object: what the client saw at each step. Exits non-zero on any surprise.
import * as oauth from 'oauth4webapi'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'

const PASSWORD = 'correct horse battery staple'
const AUDIENCE = 'commerce-api'

const issuerArg = process.argv[2]
if (!issuerArg) {
  console.error('usage: node storefront.mjs ISSUER')
  process.exit(2)
}
const issuer = new URL(issuerArg)
const insecure = { [oauth.allowInsecureRequests]: true } // the test server is http://127.0.0.1

// Discovery (RFC 8414): every endpoint comes from the metadata, nothing is hard-coded.
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
)
const storefront = { client_id: 'storefront' }
const publicClient = oauth.None()
const jwks = createRemoteJWKSet(new URL(as.jwks_uri))

async function verify(accessToken) {
  const header = decodeProtectedHeader(accessToken)
  const { payload, protectedHeader } = await jwtVerify(accessToken, jwks, {
    issuer: as.issuer,
    audience: AUDIENCE,
    typ: 'at+jwt',
    algorithms: ['RS256'],
  })
  return { header: { alg: protectedHeader.alg, typ: header.typ, kid: protectedHeader.kid }, claims: payload }
}

async function step(name, response) {
  const token = await response
  const { header, claims } = await verify(token.access_token)
  return {
    step: name,
    scope: token.scope,
    legal_entity_id: token.legal_entity_id,
    legal_entities: token.legal_entities,
    token_type: token.token_type,
    expires_in: token.expires_in,
    refresh_token: token.refresh_token,
    access_token: token.access_token,
    header,
    claims,
  }
}

async function login(username) {
  const response = await oauth.genericTokenEndpointRequest(
    as,
    storefront,
    publicClient,
    'password',
    { username, password: PASSWORD },
    insecure,
  )
  return oauth.processGenericTokenEndpointResponse(as, storefront, response)
}

async function refresh(refreshToken, legalEntityId) {
  const additionalParameters = legalEntityId ? { legal_entity_id: legalEntityId } : {}
  const response = await oauth.refreshTokenGrantRequest(as, storefront, publicClient, refreshToken, {
    additionalParameters,
    ...insecure,
  })
  return oauth.processRefreshTokenResponse(as, storefront, response)
}

const strip = ({ refresh_token, access_token, ...rest }) => rest
const steps = []

const alice = await step('alice login', login('alice@acme.test'))
steps.push(alice)
const globex = await step('alice switch to globex', refresh(alice.refresh_token, 'globex'))
steps.push(globex)
const acme = await step('alice switch back to acme', refresh(globex.refresh_token, 'acme'))
steps.push(acme)

// A switch to an entity alice is not assigned to: invalid_grant, and her session lives on.
let refused
try {
  await refresh(acme.refresh_token, 'acme-logistics')
  refused = { error: null }
} catch (err) {
  if (!(err instanceof oauth.ResponseBodyError)) throw err
  refused = { status: err.status, error: err.error }
}
const after = await step('alice refresh after refused switch', refresh(acme.refresh_token))
steps.push(after)

const bob = await step('bob login', login('bob@acme.test'))
steps.push(bob)

const result = {
  issuer: as.issuer,
  discovery: {
    token_endpoint: as.token_endpoint,
    jwks_uri: as.jwks_uri,
    introspection_endpoint: as.introspection_endpoint,
    revocation_endpoint: as.revocation_endpoint,
  },
  steps: steps.map(strip),
  refused_switch: refused,
}

const secret = process.env.ORDER_SERVICE_SECRET
if (secret) {
  const orderService = { client_id: 'order-service' }
  const introspect = async (token, hint) =>
    oauth.processIntrospectionResponse(
      as,
      orderService,
      await oauth.introspectionRequest(as, orderService, oauth.ClientSecretBasic(secret), token, {
        additionalParameters: { token_type_hint: hint },
        ...insecure,
      }),
    )
  const before = {
    access_token: await introspect(after.access_token, 'access_token'),
    refresh_token: await introspect(after.refresh_token, 'refresh_token'),
  }
  await oauth.processRevocationResponse(
    await oauth.revocationRequest(as, storefront, publicClient, after.refresh_token, {
      additionalParameters: { token_type_hint: 'refresh_token' },
      ...insecure,
    }),
  )
  const revoked = {
    access_token: await introspect(after.access_token, 'access_token'),
    refresh_token: await introspect(after.refresh_token, 'refresh_token'),
  }
  let refreshAfterRevoke
  try {
    await refresh(after.refresh_token)
    refreshAfterRevoke = { error: null }
  } catch (err) {
    if (!(err instanceof oauth.ResponseBodyError)) throw err
    refreshAfterRevoke = { status: err.status, error: err.error }
  }
  result.introspection = { before, revoked }
  result.refresh_after_revoke = refreshAfterRevoke
}

process.stdout.write(JSON.stringify(result) + '\n')
