#!/usr/bin/env python3
"""Writes the hand-picked seeds: fuzz/seeds/<target>/hand-<name>.

Valid inputs in the formats each target reads, built from the repository's real C tor
documents (src/dircache/testdata, tests/fixtures/consdiff) and from the wire formats of
tor-spec / rend-spec / control-spec / dir-spec, so libFuzzer starts from inputs that get past
the first length and version checks. The rest of fuzz/seeds/<target>/ is the `cargo fuzz cmin`
of a long run's corpus (see fuzz/README.md).

Deterministic: the one RSA key (a throwaway) is generated only when its seed file is missing.
Needs python3 with `cryptography`.
Usage: fuzz/make_seeds.py   (rewrites every hand-* seed; other seed files are left alone)
"""
import base64
import datetime
import hashlib
import re
import struct
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
TESTDATA = ROOT / "src" / "dircache" / "testdata"
CONSDIFF = ROOT / "tests" / "fixtures" / "consdiff"

written = 0


def seed(target, name, data):
    global written
    if isinstance(data, str):
        data = data.encode()
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"hand-{name}").write_bytes(data)
    written += 1


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def pad(b, n=509):
    return b + bytes(n - len(b))


def fixed_cell(circ_id, cmd, body, v=5):
    """A fixed-length cell (tor-spec §3): CircID (2 bytes before link v4, else 4) | CMD | body."""
    cid = u16(circ_id) if v < 4 else u32(circ_id)
    return cid + u8(cmd) + pad(body)


def var_cell(circ_id, cmd, body, v=5):
    cid = u16(circ_id) if v < 4 else u32(circ_id)
    return cid + u8(cmd) + u16(len(body)) + body


def pem_blocks(text, label):
    pat = rf"-----BEGIN {label}-----\n(.*?)-----END {label}-----"
    return [base64.b64decode("".join(m.split())) for m in re.findall(pat, text, re.S)]


def ed_raw(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed_cert(signer, cert_type, key, exp_hours, with_signed_by=True):
    """cert-spec §2.1: an Ed25519 certificate signed by `signer`."""
    body = u8(1) + u8(cert_type) + u32(exp_hours) + u8(1) + key
    if with_signed_by:
        body += u8(1) + u16(32) + u8(4) + u8(0) + ed_raw(signer)
    else:
        body += u8(0)
    return body + signer.sign(body)


# ---- real documents -------------------------------------------------------------------------
descs_text = (TESTDATA / "server-descriptors.txt").read_text()
descs = [d for d in re.split(r"(?m)^(?=router )", descs_text) if d]
certs_text = (TESTDATA / "certs.txt").read_text()
micro_text = (TESTDATA / "microdescs.txt").read_text()

for name in ["consensus-ns.txt", "consensus-microdesc.txt"]:
    seed("dir_consensus", name, (TESTDATA / name).read_text())
seed("dir_authcert", "certs-all", certs_text)
seed("dir_authcert", "cert-one", certs_text.split("dir-key-certificate-version")[1].join(["dir-key-certificate-version", ""]))
for i, d in enumerate(descs[:3]):
    seed("dir_descriptor", f"server-descriptor-{i}", d)
seed("dir_descriptor", "microdescs", micro_text)

ed_certs = pem_blocks(descs_text, "ED25519 CERT")
for i, c in enumerate(ed_certs[:4]):
    seed("keys_cert", f"descriptor-ed-cert-{i}", c)
rsa_pubs = pem_blocks(certs_text + descs_text, "RSA PUBLIC KEY")
for i, k in enumerate(rsa_pubs[:3]):
    seed("keys_der", f"rsa-public-{i}", k)

# ---- consensus diffs (dir-spec appendix "consensus diffs") ------------------------------------
for flavor in ["ns", "microdesc"]:
    base = (CONSDIFF / flavor / "base").read_bytes()
    target = (CONSDIFF / flavor / "target").read_bytes()
    diff = (CONSDIFF / flavor / "ctor.diff").read_bytes()
    seed("dircache_consdiff", f"apply-{flavor}", b"\x00" + base + b"\xff" + diff)
    seed("dircache_consdiff", f"generate-{flavor}", b"\x02" + base + b"\xff" + target)
seed("dircache_consdiff", "script-delete", b"\x015,6d\n3c\nvalid-after 2026-01-01 01:00:00\n.\n")
seed("dircache_consdiff", "script-append", b"\x017a\nr c CCCC x\nm 3\n.\n1d\n")

# ---- channel cells (tor-spec §4, §5.1, §9) -------------------------------------------------
seed("chan_versions", "3-4-5", u16(3) + u16(4) + u16(5))
seed("chan_versions", "4", u16(4))

chal = bytes(range(32))
seed("chan_auth", "auth-challenge", chal + u16(2) + u16(1) + u16(3))
auth0003 = b"AUTH0003" + b"".join(bytes([i] * 32) for i in range(1, 7)) + bytes(24) + bytes(64)
seed("chan_auth", "authenticate-auth0003", u16(3) + u16(len(auth0003)) + auth0003)
seed("chan_auth", "auth0003", auth0003)

idkey = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([21] * 32))
signkey = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([22] * 32))
sign_cert = ed_cert(idkey, 4, ed_raw(signkey), 500000)
link_cert = ed_cert(signkey, 5, hashlib.sha256(b"link").digest(), 500000, False)
crosscert = ed_raw(idkey) + u32(500000) + u8(128) + bytes(128)
seed("keys_cert", "signing-cert-type4", sign_cert)
seed("keys_cert", "link-cert-type5", link_cert)
seed("keys_cert", "rsa-ed-crosscert", crosscert)


