// Reference "floor" servers for the benchmark: they do no OAuth or MCP work beyond what their name says,
// only what node:http must do to answer the same requests with the same status codes and similar body
// sizes. Plain JavaScript, so they run unchanged on node, deno and bun with no loader.
//
//   node bench/floor-servers.mjs flow <port>   canned-response flow server
//   node bench/floor-servers.mjs jose <port>   the flow with the token operations of server.ts's design
//   node bench/floor-servers.mjs 401  <port>   bare 401 responder
//   node bench/floor-servers.mjs body401 <port> 401 responder that reads and parses the JSON-RPC body first
//
// The flow floor answers (the same requests as this server's flow, consent page included):
//   GET  /authorize?...      200 a page of the consent page's size whose form carries redirect_uri and state
//   POST /authorize          303 Location: <redirect_uri>?code=<fixed>&state=<state>&iss=<base>
//   POST /token              200 fixed token JSON (Cache-Control: no-store)
//   POST /mcp                200 fixed JSON-RPC tools/call result
//   GET  /.well-known/oauth-authorization-server   200 fixed metadata (readiness probe)
// It reads each request body to the end before answering (a real server has to).
//
// The jose floor answers the same requests, and does on them exactly the HS256 operations server.ts does
// per sign-in, with payloads of the same claims: the consent page signs the checked request as a consent
// token; the POST verifies it and signs the code (the consent's jti); /token verifies the code and signs
// the access and refresh tokens; /mcp verifies the access token (issuer, audience, typ). Seven operations,
// one CryptoKey imported once. Nothing else: no checks, no single-use memory, no PKCE, no trace, no page
// escaping. Whatever server.ts spends beyond it is the cost of its rules and its readability.

import { randomBytes } from "node:crypto";
import http from "node:http";
import process from "node:process";

const [mode, portArg] = process.argv.slice(2);
const port = Number(portArg);
if (!["flow", "jose", "401", "body401"].includes(mode) || !Number.isInteger(port)) {
  console.error("usage: node floor-servers.mjs flow|jose|401|body401 <port>");
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

// ---- the jose floor: the seven HS256 operations of a sign-in, as server.ts signs and checks them
// imported in this mode only, so that the other floors start as fast as bare node:http
const { jwtVerify, SignJWT } = mode === "jose" ? await import("jose") : {};
const key = mode === "jose"
  ? await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode("bench-floor-secret-0123456789abcdefghijklmnopqrstuvwxyz"),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  )
  : undefined;
const MEM = randomBytes(16).toString("base64url"); // the memory epoch server.ts adds to every token but a client's
const id = () => randomBytes(16).toString("base64url");
const sign = (typ, claims, ttl) => {
  const jwt = new SignJWT({ ...claims, mem: MEM }).setProtectedHeader({ alg: "HS256", typ }).setIssuer(base)
    .setIssuedAt();
  return (ttl === undefined ? jwt : jwt.setExpirationTime(Math.ceil(Date.now() / 1000) + ttl)).sign(key);
};
const verify = (typ, token, audience) =>
  jwtVerify(token, key, { algorithms: ["HS256"], typ, issuer: base, audience }).then((v) => v.payload, () => null);
const CONSENT_PAGE_TEXT = "<p>" + "An application asks to act as the demo user on this MCP server. ".repeat(22) +
  "</p>";

function readAll(req, then) {
  let body = "";
  req.setEncoding("utf8").on("data", (chunk) => (body += chunk));
  req.on("end", () => then(body));
}

