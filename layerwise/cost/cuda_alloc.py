"""PyTorch's CUDA caching allocator, replayed in pure Python: what `torch.cuda.max_memory_allocated`
and `max_memory_reserved` report for a sequence of tensor allocations and frees.

The rules are those of c10/cuda/CUDACachingAllocator.cpp (DeviceCachingAllocator, default
settings: no max_split_size, no expandable segments, no roundup_power2_divisions, one stream):

  round_size          every request is rounded up to a multiple of kMinBlockSize (512 B), at least 512;
  get_pool            rounded size <= kSmallSize (1 MiB): the small pool, else the large pool;
  get_free_block      best fit: the smallest free block of the pool with size >= the request, the
                      lowest address among equal sizes (BlockComparatorSize: size, then pointer);
  get_allocation_size no free block fits: cudaMalloc a new segment of kSmallBuffer (2 MiB) for a
                      small request, kLargeBuffer (20 MiB) for one below kMinLargeAlloc (10 MiB),
                      else the request rounded up to kRoundLarge (2 MiB);
  should_split        the block found is split (the request at its front, the rest back to the pool)
                      if the rest is >= 512 B (small pool) or > 1 MiB (large pool); otherwise the
                      whole block is handed out and counted: a 15 MiB request gets a 16 MiB segment
                      and "allocated" grows by 16 MiB;
  free_block          the block returns to its pool, merged with free neighbours of its segment;
                      segments are never released (no empty_cache, no OOM retry here).
"allocated" is the sum of handed-out block sizes; "reserved" the sum of segment sizes.
Zero-byte requests allocate nothing (the allocator returns a null pointer). Checked against
hand-made sequences in tests/cost/test_cuda_alloc.py and against a GPU by bench/gpu_truth.py.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

K_MIN_BLOCK_SIZE = 512  # all sizes are rounded to at least 512 bytes
K_SMALL_SIZE = 1 << 20  # largest "small" allocation is 1 MiB
K_SMALL_BUFFER = 2 << 20  # "small" allocations are packed in 2 MiB segments
K_LARGE_BUFFER = 20 << 20  # "large" allocations may be packed in 20 MiB segments
K_MIN_LARGE_ALLOC = 10 << 20  # allocations between 1 and 10 MiB may use kLargeBuffer
K_ROUND_LARGE = 2 << 20  # round up large allocations to 2 MiB


def round_size(nbytes: int) -> int:
    if nbytes < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    return -(-nbytes // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE


def allocation_size(size: int) -> int:
    """The segment cudaMalloc'ed for a rounded request that no cached block can serve."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


def _should_split(remaining: int, small: bool) -> bool:
    return remaining >= K_MIN_BLOCK_SIZE if small else remaining > K_SMALL_SIZE


class Block:
    __slots__ = ("addr", "size", "small", "prev", "next", "allocated")

    def __init__(self, addr: int, size: int, small: bool):
        self.addr, self.size, self.small = addr, size, small
        self.prev = self.next = None
        self.allocated = False


@dataclass(frozen=True)
class AllocatorPeaks:
    """The caching allocator's view of a step: peaks of allocated and reserved bytes, and the
    segments it ended with."""

    allocated: int
    reserved: int
    segments: int


class CachingAllocator:
    """One device, one stream. `malloc(n)` returns a handle for `free`."""

    def __init__(self):
        self._pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # sorted (size, addr)
        self._free: dict[int, Block] = {}  # addr -> free block
        self._next_addr = 0  # segments get increasing addresses (cudaMalloc's order is not modelled)
        self.allocated = self.reserved = self.segments = 0
        self.peak_allocated = self.peak_reserved = 0

    def malloc(self, nbytes: int) -> Block | None:
        if nbytes <= 0:
            return None
        size = round_size(nbytes)
        small = size <= K_SMALL_SIZE
        block = self._take_free(size, small) or self._new_segment(allocation_size(size), small)
        if _should_split(block.size - size, small):
            rest = Block(block.addr + size, block.size - size, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._insert(rest)
        block.allocated = True
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: Block | None) -> None:
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        for other in (block.prev, block.next):
            if other is not None and not other.allocated:
                self._remove(other)
                if other is block.prev:
                    block.addr, block.prev = other.addr, other.prev
                    if other.prev is not None:
                        other.prev.next = block
                else:
                    block.next = other.next
                    if other.next is not None:
                        other.next.prev = block
                block.size += other.size
        self._insert(block)

    def reset_peaks(self) -> None:
        """torch.cuda.reset_peak_memory_stats(): the peaks restart from the current values."""
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def peaks(self) -> AllocatorPeaks:
        return AllocatorPeaks(self.peak_allocated, self.peak_reserved, self.segments)

    # ---- the pools ----------------------------------------------------------------------------
    def _take_free(self, size: int, small: bool) -> Block | None:
        pool = self._pools[small]
        i = bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        _, addr = pool.pop(i)
        return self._free.pop(addr)

    def _new_segment(self, size: int, small: bool) -> Block:
        block = Block(self._next_addr, size, small)
        self._next_addr += size
        self.reserved += size
        self.segments += 1
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return block

    def _insert(self, block: Block) -> None:
        insort(self._pools[block.small], (block.size, block.addr))
        self._free[block.addr] = block

    def _remove(self, block: Block) -> None:
        pool = self._pools[block.small]
        del pool[bisect_left(pool, (block.size, block.addr))]
        del self._free[block.addr]


# ---- replaying a step -------------------------------------------------------------------------------
# An event is (key, nbytes): nbytes > 0 allocates a tensor storage under `key`, nbytes == 0 frees the
# storage allocated under `key`. Keys are any hashable values, unique among live storages.
Event = tuple[object, int]


def replay(allocator: CachingAllocator, events, live: dict) -> None:
    for key, nbytes in events:
        if nbytes:
            live[key] = allocator.malloc(nbytes)
        elif key in live:
            allocator.free(live.pop(key))


def steady_state_peaks(persistent, step, *, warm_steps: int = 1) -> AllocatorPeaks:
    """The allocator's peaks over one step after `warm_steps` identical steps, the way the measure
    reading runs step 2: `persistent` (parameters, buffers, optimizer state, inputs: allocated
    once, in order) and then `step`'s events, whose storages still alive at the end of a step
    (the gradients, freed by the next zero_grad(set_to_none=True)) are freed before the next
    one. The segments cached by the warm-up step stay reserved, as on the GPU."""
    step = list(step)
    alloc, live = CachingAllocator(), {}
    replay(alloc, persistent, live)
    held = set(live)
    for _ in range(warm_steps):
        replay(alloc, step, live)
        for key in [k for k in live if k not in held]:
            alloc.free(live.pop(key))
    alloc.reset_peaks()
    replay(alloc, step, live)
    return alloc.peaks()
