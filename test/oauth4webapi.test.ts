/**
 * Interop: oauth4webapi, a strict OAuth 2 client, with every default check on. The only relaxation is
 * `allowInsecureRequests`, because the test server speaks plain http on loopback.
 *
 * Discovery of the authorization server (RFC 8414, issuer checked) and of the protected resource
 * (RFC 9728, resource checked, also reached through the 401 challenge), then for a Client ID Metadata
 * Document URL and a dynamically registered client (RFC 7591): authorization code + PKCE, the callback
 * checked by validateAuthResponse (state and RFC 9207 iss), code exchange, the access token at /mcp,
 * refresh with rotation.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as oauth from "oauth4webapi";
import type { RunningServer } from "../server.ts";
import { approveAsUser, CLIENT_METADATA_URL, REDIRECT_URL, startTestServer } from "./clients.ts";

const loopback = { [oauth.allowInsecureRequests]: true } as const;
const MODERN = "2026-07-28";

/** Calls a tool at /mcp in the 2026-07-28 era with oauth4webapi's protected-resource request. */
function callTool(mcpUrl: URL, accessToken: string, tool: string): Promise<Response> {
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "tools/call",
    params: {
      name: tool,
      arguments: {},
      _meta: {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { name: "interop-oauth4webapi", version: "1.0.0" },
      },
    },
  });
  const headers = new Headers({
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
    "mcp-method": "tools/call",
    "mcp-name": tool,
  });
  return oauth.protectedResourceRequest(accessToken, "POST", mcpUrl, headers, body, loopback);
}

async function toolResultText(response: Response): Promise<string> {
  assert.equal(response.status, 200);
  const message = (await response.json()) as {
    result?: { content?: { type: string; text: string }[]; isError?: boolean };
  };
  assert.ok(message.result, "a JSON-RPC result");
  assert.notEqual(message.result.isError, true);
  return (message.result.content ?? []).map((block) => block.text).join("\n");
}

