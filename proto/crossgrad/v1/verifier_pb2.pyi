from crossgrad.v1 import tensor_pb2 as _tensor_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Check(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_UNSPECIFIED: _ClassVar[Check]
    CHECK_VJP: _ClassVar[Check]
    CHECK_JACOBIAN: _ClassVar[Check]
    CHECK_HESSIAN: _ClassVar[Check]

class Reference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFERENCE_UNSPECIFIED: _ClassVar[Reference]
    REFERENCE_SYMPY: _ClassVar[Reference]
    REFERENCE_JAX: _ClassVar[Reference]
    REFERENCE_FD: _ClassVar[Reference]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_PASS: _ClassVar[Verdict]
    VERDICT_PASS_WITH_CONVENTION_DIFFERENCES: _ClassVar[Verdict]
    VERDICT_FAIL: _ClassVar[Verdict]
    VERDICT_ERROR: _ClassVar[Verdict]
    VERDICT_PASS_WITH_NUMERICAL_NOTES: _ClassVar[Verdict]
    VERDICT_UNVERIFIED: _ClassVar[Verdict]

class Distribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTRIBUTION_UNSPECIFIED: _ClassVar[Distribution]
    DISTRIBUTION_NORMAL: _ClassVar[Distribution]
    DISTRIBUTION_UNIFORM: _ClassVar[Distribution]
CHECK_UNSPECIFIED: Check
CHECK_VJP: Check
CHECK_JACOBIAN: Check
CHECK_HESSIAN: Check
REFERENCE_UNSPECIFIED: Reference
REFERENCE_SYMPY: Reference
REFERENCE_JAX: Reference
REFERENCE_FD: Reference
VERDICT_UNSPECIFIED: Verdict
VERDICT_PASS: Verdict
VERDICT_PASS_WITH_CONVENTION_DIFFERENCES: Verdict
VERDICT_FAIL: Verdict
VERDICT_ERROR: Verdict
VERDICT_PASS_WITH_NUMERICAL_NOTES: Verdict
VERDICT_UNVERIFIED: Verdict
DISTRIBUTION_UNSPECIFIED: Distribution
DISTRIBUTION_NORMAL: Distribution
DISTRIBUTION_UNIFORM: Distribution

class Input(_message.Message):
    __slots__ = ("name", "value", "requires_grad", "mask")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: _tensor_pb2.Tensor
    requires_grad: bool
    mask: _tensor_pb2.Tensor
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ..., mask: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class SamplePoints(_message.Message):
    __slots__ = ("count", "seed", "distribution", "low", "high", "scale")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    count: int
    seed: int
    distribution: Distribution
    low: float
    high: float
    scale: float
    def __init__(self, count: _Optional[int] = ..., seed: _Optional[int] = ..., distribution: _Optional[_Union[Distribution, str]] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., scale: _Optional[float] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("seconds", "sympy_seconds", "sympy_max_scalar_ops", "sympy_sample_entries", "sympy_max_jacobian_rows", "symbolic_text_max_ops", "fd_max_entries", "fd_sample_entries", "hessian_max_inputs")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SYMPY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SYMPY_MAX_SCALAR_OPS_FIELD_NUMBER: _ClassVar[int]
    SYMPY_SAMPLE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SYMPY_MAX_JACOBIAN_ROWS_FIELD_NUMBER: _ClassVar[int]
    SYMBOLIC_TEXT_MAX_OPS_FIELD_NUMBER: _ClassVar[int]
    FD_MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    FD_SAMPLE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    sympy_seconds: float
    sympy_max_scalar_ops: int
    sympy_sample_entries: int
    sympy_max_jacobian_rows: int
    symbolic_text_max_ops: int
    fd_max_entries: int
    fd_sample_entries: int
    hessian_max_inputs: int
    def __init__(self, seconds: _Optional[float] = ..., sympy_seconds: _Optional[float] = ..., sympy_max_scalar_ops: _Optional[int] = ..., sympy_sample_entries: _Optional[int] = ..., sympy_max_jacobian_rows: _Optional[int] = ..., symbolic_text_max_ops: _Optional[int] = ..., fd_max_entries: _Optional[int] = ..., fd_sample_entries: _Optional[int] = ..., hessian_max_inputs: _Optional[int] = ...) -> None: ...

class ClaimedGradient(_message.Message):
    __slots__ = ("input", "gradient", "none")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    NONE_FIELD_NUMBER: _ClassVar[int]
    input: str
    gradient: _tensor_pb2.Tensor
    none: bool
    def __init__(self, input: _Optional[str] = ..., gradient: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., none: _Optional[bool] = ...) -> None: ...

class ClaimedJacobian(_message.Message):
    __slots__ = ("output", "input", "jacobian", "none")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    JACOBIAN_FIELD_NUMBER: _ClassVar[int]
    NONE_FIELD_NUMBER: _ClassVar[int]
    output: str
    input: str
    jacobian: _tensor_pb2.Tensor
    none: bool
    def __init__(self, output: _Optional[str] = ..., input: _Optional[str] = ..., jacobian: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., none: _Optional[bool] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("id", "program", "inputs", "outputs", "cotangents", "checks", "references", "rtol", "atol", "samples", "claimed_vjp", "claimed_jacobian", "budget", "seed", "blame")
    class CotangentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COTANGENTS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    RTOL_FIELD_NUMBER: _ClassVar[int]
    ATOL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_VJP_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_JACOBIAN_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BLAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    program: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    cotangents: _containers.MessageMap[str, _tensor_pb2.Tensor]
    checks: _containers.RepeatedScalarFieldContainer[Check]
    references: _containers.RepeatedScalarFieldContainer[Reference]
    rtol: float
    atol: float
    samples: SamplePoints
    claimed_vjp: _containers.RepeatedCompositeFieldContainer[ClaimedGradient]
    claimed_jacobian: _containers.RepeatedCompositeFieldContainer[ClaimedJacobian]
    budget: Budget
    seed: int
    blame: bool
    def __init__(self, id: _Optional[str] = ..., program: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., cotangents: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., checks: _Optional[_Iterable[_Union[Check, str]]] = ..., references: _Optional[_Iterable[_Union[Reference, str]]] = ..., rtol: _Optional[float] = ..., atol: _Optional[float] = ..., samples: _Optional[_Union[SamplePoints, _Mapping]] = ..., claimed_vjp: _Optional[_Iterable[_Union[ClaimedGradient, _Mapping]]] = ..., claimed_jacobian: _Optional[_Iterable[_Union[ClaimedJacobian, _Mapping]]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., seed: _Optional[int] = ..., blame: _Optional[bool] = ...) -> None: ...

class PairStat(_message.Message):
    __slots__ = ("a", "b", "max_abs", "max_rel", "disagreeing", "compared")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_FIELD_NUMBER: _ClassVar[int]
    DISAGREEING_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    max_abs: float
    max_rel: float
    disagreeing: int
    compared: int
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ..., max_abs: _Optional[float] = ..., max_rel: _Optional[float] = ..., disagreeing: _Optional[int] = ..., compared: _Optional[int] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("index", "values", "agree", "disagree", "reference", "abs_error", "rel_error", "status", "admissible_low", "admissible_high")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    DISAGREE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ADMISSIBLE_LOW_FIELD_NUMBER: _ClassVar[int]
    ADMISSIBLE_HIGH_FIELD_NUMBER: _ClassVar[int]
    index: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.ScalarMap[str, float]
    agree: _containers.RepeatedScalarFieldContainer[str]
    disagree: _containers.RepeatedScalarFieldContainer[str]
    reference: str
    abs_error: float
    rel_error: float
    status: str
    admissible_low: float
    admissible_high: float
    def __init__(self, index: _Optional[_Iterable[int]] = ..., values: _Optional[_Mapping[str, float]] = ..., agree: _Optional[_Iterable[str]] = ..., disagree: _Optional[_Iterable[str]] = ..., reference: _Optional[str] = ..., abs_error: _Optional[float] = ..., rel_error: _Optional[float] = ..., status: _Optional[str] = ..., admissible_low: _Optional[float] = ..., admissible_high: _Optional[float] = ...) -> None: ...

class StatusCounts(_message.Message):
    __slots__ = ("numerical", "convention", "unverified", "fail")
    NUMERICAL_FIELD_NUMBER: _ClassVar[int]
    CONVENTION_FIELD_NUMBER: _ClassVar[int]
    UNVERIFIED_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    numerical: int
    convention: int
    unverified: int
    fail: int
    def __init__(self, numerical: _Optional[int] = ..., convention: _Optional[int] = ..., unverified: _Optional[int] = ..., fail: _Optional[int] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("quantity", "output", "input", "shape", "status", "pairs", "worst", "failing", "references_disagree", "values", "values_omitted", "label", "counts", "judged_by", "unsettled", "unused", "dtype")
    class FailingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: StatusCounts
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[StatusCounts, _Mapping]] = ...) -> None: ...
    class JudgedByEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    WORST_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_DISAGREE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VALUES_OMITTED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    JUDGED_BY_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_FIELD_NUMBER: _ClassVar[int]
    UNUSED_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    quantity: str
    output: str
    input: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    status: str
    pairs: _containers.RepeatedCompositeFieldContainer[PairStat]
    worst: _containers.RepeatedCompositeFieldContainer[Entry]
    failing: _containers.ScalarMap[str, int]
    references_disagree: int
    values: _containers.MessageMap[str, _tensor_pb2.Tensor]
    values_omitted: bool
    label: str
    counts: _containers.MessageMap[str, StatusCounts]
    judged_by: _containers.ScalarMap[str, int]
    unsettled: int
    unused: bool
    dtype: str
    def __init__(self, quantity: _Optional[str] = ..., output: _Optional[str] = ..., input: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., status: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[PairStat, _Mapping]]] = ..., worst: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., failing: _Optional[_Mapping[str, int]] = ..., references_disagree: _Optional[int] = ..., values: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., values_omitted: _Optional[bool] = ..., label: _Optional[str] = ..., counts: _Optional[_Mapping[str, StatusCounts]] = ..., judged_by: _Optional[_Mapping[str, int]] = ..., unsettled: _Optional[int] = ..., unused: _Optional[bool] = ..., dtype: _Optional[str] = ...) -> None: ...

class ConventionNote(_message.Message):
    __slots__ = ("op", "position", "text", "conventions", "admissible")
    class ConventionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OP_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_FIELD_NUMBER: _ClassVar[int]
    ADMISSIBLE_FIELD_NUMBER: _ClassVar[int]
    op: str
    position: _tensor_pb2.SourcePosition
    text: str
    conventions: _containers.ScalarMap[str, str]
    admissible: str
    def __init__(self, op: _Optional[str] = ..., position: _Optional[_Union[_tensor_pb2.SourcePosition, _Mapping]] = ..., text: _Optional[str] = ..., conventions: _Optional[_Mapping[str, str]] = ..., admissible: _Optional[str] = ...) -> None: ...

class NumericalNote(_message.Message):
    __slots__ = ("block", "index", "source", "value", "exact", "same_precision", "why", "condition")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    SAME_PRECISION_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    block: str
    index: _containers.RepeatedScalarFieldContainer[int]
    source: str
    value: float
    exact: float
    same_precision: float
    why: str
    condition: float
    def __init__(self, block: _Optional[str] = ..., index: _Optional[_Iterable[int]] = ..., source: _Optional[str] = ..., value: _Optional[float] = ..., exact: _Optional[float] = ..., same_precision: _Optional[float] = ..., why: _Optional[str] = ..., condition: _Optional[float] = ...) -> None: ...

class ReferenceNote(_message.Message):
    __slots__ = ("block", "reference", "against", "entries", "index", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AGAINST_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    block: str
    reference: str
    against: str
    entries: int
    index: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, block: _Optional[str] = ..., reference: _Optional[str] = ..., against: _Optional[str] = ..., entries: _Optional[int] = ..., index: _Optional[_Iterable[int]] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Blame(_message.Message):
    __slots__ = ("node_name", "op", "ir_node", "position", "text", "max_abs_error", "detail")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    IR_NODE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    op: str
    ir_node: int
    position: _tensor_pb2.SourcePosition
    text: str
    max_abs_error: float
    detail: str
    def __init__(self, node_name: _Optional[str] = ..., op: _Optional[str] = ..., ir_node: _Optional[int] = ..., position: _Optional[_Union[_tensor_pb2.SourcePosition, _Mapping]] = ..., text: _Optional[str] = ..., max_abs_error: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class PointReport(_message.Message):
    __slots__ = ("point", "verdict", "summary", "blocks", "conventions", "blame", "inputs", "numerical", "reference_notes")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    POINT_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_FIELD_NUMBER: _ClassVar[int]
    BLAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NUMERICAL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_NOTES_FIELD_NUMBER: _ClassVar[int]
    point: int
    verdict: Verdict
    summary: str
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    conventions: _containers.RepeatedCompositeFieldContainer[ConventionNote]
    blame: _containers.RepeatedCompositeFieldContainer[Blame]
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    numerical: _containers.RepeatedCompositeFieldContainer[NumericalNote]
    reference_notes: _containers.RepeatedCompositeFieldContainer[ReferenceNote]
    def __init__(self, point: _Optional[int] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., summary: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ..., conventions: _Optional[_Iterable[_Union[ConventionNote, _Mapping]]] = ..., blame: _Optional[_Iterable[_Union[Blame, _Mapping]]] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., numerical: _Optional[_Iterable[_Union[NumericalNote, _Mapping]]] = ..., reference_notes: _Optional[_Iterable[_Union[ReferenceNote, _Mapping]]] = ...) -> None: ...

class SampledEntries(_message.Message):
    __slots__ = ("input", "flat_index")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    FLAT_INDEX_FIELD_NUMBER: _ClassVar[int]
    input: str
    flat_index: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, input: _Optional[str] = ..., flat_index: _Optional[_Iterable[int]] = ...) -> None: ...

class SymbolicDerivative(_message.Message):
    __slots__ = ("entry", "text", "latex")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LATEX_FIELD_NUMBER: _ClassVar[int]
    entry: str
    text: str
    latex: str
    def __init__(self, entry: _Optional[str] = ..., text: _Optional[str] = ..., latex: _Optional[str] = ...) -> None: ...

class ReferenceStatus(_message.Message):
    __slots__ = ("name", "ran", "note", "sampled", "symbolic")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAN_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SYMBOLIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    ran: bool
    note: str
    sampled: _containers.RepeatedCompositeFieldContainer[SampledEntries]
    symbolic: _containers.RepeatedCompositeFieldContainer[SymbolicDerivative]
    def __init__(self, name: _Optional[str] = ..., ran: _Optional[bool] = ..., note: _Optional[str] = ..., sampled: _Optional[_Iterable[_Union[SampledEntries, _Mapping]]] = ..., symbolic: _Optional[_Iterable[_Union[SymbolicDerivative, _Mapping]]] = ...) -> None: ...

class DagNode(_message.Message):
    __slots__ = ("id", "name", "op", "position", "text", "next")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    op: str
    position: _tensor_pb2.SourcePosition
    text: str
    next: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., op: _Optional[str] = ..., position: _Optional[_Union[_tensor_pb2.SourcePosition, _Mapping]] = ..., text: _Optional[str] = ..., next: _Optional[_Iterable[int]] = ...) -> None: ...

class DagLeaf(_message.Message):
    __slots__ = ("id", "name", "shape", "requires_grad", "masked")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    requires_grad: bool
    masked: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., requires_grad: _Optional[bool] = ..., masked: _Optional[bool] = ...) -> None: ...