def x509_cert(key, cn, issuer_key=None, issuer_cn=None):
    now = datetime.datetime(2026, 1, 1)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn or cn)]))
         .public_key(key.public_key()).serial_number(1)
         .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365)))
    return b.sign(issuer_key or key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# One throwaway RSA key for the X.509 identity cert and the RSA key-file seed. It is kept in
# that seed, so reruns reuse it and only a missing seed makes a new one.
rsa_pem_seed = SEEDS / "keys_keyfile" / "hand-rsa-private-pem"
if rsa_pem_seed.exists():
    rsa_id = serialization.load_pem_private_key(rsa_pem_seed.read_bytes(), password=None)
else:
    rsa_id = rsa.generate_private_key(public_exponent=65537, key_size=1024)
id_cert = x509_cert(rsa_id, "www.fors.net")
seed("keys_der", "x509-identity", id_cert)
seed("keys_der", "rsa-public-1024", rsa_id.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.PKCS1))


def certs_body(entries):
    return u8(len(entries)) + b"".join(u8(t) + u16(len(c)) + c for t, c in entries)


seed("chan_certs", "responder", certs_body([(2, id_cert), (4, sign_cert), (5, link_cert), (7, crosscert)]))
seed("chan_certs", "initiator", certs_body([(2, id_cert), (7, crosscert), (4, sign_cert), (6, link_cert)]))

ntor_x = x25519.X25519PrivateKey.from_private_bytes(bytes([5] * 32)).public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ntor_skin = bytes([7] * 20) + bytes([9] * 32) + ntor_x
seed("chan_create", "create2-ntor", pad(u16(2) + u16(84) + ntor_skin))
seed("chan_create", "create2-ntorv3", pad(u16(3) + u16(32 + 32 + 32 + 4 + 32) + bytes(range(132))))
seed("chan_create", "created2-ntor", pad(u16(64) + bytes(range(64))))
seed("chan_create", "create-fast", pad(bytes(range(20))))
seed("chan_create", "created-fast", pad(bytes(range(40))))
seed("chan_create", "destroy-finished", pad(u8(9)))
seed("chan_create", "padding-negotiate", pad(u8(0) + u8(2) + u16(1500) + u16(9500)))


def netinfo(ts, other, mine):
    def addr(a):
        return (u8(4) + u8(4) + bytes(a)) if len(a) == 4 else (u8(6) + u8(16) + bytes(a))
    return u32(ts) + addr(other) + u8(len(mine)) + b"".join(addr(a) for a in mine)


seed("chan_netinfo", "v4", pad(netinfo(1_780_000_000, [127, 0, 0, 1], [[127, 0, 0, 2]])))
seed("chan_netinfo", "v6", pad(netinfo(0, [0] * 15 + [1], [[127, 0, 0, 2], [0] * 15 + [1]])))

