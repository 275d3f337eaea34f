#!/usr/bin/env python3
"""Helper for registry-bench.sh (stdlib only).

Subcommands:
  freeport N                         print N free loopback TCP ports
  put-tags HOSTPORT REPO MANIFEST N  PUT MANIFEST under tags t0000.. on one keep-alive
                                     connection; prints elapsed seconds
  push HOSTPORT REPO FILE DIGEST CHUNK
                                     push FILE as blob DIGEST on one keep-alive connection:
                                     POST, then PATCHes of CHUNK bytes with Content-Range and a
                                     closing PUT without body (CHUNK 0: POST + one PUT carrying
                                     the whole file); prints elapsed seconds
  wrk FILE                           parse `wrk --latency` output: "rps p99_ms non2xx sockerr requests"
  median V...                        median of the values
  table RESULTS                      render the comparison table from key=value lines
  throttle PORT TARGET_PORT MIBS     TCP proxy on 127.0.0.1:PORT to 127.0.0.1:TARGET_PORT that
                                     sends the target's answers at most MIBS MiB/s per
                                     connection (a remote upstream, for mirror-bench.sh)
"""

import http.client
import re
import socket
import statistics
import sys
import time

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def freeport(n):
    socks, ports = [], []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


def put_tags(hostport, repo, manifest_path, count):
    host, port = hostport.rsplit(":", 1)
    body = open(manifest_path, "rb").read()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": DOCKER_MANIFEST, "Content-Length": str(len(body))}
    t0 = time.perf_counter()
    for i in range(int(count)):
        conn.request("PUT", f"/v2/{repo}/manifests/t{i:05d}", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            sys.exit(f"PUT tag t{i:05d}: HTTP {resp.status}")
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
    elapsed = time.perf_counter() - t0
    conn.close()
    print(f"{elapsed:.6f}")


def push(hostport, repo, path, digest, chunk):
    import mmap
    host, port = hostport.rsplit(":", 1)
    chunk = int(chunk)
    with open(path, "rb") as f:
        data = memoryview(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
    size = len(data)
    conn = http.client.HTTPConnection(host, int(port), timeout=900)

    def call(method, url, body=None, headers=None, want=202):
        conn.putrequest(method, url, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body) if body is not None else 0))
        conn.endheaders()
        if body is not None:
            conn.sock.sendall(body)  # straight from the mapped file, no copy in Python
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != want:
            sys.exit(f"{method} {url}: HTTP {resp.status} {text[:300]!r}")
        return resp

    octets = {"Content-Type": "application/octet-stream"}
    t0 = time.perf_counter()
    loc = call("POST", f"/v2/{repo}/blobs/uploads/").getheader("Location")
    path_only = re.sub(r"^https?://[^/]+", "", loc)
    sep = "&" if "?" in path_only else "?"
    if chunk <= 0:
        call("PUT", f"{path_only}{sep}digest={digest}", data, octets, want=201)
    else:
        for start in range(0, size, chunk):
            part = data[start:start + chunk]
            headers = dict(octets, **{"Content-Range": f"{start}-{start + len(part) - 1}"})
            loc = call("PATCH", path_only, part, headers).getheader("Location") or path_only
            path_only = re.sub(r"^https?://[^/]+", "", loc)
        sep = "&" if "?" in path_only else "?"
        call("PUT", f"{path_only}{sep}digest={digest}", want=201)
    elapsed = time.perf_counter() - t0
    conn.close()
    print(f"{elapsed:.6f}")


def to_ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        raise ValueError(v)
    x, unit = float(m.group(1)), m.group(2)
    return x * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    print(rps, f"{p99:.3f}", int(non2xx.group(1)) if non2xx else 0,
          sum(map(int, sockerr.groups())) if sockerr else 0, total.group(1) if total else 0)


def median(values):
    print(f"{statistics.median(float(v) for v in values):.6g}")


