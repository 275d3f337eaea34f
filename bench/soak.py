#!/usr/bin/env python3
"""The soak run's load and checks (bench/soak.sh starts Berth and calls this).

Many clients push, pull, tag, delete and mount for --duration seconds against one Berth with
authentication on, garbage collection running on its own schedule and from here, and a webhook
to a receiver in a process of its own that checks every delivery's HMAC signature. Every acknowledged
push is remembered; pulls check the manifest digest and every blob's sha256. After the load:
every image still tagged pulls whole, every deleted tag is gone, every push has its webhook
delivery, and (after the upload expiry and one more collection) no upload session and no upload
object is left. The server's RSS, file descriptors and threads are sampled throughout.

Prints a report and writes it as JSON (--report); exits 1 if any check failed.
Standard library only.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1024 * 1024
WEBHOOK_SECRET = "soak-webhook-secret-0123456789abcdef"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.errors = []
        self.error_count = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def op(self, name, n=1):
        with self.lock:
            self.ops[name] = self.ops.get(name, 0) + n

    def error(self, what):
        with self.lock:
            self.error_count += 1
            if len(self.errors) < 50:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {what}")
        print(f"ERROR {what}", file=sys.stderr, flush=True)


class Client:
    """One keep-alive HTTP/1.1 connection to Berth, with Basic credentials."""

    def __init__(self, base, user, password):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.conn = None

    def request(self, method, path, body=None, headers=None, stream_to=None):
        """(status, headers dict lower-case, body bytes or hash when stream_to='sha256')."""
        h = {"Authorization": self.auth}
        h.update(headers or {})
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if stream_to == "sha256" and r.status == 200:
                    d = hashlib.sha256()
                    n = 0
                    while True:
                        chunk = r.read(256 * 1024)
                        if not chunk:
                            break
                        d.update(chunk)
                        n += len(chunk)
                    return r.status, hdrs, ("sha256:" + d.hexdigest(), n)
                data = r.read()
                if hdrs.get("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # A keep-alive connection the server closed while idle: once more on a new one
                # (only before anything was answered, as any client does).
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
                last = e
        raise last  # pragma: no cover

    @staticmethod
    def path_of(location):
        u = urllib.parse.urlsplit(location)
        return u.path + ("?" + u.query if u.query else "")


def receiver_main(ready):
    """The webhook receiver (its own process): checks every delivery's HMAC signature, answers
    2xx only to a whole, correctly signed body (a real receiver refuses the rest, and Berth then
    tries again), counts deliveries by event, and serves its counters at GET /stats."""
    lock = threading.Lock()
    hooks = {"push": 0, "delete": 0, "bad_signature": 0, "truncated": 0, "repeated": 0}
    delivered = set()  # X-Berth-Delivery ids accepted
    details = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            with lock:
                body = json.dumps(dict(hooks, details=details)).encode()
            self.reply(200, body)

        def do_POST(self):
            want_len = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(want_len)
            sig = self.headers.get("X-Berth-Signature", "")
            want = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            event = self.headers.get("X-Berth-Event", "")
            delivery = self.headers.get("X-Berth-Delivery", "")
            with lock:
                if len(body) < want_len or not hmac.compare_digest(sig.removeprefix("sha256="), want):
                    kind = "truncated" if len(body) < want_len else "bad_signature"
                    hooks[kind] += 1
                    if len(details) < 50:
                        details.append({"at": time.strftime("%H:%M:%S"), "kind": kind, "delivery": delivery,
                                        "event": event, "content_length": want_len, "read": len(body),
                                        "signature": sig, "expected": "sha256=" + want})
                    status = 401
                elif delivery in delivered:
                    hooks["repeated"] += 1
                    status = 200
                else:
                    delivered.add(delivery)
                    if event in hooks:
                        hooks[event] += 1
                    status = 200
            if len(body) < want_len:
                return  # the sender is gone
            self.reply(status)

        def log_message(self, *a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    srv = Server(("127.0.0.1", 0), Handler)
    ready.put(srv.server_address[1])
    srv.serve_forever()


class Pacer:
    """Spreads the clients' steps evenly at `rate` per second (0: as fast as they go), so the load
    the server sees does not follow whatever else the machine is doing."""

    def __init__(self, rate, stop):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop = stop
        self.lock = threading.Lock()
        self.next = time.monotonic()

    def wait(self):
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            # A slot missed by more than a second is not made up in a burst.
            self.next = max(self.next + self.interval, now - 1.0)
            at = self.next
        if at > now:
            self.stop.wait(at - now)


class Soak:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # Shared blobs: pushed by whoever needs them first, mounted or uploaded by others.
        self.shared = [os.urandom(random.choice([4096, 300_000, 1_500_000])) for _ in range(24)]
        self.alive = {}  # (repo, tag) -> (manifest digest, [(blob digest, size)])
        self.deleted = {}  # (repo, tag) -> manifest digest
        self.pushes = 0  # manifest PUTs acknowledged (each one a push event)
        self.deletes = 0  # tag deletes acknowledged (each one a delete event)
        self.hooks = {"push": 0, "delete": 0, "bad_signature": 0, "truncated": 0, "repeated": 0}
        self.hook_details = []  # the receiver's account of every rejected delivery (the first 50)
        self.pacer = Pacer(args.rate, self.stop)
        self.samples = []  # (t, rss_kib, fds, threads, rss_anon_kib, rss_file_kib, operations)
        self.memory = []  # (t, heap allocated, heap resident, sqlite) in bytes, from /metrics

    # ------------------------------------------------------------------ registry operations
    def upload(self, c, repo, data):
        """Uploads `data` as a blob of `repo`: monolithic or in 1 MiB PATCH chunks."""
        d = sha256(data)
        s, h, body = c.request("POST", f"/v2/{repo}/blobs/uploads/")
        if s != 202:
            return self.stats.error(f"POST upload {repo}: {s} {body[:200]!r}")
        loc = Client.path_of(h["location"])
        if random.random() < 0.5 and len(data) > CHUNK:
            for off in range(0, len(data), CHUNK):
                part = data[off:off + CHUNK]
                s, h, body = c.request(
                    "PATCH", loc, body=part,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{off}-{off + len(part) - 1}"})
                if s != 202:
                    return self.stats.error(f"PATCH {repo} at {off}: {s} {body[:200]!r}")
                loc = Client.path_of(h["location"])
            sep = "&" if "?" in loc else "?"
            s, h, body = c.request("PUT", f"{loc}{sep}digest={d}", body=b"")
        else:
            sep = "&" if "?" in loc else "?"
            s, h, body = c.request("PUT", f"{loc}{sep}digest={d}", body=data,
                                   headers={"Content-Type": "application/octet-stream"})
        if s != 201:
            return self.stats.error(f"PUT upload {repo} {d}: {s} {body[:200]!r}")
        self.stats.bytes_up += len(data)
        return d

    def ensure_shared(self, c, repo, data):
        """Like docker: HEAD, else a cross-repository mount from one that has it, else upload."""
        d = sha256(data)
        s, _, _ = c.request("HEAD", f"/v2/{repo}/blobs/{d}")
        if s == 200:
            self.stats.op("blob_exists")
            return d
        with self.lock:
            sources = [r for (r, _), (_, blobs) in self.alive.items() if r != repo and any(b == d for b, _ in blobs)]
        if sources:
            s, h, body = c.request("POST", f"/v2/{repo}/blobs/uploads/?mount={d}&from={random.choice(sources)}")
            if s == 201:
                self.stats.op("mount")
                return d
            if s == 202:
                # The source no longer links it (deleted and collected meanwhile): upload instead,
                # which is what the spec's 202 asks for. Cancel the session it opened.
                c.request("DELETE", Client.path_of(h["location"]))
                self.stats.op("mount_fell_back")
            else:
                self.stats.error(f"mount {d} into {repo}: {s} {body[:200]!r}")
                return None
        return self.upload(c, repo, data)

    def push(self, c, cid, repo, seq):
        config = json.dumps({"architecture": "amd64", "os": "linux", "soak": [cid, seq, time.time()]}).encode()
        blobs = []
        cd = self.upload(c, repo, config)
        if cd is None:
            return
        for _ in range(random.randint(1, 3)):
            if random.random() < 0.3:
                data = random.choice(self.shared)
                d = self.ensure_shared(c, repo, data)
            else:
                size = random.choice([2000, 60_000, 700_000, 2_500_000] + ([9_500_000] if random.random() < 0.1 else []))
                data = os.urandom(size)
                d = self.upload(c, repo, data)
            if d is None:
                return
            blobs.append((d, len(data)))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": n} for d, n in blobs],
        }).encode()
        tag = f"t{seq}"
        s, h, body = c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                               headers={"Content-Type": OCI_MANIFEST})
        if s != 201:
            return self.stats.error(f"PUT manifest {repo}:{tag}: {s} {body[:300]!r}")
        md = sha256(manifest)
        if h.get("docker-content-digest") != md:
            self.stats.error(f"PUT manifest {repo}:{tag}: digest {h.get('docker-content-digest')} != {md}")
        with self.lock:
            self.alive[(repo, tag)] = (md, [(cd, len(config))] + blobs)
            self.pushes += 1
        self.stats.op("push")

    def pull(self, c, repo, tag, md, blobs, check_blobs=True):
        s, h, body = c.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        if s != 200:
            return self.stats.error(f"GET manifest {repo}:{tag}: {s} {body[:200]!r}")
        if sha256(body) != md or h.get("docker-content-digest") != md:
            return self.stats.error(f"GET manifest {repo}:{tag}: got {sha256(body)}, pushed {md}")
        if not check_blobs:
            return True
        for d, n in blobs:
            s, h, got = c.request("GET", f"/v2/{repo}/blobs/{d}", stream_to="sha256")
            if s != 200:
                return self.stats.error(f"GET blob {repo} {d}: {s}")
            if got != (d, n):
                return self.stats.error(f"GET blob {repo} {d}: got {got}, pushed {(d, n)}")
            self.stats.bytes_down += n
        self.stats.op("pull")
        return True

    def retag(self, c, repo, tag, md, blobs, seq):
        s, _, manifest = c.request("GET", f"/v2/{repo}/manifests/{md}", headers={"Accept": OCI_MANIFEST})
        if s != 200:
            return self.stats.error(f"GET manifest {repo}@{md}: {s}")
        new = f"r{seq}"
        s, _, body = c.request("PUT", f"/v2/{repo}/manifests/{new}", body=manifest,
                               headers={"Content-Type": OCI_MANIFEST})
        if s != 201:
            return self.stats.error(f"PUT tag {repo}:{new}: {s} {body[:200]!r}")
        with self.lock:
            self.alive[(repo, new)] = (md, blobs)
            self.pushes += 1
        self.stats.op("tag")

    def delete(self, c, repo, tag, md):
        # Taken out of the live set first, so no other client pulls it while it goes.
        s, _, body = c.request("DELETE", f"/v2/{repo}/manifests/{tag}")
        if s != 202:
            return self.stats.error(f"DELETE {repo}:{tag}: {s} {body[:200]!r}")
        with self.lock:
            self.deleted[(repo, tag)] = md
            self.deletes += 1
        self.stats.op("delete")

    def abandon(self, c, repo):
        """An upload started and never finished (expired and collected later)."""
        s, h, _ = c.request("POST", f"/v2/{repo}/blobs/uploads/")
        if s == 202:
            c.request("PATCH", Client.path_of(h["location"]), body=os.urandom(50_000),
                      headers={"Content-Type": "application/octet-stream"})
            self.stats.op("abandoned_upload")

    def client_loop(self, cid):
        c = Client(self.args.base, self.args.user, self.args.password)
        seq = 0
        repos = [f"soak/c{cid}-{k}" for k in range(3)]
        while not self.stop.is_set():
            self.pacer.wait()
            if self.stop.is_set():
                break
            seq += 1
            repo = random.choice(repos)
            with self.lock:
                mine = [(k, v) for k, v in self.alive.items() if k[0] in repos]
            x = random.random()
            try:
                if len(mine) > self.args.images_per_client and x < 0.5:
                    # Keeps the live set (and the disk or the S3 server's memory) bounded.
                    (r, t), (md, _) = random.choice(mine)
                    with self.lock:
                        self.alive.pop((r, t), None)
                    self.delete(c, r, t, md)
                elif x < 0.30 or len(mine) < 3:
                    self.push(c, cid, repo, seq)
                elif x < 0.75:
                    (r, t), (md, blobs) = random.choice(mine)
                    self.pull(c, r, t, md, blobs)
                elif x < 0.85:
                    (r, t), (md, blobs) = random.choice(mine)
                    self.retag(c, r, t, md, blobs, seq)
                elif x < 0.97:
                    (r, t), (md, _) = random.choice(mine)
                    with self.lock:
                        self.alive.pop((r, t), None)
                    self.delete(c, r, t, md)
                else:
                    self.abandon(c, repo)
            except Exception as e:  # a refused or dropped connection, a timeout
                self.stats.error(f"client {cid}: {type(e).__name__}: {e}")
                c.conn = None
                time.sleep(1)

    # ------------------------------------------------------------------ around the load
    def gc_loop(self):
        c = Client(self.args.base, self.args.user, self.args.password)
        while not self.stop.wait(self.args.gc_every):
            try:
                s, _, body = c.request("POST", "/api/v1/gc?dry_run=false")
                if s == 200:
                    self.stats.op("gc")
                elif s == 409:  # a run is already going (the server's own schedule)
                    self.stats.op("gc_busy")
                else:
                    self.stats.error(f"POST /api/v1/gc: {s} {body[:200]!r}")
            except Exception as e:
                self.stats.error(f"gc: {type(e).__name__}: {e}")
                c.conn = None

    def sample(self):
        pid = self.args.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
            rss = int(st["VmRSS"].split()[0])
            # RSS is the anonymous pages (heap, stacks) plus the pages of the binary and the
            # libraries read in so far (RssFile grows as code paths run for the first time).
            rss_anon = int(st["RssAnon"].split()[0])
            rss_file = int(st["RssFile"].split()[0])
            threads = int(st["Threads"])
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, ProcessLookupError):
            self.stats.error("the server process is gone")
            self.stop.set()
            return
        with self.stats.lock:
            ops = sum(self.stats.ops.values())
        self.samples.append((time.time(), rss, fds, threads, rss_anon, rss_file, ops))
        # Where the memory sits, as the server reports it: jemalloc's heap and SQLite's share.
        try:
            u = urllib.parse.urlparse(self.args.base)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
            vals = {}
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in ("berth_memory_heap_allocated_bytes", "berth_memory_heap_resident_bytes",
                            "berth_memory_sqlite_bytes"):
                    vals[name] = float(value)
            self.memory.append((time.time(), vals.get("berth_memory_heap_allocated_bytes", 0),
                                vals.get("berth_memory_heap_resident_bytes", 0),
                                vals.get("berth_memory_sqlite_bytes", 0)))
        except (OSError, http.client.HTTPException, ValueError):
            pass

    def monitor_loop(self):
        while not self.stop.wait(self.args.sample_every):
            self.sample()
            elapsed = time.time() - self.started
            _, rss, fds, threads, anon, _, _ = self.samples[-1] if self.samples else (0,) * 7
            _, heap, resident, sqlite = self.memory[-1] if self.memory else (0, 0, 0, 0)
            with self.lock:
                live = len(self.alive)
            print(f"[{elapsed:6.0f}s] ops={sum(self.stats.ops.values())} errors={self.stats.error_count} "
                  f"images={live} rss={rss // 1024}MiB anon={anon // 1024}MiB heap={heap / 2**20:.1f}/{resident / 2**20:.1f}MiB "
                  f"sqlite={sqlite / 2**20:.1f}MiB fds={fds} threads={threads} "
                  f"hooks={self.hooks['push']}/{self.pushes}", flush=True)
            self.refresh_hooks()

    def start_receiver(self):
        """Starts the webhook receiver in a process of its own (in this one it would share the
        GIL with the clients and fall behind); `self.hooks` is refreshed from its /stats."""
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        self.receiver = ctx.Process(target=receiver_main, args=(ready,), daemon=True)
        self.receiver.start()
        self.receiver_port = ready.get(timeout=30)
        return f"http://127.0.0.1:{self.receiver_port}/hook"

    def refresh_hooks(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.receiver_port, timeout=30)
            conn.request("GET", "/stats")
            stats = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError) as e:
            self.stats.error(f"webhook receiver: {e}")
            return
        self.hook_details = stats.pop("details")
        self.hooks = stats

    def setup(self):
        url = self.start_receiver()
        c = Client(self.args.base, self.args.user, self.args.password)
        s, _, body = c.request("POST", "/api/v1/webhooks",
                               body=json.dumps({"url": url, "secret": WEBHOOK_SECRET, "events": ["push", "delete"]}),
                               headers={"Content-Type": "application/json"})
        if s != 201:
            sys.exit(f"cannot create the webhook: {s} {body!r}")

    def upload_leftovers(self):
        """(upload sessions in the database, upload objects in the store)."""
        a = self.args
        sessions = objects = None
        if a.sqlite:
            import sqlite3
            db = sqlite3.connect(f"file:{a.sqlite}?mode=ro", uri=True, timeout=30)
            sessions = db.execute("SELECT count(*) FROM uploads").fetchone()[0]
            db.close()
        elif a.pg_url:
            import subprocess
            out = subprocess.run(["psql", "-qAtX", a.pg_url, "-c", "SELECT count(*) FROM uploads"],
                                 capture_output=True, text=True)
            sessions = int(out.stdout.strip()) if out.returncode == 0 else None
        if a.uploads_dir:
            objects = len(os.listdir(a.uploads_dir)) if os.path.isdir(a.uploads_dir) else 0
        elif a.s3_list_cmd:
            import subprocess
            out = subprocess.run(a.s3_list_cmd, shell=True, capture_output=True, text=True)
            objects = int(out.stdout.strip()) if out.returncode == 0 else None
        return sessions, objects

    def run(self):
        a = self.args
        self.setup()
        self.started = time.time()
        self.sample()
        threads = [threading.Thread(target=self.client_loop, args=(i,), daemon=True) for i in range(a.clients)]
        threads += [threading.Thread(target=self.gc_loop, daemon=True),
                    threading.Thread(target=self.monitor_loop, daemon=True)]
        for t in threads:
            t.start()
        self.stop.wait(a.duration)
        self.stop.set()
        for t in threads:
            t.join(timeout=180)
        load_secs = time.time() - self.started
        print("load stopped; checking every image", flush=True)

        # Every image still tagged pulls whole; every deleted tag is gone.
        c = Client(a.base, a.user, a.password)
        errors_before = self.stats.error_count
        for (repo, tag), (md, blobs) in sorted(self.alive.items()):
            self.pull(c, repo, tag, md, blobs)
        intact_errors = self.stats.error_count - errors_before
        gone_errors = 0
        for (repo, tag), md in sorted(self.deleted.items()):
            if (repo, tag) in self.alive:
                continue
            s, _, _ = c.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            if s != 404:
                gone_errors += 1
                self.stats.error(f"deleted {repo}:{tag} answers {s}")

        # Webhooks: every push and delete delivered (at least once), signatures right.
        deadline = time.time() + 120
        # A truncated body (the sender gave up mid-request and tries again) is refused and
        # counted, not an error; a whole body with a wrong signature is one.
        self.refresh_hooks()
        while time.time() < deadline and (self.hooks["push"] < self.pushes or self.hooks["delete"] < self.deletes):
            time.sleep(1)
            self.refresh_hooks()
        if self.hooks["push"] < self.pushes or self.hooks["delete"] < self.deletes or self.hooks["bad_signature"]:
            self.stats.error(f"webhooks: {self.hooks} for {self.pushes} pushes, {self.deletes} deletes; "
                             f"rejected: {self.hook_details[:5]}")

        # Upload sessions: after the expiry and a collection, none left (the clients finished
        # or abandoned every one of theirs).
        time.sleep(a.upload_expiry + 2)
        s, _, body = c.request("POST", "/api/v1/gc?dry_run=false")
        if s == 409:
            time.sleep(30)
            s, _, body = c.request("POST", "/api/v1/gc?dry_run=false")
        if s != 200:
            self.stats.error(f"final gc: {s} {body[:200]!r}")
        sessions, objects = self.upload_leftovers()
        if sessions or objects:
            self.stats.error(f"upload leftovers after expiry and gc: {sessions} sessions, {objects} objects")
        self.sample()

        # Resources: RSS flat after warm-up (the first quarter of the run, at most 10 minutes).
        warm = self.started + min(600, a.duration / 4)
        after = [x for x in self.samples if x[0] >= warm] or self.samples
        first = after[: max(1, len(after) // 10)]
        last = after[-max(1, len(after) // 10):]
        rss_warm = statistics.median(x[1] for x in first)
        rss_end = statistics.median(x[1] for x in last)
        growth = (rss_end - rss_warm) / rss_warm
        fds_warm = statistics.median(x[2] for x in first)
        anon_warm = statistics.median(x[4] for x in first)
        anon_end = statistics.median(x[4] for x in last)
        file_warm = statistics.median(x[5] for x in first)
        file_end = statistics.median(x[5] for x in last)
        # How even the load was: operations per second in each 5-minute window after warm-up.
        rates = []
        i = 0
        while i < len(after):
            j = i
            while j + 1 < len(after) and after[j + 1][0] - after[i][0] <= 300:
                j += 1
            if j > i and after[j][0] - after[i][0] >= 240:
                rates.append(round((after[j][6] - after[i][6]) / (after[j][0] - after[i][0])))
            i = j if j > i else i + 1
        mem_after = [x for x in self.memory if x[0] >= warm] or self.memory or [(0, 0, 0, 0)]
        mem_first = mem_after[: max(1, len(mem_after) // 10)]
        mem_last = mem_after[-max(1, len(mem_after) // 10):]

        def mem_mib(rows, i):
            return round(statistics.median(x[i] for x in rows) / 2**20, 1)
        fds_end = self.samples[-1][2]
        report = {
            "duration_secs": round(load_secs),
            "clients": a.clients,
            "operations": self.stats.ops,
            "operations_total": sum(self.stats.ops.values()),
            "bytes_pushed": self.stats.bytes_up,
            "bytes_pulled": self.stats.bytes_down,
            "images_checked_at_end": len(self.alive),
            "images_broken_at_end": intact_errors,
            "deleted_tags_checked": len(self.deleted),
            "deleted_tags_still_there": gone_errors,
            "webhooks": self.hooks,
            "webhooks_rejected": self.hook_details,
            "pushes": self.pushes,
            "deletes": self.deletes,
            "upload_sessions_left": sessions,
            "upload_objects_left": objects,
            "rss_mib_after_warmup": round(rss_warm / 1024, 1),
            "rss_mib_end": round(rss_end / 1024, 1),
            "rss_mib_max": round(max(x[1] for x in self.samples) / 1024, 1),
            "rss_growth": round(growth, 3),
            "rss_anon_mib": [round(anon_warm / 1024, 1), round(anon_end / 1024, 1)],
            "rss_file_mib": [round(file_warm / 1024, 1), round(file_end / 1024, 1)],
            "steps_per_sec_offered": a.rate or "unpaced",
            "ops_per_sec_by_5_min": rates,
            "heap_allocated_mib": [mem_mib(mem_first, 1), mem_mib(mem_last, 1)],
            "heap_resident_mib": [mem_mib(mem_first, 2), mem_mib(mem_last, 2)],
            "sqlite_mib": [mem_mib(mem_first, 3), mem_mib(mem_last, 3)],
            "fds_after_warmup": fds_warm,
            "fds_end": fds_end,
            "threads_end": self.samples[-1][3],
            "errors": self.stats.error_count,
            "first_errors": self.stats.errors,
        }
        ok = self.stats.error_count == 0 and growth <= 0.10 and fds_end <= fds_warm + 8
        report["ok"] = ok
        with open(a.report, "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2))
        return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", required=True)
    p.add_argument("--pid", type=int, required=True, help="the server's process, sampled")
    p.add_argument("--duration", type=float, default=3600)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rate", type=float, default=0,
                   help="client steps (push, pull, tag, delete, abandoned upload) per second, all clients together (0: unpaced)")
    p.add_argument("--images-per-client", type=int, default=40, help="above this, half the operations delete")
    p.add_argument("--gc-every", type=float, default=90)
    p.add_argument("--sample-every", type=float, default=15)
    p.add_argument("--upload-expiry", type=float, default=120, help="the server's gc.upload_expiry_secs")
    p.add_argument("--sqlite", help="the server's SQLite file (upload sessions are counted in it)")
    p.add_argument("--pg-url", help="the server's PostgreSQL database (upload sessions are counted in it)")
    p.add_argument("--uploads-dir", help="the filesystem store's _uploads directory")
    p.add_argument("--s3-list-cmd", help="a shell command printing how many _uploads/ objects S3 holds")
    p.add_argument("--report", required=True)
    sys.exit(Soak(p.parse_args()).run())


if __name__ == "__main__":
    main()