versions_cell = var_cell(0, 7, u16(3) + u16(4) + u16(5), v=3)
netinfo_cell = fixed_cell(0, 8, netinfo(1_780_000_000, [127, 0, 0, 1], [[127, 0, 0, 2]]))
seed("framer", "unnegotiated-versions", u8(0) + versions_cell)
seed("framer", "v5-netinfo-create-fast", u8(3) + netinfo_cell + fixed_cell(0x80000001, 5, bytes(20)))
seed("framer", "v4-vpadding-padding", u8(2) + var_cell(0, 128, bytes(16)) + fixed_cell(0, 0, b""))
seed("framer", "v3-relay", u8(1) + fixed_cell(1, 3, bytes(11), v=3))

# channel_handshake: even first byte = VERSIONS(4,5) is sent first.
seed("channel_handshake", "client-netinfo", u8(0) + netinfo_cell)
seed("channel_handshake", "relay-certs-authenticate", u8(0) + var_cell(0, 129, certs_body(
    [(2, id_cert), (7, crosscert), (4, sign_cert), (6, link_cert)]))
    + var_cell(0, 131, u16(3) + u16(len(auth0003)) + auth0003) + netinfo_cell)
seed("channel_handshake", "raw-versions", u8(1) + versions_cell + var_cell(0, 128, bytes(8)))

# channel_open: after VERSIONS + NETINFO, with 4-byte circuit IDs.
seed("channel_open", "create-fast-relay", u8(0) + fixed_cell(0x80000001, 5, bytes(20))
     + fixed_cell(0x80000001, 3, pad(u8(2) + bytes(10))) + fixed_cell(0x80000001, 4, u8(9)))
seed("channel_open", "padding-negotiate", u8(1) + fixed_cell(0, 12, u8(0) + u8(2) + u16(1500) + u16(9500))
     + fixed_cell(0, 0, b"") + var_cell(0, 128, bytes(32)))
seed("channel_open", "create2", u8(1) + fixed_cell(0x80000002, 10, u16(2) + u16(84) + ntor_skin))

# ---- relay messages (tor-spec §6) ----------------------------------------------------------
begin = b"127.0.0.1:80\x00" + u32(0)
begin6 = b"[::1]:443\x00" + u32(1)
beginh = b"www.example.com:80\x00" + u32(5)
end_policy = u8(4) + bytes([127, 0, 0, 1]) + u32(300)
connected4 = bytes([127, 0, 0, 1]) + u32(300)
connected6 = bytes(4) + u8(6) + bytes(15) + b"\x01" + u32(300)
resolved = u8(4) + u8(4) + bytes([127, 0, 0, 1]) + u32(60) + u8(6) + u8(16) + bytes(15) + b"\x01" + u32(60) \
    + u8(0) + u8(11) + b"example.com" + u32(60)
sendme1 = u8(1) + u16(20) + bytes(range(20))
linkspecs = [u8(0) + u8(6) + bytes([127, 0, 0, 1]) + u16(9001), u8(2) + u8(20) + bytes([7] * 20),
             u8(3) + u8(32) + bytes([9] * 32), u8(1) + u8(18) + bytes(15) + b"\x01" + u16(9001)]
extend2 = u8(len(linkspecs)) + b"".join(linkspecs) + u16(2) + u16(84) + ntor_skin
extended2 = u16(64) + bytes(range(64))
conflux_link = u8(1) + bytes(range(32)) + u64(5) + u64(7) + u8(2)
for name, data in [("begin-v4", begin), ("begin-v6", begin6), ("begin-host", beginh)]:
    seed("relay_begin", name, data)
seed("relay_end_connected", "end-done", u8(6))
seed("relay_end_connected", "end-exitpolicy", end_policy)
seed("relay_end_connected", "connected-v4", connected4)
seed("relay_end_connected", "connected-v6", connected6)
seed("relay_extend2", "extend2-ntor", extend2)
seed("relay_extend2", "extended2", extended2)
seed("relay_flow", "xon", u8(0) + u32(1000))
seed("relay_flow", "xoff", u8(0))
seed("relay_resolve", "resolve", b"www.example.com\x00")
seed("relay_resolve", "resolve-ptr", b"1.0.0.127.in-addr.arpa\x00")
seed("relay_resolve", "resolved", resolved)
seed("relay_sendme", "v1", sendme1)
seed("relay_sendme", "v0", b"")

