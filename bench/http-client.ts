// A small keep-alive HTTP/1.1 client over raw TCP sockets, written for load generation.
//
// Why not fetch or node:http? On a 2-core machine the load generator shares the CPU with
// the server under test, so every microsecond the client spends is a microsecond the
// server cannot use. This client does one write per request and a minimal response parse
// (status line, the few headers we need, Content-Length or chunked bodies).
// One request at a time per connection (no pipelining), like a browser or an MCP client.

import net from "node:net";

export interface HttpResponse {
  status: number;
  /** Lower-cased header names; repeated headers keep the last value. */
  headers: Record<string, string>;
  body: string;
}

interface Pending {
  resolve: (r: HttpResponse) => void;
  reject: (e: Error) => void;
}

const CRLF2 = Buffer.from("\r\n\r\n");

export class HttpConnection {
  private socket: net.Socket | null = null;
  private connecting: Promise<void> | null = null;
  private pending: Pending | null = null;
  private buf: Buffer = Buffer.alloc(0);
  // parse state for the current response
  private head: { status: number; headers: Record<string, string> } | null = null;
  private bodyParts: Buffer[] = [];
  private remaining = -1; // Content-Length bytes still expected; -1 = unknown
  private chunked = false;
  private closeDelimited = false;
  private closed = false;

  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  private connect(): Promise<void> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve();
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: this.host, port: this.port, noDelay: true });
      const onError = (e: Error) => {
        this.connecting = null;
        reject(e);
      };
      s.once("error", onError);
      s.once("connect", () => {
        s.off("error", onError);
        this.socket = s;
        this.connecting = null;
        this.buf = Buffer.alloc(0);
        s.on("data", (d: Buffer) => this.onData(d));
        s.on("error", (e) => this.fail(e));
        s.on("close", () => this.onClose());
        resolve();
      });
    });
    return this.connecting;
  }

  /** Sends one request and resolves with the full response. */
  async request(
    method: string,
    path: string,
    headers: Record<string, string> = {},
    body?: string,
  ): Promise<HttpResponse> {
    if (this.closed) throw new Error("connection closed by caller");
    if (this.pending) throw new Error("request already in flight on this connection");
    await this.connect();
    let head = `${method} ${path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n`;
    for (const k in headers) head += `${k}: ${headers[k]}\r\n`;
    if (body !== undefined) head += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
    head += "\r\n";
    return new Promise<HttpResponse>((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket!.write(body === undefined ? head : head + body);
    });
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = null;
  }

  private resetParse(): void {
    this.head = null;
    this.bodyParts = [];
    this.remaining = -1;
    this.chunked = false;
    this.closeDelimited = false;
  }

  private fail(e: Error): void {
    const p = this.pending;
    this.pending = null;
    this.resetParse();
    this.socket?.destroy();
    this.socket = null;
    p?.reject(e);
  }

  private onClose(): void {
    this.socket = null;
    if (!this.pending) return;
    if (this.head && this.closeDelimited) {
      if (this.buf.length) this.bodyParts.push(this.buf);
      this.buf = Buffer.alloc(0);
      this.finish();
      return;
    }
    this.fail(new Error("socket closed before the response was complete"));
  }

  private finish(): void {
    const p = this.pending!;
    const res: HttpResponse = {
      status: this.head!.status,
      headers: this.head!.headers,
      body: this.bodyParts.length === 1
        ? this.bodyParts[0].toString("utf8")
        : Buffer.concat(this.bodyParts).toString("utf8"),
    };
    const mustClose = (res.headers["connection"] ?? "").toLowerCase() === "close";
    this.pending = null;
    this.resetParse();
    if (mustClose) {
      this.socket?.destroy();
      this.socket = null;
      this.buf = Buffer.alloc(0);
    }
    p.resolve(res);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    try {
      this.parse();
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private parse(): void {
    for (;;) {
      if (!this.pending) {
        if (this.buf.length) throw new Error("unexpected bytes with no request in flight");
        return;
      }
      if (!this.head) {
        const end = this.buf.indexOf(CRLF2);
        if (end < 0) return;
        const lines = this.buf.toString("latin1", 0, end).split("\r\n");
        this.buf = this.buf.subarray(end + 4);
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
        if (!m) throw new Error(`bad status line: ${lines[0].slice(0, 80)}`);
        const headers: Record<string, string> = {};
        for (let i = 1; i < lines.length; i++) {
          const c = lines[i].indexOf(":");
          if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
        }
        const status = Number(m[1]);
        if (status >= 100 && status < 200) continue; // interim response, skip
        this.head = { status, headers };
        if ((headers["transfer-encoding"] ?? "").toLowerCase().includes("chunked")) this.chunked = true;
        else if (headers["content-length"] !== undefined) this.remaining = Number(headers["content-length"]);
        else if (status === 204 || status === 304) this.remaining = 0;
        else this.closeDelimited = true;
      }
      if (this.closeDelimited) return; // wait for close
      if (!this.chunked) {
        if (this.buf.length < this.remaining) return;
        this.bodyParts.push(this.buf.subarray(0, this.remaining));
        this.buf = this.buf.subarray(this.remaining);
        this.finish();
        continue;
      }
      // chunked: consume as many complete chunks as are buffered
      for (;;) {
        const le = this.buf.indexOf("\r\n");
        if (le < 0) return;
        const size = parseInt(this.buf.toString("latin1", 0, le), 16);
        if (!Number.isFinite(size)) throw new Error("bad chunk size");
        if (size === 0) {
          // last chunk; skip optional trailers up to the blank line
          const te = this.buf.indexOf(CRLF2, le - 2 >= 0 ? le - 2 : 0);
          if (te < 0) return;
          this.buf = this.buf.subarray(te + 4);
          this.finish();
          break;
        }
        if (this.buf.length < le + 2 + size + 2) return;
        this.bodyParts.push(this.buf.subarray(le + 2, le + 2 + size));
        this.buf = this.buf.subarray(le + 2 + size + 2);
      }
    }
  }
}

/** A free TCP port on loopback, for a server about to be started. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}