describe("oauth4webapi against the lazy-auth server", () => {
  let srv: RunningServer;
  let issuer: URL;
  let mcpUrl: URL;
  let as: oauth.AuthorizationServer;

  before(async () => {
    srv = await startTestServer(30);
    issuer = new URL(srv.url);
    mcpUrl = new URL(`${srv.url}/mcp`);
  });
  after(() => srv?.close());

  it("discovers the authorization server (RFC 8414) and its issuer checks out", async () => {
    as = await oauth.processDiscoveryResponse(
      issuer,
      await oauth.discoveryRequest(issuer, { algorithm: "oauth2", ...loopback }),
    );
    assert.equal(as.issuer, srv.url);
    assert.equal(as.authorization_endpoint, `${srv.url}/authorize`);
    assert.equal(as.token_endpoint, `${srv.url}/token`);
    assert.equal(as.registration_endpoint, `${srv.url}/register`);
    assert.deepEqual(as.code_challenge_methods_supported, ["S256"]);
    assert.equal(as.authorization_response_iss_parameter_supported, true);
    // The issuer check is live: the same document, expected from another issuer, is refused.
    const elsewhere = new URL("http://127.0.0.2:1/");
    await assert.rejects(
      oauth.processDiscoveryResponse(
        elsewhere,
        await oauth.discoveryRequest(issuer, { algorithm: "oauth2", ...loopback }),
      ),
      (error: unknown) =>
        error instanceof oauth.OperationProcessingError && error.code === oauth.JSON_ATTRIBUTE_COMPARISON,
    );
  });

  it("discovers the protected resource (RFC 9728) for /mcp", async () => {
    const prm = await oauth.processResourceDiscoveryResponse(
      mcpUrl,
      await oauth.resourceDiscoveryRequest(mcpUrl, loopback),
    );
    assert.equal(prm.resource, mcpUrl.href);
    assert.deepEqual(prm.authorization_servers, [as.issuer]);
    assert.deepEqual(prm.bearer_methods_supported, ["header"]);
  });

  it("a protected call with a bad token meets a Bearer challenge naming the resource metadata", async () => {
    await assert.rejects(callTool(mcpUrl, "not-a-token", "get_secret"), (error: unknown) => {
      assert.ok(error instanceof oauth.WWWAuthenticateChallengeError);
      assert.equal(error.status, 401);
      const [challenge] = error.cause;
      assert.equal(challenge?.scheme, "bearer");
      assert.equal(challenge?.parameters.resource_metadata, `${srv.url}/.well-known/oauth-protected-resource/mcp`);
      assert.equal(challenge?.parameters.error, "invalid_token");
      return true;
    });
  });

  for (const kind of ["Client ID Metadata Document", "dynamic registration"] as const) {
    describe(`client by ${kind}`, () => {
      let client: oauth.Client;
      let tokens: oauth.TokenEndpointResponse;
      const clientAuth = oauth.None();
      const resource = () => ({ resource: mcpUrl.href });

      it(kind === "dynamic registration" ? "registers (RFC 7591)" : "uses the document URL as client_id", async () => {
        if (kind === "Client ID Metadata Document") {
          client = { client_id: CLIENT_METADATA_URL, token_endpoint_auth_method: "none" };
          return;
        }
        const response = await oauth.dynamicClientRegistrationRequest(
          as,
          { redirect_uris: [REDIRECT_URL], client_name: "oauth4webapi interop", token_endpoint_auth_method: "none" },
          loopback,
        );
        client = await oauth.processDynamicClientRegistrationResponse(response);
        assert.ok(client.client_id, "a client_id was issued");
        assert.equal(client.token_endpoint_auth_method, "none");
        assert.deepEqual(client.redirect_uris, [REDIRECT_URL]);
      });

      it("PKCE; validateAuthResponse checks state and iss (tampered, missing refused); code exchanged", async () => {
        const verifier = oauth.generateRandomCodeVerifier();
        const state = oauth.generateRandomState();
        const authorizationUrl = new URL(as.authorization_endpoint!);
        for (
          const [name, value] of Object.entries({
            response_type: "code",
            client_id: client.client_id,
            redirect_uri: REDIRECT_URL,
            code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
            code_challenge_method: "S256",
            scope: "mcp",
            state,
            ...resource(),
          })
        ) {
          authorizationUrl.searchParams.set(name, value);
        }
        const callback = await approveAsUser(authorizationUrl);

        const tampered = new URL(callback);
        tampered.searchParams.set("iss", "https://attacker.example");
        assert.throws(
          () => oauth.validateAuthResponse(as, client, tampered, state),
          oauth.OperationProcessingError,
          "another issuer's iss",
        );
        const missing = new URL(callback);
        missing.searchParams.delete("iss");
        assert.throws(
          () => oauth.validateAuthResponse(as, client, missing, state),
          oauth.OperationProcessingError,
          "no iss",
        );
        assert.throws(
          () => oauth.validateAuthResponse(as, client, callback, "another-state"),
          oauth.OperationProcessingError,
          "wrong state",
        );
        const params = oauth.validateAuthResponse(as, client, callback, state);

        const response = await oauth.authorizationCodeGrantRequest(
          as,
          client,
          clientAuth,
          params,
          REDIRECT_URL,
          verifier,
          {
            additionalParameters: resource(),
            ...loopback,
          },
        );
        assert.equal(response.headers.get("cache-control"), "no-store");
        tokens = await oauth.processAuthorizationCodeResponse(as, client, response);
        assert.equal(tokens.token_type, "bearer");
        assert.equal(tokens.expires_in, 30);
        assert.equal(tokens.scope, "mcp");
        assert.ok(tokens.refresh_token, "a refresh token came along");
      });

      it("the access token opens get_secret at /mcp", async () => {
        assert.match(
          await toolResultText(await callTool(mcpUrl, tokens.access_token, "get_secret")),
          /The secret is: .+/,
        );
        // whoami names the client the token was issued to: a registered one by its client_name, a
        // metadata-document one by its document's host and path.
        const whoami = await toolResultText(await callTool(mcpUrl, tokens.access_token, "whoami"));
        const document = new URL(CLIENT_METADATA_URL);
        const shown = kind === "dynamic registration" ? "oauth4webapi interop" : `${document.host}${document.pathname}`;
        assert.equal(whoami, `You are demo-user, signed in through ${shown}.`);
      });

      it("refreshes (rotation): the new access token works, and the spent refresh token is refused", async () => {
        const spent = tokens.refresh_token!;
        const response = await oauth.refreshTokenGrantRequest(as, client, clientAuth, spent, {
          additionalParameters: resource(),
          ...loopback,
        });
        tokens = await oauth.processRefreshTokenResponse(as, client, response);
        assert.ok(tokens.refresh_token && tokens.refresh_token !== spent, "a new refresh token");
        assert.match(
          await toolResultText(await callTool(mcpUrl, tokens.access_token, "get_secret")),
          /The secret is: .+/,
        );

        const replay = await oauth.refreshTokenGrantRequest(as, client, clientAuth, spent, {
          additionalParameters: resource(),
          ...loopback,
        });
        await assert.rejects(oauth.processRefreshTokenResponse(as, client, replay), (error: unknown) => {
          assert.ok(error instanceof oauth.ResponseBodyError);
          assert.equal(error.status, 400);
          assert.equal(error.error, "invalid_grant");
          return true;
        });
        // A replayed refresh token means it leaked: the whole session is gone, the fresh tokens too.
        await assert.rejects(callTool(mcpUrl, tokens.access_token, "get_secret"), oauth.WWWAuthenticateChallengeError);
      });
    });
  }
});