# cell.rs RelayCmd numbers (tor-spec §6.1, prop 329, prop 324, rend-spec).
relay_msgs = {
    "begin": (1, begin), "data": (2, b"hello"), "end": (3, end_policy), "connected": (4, connected4),
    "sendme": (5, sendme1), "truncate": (8, b""), "truncated": (9, u8(9)), "drop": (10, b""),
    "resolve": (11, b"www.example.com\x00"), "resolved": (12, resolved), "begin-dir": (13, b""),
    "extend2": (14, extend2), "extended2": (15, extended2),
    "conflux-link": (19, conflux_link), "conflux-linked": (20, conflux_link), "conflux-linked-ack": (21, b""),
    "conflux-switch": (22, u32(17)), "establish-rendezvous": (33, bytes(range(20))),
    "rendezvous1": (36, bytes(range(20)) + bytes(64)), "intro-established": (38, u8(0)),
    "rendezvous-established": (39, b""), "introduce-ack": (40, u16(0) + u8(0)),
    "padding-negotiate": (41, u8(0) + u8(2) + u16(1500) + u16(9500)), "padding-negotiated": (42, u8(0) + u8(1) + u8(0)),
    "xoff": (43, u8(0)), "xon": (44, u8(0) + u32(1000)),
}
for name, (cmd, body) in relay_msgs.items():
    seed("relay_msg", name, u8(cmd) + body)


def relay_v0(cmd, stream, data):
    return pad(u8(cmd) + u16(0) + u16(stream) + bytes(4) + u16(len(data)) + data)


seed("relay_header", "v0-begin", relay_v0(1, 1, begin))
seed("relay_header", "v0-data", relay_v0(2, 1, b"x" * 498))
seed("relay_header", "v1-data", pad(bytes(16) + u8(2) + u16(5) + u16(1) + b"hello"))
seed("relay_header", "v1-sendme", pad(bytes(16) + u8(5) + u16(len(sendme1)) + sendme1))

# circuit_cells: op % 12 in 0..=3 = a relay cell on the established circuit, 4 = any channel
# cell, 7 = process the onion queue, 8 = +700 ms.
seed("circuit_cells", "begin-connected-data", u8(0) + relay_v0(1, 1, begin)[:509] + u8(6) + u8(0)
     + u8(5) + u8(4) + u8(0) + relay_v0(2, 1, b"GET / HTTP/1.0\r\n\r\n"))
seed("circuit_cells", "extend2", u8(0x10) + relay_v0(14, 0, extend2) + u8(10) + u8(8) + u8(7))
seed("circuit_cells", "create2-destroy", u8(4) + u8(0) + u32(0x80000003) + u8(10)
     + (u16(2) + u16(84) + ntor_skin)[:114] + u8(7) + u8(4) + u8(0) + u32(0x80000001) + u8(4) + u8(9) + bytes(119))
seed("circuit_cells", "resolve-dns", u8(0) + relay_v0(11, 2, b"www.example.com\x00") + u8(6) + u8(4) + u8(8) + u8(11))

# ---- circuit handshakes (tor-spec §5.1) ----------------------------------------------------
seed("handshake_ntor_server", "ntor-current-key", u8(0) + ntor_x)
seed("handshake_ntor_server", "ntor-previous-key", u8(2) + ntor_x)
seed("handshake_ntor_server", "ntor-raw", u8(1) + ntor_skin)
ntorv3_msg = u8(2) + u8(1) + u8(0) + u8(3) + u8(2) + u8(2) + u8(5)  # CC request, SUBPROTO Relay=5
seed("handshake_ntor_v3_server", "ntorv3-shape", u8(0) + ntor_x + ntorv3_msg + bytes(32))
seed("handshake_ntor_v3_server", "ntorv3-raw", u8(1) + bytes([9] * 32) + bytes([1] * 32) + ntor_x + bytes(32))
seed("handshake_extensions", "cc-request", u8(1) + u8(1) + u8(0))
seed("handshake_extensions", "cc-subproto", ntorv3_msg)
seed("handshake_extensions", "cc-response", u8(1) + u8(2) + u8(1) + u8(31))
seed("handshake_create_fast", "created-fast", u8(0) + bytes(range(40)) + relay_v0(4, 1, connected4)[:100])
seed("handshake_create_fast", "created2-ntor", u8(1) + u16(64) + bytes(range(64)))
seed("handshake_create_fast", "created2-ntorv3", u8(2) + u16(96) + bytes(range(96)))

