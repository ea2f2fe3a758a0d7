"""The request language: a small numpy-flavoured language, parsed with a whitelist over Python's ast.

    h = tanh(W @ x + b)
    loss = mean((h - y) ** 2)

Assignments; + - * / ** @, unary minus, comparisons; calls to ops of the op table with tensor
operands and literal attributes (sum(x, axis=0, keepdims=True); inf and -inf where an attribute
allows them, as norm's ord); indexing with ints, slices, None, ..., and lists of ints; int and
float literals, pi and e (until a variable of that name shadows them, as in Python). An output
may be an input itself (out = x). Anything else, and attributes outside their op's domain, is a
RequestError with line and column. The text is only ever given to ast.parse: never to eval,
exec or sympify.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from crossgrad.engine import OPS, ShapeError
from crossgrad.engine.indexing import canonical_index, getitem, index_shape
from crossgrad.engine.ops.linalg import mixed_dtype_message
from crossgrad.engine.optable import attribute_problem

from . import caches
from .ir import IRNode, Operand, Position, Program, Ref
from .limits import DEFAULT_LIMITS, Limits


class RequestError(ValueError):
    """Something wrong with a request: the message names the problem and, for program text,
    the line and column. `field` names the part of the request at fault."""

    def __init__(self, message: str, pos: Position | None = None, field: str = "program") -> None:
        self.message = message
        self.pos = pos
        self.field = field
        super().__init__(f"{pos}: {message}" if pos else message)


class LimitError(RequestError):
    """A request over one of the server's limits (sizes, counts, estimated cost or memory): a
    resource error (gRPC RESOURCE_EXHAUSTED), not a malformed request."""


@dataclass(frozen=True)
class InputDecl:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float64"


_BINOPS = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "div",
    ast.Pow: "pow",
    ast.MatMult: "matmul",
}
_COMPARE = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
# A name is repeated in every block of the report that concerns it, and in the log: a name of a
# megabyte (an unused input's) made a 13 MB report.
MAX_NAME_CHARS = 200
_CONSTANTS = {"pi": math.pi, "e": math.e}  # a variable of the same name shadows them
# in attributes: inf for norm's ord and masked_fill's value
_ATTR_CONSTANTS = {**_CONSTANTS, "inf": math.inf}
# Ops reached through operators only (x ** y, 2 ** x, 1 - x, x[i]) and the engine's internal ones.
_HIDDEN = {"pow_tensor", "rpow", "rsub", "getitem"}
CALLABLE_OPS = sorted(n for n, s in OPS.items() if not s.internal and n not in _HIDDEN)
# How a program writes each op (ListOps' syntax): operator forms beside the calls, and the ops
# an operator alone reaches.
_OPERATOR_FORMS = {  # written with the op's own operand names
    **{"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"},
    **{"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="},
}
_HIDDEN_FORMS = {
    "pow": "x ** c or pow(x, c), c a number",
    "pow_tensor": "x ** y or pow(x, y), y a tensor",
    "rpow": "c ** x, c a number",
    "rsub": "c - x, c a number",
    "getitem": "x[index], index of ints, slices, None, ... and lists of ints",
}


# Their attributes are written as operands (the c of x ** c), never by name: ListOps lists none.
ATTRIBUTES_AS_OPERANDS = frozenset(_HIDDEN_FORMS)


# Python's parser stops near this many nested operators on a line (RecursionError, or
# MemoryError from its stack): fewer, and a MemoryError is the process's memory running out.
_NESTED_OPERATORS = 2000


def syntax(op: str) -> str:
    """How a program writes the op: its call (operands, then attributes with their defaults),
    and its operator form where it has one."""
    if op in _HIDDEN_FORMS:
        return _HIDDEN_FORMS[op]
    spec = OPS[op]
    operands = f"[{spec.operands[0]}, ...]" if spec.arity is None else ", ".join(spec.operands)
    attrs = [
        a.name if a.required else f"{a.name}={a.default!r}" for a in spec.attrs if a.kind != "index"
    ]
    call = f"{op}({', '.join([operands, *attrs])})"
    if op == "split":
        call = f"a, b, ... = {call}"
    if op == "neg":
        return f"{call} or -{spec.operands[0]}"
    symbol = _OPERATOR_FORMS.get(op)
    return f"{call} or {spec.operands[0]} {symbol} {spec.operands[1]}" if symbol else call


_ELEMENTWISE_BINARY = {
    n for n, s in OPS.items() if s.arity == 2 and s.shape_rule.__name__ == "_broadcast"
}
_DTYPES = ("float64", "float32", "int64", "bool")
_MAX_INT_LITERAL = 2**53
_MAX_NDIM = 16


def _check_attrs(
    op: str, attrs: dict[str, Any], shapes: Sequence[tuple[int, ...]], pos: Position
) -> None:
    """What an op's attributes must satisfy beyond their types (the op table's domains)."""
    problem = attribute_problem(op, attrs, shapes)
    if problem:
        raise RequestError(problem, pos)


def _pos(node: ast.AST) -> Position:
    return Position(
        node.lineno,
        node.col_offset + 1,
        node.end_lineno or node.lineno,
        (node.end_col_offset or node.col_offset) + 1,
    )


def _what(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Lambda: "lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.Import: "import",
        ast.ImportFrom: "import",
        ast.Starred: "starred arguments",
        ast.IfExp: "a conditional expression",
        ast.BoolOp: "and/or",
        ast.JoinedStr: "an f-string",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.NamedExpr: "the walrus operator",
        ast.Await: "await",
        ast.FunctionDef: "def",
        ast.ClassDef: "class",
        ast.For: "for",
        ast.While: "while",
        ast.If: "if",
        ast.With: "with",
        ast.AugAssign: "augmented assignment",
        ast.AnnAssign: "an annotated assignment",
    }
    return names.get(type(node), type(node).__name__)


class _Builder:
    def __init__(self, source: str, inputs: Sequence[InputDecl], limits: Limits) -> None:
        self.source = source
        self.lines = _lines(source)
        self.limits = limits
        self.nodes: list[IRNode] = []
        self.scope: dict[str, int] = {}
        self.assigned: list[str] = []  # names in the order the statements bind them
        self.input_ids: list[tuple[str, int]] = []
        total = 0
        for decl in inputs:
            self._check_input(decl)
            total += math.prod(decl.shape)
            if total > limits.max_total_elements:
                raise LimitError(
                    f"the inputs have more than {limits.max_total_elements} elements in all (the limit)",
                    field="inputs",
                )
            nid = self._add("input", (), (), decl.shape, decl.dtype, None, decl.name, decl.name)
            self.scope[decl.name] = nid
            self.input_ids.append((decl.name, nid))

    def _check_input(self, decl: InputDecl) -> None:
        field = f"inputs[{decl.name}]"
        if not decl.name.isidentifier() or decl.name.startswith("_") or keyword.iskeyword(decl.name):
            raise RequestError(
                f"input name {decl.name!r} is not a valid name (letters, digits and _, not "
                "starting with _ or a digit, not a Python keyword)",
                field=field,
            )
        if decl.name in _CONSTANTS or decl.name in OPS:
            raise RequestError(
                f"input name {decl.name!r} is reserved (a constant or an op)", field=field
            )
        if decl.name in self.scope:
            raise RequestError(f"input {decl.name!r} is declared twice", field=field)
        if decl.dtype not in _DTYPES:
            raise RequestError(
                f"input {decl.name!r} has dtype {decl.dtype!r}; use one of {', '.join(_DTYPES)}",
                field=field,
            )
        if any(int(d) < 0 for d in decl.shape):
            raise RequestError(f"input {decl.name!r} has an invalid shape {decl.shape}", field=field)
        if len(decl.shape) > 8:
            raise LimitError(
                f"input {decl.name!r} has {len(decl.shape)} dimensions; the limit is 8", field=field
            )
        size = math.prod(decl.shape)
        if size > self.limits.max_input_elements:
            raise LimitError(
                f"input {decl.name!r} has {size} elements; the limit is "
                f"{self.limits.max_input_elements}",
                field=field,
            )

    # ------------------------------------------------------------ nodes
    def _add(
        self,
        op: str,
        args: tuple[Operand, ...],
        attrs: tuple[tuple[str, Any], ...],
        shape: Any,
        dtype: str,
        pos: Position | None,
        text: str,
        name: str | None = None,
    ) -> int:
        if len(self.nodes) >= self.limits.max_nodes:
            raise LimitError(
                f"the program has more than {self.limits.max_nodes} inputs and operations (the limit)",
                pos,
            )
        shapes = shape if op == "split" else (shape,)
        for s in shapes:
            if math.prod(s) > self.limits.max_intermediate_elements:
                raise LimitError(
                    f"{op} would produce {math.prod(s)} elements; the limit is "
                    f"{self.limits.max_intermediate_elements}",
                    pos,
                )
        node = IRNode(len(self.nodes), op, args, attrs, shape, dtype, pos, text, name)
        self.nodes.append(node)
        return node.id

    def _text(self, node: ast.AST) -> str:
        """The node's source text (ast.get_source_segment re-splits the whole source each call)."""
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        start, end = node.col_offset, node.end_col_offset
        if first == last:
            return self.lines[first][start:end]
        return "\n".join(
            [self.lines[first][start:], *self.lines[first + 1 : last], self.lines[last][:end]]
        )

    def shape_of(self, operand: Operand) -> tuple[int, ...]:
        return self.nodes[operand.id].shape if isinstance(operand, Ref) else ()

    def dtype_of(self, operand: Operand) -> str | None:
        return self.nodes[operand.id].dtype if isinstance(operand, Ref) else None

    def _result_dtype(self, op: str, operands: Sequence[Operand]) -> str:
        if op in ("lt", "le", "gt", "ge", "eq", "ne"):
            return "bool"
        if op in ("argmax", "argmin"):
            return "int64"
        kinds = {self.dtype_of(o) for o in operands} - {None, "bool", "int64"}
        if kinds == {"float32", "float64"} and OPS[op].promotes:
            # torch's promotion, as the engine's: a 0-d float64 tensor does not widen float32
            # tensors with dimensions (t * x with t 0-d was judged float64, computed float32)
            dims = {self.dtype_of(o) for o in operands if self.shape_of(o)}
            return "float32" if dims & kinds == {"float32"} else "float64"
        return "float32" if kinds == {"float32"} else "float64"

    def op_node(
        self,
        op: str,
        operands: list[Operand],
        attrs: dict[str, Any],
        node: ast.AST,
        shape: tuple[int, ...] | None = None,
    ) -> Ref:
        pos, spec = _pos(node), OPS[op]
        self._check_operand_dtypes(op, operands, pos)
        try:
            if shape is None:
                shape = spec.shape_rule(op, *(self.shape_of(o) for o in operands), **attrs)
        except ShapeError as exc:
            raise RequestError(str(exc), pos) from None
        except (TypeError, ValueError) as exc:  # an attribute of the right kind, wrong form
            raise RequestError(f"{op}: its attributes do not fit ({exc})", pos) from None
        for s in shape if op == "split" else (shape,):
            if len(s) > _MAX_NDIM:
                raise LimitError(f"{op} would give {len(s)} dimensions; the limit is {_MAX_NDIM}", pos)
        _check_attrs(op, attrs, [self.shape_of(o) for o in operands], pos)
        if op in ("nll_loss", "cross_entropy") and self.dtype_of(operands[1]) != "int64":
            raise RequestError(
                f"{op}: the target must be an int64 input of class indices (send it as int64: "
                "`--int NAME` or an integer .npy with the crossgrad command, a numpy integer "
                "array from Python)",
                pos,
            )
        dtype = self._result_dtype(op, operands)
        return Ref(
            self._add(
                op, tuple(operands), tuple(sorted(attrs.items())), shape, dtype, pos, self._text(node)
            )
        )

    def _check_operand_dtypes(self, op: str, operands: Sequence[Operand], pos: Position) -> None:
        if op in ("matmul", "dot"):
            self._check_same_float_dtype(op, operands, pos)
        for k, o in enumerate(operands):
            dtype = self.dtype_of(o)
            condition = (op == "where" and k == 0) or (op == "masked_fill" and k == 1)
            if condition and dtype != "bool":  # torch refuses a float condition too
                text = self._describe(o).strip("'")
                hint = f" (as {text} > 0, for a 0/1 mask)" if dtype else ""
                raise RequestError(
                    f"{op}: the {OPS[op].operands[k]} {self._describe(o)} must be a comparison "
                    f"(bool), not {dtype or 'a number'}{hint}",
                    pos,
                )
            if dtype is None or dtype.startswith("float") or condition:
                continue
            if not (op in ("nll_loss", "cross_entropy") and k == 1 and dtype == "int64"):
                hint = (
                    " (comparisons give bool: use where(...) to pick values)"
                    if dtype == "bool"
                    # a numpy integer array stays int64 in the client, as in torch.tensor
                    else " (integers are class indices for nll_loss and cross_entropy: give "
                    "values to compute with as floats, 2.0 for 2, or their dtype as float64)"
                )
                raise RequestError(
                    f"{op}: operand {k + 1}, {self._describe(o)}, has dtype {dtype}; it must be a "
                    f"float tensor{hint}",
                    pos,
                )

    def _check_same_float_dtype(self, op: str, operands: Sequence[Operand], pos: Position) -> None:
        """torch multiplies matrices of one dtype only: float32 @ float64 is an error there (the
        elementwise ops promote instead)."""
        a, b = operands
        da, db = self.dtype_of(a), self.dtype_of(b)
        if not (da and db and da.startswith("float") and db.startswith("float")):
            return  # numbers and integer operands: refused below
        message = mixed_dtype_message(op, self.shape_of(a), da, self.shape_of(b), db)
        if message:
            raise RequestError(
                f"{op}: {self._describe(a)} is {da} and {self._describe(b)} is {db}: torch "
                f"refuses to multiply them ({message}); declare the inputs with one float dtype",
                pos,
            )

    def _describe(self, operand: Operand) -> str:
        """The operand as the user wrote it: an input's name or the expression's text."""
        if not isinstance(operand, Ref):
            return repr(operand)
        node = self.nodes[operand.id]
        return repr(node.name or node.text)  # an input's or a variable's name, else the text

    # ------------------------------------------------------------ statements
    def statement(self, stmt: ast.stmt) -> None:
        if (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        ):
            return  # a docstring-like comment line
        if not isinstance(stmt, ast.Assign):
            raise RequestError(
                f"{_what(stmt)} is not allowed: a program is a list of assignments 'name = expression'",
                _pos(stmt),
            )
        if len(stmt.targets) != 1:
            raise RequestError("chained assignment is not allowed", _pos(stmt))
        target = stmt.targets[0]
        if isinstance(target, ast.Name):
            value = self.expr(stmt.value, 0)
            self._bind(target, value)
        elif isinstance(target, ast.Tuple) and all(isinstance(t, ast.Name) for t in target.elts):
            self._unpack(target, stmt.value)
        else:
            raise RequestError("the left of '=' must be a name (or names, for split)", _pos(target))

    def _bind(self, target: ast.Name, value: Operand) -> None:
        name = target.id
        self._check_name(name, target)
        if not isinstance(value, Ref):  # a constant: make it a node so it can be an output
            raise RequestError(f"{name} = a number: outputs and variables must be tensors", _pos(target))
        node = self.nodes[value.id]
        if node.name is None and node.op != "input":
            self.nodes[value.id] = IRNode(
                node.id,
                node.op,
                node.args,
                node.attrs,
                node.shape,
                node.dtype,
                node.pos,
                node.text,
                name,
            )
        self.scope[name] = value.id
        self.assigned.append(name)

    def _check_name(self, name: str, target: ast.AST) -> None:
        if len(name) > MAX_NAME_CHARS:
            raise RequestError(
                f"a name of {len(name)} characters; the limit is {MAX_NAME_CHARS}", _pos(target)
            )
        if name.startswith("_") or name in OPS:  # pi and e may be shadowed, as in Python
            raise RequestError(f"{name!r} cannot be assigned (reserved name)", _pos(target))
        if name in dict(self.input_ids):
            raise RequestError(f"{name!r} is an input and cannot be reassigned", _pos(target))

    def _unpack(self, target: ast.Tuple, value: ast.expr) -> None:
        if not (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "split"
        ):
            raise RequestError("only split(...) returns several tensors to unpack", _pos(value))
        parts = self._call(value, 1, unpacked=True)
        shapes = self.nodes[parts.id].shape
        if len(shapes) != len(target.elts):
            raise RequestError(
                f"split gives {len(shapes)} pieces but {len(target.elts)} names are on the left",
                _pos(target),
            )
        for k, (name_node, shape) in enumerate(zip(target.elts, shapes)):
            self._check_name(name_node.id, name_node)
            nid = self._add(
                "take",
                (parts,),
                (("index", k),),
                shape,
                self.nodes[parts.id].dtype,
                _pos(name_node),
                name_node.id,
                name_node.id,
            )
            self.scope[name_node.id] = nid
            self.assigned.append(name_node.id)

    # ------------------------------------------------------------ expressions
    def expr(self, node: ast.expr, depth: int) -> Operand:
        if depth > self.limits.max_depth:
            raise LimitError(
                f"the expression is nested more than {self.limits.max_depth} "
                "levels deep (the limit); split it into several assignments",
                _pos(node),
            )
        depth += 1
        if isinstance(node, ast.Constant):
            return self._number(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self._binop(node, depth)
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, depth)
        if isinstance(node, (ast.Tuple, ast.List)):
            raise RequestError(
                "a tuple or list is only allowed as an op's attribute, as "
                "concat/stack's list of tensors, or as an index",
                _pos(node),
            )
        raise RequestError(
            f"{_what(node)} is not allowed; use operators (+ - * / ** @), op "
            "calls like tanh(x), indexing, numbers, pi and e",
            _pos(node),
        )

    def _number(self, node: ast.Constant) -> Operand:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = "a string" if isinstance(value, str) else repr(value)
            raise RequestError(f"{what} is not allowed here: only int and float literals", _pos(node))
        return self._checked_number(value, node)

    def _checked_number(self, value: float, node: ast.AST) -> Operand:
        if isinstance(value, int) and abs(value) > _MAX_INT_LITERAL:
            try:
                value = float(value)
            except OverflowError:
                raise RequestError("the constant is too large for float64", _pos(node)) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError("the constant is not finite (it overflows float64)", _pos(node))
        return value

    def _name(self, node: ast.Name) -> Operand:
        if node.id in self.scope:
            return Ref(self.scope[node.id])
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in OPS:
            raise RequestError(f"{node.id} is an op: call it, e.g. {node.id}(x)", _pos(node))
        if node.id in _ATTR_CONSTANTS:
            raise RequestError(
                f"{node.id} is a value only for attributes that allow it (norm's ord, "
                "masked_fill's value)",
                _pos(node),
            )
        known = _listed(sorted(self.scope), 12)
        raise RequestError(
            f"undefined name {node.id!r}{_did_you_mean(node.id, self.scope)} (inputs and variables "
            f"defined so far: {known})",
            _pos(node),
        )

    def _unary(self, node: ast.UnaryOp, depth: int) -> Operand:
        operand = self.expr(node.operand, depth)
        if isinstance(node.op, ast.UAdd):
            return operand
        if not isinstance(node.op, ast.USub):
            raise RequestError(f"operator {type(node.op).__name__} is not allowed", _pos(node))
        if not isinstance(operand, Ref):
            return -operand
        return self.op_node("neg", [operand], {}, node)

    def _binop(self, node: ast.BinOp, depth: int) -> Operand:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise RequestError(
                f"operator {type(node.op).__name__} is not allowed; use + - * / ** @", _pos(node)
            )
        left, right = self.expr(node.left, depth), self.expr(node.right, depth)
        return self.arithmetic(op, left, right, node)

    def arithmetic(self, op: str, left: Operand, right: Operand, node: ast.AST) -> Operand:
        if op == "matmul" and not (isinstance(left, Ref) and isinstance(right, Ref)):
            raise RequestError("@ needs tensors on both sides", _pos(node))
        if not isinstance(left, Ref) and not isinstance(right, Ref):
            return self._fold(op, left, right, node)
        if op == "pow":
            return self._pow(left, right, node)
        if op == "sub" and not isinstance(left, Ref):
            return self.op_node("rsub", [right], {"other": left}, node)
        if op in ("add", "mul") and not isinstance(left, Ref):
            left, right = right, left  # 3 * a: the tensor comes first, as in torch's graph
        return self.op_node(op, [left, right], {}, node)

    def _pow(self, base: Operand, exponent: Operand, node: ast.AST) -> Operand:
        if isinstance(exponent, Ref) and isinstance(base, Ref):
            return self.op_node("pow_tensor", [base, exponent], {}, node)
        if isinstance(exponent, Ref):
            return self.op_node("rpow", [exponent], {"base": base}, node)
        if abs(exponent) > self.limits.max_exponent:
            raise LimitError(
                f"exponent {exponent} is too large: the limit of |exponent| is "
                f"{self.limits.max_exponent:g}",
                _pos(node),
            )
        return self.op_node("pow", [base], {"exponent": exponent}, node)

    def _fold(self, op: str, a: float, b: float, node: ast.AST) -> Operand:
        try:
            if op == "pow":
                if abs(b) > self.limits.max_exponent and abs(a) != 1:
                    raise LimitError(
                        f"exponent {b} is too large in a constant: the limit of |exponent| is "
                        f"{self.limits.max_exponent:g}",
                        _pos(node),
                    )
                value = a**b
            elif op == "div":
                value = a / b
            else:
                value = {"add": a + b, "sub": a - b, "mul": a * b}[op]
        except ZeroDivisionError as exc:
            raise RequestError(f"constant arithmetic fails: {exc}", _pos(node)) from None
        except OverflowError:  # (Python says "(34, 'Numerical result out of range')")
            raise RequestError(
                "constant arithmetic fails: the result is too large for float64", _pos(node)
            ) from None
        if isinstance(value, complex):
            raise RequestError("constant arithmetic gives a complex number", _pos(node))
        return self._checked_number(value, node)

    def _compare(self, node: ast.Compare, depth: int) -> Operand:
        if len(node.ops) != 1:
            raise RequestError("chained comparisons are not allowed", _pos(node))
        op = _COMPARE.get(type(node.ops[0]))
        if op is None:
            raise RequestError(f"comparison {type(node.ops[0]).__name__} is not allowed", _pos(node))
        left, right = self.expr(node.left, depth), self.expr(node.comparators[0], depth)
        if not isinstance(left, Ref) and not isinstance(right, Ref):
            raise RequestError("a comparison needs a tensor on one side", _pos(node))
        return self.op_node(op, [left, right], {}, node)

    # ------------------------------------------------------------ calls
    def _call(self, node: ast.Call, depth: int, unpacked: bool = False) -> Operand:
        if not isinstance(node.func, ast.Name):
            raise RequestError(f"only op names can be called, not {_what(node.func)}", _pos(node.func))
        name = node.func.id
        if name == "pow":
            if len(node.args) != 2 or node.keywords:
                raise RequestError("pow takes two operands: pow(x, y)", _pos(node))
            return self.arithmetic(
                "pow", self.expr(node.args[0], depth), self.expr(node.args[1], depth), node
            )
        spec = OPS.get(name)
        if name == "split" and not unpacked:
            raise RequestError(
                "split returns several tensors: unpack them, as in 'a, b = split(x, 2)'", _pos(node)
            )
        if spec is None or name not in CALLABLE_OPS:
            # a likely typo's fix alone: after it, the list of 75 ops buried it
            hint = _did_you_mean(name, CALLABLE_OPS) or f"; the ops are: {', '.join(CALLABLE_OPS)}"
            raise RequestError(f"unknown function {name!r}{hint}", _pos(node.func))
        if spec.arity is None:  # concat / stack: a list of tensors
            if not node.args or not isinstance(node.args[0], (ast.List, ast.Tuple)):
                raise RequestError(f"{name} takes a list of tensors: {name}([a, b], axis=0)", _pos(node))
            if not node.args[0].elts:
                raise RequestError(f"{name} needs at least one tensor", _pos(node))
            operands = [self.expr(e, depth) for e in node.args[0].elts]
            extra = node.args[1:]
        else:
            if len(node.args) < spec.arity:
                raise RequestError(
                    f"{name} takes {spec.arity} tensor operand{'s' * (spec.arity > 1)} "
                    f"({', '.join(spec.operands)}), got {len(node.args)}",
                    _pos(node),
                )
            operands = [self.expr(a, depth) for a in node.args[: spec.arity]]
            extra = node.args[spec.arity :]
        if any(isinstance(o, ast.Starred) for o in node.args):
            raise RequestError("starred arguments are not allowed", _pos(node))
        attrs = self._attrs(name, spec, extra, node)
        for k, o in enumerate(operands):
            if not isinstance(o, Ref) and name not in _ELEMENTWISE_BINARY | {"where"}:
                raise RequestError(f"{name}: operand {k + 1} must be a tensor, not a number", _pos(node))
        if all(not isinstance(o, Ref) for o in operands):
            raise RequestError(f"{name}: at least one operand must be a tensor", _pos(node))
        return self.op_node(name, operands, attrs, node)

    def _attrs(self, name: str, spec: Any, extra: list[ast.expr], node: ast.Call) -> dict:
        allowed = {a.name: a for a in spec.attrs if a.kind != "index"}
        if len(extra) > len(allowed):
            raise RequestError(
                f"{name} takes at most {len(allowed)} attribute(s) after its "
                f"operands ({', '.join(allowed) or 'none'})",
                _pos(node),
            )
        given: dict[str, Any] = {}
        for attr, value in zip(allowed.values(), extra):
            given[attr.name] = self._attr_value(name, attr, value)
        for kw in node.keywords:
            if kw.arg is None:
                raise RequestError("**kwargs are not allowed", _pos(kw.value))
            if kw.arg not in allowed:
                raise RequestError(
                    f"{name} has no attribute {kw.arg!r}{_did_you_mean(kw.arg, allowed)}; it takes: "
                    f"{', '.join(allowed) or 'none'}",
                    _pos(kw.value),
                )
            if kw.arg in given:
                raise RequestError(f"{name}: {kw.arg} is given twice", _pos(kw.value))
            given[kw.arg] = self._attr_value(name, allowed[kw.arg], kw.value)
        attrs = {}
        for attr in allowed.values():
            if attr.name in given:
                attrs[attr.name] = given[attr.name]
            elif attr.required:
                raise RequestError(f"{name} needs the attribute {attr.name}", _pos(node))
            else:
                attrs[attr.name] = attr.default
        return attrs

    def _constants(self, table: dict[str, float]) -> dict[str, float]:
        """The named constants a literal may use here: those no variable shadows."""
        return {k: v for k, v in table.items() if k not in self.scope}

    def _attr_value(self, op: str, attr: Any, node: ast.expr) -> Any:
        value = _literal(node, self._constants(_ATTR_CONSTANTS))
        kind, ok = attr.kind, False
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":  # None only where it is the default (not for a required int)
            ok = _is_int(value) or (value is None and attr.default is None and not attr.required)
        elif kind == "float":
            infinite = attr.infinite and isinstance(value, float) and math.isinf(value)
            ok = (_is_number(value) and (_finite(value) or infinite)) or (
                value is None and attr.default is None
            )
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "axis":
            ok = value is None or _is_int(value) or _is_int_tuple(value)
        elif kind in ("shape", "ints"):
            if _is_int(value):
                value = (value,) if kind == "shape" else value
            ok = _is_int(value) or _is_int_tuple(value)
        if not ok and isinstance(node, ast.Name) and node.id in self.scope:
            shadows = " (a variable of that name shadows the constant)" * (node.id in _ATTR_CONSTANTS)
            raise RequestError(
                f"{op}: attribute {attr.name} must be a literal value, and {node.id!r} is a tensor "
                f"here{shadows}",
                _pos(node),
            )
        if not ok:
            what = "a number, inf or -inf" if kind == "float" and attr.infinite else _KIND_TEXT[kind]
            raise RequestError(
                f"{op}: attribute {attr.name} must be {what}, got {self._text(node)!r}", _pos(node)
            )
        if isinstance(value, tuple) and len(value) > 64:
            raise LimitError(
                f"{op}: attribute {attr.name} is too long (the limit is 64 items)", _pos(node)
            )
        return value

    # ------------------------------------------------------------ indexing
    def _subscript(self, node: ast.Subscript, depth: int) -> Operand:
        base = self.expr(node.value, depth)
        if not isinstance(base, Ref):
            raise RequestError("only tensors can be indexed", _pos(node))
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        index = tuple(self._index_item(i) for i in items)
        shape = self.shape_of(base)
        try:
            result = index_shape("getitem", shape, canonical_index(index, tuple(shape)))
        except ShapeError as exc:
            raise RequestError(str(exc), _pos(node)) from None
        return self.op_node("getitem", [base], {"index": _hashable_index(index)}, node, result)

    def _index_item(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Slice):
            constants = self._constants(_CONSTANTS)
            parts = [
                None if p is None else _literal(p, constants)
                for p in (node.lower, node.upper, node.step)
            ]
            if not all(p is None or _is_int(p) for p in parts):
                raise RequestError("slice bounds must be int literals", _pos(node))
            if parts[2] is not None and parts[2] <= 0:
                raise RequestError("slice step must be positive", _pos(node))
            return slice(*parts)
        value = _literal(node, self._constants(_CONSTANTS))
        if value is None or value is Ellipsis or _is_int(value):
            return value
        if isinstance(value, list) and value and all(_is_int(v) for v in value):
            if len(value) > self.limits.max_input_elements:
                raise LimitError(
                    f"index list is too long: the limit is {self.limits.max_input_elements}",
                    _pos(node),
                )
            return np.asarray(value, dtype=np.int64)
        raise RequestError(
            "an index must be an int, a slice, None, ..., or a list of ints "
            "(indexing with tensors is not supported; use where)",
            _pos(node),
        )


