"""YAML gradient-regression suites: loading and validation.

A suite is a YAML file (read with pyyaml's safe loader only) with a list of cases:

    suite: examples                 # optional name (default: the file's stem)
    defaults:                       # optional, merged into every case (a case's own keys win)
      references: [sympy, jax, fd]
    cases:
      - name: worked example
        program: Q = 3*a**3 - b**2
        inputs:
          a: [2, 3]                                 # inline
          b: {file: data/b.npy}                     # .npy, or .npz with `key` (default: the name)
          x: {random: {shape: [4], distribution: uniform, low: -1, high: 1, seed: 7}}
          W: {file: layer.npz, mask: {file: layer.npz, key: mask}}
          y: {value: [1, 0], frozen: true}          # requires_grad: false
        cotangents: {Q: [1, 1]}
        checks: [vjp, jacobian]
        expect: PASS

Every problem is a SuiteError whose message names the file, the YAML line, the case and the field.
Paths are relative to the suite file. Sizes are capped (cases, elements, file sizes) so that a
suite cannot make the runner allocate without bound.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .client import CHECKS, REFERENCES, Input
from .junit import XML_ILLEGAL

MAX_SUITE_BYTES = 4 << 20
MAX_NAME_CHARS = 500  # suite and case names: SUITE::NAME is the request id (the server: 1,024)
MAX_SUITE_NODES = 1_000_000  # values once YAML aliases are expanded (large arrays: .npy files)
MAX_CASES = 1000  # per suite file
MAX_ELEMENTS = 1_000_000  # per tensor, as the server's per-input limit
MAX_NDIM = 8
MAX_DATA_FILE_BYTES = 64 << 20
MAX_SAMPLE_POINTS = 64

PASSING = ("PASS", "PASS_WITH_NUMERICAL_NOTES", "PASS_WITH_CONVENTION_DIFFERENCES")
VERDICTS = (
    "PASS",
    "PASS_WITH_NUMERICAL_NOTES",
    "PASS_WITH_CONVENTION_DIFFERENCES",
    "UNVERIFIED",
    "FAIL",
    "ERROR",
)
DTYPES = ("float64", "float32")
CASE_KEYS = {
    "name", "description", "program", "inputs", "outputs", "cotangents", "checks", "references",
    "rtol", "atol", "samples", "claimed_vjp", "expect", "seed", "budget", "blame",
}  # fmt: skip
BUDGET_KEYS = {
    "seconds", "sympy_seconds", "sympy_max_scalar_ops", "sympy_sample_entries",
    "sympy_max_jacobian_rows", "symbolic_text_max_ops", "fd_max_entries", "fd_sample_entries",
    "hessian_max_inputs",
}  # fmt: skip


class SuiteError(ValueError):
    """A suite that cannot be run as written; str() is one line naming file, line, case and field."""


NAME_RULE = (
    "a name without '::' or control characters (nor U+FFFE, U+FFFF or surrogates, which XML cannot hold)"
)


def _bad_name(name: str) -> bool:
    """Whether a suite's or a case's name breaks NAME_RULE: '::' splits pytest's node ids, and a
    control character (U+0001), a surrogate or U+FFFE makes the JUnit XML unreadable."""
    return (
        "::" in name
        or any(unicodedata.category(c) == "Cc" for c in name)
        or XML_ILLEGAL.search(name) is not None
    )


@dataclass
class Case:
    name: str
    suite: str  # the suite's name
    path: Path  # the suite file
    line: int  # where the case starts in it (1-based; 0 when unknown)
    program: str
    program_line: int  # where the program's first line is in it (1-based; 0 when unknown)
    inputs: dict[str, Input]
    expect: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict)  # the rest of build_request's arguments
    description: str = ""
    where: _Where | None = field(default=None, repr=False, compare=False)

    def line_of(self, request_field: str) -> int:
        """The line in the suite file of a request field a server named in an error
        (claimed_vjp[b], inputs[a].mask): the innermost of its keys written in this case, else
        the case's own line."""
        if self.where is None:
            return self.line
        where = self.where
        for part in re.split(r"[.\[\]]+", request_field):
            if part:
                where = where / part
        return where.line or self.line

    @property
    def id(self) -> str:
        """Unique across suites: the key of the case in baselines and reports."""
        return f"{self.suite}::{self.name}"

    @property
    def expected(self) -> str:
        """The verdicts it must get, in words ("a pass" for the default, any of the passes)."""
        return "a pass" if set(self.expect) == set(PASSING) else " or ".join(self.expect)

    @property
    def rtol(self) -> float | None:
        return self.fields.get("rtol")

    @property
    def atol(self) -> float | None:
        return self.fields.get("atol")


