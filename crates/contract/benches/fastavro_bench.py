"""fastavro's encode and decode rate for one golden vector: prints 'ENCODE DECODE' events/s
(median of 9 rounds), for crates/contract/benches/codec.rs to print beside lienthong's."""
import io
import json
import pathlib
import sys
import time

import fastavro

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "tests" / "interop"))
from fastavro_golden import collect_names, to_fastavro  # noqa: E402

ROUNDS = 9


def rate(n, f):
    for _ in range(n // 10):
        f()
    rates = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(n):
            f()
        rates.append(n / (time.perf_counter() - t))
    return sorted(rates)[ROUNDS // 2]


def main(path, name):
    vec = next(v for v in json.load(open(path, encoding="utf-8")) if v["name"] == name)
    schema_json = json.loads(vec["schema"])
    parsed = fastavro.parse_schema(json.loads(vec["schema"]))
    named = {}
    collect_names(schema_json, None, named)
    record = to_fastavro(schema_json, vec["value"], named)
    body = bytes.fromhex(vec["avro_hex"])

    def enc():
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, record)

    def dec():
        fastavro.schemaless_reader(io.BytesIO(body), parsed, None)

    print(f"{rate(20000, enc):.0f} {rate(20000, dec):.0f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
