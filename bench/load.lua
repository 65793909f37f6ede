-- wrk script of bench/load.py: POST the body in BENCH_BODY on every request and count the
-- answers by status (wrk itself only counts "non-2xx"); done() prints what load.py parses.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    print(string.format("STATUS %d %d", status, count))
  end
  for _, kind in ipairs({"connect", "read", "write", "timeout"}) do
    print(string.format("ERRORS %s %d", kind, summary.errors[kind]))
  end
  print(string.format("REQUESTS %d", summary.requests))
  print(string.format("DURATION_US %d", summary.duration))
  print(string.format("P50_US %d", latency:percentile(50)))
  print(string.format("P99_US %d", latency:percentile(99)))
end