@dataclass
class Suite:
    name: str
    path: Path
    cases: list[Case]


# ---------------------------------------------------------------- YAML with line numbers

# A plain (unquoted) number with an exponent, or with a sign before its dot, is a float to YAML 1.2
# and JSON but a string to pyyaml's YAML 1.1 (1e-3, 2E+5, -.5), and a string where a number
# belongs is refused: resolve these as floats. Quoted ("1e-3") they stay strings.
_YAML12_FLOAT = re.compile(
    r"^[-+]?(?:(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)$"
)


@functools.cache
def _loader_class() -> type:
    """pyyaml's safe loader (plain data only, never python objects), reading YAML 1.2 floats."""
    import yaml

    class SuiteLoader(yaml.SafeLoader):
        pass

    # after YAML 1.1's own resolvers: what they already read (1.5, 1_000, 0x1F) stays theirs
    SuiteLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+.0123456789"))
    return SuiteLoader


def _lines(
    node: Any,
    path: tuple[Any, ...],
    out: dict[tuple[Any, ...], int],
    where: str,
    inside: frozenset[int] = frozenset(),
) -> None:
    """Record the line of every node by its path (keys and list indices); reject duplicate keys,
    which pyyaml would silently resolve to the last one, an alias inside itself, and a suite that
    aliases expand past MAX_SUITE_NODES (310 bytes of nested anchors expanded to 9^9 nodes and
    took 9 GB before any check looked at them)."""
    import yaml

    line = node.start_mark.line + 1
    if id(node) in inside:
        raise SuiteError(f"{where}:{line}: a YAML alias refers to a node it is inside (recursive)")
    if len(out) >= MAX_SUITE_NODES:
        raise SuiteError(
            f"{where}:{line}: the suite expands to more than {MAX_SUITE_NODES} values (through "
            "YAML aliases, or simply too large)"
        )
    # a block scalar (program: |) starts on the line after its indicator
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    out[path] = line + block
    inside = inside | {id(node)} if not isinstance(node, yaml.ScalarNode) else inside
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name in seen:
                raise SuiteError(f"{where}:{key.start_mark.line + 1}: duplicate key {name!r}")
            seen.add(name)
            _lines(value, (*path, name), out, where, inside)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out, where, inside)


def _parse_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    import yaml

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite: {exc.strerror or exc}") from None
    if size > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: the suite is {size} bytes; the limit is {MAX_SUITE_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read the suite: {exc}") from None
    loader = _loader_class()(text)  # safe: plain data only, never python objects
    try:
        node = loader.get_single_node()
        if node is None:
            raise SuiteError(f"{path}: the suite is empty (it needs a `cases:` list)")
        lines: dict[tuple[Any, ...], int] = {}
        try:
            _lines(node, (), lines, str(path))
        except RecursionError:
            raise SuiteError(f"{path}: the suite is nested too deeply") from None
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "expected <block end>" in problem:
            problem += " (check the indentation: a key's fields are indented under it, alike)"
        elif "mapping values are not allowed" in problem:
            problem += " (a value holding ': ' needs quotes, or the indentation is off)"
        raise SuiteError(f"{path}{at}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    return data, lines


# ---------------------------------------------------------------- validation


class _Where:
    """Where a value sits (file, case, field path), to name it in an error."""

    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int], case: str = "", at: tuple = ()):
        self.path, self.lines, self.case, self.at = path, lines, case, at

    def __truediv__(self, key: Any) -> _Where:
        return _Where(self.path, self.lines, self.case, (*self.at, key))

    @property
    def line(self) -> int:
        for n in range(len(self.at), -1, -1):  # the innermost node pyyaml knows
            if self.at[:n] in self.lines:
                return self.lines[self.at[:n]]
        return 0

    def field_name(self) -> str:
        in_case = len(self.at) >= 2 and self.at[0] == "cases" and isinstance(self.at[1], int)
        parts = list(self.at[2:] if in_case else self.at)  # a case's fields are named within it
        text = ""
        for p in parts:
            text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
        return text

    def error(self, message: str) -> SuiteError:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        parts = [where]
        if self.case:
            parts.append(f"case {self.case}")
        name = self.field_name()
        if name:
            parts.append(f"field {name!r}")
        return SuiteError(": ".join(parts) + ": " + message)


