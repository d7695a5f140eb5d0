"""The storage tracker on hand-made tensors: each byte counted once, frees seen, exact breakdown."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.measure.tracker import StorageTracker


def test_views_share_one_storage_and_frees_are_seen():
    tracker = StorageTracker()
    with tracker, tracker.phase("forward"):
        a = torch.empty(1000)  # 4000 bytes
        b = a[10:].view(10, 99)  # a view: same storage
        a.add_(1)  # in place: no new storage
        assert tracker.current.total == 4000
        c = b * 2  # 3960 bytes
        assert tracker.current.total == 7960
        del a, b
        assert tracker.current.total == 3960
        del c
    assert tracker.current.total == 0
    assert tracker.peak.total == 7960
    assert tracker.peak.phase == "forward"
    assert tracker.peak.by_category["activations"] == 7960


def test_phase_decides_the_category_of_new_storages():
    tracker = StorageTracker()
    with tracker:
        with tracker.phase("forward"):
            act = torch.ones(10)
        with tracker.phase("backward"):
            tmp = torch.ones(20)
        with tracker.phase("optimizer"):
            scratch = torch.ones(30)
        cats = dict(tracker.current.by_category)
    assert (cats["activations"], cats["temporaries"]) == (40, 200)
    assert tracker.phase_peaks["optimizer"].total == 240
    del act, tmp, scratch


def test_reclassification_corrects_the_peak_it_was_alive_at():
    tracker = StorageTracker()
    with tracker, tracker.phase("backward"):
        grad = torch.ones(100)  # born as a temporary
        spike = torch.ones(50)
        del spike  # the peak (600 bytes) is behind us now
        later = torch.ones(10)  # born after the peak
    tracker.register(grad, "gradients")
    tracker.register(later, "gradients")
    assert tracker.peak.total == 600
    assert tracker.peak.by_category["gradients"] == 400  # `grad` was alive at the peak
    assert tracker.peak.by_category["temporaries"] == 200  # `later` was not
    assert tracker.current.by_category["gradients"] == 440


def test_a_storage_from_before_tracking_counts_at_every_peak():
    const = torch.ones(25)  # 100 bytes, made before the tracker and never registered
    tracker = StorageTracker()
    with tracker, tracker.phase("forward"):
        x = torch.ones(5)
        del x
        y = torch.ones(2) + const[:2]  # const is first seen here
    assert tracker.current.by_category["preexisting"] == 100
    assert tracker.peak.total == 100 + 20  # x's 20 bytes and const together, retroactively
    assert tracker.phase_peaks["forward"].by_category["preexisting"] == 100
    del y


def test_registered_module_state_and_gradients_by_hook():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)  # 15 params = 60 bytes
    model.register_buffer("scale", torch.ones(2))  # 8 bytes
    tracker = StorageTracker()
    tracker.register_module(model)
    x = torch.randn(5, 4)
    tracker.register(x, "inputs")
    assert tracker.current.total == 60 + 8 + 80
    with tracker:
        with tracker.phase("forward"):
            loss = model(x).sum()
        with tracker.phase("backward"):
            loss.backward()
            del loss
    cur = tracker.current.by_category
    assert cur["parameters"] == 60 and cur["buffers"] == 8 and cur["gradients"] == 60
    assert cur["temporaries"] == 0 and cur["activations"] == 0
    tracker.remove_hooks()


def test_fake_scalars_stand_in_for_item_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        t = torch.zeros(())
        with StorageTracker(fake_scalars=True):
            assert t.item() == 1.0
            assert torch.zeros((), dtype=torch.int64).item() == 1
        with pytest.raises(Exception):
            t.item()  # without the stand-in, fake tensors have no data


def test_unknown_category_is_refused():
    with pytest.raises(ValueError, match="unknown category"):
        StorageTracker().register(torch.ones(1), "weights-ish")


def test_setup_peak_is_the_registered_state_alone():
    # regression: after the step, the phase must not fall back to "setup"
    from _measure_models import linear_stack
    from layerwise.measure.step import measure_step
    from layerwise.workload import Workload

    model = linear_stack((16, 16))
    r = measure_step(model, Workload(batch=1, optimizer="sgd-momentum"))
    n = model.params().total
    # weights + momentum buffers + the (1, 16) input; no gradients yet
    assert r.phase_peaks["setup"] == 4 * n + 4 * n + 4 * 16


def test_a_storage_resized_in_place_is_followed():
    """FSDP2 frees its unsharded parameters with `untyped_storage().resize_(0)` and re-allocates
    them the same way; the dispatcher never sees it, so the tracker patches resize_ (as MemTracker
    does). Without it a freed 4,000-byte storage stays counted."""
    tracker, original = StorageTracker(), torch.UntypedStorage.resize_
    with tracker:
        with tracker.phase("forward"):
            x = torch.ones(1000) * 2
            assert tracker.current.total == 4000
            x.untyped_storage().resize_(0)
            assert tracker.current.total == 0
            x.untyped_storage().resize_(8000)
            assert tracker.current.total == tracker.peak.total == 8000
    assert torch.UntypedStorage.resize_ is original  # restored on exit
