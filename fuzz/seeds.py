#!/usr/bin/env python3
"""Writes the checked-in seed corpus of the fuzz targets (fuzz/corpus/<target>/): a handful of
real inputs per target. Run from anywhere; it replaces the files it names and leaves others
(crash inputs kept as regression seeds) alone. The JWT seed of `authorization` (corpus file
`jwt`) is signed by the target itself with its test key:
    printf 'Bearer a.b.c' > /tmp/in
    BERTH_FUZZ_PRINT_JWT=1 ~/.cache/berth-fuzz-target/x86_64-unknown-linux-gnu/release/authorization /tmp/in
prints it."""
import gzip, hashlib, io, json, os, shutil, subprocess, tarfile

tarfile.RECORDSIZE = 512  # no padding to 10 KiB: small seeds

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sha(c):
    return "sha256:" + hashlib.sha256(c.encode()).hexdigest()


# name: names, tags, references, /v2 paths.
for i, s in enumerate(["library/busybox", "team/app/api", "a.b_c__d---e/f0", "latest", "v1.2.3-rc_1",
                       sha("x"), "/team/app/manifests/latest", "/team/app/blobs/" + sha("y"),
                       "/team/app/blobs/uploads/", "/team/app/blobs/uploads/0b7f2d2e-1c1e-4b8e-9d7a-3f6e2a1b9c4d",
                       "/team/app/tags/list", "/_catalog", "/a/referrers/sha256%3A" + "0" * 64]):
    put("name", f"seed-{i}", s)

# digest: digests and a saved hasher state.
for i, s in enumerate([sha(""), "sha512:" + hashlib.sha512(b"").hexdigest(), "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e",
                       "sha256:agPDA/BVs/xAb3PBbsq7ZWnKhMMcvPCpF7NCB6SH3jYRPXQRmqH/TZOCoNw0jCyvE4VtErZd/HqUg1VpqgJaYkgAAAAAAAAAAA=="]):
    put("digest", f"seed-{i}", s)

# range: Range and Content-Range values.
for i, s in enumerate(["bytes=0-99", "bytes=100-", "bytes=-500", "bytes=0-0,5-9", "bytes 0-1023/4096", "0-1023", "bytes=1024-2047/*"]):
    put("range", f"seed-{i}", s)

# manifest: the first byte picks the Content-Type (0: none, 1: Docker manifest, 2: Docker list,
# 3: OCI manifest, 4: OCI index, 5: application/json, 6: OCI manifest with a parameter, 7: schema 1).
cfg = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha("config"), "size": 1469}
layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha("layer"), "size": 2807}
docker = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "config": cfg, "layers": [layer]}
oci = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha("c"), "size": 581},
       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": sha("l"), "size": 10}],
       "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha("m1"), "size": 100,
     "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha("m2"), "size": 100,
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}
dlist = dict(index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
artifact = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha("{}"), "size": 2},
            "layers": [{"mediaType": "application/json", "digest": sha("sbom"), "size": 9}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha("m1"), "size": 100}}
foreign = dict(docker, layers=[dict(layer, mediaType="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", urls=["https://example.invalid/l"])])
for i, (ct, m) in enumerate([(1, docker), (3, oci), (4, index), (2, dlist), (0, artifact), (6, oci), (5, foreign), (0, index)]):
    put("manifest", f"seed-{i}", bytes([ct]) + json.dumps(m, indent=3).encode())

# authorization: header values and challenges (the JWT seed comes from the target, see above).
for i, s in enumerate(["Basic YWxpY2U6c2VjcmV0", "basic Ym9iOnA6YXNz", "Bearer berth_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo",
                       'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
                       "Negotiate abc"]):
    put("authorization", f"seed-{i}", s)

# token: GET queries and POST forms.
for i, s in enumerate(["service=registry&scope=repository:team/app:pull,push&scope=repository:team/base:pull",
                       "account=alice&offline_token=true&scope=registry:catalog:*&service=berth",
                       "grant_type=password&username=alice&password=s3cret&service=berth&scope=repository%3Ateam%2Fapp%3Apull+repository%3Ateam%2Fapp%3Apush&access_type=offline&client_id=containerd",
                       "grant_type=refresh_token&refresh_token=berth_abc&service=berth&scope=repository(plugin):a/b:pull"]):
    put("token", f"seed-{i}", s)