def _numeric_text(text: str) -> bool:
    """Whether text reads as a finite number ("2", " 1e-3"): quoted, since plain it would be one."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _not_a_number(value: Any, booleans: bool = False) -> str | None:
    """Why a value written where a number belongs is not one, or None when it is. (1e-7 is read as
    a number by the loader; a string here was quoted, or is not a number.)"""
    if isinstance(value, bool):
        # as the CLI: YAML's true (and YAML 1.1's yes, on) would otherwise be taken for 1.0
        return None if booleans else "true and false are not numbers: write 1 and 0"
    if isinstance(value, int | float):
        return None
    if isinstance(value, str):
        if _numeric_text(value):
            return f"{value!r} is text, not a number: write the number without quotes"
        return f"expected a number, got {value!r}"
    if value is None:
        return "expected a number, got nothing (null)"
    return f"expected a number, got {'a mapping' if isinstance(value, dict) else repr(value)}"


def _number(value: Any, where: _Where, minimum: float | None = 0.0) -> float:
    why = _not_a_number(value)
    if why is not None:
        raise where.error(why)
    number = float(value)
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise where.error(f"expected a finite number >= {minimum:g}, got {value!r}")
    return number


def _integer(value: Any, where: _Where, low: int = 0, high: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise where.error(f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def _string_list(value: Any, where: _Where, allowed: Sequence[str] = ()) -> list[str]:
    # a string is one name or several separated by commas ("outputs: y, z"), as on the command line
    items = [n.strip() for n in value.split(",") if n.strip()] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise where.error(f"expected a name or a list of names, got {value!r}")
    for v in items:
        if allowed and v not in allowed:
            raise where.error(f"unknown value {v!r}; use one of {', '.join(allowed)}")
    return items


SAMPLE_KEYS = {"count", "seed", "distribution", "low", "high", "scale"}


def _known_keys(given: dict[str, Any], known: set[str], where: _Where, lead: str = "use") -> None:
    """SuiteError for the first key not in `known`, naming the nearest one."""
    for key in sorted(set(given) - known, key=str):
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise (where / key).error(f"unknown key; {hint}{lead} {', '.join(sorted(known))}")


def _mapping(value: Any, where: _Where, what: str = "a mapping") -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise where.error(f"expected {what}, got {type(value).__name__}")
    return value


def _check_size(array: np.ndarray, where: _Where, booleans: bool = False) -> np.ndarray:
    if array.ndim > MAX_NDIM or array.size > MAX_ELEMENTS:
        raise where.error(
            f"a tensor of shape {array.shape}; the limits are {MAX_NDIM} dimensions and "
            f"{MAX_ELEMENTS} elements"
        )
    if array.dtype.kind == "b" and not booleans:  # as inline true and false (masks may be)
        raise where.error("the array holds booleans (true and false are not numbers): save 1 and 0")
    if array.dtype.kind not in "biuf":
        raise where.error(f"expected numbers, got an array of dtype {array.dtype}")
    return array


def _load_array(
    spec: Mapping[str, Any], default_key: str, where: _Where, booleans: bool = False
) -> np.ndarray:
    raw = spec["file"]
    if not isinstance(raw, str) or not raw:
        raise (where / "file").error(f"expected a path, got {raw!r}")
    file = Path(raw) if Path(raw).is_absolute() else where.path.parent / raw
    try:
        size = file.stat().st_size
    except OSError:
        raise (where / "file").error(f"no such file {str(file)!r}") from None
    if size > MAX_DATA_FILE_BYTES:
        raise (where / "file").error(f"{raw} is {size} bytes; the limit is {MAX_DATA_FILE_BYTES}")
    key = spec.get("key", default_key)
    try:
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)  # never unpickle: data only
        elif file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                if key not in archive.files:
                    raise (where / "key").error(
                        f"{raw} has no array {key!r}; it has {', '.join(archive.files) or 'none'}"
                    )
                array = archive[key]
        else:
            raise (where / "file").error(f"{raw}: use a .npy or .npz file")
    except (OSError, ValueError) as exc:
        if isinstance(exc, SuiteError):
            raise
        raise (where / "file").error(f"cannot load {raw}: {exc}") from None
    return _check_size(np.asarray(array), where, booleans)


RANDOM_KEYS = {"shape", "distribution", "low", "high", "mean", "scale", "seed", "dtype"}


def _random_array(spec: Any, where: _Where) -> np.ndarray:
    spec = _mapping(spec, where)
    _known_keys(spec, RANDOM_KEYS, where)
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise (where / "shape").error(f"expected a list of at most {MAX_NDIM} sizes, got {shape!r}")
    shape = [_integer(n, where / "shape" / i, 0, MAX_ELEMENTS) for i, n in enumerate(shape)]
    if math.prod(shape) > MAX_ELEMENTS:
        raise (where / "shape").error(f"{math.prod(shape)} elements; the limit is {MAX_ELEMENTS}")
    # An explicit seed: two inputs drawn with the same default seed would be equal, and equal
    # operands sit on kinks (maximum(a, b) ties), which is a trap no one should fall into silently.
    if "seed" not in spec:
        raise (where / "seed").error(
            "a random input needs a seed (the same suite gives the same inputs)"
        )
    rng = np.random.default_rng(_integer(spec["seed"], where / "seed"))
    # low and high are the uniform distribution's, mean and scale the normal one's: given
    # without a distribution they say which; given for the other one they are refused (a
    # normal draw silently ignored low and high)
    uniform_keys = sorted({"low", "high"} & spec.keys())
    normal_keys = sorted({"mean", "scale"} & spec.keys())
    implied = "uniform" if uniform_keys and not normal_keys else "normal"
    distribution = spec.get("distribution", implied)
    other = {"uniform": normal_keys, "normal": uniform_keys}.get(distribution, [])
    if other:
        owner = "normal" if distribution == "uniform" else "uniform"
        raise (where / other[0]).error(
            f"{other[0]} is a parameter of the {owner} distribution, not the {distribution} one"
        )
    if distribution == "normal":
        mean = _number(spec.get("mean", 0.0), where / "mean", None)
        array = rng.normal(mean, _number(spec.get("scale", 1.0), where / "scale"), size=shape)
    elif distribution == "uniform":
        low = _number(spec.get("low", -1.0), where / "low", None)
        high = _number(spec.get("high", 1.0), where / "high", None)
        if high < low:
            raise (where / "high").error(f"high {high:g} is below low {low:g}")
        array = rng.uniform(low, high, size=shape)
    else:
        raise (where / "distribution").error(f"use normal or uniform, got {distribution!r}")
    return array


def _leaves(value: Any, at: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    """The entries of nested lists that are not lists, with their indices."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*at, i))
    else:
        yield at, value


