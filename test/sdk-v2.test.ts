/**
 * Interop: `@modelcontextprotocol/client` 2.x in its default version negotiation ("legacy": the 2025
 * initialize handshake), through the lazy-auth flow — with a Client ID Metadata Document URL as
 * client_id, and with dynamic client registration. The 2.x client checks the callback's RFC 9207 `iss`.
 */
import { describe } from "node:test";
import assert from "node:assert/strict";
import { describeLazyAuthFlow, type FetchLog } from "./clients.ts";
import { sdkV2Client, type SdkV2ClientUnderTest, type SdkV2Context } from "./sdk-v2-client.ts";

function handshakeEra(client: SdkV2ClientUnderTest, fetchLog: FetchLog) {
  assert.deepEqual(
    fetchLog.mcpMethods().slice(0, 2),
    ["initialize", "notifications/initialized"],
    "the 2025 handshake, no discover probe",
  );
  assert.equal(client.client.getProtocolEra(), "legacy");
  assert.equal(client.client.getNegotiatedProtocolVersion(), "2025-11-25");
}

// The two suites run side by side: each has its own server, and most of their time is spent waiting for an
// access token to expire.
describe("@modelcontextprotocol/client 2.x, handshake era, through the lazy flow", { concurrency: true }, () => {
  for (const cimd of [true, false]) {
    describeLazyAuthFlow(
      `@modelcontextprotocol/client 2.x, default (handshake) negotiation, ${
        cimd ? "Client ID Metadata Document" : "dynamic registration"
      }`,
      {
        cimd,
        makeClient: (context: SdkV2Context) => sdkV2Client(context),
        afterConnect: (client, fetchLog) => handshakeEra(client as SdkV2ClientUnderTest, fetchLog),
      },
    );
  }
});