const joseHandler = (req, res) => {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const fail = (what) => json(res, 400, JSON.stringify({ error: "invalid_request", error_description: what }));
  if (req.method === "GET" && path === "/authorize") {
    const p = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
    const request = {
      client_id: p.get("client_id") ?? "",
      client_name: "lazy-auth bench",
      redirect_uri: p.get("redirect_uri") ?? "",
      scope: p.get("scope") ?? "mcp",
      resource: p.get("resource") ?? `${base}/mcp`,
      code_challenge: p.get("code_challenge") ?? "",
      ...(p.has("state") && { state: p.get("state") }),
    };
    return sign("consent+jwt", { ...request, jti: id() }, 600).then((consent) => {
      const page = `<!doctype html><title>Authorize access</title>${CONSENT_PAGE_TEXT}` +
        `<form method="post" action="${base}/authorize"><input type="hidden" name="consent" value="${consent}">` +
        `<button name="decision" value="approve">Approve</button>`;
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Content-Length": Buffer.byteLength(page) });
      res.end(page);
    });
  }
  if (req.method === "POST" && path === "/authorize") {
    return readAll(req, async (body) => {
      const consent = await verify("consent+jwt", new URLSearchParams(body).get("consent") ?? "");
      if (!consent) return fail("consent");
      const { client_id, redirect_uri, code_challenge, scope, resource, jti } = consent;
      const code = await sign("code+jwt", { client_id, redirect_uri, code_challenge, scope, resource, jti }, 300);
      const loc = `${redirect_uri}?code=${code}&state=${encodeURIComponent(consent.state ?? "")}` +
        `&iss=${encodeURIComponent(base)}`;
      res.writeHead(303, { Location: loc, "Content-Length": 0 });
      res.end();
    });
  }
  if (req.method === "POST" && path === "/token") {
    return readAll(req, async (body) => {
      const code = await verify("code+jwt", new URLSearchParams(body).get("code") ?? "");
      if (!code) return fail("code");
      const session = { sid: code.jti, client_id: code.client_id, scope: "mcp" };
      const now = Math.ceil(Date.now() / 1000);
      const [access, refresh] = await Promise.all([
        sign("at+jwt", { sub: "demo-user", aud: code.resource, jti: id(), ...session }, 30),
        sign("refresh+jwt", { ...session, resource: code.resource, jti: id(), exp: now + 300, session_end: now + 300 }),
      ]);
      const answer = {
        access_token: access,
        token_type: "Bearer",
        expires_in: 30,
        refresh_token: refresh,
        scope: "mcp",
      };
      json(res, 200, JSON.stringify(answer), { "Cache-Control": "no-store" });
    });
  }
  if (req.method === "POST" && path === "/mcp") {
    return drain(req, async () => {
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "";
      if (!(await verify("at+jwt", bearer, `${base}/mcp`))) return json(res, 401, UNAUTH_BODY);
      json(res, 200, MCP_BODY);
    });
  }
  if (req.method === "GET" && path === "/.well-known/oauth-authorization-server") return json(res, 200, META_BODY);
  json(res, 404, '{"error":"not_found"}');
};

// The 401 floor does not even look at the request: it answers every request with the
// protected-tool challenge (node:http still parses and discards the request body).
const unauthHandler = (req, res) => {
  if (req.method === "GET") return json(res, 200, META_BODY); // readiness probe
  json(res, 401, UNAUTH_BODY, { "WWW-Authenticate": WWW_AUTH, "Access-Control-Expose-Headers": "WWW-Authenticate" });
};

// The body-reading 401 floor is the least a lazy-auth server does on that path: it must read the JSON-RPC
// body to learn which tool is called before it can say that this one needs a token. It reads the body, parses
// it, and answers the challenge with the request's id; no other check, no trace.
const bodyUnauthHandler = (req, res) => {
  if (req.method === "GET") return json(res, 200, META_BODY); // readiness probe
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const message = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const answer = JSON.stringify({
      jsonrpc: "2.0",
      id: message.id,
      error: { code: -32001, message: "Auth required" },
    });
    json(res, 401, answer, { "WWW-Authenticate": WWW_AUTH, "Access-Control-Expose-Headers": "WWW-Authenticate" });
  });
};

const handlers = { flow: flowHandler, jose: joseHandler, "401": unauthHandler, body401: bodyUnauthHandler };
const server = http.createServer(handlers[mode]);
server.keepAliveTimeout = 5000;
server.listen(port, "127.0.0.1");
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
