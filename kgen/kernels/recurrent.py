"""The persistent recurrence templates: a whole LSTM or GRU direction (kgen/ir/ops_recurrent.py)
as one kernel, and its gradient as another.

Each program owns BLOCK_B batch rows and loops over the time steps inside the kernel (T is
a kernel argument when it is a size symbol), keeping the state (h, and c for the LSTM) in
registers as [BLOCK_B, HB] tiles, HB = H's next power of two (at least 16, tl.dot's smallest
side), masked to H. Each step loads its rows of xproj, multiplies the state with w_hh's gate
blocks with tl.dot, exact float32 products (input_precision="ieee") as kgen's matmul
computes them, applies the gate math and stores the step's result. The batch rows never
meet, so programs need no synchronisation. w_hh's blocks (and the GRU's b_hh) are loaded
every step on a GPU (from L2 after the first), or once before the loop and held when the
config flag HOLD_WEIGHTS is 1, as on Triton's interpreter (`_Frame.held`).

Triton's interpreter runs every op of every program as NumPy calls (TRITON_NOTES: about
0.1-0.3 ms an op on a [64, 64] block), so the loop body is kept short, in a way a GPU
compile is indifferent to: one program holds the whole batch there, loads and stores add
the step's row (a scalar) to blocks of pointers made before the loop
(KernelWriter.pointer), and no block masks are made per step. lstm's training step at
batch 64 went from 4.65 s to under 1 s interpreted
(benchmarks/recurrent_step_time.py).

The gradient kernel runs the steps backwards: it recomputes a step's gates from xproj and
the state before the step (read from the forward's result, or the initial state), adds the
step's output cotangents to the carried state cotangents, writes the gate pre-activation
cotangents and the state before the step (what the weight-gradient GEMM reads), and carries
dh = dz @ w_hh (plus z * dh for the GRU) and, for the LSTM, dc * f to the step before. After
the last step it writes the initial states' cotangents to row 0.

Half-precision operands are computed in float32 (tl.dot too) and rounded when stored.
"""
from __future__ import annotations

from kgen.ir import dtypes
from kgen.ir.indexing import flat_index, index_var
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.templates import template
from kgen.kernels.writer import KernelSource, KernelWriter


