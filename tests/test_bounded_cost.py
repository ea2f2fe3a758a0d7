"""No request takes more than it declared (in-process, real sympy and JAX): the audit's costly
requests replayed against check() with modest budgets. Each answers (a report, or the LimitError
or OutOfTime that says why not) within its budget + 2 s, and the worked example is answered
normally right after. Also: one total budget shared by every stage and point, cancellation,
memory, report size and the bounded caches."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import psutil
import pytest
from crossgrad.server import caches, deadline
from crossgrad.server.backends import jax_backend
from crossgrad.server.check import check
from crossgrad.server.deadline import Cancelled, OutOfTime
from crossgrad.server.language import LimitError
from crossgrad.server.limits import DEFAULT_LIMITS
from crossgrad.server.model import Budget, CheckRequest, InputSpec, Report, SamplePoints, Verdict
from crossgrad.server.validate import prepare

BUDGET = 3.0
# past its share sympy stops at its next check of the time; a full garbage collection in between
# took 0.4 s of a loaded CI run
SHARE_OVERRUN = 1.0
GRACE = 2.0


def worked_example() -> CheckRequest:
    return CheckRequest(
        "Q = 3*a**3 - b**2",
        [InputSpec("a", [2.0, 3.0]), InputSpec("b", [6.0, 4.0])],
        cotangents={"Q": [1.0, 1.0]},
        checks=("vjp", "jacobian"),
    )


def assert_worked_example() -> None:
    report = check(worked_example())
    assert report.verdict is Verdict.PASS, report.summary
    np.testing.assert_array_equal(report.block("vjp", "a").sources["engine"].values, [36.0, 81.0])
    np.testing.assert_array_equal(report.block("vjp", "b").sources["engine"].values, [-12.0, -8.0])
    np.testing.assert_array_equal(
        report.block("jacobian", "a", "Q").sources["engine"].values, np.diag([36.0, 81.0])
    )
    assert all(status.ran for status in report.references.values()), report.references


def answer(request: CheckRequest, budget: float = BUDGET) -> tuple[Report | Exception, float]:
    """check(request): its report, or the LimitError or OutOfTime it raised; and how long."""
    start = time.monotonic()
    try:
        outcome: Report | Exception = check(request)
    except (LimitError, OutOfTime) as exc:
        outcome = exc
    took = time.monotonic() - start
    assert took <= budget + GRACE, f"answered in {took:.1f} s: {outcome}"
    return outcome, took


def chain(statements: int) -> str:
    """A long straight-line program: sin(h) * 1.0001, repeated."""
    lines = ["h0 = x"] + [f"h{k} = sin(h{k - 1}) * 1.0001" for k in range(1, statements)]
    return "\n".join([*lines, f"y = sum(h{statements - 1})"])


# ---------------------------------------------------------------- the audit's requests


def test_a_tower_of_nested_gelu_is_checked_in_well_under_its_budget():
    # its symbolic text expanded to 3^8 copies of x: sympy ran 191 s on a 10 s budget
    request = CheckRequest(
        "y = " + "gelu(" * 8 + "x" + ")" * 8, [InputSpec("x", [0.3])], budget=Budget(seconds=BUDGET)
    )
    report, took = answer(request)
    assert isinstance(report, Report) and report.verdict is Verdict.PASS, report
    assert report.references["sympy"].ran and report.references["sympy"].note == "all entries, exact"
    assert report.references["sympy"].symbolic == []  # too large to show as text
    assert took < 2.0
    assert_worked_example()


def test_a_thousand_input_hessian_by_finite_differences_is_refused_before_any_work():
    x = np.linspace(-1, 1, 1000)
    request = CheckRequest(
        "y = sum(x ** 3)",
        [InputSpec("x", x)],
        checks=("hessian",),
        budget=Budget(seconds=BUDGET, hessian_max_inputs=1000),
    )
    error, took = answer(request)
    assert isinstance(error, LimitError) and error.field == "references", error
    assert "finite differences" in error.message and "the limit is" in error.message
    assert took < 0.5
    assert_worked_example()


def test_a_thousand_input_hessian_without_finite_differences_answers_within_budget():
    # (80 s before.) 10 s, not 3: where sympy finishes within its 1 s share, the Hessian's
    # entries near 0 have their rounding measured (JAX op by op: 1.3 s of compiling), and the
    # whole took 2.6 to 3.2 s here, on either side of a 3 s budget
    x = np.linspace(-1, 1, 1000)
    request = CheckRequest(
        "y = sum(x ** 3) * sum(sin(x))",
        [InputSpec("x", x)],
        checks=("hessian",),
        references=("jax", "sympy"),
        budget=Budget(seconds=10.0, sympy_seconds=1.0, hessian_max_inputs=1000),
    )
    report, _ = answer(request, budget=10.0)
    assert isinstance(report, Report) and report.verdict is Verdict.PASS, report
    assert report.timings["sympy"] < 1.0 + SHARE_OVERRUN, report.timings
    assert_worked_example()


def test_extra_sample_points_on_four_large_inputs():
    rng = np.random.default_rng(0)
    inputs = [InputSpec(n, rng.normal(size=1_000_000)) for n in "abcd"]
    request = CheckRequest(
        "y = sum(a * b + c * d)",
        inputs,
        samples=SamplePoints(count=2),
        budget=Budget(seconds=BUDGET),
    )
    # finite differences would evaluate the program 3 x 1,024 times (200 s before)
    error, took = answer(request)
    assert isinstance(error, LimitError) and error.field == "references", error
    assert "3 points" in error.message and took < 0.5
    # without them: engine, JAX and (skipped, too large) sympy at three points (about 2 s; a
    # budget of 3 s ran out on a loaded machine)
    request.references = ("sympy", "jax")
    request.budget = Budget(seconds=4 * BUDGET)
    report, _ = answer(request, 4 * BUDGET)
    assert isinstance(report, Report) and report.verdict is Verdict.PASS, report
    assert len(report.points) == 3 and "too large for sympy" in report.references["sympy"].note
    assert_worked_example()


def test_extra_sample_points_share_sympys_time_instead_of_multiplying_it():
    # a 3 s sympy budget took 16 s with 2 extra points: each point had it, twice
    rng = np.random.default_rng(1)
    request = CheckRequest(
        "y = sum(tanh(W @ x))",
        [InputSpec("W", rng.normal(size=(100, 100)) / 10), InputSpec("x", rng.normal(size=100))],
        references=("sympy", "jax"),
        samples=SamplePoints(count=2),
        budget=Budget(seconds=BUDGET, sympy_seconds=1.0),
    )
    report, _ = answer(request)
    assert isinstance(report, Report) and report.verdict is Verdict.PASS, report
    assert report.timings["sympy"] < 1.0 + SHARE_OVERRUN, report.timings  # 3 to 6 s before
    assert_worked_example()


def test_a_jacobian_through_outer_of_2000_by_2000_is_refused():
    x = np.linspace(0, 1, 2000)
    request = CheckRequest(
        "y = outer(x, z)",
        [InputSpec("x", x), InputSpec("z", x)],
        checks=("jacobian",),
        budget=Budget(seconds=BUDGET),
    )
    error, _ = answer(request)
    assert isinstance(error, LimitError) and error.field == "checks", error
    assert "Jacobian would have 16000000000 entries" in error.message
    assert_worked_example()


def test_jacobian_rows_are_batched_by_the_largest_intermediate():
    # 300 rows through a 300 x 1000 outer product: every row at once (as before, by output size)
    # would carry 300 x 3e5 cotangents through each node, 720 MB an array
    # (z not symmetric about 0: there each row's sum cancels to rounding noise, which JAX alone
    # cannot vouch for in a Jacobian this large: unverified)
    x, z = np.linspace(0, 1, 300), np.linspace(-1, 2, 1000)
    request = CheckRequest(
        "y = sum(tanh(outer(x, z)), axis=1)",
        [InputSpec("x", x), InputSpec("z", z)],
        checks=("jacobian",),
        references=("jax",),
        blame=False,
        budget=Budget(seconds=20.0),
    )
    assert prepare(request).cost.memory_bytes < DEFAULT_LIMITS.max_memory_bytes
    process = psutil.Process()
    baseline, peak, done = process.memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        report = check(request)
    finally:
        done.set()
        sampler.join()
    assert report.verdict is Verdict.PASS, report.summary
    assert peak[0] - baseline < 600 * 2**20, f"grew {(peak[0] - baseline) / 2**20:.0f} MiB"


def test_a_two_thousand_statement_program_with_every_check_runs_without_compiling():
    # XLA's compile of its Hessian aborted the process (std::bad_alloc) after 131 s. Op by op
    # it takes about 6 s here idle, and was seen past 10 s on a busy machine: the budget is
    # not what this test is about (the tests above are)
    request = CheckRequest(
        chain(1999),
        [InputSpec("x", [0.1, 0.2])],
        checks=("vjp", "jacobian", "hessian"),
        references=("jax", "fd"),
        budget=Budget(seconds=60.0),
    )
    program = prepare(request).program
    assert not any(jax_backend.jitted(program, w) for w in ("vjp", ("jac_rows", 1), ("hvp_cols", 1)))
    report, _ = answer(request, 60.0)
    assert isinstance(report, Report) and report.verdict is Verdict.PASS, report
    assert "jax" not in report.cache_hits  # nothing compiled, so nothing cached
    # with sympy too, and the audit's 3 s: an answer within the budget (sympy takes it all)
    request.references, request.budget = ("sympy", "jax", "fd"), Budget(seconds=BUDGET)
    outcome, _ = answer(request)
    assert isinstance(outcome, (Report, OutOfTime)), outcome
    assert_worked_example()


def test_sin_of_exp_of_exp_at_17_is_refused_by_sympy_at_once():
    # exp(exp(17)) is about 2^(3.5e7): mpmath's sin of it ran for minutes on a 1 s budget
    request = CheckRequest(
        "y = sum(sin(exp(exp(x))))", [InputSpec("x", [17.0])], budget=Budget(seconds=1.0)
    )
    report, took = answer(request, 1.0)
    assert isinstance(report, Report), report
    status = report.references["sympy"]
    assert not status.ran and "the argument of sin is about 2^" in status.note, status
    assert took < 1.0
    assert_worked_example()


def test_huge_powers_are_refused_by_sympy_too():
    # 2 ** exp(800): an exponent of about 2^1155 (an exact power of 2^4096 took 0.3 s, 2^16000
    # 12 s); while exp(exp(7.2)), about 2^1932, is still evaluated exactly
    report = check(CheckRequest("y = sum(2 ** exp(x))", [InputSpec("x", [800.0])]))
    assert "an exponent is about 2^1155" in report.references["sympy"].note
    assert not report.references["sympy"].ran
    report = check(CheckRequest("y = sum(exp(exp(x)))", [InputSpec("x", [7.2])]))
    assert report.references["sympy"].ran, report.references["sympy"]


def test_a_hessian_of_ten_billion_entries_is_refused_whatever_the_budget_says():
    request = CheckRequest(
        "y = sum(x ** 3)",
        [InputSpec("x", np.ones(100_000))],
        checks=("hessian",),
        references=("jax",),
        budget=Budget(hessian_max_inputs=100_000),
    )
    error, _ = answer(request)
    assert isinstance(error, LimitError) and error.field == "checks", error
    assert "10000000000 entries" in error.message


def test_a_program_too_costly_to_evaluate_once_is_refused():
    rng = np.random.default_rng(2)
    request = CheckRequest(
        "y = sum(tanh(A @ B) * A @ B)",
        [InputSpec("A", rng.normal(size=(1000, 1000))), InputSpec("B", rng.normal(size=(1000, 1000)))],
        references=("jax",),
    )
    cost = prepare(request).cost
    assert cost.work <= DEFAULT_LIMITS.max_work  # BLAS multiply-adds are cheap: it runs
    request.program = "y = " + " + ".join(["sum(tanh(A @ B))"] * 16)
    error, _ = answer(request)
    assert isinstance(error, LimitError) and error.field == "program", error
    assert "one evaluation of the program" in error.message


def test_memory_is_estimated_from_every_intermediate_not_only_the_largest():
    # 80 intermediates of 10^6 entries each: none is over any size limit, together 2.4 GiB
    lines = ["h0 = x"] + [f"h{k} = h{k - 1} * 1.0001" for k in range(1, 80)] + ["y = sum(h79)"]
    request = CheckRequest(
        "\n".join(lines),
        [InputSpec("x", np.ones((1000, 1000)))],
        references=("jax",),
        blame=False,
    )
    error, took = answer(request)
    assert isinstance(error, LimitError) and error.field == "memory", error
    assert "intermediates" in error.message and "GiB" in error.message and took < 0.5


def test_running_out_of_memory_in_a_stage_is_a_limit_error_naming_it(monkeypatch):
    def no_memory(point):
        raise MemoryError

    monkeypatch.setattr(jax_backend, "derivatives", no_memory)
    with pytest.raises(LimitError, match="out of memory in the jax stage") as info:
        check(CheckRequest("y = sum(x * x)", [InputSpec("x", [1.0, 2.0])]))
    assert info.value.field == "memory"
    monkeypatch.undo()
    assert_worked_example()


def test_jax_running_out_of_memory_is_a_limit_error_not_a_failed_reference(monkeypatch):
    """XLA's allocator failing reaches Python as a JaxRuntimeError: it was reported as "jax:
    failed" (an ERROR verdict) or escaped as an internal error."""
    import jax

    def no_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 32000000 bytes.")

    monkeypatch.setattr(jax_backend, "call", no_memory)
    request = CheckRequest("y = sum(x * x)", [InputSpec("x", [1.0, 2.0])], references=("jax",))
    with pytest.raises(LimitError, match="out of memory in the jax stage") as info:
        check(request)
    assert info.value.field == "memory"
    monkeypatch.undo()
    assert_worked_example()


