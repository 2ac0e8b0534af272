"""How the scan groups files into chunks: growing, capped by count and bytes, halving at the end."""

from __future__ import annotations

from itertools import pairwise

from service.scanning import (
    FIRST_CHUNK_FILES,
    FIRST_CHUNKS,
    FIRST_SCAN_BATCH,
    TAIL_MIN_FILES,
    plan_chunks,
)

MB = 1024 * 1024


def simulate(
    sizes: list[int], max_files: int, max_bytes: int, first_cuts: list[int] | None = None
) -> list[int]:
    """Cut chunks the way run_scan does: after each (doubling) scan batch, then a final cut."""
    batch = min(max_files, FIRST_SCAN_BATCH)
    counts: list[int] = []
    recorded = pending = 0
    while recorded < len(sizes):
        take = min(batch, len(sizes) - recorded)
        recorded, pending, batch = recorded + take, pending + take, min(batch * 2, 512)
        cut = plan_chunks(
            sizes[recorded - pending : recorded], len(counts) + 1, max_files, max_bytes, False
        )
        counts += cut
        pending -= sum(cut)
        if first_cuts is not None and recorded == take:
            first_cuts += cut
    counts += plan_chunks(sizes[recorded - pending :], len(counts) + 1, max_files, max_bytes, True)
    return counts


def test_small_photos_get_growing_chunks_and_a_halving_tail() -> None:
    first_cuts: list[int] = []
    counts = simulate([250_000] * 1000, max_files=128, max_bytes=64 * MB, first_cuts=first_cuts)
    assert sum(counts) == 1000
    assert counts[:6] == [8, 8, 16, 32, 64, 128]
    # The first scan batch alone sends a chunk to each of two scoring processes.
    assert first_cuts == [FIRST_CHUNK_FILES] * FIRST_CHUNKS == [8, 8]
    assert max(counts) == 128
    tail = counts[-6:]
    assert all(a >= b for a, b in pairwise(tail))  # never growing at the end
    assert counts[-2] <= TAIL_MIN_FILES


def test_big_photos_are_capped_by_bytes() -> None:
    counts = simulate([4_500_000] * 400, max_files=128, max_bytes=64 * MB)
    assert sum(counts) == 400
    assert max(counts) == 14  # 14 x 4.5 MB fits in 64 MiB, 15 does not
    assert counts[-1] < 14


def test_a_file_larger_than_the_byte_cap_still_gets_a_chunk() -> None:
    assert plan_chunks([100 * MB, 100 * MB], 5, 128, 64 * MB, final=True) == [1, 1]


def test_nothing_is_cut_before_the_final_cut_without_a_chunk_held_back() -> None:
    assert plan_chunks([1] * 12, 1, 128, MB, final=False) == []  # 8 full, 4 behind: hold
    assert plan_chunks([1] * 20, 1, 128, MB, final=False) == [8]  # then 8 with 4 behind
    assert plan_chunks([1] * 32, 1, 128, MB, final=False) == [8, 8]  # 16 held back
    assert plan_chunks([1] * 32, 3, 128, MB, final=False) == [16]  # the third chunk doubles
    assert plan_chunks([1] * 10, 1, 128, MB, final=True) == [8, 2]
    assert plan_chunks([], 1, 128, MB, final=True) == []


def test_a_small_chunk_size_gives_fixed_size_chunks() -> None:
    assert simulate([1000] * 20, max_files=2, max_bytes=MB) == [2] * 10
    assert simulate([1000] * 7, max_files=5, max_bytes=MB) == [5, 2]
