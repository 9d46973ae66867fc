"""An agency's client written by nobody here (confluent-kafka) on the secured cluster, with the
credentials `lienthong agency add` issued: SASL/SCRAM-SHA-512 over TLS, trusting the city CA.

It may write case events, and the broker refuses its citizen records. Run by
crates/cli/tests/acl.rs with BOOTSTRAP, CA, USER and SECRET in the environment; prints one line
per outcome and exits non-zero on anything unexpected.
"""

import os
import sys

from confluent_kafka import KafkaError, Producer

config = {
    "bootstrap.servers": os.environ["BOOTSTRAP"],
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": os.environ["USER"],
    "sasl.password": os.environ["SECRET"],
    "ssl.ca.location": os.environ["CA"],
    "enable.idempotence": True,
    "message.timeout.ms": 10000,
}


def send(topic):
    """Produce one record; the delivery error, or None."""
    outcome = []
    producer = Producer(config)
    producer.produce(topic, key=b"python", value=b"interop", on_delivery=lambda e, m: outcome.append(e))
    producer.flush(20)
    if not outcome:
        sys.exit(f"no delivery report for {topic}")
    return outcome[0]


error = send("hcm.case.events")
if error is not None:
    sys.exit(f"hcm.case.events refused: {error}")
print("produced hcm.case.events")

error = send("hcm.citizen.records")
if error is None:
    sys.exit("hcm.citizen.records accepted: the broker should have refused it")
if error.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
    sys.exit(f"hcm.citizen.records refused, but not by authorization: {error}")
print("refused hcm.citizen.records: TOPIC_AUTHORIZATION_FAILED")