def test_extra_points_keep_statistics_not_arrays():
    # a report with 64 extra points of large arrays reached 481 MB
    request = CheckRequest(
        "y = sum(sin(x) * x)",
        [InputSpec("x", np.linspace(-1, 1, 100_000))],
        references=("jax",),
        samples=SamplePoints(count=8),
    )
    report = check(request)
    assert report.verdict is Verdict.PASS and len(report.points) == 9
    first, extra = report.points[0], report.points[1:]
    assert first.complete and first.inputs["x"].shape == (100_000,)
    assert first.blocks[1].sources["jax"].values.shape == (100_000,)
    for point in extra:
        assert not point.complete and point.inputs == {}
        assert all(b.sources == {} and b.bad is None for b in point.blocks)
        assert all(b.pairs for b in point.blocks)  # the statistics are there
    size = len(pickle.dumps(report))
    assert size < 8 * 2**20, size  # point 0's arrays: every extra point would add as much
    small = check(CheckRequest("y = sum(x)", [InputSpec("x", [1.0, 2.0])], samples=SamplePoints(2)))
    assert small.points[1].inputs["x"].shape == (2,)  # small inputs are kept


# ---------------------------------------------------------------- one total budget


def test_finite_differences_run_out_of_the_total_budget_in_their_stage():
    rng = np.random.default_rng(3)
    request = CheckRequest(
        "y = sum(tanh(a) * b + c * d)",
        [InputSpec(n, rng.normal(size=100_000)) for n in "abcd"],
        references=("fd",),  # 1,024 evaluations: ~1.3 s
        budget=Budget(seconds=0.4),
    )
    error, took = answer(request, 0.4)
    assert isinstance(error, OutOfTime) and error.stage == "fd", error
    assert "0.4 s" in str(error) and took < 0.4 + 1.0


