-- wrk script for bench/soak.sh: cycles through valid, invalid, cross-user and malformed requests,
-- counts answers by status, and stops after SOAK_REQUESTS responses (single thread: run wrk -t1).
local token = os.getenv("TOKEN_ALICE")
local forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
local limit = tonumber(os.getenv("SOAK_REQUESTS") or "1000000")
local requests
local kinds = { "valid", "valid+spoofed-header", "invalid-token", "no-token", "cross-user",
                "dot-segment", "encoded-slash", "no-route" }

init = function(args)
  local auth = "Bearer " .. token
  requests = {
    wrk.format("GET", "/api/alice/tasks", { Authorization = auth }),
    wrk.format("GET", "/api/alice/tasks/7", { Authorization = auth, ["X-User-Id"] = "bob", ["x_user_id"] = "bob" }),
    wrk.format("GET", "/api/alice/tasks", { Authorization = "Bearer " .. forged }),
    wrk.format("GET", "/api/alice/tasks", {}),
    wrk.format("GET", "/api/bob/tasks", { Authorization = auth }),
    wrk.format("GET", "/api/alice/../bob/tasks", { Authorization = auth }),
    wrk.format("GET", "/api/alice%2f..%2fbob/tasks", { Authorization = auth }),
    wrk.format("GET", "/admin", { Authorization = auth }),
  }
end

local sent = 0
request = function()
  sent = sent + 1
  return requests[(sent % #requests) + 1]
end

local counts = {}
local total = 0
local reported = false

local function report()
  if reported then return end
  reported = true
  local line = "soak-statuses"
  for status, n in pairs(counts) do line = line .. " " .. status .. "=" .. n end
  io.write(line .. " total=" .. total .. "\n")
  io.stdout:flush() -- soak.sh polls for this line while wrk runs
end

response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  total = total + 1
  if total >= limit then
    report()
    wrk.thread:stop()
  end
end

done = function(summary, latency, requests)
  io.write(string.format("soak-summary requests=%d errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
