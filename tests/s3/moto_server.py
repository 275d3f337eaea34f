#!/usr/bin/env python3
"""moto's S3 server checking every request's SigV4 signature, for the S3 + PostgreSQL runs.

Run as `python3 tests/s3/moto_server.py -H 127.0.0.1 -p PORT` with
`INITIAL_NO_AUTH_ACTION_COUNT` set: after that many unauthenticated requests (which make the IAM
user, its key and policy, and the bucket), moto checks each request's signature against the
user's key and its policy.

One correction to moto 5 first: it recomputes the signature from werkzeug's `request.url`, whose
query string werkzeug has decoded (`prefix=blobs%2F` becomes `prefix=blobs/`), while a client
signs the query as it sent it, encoded as SigV4 requires. So every signed listing with a
`/` in its prefix (boto3's too) fails with SignatureDoesNotMatch. Here the signature is checked
against the query string as received.
"""

import sys
from urllib.parse import urlsplit, urlunsplit

from moto.core import responses
from moto.server import main

_setup_class = responses.BaseResponse.setup_class


def setup_class(self, request, full_url, headers, use_raw_body=False):
    _setup_class(self, request, full_url, headers, use_raw_body)
    raw_query = getattr(request, "environ", {}).get("QUERY_STRING")
    if raw_query:
        self.uri = urlunsplit(urlsplit(self.uri)._replace(query=raw_query))


responses.BaseResponse.setup_class = setup_class

if __name__ == "__main__":
    sys.exit(main())
