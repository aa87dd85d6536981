/**
 * Interop: the official MCP TypeScript SDK, 1.x generation (`@modelcontextprotocol/sdk`), 2025 handshake
 * era, with an OAuth client provider — once with a Client ID Metadata Document URL as client_id, once
 * with dynamic client registration. The 1.x `finishAuth` takes only the code: it does not check the
 * RFC 9207 `iss` of the callback (the shared flow still checks the server sends it).
 */
import { describe } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type OAuthClientProvider,
  type OAuthDiscoveryState,
  UnauthorizedError,
} from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientInformationMixed, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";
import { type ClientContext, type ClientUnderTest, describeLazyAuthFlow, toolText } from "./clients.ts";

function sdkV1Client(
  { mcpUrl, provider, fetchLog }: ClientContext<OAuthTokens, OAuthClientInformationMixed, OAuthDiscoveryState>,
): ClientUnderTest {
  const authProvider: OAuthClientProvider = provider;
  const client = new Client({ name: "interop-sdk-v1", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider, fetch: fetchLog.fetch });
  return {
    connect: () => client.connect(transport),
    toolNames: async () => (await client.listTools()).tools.map((tool) => tool.name),
    call: async (name) => toolText(await client.callTool({ name, arguments: {} })),
    finishAuth: (callback) => transport.finishAuth(callback.searchParams.get("code") ?? ""),
    isUnauthorized: (error) => error instanceof UnauthorizedError,
    close: () => client.close(),
  };
}

function handshakeEra(_client: ClientUnderTest, fetchLog: { mcpMethods(): string[] }) {
  assert.deepEqual(
    fetchLog.mcpMethods().slice(0, 2),
    ["initialize", "notifications/initialized"],
    "the 2025 handshake",
  );
}

// The two suites run side by side: each has its own server, and most of their time is spent waiting for an
// access token to expire.
describe("@modelcontextprotocol/sdk 1.x through the lazy flow", { concurrency: true }, () => {
  for (const cimd of [true, false]) {
    describeLazyAuthFlow(
      `@modelcontextprotocol/sdk 1.x, handshake era, ${cimd ? "Client ID Metadata Document" : "dynamic registration"}`,
      {
        cimd,
        makeClient: sdkV1Client,
        afterConnect: handshakeEra,
      },
    );
  }
});