# ---- onion services (rend-spec §3) ---------------------------------------------------------
service = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([23] * 32))
introduce1 = bytes(20) + u8(2) + u16(32) + ed_raw(service) + u8(1) + u8(2) + u8(1) + u8(0) + bytes(range(200))
seed("hs_cells", "introduce1", introduce1)
seed("hs_cells", "establish-rendezvous", bytes(range(20)))
seed("hs_cells", "rendezvous1", bytes(range(20)) + bytes(32) + bytes(32))
seed("hs_cells", "introduce-ack", u16(0) + u8(0))


def rec(circ, flags, cmd, body):
    return u8(circ) + u8(flags) + u8(cmd) + u8(len(body)) + body


# The table script: flags bit 16 = built valid, bit 1 = not the last hop, bit 2 = from a client.
seed("hs_cells", "intro-flow", rec(0, 16, 0, bytes([5, 10])) + rec(1, 16 | 2, 1, b"encrypted")
     + rec(1, 16 | 2, 1, b"again") + rec(0, 0, 4, b""))
seed("hs_cells", "rend-flow", rec(2, 2, 2, bytes(range(20))) + rec(3, 0, 3, bytes(range(20)) + bytes(64))
     + rec(2, 0, 4, b""))

# Conflux (prop 329): a LINK body, then (op, arg) pairs driving the set table.
seed("conflux_cells", "link", conflux_link)
seed("conflux_cells", "switch", u32(17))
seed("conflux_cells", "link-linked-data", bytes([0, 0, 0, 1, 1, 0, 1, 1, 3, 0x10, 4, 0x11, 2, 0x28, 6, 0x10, 5, 0]))

