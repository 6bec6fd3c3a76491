"""Reading what wandb received: the records of an offline run's ``.wandb`` file.

wandb 0.31 writes each run as a LevelDB-style log (``:W&B`` header, 32 KiB blocks, records split into
full/first/middle/last chunks with a CRC-32 of type and payload) of ``wandb.proto.wandb_internal_pb2.Record``
protobuf messages, and no longer ships a Python reader of it (its reader is in the Go ``wandb-core``).
This reads the framing, checks every checksum, and decodes the messages with wandb's own schema.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[Any]:
    """Every ``Record`` of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, _, _ = HEADER.unpack_from(data)
    assert ident == b":W&B", f"{path} is not a wandb transaction log"
    pos, parts = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += left
            continue
        payload = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if len(payload) < length:  # the tail is still being written
            return
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at byte {pos} of {path}"
        pos += CHUNK.size + length
        if kind == FULL:
            yield pb.Record.FromString(payload)
        elif kind == FIRST:
            parts = payload
        elif kind == MIDDLE:
            parts += payload
        elif kind == LAST:
            yield pb.Record.FromString(parts + payload)


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class WandbRun:
    """What one offline wandb run holds: its run record, config, history rows, summary and console lines."""

    dir: Path
    run: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)
    exit_code: int | None = None


def read_run(run_dir: str | Path, wait: float = 20.0) -> WandbRun:
    """Decode ``run_dir`` (``wandb/offline-run-*``): values are JSON-decoded; nested keys are joined by '/'.

    ``wandb.finish()`` returns before wandb's service process has written the whole file (it flushes
    when it gets to it, at the latest when the process exits), so this reads again until the run's
    exit record is there, for at most ``wait`` seconds (default 20), then returns what it has."""
    deadline = time.monotonic() + wait
    while True:
        out = _read_once(Path(run_dir))
        if out.exit_code is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _read_once(run_dir: Path) -> WandbRun:
    (path,) = run_dir.glob("run-*.wandb")
    out = WandbRun(run_dir)
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.run = r.run
            out.config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out.summary.update({_key(u): json.loads(u.value_json) for u in r.summary.update})
        elif kind == "output_raw":
            out.console.append(r.output_raw.line)
        elif kind == "exit":
            out.exit_code = r.exit.exit_code
    return out


def read_runs(wandb_dir: str | Path) -> list[WandbRun]:
    """Every offline run of a ``wandb/`` folder."""
    return [read_run(d) for d in sorted(Path(wandb_dir).glob("offline-run-*"))]