# api_json: one body of each kind.
for i, b in enumerate([{"current_password": "a", "new_password": "correct horse battery"},
                       {"name": "bob", "password": "pw-pw-pw-pw", "admin": False},
                       {"admin": True, "disabled": False},
                       {"name": "ci", "scope": "push", "repository_pattern": "team/*", "expires_days": 30},
                       {"name": "team"}, {"public": True}, {"role": "maintainer"}, {"name": "ci", "role": "pull"},
                       {"name": "site-b", "url": "https://b.example", "username": "u", "secret": "s"},
                       {"name": "nightly", "target": "site-b", "repositories": "team/*", "tags": "v*", "tags_regex": "v[0-9]+(\\.[0-9]+)*",
                        "latest": 5, "direction": "pull", "destination_prefix": "mirror/b", "schedule": "30 2 * * 1-5"},
                       {"name": "often", "target": "b", "schedule": "10m"},
                       {"url": "https://hooks.example/berth", "namespace": "team", "events": ["push", "delete"], "secret": "x"},
                       {"enabled": False},
                       {"pattern": "team/*", "keep_last": 10, "keep_tags": "v*|latest", "older_than_days": 30, "keep_pulled_days": 7},
                       {"max_bytes": 1073741824}]):
    put("api_json", f"seed-{i}", json.dumps(b))

# json: an image config and a few shapes.
config = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Entrypoint": ["/bin/sh", "-c"],
                     "Cmd": ["echo hi"], "WorkingDir": "/app", "User": "app:app"},
          "rootfs": {"type": "layers", "diff_ids": [sha("a"), sha("b")]},
          "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in / "}]}
for i, s in enumerate([json.dumps(config), "[" * 64 + "]" * 64, '{"a":"[\\"{","b":[[{"c":null}]]}', "[" * 65 + "]" * 65]):
    put("json", f"seed-{i}", s)


# layer: tar layers, plain, gzip and zstd, normal and hostile.
def tar_of(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = e.get("type", tarfile.REGTYPE)
            info.mode = e.get("mode", 0o644)
            info.linkname = e.get("link", "")
            info.mtime = 1700000000
            info.pax_headers = e.get("pax", {})
            data = e.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
base = tar_of([
    {"name": "./", "type": D, "mode": 0o755},
    {"name": "etc/", "type": D, "mode": 0o755},
    {"name": "etc/passwd", "data": b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"},
    {"name": "etc/group", "data": b"root:x:0:\nwheel:x:10:root,app\napp:x:1000:\n"},
    {"name": "bin/", "type": D, "mode": 0o755},
    {"name": "bin/busybox", "data": b"\x7fELF not really", "mode": 0o755},
    {"name": "bin/sh", "type": L, "link": "busybox"},
    {"name": "bin/ash", "type": H, "link": "bin/busybox"},
    {"name": "usr/bin/ping", "data": b"ping", "mode": 0o4755, "pax": {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}},
])
whiteouts = tar_of([
    {"name": "etc/", "type": D},
    {"name": "etc/.wh.passwd", "data": b""},
    {"name": "var/cache/", "type": D},
    {"name": "var/cache/.wh..wh..opq", "data": b""},
    {"name": "tmp/.wh..wh..wh..wh.x", "data": b""},
], fmt=tarfile.PAX_FORMAT)
hostile = [
    tar_of([{"name": "../escape", "data": b"x"}]),
    tar_of([{"name": "/abs", "data": b"x"}]),
    tar_of([{"name": "up", "type": L, "link": "../outside"}, {"name": "up/sentinel", "data": b"overwritten"}]),
    tar_of([{"name": "hl", "type": H, "link": "../outside/sentinel"}]),
    tar_of([{"name": "etc", "type": L, "link": "/etc"}, {"name": "etc/passwd", "data": b"x"}]),
    tar_of([{"name": "a", "type": L, "link": "b"}, {"name": "b", "type": L, "link": "a"}, {"name": "etc", "type": L, "link": "a"}]),
    tar_of([{"name": "dev/null", "type": tarfile.CHRTYPE}]),
    tar_of([{"name": "x/.wh...", "data": b""}]),
]
put("layer", "plain.tar", base)
put("layer", "whiteouts.tar", whiteouts)
put("layer", "base.tar.gz", gzip.compress(base, mtime=0))
if shutil.which("zstd"):
    put("layer", "base.tar.zst", subprocess.run(["zstd", "-q", "-c", "-19"], input=base, capture_output=True, check=True).stdout)
for i, t in enumerate(hostile):
    put("layer", f"hostile-{i}.tar", t)
