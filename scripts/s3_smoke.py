#!/usr/bin/env python3
"""Tiny S3 client (stdlib only, SigV4, path-style) used by scripts/s3.sh.

Subcommands:
  ping                 signed ListBuckets; exit 0 if the server answers 200
  wait SECONDS         retry `ping` until it succeeds or SECONDS elapse
  mkbucket NAME...     create buckets idempotently (retries while the server warms up)
  rmbucket NAME...     delete every object of each bucket, then the bucket (a missing
                       bucket is fine): SeaweedFS keeps deleted objects' space until a
                       vacuum, and frees a deleted bucket's at once
  ready NAME...        mkbucket, then a write probe (conditional PUT + DELETE of a
                       temporary key) in each bucket, so writes are known to work
  download BUCKET PREFIX DIR
                       copy every object under PREFIX to DIR/<key without PREFIX>
                       (scripts/cluster-test compares a cluster run's gold with a local one)
  smoke [BUCKET]       exercise what the Rust object_store crate needs: PUT/GET/HEAD/range,
                       ListObjectsV2 (prefix, delimiter, pagination), conditional PUT
                       (If-None-Match: * and If-Match, also with 8 racing writers),
                       CopyObject, multipart upload/abort, DeleteObjects, DELETE.
                       Prints "N passed, N failed"; exit 1 if any required check fails.

Configuration comes from the same environment `scripts/s3.sh env` prints:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
"""

import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
ACCESS_KEY = os.environ.get("AWS_ACCESS_KEY_ID", "streamflow")
SECRET_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "streamflow-secret")
REGION = os.environ.get("AWS_REGION", "us-east-1")

_ep = urllib.parse.urlsplit(ENDPOINT)
if _ep.scheme != "http":
    sys.exit("s3_smoke.py: only http:// endpoints are supported, got %r" % ENDPOINT)
HOST = _ep.hostname or "127.0.0.1"
PORT = _ep.port or 80
HOST_HEADER = _ep.netloc


