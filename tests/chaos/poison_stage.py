#!/usr/bin/env python3
"""A command stage for the chaos suite (tests/chaos/chaos_test.cpp).

Reads the job on stdin like any stage program. A task whose payload has
"poison": NAME gets the poisonous result NAME below, each one breaking one
rule a worker must enforce before a result reaches the database; every other
task gets a good result. The bytes are written as they are (the invalid UTF-8
one included), so that the worker sees exactly what a misbehaving program
would print.
"""
import json
import sys

POISONS = {
    # NUMERIC(14, 6) holds less than 1e8.
    "huge_cost": b'{"status":"ok","output":{},"cost":1000000000}',
    # jsonb refuses the NUL character.
    "nul": b'{"status":"ok","output":{"title":"a\\u0000b"},"cost":0.01}',
    # Over the 1 MiB output cap.
    "big_output": b'{"status":"ok","output":{"blob":"' + b"x" * 2_000_000 + b'"},"cost":0.01}',
    # About 31,700 years.
    "huge_retry_after":
        b'{"status":"error","class":"rate_limited","retry_after_s":1e12,"message":"slow down"}',
    "negative_cost": b'{"status":"ok","output":{},"cost":-5}',
    # A truncated two-byte sequence, then bytes that never occur in UTF-8.
    "bad_utf8": b'{"status":"ok","output":{"title":"caf\xc3 \xff\xfe"},"cost":0.01}',
}


def main():
    job = json.load(sys.stdin)
    poison = job.get("payload", {}).get("poison", "")
    if poison in POISONS:
        line = POISONS[poison]
    else:
        good = {"status": "ok", "output": {"frame": "%d.png" % job["task_id"]}, "cost": 0.01}
        line = json.dumps(good).encode()
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
