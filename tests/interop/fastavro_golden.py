"""Cross-check lienthong's Avro codec with fastavro, a codec nobody here wrote.

For every golden vector (crates/contract/tests/golden/vectors.json, produced and checked by the
Rust codec):
  1. fastavro decodes the Rust-encoded bytes to the same values;
  2. fastavro encodes the same values to byte-identical output.
Exits non-zero, naming each vector that differs. Run by tests/tests/fastavro_interop.rs.
"""
import datetime
import io
import json
import sys
import uuid

import fastavro

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def to_fastavro(schema, value, named):
    """Rust serde JSON -> fastavro's Python value: a union of records becomes (full name, value)."""
    if isinstance(schema, str):
        if schema in named:
            return to_fastavro(named[schema], value, named)
        return value
    if isinstance(schema, list):
        if value is None:
            return None
        branches = [b for b in schema if b != "null"]
        if len(branches) == 1:
            return to_fastavro(branches[0], value, named)
        (short, inner), = value.items()
        for b in branches:
            full = fullname(b, named)
            if full.rsplit(".", 1)[-1] == short:
                return (full, to_fastavro(b, inner, named))
        raise ValueError(f"no union branch named {short}")
    t = schema["type"]
    if isinstance(t, (dict, list)):
        return to_fastavro(t, value, named)
    if t == "record":
        return {f["name"]: to_fastavro(f["type"], value[f["name"]], named) for f in schema["fields"]}
    if t == "array":
        return [to_fastavro(schema["items"], v, named) for v in value]
    if t == "map":
        return {k: to_fastavro(schema["values"], v, named) for k, v in value.items()}
    return value


def fullname(schema, named):
    if isinstance(schema, str):
        return schema
    return schema.get("_full", schema.get("name", schema.get("type")))


def collect_names(schema, ns, named):
    """Index named types by full name, remembering each one's full name."""
    if isinstance(schema, list):
        for b in schema:
            collect_names(b, ns, named)
    elif isinstance(schema, dict):
        t = schema.get("type")
        if t in ("record", "enum", "fixed"):
            name = schema["name"]
            ns = schema.get("namespace", ns)
            full = name if "." in name else (f"{ns}.{name}" if ns else name)
            schema["_full"] = full
            named[full] = schema
            named[name] = schema
            for f in schema.get("fields", []):
                collect_names(f["type"], ns, named)
        elif isinstance(t, (dict, list)):
            collect_names(t, ns, named)
        else:
            for k in ("items", "values"):
                if k in schema:
                    collect_names(schema[k], ns, named)


def plain(v):
    """fastavro's decoded logical types -> the raw Avro values the Rust side uses."""
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, datetime.date):
        return (v - datetime.date(1970, 1, 1)).days
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(plain(x) for x in v)
    return v


def main(path):
    vectors = json.load(open(path, encoding="utf-8"))
    failures = []
    for vec in vectors:
        schema_json = json.loads(vec["schema"])
        parsed = fastavro.parse_schema(json.loads(vec["schema"]))
        named = {}
        collect_names(schema_json, None, named)
        expected = to_fastavro(schema_json, vec["value"], named)
        golden = bytes.fromhex(vec["avro_hex"])

        try:
            decoded = fastavro.schemaless_reader(
                io.BytesIO(golden), parsed, None,
                return_record_name=True, return_record_name_override=True)
        except Exception as e:  # a decoding failure is a mismatch, reported like the others
            failures.append(f"{vec['name']}: fastavro cannot decode Rust's bytes: {e!r}")
            continue
        if plain(decoded) != expected:
            failures.append(f"{vec['name']}: fastavro decodes Rust's bytes to\n  {plain(decoded)!r}\nnot\n  {expected!r}")

        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, expected)
        if out.getvalue() != golden:
            failures.append(f"{vec['name']}: fastavro encodes to {out.getvalue().hex()}\n  Rust encodes to    {golden.hex()}")
    for f in failures:
        print("MISMATCH", f, file=sys.stderr)
    print(f"fastavro {fastavro.__version__}: {len(vectors) - len(failures)} of {len(vectors)} vectors identical both ways")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
