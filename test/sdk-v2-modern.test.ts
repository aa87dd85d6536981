/**
 * Interop: `@modelcontextprotocol/client` 2.x speaking MCP 2026-07-28 (the stateless era: server/discover,
 * per-request _meta and routing headers, no initialize), through the lazy-auth flow — pinned to
 * 2026-07-28 and in "auto" negotiation, each with a Client ID Metadata Document URL and with dynamic
 * client registration.
 */
import { describe } from "node:test";
import assert from "node:assert/strict";
import type { VersionNegotiationMode } from "@modelcontextprotocol/client";
import { describeLazyAuthFlow, type FetchLog } from "./clients.ts";
import { sdkV2Client, type SdkV2ClientUnderTest, type SdkV2Context } from "./sdk-v2-client.ts";

const MODERN = "2026-07-28";

function modernEra(client: SdkV2ClientUnderTest, fetchLog: FetchLog) {
  assert.equal(client.client.getProtocolEra(), "modern");
  assert.equal(client.client.getNegotiatedProtocolVersion(), MODERN);
  const methods = fetchLog.mcpMethods();
  assert.equal(methods[0], "server/discover", "the first request is the discover probe");
  assert.ok(!methods.includes("initialize"), "no initialize handshake");
  const probe = fetchLog.exchanges.find((e) => e.url.pathname === "/mcp")!;
  assert.equal(probe.headers.get("mcp-protocol-version"), MODERN);
  assert.equal(probe.status, 200);
}

const modes: [string, VersionNegotiationMode][] = [[`pinned to ${MODERN}`, { pin: MODERN }], [
  "auto negotiation",
  "auto",
]];
// The four suites run side by side: each has its own server, and most of their time is spent waiting for an
// access token to expire.
describe("@modelcontextprotocol/client 2.x, 2026-07-28, through the lazy flow", { concurrency: true }, () => {
  for (const [label, mode] of modes) {
    for (const cimd of [true, false]) {
      describeLazyAuthFlow(
        `@modelcontextprotocol/client 2.x, ${label}, ${cimd ? "Client ID Metadata Document" : "dynamic registration"}`,
        {
          cimd,
          makeClient: (context: SdkV2Context) => sdkV2Client(context, mode),
          afterConnect: (client, fetchLog) => modernEra(client as SdkV2ClientUnderTest, fetchLog),
        },
      );
    }
  }
});
