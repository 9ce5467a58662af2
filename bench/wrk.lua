-- wrk script shared by bench/run: optional method/body from the environment, and one JSON
-- summary line (prefixed "BENCH ") at the end so the caller never parses wrk's text.
--   WRK_METHOD=POST WRK_BODY='{"a":1}' wrk -s bench/wrk.lua ...
-- With WRK_IDS=N the requests walk through N audiences: /v1/audiences/<1001 + k mod N>
-- (WRK_PREFIX changes the path before the id), to fill the cache with N entries.
-- With WRK_REQUESTS=N (one wrk thread) wrk stops once N responses have come back
-- (bench/profile: a fixed amount of work under valgrind).

local method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
if method then wrk.method = method end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local ids = tonumber(os.getenv("WRK_IDS") or "")
if ids then
  local prefix = os.getenv("WRK_PREFIX") or "/v1/audiences/"
  local k = 0
  request = function()
    local path = prefix .. tostring(1001 + (k % ids))
    k = k + 1
    return wrk.format(nil, path)
  end
end

local stop_after = tonumber(os.getenv("WRK_REQUESTS") or "")
if stop_after then
  local answered = 0
  response = function(status, headers, body)
    answered = answered + 1
    if answered >= stop_after then wrk.thread:stop() end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d,' ..
    '"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.stdev, latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