def hidden_block(hidden: int) -> int:
    """HB, the tiles' hidden extent: H's next power of two, at least tl.dot's 16."""
    return max(16, next_pow2(hidden))


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """On the interpreter, every batch row in one program (as few as a [BLOCK_B, HB] tile of
    INTERPRETER_MAX_BLOCK elements allows: the interpreter's cost is per op and program,
    nearly whatever the tile's size, and its tl.dot is one NumPy matmul); on a GPU, 16 rows per program: a recurrence is latency-bound, so many small programs run its
    steps side by side. Eight warps: at the zoo's H = 64 on four, ptxas (Triton 3.9) spills
    120 B per thread of lstm's kernel and 304 B of gru's for sm_80; on eight, none. One stage:
    Triton's pipeliner buffers the time loop's loads of w_hh in shared memory, 135 KB for
    lstm's forward and 292 KB for its gradient at three stages (more than an sm_80 block
    may have), 20 KB at one."""
    hb = hidden_block(dims["h"])
    if interpreted:
        return {"BLOCK_B": max(16, min(next_pow2(dims["b"]), INTERPRETER_MAX_BLOCK // hb)), "HOLD_WEIGHTS": 1}
    return {"BLOCK_B": 16, "HOLD_WEIGHTS": 0, "num_warps": 8, "num_stages": 1}


def _space(dims: dict, tier: str, default: dict):
    """BLOCK_B rows per program (16 to 64, at most the batch's power of two) on 2 to 8 warps,
    one pipeline stage (see _default: more buffer the weights past a block's shared memory)."""
    cap = max(16, next_pow2(dims["b"]))
    blocks, warps = ((16, 32), (4, 8)) if tier == "quick" else ((16, 32, 64), (2, 4, 8))
    for block in blocks:
        for warp in warps:
            yield {"BLOCK_B": min(block, cap), "HOLD_WEIGHTS": 0, "num_warps": warp, "num_stages": 1}


def _hidden_side(work) -> int:
    """HB, which is not in the config, estimated from the dot's operand size: a rough side,
    enough to rank configs."""
    return max(16, int((work.bytes / max(1, work.loads)) ** 0.25))


def _elements(config: dict, work) -> int:
    return config["BLOCK_B"] * _hidden_side(work)


def _resources(config: dict, work) -> tuple:
    """About ten [BLOCK_B, HB] tiles live per step (state, gates, their cotangents) and a
    [HB, HB] weight block, spread over the threads; the dot stages both operands in shared
    memory."""
    threads = 32 * config.get("num_warps", 4)
    hb = _hidden_side(work)
    tile = config["BLOCK_B"] * hb
    return 32 + (10 * tile + hb * hb) / threads, (tile + hb * hb) * work.dot_bytes


RECURRENT = register(Family("recurrent", _default, _space, _resources, elements=_elements))


class _Frame:
    """What both directions and both templates share: the writer, the index variables, the
    tiles' masks, and loads and stores of [BLOCK_B, HB] tiles at a time step."""

    def __init__(self, name: str, root, written: set, names: dict, xproj, w_hh):
        self.root, self.xproj, self.w_hh = root, xproj, w_hh
        self.steps, self.batch, self.hidden = xproj.shape[0], xproj.shape[1], w_hh.shape[1]
        self.w = w = KernelWriter(name, written - {root}, names)
        self.hb = hidden_block(self.hidden)
        bb = w.constexpr("BLOCK_B")
        self.hold = w.constexpr("HOLD_WEIGHTS")
        self._step_values = {}  # (node, coords, mask) -> its variable in the time loop's body (`held`)
        self.B, self.T = w.int_param("B", self.batch), w.int_param("T", self.steps)
        self.rb, self.rh, self.kh = index_var("rb", self.batch), index_var("rh", self.hidden), index_var("kh", self.hidden)
        self.t, self.tp = index_var("t", self.steps), index_var("tp", self.steps)
        w.lanes, w.block_vars = (self.rb, self.rh), (self.rb, self.rh, self.kh)
        self.tile = f"[{bb}, {self.hb}]"
        w.emit(f"rb = (tl.program_id(0) * {bb} + tl.arange(0, {bb}))[:, None]")
        w.emit(f"rh = tl.arange(0, {self.hb})[None, :]")
        w.emit(f"kh = tl.arange(0, {self.hb})[:, None]")
        w.emit(f"rmask = (rb < {self.B}) & (rh < {self.hidden})")
        w.emit(f"wmask = (kh < {self.hidden}) & (rh < {self.hidden})")

    def load(self, node, coords, mask: str = "rmask", tile: bool = True) -> str:
        """`node` at `coords` as a tile, zero outside `mask` (a value computed in place, a
        zero initial state say, is spread over the tile); with tile=False a value that is
        the same in every lane (a cotangent the loss leaves zero) stays a scalar."""
        w = self.w
        w.mask = mask
        value = w.value(node, coords)
        if value in w.masked_loads or (not tile and value in w.uniform):
            return value
        return w.assign(f"tl.where({mask}, {value}, 0.0)", "t")

    def gate(self, node, k: int, t=None, tile: bool = True) -> str:
        """Gate block k of a [T, B, G*H] operand at step t (or of a [G*H] vector, a bias)."""
        column = k * self.hidden + self.rh
        coords = [column] if node.ndim == 1 else [self.t if t is None else t, self.rb, column]
        return self.load(node, coords, tile=tile)

    def weight(self, k: int, transposed: bool) -> str:
        """Gate block k of w_hh as a [HB, HB] tile: transposed (w_hh[kH + n, j] at [j, n]),
        the right operand of h @ w_hh.T; or as stored (at [n, j]), of dz @ w_hh."""
        coords = [k * self.hidden + self.rh, self.kh] if transposed else [k * self.hidden + self.kh, self.rh]
        return self.held(self.w_hh, coords, "wmask")

    def held(self, node, coords, mask: str = "rmask") -> str:
        """`node` at `coords` inside the time loop, where it is the same at every step (a block
        of w_hh, b_hh). With HOLD_WEIGHTS 1 it is loaded once, before the loop, and held;
        with 0, loaded at each step. The interpreter holds (a load is a NumPy gather per
        step, about half a GRU step's loads); a GPU reloads, from L2 after the first step:
        holding w_hh's blocks would take 64 registers a thread for lstm's forward at H = 64
        on eight warps, 128 for its gradient. A value computed in place is computed per step."""
        w = self.w
        if node not in w.buffers:
            return self.load(node, coords, mask)
        key = (node, tuple(coords), mask)
        if key not in self._step_values:
            where = f"{w.input_param(node)} + {w.index(flat_index(coords, node.shape))}"
            load = f"tl.load({where}, mask={mask}, other=0.0)"
            if node.dtype in (dtypes.float16, dtypes.bfloat16):
                load += ".to(tl.float32)"
            kept, var = w.fresh("w"), w.fresh("x")
            w.hoist(f"if {self.hold}:", f"    {kept} = {load}  # {w.name_of(node)}, held")
            w.emit(f"if {self.hold}:")
            w.emit(f"    {var} = {kept}")
            w.emit("else:")
            w.emit(f"    {var} = {load}", w.name_of(node))
            self._step_values[key] = var
        return self._step_values[key]

    def dot(self, tile: str, weight: str, note: str, acc: str = None) -> str:
        return self.w.assign(f'tl.dot({tile}, {weight}, {acc or "None"}, input_precision="ieee")', "d", note)

    def store(self, value: str, column: int, row=None) -> None:
        """`value` into the root's columns column*H + [0, H) at time row `row` (default: t)."""
        w = self.w
        row = self.t if row is None else row
        offset = (row * self.batch + self.rb) * self.root.shape[2] + column * self.hidden + self.rh
        w.store(self.root, offset, value, "rmask", self.tile)

    def time_loop(self, backwards: bool) -> None:
        """Open the loop over the steps: t walks forwards or backwards, tp is the step
        before t in the direction of the recurrence (t itself at the first step) and `first`
        whether t is the first step, both in the gradient (backwards) only. Loads and stores
        in the loop add the step's row to pointers made before it (KernelWriter.pointer)."""
        w, reverse = self.w, self.root.attrs["reverse"]
        w.open_loop(f"for s in range(0, {self.T}):", (self.t, self.tp))
        self._step_values.clear()
        w.emit(f"t = {self.T} - 1 - s" if backwards != reverse else "t = s")
        first = f"{self.T} - 1" if reverse else "0"
        if backwards:
            w.emit(f"tp = tl.minimum(t + 1, {first})" if reverse else "tp = tl.maximum(t - 1, 0)")
            w.emit(f"first = t == {first}")

    def state_before(self, out, initial, column: int = 0) -> str:
        """The state before step t: the forward's result at tp (columns column*H + [0, H)),
        or the initial state at the first step (where row tp + 1 = t + 1 is read and
        dropped). The initial state is read at every step, not held across the loop: held,
        it takes the registers that make lstm's gradient spill on sm_90 (24 B a thread
        rather than 8); a zero one is a literal."""
        earlier = self.load(out, [self.tp + 1, self.rb, column * self.hidden + self.rh])
        start = self.load(initial, [self.rb, self.rh], tile=False)
        return self.w.assign(f"tl.where(first, {start}, {earlier})", "s")

    def finish(self, summary: str, kind: str) -> KernelSource:
        w, root = self.w, self.root
        w.computed.append(root)
        operands = ", ".join(i.type_str() for i in root.inputs)
        text = w.function(f"kgen {w.name}: {root.op} of {operands} -> {root.type_str()}{', reversed' if root.attrs['reverse'] else ''}. "
                          f"{summary}")
        return KernelSource(w.name, kind, text, w.ordered_params(), [(self.batch, "BLOCK_B")], (root,), w.reads(),
                            tuple(w.computed_in_order()), RECURRENT.name,
                            {"b": self.batch, "h": self.hidden, "t": self.steps})


def _plus(*terms) -> str:
    """The sum of `terms`, leaving out the zeros (a cotangent the loss leaves zero)."""
    kept = [t for t in terms if t != "0.0"]
    return " + ".join(kept) if kept else "0.0"


def _accumulate(w: KernelWriter, carried: str, value: str, note: str) -> None:
    """carried += value, unless value is zero."""
    if value != "0.0":
        w.emit(f"{carried} = {carried} + {value}", note)


def _sigmoid(w: KernelWriter, x: str, note: str) -> str:
    return w.assign(f"1.0 / (1.0 + tl.exp(-({x})))", "a", note)


def _tanh(w: KernelWriter, x: str, note: str) -> str:
    """tanh as 2 * sigmoid(2x) - 1: exact enough, and no overflow for large |x|."""
    return w.assign(f"2.0 / (1.0 + tl.exp(-2.0 * ({x}))) - 1.0", "a", note)


def _lstm_gates(f: _Frame, h: str) -> tuple:
    """sig(i), sig(f), tanh(g), sig(o) of step t from the state h before it."""
    w, note = f.w, f.w.note(f.root)
    acts = []
    for k, act in enumerate((_sigmoid, _sigmoid, _tanh, _sigmoid)):
        z = f.dot(h, f.weight(k, transposed=True), note, acc=f.gate(f.xproj, k))
        acts.append(act(w, z, note))
    return tuple(acts)


@template("lstm_recurrence")
def emit_lstm_recurrence(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    assert not epilogue, "lstm_recurrence takes no epilogue (its op table entry says so)"
    xproj, w_hh, h0, c0 = root.inputs
    f = _Frame(name, root, written, names, xproj, w_hh)
    w, note = f.w, f.w.note(root)
    h, c = f.load(h0, [f.rb, f.rh]), f.load(c0, [f.rb, f.rh])
    w.emit(f"h = {h}", note)
    w.emit(f"c = {c}", note)
    f.time_loop(backwards=False)
    i, fg, g, o = _lstm_gates(f, "h")
    # zero outside rmask (as it would stay anyway): ptxas (Triton 3.9, sm_80) then takes 166 registers, not 254
    w.emit(f"c = tl.where(rmask, {fg} * c + {i} * {g}, 0.0)", note)
    w.emit(f"h = {o} * {_tanh(w, 'c', note)}", note)
    f.store("h", 0, row=f.t + 1)
    f.store("c", 1, row=f.t + 1)
    w.end_loop()
    f.store("h", 0, row=0)
    f.store("c", 1, row=0)
    return f.finish("Each program keeps h and c of BLOCK_B rows in registers over the steps; "
                    "row 1 + t holds h and c after step t, row 0 the final ones.", "recurrent")


@template("lstm_recurrence_grad")
def emit_lstm_recurrence_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    assert not epilogue, "lstm_recurrence_grad takes no epilogue (its op table entry says so)"
    g, xproj, w_hh, out, h0, c0 = root.inputs
    f = _Frame(name, root, written, names, xproj, w_hh)
    w, note = f.w, f.w.note(root)
    w.emit(f"dh = {f.gate(g, 0, t=0)}", note)
    w.emit(f"dc = {f.gate(g, 1, t=0)}", note)
    f.time_loop(backwards=True)
    h_prev, c_prev = f.state_before(out, h0), f.state_before(out, c0, 1)
    i, fg, gg, o = _lstm_gates(f, h_prev)
    tanh_c = _tanh(w, f"{fg} * {c_prev} + {i} * {gg}", note)  # c_t recomputed, as the op's reference does
    _accumulate(w, "dh", f.gate(g, 0, t=f.t + 1, tile=False), note)
    w.emit(f"dc = {_plus('dc', f.gate(g, 1, t=f.t + 1, tile=False))} + dh * {o} * (1.0 - {tanh_c} * {tanh_c})", note)
    dz = [w.assign(expr, "dz", note) for expr in (
        f"tl.where(rmask, dc * {gg} * {i} * (1.0 - {i}), 0.0)", f"tl.where(rmask, dc * {c_prev} * {fg} * (1.0 - {fg}), 0.0)",
        f"tl.where(rmask, dc * {i} * (1.0 - {gg} * {gg}), 0.0)", f"tl.where(rmask, dh * {tanh_c} * {o} * (1.0 - {o}), 0.0)")]
    for k, value in enumerate(dz):
        f.store(value, k, row=f.t + 1)
    f.store(h_prev, 4, row=f.t + 1)
    w.emit(f"dc = dc * {fg}", note)
    acc = None
    for k, value in enumerate(dz):
        acc = f.dot(value, f.weight(k, transposed=False), note, acc)
    w.emit(f"dh = {acc}", note)
    w.end_loop()
    f.store("dh", 0, row=0)
    f.store("dc", 1, row=0)
    for column in (2, 3, 4):
        f.store(f"tl.zeros({f.tile}, tl.float32)", column, row=0)
    return f.finish("Steps run backwards carrying dh and dc; row 1 + t holds the gate cotangents dz_t "
                    "(columns [0, 4H)) and h before step t, row 0 d h0 and d c0.", "recurrent")


def _gru_parts(f: _Frame, h: str, b_hh) -> tuple:
    """r, z, n and the n block of h @ w_hh.T + b_hh of step t from the state h before it."""
    w, note = f.w, f.w.note(f.root)
    hh = [f.dot(h, f.weight(k, transposed=True), note, acc=f.held(b_hh, [k * f.hidden + f.rh])) for k in range(3)]
    r = _sigmoid(w, f"{f.gate(f.xproj, 0)} + {hh[0]}", note)
    z = _sigmoid(w, f"{f.gate(f.xproj, 1)} + {hh[1]}", note)
    n = _tanh(w, f"{f.gate(f.xproj, 2)} + {r} * {hh[2]}", note)
    return r, z, n, hh[2]


@template("gru_recurrence")
def emit_gru_recurrence(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    assert not epilogue, "gru_recurrence takes no epilogue (its op table entry says so)"
    xproj, w_hh, b_hh, h0 = root.inputs
    f = _Frame(name, root, written, names, xproj, w_hh)
    w, note = f.w, f.w.note(root)
    w.emit(f"h = {f.load(h0, [f.rb, f.rh])}", note)
    f.time_loop(backwards=False)
    r, z, n, _ = _gru_parts(f, "h", b_hh)
    w.emit(f"h = tl.where(rmask, (1.0 - {z}) * {n} + {z} * h, 0.0)", note)
    f.store("h", 0, row=f.t + 1)
    w.end_loop()
    f.store("h", 0, row=0)
    return f.finish("Each program keeps h of BLOCK_B rows in registers over the steps; row 1 + t holds h "
                    "after step t, row 0 the final one.", "recurrent")


@template("gru_recurrence_grad")
def emit_gru_recurrence_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    assert not epilogue, "gru_recurrence_grad takes no epilogue (its op table entry says so)"
    g, xproj, w_hh, b_hh, out, h0 = root.inputs
    f = _Frame(name, root, written, names, xproj, w_hh)
    w, note = f.w, f.w.note(root)
    w.emit(f"dh = {f.gate(g, 0, t=0)}", note)
    f.time_loop(backwards=True)
    h_prev = f.state_before(out, h0)
    r, z, n, n_h = _gru_parts(f, h_prev, b_hh)
    _accumulate(w, "dh", f.gate(g, 0, t=f.t + 1, tile=False), note)
    d_n = w.assign(f"tl.where(rmask, dh * (1.0 - {z}) * (1.0 - {n} * {n}), 0.0)", "dz", note)
    d_r = w.assign(f"{d_n} * {n_h} * {r} * (1.0 - {r})", "dz", note)
    d_z = w.assign(f"tl.where(rmask, dh * ({h_prev} - {n}) * {z} * (1.0 - {z}), 0.0)", "dz", note)
    d_nh = w.assign(f"{d_n} * {r}", "dz", note)
    for k, value in enumerate((d_r, d_z, d_n, d_nh, h_prev)):
        f.store(value, k, row=f.t + 1)
    acc = f"dh * {z}"
    for k, value in enumerate((d_r, d_z, d_nh)):
        acc = f.dot(value, f.weight(k, transposed=False), note, acc)
    w.emit(f"dh = {acc}", note)
    w.end_loop()
    f.store("dh", 0, row=0)
    for column in (1, 2, 3, 4):
        f.store(f"tl.zeros({f.tile}, tl.float32)", column, row=0)
    return f.finish("Steps run backwards carrying dh; row 1 + t holds d r, d z, d x_n, d h_n and h before "
                    "step t, row 0 d h0.", "recurrent")

