"""KernelWriter: writes the body of one generated Triton kernel.

The writer computes IR nodes *at coordinates*: `value(node, coords)` returns a Triton
expression for `node`'s elements at `coords` (sympy expressions of the kernel's index
variables). A buffer (a node the fusion plan writes to memory, or an input) becomes a load at
its simplified flat index; a view maps the coordinates and reads its input (a pad reads it
under a guard, and is zero outside); an elementwise op
reads its operands at the broadcast coordinates and applies its op table lowering. Each
(node, coordinates) pair is computed once per kernel.

Every statement that computes a node ends with a comment naming it as the graph's text
does (`v6 = tl.exp(v5)  # %4 exp`, see `note`), and every load names the buffer it
reads (`# x`, `# %3`): a reader can follow each line back to the IR. A view costs no
statement (it is an index expression in its readers), so the statement computing a node
through views names that node.

Half-precision values are computed in float32 inside kernels and rounded when stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import sympy
from sympy.printing.str import StrPrinter

from kgen.errors import KgenError
from kgen.ir import dtypes, indexing
from kgen.ir.graph import format_node
from kgen.ir.node import Node
from kgen.ir.optable import Guarded


@dataclass
class Param:
    """One kernel argument: a buffer pointer ("in"/"out"), a scratch buffer the launcher
    provides ("scratch", kgen.kernels.splitk), a size or an int expression of sizes
    ("int"), or a block size ("constexpr")."""
    name: str
    kind: str
    node: Optional[Node] = None
    expr: object = None  # sympy expression (for "int")
    dtype: object = None  # a scratch buffer's element type (a kgen dtype)
    numel: int = 0  # a scratch buffer's elements, times the value of constexpr `per` if it has one
    per: Optional[str] = None
    zeroed: bool = False  # a scratch buffer that must hold zeros at launch (and is left so)

    def signature(self) -> str:
        if self.kind in ("in", "out"):
            return "*" + self.node.dtype.signature
        if self.kind == "scratch":
            return "*" + self.dtype.signature
        return "i32" if self.kind == "int" else "constexpr"


PARAM_ORDER = {"in": 0, "out": 1, "scratch": 2, "int": 3, "constexpr": 4}  # a kernel's parameters, in order


@dataclass
class KernelSource:
    """A generated kernel: its source text and what its launcher needs to call it."""
    name: str
    kind: str  # pointwise | reduction | matmul
    text: str
    params: list
    grid: list  # per grid axis: (number of elements: sympy expr, block constexpr name or None)
    roots: tuple  # the nodes it writes
    reads: tuple  # the buffers it reads
    nodes: tuple  # every IR node it computes
    config_rule: str  # its kernel family's name: default config, search space, estimates (kgen.kernels.families)
    dims: dict = field(default_factory=dict)  # named extents for config choice, e.g. {"x": expr}
    parts: tuple = ()  # a combo kernel's parts (kgen.kernels.combo), each a KernelSource


def compute_type(dt) -> str:
    return "tl.float32" if dt in (dtypes.float16, dtypes.bfloat16) else f"tl.{dt.triton}"


class IndexPrinter(StrPrinter):
    """Prints index expressions as Triton code; size symbols become `s_<name>` arguments."""

    def __init__(self, writer):
        super().__init__()
        self.writer = writer

    def _print_Dummy(self, expr):
        return expr.name

    def _print_Symbol(self, expr):
        return self.writer.size_param(expr.name)

    def _operand(self, expr) -> str:
        """`expr` printed as an operand of // or %: compound expressions get parentheses."""
        text = self._print(expr)
        simple = expr.is_Atom or isinstance(expr, (indexing.FloorDiv, indexing.ModularIndexing))
        return text if simple else f"({text})"

    def _print_Pow(self, expr):
        base, exponent = expr.args
        if not (exponent.is_Integer and exponent > 0):
            raise KgenError(f"index expression {expr} has a power Triton cannot take")
        return "(" + " * ".join([self._operand(base)] * int(exponent)) + ")"  # Triton has no **

    def _floor(self, base, div) -> str:
        """base // div with Python's floor (sympy's meaning): Triton's integer // truncates
        toward zero as C's does, which differs for a base that may be negative."""
        a, d = self._operand(base), self._operand(div)
        if indexing.provably_nonnegative(base):
            return f"({a} // {d})"
        return f"tl.where({a} >= 0, {a} // {d}, ({a} - {d} + 1) // {d})"

    def _print_FloorDiv(self, expr):
        return self._floor(*expr.args)

    def _print_ModularIndexing(self, expr):
        base, div, mod = expr.args
        m = self._operand(mod)
        if indexing.provably_nonnegative(base):
            inner = self._operand(base) if div == 1 else f"({self._operand(base)} // {self._operand(div)})"
            return f"({inner} % {m})"
        inner = self._operand(base) if div == 1 else self._floor(base, div)
        return f"((({inner} % {m}) + {m}) % {m})"  # Python's modulo of a negative value