def table(path):
    r = {}
    for line in open(path):
        line = line.strip()
        if line and "=" in line:
            k, v = line.split("=", 1)
            r[k] = v

    def num(k):
        try:
            return float(r[k])
        except (KeyError, ValueError):
            return None

    # label, key suffix, unit, better, target kind, target value
    # target "ge": berth/ref >= value; "le": berth/ref <= value
    rows = [
        (f"push {r.get('blob_mib', '?')} MiB blob, one PUT (median of {r.get('runs', '?')})", "push_mbs", "MB/s", "higher", "ge", 3.0),
        (f"  same in 16 MiB PATCHes", "push16m_mbs", "MB/s", "higher", None, None),
        (f"  same in 5 MiB PATCHes", "push5m_mbs", "MB/s", "higher", None, None),
        (f"pull {r.get('blob_mib', '?')} MiB blob (median of {r.get('runs', '?')})", "pull_mbs", "MB/s", "higher", "ge", 1.5),
        (f"  {r.get('par', '?')} parallel pulls of {r.get('par_mib', '?')} MiB (median of {r.get('runs', '?')})", "par_mbs", "MB/s", "higher", None, None),
        (f"manifest GET, {r.get('wrk_conns', '?')} conns", "mget_rps", "req/s", "higher", "ge", 3.0),
        ("manifest GET p99 latency", "mget_p99", "ms", "lower", None, None),
        (f"tags/list, {r.get('tags', '?')} tags (median of {r.get('tag_runs', '?')})", "tags_ms", "ms", "lower", "le", 0.2),
        (f"  same, keep-alive connection", "tags_ka_ms", "ms", "lower", "le", 0.2),
        (f"PUT {r.get('tags', '?')} tags, keep-alive (setup)", "tagput_s", "s", "lower", None, None),
        ("peak RSS (VmHWM)", "rss_mib", "MiB", "lower", "le", 0.5),
    ]
    # The targets belong to the filesystem issue; on S3 + PostgreSQL the ratios are only quoted.
    targets = r.get("backend", "fs") == "fs"
    head = ["metric", "unit", "berth", "reference", "berth/ref", "better", "target (berth/ref)", "met"]
    if not targets:
        head = head[:6]
    out = [head]
    for label, key, unit, better, kind, tval in rows:
        b, ref = num("berth_" + key), num("ref_" + key)
        if b is None and ref is None:
            continue  # not measured in this run (e.g. TAGS=0)
        ratio = b / ref if b is not None and ref not in (None, 0) else None
        if kind == "ge":
            target = f">= {tval:.2f}"
        elif kind == "le":
            target = f"<= {tval:.2f}" + (f" ({1 / tval:.0f}x faster)" if key.startswith("tags_") else "")
        else:
            target = "-"
        met = "-"
        if kind and ratio is not None:
            met = "yes" if (ratio >= tval if kind == "ge" else ratio <= tval) else "NO"

        def fmt(x):
            if x is None:
                return "n/a"
            return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"

        out.append([label, unit, fmt(b), fmt(ref), f"{ratio:.2f}" if ratio is not None else "n/a",
                    better, target, met][:len(head)])
    widths = [max(len(row[i]) for row in out) for i in range(len(head))]
    align_right = {2, 3, 4}
    sep = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    print(sep)
    for n, row in enumerate(out):
        cells = [c.rjust(w) if i in align_right and n else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("| " + " | ".join(cells) + " |")
        if n == 0:
            print(sep)
    print(sep)
    ceiling = num("ceiling_pull_mbs")
    if ceiling:
        what = {"nginx": "nginx static GET of the same file",
                "S3 server direct GET": "GET of the same object straight from the S3 server"}
        name = r.get("ceiling_name", "")
        shares = ", ".join(f"{who} {num(key) / ceiling:.0%}" for who, key in
                           (("berth", "berth_pull_mbs"), ("reference", "ref_pull_mbs")) if num(key) is not None)
        print(f"pull ceiling: {what.get(name, name)}: {ceiling:,.0f} MB/s ({shares} of it)")
    par_ceiling = num("ceiling_par_mbs")
    if par_ceiling:
        shares = ", ".join(f"{who} {num(key) / par_ceiling:.0%}" for who, key in
                           (("berth", "berth_par_mbs"), ("reference", "ref_par_mbs")) if num(key) is not None)
        print(f"parallel pull ceiling: {r.get('ceiling_name', '')}, {r.get('par', '?')} at once: "
              f"{par_ceiling:,.0f} MB/s ({shares} of it)")
    if "s3_server" in r:
        print(f"S3 server: {r['s3_server']}; peak RSS counts the registry process only "
              f"(not the S3 server, nor PostgreSQL, which only Berth uses).")
    # Issue 19: Berth against this machine's limits, measured in the same run.
    limits = [
        ("push, one PUT / openssl dgst -sha256 of the same file", num("berth_push_mbs"), num("sha256_mbs"), 0.75,
         f"{num('sha256_mbs') or 0:,.0f} MB/s"),
        ("push in 16 MiB PATCHes / Berth's one PUT", num("berth_push16m_mbs"), num("berth_push_mbs"), 0.8, None),
        ("push in 5 MiB PATCHes / Berth's one PUT", num("berth_push5m_mbs"), num("berth_push_mbs"), 0.8, None),
        ("pull / nginx sendfile of the same file", num("berth_pull_mbs"),
         num("ceiling_pull_mbs") if r.get("ceiling_name") == "nginx" else None, 0.9, None),
        (f"{r.get('par', '?')} parallel pulls / nginx sendfile, {r.get('par', '?')} at once", num("berth_par_mbs"),
         num("ceiling_par_mbs") if r.get("ceiling_name") == "nginx" else None, 0.9, None),
        ("manifest GET / nginx serving the same bytes, same wrk", num("berth_mget_rps"), num("ngx_mget_rps"), 0.5,
         f"{num('ngx_mget_rps') or 0:,.0f} req/s, p99 {num('ngx_mget_p99') or 0:.2f} ms"),
        ("manifest GET, auth on (Bearer JWT) / nginx, same wrk", num("berth_auth_mget_rps"), num("ngx_mget_rps"), 0.4,
         f"Berth p99 {num('berth_auth_mget_p99') or 0:.2f} ms"),
    ]
    shown = [(label, b / lim, target, note) for label, b, lim, target, note in limits if b and lim]
    if shown:
        print("Berth against the machine's limit (issue 19), same run:")
        width = max(len(label) for label, *_ in shown)
        for label, ratio, target, note in shown:
            met = "yes" if ratio >= target else "NO"
            print(f"  {label.ljust(width)}  {ratio:5.2f}  (target >= {target:.2f}: {met})" + (f"  limit: {note}" if note else ""))
    print("MB = 10^6 bytes. ratio is always berth/reference; 'better' says which direction wins.")


def throttle(port, target_port, mibs):
    import asyncio

    rate = float(mibs) * 1048576

    async def pipe(reader, writer, limited):
        start, sent = time.monotonic(), 0
        try:
            while data := await reader.read(65536):
                if limited and sent / rate < time.monotonic() - start - 0.05:
                    start, sent = time.monotonic(), 0  # idle keep-alive connection: no saved-up burst
                writer.write(data)
                await writer.drain()
                if limited:
                    sent += len(data)
                    ahead = sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", int(target_port))
        await asyncio.gather(pipe(client_r, up_w, False), pipe(up_r, client_w, True))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", int(port))
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def main():
    commands = {"freeport": freeport, "put-tags": put_tags, "push": push, "wrk": wrk, "table": table, "throttle": throttle,
                "median": lambda *v: median(v)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
