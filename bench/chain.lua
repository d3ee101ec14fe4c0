-- Per-thread refresh-token chain: one connection per thread, each response's token used next.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("rt", tokens[counter])
end
local i = 0
function request()
  i = i + 1
  local entity = ""
  if os.getenv("SWITCH") == "1" then
    if i % 2 == 0 then entity = "&legal_entity_id=acme" else entity = "&legal_entity_id=globex" end
  end
  return wrk.format("POST", "/oauth/token", {["Content-Type"] = "application/x-www-form-urlencoded"},
    "grant_type=refresh_token&client_id=storefront&refresh_token=" .. rt .. entity)
end
function response(status, headers, body)
  local t = body:match('"refresh_token":"([^"]+)"')
  if t then rt = t end
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.1f %.2f %.2f %.2f\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