@dataclass
class _Loop:
    """A loop the template opened (`KernelWriter.open_loop`): the index variables that change
    per iteration, and where the pointers made once before it go."""
    vars: frozenset
    at: int  # the line index of the loop's header: hoisted lines go before it
    indent: int
    pointers: dict = field(default_factory=dict)  # (pointer param, base offset) -> its variable
    steps: dict = field(default_factory=dict)  # per-iteration offset -> its variable in the body


def _outside(expr, low, high) -> bool:
    """Whether index expression `expr` provably lies outside [low, high] at every value of
    its index variables and sizes."""
    below = indexing.upper_bound(expr)
    above = indexing.lower_bound(expr)
    return bool((below is not None and sympy.simplify(low - below - 1).is_nonnegative)
                or (above is not None and sympy.simplify(above - high - 1).is_nonnegative))


class KernelWriter:
    def __init__(self, name: str, buffers: set, names: dict):
        self.name = name
        self.buffers = buffers  # nodes read from memory rather than computed here
        self.names = names  # node -> its name in the graph's text form (for comments)
        self.lines: list = []
        self.params: list = []
        self._param_of: dict = {}
        self._cache: dict = {}
        self._provided: dict = {}  # (node, flat index) -> the variable a template provided (see `provide`)
        self._count = 0
        self.mask = None  # the mask loads use, set by the template
        self.lanes: tuple = ()  # the index variables spanning the kernel's output block, set by the template
        self.block_vars: tuple = ()  # every index variable that differs between lanes (others are per program)
        self.program_vars: tuple = ()  # or else: the index variables that are one value per program
        self.indent = 0
        self.computed: list = []  # nodes computed here, in order
        self.uniform: set = set()  # emitted expressions that are the same in every lane
        self.masked_loads: set = set()  # variables holding a load under the current mask
        self.guard = None  # inside a pad's input: (variable, varies) of the lanes it holds (see `_guarded`)
        self.loop = None  # the loop being written (`open_loop`), if any
        self.printer = IndexPrinter(self)

    # --- parameters --------------------------------------------------------------------
    def _param(self, key, make):
        if key not in self._param_of:
            self._param_of[key] = make()
            self.params.append(self._param_of[key])
        return self._param_of[key].name

    def input_param(self, node: Node) -> str:
        return self._param(("in", node), lambda: Param(f"in{sum(p.kind == 'in' for p in self.params)}", "in", node))

    def output_param(self, node: Node) -> str:
        return self._param(("out", node), lambda: Param(f"out{sum(p.kind == 'out' for p in self.params)}", "out", node))

    def size_param(self, symbol: str) -> str:
        return self._param(("size", symbol), lambda: Param(f"s_{symbol}", "int", expr=sympy.Symbol(symbol, integer=True, positive=True)))

    def scratch_param(self, name: str, dtype, numel: int, per: str = None, zeroed: bool = False) -> str:
        """A scratch buffer of `numel` elements (times constexpr `per`'s value), which the
        launcher keeps between launches (zeros at first if `zeroed`)."""
        return self._param(("scratch", name), lambda: Param(name, "scratch", dtype=dtype, numel=int(numel), per=per,
                                                            zeroed=zeroed))

    def int_param(self, name: str, expr) -> str:
        """An int argument computed at launch from the sizes (a numel, a matrix extent)."""
        expr = sympy.sympify(expr)
        if expr.is_Integer:
            return str(int(expr))
        return self._param(("int", name), lambda: Param(name, "int", expr=expr))

    # --- code --------------------------------------------------------------------------
    def emit(self, line: str, note: str = "") -> None:
        """Add a line of code; `note` is a comment ending it (see `note`)."""
        self.lines.append("    " * self.indent + line + (f"  # {note}" if note else ""))

    def fresh(self, prefix: str = "v") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def assign(self, expr: str, prefix: str = "v", note: str = "") -> str:
        var = self.fresh(prefix)
        self.emit(f"{var} = {expr}", note)
        return var

    def assign_steps(self, lowered, note: str) -> str:
        """An elementwise lowering's value: one expression, or a list of them, each naming
        the earlier ones' values {0}, {1}, ... (a value used several times is computed once)."""
        if isinstance(lowered, str):
            return self.assign(lowered, note=note)
        names = []
        for step in lowered:
            names.append(self.assign(step.format(*names), note=note))
        return names[-1]

    def name_of(self, node: Node) -> str:
        """`node`'s name in the graph's text form: `%3`, or an input's own name."""
        return self.names.get(node, node.name or f"<{node.op}>")

    def note(self, node: Node) -> str:
        """The comment ending a statement that computes `node`: its name and op, `%2 relu`."""
        return f"{self.name_of(node)} {node.op}"

    def index(self, expr) -> str:
        return self.printer.doprint(indexing.simplify(expr))

    def comment_nodes(self, nodes) -> list:
        return [format_node(n, self.names) for n in nodes]

    # --- values at coordinates -----------------------------------------------------------
    def value(self, node: Node, coords) -> str:
        coords = tuple(indexing.simplify(c) for c in coords)
        key = self._key(node, coords)
        if key not in self._cache:
            if node not in self.buffers and any(d == 0 for d in node.shape):
                # an empty value: no lane reads it (a pad's guard is false), and its view
                # arithmetic may divide by its zero extent
                return self.uniform_("0.0" if node.dtype.is_float else ("False" if node.dtype is dtypes.bool_ else "0"))
            if node in self.buffers:
                self._cache[key] = self.load(node, coords, self.mask)
            elif (node, indexing.flat_index(coords, node.shape)) in self._provided:
                # a template's result read through reshapes: the same elements, other coordinates
                self._cache[key] = self._provided[(node, indexing.flat_index(coords, node.shape))]
            else:
                self._cache[key] = self._compute(node, coords)
        return self._cache[key]

    def open_loop(self, header: str, loop_vars) -> None:
        """Open a loop (`header`, a `for` statement) over whose iterations the index variables
        `loop_vars` change; loads and stores in it take their pointers from `pointer`."""
        self.loop = _Loop(frozenset(loop_vars), len(self.lines), self.indent)
        self.emit(header)
        self.indent += 1

    def end_loop(self) -> None:
        """Leave a loop body: values computed in it (block-shaped, per iteration) are gone."""
        self.indent -= 1
        self.loop = None
        self._cache.clear()

    def hoist(self, *lines: str) -> None:
        """Put `lines` before the open loop's header (after the lines hoisted earlier)."""
        for line in lines:
            self.lines.insert(self.loop.at, "    " * self.loop.indent + line)
            self.loop.at += 1

    def pointer(self, ptr: str, offset) -> str:
        """The pointers `ptr + offset` for a load or a store. Inside a loop (`open_loop`), an
        offset that changes per iteration splits into its terms of the lanes (rb, rh) and the
        rest, the same in every lane (a time step's row t * B * W, a column): the lanes'
        pointers `ptr + lanes` are made once before the loop, one block per buffer and
        pattern of lanes, and each load adds the rest, a scalar, computed once an iteration
        (so the body must be straight-line code where it is first used). The loop body then
        holds no integer arithmetic on blocks, which Triton's interpreter runs as a NumPy
        call per op and program; a GPU holds one block of pointers per buffer across the
        loop. An offset the loop does not change is written in place."""
        loop, offset = self.loop, indexing.simplify(offset)
        if loop is None or self.guard is not None or not (indexing.index_vars(offset) & loop.vars):
            return f"{ptr} + {self.index(offset)}"
        terms = sympy.Add.make_args(sympy.expand(offset))
        lanes = sympy.Add(*[t for t in terms if indexing.index_vars(t) - loop.vars])
        rest = sympy.Add(*[t for t in terms if not indexing.index_vars(t) - loop.vars])
        steps = sympy.Add(*[t for t in terms if indexing.index_vars(t) & loop.vars])
        if indexing.index_vars(lanes) & loop.vars or not self._varies(lanes):  # t * rb, or no lanes
            return f"{ptr} + {self.index(offset)}"
        key = (ptr, lanes)
        if key not in loop.pointers:
            loop.pointers[key] = self.fresh("p")
            self.hoist(f"{loop.pointers[key]} = {ptr} + {self.index(lanes)}")
        if rest not in loop.steps:  # the body is straight-line code: computed at its first use
            if steps not in loop.steps:
                loop.steps[steps] = self.assign(self.index(steps), "o")
            fixed = rest - steps
            if fixed == 0:
                loop.steps[rest] = loop.steps[steps]
            elif fixed.is_Integer:
                loop.steps[rest] = self.assign(f"{loop.steps[steps]} + {fixed}", "o")
            else:  # sizes: once, before the loop
                if fixed not in loop.pointers:
                    loop.pointers[fixed] = self.fresh("c")
                    self.hoist(f"{loop.pointers[fixed]} = {self.index(fixed)}")
                loop.steps[rest] = self.assign(f"{loop.steps[steps]} + {loop.pointers[fixed]}", "o")
        return f"{loop.pointers[key]} + {loop.steps[rest]}"

    def provide(self, node: Node, coords, var: str) -> None:
        """Declare that `var` holds `node` at `coords` (a template's result, for its epilogue)."""
        self._cache[self._key(node, tuple(indexing.simplify(c) for c in coords))] = var
        self._provided[(node, indexing.flat_index(coords, node.shape))] = var

    def epilogue(self, anchor: Node, anchor_coords, offset, roots, mask: str, block_shape: str) -> None:
        """Compute and store `roots`, elementwise consumers of `anchor` (already provided at
        `anchor_coords`), at the same elements: each root is stored at `offset`, the flat
        position of those elements (fusion rule E1 keeps elements in place)."""
        self.mask = mask
        flat = indexing.flat_index(anchor_coords, anchor.shape)
        for root in roots:
            same = root.ndim == anchor.ndim and all(a == b for a, b in zip(root.shape, anchor.shape))
            coords = list(anchor_coords) if same else indexing.unflatten(flat, root.shape)
            self.store(root, offset, self.root_value(root, coords), mask, block_shape)

    def root_value(self, node: Node, coords) -> str:
        """The value a kernel computes and stores for its root `node` (later roots that
        read it at the same coordinates reuse it)."""
        key = self._key(node, tuple(indexing.simplify(c) for c in coords))
        self._cache[key] = self._compute(node, key[1])
        return self._cache[key]

    def _key(self, node: Node, coords: tuple) -> tuple:
        """What a computed value depends on besides the node: its coordinates, the mask its
        loads took (a row's value loaded under the row-and-element mask is a block over
        the row, not one per row) and the pad guard it was computed under."""
        return node, coords, self.mask, self.guard[0] if self.guard is not None else None

    @staticmethod
    def load_text(node: Node, where: str, mask: Optional[str]) -> str:
        """tl.load of `node`'s elements at pointers `where` (zero outside `mask`, if any), a
        half-precision value widened to float32 as every template computes it."""
        other = "0.0" if node.dtype.is_float else "0"
        text = f"tl.load({where}, mask={mask}, other={other})" if mask else f"tl.load({where})"
        return text + (".to(tl.float32)" if node.dtype in (dtypes.float16, dtypes.bfloat16) else "")

    def load(self, node: Node, coords, mask: Optional[str]) -> str:
        offset = indexing.flat_index(coords, node.shape)
        ptr = self.input_param(node)
        index = self.index(offset)
        uniform = not self._varies(offset)
        if self.guard is not None:  # lanes outside a pad's input load nothing (at element 0)
            index = f"tl.where({self.guard[0]}, {index}, 0)"
            mask = self.guard[0] if uniform or mask is None else f"({mask}) & {self.guard[0]}"
            uniform = uniform and not self.guard[1]
            if uniform:  # one element for every lane, if the guard holds (an empty input has none)
                return self.uniform_(self.assign(self.load_text(node, f"{ptr} + {index}", mask), "x",
                                                 self.name_of(node)))
        if uniform:
            text = self.load_text(node, f"{ptr} + {index}", None)  # one element for every lane
        else:
            where = f"{ptr} + {index}" if self.guard is not None else self.pointer(ptr, offset)
            text = self.load_text(node, where, mask)
        var = self.assign(text, "x", self.name_of(node))
        if not uniform and node.dtype not in (dtypes.float16, dtypes.bfloat16) and self.guard is None:
            self.masked_loads.add(var)
        return self.uniform_(var) if uniform else var

    def _compute(self, node: Node, coords) -> str:
        if node.op == "constant":
            if node.shape != ():
                raise KgenError(f"array constant {node!r} must be a buffer")  # fusion puts it in memory
            value = node.attrs["value"]
            if isinstance(value, sympy.Basic):  # a size expression
                text = self.index(value)
                return self.uniform_(f"({text} * 1.0)" if node.dtype.is_float else text)
            return self.uniform_(node.opdef.lower(node, []))
        if node.op == "iota":
            coord = indexing.simplify(coords[node.attrs["axis"]])
            text = self.index(coord)
            if node.dtype.is_float:
                text = f"({text} * 1.0)"
            return self.uniform_(text) if not self._varies(coord) else text
        self.computed.append(node)
        if node.opdef.lower == "philox":  # tl.rand at the element's flat index: the reference's counter
            seed = self.value(node.inputs[0], [])
            flat = indexing.flat_index(coords, node.shape)
            if self._varies(flat):
                return self.assign(f"tl.rand({seed}, {self.index(flat)})", note=self.note(node))
            # one element for every lane (a one-element tensor): tl.rand takes a tensor offset
            return self.uniform_(self.assign(f"tl.rand({seed}, tl.zeros([1], tl.int32) + {self.index(flat)})",
                                             note=self.note(node)))
        kind = node.opdef.kind
        if kind == "view":
            mapped = node.opdef.lower(node, list(coords))
            if isinstance(mapped, Guarded):
                return self._guarded(node, mapped)
            return self.value(node.inputs[0], mapped)
        if kind == "elementwise":
            args = [self.value(i, self.broadcast_coords(node, i, coords)) for i in node.inputs]
            var = self.assign_steps(node.opdef.lower(node, *args), note=self.note(node))
            return self.uniform_(var) if all(a in self.uniform for a in args) else var
        raise KgenError(f"{node!r} cannot be computed inside another kernel (the fusion plan "
                        f"must write it to memory)")

    def _guarded(self, node: Node, mapped: Guarded) -> str:
        """A pad: its input where the guard holds, zero elsewhere. The input is computed
        under the guard, so a lane outside it loads nothing from outside a buffer."""
        if any(_outside(expr, low, low + step * (count - 1)) for expr, low, step, count in mapped.conditions):
            # no lane reads the input (a pad's row that an index variable's range never reaches)
            return self.uniform_("0.0" if node.dtype.is_float else ("False" if node.dtype is dtypes.bool_ else "0"))
        terms, varies = [], False
        for expr, low, step, count in mapped.conditions:
            at = self.index(expr)
            varies = varies or self._varies(expr)
            if not self._varies(expr):  # a one-element block: the interpreter's `block & scalar bool`
                at = f"({at} + tl.zeros([1], tl.int32))"  # gives int32, which no load takes as a mask
            if low:
                terms.append(f"({at} >= {low})")
            terms.append(f"({at} < {self.index(low + step * (count - 1) + 1)})")  # a symbolic count: a size argument
            if step > 1:
                terms.append(f"(({at} - {low}) % {step} == 0)")
        outer = self.guard
        guard = self.assign(" & ".join(terms + ([outer[0]] if outer else [])), "g", f"{self.note(node)} guard")
        self.guard = (guard, varies or bool(outer and outer[1]))
        try:
            value = self.value(node.inputs[0], mapped.coords)
        finally:
            self.guard, inner = outer, self.guard
        zero = "0.0" if node.dtype.is_float else ("False" if node.dtype is dtypes.bool_ else "0")
        var = self.assign(f"tl.where({guard}, {value}, {zero})", note=self.note(node))
        return self.uniform_(var) if value in self.uniform and not inner[1] else var

    def uniform_(self, text: str) -> str:
        """Mark `text` as the same for every lane (literals, sizes, one-element loads)."""
        self.uniform.add(text)
        return text

    def _varies(self, expr) -> bool:
        """Whether `expr` differs between the lanes of a block (a program id does not)."""
        used = indexing.index_vars(expr)
        return bool(used & set(self.block_vars)) if self.block_vars else bool(used - set(self.program_vars))

    @staticmethod
    def broadcast_coords(node: Node, operand: Node, coords) -> list:
        lead = len(coords) - operand.ndim
        return [0 if d == 1 and node.shape[lead + i] != 1 else coords[lead + i]
                for i, d in enumerate(operand.shape)]

    def store(self, node: Node, offset, value: str, mask: str, block_shape: str) -> None:
        """Store `value` (a compute-type expression) to `node`'s buffer; a value that is the
        same in every lane is first spread over `block_shape`."""
        ptr = self.output_param(node)
        if value in self.uniform:
            value = f"tl.zeros({block_shape}, {compute_type(node.dtype)}) + {value}"
        if node.dtype in (dtypes.float16, dtypes.bfloat16):
            value = f"({value}).to(tl.{node.dtype.triton})"
        offset = indexing.simplify(offset)
        where = self.pointer(ptr, offset)
        if not set(self.lanes) <= offset.free_symbols:  # tl.store needs a pointer per lane
            where = f"tl.broadcast_to({where}, {block_shape})"
        self.emit(f"tl.store({where}, {value}, mask={mask})")

    def constexpr(self, name: str) -> str:
        return self._param(("constexpr", name), lambda: Param(name, "constexpr"))

    def reads(self) -> tuple:
        """The buffers the kernel reads, in parameter order."""
        return tuple(p.node for p in self.ordered_params() if p.kind == "in")

    def ordered_params(self) -> list:
        return sorted(self.params, key=lambda p: PARAM_ORDER[p.kind])

    def function(self, summary: str) -> str:
        """The kernel's source: a self-contained @triton.jit function whose docstring names
        the IR nodes it computes (and its statements' comments say which computes which)."""
        args = ", ".join(p.name + (": tl.constexpr" if p.kind == "constexpr" else "")
                         for p in self.ordered_params())
        head = ["@triton.jit", f"def {self.name}({args}):", f'    """{summary}', ""]
        head += [f"    {line}" for line in self.comment_nodes(self.computed_in_order())]
        head += ['    """']
        return "\n".join(head + ["    " + line for line in self.lines]) + "\n"

    def computed_in_order(self):
        seen, out = set(), []
        for n in self.computed:
            if n not in seen:
                seen.add(n)
                out.append(n)
        return sorted(out, key=lambda n: n.id)


