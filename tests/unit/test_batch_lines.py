"""The batch input file read a window at a time (app.batch_lines.scan / windows): line numbers,
the bad lines skipped, the window limits, and a resume from a window's recorded end."""

from __future__ import annotations

from pathlib import Path

import orjson

from app.batch_lines import scan, windows


def _req(i: int, inputs: object = None) -> bytes:
    body = {"model": "m", "input": inputs if inputs is not None else f"t{i}"}
    return orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings",
                         "body": body})  # fmt: skip


def _file(tmp_path: Path) -> Path:
    lines = [_req(0), b"{bad", _req(1, ["a", "b", "c"]), b"", _req(2), _req(0), _req(3), _req(4)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _all(path: Path, **kw) -> list:
    found = scan(path)
    limits = {"max_lines": 2, "max_items": 100, "max_bytes": 1 << 20, **kw}
    return list(windows(path, offset=0, line=0, bad_lines=found.bad_lines, **limits))


def test_scan_names_bad_lines_by_number(tmp_path: Path) -> None:
    found = scan(_file(tmp_path))
    assert found.total == 7  # the blank line is no request
    assert [e["line"] for e in found.errors] == [2, 6]  # bad JSON, the duplicate c0
    assert found.bad_lines == {2, 6} and found.bad_ids == [None, None]


def test_windows_keep_line_numbers_and_skip_bad_lines(tmp_path: Path) -> None:
    got = _all(_file(tmp_path))
    assert [[(ln.n, ln.custom_id) for ln in w.lines] for w in got] == [
        [(1, "c0"), (3, "c1")],
        [(5, "c2"), (7, "c3")],
        [(8, "c4")],
    ]
    assert got[-1].end == _file(tmp_path).stat().st_size and got[-1].end_line == 8


def test_windows_cut_by_items_and_bytes(tmp_path: Path) -> None:
    path = _file(tmp_path)
    by_items = _all(path, max_lines=100, max_items=3)  # c1 holds 3 inputs
    assert [[ln.custom_id for ln in w.lines] for w in by_items] == [
        ["c0"], ["c1"], ["c2", "c3", "c4"]
    ]  # fmt: skip
    by_bytes = _all(path, max_lines=100, max_bytes=1)  # a line alone always fits
    assert [len(w.lines) for w in by_bytes] == [1, 1, 1, 1, 1]


def test_resume_from_a_window_end_reads_only_the_rest(tmp_path: Path) -> None:
    path = _file(tmp_path)
    first = _all(path)[0]
    rest = windows(path, offset=first.end, line=first.end_line, bad_lines=scan(path).bad_lines,
                   max_lines=10, max_items=100, max_bytes=1 << 20)  # fmt: skip
    assert [ln.custom_id for w in rest for ln in w.lines] == ["c2", "c3", "c4"]
    # an older record that counted lines: skip that many valid lines from the start
    old = windows(path, offset=0, line=0, bad_lines={2, 6}, skip=3, max_lines=10,
                  max_items=100, max_bytes=1 << 20)  # fmt: skip
    assert [ln.n for w in old for ln in w.lines] == [7, 8]
