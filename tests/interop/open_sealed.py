"""A consumer written by nobody here opens a sealed citizen record with the key it was granted,
following only docs/personal-data.md: confluent-kafka reads the record, fastavro decodes it, the
`cryptography` package decrypts its `sealed` field (AES-256-GCM), and fastavro decodes the
plaintext with the writer schema's `profile` type.

Run by crates/cli/tests/personal_data.rs with BOOTSTRAP, TOPIC, SCHEMA (the writer schema's
file), KEY (the citizen's data key, base64) and AAD_TOPIC (the catalog topic) in the
environment; prints the opened profile as one JSON line (a date as days since 1970-01-01) and exits non-zero on anything else.
"""

import base64
import datetime
import io
import json
import os
import sys

import fastavro
from confluent_kafka import Consumer
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

consumer = Consumer(
    {
        "bootstrap.servers": os.environ["BOOTSTRAP"],
        "group.id": "interop-open-sealed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
consumer.subscribe([os.environ["TOPIC"]])
message = None
for _ in range(60):
    m = consumer.poll(1.0)
    if m is not None and m.error() is None:
        message = m
        break
consumer.close()
if message is None:
    sys.exit("no record within 60 s")

with open(os.environ["SCHEMA"], encoding="utf-8") as f:
    writer = json.load(f)
schema = fastavro.parse_schema(writer)
# The profile's type, named in the record's namespace, as a schema of its own.
profile_type = next(f["type"] for f in writer["fields"] if f["name"] == "profile")
profile_schema = fastavro.parse_schema({"namespace": writer.get("namespace", ""), **profile_type})
payload = message.value()
if payload[0] != 0:
    sys.exit("not in the Confluent wire format")
record = fastavro.schemaless_reader(io.BytesIO(payload[5:]), schema)

sealed = record["sealed"]
prefix = "lt1."
if not sealed or not sealed.startswith(prefix):
    sys.exit(f"not sealed: {sealed!r}")
body = sealed[len(prefix):]
raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
nonce, ciphertext = raw[:12], raw[12:]
pseudonym = message.key().decode()
if pseudonym != record["envelope"]["aggregate_id"]:
    sys.exit("the Kafka key is not the aggregate id")
aad = f"lienthong/v1|{os.environ['AAD_TOPIC']}|{pseudonym}".encode()
key = base64.b64decode(os.environ["KEY"])
plaintext = AESGCM(key).decrypt(nonce, ciphertext, aad)
buffer = io.BytesIO(plaintext)
profile = fastavro.schemaless_reader(buffer, profile_schema)
if buffer.read():
    sys.exit("bytes left after the profile")
for name, value in profile.items():
    if isinstance(value, datetime.date):
        profile[name] = (value - datetime.date(1970, 1, 1)).days
print(json.dumps(profile, ensure_ascii=False))
