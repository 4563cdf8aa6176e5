-- wrk script for bench/throughput.py: cycles through prepared AdmissionReview bodies.
--
--   wrk -t2 -c16 -d15s -s bench/wrk_reviews.lua https://127.0.0.1:PORT -- BODIES.jsonl MODE NONCE
--
-- BODIES.jsonl: one review per line whose first `"uid":"` is request.uid (36 characters; bench/reviews.py).
-- MODE: "split" sends each body to /mutate and then to /validate (the order of the API server, same uid for
-- the pair); "validate" sends it twice to /validate (same shape of traffic for a server without /mutate).
-- Every pair gets a fresh uid (NONCE, thread, counter), so event ids (uuid5 of uid and phase) never repeat.
-- Each thread starts at another place in the file. done() prints one line "WRKJSON {...}" for the caller.

local bodies = {}
local mode = "split"
local nonce = 0
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
local thread_count = 0

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

function init(args)
   local path = args[1]
   mode = args[2] or "split"
   nonce = tonumber(args[3] or "0", 16) or 0
   for line in io.lines(path) do
      local _, last = line:find('"uid":"', 1, true)
      if last then
         bodies[#bodies + 1] = { line:sub(1, last), line:sub(last + 37) }
      end
   end
   if #bodies == 0 then
      error("no bodies in " .. tostring(path))
   end
   counter = ((tid or 0) * 2 * 37) % (2 * #bodies)
end

function request()
   local pair = math.floor(counter / 2)
   local body = bodies[(pair % #bodies) + 1]
   local path = "/validate"
   if mode == "split" and counter % 2 == 0 then
      path = "/mutate"
   end
   counter = counter + 1
   local uid = string.format("%08x-%04x-4000-8000-%012x", nonce, tid or 0, pair)
   return wrk.format("POST", path, headers, body[1] .. uid .. body[2])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