_KIND_TEXT = {
    "bool": "True or False",
    "int": "an int",
    "float": "a finite number",
    "str": "a string",
    "axis": "an int, a tuple of ints or None",
    "shape": "a tuple of ints",
    "ints": "int(s)",
}


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float64
        return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int_tuple(v: Any) -> bool:
    return isinstance(v, tuple) and all(_is_int(x) for x in v)


def _literal(node: ast.expr, constants: Mapping[str, float]) -> Any:
    """A literal attribute or index value, named constants included (those a variable does not
    shadow); anything else is _NOT_LITERAL (ast.literal_eval would accept more than we want,
    and this never evaluates code)."""
    if isinstance(node, ast.Constant) and (
        node.value is None or node.value is Ellipsis or isinstance(node.value, (bool, int, float, str))
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand, constants)
        if _is_number(inner):
            return -inner
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) <= 1_000_000:
        items = [_literal(e, constants) for e in node.elts]
        if all(_is_number(i) for i in items):
            return tuple(items) if isinstance(node, ast.Tuple) else list(items)
    return _NOT_LITERAL


class _NotLiteral:
    def __repr__(self) -> str:
        return "<not a literal>"


_NOT_LITERAL = _NotLiteral()


def _hashable_index(index: tuple[Any, ...]) -> Any:
    """Index items in a hashable form (integer lists as tuples) for the IR and caches."""
    return tuple(IntList(tuple(int(v) for v in i)) if isinstance(i, np.ndarray) else i for i in index)


