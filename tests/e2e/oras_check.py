#!/usr/bin/env python3
"""ORAS artifact + referrers end-to-end check, driven by the `oras` Python library.

Usage: oras_check.py HOST:PORT [REPO]

Prints one `ok - ...` / `not ok - ...` line per check and exits 1 if any check
failed (real-clients.sh counts these lines).

What the installed library (oras-py, checked against 0.2.43) really supports,
read from its site-packages source:

* `Registry.push(target, files=[...], manifest_config="PATH:MEDIATYPE",
  manifest_annotations={...}, subject=oras.oci.Subject(...))` uploads each blob
  (HEAD, then POST + monolithic PUT) and PUTs an OCI image manifest.  `subject`
  is supported natively.
* There is NO `artifactType` parameter anywhere in the library.  `push()` hands
  the finished manifest dict to `Registry.upload_manifest()` just before the
  PUT, so the subclass below sets `manifest["artifactType"]` there; everything
  else (blob uploads, config upload, the manifest PUT itself) is still done by
  the library.  Its JSON schema allows extra manifest fields.
* The config descriptor is computed by the library from the file we give it;
  we give it a 2-byte `{}` file with media type
  `application/vnd.oci.empty.v1+json`, i.e. the OCI "empty descriptor".
* There is no referrers call in the library, so `GET /v2/<name>/referrers/<digest>`
  is issued through the library's own `requests` session.
* `Registry.do_request` is wrapped in a retry decorator that retries HTTP 500s
  and exceptions 5 times with sleeps of 3..83 s.  That would hide flaky server
  errors and can stall for minutes, so the subclass uses the undecorated method:
  every request is made exactly once.
* `Subject.from_manifest()` recomputes a digest from `json.dumps(dict)`, which
  only works if the server echoes byte-identical JSON; we instead build the
  Subject from the exact bytes the library sent (`response.request.body`).
"""

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import traceback

import oras.oci
import oras.provider

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_MT = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
ARTIFACT_TYPE = "application/vnd.berth.e2e.artifact.v1"
PAYLOAD_MT = "application/vnd.berth.e2e.payload.v1"
SIG_TYPE = "application/vnd.berth.e2e.signature.v1"
SIG_MT = "application/vnd.berth.e2e.signature.blob.v1"
CFG_TYPE = "application/vnd.berth.e2e.config.v1+json"
HTTP_TIMEOUT = 60

results = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    if ok:
        results["passed"] += 1
        print(f"ok - oras: {name}", flush=True)
    else:
        results["failed"] += 1
        detail = " ".join(str(detail).split())  # keep it on one line
        print(f"not ok - oras: {name}" + (f": {detail}" if detail else ""), flush=True)
    return ok


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ctype(resp) -> str:
    # Clients should ignore Content-Type parameters (spec), so strip them.
    return resp.headers.get("Content-Type", "").split(";")[0].strip()


class Registry(oras.provider.Registry):
    # No retries: a failing request must surface as a failing check, at once.
    do_request = getattr(oras.provider.Registry.do_request, "__wrapped__",
                         oras.provider.Registry.do_request)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session.request = functools.partial(self.session.request, timeout=HTTP_TIMEOUT)
        self.artifact_type = None  # set before push() to add "artifactType"

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        return super().upload_manifest(manifest, container)


def pushed(reg, resp):
    """(digest, bytes) of the manifest the library just PUT."""
    body = resp.request.body
    if isinstance(body, str):
        body = body.encode()
    return sha256(body), body


def main():
    host = sys.argv[1]
    repo = sys.argv[2] if len(sys.argv) > 2 else "e2e/oras-artifact"
    base = f"http://{host}/v2/{repo}"

    reg = Registry(hostname=host, insecure=True)
    work = tempfile.mkdtemp(prefix="oras-e2e.")
    os.chdir(work)  # the library only accepts blobs under the working directory
    try:
        return run(host, repo, base, reg, work)
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


