"""How the scan groups files into chunks: growing, capped by count and bytes, halving at the end."""

from __future__ import annotations

from itertools import pairwise

from service.scanning import (
    FIRST_CHUNK_FILES,
    FIRST_CHUNKS,
    TAIL_MIN_FILES,
    plan_chunks,
    scan_batches,
)

MB = 1024 * 1024


def simulate(
    sizes: list[int],
    max_files: int,
    max_bytes: int,
    first_cuts: list[tuple[int, int]] | None = None,
) -> list[int]:
    """Cut chunks the way run_scan does: after each scan batch, then a final cut.

    `first_cuts` collects (count, files scanned when it was cut) for the first chunks."""
    counts: list[int] = []
    recorded = pending = 0
    for batch in scan_batches(range(len(sizes)), min(max_files, FIRST_CHUNK_FILES)):  # type: ignore[arg-type]
        recorded, pending = recorded + len(batch), pending + len(batch)
        cut = plan_chunks(
            sizes[recorded - pending : recorded], len(counts) + 1, max_files, max_bytes, False
        )
        counts += cut
        pending -= sum(cut)
        if first_cuts is not None and len(counts) <= FIRST_CHUNKS:
            first_cuts += [(n, recorded) for n in cut]
    counts += plan_chunks(sizes[recorded - pending :], len(counts) + 1, max_files, max_bytes, True)
    return counts


def test_small_photos_get_growing_chunks_and_a_halving_tail() -> None:
    first_cuts: list[tuple[int, int]] = []
    counts = simulate([250_000] * 1000, max_files=128, max_bytes=64 * MB, first_cuts=first_cuts)
    assert sum(counts) == 1000
    assert counts[:6] == [8, 8, 16, 32, 64, 128]
    # Each of the first two chunks goes out as soon as its own 8 files are hashed.
    assert FIRST_CHUNKS == 2
    assert first_cuts == [(FIRST_CHUNK_FILES, 8), (FIRST_CHUNK_FILES, 16)] == [(8, 8), (8, 16)]
    assert max(counts) == 128
    tail = counts[-6:]
    assert all(a >= b for a, b in pairwise(tail))  # never growing at the end
    assert counts[-2] <= TAIL_MIN_FILES


def test_big_photos_are_capped_by_bytes() -> None:
    counts = simulate([4_500_000] * 400, max_files=128, max_bytes=64 * MB)
    assert sum(counts) == 400
    assert max(counts) == 14  # 14 x 4.5 MB fits in 64 MiB, 15 does not
    # The tail halves down to two big photos (TAIL_MIN_BYTES), not to eight of them.
    assert counts[-4:] == [10, 5, 3, 2]


def test_the_tail_floor_depends_on_file_size() -> None:
    assert plan_chunks([250_000] * 40, 9, 128, 64 * MB, final=True) == [20, 10, 8, 2]
    assert plan_chunks([4_000_000] * 20, 9, 128, 64 * MB, final=True) == [10, 5, 3, 2]


def test_a_file_larger_than_the_byte_cap_still_gets_a_chunk() -> None:
    assert plan_chunks([100 * MB, 100 * MB], 5, 128, 64 * MB, final=True) == [1, 1]


def test_after_the_first_chunks_one_chunk_is_held_back_until_the_final_cut() -> None:
    assert plan_chunks([1] * 7, 1, 128, MB, final=False) == []  # the first is not full yet
    assert plan_chunks([1] * 8, 1, 128, MB, final=False) == [8]  # the first chunks go at once
    assert plan_chunks([1] * 12, 2, 128, MB, final=False) == [8]
    assert plan_chunks([1] * 20, 3, 128, MB, final=False) == []  # 16 full, 4 behind: hold
    assert plan_chunks([1] * 32, 3, 128, MB, final=False) == [16]  # the third chunk doubles
    assert plan_chunks([1] * 40, 1, 128, MB, final=False) == [8, 8]  # 24 behind, not 16 + 16
    assert plan_chunks([1] * 48, 1, 128, MB, final=False) == [8, 8, 16]
    assert plan_chunks([1] * 10, 1, 128, MB, final=True) == [8, 2]
    assert plan_chunks([], 1, 128, MB, final=True) == []


def test_a_small_chunk_size_gives_fixed_size_chunks() -> None:
    assert simulate([1000] * 20, max_files=2, max_bytes=MB) == [2] * 10
    assert simulate([1000] * 7, max_files=5, max_bytes=MB) == [5, 2]
