"""torch.compile(model, backend="kgen") on the torch zoo (tests/frontends/torch_zoo.py):
forward and backward run kgen's kernels (kgen.counters shows the lowerings), and five steps
of torch's own SGD follow eager torch; a graph kgen cannot translate runs eagerly, with one
log line saying why."""
import copy
import logging

import pytest
import torch

from kgen import counters
from torch_zoo import CASES, build, torch_loss


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):  # else Dynamo runs nn.LSTM / nn.GRU eagerly
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c.dropout))
def test_torch_optimizer_steps_through_kgen_follow_eager_torch(name, caplog):
    case = CASES[name]
    tm, x, y = build(name, batch=8)
    eager = copy.deepcopy(tm)
    compiled = torch.compile(tm, backend="kgen")
    before = counters.snapshot()
    with caplog.at_level(logging.WARNING, logger="kgen.dynamo"):
        for model, params in ((compiled, tm.parameters()), (eager, eager.parameters())):
            opt = torch.optim.SGD(params, 0.1, momentum=0.9)
            model.losses = []
            for _ in range(5):
                opt.zero_grad()
                loss = torch_loss(case, model(x), y)
                loss.backward()
                opt.step()
                model.losses.append(float(loss))
    assert not caplog.records, caplog.text  # nothing fell back to eager torch
    assert counters.since(before).get("lowerings", 0) >= 2  # kgen compiled a forward and a backward
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-6)
    for (key, mine), theirs in zip(tm.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-5, msg=f"{name}: {key}")


class _Cumulative(torch.nn.Module):
    """cumsum has no kgen translation: the graph around it runs in eager torch."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=1)


def test_untranslatable_graph_runs_eagerly_with_one_log_line(caplog):
    model = _Cumulative()
    x = torch.randn(5, 4)
    with caplog.at_level(logging.WARNING, logger="kgen.dynamo"):
        out = torch.compile(model, backend="kgen")(x)
        out.sum().backward()
    torch.testing.assert_close(out, model(x))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "runs in eager torch" in lines[0] and "aten.cumsum" in lines[0], lines


class _StopsGradients(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        with torch.no_grad():
            scale = y.tanh() + 1
        return y * scale + y * y.detach()


def test_detach_and_no_grad_stop_gradients_as_in_torch(caplog):
    torch.manual_seed(0)
    model, x = _StopsGradients(), torch.randn(5, 4)
    eager = copy.deepcopy(model)
    with caplog.at_level(logging.WARNING, logger="kgen.dynamo"):
        torch.compile(model, backend="kgen")(x).sum().backward()
    assert not caplog.records, caplog.text
    eager(x).sum().backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