def test_the_callers_deadline_wins_when_it_is_tighter_and_the_requests_when_that_is():
    request = CheckRequest(chain(1999), [InputSpec("x", [0.3])], budget=Budget(seconds=30.0))
    start = time.monotonic()
    with deadline.budget(0.5), pytest.raises(OutOfTime) as info:
        check(request)
    assert time.monotonic() - start < 0.5 + 1.0 and info.value.seconds == 0.5
    request.budget = Budget(seconds=0.5)
    start = time.monotonic()
    with deadline.budget(30.0) as callers:
        with pytest.raises(OutOfTime) as info:
            check(request)
        assert deadline.current() is callers  # and it is back afterwards
    assert time.monotonic() - start < 0.5 + 1.0 and info.value.seconds == 0.5
    assert_worked_example()


def test_sympys_share_running_out_degrades_and_the_total_running_out_ends_the_check():
    rng = np.random.default_rng(4)
    inputs = [InputSpec("W", rng.normal(size=(120, 120)) / 10), InputSpec("x", rng.normal(size=120))]
    request = CheckRequest(
        "y = sum(tanh(W @ x))",
        inputs,
        references=("sympy", "jax"),
        budget=Budget(seconds=10.0, sympy_seconds=4.0),
    )
    # sympy's own 4 s: half of it for every entry (which takes ~4.3 s here), then a sample (~0.5 s)
    # in the rest; both margins are about 2x or more, so a slower or faster machine still passes
    report = check(request)
    note = report.references["sympy"].note
    assert report.verdict is Verdict.PASS and "ran out of its time budget; so: checked 64" in note
    request.budget = Budget(seconds=0.5, sympy_seconds=10.0)
    with pytest.raises(OutOfTime) as info:  # the request's 0.5 s: no answer
        check(request)
    assert info.value.stage == "sympy"


