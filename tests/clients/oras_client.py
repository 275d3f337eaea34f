#!/usr/bin/env python3
"""Drives the Python oras client (PyPI `oras`, oras-py) for tests/clients.rs.

    oras_client.py push HOST/REPO:TAG FILE ARTIFACT_TYPE [SUBJECT_DIGEST SUBJECT_SIZE SUBJECT_MEDIA_TYPE]
    oras_client.py pull HOST/REPO:TAG OUTDIR

Credentials come from ORAS_USER and ORAS_PASSWORD (never argv). `push` uploads FILE (a path
relative to the working directory, as oras-py requires) in chunks of ORAS_CHUNK_SIZE bytes
(default 64 KiB, so a file of a few hundred KiB takes several PATCH requests) and prints
{"status": ..., "digest": ...} (the manifest PUT's answer); `pull` prints {"files": [...]}.
Any failure raises, so the process exits non-zero with a traceback.
"""

import json
import os
import sys

import oras.client
import oras.oci


class Client(oras.client.OrasClient):
    """oras-py 0.2 has no artifact-type option (the oras CLI's `--artifact-type`): this sets the
    manifest's `artifactType` on the manifest oras-py built and uploads it through oras-py."""

    artifact_type = None

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        return super().upload_manifest(manifest, container)


def widen_on_insufficient_scope(auth):
    """oras-py 0.2.43 answers a 401 by retrying with the token it has cached, so a push whose
    first request (the blob HEAD) got a `pull` token never gets a `push` one: its known bug
    oras-project/oras-py#187. This makes a 401 with `error="insufficient_scope"` fetch a new
    token for the scope the challenge names, as oras-go and containerd do; the challenge is
    Berth's to get right."""
    authenticate = auth.authenticate_request

    def authenticate_request(original, headers, refresh=False):
        challenge = original.headers.get("Www-Authenticate", "")
        if original.status_code == 401 and 'error="insufficient_scope"' in challenge:
            refresh = True
        return authenticate(original, headers, refresh=refresh)

    auth.authenticate_request = authenticate_request


def client(target):
    host = target.split("/", 1)[0]
    c = Client(hostname=host, insecure=True)
    # What OrasClient.login does first; login() then also logs in through the docker engine
    # when docker-py is installed (or writes a docker config), which this test does not want.
    c.auth.set_basic_auth(os.environ["ORAS_USER"], os.environ["ORAS_PASSWORD"])
    widen_on_insufficient_scope(c.auth)
    return c


def push(target, path, artifact_type, subject=None):
    c = client(target)
    c.artifact_type = artifact_type
    if subject:
        digest, size, media_type = subject
        subject = oras.oci.Subject(mediaType=media_type, digest=digest, size=int(size))
    chunk_size = int(os.environ.get("ORAS_CHUNK_SIZE", 64 * 1024))
    r = c.push(
        target,
        files=[path],
        subject=subject,
        do_chunked=True,
        chunk_size=chunk_size,
        quiet=True,
    )
    if r.status_code != 201:
        raise SystemExit(f"manifest PUT answered {r.status_code}: {r.text}")
    return {"status": r.status_code, "digest": r.headers.get("Docker-Content-Digest")}


def pull(target, outdir):
    return {"files": client(target).pull(target, outdir=outdir)}


def main(argv):
    if len(argv) >= 4 and argv[1] == "push" and len(argv) in (5, 8):
        out = push(argv[2], argv[3], argv[4], argv[5:8] if len(argv) == 8 else None)
    elif len(argv) == 4 and argv[1] == "pull":
        out = pull(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
