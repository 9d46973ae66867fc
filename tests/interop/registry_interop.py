"""Python's confluent-kafka (a client nobody here wrote) against lienthong's schema registry and
a real Kafka broker. Run by tests/tests/registry.rs, which checks what this prints.

argv: registry_url bootstrap py_topic rust_topic agency token rust_count foreign_agency foreign_token
Prints one JSON object on stdout:
  registered_id   id the AvroSerializer registered for py_topic's value subject
  rust_values     the values of rust_topic, decoded by AvroDeserializer through the registry
  incompatible    [http status, error_code] for registering an incompatible schema
  foreign         [http status, error_code] for another agency registering under our subject
"""
import json
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

NOTE = json.dumps({
    "type": "record", "name": "PyNote", "namespace": "pytest",
    "fields": [{"name": "text", "type": "string"}, {"name": "n", "type": "int"}],
})
INCOMPATIBLE = json.dumps({
    "type": "record", "name": "PyNote", "namespace": "pytest",
    "fields": [{"name": "text", "type": "string"}, {"name": "n", "type": "int"},
               {"name": "required_new", "type": "string"}],
})


def error_of(call):
    try:
        call()
        return None
    except SchemaRegistryError as e:
        return [e.http_status_code, e.error_code]


def main(url, bootstrap, py_topic, rust_topic, agency, token, rust_count, foreign_agency, foreign_token):
    client = SchemaRegistryClient({"url": url, "basic.auth.user.info": f"{agency}:{token}"})
    serializer = AvroSerializer(client, NOTE, conf={"auto.register.schemas": True})
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    ctx = SerializationContext(py_topic, MessageField.VALUE)
    for i in range(50):
        producer.produce(py_topic, key=f"k{i}", value=serializer({"text": f"xin chào {i}", "n": i}, ctx))
    assert producer.flush(30) == 0, "undelivered records"
    subject = f"{py_topic}-value"
    registered_id = client.get_latest_version(subject).schema_id

    deserializer = AvroDeserializer(client)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"py-{rust_topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([rust_topic])
    values = []
    for _ in range(600):
        if len(values) >= int(rust_count):
            break
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        values.append(deserializer(msg.value(), SerializationContext(rust_topic, MessageField.VALUE)))
    consumer.close()

    incompatible = error_of(lambda: client.register_schema(subject, Schema(INCOMPATIBLE, "AVRO")))
    foreign_client = SchemaRegistryClient({"url": url, "basic.auth.user.info": f"{foreign_agency}:{foreign_token}"})
    foreign = error_of(lambda: foreign_client.register_schema(subject, Schema(NOTE.replace("PyNote", "Other"), "AVRO")))
    print(json.dumps({"registered_id": registered_id, "rust_values": values,
                      "incompatible": incompatible, "foreign": foreign}, ensure_ascii=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