def test_a_check_stops_promptly_when_the_caller_cancels():
    rng = np.random.default_rng(5)
    request = CheckRequest(  # sympy's exact derivatives take ~3 s
        "y = sum(tanh(W @ x))",
        [InputSpec("W", rng.normal(size=(100, 100)) / 10), InputSpec("x", rng.normal(size=100))],
        budget=Budget(seconds=30.0, sympy_seconds=30.0),
    )
    gave_up = threading.Event()
    stages: list[str] = []
    timer = threading.Timer(0.5, gave_up.set)
    timer.start()
    start = time.monotonic()
    with deadline.budget(30.0, gave_up.is_set, stages.append), pytest.raises(Cancelled) as info:
        check(request)
    took = time.monotonic() - start
    timer.cancel()
    assert 0.5 <= took < 0.5 + 1.0, took  # sympy alone would take ~3 s
    assert info.value.stage == "sympy" and stages[:3] == ["parse", "engine", "sympy"]
    assert_worked_example()


# ---------------------------------------------------------------- bounded caches


@pytest.fixture
def fresh_caches():
    sizes = {name: s["capacity"] for name, s in caches.stats().items()}
    caches.clear()
    yield
    caches.configure(**sizes)


def test_a_repeated_check_hits_every_cache_and_gets_the_same_report(fresh_caches):
    request = CheckRequest("y = sum(tanh(x) * x ** 2)", [InputSpec("x", [0.5, -1.0, 2.0])])
    first, second = check(request), check(request)
    assert first.cache_hits == {"parse": False, "sympy": False, "jax": False}
    assert second.cache_hits == {"parse": True, "sympy": True, "jax": True}
    assert first.summary == second.summary
    assert first.references["sympy"].note == second.references["sympy"].note == "all entries, exact"


