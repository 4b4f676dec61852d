"""What every oracle shares: one way to report a mismatch and how it exits."""
import json
import sys


def fail(message):
    # The C++ test shows this output on failure; exit 1 marks a mismatch.
    print(f"MISMATCH: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
