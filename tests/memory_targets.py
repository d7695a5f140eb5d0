"""The memory model's targets against the measure reading, shared by the memory test files: the
peak within 2%, every component within 5% of the peak (issue #9's accuracy targets)."""


def check_within_targets(report, truth, label: str = "") -> None:
    peak = truth.peak_bytes
    assert abs(report.peak_bytes - peak) <= 0.02 * peak, (label, report.peak_bytes, peak, report.peak_phase,
                                                        truth.peak_phase)
    comps = report.components.as_dict()
    for key, value in truth.components.items():
        assert abs(comps[key] - value) <= 0.05 * peak, (label, key, comps[key], value)
