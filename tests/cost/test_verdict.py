"""The verdict's search: the largest n whose need fits, against brute force on random monotone
needs (linear, convex, concave, stepped, with disallowed tails), from good and bad guesses."""
import random

from layerwise.cost.verdict import largest

RNG = random.Random(7)


def _needs():
    for _ in range(150):
        a, b, c = RNG.randrange(0, 1000), RNG.randrange(1, 100), RNG.choice([0, 0.01, 0.5])
        step = RNG.choice([1, 1, 7])
        cap = RNG.choice([None, RNG.randrange(1, 300)])
        shape = RNG.choice(["linear", "convex", "concave"])

        def need(n, a=a, b=b, c=c, step=step, cap=cap, shape=shape):
            if cap is not None and n > cap:
                return None  # not allowed (a sequence past the position table)
            m = (n // step) * step
            if shape == "convex":
                return a + b * m + int(c * m * m)
            if shape == "concave":
                return a + int(b * 30 * m ** 0.5)
            return a + b * m
        yield need


def test_largest_is_the_brute_force_answer():
    for need in _needs():
        limit = RNG.choice([50, 400, 1 << 12])
        budget = RNG.randrange(0, 60_000)
        truth = max((n for n in range(1, limit + 1) if need(n) is not None and need(n) <= budget), default=0)
        for guess in (1, truth or 1, max(1, truth - 3), truth + 5, RNG.randrange(1, 2 * limit), limit):
            assert largest(need, budget, limit, guess) == truth, (budget, limit, guess)


def test_largest_costs_a_few_calls_on_a_near_linear_need():
    calls = []

    def need(n):
        calls.append(n)  # (the brute force below calls it too; cleared before the search)
        return 10_000 + 37 * n + (n * n) // 500

    truth = max(n for n in range(1, 200_000) if 10_000 + 37 * n + (n * n) // 500 <= 50_000_000)
    calls.clear()
    assert largest(need, 50_000_000, 1 << 20, guess=(50_000_000 - 10_000) // 37) == truth
    assert len(calls) <= 24  # doubling from 1, then bisection: 36
