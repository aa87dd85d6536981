// Reference "floor" servers for the benchmark: they do no OAuth or MCP work at all, only
// what node:http must do to answer the same requests with the same status codes and
// similar body sizes. Plain JavaScript so they run on bare `node` with no loader.
//
//   node bench/floor-servers.mjs flow <port>   canned-response flow server
//   node bench/floor-servers.mjs 401  <port>   bare 401 responder
//
// The flow floor answers (the same requests as this server's flow, consent page included):
//   GET  /authorize?...      200 a page of the consent page's size whose form carries redirect_uri and state
//   POST /authorize          303 Location: <redirect_uri>?code=<fixed>&state=<state>&iss=<base>
//   POST /token              200 fixed token JSON (Cache-Control: no-store)
//   POST /mcp                200 fixed JSON-RPC tools/call result
//   GET  /.well-known/oauth-authorization-server   200 fixed metadata (readiness probe)
// It reads each request body to the end before answering (a real server has to).

import http from "node:http";

const [mode, portArg] = process.argv.slice(2);
const port = Number(portArg);
if (!["flow", "401"].includes(mode) || !Number.isInteger(port)) {
  console.error("usage: node floor-servers.mjs flow|401 <port>");
  process.exit(2);
}
const base = `http://127.0.0.1:${port}`;

// Fixed payloads roughly the size of what the real servers send.
const CODE = "c".repeat(8) + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_".repeat(4); // 264 chars
const JWT_LIKE = "x".repeat(36) + "." + "y".repeat(220) + "." + "z".repeat(43);
const TOKEN_BODY = JSON.stringify({
  access_token: JWT_LIKE,
  token_type: "Bearer",
  expires_in: 30,
  refresh_token: JWT_LIKE,
  scope: "mcp",
});
const MCP_BODY = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  result: {
    content: [{
      type: "text",
      text: JSON.stringify({ subject: "bench-user", secret: "the-answer-is-42", issuedAt: new Date(0).toISOString() }),
    }],
  },
});
const META_BODY = JSON.stringify({
  issuer: base,
  authorization_endpoint: `${base}/authorize`,
  token_endpoint: `${base}/token`,
  response_types_supported: ["code"],
  code_challenge_methods_supported: ["S256"],
});
const PAGE_TEXT = "<p>" + "An application asks to act as the demo user on this MCP server. ".repeat(20) + "</p>";
const UNAUTH_BODY = JSON.stringify({ error: "invalid_token", error_description: "Authorization required" });
const WWW_AUTH = `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"`;

function json(res, status, body, extra) {
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    "Access-Control-Allow-Origin": "*",
    ...extra,
  });
  res.end(body);
}

function drain(req, then) {
  req.on("data", () => {});
  req.on("end", then);
}

const flowHandler = (req, res) => {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  if (req.method === "GET" && path === "/authorize") {
    const params = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
    const redirect = params.get("redirect_uri");
    if (!redirect) return json(res, 400, '{"error":"invalid_request"}');
    const consent = Buffer.from(JSON.stringify([redirect, params.get("state") ?? ""])).toString("base64url");
    const page = `<!doctype html><title>Authorize access</title>${PAGE_TEXT}<form method="post" action="/authorize">` +
      `<input type="hidden" name="consent" value="${consent}"><button name="decision" value="approve">Approve</button>`;
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Content-Length": Buffer.byteLength(page) });
    return res.end(page);
  }
  if (req.method === "POST" && path === "/authorize") {
    let body = "";
    req.setEncoding("utf8").on("data", (chunk) => (body += chunk));
    return req.on("end", () => {
      const consent = new URLSearchParams(body).get("consent") ?? "";
      const [redirect, state] = JSON.parse(Buffer.from(consent, "base64url").toString() || "[]");
      if (!redirect) return json(res, 400, '{"error":"invalid_request"}');
      const loc = `${redirect}${redirect.includes("?") ? "&" : "?"}code=${CODE}&state=${encodeURIComponent(state)}` +
        `&iss=${encodeURIComponent(base)}`;
      res.writeHead(303, { Location: loc, "Content-Length": 0 });
      res.end();
    });
  }
  if (req.method === "POST" && path === "/token") {
    return drain(req, () => json(res, 200, TOKEN_BODY, { "Cache-Control": "no-store" }));
  }
  if (req.method === "POST" && path === "/mcp") return drain(req, () => json(res, 200, MCP_BODY));
  if (req.method === "GET" && path === "/.well-known/oauth-authorization-server") return json(res, 200, META_BODY);
  json(res, 404, '{"error":"not_found"}');
};

// The 401 floor does not even look at the request: it answers every request with the
// protected-tool challenge (node:http still parses and discards the request body).
const unauthHandler = (req, res) => {
  if (req.method === "GET") return json(res, 200, META_BODY); // readiness probe
  json(res, 401, UNAUTH_BODY, { "WWW-Authenticate": WWW_AUTH, "Access-Control-Expose-Headers": "WWW-Authenticate" });
};

const server = http.createServer(mode === "flow" ? flowHandler : unauthHandler);
server.keepAliveTimeout = 5000;
server.listen(port, "127.0.0.1");
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