def run(host, repo, base, reg, work):
    s = reg.session

    payload = f"berth oras payload {os.getpid()} {os.urandom(8).hex()}\n".encode()
    with open("payload.txt", "wb") as f:
        f.write(payload)
    with open("empty.json", "wb") as f:
        f.write(b"{}")
    sig = b"not really a signature " + os.urandom(8).hex().encode()
    with open("sig.bin", "wb") as f:
        f.write(sig)
    cfg = json.dumps({"berth": "e2e", "nonce": os.urandom(4).hex()}).encode()
    with open("cfg.json", "wb") as f:
        f.write(cfg)

    # 1. artifact with artifactType + empty config --------------------------------
    reg.artifact_type = ARTIFACT_TYPE
    resp = reg.push(
        target=f"{host}/{repo}:v1",
        files=[f"payload.txt:{PAYLOAD_MT}"],
        manifest_config=f"empty.json:{EMPTY_MT}",
        manifest_annotations={"org.opencontainers.image.description": "berth e2e artifact"},
        quiet=True,
    )
    subj_digest, subj_body = pushed(reg, resp)
    check(
        "push artifact with artifactType and empty config (library push)",
        resp.status_code == 201 and resp.headers.get("Docker-Content-Digest") == subj_digest,
        f"status={resp.status_code} Docker-Content-Digest={resp.headers.get('Docker-Content-Digest')} want {subj_digest}",
    )

    r = s.get(f"{base}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    m = r.json() if r.status_code == 200 else {}
    cfgd = m.get("config", {})
    check(
        "artifact manifest round trip (bytes, digest header, artifactType, empty config)",
        r.status_code == 200
        and r.content == subj_body
        and r.headers.get("Docker-Content-Digest") == subj_digest
        and ctype(r) == OCI_MANIFEST
        and m.get("artifactType") == ARTIFACT_TYPE
        and cfgd.get("mediaType") == EMPTY_MT
        and cfgd.get("digest") == EMPTY_DIGEST
        and cfgd.get("size") == 2
        and [l.get("mediaType") for l in m.get("layers", [])] == [PAYLOAD_MT],
        f"status={r.status_code} content-type={ctype(r)} digest={r.headers.get('Docker-Content-Digest')} "
        f"same-bytes={r.content == subj_body} body={r.text[:300]}",
    )

    out = os.path.join(work, "pulled")
    files = reg.pull(target=f"{host}/{repo}:v1", outdir=out)
    got = open(files[0], "rb").read() if len(files) == 1 else None
    eb = s.get(f"{base}/blobs/{EMPTY_DIGEST}")
    check(
        "pull artifact back (library pull, payload and empty config blob bytes)",
        got == payload and eb.status_code == 200 and eb.content == b"{}",
        f"files={files} payload-equal={got == payload} empty-blob={eb.status_code} {eb.content[:20]!r}",
    )

    # 2. referrers: one with artifactType, one without (config mediaType) --------
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subj_digest, size=len(subj_body))
    reg.artifact_type = SIG_TYPE
    resp = reg.push(
        target=f"{host}/{repo}:sig",
        files=[f"sig.bin:{SIG_MT}"],
        manifest_config=f"empty.json:{EMPTY_MT}",
        manifest_annotations={"org.berth.e2e.kind": "signature"},
        subject=subject,
        quiet=True,
    )
    ref1_digest, ref1_body = pushed(reg, resp)
    check(
        "push referrer manifest with subject (library push)",
        resp.status_code == 201 and resp.headers.get("Docker-Content-Digest") == ref1_digest,
        f"status={resp.status_code} Docker-Content-Digest={resp.headers.get('Docker-Content-Digest')} want {ref1_digest}",
    )
    ref1_oci_subject = resp.headers.get("OCI-Subject")

    r = s.get(f"{base}/manifests/{ref1_digest}", headers={"Accept": OCI_MANIFEST})
    rm = r.json() if r.status_code == 200 else {}
    check(
        "referrer manifest round trip by digest (subject intact)",
        r.status_code == 200
        and r.content == ref1_body
        and rm.get("subject") == {"mediaType": OCI_MANIFEST, "digest": subj_digest, "size": len(subj_body)}
        and rm.get("artifactType") == SIG_TYPE,
        f"status={r.status_code} body={r.text[:300]}",
    )

    reg.artifact_type = None
    resp = reg.push(
        target=f"{host}/{repo}:cfgref",
        files=[f"sig.bin:{SIG_MT}"],
        manifest_config=f"cfg.json:{CFG_TYPE}",
        manifest_annotations={"org.berth.e2e.kind": "config-typed"},
        subject=subject,
        quiet=True,
    )
    ref2_digest, ref2_body = pushed(reg, resp)
    check(
        "push second referrer without artifactType (config mediaType only)",
        resp.status_code == 201 and resp.headers.get("Docker-Content-Digest") == ref2_digest,
        f"status={resp.status_code} Docker-Content-Digest={resp.headers.get('Docker-Content-Digest')} want {ref2_digest}",
    )
    # distribution-spec "Pushing Manifests with Subject": a registry with the
    # referrers API MUST answer such a PUT with `OCI-Subject: <subject digest>`.
    ref2_oci_subject = resp.headers.get("OCI-Subject")
    check(
        "registry acknowledges subject with OCI-Subject header (both referrer pushes)",
        ref1_oci_subject == subj_digest and ref2_oci_subject == subj_digest,
        f"OCI-Subject={ref1_oci_subject!r}, {ref2_oci_subject!r} want {subj_digest}",
    )

    tags = reg.get_tags(f"{host}/{repo}")
    check("tags list via library has v1, sig, cfgref", sorted(tags) == ["cfgref", "sig", "v1"], f"tags={tags}")

    # 3. referrers API (distribution-spec 1.1 "Listing Referrers") ---------------
    r = s.get(f"{base}/referrers/{subj_digest}")
    idx = {}
    try:
        idx = r.json()
    except ValueError:
        pass
    descs = {d.get("digest"): d for d in idx.get("manifests", [])} if isinstance(idx, dict) else {}
    d1, d2 = descs.get(ref1_digest, {}), descs.get(ref2_digest, {})
    check(
        "referrers API lists both referrers with the right artifactType",
        r.status_code == 200
        and ctype(r) == OCI_INDEX
        and idx.get("schemaVersion") == 2
        and idx.get("mediaType") == OCI_INDEX
        and len(idx.get("manifests", [])) == 2
        and set(descs) == {ref1_digest, ref2_digest}
        and d1.get("mediaType") == OCI_MANIFEST
        and d1.get("size") == len(ref1_body)
        and d1.get("artifactType") == SIG_TYPE
        and (d1.get("annotations") or {}).get("org.berth.e2e.kind") == "signature"
        and d2.get("size") == len(ref2_body)
        and d2.get("artifactType") == CFG_TYPE
        and (d2.get("annotations") or {}).get("org.berth.e2e.kind") == "config-typed",
        f"GET /v2/{repo}/referrers/{subj_digest} -> {r.status_code} content-type={ctype(r)!r} body={r.text[:400]}",
    )

    r = s.get(f"{base}/referrers/{subj_digest}", params={"artifactType": SIG_TYPE})
    try:
        fidx = r.json()
    except ValueError:
        fidx = {}
    got = sorted(d.get("digest") for d in fidx.get("manifests", [])) if isinstance(fidx, dict) else None
    applied = "artifacttype" in r.headers.get("OCI-Filters-Applied", "").lower()
    # Filtering is a SHOULD: if the registry says it filtered, only ref1 may be
    # listed; if it did not, the unfiltered list must come back.
    want = [ref1_digest] if applied else sorted([ref1_digest, ref2_digest])
    check(
        "referrers API artifactType filter (" + ("applied" if applied else "not applied") + ")",
        r.status_code == 200 and ctype(r) == OCI_INDEX and got == want,
        f"status={r.status_code} OCI-Filters-Applied={r.headers.get('OCI-Filters-Applied')!r} got={got} want={want}",
    )

    r = s.get(f"{base}/referrers/{ref1_digest}")
    try:
        eidx = r.json()
    except ValueError:
        eidx = {}
    check(
        "referrers API returns an empty index (not 404) for a digest without referrers",
        r.status_code == 200 and ctype(r) == OCI_INDEX and isinstance(eidx, dict)
        and eidx.get("mediaType") == OCI_INDEX and eidx.get("manifests") == [],
        f"status={r.status_code} body={r.text[:200]}",
    )

    r = s.get(f"{base}/referrers/sha256:not-a-digest")
    check(
        "referrers API answers 400 to an invalid digest",
        r.status_code == 400,
        f"status={r.status_code}",
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print("usage: oras_check.py HOST:PORT [REPO]", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except Exception as e:  # any crash is a failed check, with the reason
        traceback.print_exc()
        check("helper ran to completion", False, f"{type(e).__name__}: {e}")
    print(f"oras helper finished: {results['passed']} ok, {results['failed']} not ok", flush=True)
    sys.exit(1 if results["failed"] else 0)
