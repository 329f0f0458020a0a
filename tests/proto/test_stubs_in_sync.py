"""The committed gRPC stubs are exactly what protoc generates from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py"]


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "django_ws_proto" / "v1" / name).read_text()
        committed = (ROOT / "proto" / "django_ws_proto" / "v1" / name).read_text()
        assert fresh == committed, f"{name} drifted from broker.proto: run python proto/generate.py"