def _tensor(value: Any, where: _Where, default_key: str, booleans: bool = False) -> np.ndarray:
    """A tensor given inline (a number or nested lists), by file, or as seeded random values;
    booleans: true and false are 1 and 0 (masks, as the server takes them), else refused."""
    if isinstance(value, dict):
        sources = [k for k in ("value", "file", "random") if k in value]
        if len(sources) != 1:
            raise where.error("give exactly one of value, file or random")
        if sources[0] == "file":
            return _load_array(value, default_key, where, booleans)
        if sources[0] == "random":
            return _random_array(value["random"], where / "random")
        return _tensor(value["value"], where / "value", default_key, booleans)
    if value is None or (isinstance(value, str) and not _numeric_text(value)):
        raise where.error(f"expected a number, a list of numbers, or a mapping, got {value!r}")
    # each entry, named where it is written: numpy would take "2" for 2.0 and true for 1.0
    for at, leaf in _leaves(value):
        why = _not_a_number(leaf, booleans)
        if why is not None:
            entry = where
            for i in at:
                entry = entry / i
            raise entry.error(why)
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise where.error("expected numbers in nested lists of equal lengths") from None
    except OverflowError:  # an integer past float64's range: 10**400 was a traceback
        raise where.error("a number too large for float64") from None
    return _check_size(array, where)


INPUT_KEYS = {"value", "file", "key", "random", "requires_grad", "frozen", "mask", "dtype"}