def test_caches_are_bounded_and_count_hits_and_misses(fresh_caches):
    caches.configure(parse=2, sympy=1, jax=3)
    before = caches.stats()
    programs = [f"y = sum(x * {k})" for k in range(1, 5)]
    for source in programs:
        check(CheckRequest(source, [InputSpec("x", [1.0, 2.0])]))
    stats = caches.stats()
    assert stats["parse"]["size"] == 2 and stats["sympy"]["size"] == 1 and stats["jax"]["size"] == 3
    assert stats["parse"]["misses"] - before["parse"]["misses"] == 4
    assert stats["parse"]["evictions"] - before["parse"]["evictions"] == 2
    again = check(CheckRequest(programs[-1], [InputSpec("x", [1.0, 2.0])]))
    assert again.cache_hits["parse"] and again.cache_hits["sympy"]
    assert caches.stats()["parse"]["hits"] - stats["parse"]["hits"] == 1
    evicted = check(CheckRequest(programs[0], [InputSpec("x", [1.0, 2.0])]))
    assert evicted.cache_hits == {"parse": False, "sympy": False, "jax": False}
    with pytest.raises(ValueError, match="unknown cache"):
        caches.configure(nope=1)
    with pytest.raises(ValueError, match="non-negative"):
        caches.configure(parse=-1)


def test_a_large_program_runs_op_by_op_and_is_not_cached():
    request = CheckRequest(chain(40), [InputSpec("x", [0.1, 0.2])], references=("jax",))
    report = check(request)
    assert report.verdict is Verdict.PASS and "jax" not in report.cache_hits
