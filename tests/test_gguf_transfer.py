"""tools/gguf_transfer.py: chunks carried one run at a time rebuild the exact part packages."""

import hashlib
from pathlib import Path

import pytest

from .conftest import load_script

SCRIPT = Path(__file__).parents[1] / "tools" / "gguf_transfer.py"


@pytest.fixture(scope="module")
def transfer():
    return load_script(SCRIPT)


def fake_parts(tmp_path: Path) -> tuple[list, Path]:
    parts = []
    for i, n in enumerate((3_000_000, 3_000_000, 1_234_567), 1):
        f = tmp_path / "src" / f"part{i}" / f"model.gguf.part{i - 1:02d}"
        f.parent.mkdir(parents=True)
        f.write_bytes(bytes((i * k) % 251 for k in range(n)))
        parts.append((f"pkg_part{i}", f))
    package = tmp_path / "src" / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("X = 1\n")
    return parts, package


def test_chunks_carried_run_by_run_rebuild_every_part_exactly(transfer, tmp_path, capsys):
    parts, package = fake_parts(tmp_path)
    carried, site = tmp_path / "carried", tmp_path / "site"
    manifest = transfer.pack(parts, package, carried, chunk_mib=2)  # 7.2 MB in chunks of 2 MiB
    assert [c["name"] for c in manifest["chunks"]] == ["chunk00", "chunk01", "chunk02", "chunk03"]
    chunks = {c: (carried / c).read_bytes() for c in ("chunk00", "chunk01", "chunk02", "chunk03")}
    for name in chunks:  # each run brings one chunk: the others are not there
        for other in chunks:
            (carried / other).unlink(missing_ok=True)
        (carried / name).write_bytes(chunks[name])
        done = transfer.unpack(carried, site)
        assert done == (name == "chunk03")
    for module, original in parts:
        rebuilt = site / module / "data" / original.name
        assert hashlib.sha256(rebuilt.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()
    assert (site / transfer.PACKAGE / "__init__.py").read_text() == "X = 1\n"


def test_a_damaged_chunk_is_refused_with_the_fix(transfer, tmp_path):
    parts, package = fake_parts(tmp_path)
    carried = tmp_path / "carried"
    transfer.pack(parts, package, carried, chunk_mib=2)
    (carried / "chunk01").write_bytes(b"not the chunk")
    with pytest.raises(SystemExit, match="chunk01 is damaged .*carry it again"):
        transfer.unpack(carried, tmp_path / "site")