def _input(name: str, value: Any, where: _Where) -> Input:
    if not isinstance(value, dict):
        return Input(_tensor(value, where, name))
    _known_keys(value, INPUT_KEYS, where)
    array = _tensor({k: value[k] for k in ("value", "file", "key", "random") if k in value}, where, name)
    requires_grad = True
    for flag, meaning in (("requires_grad", True), ("frozen", False)):
        if flag in value:
            if not isinstance(value[flag], bool):
                raise (where / flag).error(f"expected true or false, got {value[flag]!r}")
            requires_grad = value[flag] == meaning
    mask = None
    if "mask" in value:
        mask = _tensor(value["mask"], where / "mask", f"{name}_mask", booleans=True)
        if mask.shape != array.shape:
            raise (where / "mask").error(f"the mask has shape {mask.shape}; the input has {array.shape}")
    dtype = value.get("dtype")
    if dtype is not None and dtype not in (*DTYPES, "int64"):  # int64: class indices
        raise (where / "dtype").error(f"use one of {', '.join(DTYPES)}, int64, got {dtype!r}")
    if dtype == "int64" and not np.array_equal(array, np.round(array)):
        raise (where / "dtype").error("int64, but the values are not all integers")
    return Input(array, requires_grad=requires_grad, mask=mask, dtype=dtype)


def _claimed_vjp(value: Any, where: _Where) -> dict[str, np.ndarray | None]:
    """A .npz path (its arrays, by input name), or input -> tensor (null: "no gradient")."""
    if isinstance(value, str):
        file = where.path.parent / value
        if file.suffix != ".npz":
            raise where.error(f"{value}: a claimed gradient file is an .npz of arrays named by input")
        try:
            with np.load(file, allow_pickle=False) as archive:
                names = list(archive.files)
        except (OSError, ValueError) as exc:
            raise where.error(f"cannot load {value}: {exc}") from None
        return {n: _load_array({"file": value, "key": n}, n, where) for n in names}
    claims: dict[str, np.ndarray | None] = {}
    for name, given in _mapping(value, where).items():
        claims[name] = None if given is None else _tensor(given, where / name, name)
    return claims