class Dag(_message.Message):
    __slots__ = ("nodes", "leaves", "frozen", "dot")
    NODES_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    DOT_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[DagNode]
    leaves: _containers.RepeatedCompositeFieldContainer[DagLeaf]
    frozen: _containers.RepeatedScalarFieldContainer[str]
    dot: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[DagNode, _Mapping]]] = ..., leaves: _Optional[_Iterable[_Union[DagLeaf, _Mapping]]] = ..., frozen: _Optional[_Iterable[str]] = ..., dot: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("id", "verdict", "summary", "text", "points", "references", "dag", "timings", "outputs", "error", "cache_hits", "request_id", "worker")
    class TimingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class CacheHitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    id: str
    verdict: Verdict
    summary: str
    text: str
    points: _containers.RepeatedCompositeFieldContainer[PointReport]
    references: _containers.RepeatedCompositeFieldContainer[ReferenceStatus]
    dag: Dag
    timings: _containers.ScalarMap[str, float]
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    error: str
    cache_hits: _containers.ScalarMap[str, bool]
    request_id: str
    worker: int
    def __init__(self, id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., summary: _Optional[str] = ..., text: _Optional[str] = ..., points: _Optional[_Iterable[_Union[PointReport, _Mapping]]] = ..., references: _Optional[_Iterable[_Union[ReferenceStatus, _Mapping]]] = ..., dag: _Optional[_Union[Dag, _Mapping]] = ..., timings: _Optional[_Mapping[str, float]] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., error: _Optional[str] = ..., cache_hits: _Optional[_Mapping[str, bool]] = ..., request_id: _Optional[str] = ..., worker: _Optional[int] = ...) -> None: ...

class VerifyStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: VerifyRequest
    def __init__(self, request: _Optional[_Union[VerifyRequest, _Mapping]] = ...) -> None: ...

class VerifyStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: VerifyResponse
    error: _status_pb2.Status
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[VerifyResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class DescribeGraphRequest(_message.Message):
    __slots__ = ("program", "inputs", "outputs")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    program: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, program: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeGraphResponse(_message.Message):
    __slots__ = ("dag", "outputs", "masked")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    DAG_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    dag: Dag
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    masked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dag: _Optional[_Union[Dag, _Mapping]] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., masked: _Optional[_Iterable[str]] = ...) -> None: ...

class ListOpsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpAttribute(_message.Message):
    __slots__ = ("name", "kind", "default", "required")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    default: str
    required: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., default: _Optional[str] = ..., required: _Optional[bool] = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ("name", "operands", "variadic", "attributes", "backward_node", "differentiable", "nonsmooth", "conventions", "syntax")
    class ConventionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPERANDS_FIELD_NUMBER: _ClassVar[int]
    VARIADIC_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_NODE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIABLE_FIELD_NUMBER: _ClassVar[int]
    NONSMOOTH_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_FIELD_NUMBER: _ClassVar[int]
    SYNTAX_FIELD_NUMBER: _ClassVar[int]
    name: str
    operands: _containers.RepeatedScalarFieldContainer[str]
    variadic: bool
    attributes: _containers.RepeatedCompositeFieldContainer[OpAttribute]
    backward_node: str
    differentiable: bool
    nonsmooth: str
    conventions: _containers.ScalarMap[str, str]
    syntax: str
    def __init__(self, name: _Optional[str] = ..., operands: _Optional[_Iterable[str]] = ..., variadic: _Optional[bool] = ..., attributes: _Optional[_Iterable[_Union[OpAttribute, _Mapping]]] = ..., backward_node: _Optional[str] = ..., differentiable: _Optional[bool] = ..., nonsmooth: _Optional[str] = ..., conventions: _Optional[_Mapping[str, str]] = ..., syntax: _Optional[str] = ...) -> None: ...

class ListOpsResponse(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    def __init__(self, ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ...) -> None: ...
