/**
 * The official MCP TypeScript SDK, 2.x generation (`@modelcontextprotocol/client`), behind the small
 * adapter the shared lazy-auth flow drives. Shared by the handshake-era and the 2026-07-28 suites.
 */
import {
  Client,
  IssuerMismatchError,
  type OAuthClientProvider,
  type OAuthDiscoveryState,
  type StoredOAuthClientInformation,
  type StoredOAuthTokens,
  StreamableHTTPClientTransport,
  UnauthorizedError,
  type VersionNegotiationMode,
} from "@modelcontextprotocol/client";
import { type ClientContext, type ClientUnderTest, toolText } from "./clients.ts";

export type SdkV2Context = ClientContext<StoredOAuthTokens, StoredOAuthClientInformation, OAuthDiscoveryState>;

export interface SdkV2ClientUnderTest extends ClientUnderTest {
  client: Client;
}

/** A 2.x client with the test provider; `mode` is the version negotiation (the SDK's default is "legacy"). */
export function sdkV2Client(
  { mcpUrl, provider, fetchLog }: SdkV2Context,
  mode?: VersionNegotiationMode,
): SdkV2ClientUnderTest {
  const authProvider: OAuthClientProvider = provider;
  const client = new Client(
    { name: "interop-sdk-v2", version: "2.0.0" },
    mode === undefined ? {} : { versionNegotiation: { mode } },
  );
  const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider, fetch: fetchLog.fetch });
  const code = (callback: URL) => callback.searchParams.get("code") ?? "";
  return {
    client,
    connect: () => client.connect(transport),
    toolNames: async () => (await client.listTools()).tools.map((tool) => tool.name),
    call: async (name) => toolText(await client.callTool({ name, arguments: {} })),
    // The whole callback query: the SDK reads code and iss from it and checks iss (RFC 9207).
    finishAuth: (callback) => transport.finishAuth(callback.searchParams),
    isUnauthorized: (error) => error instanceof UnauthorizedError,
    close: () => client.close(),
    validatesIss: {
      withTamperedIss: (callback) => transport.finishAuth(code(callback), "https://attacker.example"),
      withoutIss: (callback) => transport.finishAuth(code(callback)),
      isIssuerMismatch: (error) => error instanceof IssuerMismatchError,
    },
  };
}
