#!/usr/bin/env python3
"""Key separation check of the container cluster (make test-cluster; docs/deploy.md).

usage: cluster-keycheck.py CLUSTER_DIR OWNER=TARCMD ...

CLUSTER_DIR is the host's bootstrap directory (ca/ holds the CA, admin/ the admin's
workstation). Each OWNER=TARCMD names one node machine and a shell command that writes its
data directory as a tar stream to stdout (`docker cp CONTAINER:/var/lib/coffer -`). The
streams are read twice and never written to disk.

It fails (exit 1, naming every violation) unless:
  1. the CA key is in CLUSTER_DIR/ca and nowhere else: no ca-key.pem file, and no private
     key whose public key is the CA certificate's, on any node or on the admin's side;
  2. every private key is held by exactly one owner (same public key => same key); age
     identities (AGE-SECRET-KEY-1..., an agent's host key) count as private keys too;
  3. every node holds its own key: node-key.pem matches the public key of node.pem's leaf
     certificate, issuer-key.pem (meta servers) that of issuer.pem, agent-key.pem (the
     agent) that of agent.pem;
  4. no owner's file contains another owner's private key in any form it is stored in: the
     PEM body (base64, wrapped or not) or the DER bytes, anywhere in any file, so a key
     copied into a log, a YAML file or a database is found too.
"""
import base64
import os
import re
import subprocess
import sys
import tarfile

PEM_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----\r?\n(.*?)-----END \1-----", re.S)
AGE_KEY = re.compile(rb"AGE-SECRET-KEY-1[02-9ACDEFGHJKLMNPQRSTUVWXYZ]{58}")
PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.S)


def openssl(args, data):
    r = subprocess.run(["openssl"] + args, input=data, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode(errors="replace").strip()))
    return r.stdout


def key_pub(pem):
    """The public key (DER) of a PEM private key."""
    return openssl(["pkey", "-pubout", "-outform", "DER"], pem)


def cert_pub(pem):
    """The public key (DER) of the first certificate of a PEM file."""
    first = PEM_CERT.search(pem)
    if not first:
        raise RuntimeError("no certificate")
    pub = openssl(["x509", "-noout", "-pubkey"], first.group(0))
    return openssl(["pkey", "-pubin", "-outform", "DER"], pub)


def host_files(root):
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    yield os.path.relpath(p, root), f.read()


def tar_files(cmd):
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
        for m in tf:
            if m.isfile():
                yield m.name, tf.extractfile(m).read()
    if proc.wait() != 0:
        raise RuntimeError("%s: exit %d" % (cmd, proc.returncode))


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cluster = sys.argv[1]
    sources = {"ca": lambda: host_files(os.path.join(cluster, "ca")),
               "admin": lambda: host_files(os.path.join(cluster, "admin"))}
    for arg in sys.argv[2:]:
        owner, cmd = arg.split("=", 1)
        sources[owner] = (lambda c: lambda: tar_files(c))(cmd)

    bad = []
    keys = {}      # public key DER -> list of (owner, path, private PEM)
    named = {}     # owner -> {basename: content} for the own-key checks
    for owner, files in sources.items():
        named[owner] = {}
        for path, data in files():
            base = os.path.basename(path)
            if base.endswith(".pem"):
                named[owner][base] = data
            if base == "ca-key.pem" and owner != "ca":
                bad.append("%s holds a CA key file: %s" % (owner, path))
            for m in AGE_KEY.finditer(data):
                # An age identity (an agent's host key, a platform key) is its own name.
                keys.setdefault(b"age:" + m.group(0), []).append((owner, path, m.group(0)))
            for m in PEM_KEY.finditer(data):
                pem = m.group(0)
                try:
                    keys.setdefault(key_pub(pem), []).append((owner, path, pem))
                except RuntimeError as e:
                    bad.append("%s %s: unreadable private key: %s" % (owner, path, e))

    ca_pub = cert_pub(named["ca"]["ca.pem"])
    for pub, where in keys.items():
        owners = sorted({o for o, _, _ in where})
        if pub == ca_pub:
            for o, p, _ in where:
                if o != "ca":
                    bad.append("the CA key is held by %s in %s" % (o, p))
        if len(owners) > 1:
            bad.append("one private key is held by %s: %s" % (
                ", ".join(owners), ", ".join("%s:%s" % (o, p) for o, p, _ in where)))
    if ca_pub not in keys or {o for o, _, _ in keys[ca_pub]} != {"ca"}:
        bad.append("the CA key is not (only) in %s/ca" % cluster)

    nodes = [o for o in sources if o not in ("ca", "admin")]
    for owner in nodes + ["admin"]:
        pems = named[owner]
        pairs = [("node-key.pem", "node.pem"), ("issuer-key.pem", "issuer.pem"),
                 ("agent-key.pem", "agent.pem"), ("admin-key.pem", "admin.pem")]
        own = 0
        for k, c in pairs:
            if k not in pems:
                continue
            own += 1
            if c not in pems:
                bad.append("%s: %s without %s" % (owner, k, c))
                continue
            m = PEM_KEY.search(pems[k])
            if not m or key_pub(m.group(0)) != cert_pub(pems[c]):
                bad.append("%s: %s is not the key of %s" % (owner, k, c))
        if own == 0:
            bad.append("%s holds no private key of its own" % owner)

    # 4. Raw search: each key's DER and base64 body in every other owner's files.
    needles = []   # (owner, path, owners of that key, [byte strings])
    for where in keys.values():
        holders = {o for o, _, _ in where}   # a key held twice is reported above already
        for owner, path, pem in where:
            if AGE_KEY.fullmatch(pem):
                needles.append((owner, path, holders, [pem, pem.lower()]))
                continue
            body = PEM_KEY.search(pem).group(2)
            b64 = b"".join(body.split())
            forms = [b64, base64.b64decode(b64)]
            forms += [line for line in body.split() if len(line) >= 40]
            needles.append((owner, path, holders, forms))
    for owner, files in sources.items():
        for path, data in files():
            for o, p, holders, forms in needles:
                if owner in holders:
                    continue
                if any(f in data for f in forms):
                    bad.append("%s:%s contains the private key of %s (%s)" % (owner, path, o, p))

    total = sum(len(w) for w in keys.values())
    if bad:
        for b in bad:
            print("keycheck: FAIL: " + b)
        return 1
    print("keycheck: OK: %d private keys on %d machines (%s); the CA key only in %s/ca; "
          "each node holds only its own keys, matching its certificates; no key found in "
          "another machine's files" % (total, len(sources), ", ".join(sources), cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
