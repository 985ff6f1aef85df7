// Minimal real Better Auth server for authgate integration tests.
// See README.md. Env: PORT (required), BETTER_AUTH_SECRET (required),
// BASE_URL, COOKIE_PREFIX, REVOKE_URL, REVOKE_TOKEN (optional).
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { jwt } from "better-auth/plugins";
import { toNodeHandler } from "better-auth/node";

const PORT = Number(process.env.PORT);
if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  console.error("PORT must be set to a valid port number");
  process.exit(2);
}
const SECRET = process.env.BETTER_AUTH_SECRET;
if (!SECRET || SECRET.length < 32) {
  console.error("BETTER_AUTH_SECRET must be set (at least 32 characters)");
  process.exit(2);
}
const BASE_URL = process.env.BASE_URL || `http://127.0.0.1:${PORT}`;

// Called by Better Auth after a session row is deleted (sign-out, revoke...).
// Receives the deleted session row ({ id, token, userId, expiresAt, ... }).
async function notifyRevoked(session) {
  const url = process.env.REVOKE_URL;
  if (!url) return;
  try {
    const headers = { "content-type": "application/json" };
    if (process.env.REVOKE_TOKEN) headers.authorization = `Bearer ${process.env.REVOKE_TOKEN}`;
    const res = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify({ sid: session.id }),
      signal: AbortSignal.timeout(5000),
    });
    await res.arrayBuffer();
    if (!res.ok) console.error(`revoke hook: ${url} answered ${res.status}`);
  } catch (err) {
    console.error(`revoke hook: POST ${url} failed:`, err);
  }
}

export const auth = betterAuth({
  secret: SECRET,
  baseURL: BASE_URL,
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  // cookieCache stays off (the default), so get-session always reads the store.
  session: { cookieCache: { enabled: false } },
  // Better Auth's limiter is on by default when NODE_ENV=production; tests make many requests.
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  // The baseURL origin is always trusted; also accept any port on 127.0.0.1.
  trustedOrigins: ["http://127.0.0.1:*"],
  advanced: {
    // Keep the origin/CSRF check on even when NODE_ENV=test or TEST is set
    // (Better Auth would otherwise skip it), so behaviour is deterministic.
    disableOriginCheck: false,
    ...(process.env.COOKIE_PREFIX ? { cookiePrefix: process.env.COOKIE_PREFIX } : {}),
  },
  databaseHooks: {
    session: { delete: { after: async (session) => notifyRevoked(session) } },
  },
  plugins: [
    jwt({
      // definePayload receives ctx.context.session, i.e. { session, user }.
      jwt: { definePayload: ({ user, session }) => ({ ...user, sid: session.id }) },
    }),
  ],
});

const authHandler = toNodeHandler(auth);
let calls = { "get-session": 0, total: 0 };

const server = http.createServer((req, res) => {
  const path = (req.url || "/").split("?")[0];
  if (path === "/test/calls" && req.method === "GET") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(calls));
  }
  if (path === "/test/reset" && req.method === "POST") {
    calls = { "get-session": 0, total: 0 };
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(calls));
  }
  calls.total += 1;
  calls[path] = (calls[path] || 0) + 1;
  if (path === "/api/auth/get-session") calls["get-session"] += 1;
  authHandler(req, res).catch((err) => {
    console.error("auth handler error:", err);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});

server.listen(PORT, "127.0.0.1", () => {
  console.log(`listening ${PORT}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
