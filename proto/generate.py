"""Regenerate the Python stubs from the .proto files.

The stubs are committed so that installing django-ws needs no protoc; a test runs this
generator into a temporary folder and fails when the committed stubs have drifted.

    python proto/generate.py            # rewrite the committed stubs
    python proto/generate.py --out DIR  # write them elsewhere (used by the drift test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_FILES = ["django_ws_proto/v1/broker.proto"]


def generate(out: Path) -> None:
    from grpc_tools import protoc  # only needed by developers, not at run time

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    for proto in PROTO_FILES:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{HERE}",
                f"-I{include}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(HERE / proto),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {proto} with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    generate(args.out)
    print(f"stubs written under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
