// A single-page storefront on another origin than the token service, signing buyers in with
// oidc-client-ts (code flow with PKCE) and calling the service straight from the browser: no
// proxy in between, so every call it makes needs the service's CORS answers.
// tests/e2e/test_oidc_client_ts.py serves this page and drives it through `window.spa`.
"use strict";

const config = window.SPA_CONFIG;
const here = window.location.origin;

oidc.Log.setLogger(console);
oidc.Log.setLevel(oidc.Log.WARN);

const userManager = new oidc.UserManager({
  authority: config.issuer,
  client_id: config.clientId,
  redirect_uri: `${here}/callback.html`,
  silent_redirect_uri: `${here}/silent.html`,
  post_logout_redirect_uri: `${here}/signed-out.html`,
  scope: config.scope,
  loadUserInfo: true,
  automaticSilentRenew: false,
  userStore: new oidc.WebStorageStateStore({ store: window.sessionStorage }),
});

function summary(user) {
  return user && {
    profile: user.profile,
    scope: user.scope,
    access_token: user.access_token,
    refresh_token: user.refresh_token,
    id_token: user.id_token,
  };
}

function failure(error) {
  // An ErrorResponse carries the OAuth error code in `error`.
  return { ok: false, name: error && error.name, error: String(error), code: error && error.error };
}

async function userinfo(accessToken) {
  const endpoint = await userManager.metadataService.getUserInfoEndpoint();
  const response = await fetch(endpoint, { headers: { Authorization: `Bearer ${accessToken}` } });
  return {
    status: response.status,
    body: await response.json(),
    wwwAuthenticate: response.headers.get("WWW-Authenticate"),
  };
}

window.spa = {
  signInClicked() {
    userManager.signinRedirect().catch((error) => {
      document.getElementById("out").textContent = JSON.stringify(failure(error));
    });
  },
  async user() {
    return summary(await userManager.getUser());
  },
  // A company switch: a refresh (signinSilent uses the refresh token) with legal_entity_id.
  async switchTo(entity) {
    try {
      const user = await userManager.signinSilent({ extraTokenParams: { legal_entity_id: entity } });
      return { ok: true, user: summary(user) };
    } catch (error) {
      return failure(error);
    }
  },
  // Silent renew through a hidden iframe and prompt=none, for comparison.
  async iframeRenew() {
    try {
      const user = await userManager.signinSilent({ forceIframeAuth: true, silentRequestTimeoutInSeconds: 5 });
      return { ok: true, user: summary(user) };
    } catch (error) {
      return failure(error);
    }
  },
  async userinfo(accessToken) {
    return userinfo(accessToken || (await userManager.getUser()).access_token);
  },
  async revoke() {
    try {
      await userManager.revokeTokens(["access_token", "refresh_token"]);
      return { ok: true };
    } catch (error) {
      return failure(error);
    }
  },
  signOut() {
    userManager.signoutRedirect().catch((error) => {
      document.getElementById("out").textContent = JSON.stringify(failure(error));
    });
  },
};

// What each page does when it loads: the callbacks finish what the redirects started.
window.spaReady = (async () => {
  switch (window.location.pathname) {
    case "/callback.html":
      return { ok: true, callback: summary(await userManager.signinCallback()) };
    case "/silent.html":
      await userManager.signinSilentCallback();
      return { ok: true };
    case "/signed-out.html":
      await userManager.signoutCallback();
      return { ok: true, signedOut: true };
    default:
      return { ok: true };
  }
})().catch(failure);
