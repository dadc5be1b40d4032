-- wrk script of `couponcore bench http`: every request asks for a coupon for a random user
-- among USERS (env), and done() prints one JSON line with the figures the bench reads.
local users = tonumber(os.getenv("USERS") or "100000")
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(os.time() + tid * 7919)
end

function request()
  local body = string.format('{"user_id":"user-%d"}', math.random(1, users))
  return wrk.format("POST", nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"socket_errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
