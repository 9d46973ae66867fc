"""A consumer written by nobody here opens a sealed citizen record with the key it was granted,
following only docs/personal-data.md: confluent-kafka reads the record, fastavro decodes it, the
`cryptography` package decrypts its `sealed` field (AES-256-GCM).

Run by crates/cli/tests/personal_data.rs with BOOTSTRAP, TOPIC, SCHEMA (the writer schema's
file), KEY (the citizen's data key, base64) and AAD_TOPIC (the catalog topic) in the
environment; prints the opened fields as one JSON line and exits non-zero on anything else.
"""

import base64
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
    schema = fastavro.parse_schema(json.load(f))
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
fields = json.loads(AESGCM(key).decrypt(nonce, ciphertext, aad))
print(json.dumps(fields, ensure_ascii=False))
