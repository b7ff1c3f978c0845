"""fit / evaluate / predict on any data source: a torch DataLoader, an iterable of (x, y)
batches, a generator with steps_per_epoch; a short last batch reuses the compiled step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import kgen
from kgen import counters, nn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 6)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def _model():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2), nn.LogSoftmax(dim=1))
    return model.compile(nn.SGD(model.parameters(), 0.1), "nll", ["accuracy"])


def test_a_dataloader_trains_as_the_same_batches_from_arrays_do():
    by_arrays, by_loader = _model(), _model()
    by_arrays.fit(X, Y, epochs=2, batch_size=16, shuffle=False, verbose=False)
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=16)
    history = by_loader.fit(loader, epochs=2, verbose=False, validation_data=loader)
    assert len(history["loss"]) == 2 and "val_accuracy" in history
    for name, value in by_arrays.state_dict().items():
        np.testing.assert_array_equal(by_loader.state_dict()[name], value, err_msg=name)
    np.testing.assert_allclose(by_loader.evaluate(loader, verbose=False), by_arrays.evaluate(X, Y, verbose=False),
                               rtol=1e-6)
    np.testing.assert_allclose(by_loader.predict(loader), by_arrays.predict(X), rtol=1e-6)


def test_the_short_last_batch_reuses_the_compiled_step():
    model = _model()
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=16)  # 16, 16, 8
    model.fit(loader, epochs=1, verbose=False)
    before = counters.snapshot()
    model.fit(loader, epochs=1, verbose=False)
    assert counters.since(before).get("lowerings", 0) == 0


def test_a_generator_gives_steps_per_epoch_batches_each_epoch():
    seen = []

    def batches():
        k = 0
        while True:
            rows = slice(8 * (k % 5), 8 * (k % 5) + 8)
            seen.append(k)
            yield X[rows].astype(np.float64), torch.from_numpy(Y[rows])  # float64 narrowed, as arrays are
            k += 1

    model = _model()
    history = model.fit(batches(), epochs=3, steps_per_epoch=2, verbose=False)
    assert len(history["loss"]) == 3 and seen == list(range(6))  # epochs continue where the last stopped


def test_bad_sources_are_clear_errors():
    model = _model()

    def endless():
        while True:
            yield X[:4], Y[:4]

    with pytest.raises(kgen.OptionError, match="a generator gives batches without end: pass steps_per_epoch"):
        model.fit(endless(), epochs=1, verbose=False)
    with pytest.raises(kgen.InputError, match="the generator ran out of batches before steps_per_epoch"):
        model.fit(iter([(X[:4], Y[:4])]), epochs=1, steps_per_epoch=3, verbose=False)
    with pytest.raises(kgen.InputError, match="expected each batch to be a pair"):
        model.fit(iter([X[:4]]), epochs=1, steps_per_epoch=1, verbose=False)
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=16)
    with pytest.raises(kgen.InputError, match="x is a data source .* pass y=None"):
        model.fit(loader, Y, verbose=False)
    with pytest.raises(kgen.OptionError, match="validation_split needs arrays"):
        model.fit(loader, validation_split=0.2, verbose=False)
