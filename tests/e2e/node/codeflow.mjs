// The OpenID Connect code flow with Node's openid-client (panva), against the service under
// gunicorn: discovery, PKCE S256 with state and nonce, the hosted pages driven over HTTP by
// their labels (as a browser would submit them), the code exchange with the id_token
// validated by openid-client, UserInfo, a company switch by refresh (the ID token it answers
// validated by openid-client, then a refresh by oauth4webapi alone, whose
// processRefreshTokenResponse validates that one's ID token), RP-initiated logout.
// Every ID token's signature is checked against the JWKS (non-repudiation checks).
// Prints one JSON line of what it saw; the Python test asserts on it.
import { createHash } from "node:crypto";
import * as oauth from "oauth4webapi";
import * as client from "openid-client";

const [issuer, email, password, entityName] = process.argv.slice(2);
const CLIENT_ID = "demo-web";
const REDIRECT_URI = `${issuer}/demo`;

const config = await client.discovery(new URL(issuer), CLIENT_ID, undefined, client.None(), {
  execute: [client.allowInsecureRequests], // http on 127.0.0.1 in the test only
});
client.enableNonRepudiationChecks(config); // ID tokens' signatures, from the JWKS

// OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of the access token, base64url.
const atHash = (accessToken) =>
  createHash("sha256").update(accessToken).digest().subarray(0, 16).toString("base64url");
// What an ID token of a refresh must keep of the code grant's (Core §12.2), and what it says.
const SAME = ["iss", "sub", "aud", "azp", "auth_time", "sid", "email"];
function refreshedIdToken(original, claims, accessToken) {
  return {
    same: SAME.filter((name) => JSON.stringify(claims[name]) === JSON.stringify(original[name])),
    newer_iat: claims.iat >= original.iat,
    legal_entity_id: claims.legal_entity_id,
    nonce: claims.nonce ?? null,
    at_hash_ok: claims.at_hash === atHash(accessToken),
  };
}

const cookies = new Map();
function remember(response) {
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const at = pair.indexOf("=");
    cookies.set(pair.slice(0, at), pair.slice(at + 1));
  }
}
const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
const unescape = (s) =>
  s.replace(/&#34;|&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">").replace(/&amp;/g, "&");

async function get(url) {
  const response = await fetch(url, { redirect: "manual", headers: { cookie: cookieHeader() } });
  remember(response);
  return response;
}

function form(html) {
  const action = unescape(html.match(/<form method="post" action="([^"]+)"/)[1]);
  const fields = {};
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    fields[m[1]] = unescape(m[2]);
  }
  // A field found by its label's text, as a person finds it.
  const byLabel = (text) => {
    const m = html.match(new RegExp(`<label for="([^"]+)">${text}</label>`));
    if (!m) throw new Error(`no field labelled ${text}`);
    const input = html.match(new RegExp(`<input[^>]*id="${m[1]}"[^>]*>`))[0];
    return { name: input.match(/name="([^"]+)"/)[1], value: unescape(input.match(/value="([^"]*)"/)?.[1] ?? "") };
  };
  return { action, fields, byLabel };
}

async function submit(page, values) {
  const url = new URL(page.action, issuer);
  const response = await fetch(url, {
    method: "POST",
    redirect: "manual",
    headers: { cookie: cookieHeader(), "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ ...page.fields, ...values }),
  });
  remember(response);
  return response;
}

const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const authorizationUrl = client.buildAuthorizationUrl(config, {
  redirect_uri: REDIRECT_URI,
  scope: "openid email profile order.order_read_le",
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
  nonce,
});

const seen = { pages: [] };
let response = await get(authorizationUrl);
let html = await response.text();
let page = form(html);
seen.pages.push("login");
response = await submit(page, {
  [page.byLabel("Email").name]: email,
  [page.byLabel("Password").name]: password,
});
if (response.status === 200) {
  html = await response.text();
  page = form(html);
  seen.pages.push("picker");
  const choice = page.byLabel(entityName);
  response = await submit(page, { [choice.name]: choice.value });
}
if (response.status !== 303) throw new Error(`expected a redirect, got ${response.status}`);
const callback = new URL(response.headers.get("location"));
seen.callback_origin = callback.origin + callback.pathname;

const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const claims = tokens.claims();
seen.id_token = { sub: claims.sub, aud: claims.aud, nonce_ok: claims.nonce === nonce,
  legal_entity_id: claims.legal_entity_id, email: claims.email, sid: claims.sid };
seen.legal_entity_id = tokens.legal_entity_id;
seen.userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);

const switched = await client.refreshTokenGrant(config, tokens.refresh_token, {
  legal_entity_id: "acme",
});
seen.switched = { legal_entity_id: switched.legal_entity_id, scope: switched.scope };
seen.switched_id_token = refreshedIdToken(claims, switched.claims(), switched.access_token);

// The same kind of refresh by oauth4webapi alone: its processRefreshTokenResponse validates
// the ID token (iss, aud, azp, exp, iat, auth_time) before anything is returned.
const as = await oauth.processDiscoveryResponse(
  new URL(issuer),
  await oauth.discoveryRequest(new URL(issuer), { [oauth.allowInsecureRequests]: true }),
);
const rp = { client_id: CLIENT_ID };
const back = await oauth.processRefreshTokenResponse(
  as,
  rp,
  await oauth.refreshTokenGrantRequest(as, rp, oauth.None(), switched.refresh_token, {
    additionalParameters: { legal_entity_id: "globex" },
    [oauth.allowInsecureRequests]: true,
  }),
);
seen.back = {
  legal_entity_id: back.legal_entity_id,
  id_token: refreshedIdToken(claims, oauth.getValidatedIdTokenClaims(back), back.access_token),
};

const logoutUrl = client.buildEndSessionUrl(config, {
  id_token_hint: tokens.id_token,
  post_logout_redirect_uri: REDIRECT_URI,
  state: "bye",
});
response = await get(logoutUrl);
seen.logout = { status: response.status, location: response.headers.get("location") };
try {
  await client.refreshTokenGrant(config, back.refresh_token);
  seen.refresh_after_logout = "accepted";
} catch (error) {
  seen.refresh_after_logout = error.error ?? String(error);
}
console.log(JSON.stringify(seen));
