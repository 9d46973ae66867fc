"""A verifier written by nobody here checks signed records from the documented format alone
(docs/signatures.md): confluent-kafka reads the records with their headers and the certificate
log, the `cryptography` package checks that the city CA issued the signer's certificate and
verifies the batch signature (ECDSA P-256, SHA-256) over the Merkle root that the record's leaf
and path lead to, and fastavro decodes the record to check that its producer unit is the
certificate's agency.

Run by crates/cli/tests/signed_records.rs with BOOTSTRAP, TOPIC, COUNT (records to check),
CERTIFICATES (the certificate log topic), CA (the city CA's certificate, PEM) and SCHEMA (the
writer schema's file) in the environment. Prints one JSON line per record and exits non-zero
at the first record that does not verify, naming why.
"""

import hashlib
import io
import json
import os
import struct
import sys

import fastavro
from confluent_kafka import Consumer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


def read(topic, count, timeout_polls=60):
    consumer = Consumer(
        {
            "bootstrap.servers": os.environ["BOOTSTRAP"],
            "group.id": f"interop-verify-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out = []
    polls = 0
    while polls < timeout_polls and (count is None or len(out) < count):
        m = consumer.poll(1.0)
        polls += 1
        if m is None:
            if count is None and out:
                break
            continue
        if m.error() is None:
            out.append(m)
    consumer.close()
    return out


def leaf(topic, key, value):
    h = hashlib.sha256(b"\x00lienthong.record.v1")
    for field in (topic.encode(), key, value):
        if field is None:
            h.update(struct.pack(">I", 0xFFFFFFFF))
        else:
            h.update(struct.pack(">I", len(field)) + field)
    return h.digest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_path(index, size, r, path):
    """RFC 9162, 2.1.3.2."""
    if index >= size:
        raise ValueError("leaf index past the batch")
    f, s = index, size - 1
    for p in path:
        if s == 0:
            raise ValueError("path too long")
        if f & 1 or f == s:
            r = node(p, r)
            while not f & 1 and f != 0:
                f >>= 1
                s >>= 1
        else:
            r = node(r, p)
        f >>= 1
        s >>= 1
    if s != 0:
        raise ValueError("path too short")
    return r


ca = x509.load_pem_x509_certificate(open(os.environ["CA"], "rb").read())
certificates = {}
for m in read(os.environ["CERTIFICATES"], None):
    entry = json.loads(m.value())
    certificate = x509.load_pem_x509_certificate(entry["certificate"].encode())
    # Only what the city CA issued counts.
    certificate.verify_directly_issued_by(ca)
    certificate_id = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()[:32]
    if certificate_id != m.key().decode():
        sys.exit("a certificate under another id")
    certificates[certificate_id] = (certificate, entry.get("revoked_at_ms"))

def plain(schema):
    """The schema without its logical types: only the producer unit is read here, and the
    test's timestamps lie far outside what Python's datetime holds."""
    if isinstance(schema, dict):
        return {k: plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain(v) for v in schema]
    return schema


writer = json.load(open(os.environ["SCHEMA"], encoding="utf-8"))
schema = fastavro.parse_schema(plain(writer))
topic = os.environ["TOPIC"]
for m in read(topic, int(os.environ["COUNT"])):
    header = dict(m.headers() or []).get("lienthong.signature")
    if header is None:
        sys.exit("unsigned")
    version, certificate_id, index, size, length = struct.unpack(">B16sIIB", header[:26])
    if version != 1:
        sys.exit(f"format version {version}")
    signature = header[26 : 26 + length]
    path_bytes = header[26 + length :]
    path = [path_bytes[i : i + 32] for i in range(0, len(path_bytes), 32)]
    certificate, revoked_at = certificates[certificate_id.hex()]
    _, appended_at = m.timestamp()
    if revoked_at is not None and appended_at >= revoked_at:
        sys.exit("revoked")
    root = root_from_path(index, size, leaf(topic, m.key(), m.value()), path)
    # Raises InvalidSignature if the record was altered.
    certificate.public_key().verify(
        signature, b"lienthong.batch.v1" + root, ec.ECDSA(hashes.SHA256())
    )
    agency = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    payload = m.value()
    record = fastavro.schemaless_reader(io.BytesIO(payload[5:]), schema)
    producer = record["envelope"]["producer_unit"]
    if producer != agency:
        sys.exit(f"signed by {agency}, produced by {producer}")
    print(json.dumps({"key": m.key().decode(), "agency": agency, "batch": size}))
