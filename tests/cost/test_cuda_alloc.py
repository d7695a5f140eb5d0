"""The caching-allocator replay against hand-made sequences whose outcome follows from the rules of
c10/cuda/CUDACachingAllocator.cpp (round_size, get_allocation_size, should_split, best-fit
get_free_block, free_block's merging). Sizes are written out in bytes/MiB so each expectation can
be checked by hand."""
from layerwise.cost.cuda_alloc import CachingAllocator, round_size, steady_state_peaks

KiB, MiB = 1 << 10, 1 << 20


def test_round_size_is_512_byte_multiples():
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert round_size(MiB + 1) == MiB + 512


def test_a_small_block_takes_a_2_mib_segment():
    a = CachingAllocator()
    a.malloc(513)
    assert (a.allocated, a.reserved, a.segments) == (1024, 2 * MiB, 1)


def test_small_blocks_share_a_segment_until_it_is_full():
    a = CachingAllocator()
    a.malloc(1000)  # 1024
    a.malloc(3000)  # 3072, carved from the same 2 MiB segment
    assert (a.allocated, a.reserved, a.segments) == (4096, 2 * MiB, 1)
    a = CachingAllocator()
    a.malloc(MiB)  # exactly kSmallSize: still small; the other 1 MiB stays free in the segment
    a.malloc(MiB)
    assert (a.reserved, a.segments) == (2 * MiB, 1)
    a.malloc(MiB)
    assert (a.allocated, a.reserved, a.segments) == (3 * MiB, 4 * MiB, 2)


def test_a_request_just_above_1_mib_is_split_from_a_20_mib_segment():
    a = CachingAllocator()
    a.malloc(MiB + 1)  # rounded to 1 MiB + 512, large pool, < 10 MiB: a 20 MiB segment, split
    assert (a.allocated, a.reserved) == (MiB + 512, 20 * MiB)


def test_mid_size_requests_share_a_20_mib_segment():
    a = CachingAllocator()
    a.malloc(9 * MiB)  # 20 MiB segment, 11 MiB left
    a.malloc(9 * MiB)  # fits; 2 MiB left (> 1 MiB: split)
    assert (a.allocated, a.reserved, a.segments) == (18 * MiB, 20 * MiB, 1)
    a.malloc(9 * MiB)  # 2 MiB left cannot serve it: a second segment
    assert (a.allocated, a.reserved, a.segments) == (27 * MiB, 40 * MiB, 2)


def test_a_15_mib_request_gets_a_16_mib_segment_and_counts_all_of_it():
    a = CachingAllocator()
    a.malloc(15 * MiB)  # >= 10 MiB: segment rounded to 2 MiB = 16 MiB; 1 MiB left is not > 1 MiB: no split
    assert (a.allocated, a.reserved, a.segments) == (16 * MiB, 16 * MiB, 1)
    b = CachingAllocator()
    b.malloc(10 * MiB)  # exactly kMinLargeAlloc: its own 10 MiB segment
    assert (b.allocated, b.reserved) == (10 * MiB, 10 * MiB)


def test_a_freed_block_is_reused_and_split_when_more_than_1_mib_is_left():
    a = CachingAllocator()
    a.free(a.malloc(15 * MiB))  # a 16 MiB cached block
    assert (a.allocated, a.reserved) == (0, 16 * MiB)
    a.malloc(14 * MiB + 512 * KiB)  # 1.5 MiB left: split
    assert (a.allocated, a.reserved) == (14 * MiB + 512 * KiB, 16 * MiB)
    a.malloc(MiB + 200 * KiB)  # the 1.5 MiB rest fits; 0.3 MiB left is not > 1 MiB: handed out whole
    assert (a.allocated, a.reserved, a.segments) == (16 * MiB, 16 * MiB, 1)


def test_freed_neighbours_merge_back():
    a = CachingAllocator()
    x, y = a.malloc(5 * MiB), a.malloc(5 * MiB)  # both from one 20 MiB segment
    a.free(x)
    a.free(y)  # x, y and the 10 MiB rest merge into one 20 MiB free block
    a.malloc(18 * MiB)  # fits the merged block (no new segment); 2 MiB left: split
    assert (a.allocated, a.reserved, a.segments) == (18 * MiB, 20 * MiB, 1)


def test_best_fit_picks_the_smallest_free_block():
    a = CachingAllocator()
    big, small = a.malloc(16 * MiB), a.malloc(12 * MiB)
    a.free(big)
    a.free(small)
    a.malloc(11 * MiB)  # the 12 MiB block (1 MiB left: whole), not the 16 MiB one
    assert a.allocated == 12 * MiB
    a.malloc(15 * MiB)  # the 16 MiB block is still there
    assert (a.allocated, a.reserved) == (28 * MiB, 28 * MiB)


def test_the_pools_do_not_serve_each_other():
    a = CachingAllocator()
    a.malloc(512)  # a 2 MiB small segment, almost all free
    a.malloc(MiB + 512 * KiB)  # large: needs its own 20 MiB segment
    assert (a.reserved, a.segments) == (22 * MiB, 2)


def test_peaks_and_reset():
    a = CachingAllocator()
    a.free(a.malloc(12 * MiB))
    a.reset_peaks()
    assert (a.peak_allocated, a.peak_reserved) == (0, 12 * MiB)
    a.malloc(3 * MiB)  # the cached 12 MiB block serves it (best fit), split: 9 MiB back to the pool
    assert (a.peak_allocated, a.peak_reserved) == (3 * MiB, 12 * MiB)


def test_steady_state_step_reuses_the_warm_up_segments():
    persistent = [("w", 12 * MiB)]  # its own 12 MiB segment
    # a step: two activations, one freed; a gradient that outlives the step (freed by zero_grad)
    step = [("a", 4 * MiB), ("b", 4 * MiB), ("a", 0), ("g", 13 * MiB), ("b", 0)]
    peaks = steady_state_peaks(persistent, step)
    # warm-up: a, b split from a new 20 MiB segment (12 MiB left); a freed (4 MiB, b is in use next
    # to it); g fits neither free piece: a 14 MiB segment, 1 MiB left unsplit, counted 14 MiB.
    # Reserved 12 + 20 + 14 = 46 MiB. Freeing b merges the 20 MiB segment whole; zero_grad frees g.
    # Step 2: a and b best-fit into the 14 MiB block (split 10 MiB, then 6 MiB left), a freed,
    # g 13 MiB split from the 20 MiB block: allocated w + b + g = 12 + 4 + 13 MiB.
    assert peaks.reserved == 46 * MiB
    assert peaks.allocated == 29 * MiB
