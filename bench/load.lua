-- Mixed traffic for bench/load. Each request carries X-Request-Id "<kind>-<n>", which the
-- gateway echoes, so response() can count statuses per kind although responses of several
-- connections interleave. Rate per connection is bounded by delay() (LOAD_DELAY_MS).
--   reads      GET /v1/audiences/{1001..1005}[/insights|/uploads]    (never written here)
--   accounts   GET /v1/platform-accounts
--   create     POST /v1/audiences
--   update     PATCH /v1/audiences/{1006..1010}
--   activate   POST /v1/audiences/{1006..1010}/activations
-- Writes use other audiences than reads: a write evicts its audience, and the outage phase
-- shows that reads of cached audiences keep answering.

local token = os.getenv("LOAD_TOKEN")
local pause = tonumber(os.getenv("LOAD_DELAY_MS") or "10")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  n = 0
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

local function headers(kind, json)
  n = n + 1
  local h = { ["Authorization"] = "Bearer " .. token, ["X-Request-Id"] = kind .. "-" .. n }
  if json then h["Content-Type"] = "application/json" end
  return h
end

function request()
  local r = math.random(100)
  if r <= 75 then
    local id = 1000 + math.random(5)
    local views = { "", "", "", "/insights", "/uploads" }
    return wrk.format("GET", "/v1/audiences/" .. id .. views[math.random(#views)], headers("read"))
  elseif r <= 85 then
    return wrk.format("GET", "/v1/platform-accounts", headers("accounts"))
  elseif r <= 90 then
    return wrk.format("POST", "/v1/audiences", headers("create", true),
      '{"name":"load ' .. n .. '","description":"bench/load","campaignId":1}')
  elseif r <= 95 then
    local id = 1005 + math.random(5)
    return wrk.format("PATCH", "/v1/audiences/" .. id, headers("update", true),
      '{"name":"renamed ' .. n .. '"}')
  else
    local id = 1005 + math.random(5)
    return wrk.format("POST", "/v1/audiences/" .. id .. "/activations", headers("activate", true),
      '{"accountId":501,"name":"load segment","description":"bench/load",' ..
      '"startDate":"2030-01-01T00:00:00Z","endDate":"2030-02-01T00:00:00Z"}')
  end
end

function delay()
  return pause
end

function response(status, hdrs, body)
  local id = hdrs["x-request-id"] or hdrs["X-Request-Id"] or "unknown-0"
  local kind = id:match("^(%a+)-") or "unknown"
  local key = kind .. ":" .. status
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'LOAD {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"counts":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