def _q(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def request(method, bucket="", key="", query=None, headers=None, body=b"", timeout=30):
    """Send one SigV4-signed request; return (status, headers dict lower-cased, body bytes)."""
    query = query or {}
    headers = dict(headers or {})
    path = "/"
    if bucket:
        path += _q(bucket)
        if key:
            path += "/" + _q(key, safe="-_.~/")
    canonical_query = "&".join(
        "%s=%s" % (_q(k), _q(v)) for k, v in sorted(query.items())
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers["host"] = HOST_HEADER
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    signed = {k.lower(): " ".join(str(v).strip().split()) for k, v in headers.items()}
    signed_names = ";".join(sorted(signed))
    canonical_headers = "".join("%s:%s\n" % (k, signed[k]) for k in sorted(signed))
    canonical_request = "\n".join(
        [method, path, canonical_query, canonical_headers, signed_names, payload_hash]
    )
    scope = "%s/%s/s3/aws4_request" % (day, REGION)
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )

    def _hmac(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()

    k = _hmac(("AWS4" + SECRET_KEY).encode(), day)
    k = _hmac(k, REGION)
    k = _hmac(k, "s3")
    k = _hmac(k, "aws4_request")
    signature = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
        % (ACCESS_KEY, scope, signed_names, signature)
    )
    url = path + ("?" + canonical_query if canonical_query else "")
    conn = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _xml_find_all(data, tag):
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    return [el.text or "" for el in root.iter() if el.tag.split("}")[-1] == tag]


def _err_code(data):
    codes = _xml_find_all(data, "Code")
    return codes[0] if codes else ""


def ping():
    try:
        status, _, body = request("GET", timeout=5)
    except OSError as e:
        print("ping: %s" % e, file=sys.stderr)
        return False
    if status != 200:
        print("ping: HTTP %d %s" % (status, _err_code(body)), file=sys.stderr)
    return status == 200


def wait(seconds):
    deadline = time.monotonic() + float(seconds)
    while True:
        if ping():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def mkbucket(names, timeout=60):
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            try:
                status, _, body = request("PUT", name)
            except OSError as e:
                status, body = 0, str(e).encode()
            code = _err_code(body)
            if status == 200:
                print("bucket %s: created" % name)
                break
            if status == 409 and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                print("bucket %s: exists" % name)
                break
            if time.monotonic() >= deadline:
                print(
                    "bucket %s: FAILED HTTP %d %s %s"
                    % (name, status, code, body[:300].decode(errors="replace")),
                    file=sys.stderr,
                )
                return False
            time.sleep(0.5)  # filer / volume server may still be warming up
    return True


def rmbucket(names):
    for name in names:
        while True:
            status, _, body = request("GET", name, query={"list-type": "2"})
            if status == 404:
                break
            if status != 200:
                print("bucket %s: listing FAILED HTTP %d %s" % (name, status, _err_code(body)),
                      file=sys.stderr)
                return False
            keys = _xml_find_all(body, "Key")
            if not keys:
                break
            for key in keys:
                status, _, body = request("DELETE", name, key)
                if status not in (200, 204):
                    print("bucket %s: DELETE %s FAILED HTTP %d" % (name, key, status),
                          file=sys.stderr)
                    return False
        status, _, body = request("DELETE", name)
        if status == 404:
            print("bucket %s: absent" % name)
        elif status in (200, 204):
            print("bucket %s: deleted" % name)
        else:
            print("bucket %s: FAILED HTTP %d %s" % (name, status, _err_code(body)), file=sys.stderr)
            return False
    return True


def download(bucket, prefix, directory):
    token = None
    count = 0
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        status, _, body = request("GET", bucket, query=query)
        if status != 200:
            print("listing %s/%s FAILED HTTP %d %s" % (bucket, prefix, status, _err_code(body)),
                  file=sys.stderr)
            return False
        for key in _xml_find_all(body, "Key"):
            status, _, data = request("GET", bucket, key)
            if status != 200:
                print("GET %s/%s FAILED HTTP %d" % (bucket, key, status), file=sys.stderr)
                return False
            path = os.path.join(directory, key[len(prefix):].lstrip("/"))
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            count += 1
        tokens = _xml_find_all(body, "NextContinuationToken")
        if not tokens:
            break
        token = tokens[0]
    print("downloaded %d objects from %s/%s" % (count, bucket, prefix))
    return True


def probe(names, timeout=120):
    """PUT (If-None-Match: *) + DELETE a temporary top-level key in each bucket.

    SeaweedFS answers S3 before its filer lock ring and volumes are ready; the first write then
    stalls for several seconds. Doing one here makes `s3.sh start` return only once writes work.
    """
    deadline = time.monotonic() + timeout
    for name in names:
        key = ".streamflow-probe-%s" % uuid.uuid4().hex[:12]
        while True:
            t0 = time.monotonic()
            try:
                st, _, body = request("PUT", name, key, headers={"If-None-Match": "*"}, body=b"probe", timeout=60)
            except OSError as e:
                st, body = 0, str(e).encode()
            if st == 200:
                break
            if time.monotonic() >= deadline:
                print("probe %s: FAILED HTTP %d %s" % (name, st, _err_code(body)), file=sys.stderr)
                return False
            time.sleep(0.5)
        took = time.monotonic() - t0
        st, _, body = request("DELETE", name, key)
        if st != 204:
            print("probe %s: DELETE FAILED HTTP %d %s" % (name, st, _err_code(body)), file=sys.stderr)
            return False
        print("bucket %s: write probe ok (%.1fs)" % (name, took))
    return True


def smoke(bucket):
    results = []

    def check(name, ok, detail="", required=True):
        if required:
            results.append((name, bool(ok)))
        label = "ok" if ok else ("FAIL" if required else "no")
        print("%-4s %s%s" % (label, name, (" -- " + detail) if detail else ""))
        return ok

    run = "smoke-%s" % uuid.uuid4().hex[:12]
    key = run + "/dir/a.txt"
    body = b"hello streamflow\n"

    st, h, _ = request("PUT", bucket, key, body=body)
    check("PUT object", st == 200, "HTTP %d" % st)
    etag = h.get("etag", "")

    st, _, got = request("GET", bucket, key)
    check("GET object", st == 200 and got == body, "HTTP %d, %d bytes" % (st, len(got)))

    st, h2, _ = request("HEAD", bucket, key)
    check("HEAD object", st == 200 and h2.get("content-length") == str(len(body)), "HTTP %d" % st)

    st, _, got = request("GET", bucket, key, headers={"Range": "bytes=6-15"})
    check("GET range", st == 206 and got == body[6:16], "HTTP %d %r" % (st, got))

    # Conditional create (object_store PutMode::Create): must be 412 on an existing key.
    st, _, b = request("PUT", bucket, key, headers={"If-None-Match": "*"}, body=b"overwrite")
    check("PUT If-None-Match:* on existing key -> 412", st == 412, "HTTP %d %s" % (st, _err_code(b)))
    st, _, got = request("GET", bucket, key)
    check("existing key unchanged after rejected conditional PUT", got == body)
    st, _, b = request("PUT", bucket, run + "/new.txt", headers={"If-None-Match": "*"}, body=b"new")
    check("PUT If-None-Match:* on new key -> 200", st == 200, "HTTP %d %s" % (st, _err_code(b)))

    # Racing conditional creates: exactly one writer may win.
    race_key = run + "/race.txt"
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(
            lambda i: request("PUT", bucket, race_key, headers={"If-None-Match": "*"}, body=b"w%d" % i)[0],
            range(8),
        ))
    st, _, got = request("GET", bucket, race_key)
    check("8 racing PUT If-None-Match:* -> exactly one 200, rest 412",
          sorted(codes) == [200] + [412] * 7 and got == b"w%d" % codes.index(200),
          "%s, stored %r" % (codes, got))

    # Conditional update (object_store PutMode::Update): If-Match with the current / a stale ETag.
    st, h3, b = request("PUT", bucket, key, headers={"If-Match": etag}, body=b"v2")
    check("PUT If-Match:<current etag> -> 200", st == 200, "HTTP %d %s" % (st, _err_code(b)))
    st, _, b = request("PUT", bucket, key, headers={"If-Match": etag}, body=b"v3")
    check("PUT If-Match:<stale etag> -> 412", st == 412, "HTTP %d %s" % (st, _err_code(b)))

    # Racing conditional updates from the same ETag: exactly one writer may win.
    race_etag = request("HEAD", bucket, race_key)[1].get("etag", "")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(
            lambda i: request("PUT", bucket, race_key, headers={"If-Match": race_etag}, body=b"u%d" % i)[0],
            range(8),
        ))
    st, _, got = request("GET", bucket, race_key)
    check("8 racing PUT If-Match:<same etag> -> exactly one 200, rest 412",
          sorted(codes) == [200] + [412] * 7 and got == b"u%d" % codes.index(200),
          "%s, stored %r" % (codes, got))

    # ListObjectsV2 with prefix (+ delimiter) and pagination.
    for i in range(3):
        request("PUT", bucket, "%s/list/k%d" % (run, i), body=b"x")
    request("PUT", bucket, "%s/list/sub/deep" % run, body=b"x")
    st, _, b = request("GET", bucket, query={"list-type": "2", "prefix": run + "/list/"})
    keys = _xml_find_all(b, "Key")
    want = ["%s/list/k%d" % (run, i) for i in range(3)] + ["%s/list/sub/deep" % run]
    check("ListObjectsV2 prefix", st == 200 and sorted(keys) == sorted(want), "HTTP %d %s" % (st, keys))
    st, _, b = request(
        "GET", bucket, query={"list-type": "2", "prefix": run + "/list/", "delimiter": "/"}
    )
    keys = _xml_find_all(b, "Key")
    prefixes = _xml_find_all(b, "Prefix")
    check(
        "ListObjectsV2 prefix+delimiter",
        st == 200 and len(keys) == 3 and (run + "/list/sub/") in prefixes,
        "keys=%s prefixes=%s" % (keys, prefixes),
    )
    st, _, b = request(
        "GET", bucket, query={"list-type": "2", "prefix": run + "/list/", "max-keys": "2"}
    )
    tok = _xml_find_all(b, "NextContinuationToken")
    keys1 = _xml_find_all(b, "Key")
    keys2 = []
    if tok:
        st2, _, b2 = request(
            "GET",
            bucket,
            query={"list-type": "2", "prefix": run + "/list/", "max-keys": "2", "continuation-token": tok[0]},
        )
        keys2 = _xml_find_all(b2, "Key")
    check("ListObjectsV2 pagination", sorted(keys1 + keys2) == sorted(want), "%s + %s" % (keys1, keys2))

    # CopyObject (object_store copy / copy_if_not_exists).
    st, _, b = request(
        "PUT", bucket, run + "/copy.txt", headers={"x-amz-copy-source": "/%s/%s" % (bucket, _q(key, "-_.~/"))}
    )
    st2, _, got = request("GET", bucket, run + "/copy.txt")
    check("CopyObject", st == 200 and st2 == 200 and got == b"v2", "HTTP %d/%d" % (st, st2))
    # Informational: conditional copy (object_store's copy_if_not_exists with the
    # If-None-Match header style); not required.
    st, _, b = request(
        "PUT",
        bucket,
        run + "/copy.txt",
        headers={"x-amz-copy-source": "/%s/%s" % (bucket, _q(key, "-_.~/")), "If-None-Match": "*"},
    )
    check("(info) CopyObject If-None-Match:* onto existing key -> 412", st == 412,
          "HTTP %d %s" % (st, _err_code(b)), required=False)

    # Multipart upload: 5 MiB part + small last part.
    mkey = run + "/multipart.bin"
    part1 = os.urandom(5 * 1024 * 1024)
    part2 = os.urandom(1234)
    st, _, b = request("POST", bucket, mkey, query={"uploads": ""})
    upload_id = (_xml_find_all(b, "UploadId") or [""])[0]
    ok = check("CreateMultipartUpload", st == 200 and upload_id, "HTTP %d" % st)
    if ok:
        etags = []
        for n, data in ((1, part1), (2, part2)):
            st, h, _ = request(
                "PUT", bucket, mkey, query={"partNumber": str(n), "uploadId": upload_id}, body=data
            )
            etags.append(h.get("etag", ""))
            check("UploadPart %d" % n, st == 200 and etags[-1], "HTTP %d" % st)
        complete = "<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % "".join(
            "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>" % (i + 1, e)
            for i, e in enumerate(etags)
        )
        st, _, b = request("POST", bucket, mkey, query={"uploadId": upload_id}, body=complete.encode())
        check("CompleteMultipartUpload", st == 200 and b"Error" not in b[:200], "HTTP %d" % st)
        st, _, got = request("GET", bucket, mkey)
        check("GET multipart object", st == 200 and got == part1 + part2, "HTTP %d, %d bytes" % (st, len(got)))
        # Abort of a fresh upload (object_store aborts on error).
        st, _, b = request("POST", bucket, run + "/aborted.bin", query={"uploads": ""})
        aid = (_xml_find_all(b, "UploadId") or [""])[0]
        st, _, _ = request("DELETE", bucket, run + "/aborted.bin", query={"uploadId": aid})
        check("AbortMultipartUpload", st == 204, "HTTP %d" % st)

    # DeleteObjects (bulk, what object_store's delete_stream uses; it sends Content-MD5).
    bulk = [run + "/list/k0", run + "/list/k1"]
    payload = (
        '<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>false</Quiet>%s</Delete>'
        % "".join("<Object><Key>%s</Key></Object>" % k for k in bulk)
    ).encode()
    md5 = base64.b64encode(hashlib.md5(payload).digest()).decode()
    st, _, b = request("POST", bucket, query={"delete": ""}, headers={"Content-MD5": md5}, body=payload)
    deleted = _xml_find_all(b, "Key")
    check("DeleteObjects (bulk)", st == 200 and sorted(deleted) == sorted(bulk) and b"<Error>" not in b,
          "HTTP %d deleted=%s" % (st, deleted))

    # DELETE everything else we wrote, then verify 404 and an empty listing.
    st, _, b = request("GET", bucket, query={"list-type": "2", "prefix": run + "/"})
    all_keys = _xml_find_all(b, "Key")
    statuses = [request("DELETE", bucket, k)[0] for k in all_keys]
    check("DELETE objects", statuses and all(s == 204 for s in statuses), "%s" % statuses)
    st, _, _ = request("GET", bucket, key)
    check("GET deleted object -> 404", st == 404, "HTTP %d" % st)
    st, _, _ = request("DELETE", bucket, key)
    check("DELETE missing object -> 204", st == 204, "HTTP %d" % st)
    st, _, b = request("GET", bucket, query={"list-type": "2", "prefix": run + "/"})
    check("listing empty after delete", st == 200 and not _xml_find_all(b, "Key"), "%s" % _xml_find_all(b, "Key"))

    failed = [n for n, ok in results if not ok]
    print("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
    return not failed


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "ping":
        return 0 if ping() else 1
    if cmd == "wait":
        return 0 if wait(args[0] if args else 60) else 1
    if cmd == "mkbucket":
        return 0 if mkbucket(args) else 1
    if cmd == "rmbucket":
        return 0 if rmbucket(args) else 1
    if cmd == "ready":
        return 0 if mkbucket(args) and probe(args) else 1
    if cmd == "download" and len(args) == 3:
        return 0 if download(*args) else 1
    if cmd == "smoke":
        return 0 if smoke(args[0] if args else "landing") else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