class IntList(tuple):
    """An integer-array index item, kept hashable in the IR; backends turn it into an array."""


def index_for_numpy(index: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(np.asarray(i, dtype=np.intp) if isinstance(i, IntList) else i for i in index)


def apply_index(x: Any, index: tuple[Any, ...]) -> Any:
    """x[index] with the engine's (torch's) indexing rules, for any array type (the references)."""
    return getitem(x, canonical_index(index_for_numpy(index), np.shape(x)))


def parse(
    source: str,
    inputs: Sequence[InputDecl] | Mapping[str, tuple[tuple[int, ...], str]],
    outputs: Sequence[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Program:
    """Parse and shape-check a program. outputs default to the last assigned variable.
    Programs are immutable, so a repeated request reuses the parse of the first."""
    if not isinstance(source, str):
        raise RequestError("the program must be text")
    if outputs is not None and not all(isinstance(o, str) for o in outputs):
        raise RequestError("outputs must be names (strings)", field="outputs")
    if isinstance(inputs, Mapping):
        inputs = [InputDecl(n, tuple(s), d) for n, (s, d) in inputs.items()]
    key = (source, tuple(inputs), tuple(outputs or ()), limits)
    program, _ = _PARSED.get_or_build(key, lambda: _parse(source, inputs, outputs, limits))
    return program


_PARSED = caches.register("parse", 256)  # parsed programs, by text, inputs, outputs and limits


def _parse(
    source: str, inputs: Sequence[InputDecl], outputs: Sequence[str] | None, limits: Limits
) -> Program:
    if not isinstance(source, str):
        raise RequestError("the program must be text")
    if len(source) > limits.max_source_chars:
        raise LimitError(
            f"the program has {len(source)} characters; the limit is {limits.max_source_chars}"
        )
    if "\x00" in source:
        before = source[: source.index("\x00")]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise RequestError("the program contains a NUL character", Position(line, col, line, col + 1))
    builder = _Builder(source, inputs, limits)
    tree = _parse_python(source, limits, builder.lines)
    if not tree.body:
        raise RequestError("the program is empty: write at least one assignment")
    if len(tree.body) > limits.max_statements:
        raise LimitError(
            f"the program has {len(tree.body)} statements; the limit is {limits.max_statements}"
        )
    for stmt in tree.body:
        builder.statement(stmt)
    assigned = list(dict.fromkeys(builder.assigned))
    if outputs is None or len(outputs) == 0:
        if not assigned:
            raise RequestError("the program assigns nothing: no output")
        outputs = [builder.assigned[-1]]  # the last variable assigned, aliases included
    outs = []
    for name in outputs:
        if name not in builder.scope:
            raise RequestError(
                f"output {name!r} is not assigned by the program (assigned: "
                f"{', '.join(assigned) or 'none'})",
                field="outputs",
            )
        node = builder.nodes[builder.scope[name]]  # an input itself too (out = x: d out/d x = I)
        if node.dtype not in ("float64", "float32"):
            raise RequestError(
                f"output {name!r} is {node.dtype}: only float results can be differentiated",
                field="outputs",
            )
        outs.append((name, node.id))
    nodes = tuple(builder.nodes)
    key = (source, tuple((d.name, tuple(d.shape), d.dtype) for d in inputs), tuple(outputs))
    return Program(source, nodes, tuple(builder.input_ids), tuple(outs), key)


# CPython 3.11 builds the AST's Python objects with an interpreter-wide recursion counter: two
# threads parsing at once (the server validating long programs on a thread, the embedded client's
# threads) raised "SystemError: AST constructor recursion depth mismatch".
_AST_LOCK = threading.Lock()


def _parse_python(source: str, limits: Limits, lines: list[str]) -> ast.Module:
    depth = 0
    for at, ch in enumerate(source):  # bounded by max_source_chars; guards the parser
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > limits.max_depth:
            raise LimitError(
                f"brackets are nested more than {limits.max_depth} deep (the limit)",
                _position_at(source, at),
            )
    try:
        with _AST_LOCK:
            tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        digits = sys.get_int_max_str_digits()
        long_number = re.search(rf"\d{{{digits + 1},}}", source) if digits else None
        if long_number:  # Python's message has no position, and names its own setting
            raise LimitError(
                f"a number of {len(long_number.group())} digits; the limit is {digits}",
                _position_at(source, long_number.start()),
            ) from None
        line, column = exc.lineno or 1, exc.offset or 1
        end_line, end_column = exc.end_lineno or line, exc.end_offset or column
        if (end_line, end_column) < (line, column):  # "unexpected indent": end_offset is -1
            end_line, end_column = line, column
        pos = Position(line, column, end_line, end_column)
        raise RequestError(f"syntax error: {exc.msg}", pos) from None
    except (RecursionError, MemoryError) as exc:
        # the parser says nowhere where: point at the line with the most operators (a long chain
        # a + a + ... nests as deeply as it has operators)
        counts = [sum(line.count(op) for op in "+-*/@%(~") + line.count("not ") for line in lines]
        worst = max(range(len(counts)), key=counts.__getitem__, default=0)
        if isinstance(exc, MemoryError) and max(counts, default=0) < _NESTED_OPERATORS:
            raise  # no nesting that deep: out of memory indeed (a worker at its cap)
        raise LimitError(
            f"the program is nested too deeply to parse (the parser's limit): this line has "
            f"{counts[worst] if counts else 0} operators and brackets; split its expression "
            "over several statements",
            Position(worst + 1, 1, worst + 1, len(lines[worst]) + 1 if lines else 1),
        ) from None
    except ValueError as exc:  # e.g. source with null bytes
        raise RequestError(f"the program cannot be parsed: {exc}") from None
    if not source.isascii():
        _columns_in_characters(tree, lines)
    return tree


def _position_at(source: str, at: int) -> Position:
    """The line and column (from 1, in characters) of source[at]."""
    line = source.count("\n", 0, at) + 1
    col = at - source.rfind("\n", 0, at)
    return Position(line, col, line, col)


def _lines(source: str) -> list[str]:
    """The lines as Python's tokenizer splits them."""
    return source.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _columns_in_characters(tree: ast.Module, lines: list[str]) -> None:
    """ast counts columns in UTF-8 bytes; people (and editors) count characters."""

    def chars(line: int, col: int) -> int:
        return len(lines[line - 1].encode()[:col].decode(errors="replace"))

    for node in ast.walk(tree):
        if hasattr(node, "col_offset"):
            node.col_offset = chars(node.lineno, node.col_offset)
            if node.end_lineno is not None and node.end_col_offset is not None:
                node.end_col_offset = chars(node.end_lineno, node.end_col_offset)


def _listed(names: Sequence[str], most: int) -> str:
    """The names, the first `most` of them and how many more (a program of 200 statements
    listed them all in one error)."""
    if not names:
        return "none"
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _did_you_mean(name: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    """' (did you mean "tanh"?)' for a name one typo away from one of `choices`."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""
