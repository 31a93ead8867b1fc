"""Latency of the read endpoints, one request at a time, for a given number of seconds.

usage: read_probe.py URL SECONDS OUT.json

Asks /health (no state: the machine's scheduling alone), a customer lookup,
a customer's recommendations, /metrics and a one-row SQL query in turn, and
writes count, p50, p99 and max per endpoint. Customer ids come from the
server itself (the first 200 of the customers table). Uses only the Python
standard library.
"""
import http.client, json, sys, time, urllib.parse
url, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
u = urllib.parse.urlparse(url)
def conn():
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)
c = conn()
ids = []
deadline = time.time() + 30
while len(ids) < 50 and time.time() < deadline:
    c.request("POST", "/v1/sql", body="SELECT customer_id FROM customers LIMIT 200")
    r = c.getresponse(); body = r.read()
    if r.status == 200:
        ids = [row["customer_id"] for row in json.loads(body)]
    time.sleep(0.2)
probes = {
    "health": lambda i: ("GET", "/health", None),
    "lookup": lambda i: ("GET", "/v1/customers/" + urllib.parse.quote(ids[i % len(ids)]), None),
    "recommendations": lambda i: ("GET", "/v1/customers/" + urllib.parse.quote(ids[i % len(ids)]) + "/recommendations", None),
    "metrics": lambda i: ("GET", "/metrics", None),
    "sql_point": lambda i: ("POST", "/v1/sql", f"SELECT clv FROM customers WHERE customer_id = '{ids[i % len(ids)]}'"),
}
lat = {k: [] for k in probes}
end = time.time() + seconds
i = 0
while time.time() < end:
    for name, make in probes.items():
        method, path, body = make(i)
        t = time.perf_counter()
        c.request(method, path, body=body, headers={})
        r = c.getresponse(); r.read()
        lat[name].append((time.perf_counter() - t) * 1000)
        if r.status != 200:
            print(name, r.status, file=sys.stderr)
    i += 1
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
res = {k: {"count": len(v), "p50_ms": round(pct(v, .5), 2), "p99_ms": round(pct(v, .99), 2), "max_ms": round(max(v), 2)} for k, v in lat.items() if v}
json.dump(res, open(out, "w"), indent=1)
for k, v in res.items():
    print(f"{k:16} n={v['count']:5}  p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms  max {v['max_ms']:7.2f} ms")
