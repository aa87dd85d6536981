// server.ts's request handler behind a listen queue of the length given: `tsx bench/backlog-server.ts 511`,
// on PORT (loopback). server.ts listens with a backlog of 4096; this lets bench/overload.ts put Node's
// default, 511, beside it with nothing else changed (the same handler, timeouts and connection checks).

import { createServer } from "node:http";
import process from "node:process";
import { createHandler } from "../server.ts";

const backlog = Number(process.argv[2]);
if (!Number.isInteger(backlog) || backlog < 1) throw new Error("usage: tsx bench/backlog-server.ts <backlog>");
const handler = await createHandler({});
const server = createServer({ connectionsCheckingInterval: 1000 }, handler);
server.headersTimeout = 10_000; // as startServer sets them
server.requestTimeout = 10_000;
server.listen({ port: Number(process.env.PORT), host: "127.0.0.1", backlog }, () => {
  console.log(`listening on ${process.env.PORT}, backlog ${backlog}`);
});
