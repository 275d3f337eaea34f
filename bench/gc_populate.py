#!/usr/bin/env python3
"""Populates a Berth for gc-bench.sh through the registry API (stdlib only).

gc_populate.py HOSTPORT IMAGES LAYERS ORPHANS THREADS

Pushes IMAGES images (a config and LAYERS small layers each, spread over 100 repositories,
every image also referencing one layer shared by all images of its repository), ORPHANS blobs
no manifest references, then deletes every second image by digest. Keep-alive connections, one
per thread. Prints `blobs=N garbage=N seconds=S`.
"""

import hashlib
import http.client
import json
import sys
import threading
import time

OCI = "application/vnd.oci.image.manifest.v1+json"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Conn:
    def __init__(self, hostport):
        host, port = hostport.rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=60)

    def req(self, method, path, body=b"", headers=None):
        h = {"Content-Length": str(len(body))}
        h.update(headers or {})
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        return r.status, r.getheader("Docker-Content-Digest"), data

    def blob(self, repo, data):
        d = sha(data)
        s, _, body = self.req("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
        if s != 201:
            raise SystemExit(f"blob push: {s} {body[:200]}")
        return d


def run(hostport, images, layers, orphans, threads):
    lock = threading.Lock()
    work = list(range(images))
    digests = {}
    t0 = time.perf_counter()

    def image_worker():
        c = Conn(hostport)
        while True:
            with lock:
                if not work:
                    return
                i = work.pop()
            repo = f"bench/r{i % 100}"
            shared = f"shared layer of {repo}".encode()
            config = json.dumps({"image": i}).encode()
            blobs = [(c.blob(repo, config), len(config))]
            for k in range(layers):
                data = f"layer {k} of image {i} ".encode() * 2
                blobs.append((c.blob(repo, data), len(data)))
            blobs.append((c.blob(repo, shared), len(shared)))
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0][0], "size": blobs[0][1]},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n} for d, n in blobs[1:]],
            }).encode()
            s, d, body = c.req("PUT", f"/v2/{repo}/manifests/v{i}", manifest, {"Content-Type": OCI})
            if s != 201:
                raise SystemExit(f"manifest push: {s} {body[:200]}")
            with lock:
                digests[i] = (repo, d)

    orphan_work = list(range(orphans))

    def orphan_worker():
        c = Conn(hostport)
        while True:
            with lock:
                if not orphan_work:
                    return
                k = orphan_work.pop()
            c.blob(f"bench/r{k % 100}", f"orphan blob {k}".encode())

    def run_all(fn):
        ts = [threading.Thread(target=fn) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    run_all(image_worker)
    run_all(orphan_worker)
    doomed = [i for i in range(images) if i % 2 == 0]

    def delete_worker():
        c = Conn(hostport)
        while True:
            with lock:
                if not doomed:
                    return
                i = doomed.pop()
            repo, d = digests[i]
            s, _, body = c.req("DELETE", f"/v2/{repo}/manifests/{d}")
            if s != 202:
                raise SystemExit(f"delete: {s} {body[:200]}")

    run_all(delete_worker)
    blobs = images * (1 + layers) + min(images, 100) + orphans
    kept_repos = {i % 100 for i in range(images) if i % 2 == 1}
    garbage = (images + 1) // 2 * (1 + layers) + orphans + (min(images, 100) - len(kept_repos))
    print(f"blobs={blobs} garbage={garbage} seconds={time.perf_counter() - t0:.1f}")


if __name__ == "__main__":
    hp, images, layers, orphans, threads = sys.argv[1:6]
    run(hp, int(images), int(layers), int(orphans), int(threads))