def _case(raw: Any, where: _Where, suite: str) -> Case:
    raw = _mapping(raw, where, "a case (a mapping with name, program, inputs, ...)")
    _known_keys(raw, CASE_KEYS, where, "a case has")
    for required in ("name", "program", "inputs"):
        if required not in raw:
            raise where.error(f"the case has no {required!r}")
    name = raw["name"]
    if not isinstance(name, str | int) or not str(name).strip():
        raise (where / "name").error(f"expected a name (text), got {name!r}")
    if _bad_name(str(name)):
        raise (where / "name").error(f"{NAME_RULE}, got {name!r}")
    if len(str(name)) > MAX_NAME_CHARS:  # past it every run was refused: the request id is
        raise (where / "name").error(  # SUITE::NAME, and the server takes 1,024 characters
            f"{len(str(name))} characters; a case's name takes at most {MAX_NAME_CHARS}"
        )
    program = raw["program"]
    if not isinstance(program, str) or not program.strip():
        raise (where / "program").error("expected the program's text")
    inputs_raw = _mapping(raw["inputs"], where / "inputs", "a mapping of input names to values")
    if not inputs_raw:
        raise (where / "inputs").error("the case has no inputs")
    inputs = {name: _input(name, v, where / "inputs" / name) for name, v in inputs_raw.items()}

    fields: dict[str, Any] = {}
    if "outputs" in raw:
        fields["outputs"] = _string_list(raw["outputs"], where / "outputs")
    if "cotangents" in raw:
        cot = _mapping(raw["cotangents"], where / "cotangents", "a mapping of output names to values")
        fields["cotangents"] = {o: _tensor(v, where / "cotangents" / o, o) for o, v in cot.items()}
    if "checks" in raw:
        fields["checks"] = _string_list(raw["checks"], where / "checks", list(CHECKS))
    if "references" in raw:
        fields["references"] = _string_list(raw["references"], where / "references", list(REFERENCES))
    for tol in ("rtol", "atol"):
        if tol in raw:
            fields[tol] = _number(raw[tol], where / tol)
    if "seed" in raw:
        fields["seed"] = _integer(raw["seed"], where / "seed")
    if "blame" in raw:
        if not isinstance(raw["blame"], bool):
            raise (where / "blame").error(f"expected true or false, got {raw['blame']!r}")
        fields["blame"] = raw["blame"]
    if "samples" in raw:
        fields["samples"] = _samples(raw["samples"], where / "samples")
    if "budget" in raw:
        given = raw["budget"]  # a number is the total seconds, as the CLI's --budget
        # (a quoted "5" or true, too: _number refuses them in its words)
        given = {"seconds": given} if isinstance(given, int | float | str) else given
        budget = _mapping(given, where / "budget")
        _known_keys(budget, BUDGET_KEYS, where / "budget")
        for key, v in budget.items():
            budget[key] = _number(v, where / "budget" / key)
            if key != "seconds" and key != "sympy_seconds":
                budget[key] = int(budget[key])
        fields["budget"] = budget
    if "claimed_vjp" in raw:
        fields["claimed_vjp"] = _claimed_vjp(raw["claimed_vjp"], where / "claimed_vjp")

    # no `expect`: any pass (as Result.passed and the fixture's assert_verified): a case at
    # a kink passes with conventions, and one where floating point departs with notes
    expect = [v.upper() for v in _string_list(raw.get("expect", list(PASSING)), where / "expect")]
    if not expect:  # (every run was UNEXPECTED, "expected , got PASS")
        raise (where / "expect").error("no verdict: leave expect out for any pass")
    for v in expect:
        if v.removeprefix("VERDICT_") not in VERDICTS:
            raise (where / "expect").error(f"unknown verdict {v!r}; use one of {', '.join(VERDICTS)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise (where / "description").error("expected text")
    return Case(
        name=str(raw["name"]),
        suite=suite,
        path=where.path,
        line=where.line,
        program=program,
        program_line=(where / "program").line,
        inputs=inputs,
        expect=tuple(v.removeprefix("VERDICT_") for v in expect),
        fields=fields,
        description=description,
        where=where,
    )


def _samples(value: Any, where: _Where) -> dict[str, Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        raise where.error(
            f"samples is a mapping: write {{count: {value}}} (and seed, distribution, ...)"
        )
    spec = _mapping(value, where)
    _known_keys(spec, SAMPLE_KEYS, where)
    out: dict[str, Any] = {}
    for key, v in spec.items():
        if key in ("count", "seed"):
            high = MAX_SAMPLE_POINTS if key == "count" else 2**63 - 1
            out[key] = _integer(v, where / key, 0, high)
        elif key in ("low", "high", "scale"):
            out[key] = _number(v, where / key, None)
        elif key == "distribution":
            if v not in ("normal", "uniform"):
                raise (where / key).error(f"use normal or uniform, got {v!r}")
            out[key] = v
    return out


def load_suite(path: str | Path) -> Suite:
    """Read and validate one suite file; raises SuiteError naming file, line, case and field."""
    path = Path(path)
    data, lines = _parse_yaml(path)
    top = _Where(path, lines)
    if not isinstance(data, dict):
        raise top.error("a suite is a mapping with a `cases:` list")
    _known_keys(data, {"suite", "description", "defaults", "cases"}, top, "a suite has")
    name = data.get("suite", path.stem)
    if "suite" not in data and (not name.strip() or _bad_name(name)):
        # (a file's name may hold anything but '/': its stem is the suite's name only if it can be)
        raise top.error(f"the file's name {name!r} cannot name the suite: give one with `suite:`")
    if not isinstance(name, str) or not name.strip():
        raise (top / "suite").error(f"expected a name (text), got {name!r}")
    if _bad_name(name):  # checked as a case's name: it names the JUnit testsuite and the case ids
        raise (top / "suite").error(f"{NAME_RULE}, got {name!r}")
    if len(name) > MAX_NAME_CHARS:
        raise (top / "suite").error(f"{len(name)} characters; a name takes at most {MAX_NAME_CHARS}")
    defaults = _mapping(data.get("defaults") or {}, top / "defaults")
    if "name" in defaults:
        raise (top / "defaults" / "name").error("a default name makes no sense: each case has its own")
    # (named where it is written, not in the first case)
    _known_keys(defaults, CASE_KEYS, top / "defaults", "a case has")
    cases_raw = data.get("cases")
    if not isinstance(cases_raw, list) or not cases_raw:
        raise (top / "cases").error("expected a non-empty list of cases")
    if len(cases_raw) > MAX_CASES:
        raise (top / "cases").error(f"{len(cases_raw)} cases; the limit is {MAX_CASES} per suite")
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(cases_raw):
        where = top / "cases" / i
        label = f"#{i + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str | int):
            label = repr(str(raw["name"]))
        where.case = label
        merged = {**defaults, **raw} if isinstance(raw, dict) else raw
        case = _case(merged, where, name)
        if case.name in seen:
            raise where.error(f"the name is already used by case #{seen[case.name] + 1}")
        seen[case.name] = i
        cases.append(case)
    return Suite(name, path, cases)
