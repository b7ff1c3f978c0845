"""The mlp128 and cnn training steps (forward, loss, backward, optimizer update) at batch 64
and 512: kgen's one compiled step, with CUDA graph replay (the default on a GPU) and with
plain launches, against the same model, loss and optimizer in torch eager and under
torch.compile (default, reduce-overhead, max-autotune). Both sides start from the same
weights (the torch twin of benchmarks/mnist_accuracy.py) and train on the same batch; the
losses after a few steps must agree, which also checks replayed steps on a GPU.

Targets: at least 1.3x faster than eager, and no slower than torch.compile max-autotune.
torch runs at its defaults (cuDNN convolutions in TF32, matmuls in float32); kgen's
float32 dots use exact products. torch.compile compiles the model with its loss (forward
and backward); the optimizer step runs eagerly, as in most training loops. Its first call
(the compile) is reported in seconds.

    python benchmarks/gpu_suite.py --only train_step
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from kgen import nn
from gpu_common import at_least, example_batch, ratio
from mnist_accuracy import torch_twin

TITLE = "training step (ms per step) vs torch eager and torch.compile"
COLUMNS = [("model", "model", "{}"), ("batch", "batch", "{}"), ("kernels", "kernels", "{}"),
           ("kgen_graphs_ms", "kgen graphs", "{:.3f}"), ("kgen_plain_ms", "kgen plain", "{:.3f}"),
           ("eager_ms", "eager", "{:.3f}"), ("compile_default_ms", "compile", "{:.3f}"),
           ("compile_reduce-overhead_ms", "reduce-ovh", "{:.3f}"),
           ("compile_max-autotune_ms", "max-autotune", "{:.3f}"), ("speedup_vs_eager", "vs eager", "{:.2f}x"),
           ("pass_1.3x_eager", ">=1.3x eager", "{}"), ("pass_vs_max_autotune", "<=max-autotune", "{}"),
           ("losses_agree", "losses agree", "{}")]
CASE = ("model", "batch")
TARGETS = [("pass_1.3x_eager", "training step >= 1.3x faster than torch eager"),
           ("pass_vs_max_autotune", "training step no slower than torch.compile max-autotune"),
           ("losses_agree", "kgen and torch losses agree after the same steps")]

MODELS = ("mlp128", "cnn")


class WithLoss(torch.nn.Module):
    """The torch twin and its loss in one module, so torch.compile sees the whole forward."""

    def __init__(self, model, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x, y):
        return self.loss(self.model(x), y)


def torch_loss(name: str):
    """torch's form of a zoo loss name (kgen.nn.losses)."""
    if name == "nll":
        return F.nll_loss
    if name == "sparse_categorical_crossentropy":  # after a softmax; kgen clamps at 1e-7 as Keras does
        return lambda prob, y: F.nll_loss(torch.log(prob.clamp_min(1e-7)), y)
    raise ValueError(f"no torch twin for the loss {name!r}")


def torch_optimizer(optimizer, params):
    """The torch.optim twin of a kgen.nn optimizer, with its hyperparameters."""
    if isinstance(optimizer, nn.SGD):
        return torch.optim.SGD(params, lr=optimizer.lr, momentum=optimizer.momentum,
                               weight_decay=optimizer.weight_decay)
    if isinstance(optimizer, nn.Adam):
        return torch.optim.Adam(params, lr=optimizer.lr, betas=(optimizer.beta1, optimizer.beta2),
                                eps=optimizer.eps)
    raise ValueError(f"no torch twin for {type(optimizer).__name__}")


def torch_step(module, optimizer, x, y, mark_step: bool = False):
    def step():
        if mark_step:  # reduce-overhead: a new iteration, so its CUDA graphs may reuse memory
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        loss = module(x, y)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


class Setup:
    """kgen's compiled step and the torch twin's pieces for one model and batch size."""

    def __init__(self, bench, name: str, batch: int):
        spec = nn.zoo.get(name)
        nn.manual_seed(0)
        model = spec.model()
        self.initial = torch_twin(name, model)  # before any step: the same starting weights
        self.loss = torch_loss(spec.loss)
        x, y = example_batch(name, batch)
        self.optimizer = spec.optimizer(model.parameters())
        self.kgen = nn.train_step(model, nn.losses.get(spec.loss), self.optimizer, x, y)
        self.x, self.y = torch.from_numpy(x).to(bench.device), torch.from_numpy(y).to(bench.device)
        self.y_long = self.y.long()

    def kgen_step(self):
        return self.kgen(self.x, self.y)[0]

    def torch_step(self, device, mode=None):
        module = WithLoss(copy.deepcopy(self.initial).to(device), self.loss)
        optimizer = torch_optimizer(self.optimizer, module.parameters())
        if mode is not None:
            module = torch.compile(module, mode=mode)
        return torch_step(module, optimizer, self.x, self.y_long, mark_step=mode == "reduce-overhead")


def measure(bench, name: str, batch: int) -> dict:
    setup = Setup(bench, name, batch)
    program = setup.kgen.program
    tune_s = bench.tune(setup.kgen, setup.x, setup.y)
    eager = setup.torch_step(bench.device)
    for _ in range(bench.pick(3, 2)):  # plain, captured, replayed on a GPU; the same steps in torch
        kgen_loss, torch_loss = float(setup.kgen_step()), float(eager())
    row = {"model": name, "batch": batch, "kgen_tune_s": tune_s, "kernels": len(program.kernels), "kgen_cuda_graphs": program.cuda_graphs,
           "loss_kgen": kgen_loss, "loss_torch": torch_loss,
           "losses_agree": bool(abs(kgen_loss - torch_loss) <= 1e-2 * max(1.0, abs(torch_loss)))}
    row["kgen_graphs_ms"] = bench.time_steps_ms(setup.kgen_step)
    row["graph_captures"] = program.graphs.captures
    enabled, program.cuda_graphs = program.cuda_graphs, False
    row["kgen_plain_ms"] = bench.time_steps_ms(setup.kgen_step)
    program.cuda_graphs = enabled
    row["eager_ms"] = bench.time_steps_ms(eager)
    row["compile_first_call_s"], row["compile_errors"] = {}, {}
    for mode in bench.compile_modes:
        try:
            torch._dynamo.reset()
            step = setup.torch_step(bench.device, mode)
            row["compile_first_call_s"][mode] = bench.seconds(step)[1]
            for _ in range(3):  # reduce-overhead records its CUDA graphs after a warm-up call
                step()
            row[f"compile_{mode}_ms"] = bench.time_steps_ms(step)
        except Exception as e:  # noqa: BLE001 (one failing mode must not lose the others)
            row["compile_errors"][mode] = f"{type(e).__name__}: {e}"[:500]
    kgen_ms = row["kgen_graphs_ms"]
    row["speedup_vs_eager"] = ratio(row["eager_ms"], kgen_ms)
    row["vs_max_autotune"] = ratio(row.get("compile_max-autotune_ms"), kgen_ms)
    row["pass_1.3x_eager"] = at_least(row["speedup_vs_eager"], 1.3)
    row["pass_vs_max_autotune"] = at_least(row["vs_max_autotune"], 1.0)
    return row


def run(bench) -> list:
    return [measure(bench, name, batch) for name in MODELS for batch in bench.pick([64, 512], [2])]