# ---- HSDir descriptors (rend-spec §2.4) -----------------------------------------------------
blinded = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([24] * 32))
desc_sign = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([25] * 32))
# The target's clock is 1_780_000_000 s; the cert must outlive it.
hs_cert = ed_cert(blinded, 8, ed_raw(desc_sign), 1_780_000_000 // 3600 + 48)


def pem(label, data):
    b = base64.b64encode(data).decode()
    return f"-----BEGIN {label}-----\n" + "\n".join(b[i:i + 64] for i in range(0, len(b), 64)) \
        + f"\n-----END {label}-----\n"


hs_text = ("hs-descriptor 3\ndescriptor-lifetime 180\ndescriptor-signing-key-cert\n" + pem("ED25519 CERT", hs_cert)
           + "revision-counter 42\nsuperencrypted\n" + pem("MESSAGE", bytes(range(256)) * 4))
sig = desc_sign.sign(b"Tor onion service descriptor sig v3" + hs_text.encode())
hs_text += "signature " + base64.b64encode(sig).decode().rstrip("=") + "\n"
seed("dircache_hsdir", "publish-raw", b"\x00" + hs_text.encode())
seed("dircache_hsdir", "built", b"\x01" + bytes(range(100)))
seed("dircache_hsdir", "http-publish", b"\x02/tor/hs/3/publish\n" + hs_text.encode())
seed("dircache_hsdir", "http-fetch", b"\x02" + base64.b64encode(ed_raw(blinded)) + b"\n")

# ---- directory HTTP (dir-spec §4, §6) --------------------------------------------------------
for name, req in [
    ("consensus-md", "GET /tor/status-vote/current/consensus-microdesc.z HTTP/1.0\r\n\r\n"),
    ("consensus-diff", "GET /tor/status-vote/current/consensus HTTP/1.0\r\nX-Or-Diff-From-Consensus: "
     + "A" * 64 + "\r\nAccept-Encoding: deflate, identity, x-zstd, x-tor-lzma\r\n\r\n"),
    ("micro-d", "GET /tor/micro/d/" + "A" * 43 + "-" + "B" * 43 + " HTTP/1.0\r\n\r\n"),
    ("server-authority", "GET /tor/server/authority HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    ("keys-all", "GET /tor/keys/all HTTP/1.0\r\n\r\n"),
    ("front-page", "GET / HTTP/1.0\r\n\r\n"),
    ("hs-fetch", "GET /tor/hs/3/" + base64.b64encode(ed_raw(blinded)).decode() + " HTTP/1.0\r\n\r\n"),
    ("hs-post", "POST /tor/hs/3/publish HTTP/1.0\r\nContent-Length: 10\r\n\r\n0123456789"),
]:
    seed("dircache_request", name, req)
for name, resp in [
    ("ok", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
    ("deflate", b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\nx\x9c\x03\x00\x00\x00\x00\x01"),
    ("upload-rejected", b"HTTP/1.0 400 Looks like your descriptor is rejected\r\n\r\n"),
    ("not-found", b"HTTP/1.1 404 Not found\r\nServer: tor\r\n\r\n"),
]:
    seed("dir_http", name, resp)
seed("metrics_request", "get", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9035\r\nAccept: text/plain\r\n\r\n")
seed("metrics_request", "get-1.0", "GET /metrics HTTP/1.0\r\n\r\n")
seed("metrics_request", "other", "HEAD / HTTP/1.1\r\n\r\n")

# ---- DNS answers (RFC 1035): the target copies in our ID and question. ----------------------
dns_hdr = u16(0) + u16(0x8180) + u16(0) + u16(1) + u16(0) + u16(1)
a_rr = u16(0xC00C) + u16(1) + u16(1) + u32(300) + u16(4) + bytes([127, 0, 0, 1])
aaaa_rr = u16(0xC00C) + u16(28) + u16(1) + u32(300) + u16(16) + bytes(15) + b"\x01"
ptr_rr = u16(0xC00C) + u16(12) + u16(1) + u32(300) + u16(13) + b"\x04fors\x04test\x00" + b"\x00"
opt_rr = b"\x00" + u16(41) + u16(1232) + u32(0) + u16(0)
seed("exit_dns", "a", u8(4) + dns_hdr + a_rr + opt_rr)
seed("exit_dns", "aaaa", u8(5) + dns_hdr + aaaa_rr + opt_rr)
seed("exit_dns", "ptr", u8(6) + dns_hdr + ptr_rr)
seed("exit_dns", "nxdomain", u8(4) + u16(0) + u16(0x8183) + u16(0) + u16(0) + u16(0) + u16(0))

# ---- configuration --------------------------------------------------------------------------
seed("config_torrc", "relay", "Nickname Fors\nORPort 127.0.0.1:9001\nContactInfo x@example.org\n"
     "ExitRelay 0\nControlPort 9051\nMetricsPort 127.0.0.1:9035\nMetricsPortPolicy accept 127.0.0.1\n"
     "BandwidthRate 10 MB\nDataDirectory /var/lib/fors\n")
seed("config_torrc", "exit-include", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,accept *:443\n"
     "ExitPolicy reject *:*\n%include /fuzz/d\n%include /fuzz/torrc\nLog notice stdout\n")
seed("config_torrc", "continuation", "ORPort 9001 \\\n  IPv4Only\n# comment\nAddress 127.0.0.1\n")
seed("exit_policy", "default-like", "reject 0.0.0.0/8:*,reject 127.0.0.0/8:*,accept *:80,accept *:443,reject *:*")
seed("exit_policy", "ipv6", "accept6 [2001:db8::]/32:1-65535,reject6 [::]/0:*,accept *4:53")
seed("exit_policy", "flags-all", "\x0faccept *:20-23,reject private:*,accept 10.0.0.0/255.0.0.0:*")

# ---- ControlPort (control-spec §3) ----------------------------------------------------------
seed("control_session", "getinfo", "PROTOCOLINFO 1\r\nAUTHENTICATE\r\nGETINFO version config-file "
     "net/listeners/or status/circuit-established\r\nGETINFO exit-policy/full\r\nQUIT\r\n")
seed("control_session", "conf-events", "AUTHENTICATE \"\"\r\nGETCONF ORPort Nickname ExitPolicy\r\n"
     "SETEVENTS EXTENDED BW CIRC ORCONN\r\nSETCONF Nickname=Other\r\nRESETCONF Nickname\r\n"
     "SIGNAL NEWNYM\r\nSETEVENTS\r\n")
seed("control_session", "getinfo-dir", "AUTHENTICATE\nGETINFO ns/all dir/status-vote/current/consensus "
     "fingerprint address traffic/read\nGETINFO md/id/DEADBEEF00112233445566778899AABBCCDDEEFF\n"
     "+POSTDESCRIPTOR\r\nrouter x\r\n.\r\nTAKEOWNERSHIP\r\n")
seed("control_session", "unauth", "GETINFO version\r\nAUTHCHALLENGE SAFECOOKIE " + "00" * 32 + "\r\n")

# ---- key files (C tor's on-disk formats) ----------------------------------------------------
def tagged(tag, typ, body):
    head = f"== {tag}: {typ} ==".encode()
    return head + bytes(32 - len(head)) + body


seed("keys_keyfile", "ed25519-master-secret", tagged("ed25519v1-secret", "type0", hashlib.sha512(b"m").digest()))
seed("keys_keyfile", "ed25519-signing-secret", tagged("ed25519v1-secret", "type0", hashlib.sha512(b"s").digest()))
seed("keys_keyfile", "ed25519-public", tagged("ed25519v1-public", "type0", ed_raw(idkey)))
seed("keys_keyfile", "ed25519-signing-cert", tagged("ed25519v1-cert", "type4", sign_cert))
ntor_priv = x25519.X25519PrivateKey.from_private_bytes(bytes([26] * 32))
seed("keys_keyfile", "curve25519-ntor", tagged("c25519v1", "type0", bytes([26] * 32) + ntor_priv.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw)))
seed("keys_keyfile", "rsa-private-pem", rsa_id.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))

# ---- TLS 1.3 record layer after the handover (fuzz_targets/tls_record.rs) -----------------
# Input: a mode byte (bit 0: we are the initiator; bit 1: each record read with its header
# apart, `read_split`), then ops of (op, len) — len = len byte |
# (op >> 4) << 8, at most 4095 — op & 7: 0-1 application data, 2-3 handshake, 4 alert (sealed by the peer
# with content[len]), 5 raw bytes[len], 6 flip bit (op >> 5) at len, 7 a delivery chunk.
def tls_seal(kind, content):
    return u8(kind | ((len(content) >> 8) << 4)) + u8(len(content) & 0xff) + content


def nst(ticket=b"tick"):
    body = u32(7200) + u32(1) + u8(1) + b"\x00" + u16(len(ticket)) + ticket + u16(0)
    return u8(4) + bytes([0, 0, len(body)]) + body


seed("tls_record", "server-data", u8(0) + tls_seal(0, b"hello cells!") + u8(7) + u8(7))
seed("tls_record", "server-keyupdate", u8(0) + tls_seal(2, bytes([24, 0, 0, 1, 1])) + tls_seal(0, b"data"))
seed("tls_record", "server-keyupdate-split", u8(0) + tls_seal(2, bytes([24, 0])) + tls_seal(2, bytes([0, 1, 0])))
seed("tls_record", "client-ticket", u8(1) + tls_seal(2, nst()) + tls_seal(0, b"after"))
seed("tls_record", "client-ticket-split", u8(1) + tls_seal(2, nst()[:9]) + tls_seal(2, nst()[9:]) + tls_seal(0, b"x"))
seed("tls_record", "close-notify", u8(0) + tls_seal(4, bytes([1, 0])) + tls_seal(0, b"ignored"))
seed("tls_record", "fatal-alert", u8(0) + tls_seal(4, bytes([2, 40])))
seed("tls_record", "unprotected", u8(0) + u8(5) + u8(10) + b"\x16\x03\x01\x00\x05hello")
seed("tls_record", "tampered", u8(0) + tls_seal(0, b"abc") + u8(6 | (3 << 5)) + u8(7))
seed("tls_record", "big-record", u8(0) + tls_seal(0, (bytes(range(256)) * 16)[:4095]) + u8(7) + u8(100))
seed("tls_record", "split-data-keyupdate", u8(2) + tls_seal(0, b"cells") + tls_seal(2, bytes([24, 0, 0, 1, 1])) + tls_seal(0, b"more") + u8(7) + u8(5))
seed("tls_record", "split-client-ticket-close", u8(3) + tls_seal(2, nst()) + tls_seal(4, bytes([1, 0])) + u8(5) + u8(3) + b"\x17\x03\x03")

print(f"make_seeds: wrote {written} seeds under {SEEDS.relative_to(ROOT)}", file=sys.stderr)
